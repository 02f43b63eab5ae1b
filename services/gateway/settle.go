package gateway

import (
	"context"
	"sync"
	"time"
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

// remoteSettleWait bounds how long a read waits for phase twos that other replicas run (see
// Coordinator.waitSettled): one that takes longer is stuck at a bank (down, or cut off from
// that replica) and is finished by recovery later; the read goes on without it.
const remoteSettleWait = 2 * time.Second

// waitSettled returns once the phase twos changing accounts (raising: only those raising their
// available money, see settleKeys) that were pending when it was called are over, or with
// ctx's error. Phase twos this process runs are tracked in memory (settleBarrier). On a shared
// store, other replicas' are found in the store (decided, not yet acknowledged): those are
// waited for until acknowledged, at most remoteSettleWait, except payments this process
// already tried and will retry (their attempt is over, as the local barrier's would be).
func (c *Coordinator) waitSettled(ctx context.Context, raising bool, accounts ...string) error {
	keys := accounts
	if raising {
		keys = make([]string, len(accounts))
		for i, a := range accounts {
			keys[i] = "+" + a
		}
	}
	if err := c.settle.wait(ctx, keys...); err != nil {
		return err
	}
	if !c.store.Shared() {
		return nil
	}
	pending, err := c.unsettledElsewhere(ctx, accounts, raising, nil)
	if err != nil || len(pending) == 0 {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, remoteSettleWait)
	defer cancel()
	for poll := time.Millisecond; len(pending) > 0; poll = min(2*poll, 50*time.Millisecond) {
		select {
		case <-time.After(poll):
		case <-wctx.Done():
			return ctx.Err() // nil when only the bound passed
		}
		if pending, err = c.unsettledElsewhere(ctx, accounts, raising, pending); err != nil {
			return err
		}
	}
	return nil
}

// unsettledElsewhere returns the store's unsettled payments of accounts that this process is
// not retrying, among among when it is not nil.
func (c *Coordinator) unsettledElsewhere(ctx context.Context, accounts []string, raising bool, among map[string]bool) (map[string]bool, error) {
	ids, err := c.store.Unsettled(ctx, accounts, raising)
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(ids))
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		if _, retrying := c.retry[id]; retrying || (among != nil && !among[id]) {
			continue
		}
		out[id] = true
	}
	return out, nil
}
