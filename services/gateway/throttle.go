package gateway

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/paygate/paygate/internal/rpcerr"
)

// Throttles: budgets of failed attempts (logins, registrations), in memory or in a shared
// store.

// loginThrottle is a budget of attempts per key (a username, a client address, an account): burst
// attempts, refilled at one every every. An attempt reserves one from each of its keys before the
// password or code is checked, so that N concurrent attempts spend N and no more than the budget
// is ever checked; an attempt that succeeds gives its reservation back, so that in the end only
// failures count.
type loginThrottle struct {
	mu      sync.Mutex
	buckets map[string]*attemptBucket
	every   time.Duration
	burst   int
}

// attemptBucket is one key's budget: tokens left at time at.
type attemptBucket struct {
	tokens float64
	at     time.Time
}

// maxThrottleKeys bounds the keys a throttle remembers.
const maxThrottleKeys = 100_000

func newLoginThrottle(every time.Duration, burst int) *loginThrottle {
	return &loginThrottle{buckets: make(map[string]*attemptBucket), every: every, burst: burst}
}

// bucket returns key's budget brought up to now; t.mu is held.
func (t *loginThrottle) bucket(key string, now time.Time) *attemptBucket {
	b, ok := t.buckets[key]
	if !ok {
		if len(t.buckets) >= maxThrottleKeys {
			// Forget keys that are back to a full budget; an attacker cycling keys only resets
			// keys it is not using.
			for k, v := range t.buckets {
				if t.refill(v, now); v.tokens >= float64(t.burst) {
					delete(t.buckets, k)
				}
			}
		}
		b = &attemptBucket{tokens: float64(t.burst), at: now}
		t.buckets[key] = b
	}
	t.refill(b, now)
	return b
}

func (t *loginThrottle) refill(b *attemptBucket, now time.Time) {
	if now.After(b.at) {
		b.tokens = min(float64(t.burst), b.tokens+float64(now.Sub(b.at))/float64(t.every))
		b.at = now
	}
}

// attemptReservation is one attempt taken from the budgets of its keys.
type attemptReservation struct {
	t    *loginThrottle
	keys []string
	done bool
}

// reserve takes one attempt from the budget of every key, or, when one of them has none left,
// takes nothing and returns how long until all of them have one.
func (t *loginThrottle) reserve(now time.Time, keys ...string) (*attemptReservation, time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var wait time.Duration
	for _, k := range keys {
		if b := t.bucket(k, now); b.tokens < 1 {
			wait = max(wait, time.Duration((1-b.tokens)*float64(t.every)))
		}
	}
	if wait > 0 {
		return nil, max(wait, time.Second)
	}
	for _, k := range keys {
		t.buckets[k].tokens--
	}
	return &attemptReservation{t: t, keys: keys}, 0
}

// refund gives the attempt back to its keys: it did not fail. A second refund does nothing.
func (r *attemptReservation) refund() {
	if r == nil {
		return
	}
	r.t.mu.Lock()
	defer r.t.mu.Unlock()
	if r.done {
		return
	}
	r.done = true
	for _, k := range r.keys {
		if b, ok := r.t.buckets[k]; ok {
			b.tokens = min(float64(r.t.burst), b.tokens+1)
		}
	}
}

// attemptBudget is where a throttle keeps its budgets: in memory (loginThrottle), or in a
// shared store (storeThrottle), so that every replica spends from the same ones.
type attemptBudget interface {
	// take reserves one attempt from each key's budget, as loginThrottle.reserve does: it
	// returns a refund giving it back, or how long to wait (> 0) when it took nothing.
	take(ctx context.Context, now time.Time, keys ...string) (refund func(), wait time.Duration, err error)
}

func (t *loginThrottle) take(_ context.Context, now time.Time, keys ...string) (func(), time.Duration, error) {
	r, wait := t.reserve(now, keys...)
	if r == nil {
		return nil, wait, nil
	}
	return r.refund, 0, nil
}

// storeThrottle is a throttle whose budgets are in a shared store, by the store's clock.
type storeThrottle struct {
	limits sharedLimits
	scope  string
	every  time.Duration
	burst  int
}

func (t *storeThrottle) take(ctx context.Context, _ time.Time, keys ...string) (func(), time.Duration, error) {
	wait, err := t.limits.ReserveAttempt(ctx, t.scope, keys, t.burst, t.every)
	if err != nil || wait > 0 {
		return nil, wait, err
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			// The attempt is over: give it back even if its call was cancelled.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			t.limits.RefundAttempt(rctx, t.scope, keys, t.burst)
		})
	}, 0, nil
}

// newThrottle returns a throttle of burst attempts refilled at one every every, shared through
// store when it is shared.
func newThrottle(store Store, scope string, every time.Duration, burst int) attemptBudget {
	if l, ok := store.(sharedLimits); ok && store.Shared() {
		return &storeThrottle{limits: l, scope: scope, every: every, burst: burst}
	}
	return newLoginThrottle(every, burst)
}

// throttled is the refusal of an attempt that has no budget left for wait.
func throttled(reason, what string, wait time.Duration) error {
	return rpcerr.New(connect.CodeResourceExhausted, reason,
		fmt.Sprintf("too many %s: try again in %s", what, wait.Round(time.Second)),
		"retry_after_seconds", fmt.Sprint(int(wait.Seconds()+0.999)))
}

func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}
