package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel/trace"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/internal/account"
	"github.com/paygate/paygate/internal/crashpoint"
)

// participant is what the coordinator needs of a bank. The generated
// bankv1connect.BankServiceClient satisfies it.
type participant interface {
	PrepareTransaction(context.Context, *connect.Request[bankv1.PrepareTransactionRequest]) (*connect.Response[bankv1.PrepareTransactionResponse], error)
	CommitTransaction(context.Context, *connect.Request[bankv1.CommitTransactionRequest]) (*connect.Response[bankv1.CommitTransactionResponse], error)
	AbortTransaction(context.Context, *connect.Request[bankv1.AbortTransactionRequest]) (*connect.Response[bankv1.AbortTransactionResponse], error)
}

// Coordinator errors.
var (
	ErrPaymentReused     = errors.New("gateway: payment_id reused with different parameters")
	ErrPaymentInProgress = errors.New("gateway: payment in progress")
	ErrUnknownBank       = errors.New("gateway: unknown bank")
)

// Coordinator runs two-phase commit for payments. See the package documentation for the
// protocol and its states.
type Coordinator struct {
	store   Store
	banks   map[string]participant
	health  *bankHealth
	events  *broker
	trail   *trailRecorder
	logger  *slog.Logger
	now     func() time.Time
	timeout time.Duration
	// proofKey keys the decision proofs sent with prepares (see decisionProof).
	proofKey []byte
	// phase2Timeout bounds each commit or abort call; a bank that does not answer in time is left
	// to the recovery loop.
	phase2Timeout time.Duration

	// metrics counts decisions and times phases; nil counts nothing.
	metrics *paymentMetrics
	// tracer makes the payments' spans (see tracing.go); nil makes none.
	tracer trace.Tracer

	// work tracks the recovery loop's goroutines, so that Recover returns only when they end.
	work sync.WaitGroup
	// background tracks the phase twos that run after the request was answered.
	background sync.WaitGroup
	// settle lets reads wait for those phase twos.
	settle settleBarrier

	// completions queues payments whose phase two every bank acknowledged, for runCompleter to
	// record in batches; completing holds them until recorded, so recovery leaves them alone.
	completions      chan string
	completerRunning atomic.Bool

	mu         sync.Mutex
	inflight   map[string]*claim // payments this process is driving now
	retry      map[string]retryState
	completing map[string]struct{}
	// known is, on a shared store, the lease under which this process came to hold each
	// unfinished payment it admitted or took over, so that a payment recovery finds among its
	// own without having held it before is recorded as claimed (see noteIfClaimed).
	known map[string]string
	kick  chan struct{}
	// recoverSlots holds a token for each payment the recovery loop is driving (at most
	// maxRecoveryWorkers).
	recoverSlots chan struct{}
}

type retryState struct {
	next    time.Time
	backoff time.Duration
	// attempts counts recovery's re-sends (the trail's RETRY events).
	attempts int32
}

// vote is one bank's answer to a prepare.
type vote struct {
	bank   string
	yes    bool
	reason bankv1.VoteReason
	msg    string
	err    error
}

func newCoordinator(store Store, banks map[string]participant, health *bankHealth, events *broker, logger *slog.Logger, timeout time.Duration, proofKey []byte) *Coordinator {
	return &Coordinator{
		proofKey:      proofKey,
		store:         store,
		banks:         banks,
		health:        health,
		events:        events,
		trail:         newTrailRecorder(store, logger),
		logger:        logger,
		now:           store.Now,
		timeout:       timeout,
		phase2Timeout: 5 * time.Second,
		inflight:      make(map[string]*claim),
		retry:         make(map[string]retryState),
		completing:    make(map[string]struct{}),
		known:         make(map[string]string),
		completions:   make(chan string, 4*maxBatch),
		kick:          make(chan struct{}, 1),
		recoverSlots:  make(chan struct{}, maxRecoveryWorkers),
	}
}

// participants returns the banks a payment involves, payer's bank first.
func participantsOf(p paymentRecord) []string {
	from, to := account.Bank(p.From), account.Bank(p.To)
	if from == to {
		return []string{from}
	}
	return []string{from, to}
}

// claim is a payment this process is driving now: by a request, or by the recovery loop.
type claim struct {
	// owner is the store lease under which the driver holds the payment (see leaseStore):
	// when the process's lease changes, the driver no longer holds it.
	owner string
	// fingerprint is the payment's parameters as the driver has them, for a duplicate request
	// to be compared with before the payment is stored.
	fingerprint []byte
	// released is closed when the driver lets go.
	released chan struct{}
}

// acquire marks a payment as driven by this process and returns true, or returns the claim of
// whoever already drives it and false.
func (c *Coordinator) acquire(id string, fingerprint []byte) (*claim, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl, ok := c.inflight[id]; ok {
		return cl, false
	}
	c.inflight[id] = &claim{owner: c.store.Owner(), fingerprint: fingerprint, released: make(chan struct{})}
	return nil, true
}

// holds says whether this process may still drive payment id: it has claimed it, under the
// store lease it holds now, and that lease is certainly valid. A process that lost its lease
// (it was paused or cut off from the store for longer than the lease lasts) must not send a
// prepare: another replica may be driving the payment. Deciding and phase two stay safe
// without the lease (the decision is a compare-and-set, phase two is idempotent).
func (c *Coordinator) holds(id string) bool {
	c.mu.Lock()
	cl, ok := c.inflight[id]
	c.mu.Unlock()
	return ok && cl.owner == c.store.Owner() && c.store.Holding()
}

func (c *Coordinator) isCompleting(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.completing[id]
	return ok
}

func (c *Coordinator) release(id string) {
	c.mu.Lock()
	if cl, ok := c.inflight[id]; ok {
		close(cl.released)
		delete(c.inflight, id)
	}
	c.mu.Unlock()
}

// Execute runs a payment to a decision, or returns the stored outcome of an earlier request
// with the same payment_id (replayed = true).
//
// A request first claims the payment in memory. Whoever holds the claim (this request, a
// duplicate that came first, or the recovery loop resuming an undecided payment after a
// restart) is the only one to write the payment's row and talk to the banks; a duplicate
// without the claim waits for the outcome.
func (c *Coordinator) Execute(ctx context.Context, p paymentRecord) (paymentRecord, bool, error) {
	now := c.now()
	p.CreatedAt = now
	p.Deadline = now.Add(c.timeout)
	for {
		cl, owned := c.acquire(p.PaymentID, p.Fingerprint)
		if owned {
			out, replayed, err, handedOff := c.run(ctx, p)
			if !handedOff {
				c.release(p.PaymentID)
			}
			return out, replayed, err
		}
		out, replayed, err, again := c.follow(ctx, p, cl)
		if !again {
			return out, replayed, err
		}
	}
}

// run executes a payment this request has claimed. handedOff says that phase two goes on after
// run returns, and releases the claim when it ends.
func (c *Coordinator) run(ctx context.Context, p paymentRecord) (out paymentRecord, replayed bool, err error, handedOff bool) {
	// Money the payer is about to receive, or to get back from an aborted payment, counts:
	// wait for phase twos that raise the payer's available money.
	if err := c.waitSettled(ctx, true, p.From); err != nil {
		return p, false, err, false
	}
	// The protocol runs to its end even if the client goes away: it is bounded by the payment's
	// deadline, not by the request's.
	ctx = context.WithoutCancel(ctx)
	// Admit the payment, and ask the banks to prepare while the admission is being synced: the
	// decision waits for both, so the row is durable before anything is decided. Whether the
	// row was inserted is known before it is durable (only the claim's holder inserts it), and
	// a crash before it is durable leaves prepared transactions the gateway never heard of,
	// which the banks resolve through GetDecision as presumed aborts (DecisionFor).
	admitCtx := crashpoint.Hold(crashpoint.Hold(ctx, crashpoint.GatewayAfterInsert), crashpoint.GatewayVotesBeforeAdmit)
	admitStart := time.Now()
	tagPayment(ctx, p.PaymentID)
	spanCtx, admission := c.startSpan(admitCtx, "admission", p.PaymentID)
	defer admission.End()
	stored, inserted, durable, err := c.store.StartAdmitPayment(spanCtx, p)
	if err != nil {
		return p, false, err, false
	}
	if !inserted {
		if err := durable(); err != nil {
			return p, false, err, false
		}
		return c.rerun(ctx, stored, p)
	}
	crashpoint.HitHeld(admitCtx, crashpoint.GatewayAfterInsert)
	// A shared store sets the payment's times by its own clock; a refund of "what is left" is
	// stored with the amount that was.
	p.CreatedAt, p.Deadline, p.Amount = stored.CreatedAt, stored.Deadline, stored.Amount
	c.noteHeld(p.PaymentID)
	votes, err := c.timedPrepare(ctx, p)
	if err == nil && !c.holds(p.PaymentID) {
		err = errLeaseLost // see drive
	}
	if err != nil {
		durable() // the banks' prepares, if any, end as presumed aborts or with the new driver
		return p, false, err, false
	}
	crashpoint.HitHeld(admitCtx, crashpoint.GatewayVotesBeforeAdmit)
	if err := durable(); err != nil {
		// Nothing is decided: the banks' prepared transactions end as presumed aborts.
		return p, false, err, false
	}
	c.metrics.since(phaseAdmission, admitStart)
	admission.End()
	crashpoint.Hit(crashpoint.GatewayAfterAdmit)
	c.events.publish(p)
	crashpoint.Hit(crashpoint.GatewayAfterPrepare)
	out, _, err = c.decideAndComplete(ctx, p, votes, true, decidedByRequest)
	if err != nil {
		return p, false, err, false
	}
	crashpoint.Hit(crashpoint.GatewayBeforeReply)
	return out, false, nil, true
}

// rerun answers a request for a payment that is already stored, holding its claim: the stored
// outcome, or the outcome of driving it on when it is undecided (admitted before a restart, or
// by a duplicate that gave up).
func (c *Coordinator) rerun(ctx context.Context, stored, p paymentRecord) (paymentRecord, bool, error, bool) {
	if isUnadmittedAbort(stored) {
		out, replayed, err := c.adopt(ctx, p)
		return out, replayed, err, false
	}
	if !bytes.Equal(stored.Fingerprint, p.Fingerprint) {
		return stored, false, ErrPaymentReused, false
	}
	if stored.Decision != decisionNone {
		return stored, true, nil, false
	}
	// Undecided: drive it on, unless another replica does.
	stored, held, err := c.store.Claim(ctx, stored.PaymentID)
	if err != nil {
		return p, false, err, false
	}
	if !held {
		if stored, held, err = c.awaitRemote(ctx, stored); err != nil || !held {
			return stored, err == nil, err, false
		}
	}
	if stored.Decision != decisionNone {
		return stored, true, nil, false
	}
	c.noteIfClaimed(stored.PaymentID, "taken over by a retry of the request")
	out, _, err := c.drive(context.WithoutCancel(ctx), stored, true, decidedByRequest)
	if err != nil {
		return stored, false, err, false
	}
	return out, true, nil, true
}

// awaitRemote waits for the outcome of payment p that another replica drives: until it is
// decided (returned with held false), until its driver's lease has expired and this process
// has claimed it (returned with held true: the caller drives it on), or until shortly before
// ctx's deadline (ErrPaymentInProgress). It is told of decisions by the store's
// notifications and polls the row besides, since a notification may be lost.
func (c *Coordinator) awaitRemote(ctx context.Context, p paymentRecord) (paymentRecord, bool, error) {
	ch, cancel := c.events.waitFor(p.PaymentID)
	defer cancel()
	wctx, wcancel := answerBy(ctx)
	defer wcancel()
	poll := 50 * time.Millisecond
	for {
		t := time.NewTimer(poll)
		select {
		case out := <-ch:
			t.Stop()
			return out, false, nil
		case <-t.C:
		case <-wctx.Done():
			t.Stop()
			return p, false, ErrPaymentInProgress
		}
		poll = min(2*poll, time.Second)
		fresh, held, err := c.store.Claim(ctx, p.PaymentID)
		switch {
		case err != nil:
			return p, false, err
		case fresh.Decision != decisionNone:
			return fresh, false, nil
		case held:
			c.logger.LogAttrs(ctx, slog.LevelInfo, "took over a payment whose replica's lease expired", slog.String("payment_id", p.PaymentID))
			return fresh, true, nil
		}
	}
}

// answerBy returns ctx bounded a little before its deadline, so that an "in progress" answer
// reaches the client before its own deadline ends the call.
func answerBy(ctx context.Context) (context.Context, context.CancelFunc) {
	d, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	return context.WithDeadline(ctx, d.Add(-min(time.Second, time.Until(d)/10)))
}

// isUnadmittedAbort says whether p is the presumed abort DecisionFor records for a payment
// the gateway has no row for: prepared at a bank by a request whose own row was never stored
// (the gateway stopped first). It has no parameters to compare a retry with.
func isUnadmittedAbort(p paymentRecord) bool {
	return p.Presumed && len(p.Fingerprint) == 0
}

// adopt answers a retry of a payment that ended as a presumed abort before its row was stored
// (isUnadmittedAbort): the presumed abort takes the request's parameters, so that every API
// shows the payment, failed, to its sender from now on, and a retry with other parameters is
// refused as a reuse. The payment's watchers are told.
func (c *Coordinator) adopt(ctx context.Context, p paymentRecord) (paymentRecord, bool, error) {
	stored, err := c.store.AdoptUnadmitted(ctx, p)
	if err != nil {
		return p, false, err
	}
	if !bytes.Equal(stored.Fingerprint, p.Fingerprint) {
		return stored, false, ErrPaymentReused
	}
	c.logger.LogAttrs(ctx, slog.LevelInfo, "presumed abort adopted by a retry", slog.String("payment_id", p.PaymentID))
	c.events.publish(stored)
	return stored, true, nil
}

// follow answers a request for a payment someone else (cl) is driving: once it is decided, its
// outcome (replayed); a retryable ErrPaymentInProgress shortly before ctx's deadline if it is
// not. again is true when the driver let go before storing the payment (it failed), so the
// request should try to drive it itself.
func (c *Coordinator) follow(ctx context.Context, p paymentRecord, cl *claim) (out paymentRecord, replayed bool, err error, again bool) {
	if !bytes.Equal(cl.fingerprint, p.Fingerprint) {
		// The driver's fingerprint is the stored one or will be; a presumed abort has none.
		if stored, err := c.store.Payment(ctx, p.PaymentID); err != nil || !isUnadmittedAbort(stored) {
			return p, false, ErrPaymentReused, false
		}
	}
	ch, cancel := c.events.waitFor(p.PaymentID)
	defer cancel()
	wctx, wcancel := answerBy(ctx)
	defer wcancel()
	// Read after subscribing, so a decision made in between is not missed.
	stored, err := c.store.Payment(ctx, p.PaymentID)
	switch {
	case err == nil && isUnadmittedAbort(stored):
		out, replayed, err := c.adopt(ctx, p)
		return out, replayed, err, false
	case err == nil && !bytes.Equal(stored.Fingerprint, p.Fingerprint):
		return stored, false, ErrPaymentReused, false
	case err == nil && stored.Decision != decisionNone:
		return stored, true, nil, false
	case err == nil:
		p = stored
	case !errors.Is(err, ErrNotFound):
		return p, false, err, false
	}
	select {
	case out := <-ch:
		if isUnadmittedAbort(out) {
			out, replayed, err := c.adopt(ctx, p)
			return out, replayed, err, false
		}
		if !bytes.Equal(out.Fingerprint, p.Fingerprint) {
			return out, false, ErrPaymentReused, false
		}
		return out, true, nil, false
	case <-cl.released:
		// The driver is done: read its outcome, or drive the payment if it never stored it.
		return p, false, nil, true
	case <-wctx.Done():
		return p, false, ErrPaymentInProgress, false
	}
}

// drive runs phases one and two for an admitted, undecided payment this process has claimed;
// async, by and completed as for decideAndComplete.
func (c *Coordinator) drive(ctx context.Context, p paymentRecord, async bool, by decider) (out paymentRecord, completed bool, err error) {
	votes, err := c.timedPrepare(ctx, p)
	if err == nil && !c.holds(p.PaymentID) {
		// The lease lapsed during phase one (the process was paused, or cut off from the
		// store): another replica may be driving the payment now. Leave the decision to it;
		// the votes may be timeouts of this process's own making.
		err = errLeaseLost
	}
	if err != nil {
		return p, false, err
	}
	crashpoint.Hit(crashpoint.GatewayAfterPrepare)
	return c.decideAndComplete(ctx, p, votes, async, by)
}

// decideAndComplete records the decision the votes make (the commit point) and runs phase two:
// before returning, or, when async, in the background, releasing the payment's claim at its
// end. Either way the decision is published (to duplicates waiting and to watchers) before it
// returns. by is who decides, kept with the decision: the request, or recovery resuming the
// payment. completed says that every bank acknowledged phase two before it returned (never when
// async).
func (c *Coordinator) decideAndComplete(ctx context.Context, p paymentRecord, votes []vote, async bool, by decider) (out paymentRecord, completed bool, err error) {
	d, reason, msg := decisionNone, gatewayv1.FailureReason_FAILURE_REASON_UNSPECIFIED, ""
	if c.now().After(p.Deadline) {
		d, reason, msg = decisionAbort, gatewayv1.FailureReason_FAILURE_REASON_TIMEOUT,
			fmt.Sprintf("no decision within the %s timeout", c.timeout)
	} else {
		d, reason, msg = decide(votes)
	}
	decideStart := time.Now()
	dctx, dspan := c.startSpan(ctx, "decision", p.PaymentID)
	decided, err := c.store.Decide(dctx, p.PaymentID, d, int32(reason), msg, false, c.now(), by)
	endDecision(dspan, decided, err)
	if err != nil {
		// The decision may or may not be durable; the recovery loop finds out and finishes.
		return p, false, fmt.Errorf("record decision for %s: %w", p.PaymentID, err)
	}
	c.metrics.since(phaseDecision, decideStart)
	c.countDecided(decided, d, by)
	crashpoint.Hit(crashpoint.GatewayAfterDecision)
	c.logger.LogAttrs(ctx, slog.LevelDebug, "payment decided",
		slog.String("payment_id", p.PaymentID), slog.String("decision", decided.Decision.String()),
		slog.String("reason", gatewayv1.FailureReason(decided.FailureReason).String()))
	if !async {
		completed = c.timedComplete(ctx, decided)
		c.events.publish(decided)
		return decided, completed, nil
	}
	// The answer does not wait for phase two: the decision is final once durable. Reads that
	// must see the payment applied wait on the settle barrier instead (see settleBarrier).
	settling := c.settle.start(settleKeys(decided)...)
	c.background.Add(1)
	go func() {
		defer c.background.Done()
		defer c.release(decided.PaymentID)
		defer c.settle.finish(settling)
		c.timedComplete(ctx, decided)
	}()
	c.events.publish(decided)
	return decided, false, nil
}

// WaitBackground waits for the phase twos running after their requests were answered.
func (c *Coordinator) WaitBackground() { c.background.Wait() }

func (d decision) String() string {
	switch d {
	case decisionCommit:
		return "commit"
	case decisionAbort:
		return "abort"
	}
	return "none"
}
