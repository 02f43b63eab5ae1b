package gateway

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// eventSequenceFloor is how often the sequencer runs when nothing woke it: what numbers the
// events of a replica that died between an append and its own run, and what is missed when
// notifications are lost.
const eventSequenceFloor = 100 * time.Millisecond

// eventSequencer numbers the store's events (Store.SequenceEvents) soon after they are
// appended, and tells the gateway's code how far the log is numbered: every event with a seq
// up to Last is visible to readers, and none after it is until Last grows.
//
// It runs SequenceEvents after every append of this process (the store's ListenEvents),
// whenever another replica announces that it numbered events (so that this replica's waiters
// wake), and every eventSequenceFloor regardless. On a store that is not shared, SequenceEvents
// only reads the last seq: the loop is then just the notifier.
//
// To follow the log, read the events after the last seq seen, then wait for the next advance:
//
//	for {
//		last, advanced := seq.Last() // before reading, so that no advance is missed
//		evs, _ := store.EventsAfter(ctx, after, limit)
//		... deliver evs, after = the last one's seq ...
//		if len(evs) == 0 && after >= last {
//			select { case <-advanced: case <-ctx.Done(): return }
//		}
//	}
type eventSequencer struct {
	store  eventLog
	logger *slog.Logger
	floor  time.Duration
	kick   chan struct{}

	mu       sync.Mutex
	last     int64
	advanced chan struct{} // closed, and replaced, when last grows
}

// newEventSequencer returns a sequencer of store's events, to be run with run.
func newEventSequencer(store eventLog, logger *slog.Logger) *eventSequencer {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &eventSequencer{store: store, logger: logger, floor: eventSequenceFloor,
		kick: make(chan struct{}, 1), advanced: make(chan struct{})}
}

// run numbers events until ctx ends.
func (q *eventSequencer) run(ctx context.Context) {
	lctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := q.store.ListenEvents(lctx, q.Kick, q.advance); err != nil && lctx.Err() == nil {
			q.logger.LogAttrs(ctx, slog.LevelWarn, "event log: listen", slog.String("error", err.Error()))
		}
	})
	defer func() { cancel(); wg.Wait() }()
	t := time.NewTicker(q.floor)
	defer t.Stop()
	var lastWarned time.Time
	for {
		assigned, last, err := q.store.SequenceEvents(ctx)
		switch {
		case err == nil:
			q.advance(last)
			if assigned >= eventSequenceBatch {
				continue // more are waiting
			}
		case ctx.Err() != nil:
			return
		case time.Since(lastWarned) >= 10*time.Second:
			lastWarned = time.Now()
			q.logger.LogAttrs(ctx, slog.LevelWarn, "event log: sequence events", slog.String("error", err.Error()))
		}
		select {
		case <-ctx.Done():
			return
		case <-q.kick:
		case <-t.C:
		}
	}
}

// Kick asks for a run soon, without waiting.
func (q *eventSequencer) Kick() {
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// advance records that the events up to last are numbered, and wakes the waiters if that is
// further than known before.
func (q *eventSequencer) advance(last int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if last <= q.last {
		return
	}
	q.last = last
	close(q.advanced)
	q.advanced = make(chan struct{})
}

// Last returns the highest seq known to be numbered (every event up to it is visible to
// readers), and a channel that is closed once a higher one is.
func (q *eventSequencer) Last() (int64, <-chan struct{}) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.last, q.advanced
}

// WaitFor returns once the events up to seq are numbered, or with ctx's error when ctx ends
// first.
func (q *eventSequencer) WaitFor(ctx context.Context, seq int64) error {
	for {
		last, advanced := q.Last()
		if last >= seq {
			return nil
		}
		select {
		case <-advanced:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
