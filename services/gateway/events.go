package gateway

import (
	"errors"
	"sync"
)

// errTooManyWatchers is returned by broker.watch when the user has as many streams open as
// allowed.
var errTooManyWatchers = errors.New("gateway: too many payment streams for the user")

// broker fans out payment changes: to requests waiting for one payment's decision, and to
// WatchPayments streams of the payment's user.
type broker struct {
	mu       sync.Mutex
	waiters  map[string]map[chan paymentRecord]struct{}
	watchers map[string]map[chan paymentRecord]struct{}
	// streams counts each user's watches from watch until their cancel. A watcher dropped for
	// being too slow leaves watchers at once but holds its slot until its stream has ended.
	streams map[string]int
	// ends holds, per user with watches, what endUser closes to end them all; a watch after
	// endUser gets a new one.
	ends map[string]*streamEnd
}

// streamEnd ends every payment stream of a user at once, with err.
type streamEnd struct {
	done chan struct{}
	err  error
}

// Done is closed when the user's streams must end; Err then says why.
func (e *streamEnd) Done() <-chan struct{} { return e.done }

// Err is the error the streams end with, once Done is closed.
func (e *streamEnd) Err() error { return e.err }

func newBroker() *broker {
	return &broker{
		waiters:  make(map[string]map[chan paymentRecord]struct{}),
		watchers: make(map[string]map[chan paymentRecord]struct{}),
		streams:  make(map[string]int),
		ends:     make(map[string]*streamEnd),
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

// watch returns a channel of username's payment changes, or errTooManyWatchers when username
// has max watches that have not been cancelled yet (max <= 0: no limit). The channel is closed
// when the watcher falls too far behind (the stream then ends and the client reconnects) or
// when cancel is called. cancel releases the slot; calling it again does nothing.
func (b *broker) watch(username string, max int) (<-chan paymentRecord, func(), error) {
	ch, _, cancel, err := b.watchUser(username, max)
	return ch, cancel, err
}

// watchUser is watch that also returns what endUser uses to end the watch.
func (b *broker) watchUser(username string, max int) (<-chan paymentRecord, *streamEnd, func(), error) {
	b.mu.Lock()
	if max > 0 && b.streams[username] >= max {
		b.mu.Unlock()
		return nil, nil, nil, errTooManyWatchers
	}
	ch := make(chan paymentRecord, 256)
	if b.watchers[username] == nil {
		b.watchers[username] = make(map[chan paymentRecord]struct{})
	}
	b.watchers[username][ch] = struct{}{}
	b.streams[username]++
	end := b.ends[username]
	if end == nil {
		end = &streamEnd{done: make(chan struct{})}
		b.ends[username] = end
	}
	b.mu.Unlock()
	var once sync.Once
	return ch, end, func() {
		once.Do(func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			if _, ok := b.watchers[username][ch]; ok {
				delete(b.watchers[username], ch)
				close(ch)
			}
			if len(b.watchers[username]) == 0 {
				delete(b.watchers, username)
			}
			if b.streams[username]--; b.streams[username] <= 0 {
				delete(b.streams, username)
				delete(b.ends, username)
			}
		})
	}, nil
}

// endUser ends every watch of username open now, with err (their streams answer it).
func (b *broker) endUser(username string, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if end := b.ends[username]; end != nil {
		end.err = err
		close(end.done)
		delete(b.ends, username)
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

// idle says whether nobody waits for a payment or watches a user's payments.
func (b *broker) idle() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.waiters) == 0 && len(b.watchers) == 0
}
