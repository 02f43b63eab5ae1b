package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
)

// Recovery: the loop that finishes what requests left unfinished (after a restart, a bank
// outage, a replica's death), and the answer to a bank asking for a decision.

// ErrNotParticipant is DecisionFor's refusal of a bank that cannot show it takes part in the
// transaction it asks about.
var ErrNotParticipant = errors.New("gateway: the bank is not a participant of the transaction")

// DecisionFor answers GetDecision from bank about transaction id: the recorded decision, or a
// presumed abort recorded now for a payment without one. The bank must take part in the
// transaction: it presents the decision proof the transaction's prepare carried, which also
// lets a presumed abort be recorded for an id whose admission was lost. Without a valid proof
// (a transaction prepared before proofs existed) a bank is answered only about a payment the
// store holds with that bank as a participant. Any other request gets ErrNotParticipant, the
// same whether the id is known or not, and nothing is recorded.
func (c *Coordinator) DecisionFor(ctx context.Context, id, bank string, proof []byte) (paymentRecord, error) {
	proven := validProof(c.proofKey, id, bank, proof)
	p, err := c.store.Payment(ctx, id)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return p, err
	}
	switch {
	case err == nil && !isUnadmittedAbort(p) && !slices.Contains(participantsOf(p), bank):
		return paymentRecord{}, ErrNotParticipant
	case errors.Is(err, ErrNotFound) && !proven:
		return paymentRecord{}, ErrNotParticipant
	case err == nil && isUnadmittedAbort(p) && !proven:
		return paymentRecord{}, ErrNotParticipant
	}
	if err == nil && p.Decision != decisionNone {
		return p, nil
	}
	p, err = c.store.Decide(ctx, id, decisionAbort, int32(gatewayv1.FailureReason_FAILURE_REASON_TIMEOUT), "no decision before the deadline; aborted when a bank asked for the outcome", true, c.now(), decidedByGetDecision)

	if err != nil {
		return p, err
	}
	c.logger.LogAttrs(ctx, slog.LevelInfo, "presumed abort", slog.String("payment_id", id), slog.String("decision", p.Decision.String()))
	c.events.publish(p)
	c.Kick()
	return p, nil
}

// Kick asks the recovery loop to run now.
func (c *Coordinator) Kick() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Recover runs the recovery loop until ctx ends: it aborts undecided payments whose deadline has
// passed, resumes undecided payments nobody is driving (after a restart), and sends phase two
// again to banks that have not acknowledged a decision. It runs once at once, then every
// interval and whenever kicked.
func (c *Coordinator) Recover(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	defer c.work.Wait()
	c.work.Add(1)
	go func() {
		defer c.work.Done()
		c.runCompleter(ctx)
	}()
	for {
		c.recoverOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.kick:
		}
	}
}

func (c *Coordinator) recoverOnce(ctx context.Context) {
	// First take over the payments of replicas whose lease expired (none on a store that is
	// not shared), a page at a time.
	const page = 1000
	for {
		n, err := c.store.ClaimOrphans(ctx, page)
		if err != nil {
			if ctx.Err() == nil {
				c.logger.LogAttrs(ctx, slog.LevelWarn, "recovery: claim payments of expired replicas", slog.String("error", err.Error()))
			}
			break
		}
		if n > 0 {
			c.logger.LogAttrs(ctx, slog.LevelInfo, "recovery: took over payments of replicas whose lease expired", slog.Int("payments", n))
		}
		if n < page {
			break
		}
	}
	// Page through every unfinished payment of this process's: payments stuck at a bank that
	// is down must not keep newer ones from being looked at.
	var after *unfinishedCursor
	for {
		list, err := c.store.Unfinished(ctx, after, page)
		if err != nil {
			if ctx.Err() == nil {
				c.logger.LogAttrs(ctx, slog.LevelWarn, "recovery: list unfinished payments", slog.String("error", err.Error()))
			}
			return
		}
		c.recoverList(ctx, list)
		if len(list) < page {
			return
		}
		last := list[len(list)-1]
		after = &unfinishedCursor{Deadline: last.Deadline.UnixNano(), PaymentID: last.PaymentID}
	}
}

// maxRecoveryWorkers bounds the payments the recovery loop drives at once, so that a long
// backlog (a bank down for hours) costs a bounded number of goroutines and bank calls.
const maxRecoveryWorkers = 32

func (c *Coordinator) recoverList(ctx context.Context, list []paymentRecord) {
	now := c.now()
	for _, p := range list {
		if ctx.Err() != nil {
			return
		}
		if p.Decision != decisionNone && !c.retryDue(p.PaymentID, now) {
			continue
		}
		if c.isCompleting(p.PaymentID) {
			continue
		}
		select {
		case c.recoverSlots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		if _, owned := c.acquire(p.PaymentID, p.Fingerprint); !owned {
			<-c.recoverSlots
			continue // being driven now, or done and being recorded
		}
		c.work.Add(1)
		go func() {
			defer c.work.Done()
			defer func() { <-c.recoverSlots }()
			defer c.release(p.PaymentID)
			// The list was read before the claim: a request may have finished the payment in
			// between (decided, completed, released), or another replica taken it over. Act on
			// the row as it is now, if it is still this process's.
			fresh, held, err := c.store.Claim(ctx, p.PaymentID)
			if err != nil {
				if ctx.Err() == nil {
					c.logger.LogAttrs(ctx, slog.LevelWarn, "recovery: read payment", slog.String("payment_id", p.PaymentID), slog.String("error", err.Error()))
				}
				return
			}
			if fresh.Completed || !held {
				return
			}
			c.recoverPayment(ctx, fresh)
		}()
	}
}

func (c *Coordinator) recoverPayment(ctx context.Context, p paymentRecord) {
	if p.Decision == decisionNone {
		if c.now().After(p.Deadline) {
			decided, err := c.store.Decide(ctx, p.PaymentID, decisionAbort, int32(gatewayv1.FailureReason_FAILURE_REASON_TIMEOUT), fmt.Sprintf("no decision within the %s timeout", c.timeout), false, c.now(), decidedByTimeoutMonitor)

			if err != nil {
				c.logger.LogAttrs(ctx, slog.LevelWarn, "recovery: abort", slog.String("payment_id", p.PaymentID), slog.String("error", err.Error()))
				return
			}
			c.logger.LogAttrs(ctx, slog.LevelInfo, "recovery: aborted payment past its deadline", slog.String("payment_id", p.PaymentID))
			c.events.publish(decided)
			c.complete(ctx, decided)
			return
		}
		// Admitted before a restart and never decided: resume it. Prepare is idempotent at the banks.
		c.logger.LogAttrs(ctx, slog.LevelInfo, "recovery: resuming undecided payment", slog.String("payment_id", p.PaymentID))
		if _, err := c.drive(ctx, p, false); err != nil {
			c.logger.LogAttrs(ctx, slog.LevelWarn, "recovery: resume", slog.String("payment_id", p.PaymentID), slog.String("error", err.Error()))
		}
		return
	}
	if c.complete(ctx, p) {
		c.logger.LogAttrs(ctx, slog.LevelInfo, "recovery: phase two completed", slog.String("payment_id", p.PaymentID),
			slog.String("decision", p.Decision.String()))
	}
}
