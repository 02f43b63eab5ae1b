package client

import (
	"context"
	"sync"
	"time"
)

// accountsInParallel is how many source accounts the sender serves at once. The payments of
// one account are always sent one at a time, in queue order.
const accountsInParallel = 4

// SenderState is what the background sender is doing.
type SenderState struct {
	// Leader is true when this process holds the queue's lock and so is the one sending.
	Leader bool `json:"leader"`
	// Offline is true while the gateway cannot be reached; the sender probes its health.
	Offline bool `json:"offline"`
	// LoginRequired is true when the gateway refused the token: nothing is sent until Login
	// or SetToken.
	LoginRequired bool `json:"login_required"`
	// LastError is the last failure that kept a payment queued.
	LastError string `json:"last_error,omitempty"`
}

type waiter struct {
	done   chan Result
	queued chan string
}

// sender delivers the queue: the write-ahead log of payments is read, each source account's
// payments are sent in order, outcomes are recorded, and ambiguous failures are retried with the
// same payment_id after a backoff.
type sender struct {
	c      *Client
	kickCh chan struct{}
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	waiters map[string]*waiter
	state   SenderState
}

func newSender(c *Client) *sender {
	return &sender{c: c, kickCh: make(chan struct{}, 1), waiters: map[string]*waiter{}}
}

func (s *sender) start() {
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Go(func() { s.run(ctx) })
}

func (s *sender) stop() {
	if s.cancel != nil {
		s.cancel()
		s.wg.Wait()
	}
}

func (s *sender) kick() {
	select {
	case s.kickCh <- struct{}{}:
	default:
	}
}

func (s *sender) resume() {
	s.mu.Lock()
	s.state.LoginRequired = false
	s.mu.Unlock()
	s.kick()
}

func (s *sender) snapshot() SenderState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

func (s *sender) leading() bool { return s.snapshot().Leader }

func (s *sender) await(id string) *waiter {
	w := &waiter{done: make(chan Result, 1), queued: make(chan string, 1)}
	s.mu.Lock()
	s.waiters[id] = w
	s.mu.Unlock()
	return w
}

func (s *sender) unawait(id string) {
	s.mu.Lock()
	delete(s.waiters, id)
	s.mu.Unlock()
}

// tellQueued tells every waiting Pay call that its payment stays queued, and why.
func (s *sender) tellQueued(why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, w := range s.waiters {
		select {
		case w.queued <- why:
		default:
		}
	}
}

// wait sleeps for d or until kicked.
func (s *sender) wait(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-s.kickCh:
	case <-t.C:
	}
}

func (s *sender) run(ctx context.Context) {
	log := s.c.cfg.logger
	probes := 0
	for ctx.Err() == nil {
		st := s.snapshot()
		if !st.Leader {
			ok, err := s.c.queue.tryLock()
			if err != nil {
				log.Warn("queue: lock", "error", err)
			}
			if !ok {
				s.wait(ctx, s.c.cfg.pollEvery)
				continue
			}
			s.mu.Lock()
			s.state.Leader = true
			s.mu.Unlock()
			log.Debug("queue: this process sends the queue", "dir", s.c.queue.Dir())
		}
		if st.LoginRequired {
			s.tellQueued("login required: " + st.LastError)
			s.wait(ctx, time.Hour)
			continue
		}
		if st.Offline {
			if err := s.c.Ping(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				probes++
				s.setError(err)
				s.tellQueued("gateway unreachable: " + errString(err))
				d := s.c.cfg.retry.Backoff(probes)
				log.Debug("queue: gateway still unreachable", "retry_in", d, logErr(err))
				s.wait(ctx, d)
				continue
			}
			probes = 0
			s.mu.Lock()
			s.state.Offline = false
			s.mu.Unlock()
			log.Info("queue: gateway reachable again; sending")
		}
		next := s.pass(ctx)
		d := s.c.cfg.pollEvery
		if !next.IsZero() {
			d = min(d, max(time.Until(next), 0))
		}
		if st := s.snapshot(); st.Offline || st.LoginRequired {
			d = 0
		}
		if d > 0 {
			s.wait(ctx, d)
		}
	}
}

func (s *sender) setError(err error) {
	s.mu.Lock()
	s.state.LastError = errString(err)
	s.mu.Unlock()
}

// pass sends what is due, each account's payments in order, and returns the earliest time a
// payment waiting for a retry is due (zero if none).
func (s *sender) pass(ctx context.Context) time.Time {
	pending, err := s.c.queue.Pending(ctx)
	if err != nil {
		s.c.cfg.logger.Warn("queue: read", "error", err)
		return time.Now().Add(s.c.cfg.pollEvery)
	}
	user := s.c.Username()
	byAccount := map[string][]QueuedPayment{}
	var accounts []string
	for _, p := range pending {
		if user != "" && p.Username != "" && p.Username != user {
			continue // another user's payment: it waits for that user to log in here
		}
		if _, ok := byAccount[p.Request.From]; !ok {
			accounts = append(accounts, p.Request.From)
		}
		byAccount[p.Request.From] = append(byAccount[p.Request.From], p)
	}
	var (
		mu   sync.Mutex
		next time.Time
		wg   sync.WaitGroup
		sem  = make(chan struct{}, accountsInParallel)
	)
	for _, a := range accounts {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if at := s.sendAccount(ctx, byAccount[a]); !at.IsZero() {
				mu.Lock()
				if next.IsZero() || at.Before(next) {
					next = at
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return next
}

// sendAccount sends one account's payments in order, stopping at the first that stays
// queued. It returns when that one is due again (zero if not known).
func (s *sender) sendAccount(ctx context.Context, list []QueuedPayment) time.Time {
	log := s.c.cfg.logger
	for _, p := range list {
		if st := s.snapshot(); st.Offline || st.LoginRequired || ctx.Err() != nil {
			return time.Time{}
		}
		if time.Now().Before(p.NextAttempt) {
			return p.NextAttempt
		}
		n := p.Attempts + 1
		// Recorded before the call, so the attempt numbers the gateway logs never repeat.
		if err := s.c.queue.noteAttempt(ctx, p.Request.ID, n); err != nil {
			log.Warn("queue: record attempt", "payment_id", p.Request.ID, "error", err)
			return time.Now().Add(s.c.cfg.pollEvery)
		}
		r, class, err := s.c.attempt(ctx, p.Request, n, func(m int) error {
			return s.c.queue.noteAttempt(ctx, p.Request.ID, m)
		})
		if err == nil {
			s.settle(ctx, r)
			continue
		}
		if ctx.Err() != nil {
			return time.Time{}
		}
		s.setError(err)
		switch class {
		case classOffline:
			s.mu.Lock()
			wasOffline := s.state.Offline
			s.state.Offline = true
			s.mu.Unlock()
			if !wasOffline {
				log.Info("queue: gateway unreachable; payments stay queued", "payment_id", p.Request.ID, logErr(err))
			}
			s.tellQueued("gateway unreachable: " + errString(err))
			return time.Time{}
		case classAuth:
			s.mu.Lock()
			s.state.LoginRequired = true
			s.mu.Unlock()
			log.Warn("queue: the gateway refused the token; log in again to send queued payments", logErr(err))
			s.tellQueued("login required: " + errString(err))
			return time.Time{}
		}
		at := time.Now().Add(s.c.cfg.retry.Backoff(n))
		log.Info("queue: payment not settled; retrying with the same id", "payment_id", p.Request.ID, "attempt", n, "retry_at", at, logErr(err))
		if err := s.c.queue.retryLater(ctx, p.Request.ID, at, errString(err)); err != nil {
			log.Warn("queue: record retry", "payment_id", p.Request.ID, "error", err)
		}
		return at
	}
	return time.Time{}
}

// settle records an outcome durably and hands it over: to the Pay call waiting for it (after
// the outcome is on disk), or else to the WithOutcomes callback (before it is recorded as
// reported, so a crash in between reports it again rather than never).
func (s *sender) settle(ctx context.Context, r Result) {
	s.mu.Lock()
	if w, waiting := s.waiters[r.ID]; waiting {
		fresh, err := s.c.queue.settle(ctx, r, true, time.Now())
		if err == nil && fresh {
			w.done <- r
			delete(s.waiters, r.ID)
		}
		s.mu.Unlock()
		s.logSettled(r, err)
		return
	}
	s.mu.Unlock()
	cb := s.c.cfg.onOutcome
	if cb != nil {
		cb(r)
	}
	_, err := s.c.queue.settle(ctx, r, cb != nil, time.Now())
	s.logSettled(r, err)
}

func (s *sender) logSettled(r Result, err error) {
	if err != nil {
		s.c.cfg.logger.Warn("queue: record outcome", "payment_id", r.ID, "error", err)
		return
	}
	s.c.cfg.logger.Info("queue: payment settled", "payment_id", r.ID, "status", r.Status, "reason", r.Reason, "attempts", r.Attempts, "replayed", r.Replayed)
}

// SenderState returns what the background sender is doing; the zero value without a queue.
func (c *Client) SenderState() SenderState {
	if c.sender == nil {
		return SenderState{}
	}
	return c.sender.snapshot()
}

// Kick makes the sender look at the queue now rather than at its next poll, and probe an
// unreachable gateway now.
func (c *Client) Kick() {
	if c.sender != nil {
		c.sender.kick()
	}
}

// Flush waits until the user's queued payments are all settled, calling progress (if not nil)
// whenever the counts change and at least every second. It returns nil when nothing of the
// user's is left, ErrLoginRequired when the gateway refused the token, and ctx's error when
// ctx ends first (the payments stay queued).
func (c *Client) Flush(ctx context.Context, progress func(QueueStats, SenderState)) error {
	if c.queue == nil {
		return ErrNoQueue
	}
	c.Kick()
	var last QueueStats
	lastReport := time.Time{}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		stats, err := c.queue.Stats(ctx)
		if err != nil {
			return err
		}
		left, err := c.pendingForUser(ctx)
		if err != nil {
			return err
		}
		st := c.SenderState()
		if progress != nil && (stats != last || time.Since(lastReport) >= time.Second) {
			progress(stats, st)
			last, lastReport = stats, time.Now()
		}
		if left == 0 {
			return nil
		}
		if st.LoginRequired {
			return ErrLoginRequired
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func (c *Client) pendingForUser(ctx context.Context) (int, error) {
	pending, err := c.queue.Pending(ctx)
	if err != nil {
		return 0, err
	}
	user, n := c.Username(), 0
	for _, p := range pending {
		if user == "" || p.Username == "" || p.Username == user {
			n++
		}
	}
	return n, nil
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return logErr(err).Value.String()
}
