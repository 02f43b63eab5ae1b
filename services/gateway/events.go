package gateway

import "sync"

// broker fans out payment changes: to requests waiting for one payment's decision, and to
// WatchPayments streams of the payment's user.
type broker struct {
	mu       sync.Mutex
	waiters  map[string]map[chan paymentRecord]struct{}
	watchers map[string]map[chan paymentRecord]struct{}
}

func newBroker() *broker {
	return &broker{
		waiters:  make(map[string]map[chan paymentRecord]struct{}),
		watchers: make(map[string]map[chan paymentRecord]struct{}),
	}
}

// waitFor returns a channel that receives the payment once it is decided.
func (b *broker) waitFor(id string) (<-chan paymentRecord, func()) {
	ch := make(chan paymentRecord, 1)
	b.mu.Lock()
	if b.waiters[id] == nil {
		b.waiters[id] = make(map[chan paymentRecord]struct{})
	}
	b.waiters[id][ch] = struct{}{}
	b.mu.Unlock()
	return ch, func() {
		b.mu.Lock()
		delete(b.waiters[id], ch)
		if len(b.waiters[id]) == 0 {
			delete(b.waiters, id)
		}
		b.mu.Unlock()
	}
}

// watch returns a channel of username's payment changes. The channel is closed when the
// watcher falls too far behind (the stream then ends and the client reconnects) or when cancel
// is called.
func (b *broker) watch(username string) (<-chan paymentRecord, func()) {
	ch := make(chan paymentRecord, 256)
	b.mu.Lock()
	if b.watchers[username] == nil {
		b.watchers[username] = make(map[chan paymentRecord]struct{})
	}
	b.watchers[username][ch] = struct{}{}
	b.mu.Unlock()
	return ch, func() {
		b.mu.Lock()
		if _, ok := b.watchers[username][ch]; ok {
			delete(b.watchers[username], ch)
			close(ch)
		}
		if len(b.watchers[username]) == 0 {
			delete(b.watchers, username)
		}
		b.mu.Unlock()
	}
}

// publish announces a change of p.
func (b *broker) publish(p paymentRecord) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if p.Decision != decisionNone {
		for ch := range b.waiters[p.PaymentID] {
			select {
			case ch <- p:
			default:
			}
		}
	}
	for ch := range b.watchers[p.Username] {
		select {
		case ch <- p:
		default:
			// Too slow: end its stream rather than silently skip a change.
			delete(b.watchers[p.Username], ch)
			close(ch)
		}
	}
}
