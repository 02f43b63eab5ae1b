package gateway

import (
	"errors"
	"sync"
)

// errTooManyWatchers is returned by broker.watch when the user has as many streams open as
// allowed.
var errTooManyWatchers = errors.New("gateway: too many payment streams for the user")

// broker tells requests waiting for one payment's decision of it, and keeps count of the
// WatchPayments streams open on this process (which read the event log themselves: see
// WatchPayments) so that their number is bounded and endUser can end a user's streams.
type broker struct {
	mu      sync.Mutex
	waiters map[string]map[chan paymentRecord]struct{}
	// streams counts each user's watches from watch until their cancel.
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
		waiters: make(map[string]map[chan paymentRecord]struct{}),
		streams: make(map[string]int),
		ends:    make(map[string]*streamEnd),
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

// watch takes one of username's stream slots and returns what endUser closes to end the stream,
// or errTooManyWatchers when username has max watches that have not been cancelled yet (max
// <= 0: no limit). cancel releases the slot; calling it again does nothing.
func (b *broker) watch(username string, max int) (*streamEnd, func(), error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if max > 0 && b.streams[username] >= max {
		return nil, nil, errTooManyWatchers
	}
	b.streams[username]++
	end := b.ends[username]
	if end == nil {
		end = &streamEnd{done: make(chan struct{})}
		b.ends[username] = end
	}
	var once sync.Once
	return end, func() {
		once.Do(func() {
			b.mu.Lock()
			defer b.mu.Unlock()
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

// publish announces a change of p to the requests waiting for its decision.
func (b *broker) publish(p paymentRecord) {
	if p.Decision == decisionNone {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.waiters[p.PaymentID] {
		select {
		case ch <- p:
		default:
		}
	}
}

// idle says whether nobody waits for a payment's decision.
func (b *broker) idle() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.waiters) == 0
}
