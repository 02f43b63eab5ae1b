package gateway

import (
	"context"
	"sync"
)

// settleBarrier tracks the phase twos this process has sent and not yet seen answered, by key
// (an account, see settleKeys), so that a read can wait until the payments decided before it
// are applied at the banks.
//
// A request is answered once its payment's decision is durable; phase two runs after the
// answer. What a client does next must still see the payment applied: FetchBalance waits for
// the phase twos on the user's accounts, and a new payment waits for those that will raise its
// payer's available money (a credit being committed, a hold being released). A wait covers
// the phase twos pending when it starts, not later ones, so a busy account cannot starve it.
type settleBarrier struct {
	mu sync.Mutex
	m  map[string]map[*settling]struct{}
}

// settling is one payment's phase two.
type settling struct {
	keys []string
	done chan struct{}
}

// settleKeys are the keys a decided payment's phase two holds: both accounts for reads of
// balances, and "+account" for the account whose available money it raises.
func settleKeys(p paymentRecord) []string {
	keys := []string{p.From, p.To}
	switch p.Decision {
	case decisionCommit:
		keys = append(keys, "+"+p.To)
	case decisionAbort:
		keys = append(keys, "+"+p.From)
	}
	return keys
}

// start records a phase two holding keys; call finish when it is over.
func (b *settleBarrier) start(keys ...string) *settling {
	s := &settling{keys: keys, done: make(chan struct{})}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil {
		b.m = make(map[string]map[*settling]struct{})
	}
	for _, k := range keys {
		if b.m[k] == nil {
			b.m[k] = make(map[*settling]struct{})
		}
		b.m[k][s] = struct{}{}
	}
	return s
}

// finish ends a phase two: its waiters go on.
func (b *settleBarrier) finish(s *settling) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, k := range s.keys {
		delete(b.m[k], s)
		if len(b.m[k]) == 0 {
			delete(b.m, k)
		}
	}
	close(s.done)
}

// wait returns once every phase two holding any of keys when wait was called is over, or with
// ctx's error.
func (b *settleBarrier) wait(ctx context.Context, keys ...string) error {
	var pending []*settling
	b.mu.Lock()
	for _, k := range keys {
		for s := range b.m[k] {
			pending = append(pending, s)
		}
	}
	b.mu.Unlock()
	for _, s := range pending {
		select {
		case <-s.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
