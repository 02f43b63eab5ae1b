package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"connectrpc.com/connect"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	"github.com/paygate/paygate/internal/crashpoint"
)

// Phase two: telling the participants the decision until each has acknowledged it, and
// recording that it is done.

// complete sends the decision to every participant, in parallel, and records the payment as
// completed when all of them acknowledged. Banks that did not are retried by the recovery loop.
func (c *Coordinator) complete(ctx context.Context, p paymentRecord) bool {
	banks := participantsOf(p)
	if p.Presumed && p.From == "" {
		// A presumed abort recorded for a payment the gateway has no row for: which banks it
		// involves is not known here. Each bank that prepared it learns the abort by asking
		// GetDecision, as the one that caused this record did.
		return true
	}
	ctx, span := c.startPhaseTwo(ctx, p)
	defer span.End()
	errs := make([]error, len(banks))
	var once sync.Once
	each(len(banks), func(i int) {
		errs[i] = c.tracedPhase2(ctx, banks[i], p)
		if errs[i] == nil {
			once.Do(func() { crashpoint.Hit(crashpoint.GatewayAfterFirstPhase2) })
		}
	})
	for i, err := range errs {
		if err != nil {
			c.logger.LogAttrs(ctx, slog.LevelWarn, "phase two not acknowledged; will retry",
				slog.String("payment_id", p.PaymentID), slog.String("bank", banks[i]),
				slog.String("decision", p.Decision.String()), slog.String("error", err.Error()))
			c.scheduleRetry(p.PaymentID)
			return false
		}
	}
	c.markCompleted(ctx, p.PaymentID)
	return true
}

// markCompleted records that every participant acknowledged phase two. Nobody waits for that
// record: while the recovery loop runs, completions are written in batches in the background
// (a completion lost in a crash only means phase two is sent again, which the banks answer
// idempotently); without it, at once.
func (c *Coordinator) markCompleted(ctx context.Context, id string) {
	c.mu.Lock()
	delete(c.retry, id)
	delete(c.known, id)
	c.mu.Unlock()
	if c.completerRunning.Load() {
		c.mu.Lock()
		c.completing[id] = struct{}{}
		c.mu.Unlock()
		select {
		case c.completions <- id:
			return
		default: // the queue is full: write this one now
		}
	}
	c.flushCompleted(ctx, []string{id})
}

// flushCompleted writes completions; on failure the payments are left to the recovery loop.
func (c *Coordinator) flushCompleted(ctx context.Context, ids []string) {
	if err := c.store.MarkCompleted(context.WithoutCancel(ctx), ids, c.now()); err != nil {
		c.logger.LogAttrs(ctx, slog.LevelWarn, "record completion", slog.Int("payments", len(ids)), slog.String("error", err.Error()))
	}
	c.mu.Lock()
	for _, id := range ids {
		delete(c.completing, id)
	}
	c.mu.Unlock()
}

// runCompleter writes queued completions in batches until ctx ends, then writes the rest.
func (c *Coordinator) runCompleter(ctx context.Context) {
	c.completerRunning.Store(true)
	batch := make([]string, 0, maxBatch)
	for {
		var stop bool
		select {
		case id := <-c.completions:
			batch = append(batch[:0], id)
		case <-ctx.Done():
			stop = true
			batch = batch[:0]
		}
	drain:
		for len(batch) < maxBatch || stop {
			select {
			case id := <-c.completions:
				batch = append(batch, id)
				if len(batch) == maxBatch {
					c.flushCompleted(ctx, batch)
					batch = batch[:0]
				}
			default:
				break drain
			}
		}
		if len(batch) > 0 {
			c.flushCompleted(ctx, batch)
		}
		if stop {
			c.completerRunning.Store(false)
			// A completion queued after the last drain is written by its sender's fallback
			// only if it saw the flag down; drain once more for one that raced the flag.
			for {
				select {
				case id := <-c.completions:
					c.flushCompleted(ctx, []string{id})
					continue
				default:
				}
				return
			}
		}
	}
}

func (c *Coordinator) phase2(ctx context.Context, bank string, p paymentRecord) error {
	client, ok := c.banks[bank]
	if !ok {
		return fmt.Errorf("%w %q", ErrUnknownBank, bank)
	}
	ctx, cancel := context.WithTimeout(ctx, c.phase2Timeout)
	defer cancel()
	var err error
	switch p.Decision {
	case decisionCommit:
		_, err = client.CommitTransaction(ctx, connect.NewRequest(&bankv1.CommitTransactionRequest{TransactionId: p.PaymentID}))
	case decisionAbort:
		_, err = client.AbortTransaction(ctx, connect.NewRequest(&bankv1.AbortTransactionRequest{TransactionId: p.PaymentID}))
	default:
		return fmt.Errorf("gateway: phase two of undecided payment %s", p.PaymentID)
	}
	c.health.observe(bank, err, false)
	if err == nil {
		c.noteAcknowledged(p.PaymentID, bank)
	} else {
		c.noteBankError(p.PaymentID, bank, err)
	}
	if err != nil && connect.CodeOf(err) == connect.CodeFailedPrecondition {
		// The bank holds the opposite outcome: an invariant violation that needs a person.
		c.logger.LogAttrs(ctx, slog.LevelError, "INVARIANT VIOLATION: bank refused the decision",
			slog.String("payment_id", p.PaymentID), slog.String("bank", bank),
			slog.String("decision", p.Decision.String()), slog.String("error", err.Error()))
	}
	return err
}

func (c *Coordinator) scheduleRetry(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.retry[id]
	if st.backoff == 0 {
		st.backoff = 200 * time.Millisecond
	} else {
		st.backoff = min(st.backoff*2, 10*time.Second)
	}
	st.next = c.now().Add(st.backoff)
	c.retry[id] = st
}

func (c *Coordinator) retryDue(id string, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, ok := c.retry[id]
	return !ok || !now.Before(st.next)
}
