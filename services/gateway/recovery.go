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
func (c *Coordinator) DecisionFor(ctx context.Context, id, bank string, proof []byte) (p paymentRecord, err error) {
	defer func() { c.metrics.answeredGetDecision(p, err) }()
	proven := validProof(c.proofKey, id, bank, proof)
	p, err = c.store.Payment(ctx, id)
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
	c.countDecided(p, decisionAbort, decidedByGetDecision)
	c.metrics.presumedAbort(p)
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
	var counts unfinishedCounts
	for {
		list, err := c.store.Unfinished(ctx, after, page)
		if err != nil {
			if ctx.Err() == nil {
				c.logger.LogAttrs(ctx, slog.LevelWarn, "recovery: list unfinished payments", slog.String("error", err.Error()))
			}
			return
		}
		c.countUnfinished(&counts, list)
		c.recoverList(ctx, list)
		if len(list) < page {
			c.metrics.setUnfinished(counts)
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
			c.noteIfClaimed(fresh.PaymentID, "claimed from a replica whose lease had expired")
			if fresh.Decision != decisionNone {
				c.metrics.recoveryRedrive()
			}
			rctx, span := c.startRecovery(ctx, fresh.PaymentID)
			defer span.End()
			c.recoverPayment(rctx, fresh)
		}()
	}
}

// recoverPayment finishes a payment this process holds and nobody drives now: an undecided one
// past its deadline is aborted (by the timeout monitor), an undecided one within it is resumed
// from phase one, a decided one has its phase two sent again. It returns the payment as it
// stands afterwards and whether every bank has acknowledged its phase two. It never changes a
// decision: it decides only an undecided payment, by the store's compare-and-set.
func (c *Coordinator) recoverPayment(ctx context.Context, p paymentRecord) (paymentRecord, bool) {
	if p.Decision == decisionNone {
		if c.now().After(p.Deadline) {
			decided, err := c.store.Decide(ctx, p.PaymentID, decisionAbort, int32(gatewayv1.FailureReason_FAILURE_REASON_TIMEOUT), fmt.Sprintf("no decision within the %s timeout", c.timeout), false, c.now(), decidedByTimeoutMonitor)
			if err != nil {
				c.logger.LogAttrs(ctx, slog.LevelWarn, "recovery: abort", slog.String("payment_id", p.PaymentID), slog.String("error", err.Error()))
				return p, false
			}
			c.countDecided(decided, decisionAbort, decidedByTimeoutMonitor)
			c.logger.LogAttrs(ctx, slog.LevelInfo, "recovery: aborted payment past its deadline", slog.String("payment_id", p.PaymentID))
			c.events.publish(decided)
			return decided, c.timedComplete(ctx, decided)
		}
		// Admitted before a restart and never decided: resume it. Prepare is idempotent at the banks.
		c.logger.LogAttrs(ctx, slog.LevelInfo, "recovery: resuming undecided payment", slog.String("payment_id", p.PaymentID))
		c.noteRetry(p.PaymentID, "prepare")
		out, completed, err := c.drive(ctx, p, false, decidedByRecovery)
		if err != nil {
			c.logger.LogAttrs(ctx, slog.LevelWarn, "recovery: resume", slog.String("payment_id", p.PaymentID), slog.String("error", err.Error()))
			return p, false
		}
		return out, completed
	}
	c.noteRetry(p.PaymentID, "phase two")
	done := c.complete(ctx, p)
	if done {
		c.logger.LogAttrs(ctx, slog.LevelInfo, "recovery: phase two completed", slog.String("payment_id", p.PaymentID),
			slog.String("decision", p.Decision.String()))
	}
	return p, done
}

// ErrHeldElsewhere is Redrive's refusal of a payment that another live gateway replica
// drives.
var ErrHeldElsewhere = errors.New("gateway: the payment is driven by another gateway replica")

// Redrive runs recovery for payment id now, as the recovery loop would at its next round (see
// recoverPayment), on behalf of admin, and returns the payment as it stands afterwards with
// whether every bank has acknowledged its phase two. A finished payment is returned as it is.
// It claims the payment as recovery does: it waits for a driver in this process to let go
// (ErrPaymentInProgress when it does not before ctx is nearly over), and refuses a payment
// that another live replica holds (ErrHeldElsewhere). ErrNotFound for an unknown id.
func (c *Coordinator) Redrive(ctx context.Context, id, admin string) (paymentRecord, bool, error) {
	p, err := c.store.Payment(ctx, id)
	for {
		switch {
		case err != nil:
			return p, false, err
		case p.Completed:
			return p, true, nil
		case c.isCompleting(id):
			return p, true, nil // every bank acknowledged; the completion is being recorded
		}
		cl, owned := c.acquire(id, p.Fingerprint)
		if owned {
			break
		}
		// Driven in this process now (by its request, or by recovery): wait for it to end.
		wctx, cancel := answerBy(ctx)
		select {
		case <-cl.released:
			cancel()
		case <-wctx.Done():
			cancel()
			return p, false, ErrPaymentInProgress
		}
		p, err = c.store.Payment(ctx, id)
	}
	defer c.release(id)
	fresh, held, err := c.store.Claim(ctx, id)
	switch {
	case err != nil:
		return p, false, err
	case fresh.Completed:
		return fresh, true, nil
	case !held:
		return fresh, false, ErrHeldElsewhere
	}
	c.noteRedriveRequested(id, admin)
	c.metrics.adminRedrive()
	c.noteIfClaimed(id, "claimed for a re-drive from a replica whose lease had expired")
	c.logger.LogAttrs(ctx, slog.LevelInfo, "re-drive requested", slog.String("payment_id", id), slog.String("admin", admin))
	// The protocol runs to its end even if the admin goes away, as a request's does.
	out, done := c.recoverPayment(context.WithoutCancel(ctx), fresh)
	return out, done, nil
}
