package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

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
	logger  *slog.Logger
	now     func() time.Time
	timeout time.Duration
	// proofKey keys the decision proofs sent with prepares (see decisionProof).
	proofKey []byte
	// phase2Timeout bounds each commit or abort call; a bank that does not answer in time is left
	// to the recovery loop.
	phase2Timeout time.Duration

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
	kick       chan struct{}
	// recoverSlots holds a token for each payment the recovery loop is driving (at most
	// maxRecoveryWorkers).
	recoverSlots chan struct{}
}

type retryState struct {
	next    time.Time
	backoff time.Duration
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
		logger:        logger,
		now:           store.Now,
		timeout:       timeout,
		phase2Timeout: 5 * time.Second,
		inflight:      make(map[string]*claim),
		retry:         make(map[string]retryState),
		completing:    make(map[string]struct{}),
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
	stored, inserted, durable, err := c.store.StartAdmitPayment(admitCtx, p)
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
	// A shared store sets the payment's times by its own clock.
	p.CreatedAt, p.Deadline = stored.CreatedAt, stored.Deadline
	votes, err := c.prepare(ctx, p)
	if err != nil {
		durable() // the banks' prepares, if any, end as presumed aborts or with the new driver
		return p, false, err, false
	}
	crashpoint.HitHeld(admitCtx, crashpoint.GatewayVotesBeforeAdmit)
	if err := durable(); err != nil {
		// Nothing is decided: the banks' prepared transactions end as presumed aborts.
		return p, false, err, false
	}
	crashpoint.Hit(crashpoint.GatewayAfterAdmit)
	c.events.publish(p)
	crashpoint.Hit(crashpoint.GatewayAfterPrepare)
	out, err = c.decideAndComplete(ctx, p, votes, true)
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
	out, err := c.drive(context.WithoutCancel(ctx), stored, true)
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
// async as for decideAndComplete.
func (c *Coordinator) drive(ctx context.Context, p paymentRecord, async bool) (paymentRecord, error) {
	votes, err := c.prepare(ctx, p)
	if err != nil {
		return p, err
	}
	crashpoint.Hit(crashpoint.GatewayAfterPrepare)
	return c.decideAndComplete(ctx, p, votes, async)
}

// decideAndComplete records the decision the votes make (the commit point) and runs phase two:
// before returning, or, when async, in the background, releasing the payment's claim at its
// end. Either way the decision is published (to duplicates waiting and to watchers) before it
// returns.
func (c *Coordinator) decideAndComplete(ctx context.Context, p paymentRecord, votes []vote, async bool) (paymentRecord, error) {
	d, reason, msg := decisionNone, gatewayv1.FailureReason_FAILURE_REASON_UNSPECIFIED, ""
	if c.now().After(p.Deadline) {
		d, reason, msg = decisionAbort, gatewayv1.FailureReason_FAILURE_REASON_TIMEOUT,
			fmt.Sprintf("no decision within the %s timeout", c.timeout)
	} else {
		d, reason, msg = decide(votes)
	}
	decided, err := c.store.Decide(ctx, p.PaymentID, d, int32(reason), msg, false, c.now())
	if err != nil {
		// The decision may or may not be durable; the recovery loop finds out and finishes.
		return p, fmt.Errorf("record decision for %s: %w", p.PaymentID, err)
	}
	crashpoint.Hit(crashpoint.GatewayAfterDecision)
	c.logger.LogAttrs(ctx, slog.LevelDebug, "payment decided",
		slog.String("payment_id", p.PaymentID), slog.String("decision", decided.Decision.String()),
		slog.String("reason", gatewayv1.FailureReason(decided.FailureReason).String()))
	if !async {
		c.complete(ctx, decided)
		c.events.publish(decided)
		return decided, nil
	}
	// The answer does not wait for phase two: the decision is final once durable. Reads that
	// must see the payment applied wait on the settle barrier instead (see settleBarrier).
	settling := c.settle.start(settleKeys(decided)...)
	c.background.Add(1)
	go func() {
		defer c.background.Done()
		defer c.release(decided.PaymentID)
		defer c.settle.finish(settling)
		c.complete(ctx, decided)
	}()
	c.events.publish(decided)
	return decided, nil
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

// errLeaseLost is prepare's refusal to send prepares for a payment this process no longer
// certainly holds (see Coordinator.holds). The payment is undecided; whoever holds it now
// decides it.
var errLeaseLost = fmt.Errorf("%w: its driver changed", ErrPaymentInProgress)

// prepare asks every participant to prepare, in parallel, and collects their votes. A bank known
// to be down is not called: its vote is an error at once. It sends nothing, and returns
// errLeaseLost, when this process no longer holds the payment.
func (c *Coordinator) prepare(ctx context.Context, p paymentRecord) ([]vote, error) {
	if !c.holds(p.PaymentID) {
		return nil, errLeaseLost
	}
	crashpoint.Trace("prepare.begin", p.PaymentID)
	defer crashpoint.Trace("prepare.end", p.PaymentID)
	ctx, cancel := context.WithDeadline(ctx, p.Deadline)
	defer cancel()
	banks := participantsOf(p)
	// A payment that needs a bank known to be down fails at once (BANK_UNAVAILABLE), without
	// holding money at the other banks meanwhile.
	for _, bank := range banks {
		if _, ok := c.banks[bank]; !ok {
			return []vote{{bank: bank, err: fmt.Errorf("%w %q", ErrUnknownBank, bank)}}, nil
		}
		if err := c.health.check(bank); err != nil {
			return []vote{{bank: bank, err: err}}, nil
		}
	}
	votes := make([]vote, len(banks))
	reqs := make([]*bankv1.PrepareTransactionRequest, len(banks))
	for i, bank := range banks {
		req := &bankv1.PrepareTransactionRequest{
			TransactionId: p.PaymentID,
			Deadline:      timestamppb.New(p.Deadline),
			DecisionProof: decisionProof(c.proofKey, p.PaymentID, bank),
		}
		if account.Bank(p.From) == bank {
			req.Legs = append(req.Legs, &bankv1.Leg{AccountId: p.From, Direction: bankv1.LegDirection_LEG_DIRECTION_DEBIT, Amount: p.Amount, Currency: p.Currency})
		}
		if account.Bank(p.To) == bank {
			req.Legs = append(req.Legs, &bankv1.Leg{AccountId: p.To, Direction: bankv1.LegDirection_LEG_DIRECTION_CREDIT, Amount: p.Amount, Currency: p.Currency})
		}
		reqs[i] = req
	}
	each(len(banks), func(i int) { votes[i] = c.prepareOne(ctx, banks[i], reqs[i]) })
	return votes, nil
}

// each runs f(0) to f(n-1) concurrently, f(n-1) on the calling goroutine, and returns when all
// have returned.
func each(n int, f func(i int)) {
	var wg sync.WaitGroup
	for i := range n - 1 {
		wg.Go(func() { f(i) })
	}
	if n > 0 {
		f(n - 1)
	}
	wg.Wait()
}

func (c *Coordinator) prepareOne(ctx context.Context, bank string, req *bankv1.PrepareTransactionRequest) vote {
	client, ok := c.banks[bank]
	if !ok {
		return vote{bank: bank, err: fmt.Errorf("%w %q", ErrUnknownBank, bank)}
	}
	if err := c.health.check(bank); err != nil {
		return vote{bank: bank, err: err}
	}
	// Prepare is idempotent at the bank, so a call that failed to reach it (a connection
	// refused or reset, e.g. just after a restart) is sent again while the deadline allows,
	// rather than aborting the payment at the first hiccup.
	var resp *connect.Response[bankv1.PrepareTransactionResponse]
	var err error
	for attempt, backoff := 0, 50*time.Millisecond; ; attempt, backoff = attempt+1, backoff*3 {
		resp, err = client.PrepareTransaction(ctx, connect.NewRequest(req))
		if err == nil || connect.CodeOf(err) != connect.CodeUnavailable || attempt == 2 {
			break
		}
		if d, ok := ctx.Deadline(); ok && time.Until(d) < 2*backoff {
			break
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
		}
	}
	c.health.observe(bank, err, false)
	if err != nil {
		return vote{bank: bank, err: err}
	}
	v := vote{bank: bank, yes: resp.Msg.GetVote() == bankv1.Vote_VOTE_YES, reason: resp.Msg.GetReason(), msg: resp.Msg.GetMessage()}
	if !v.yes && v.msg == "" {
		v.msg = fmt.Sprintf("%s declined: %s", bank, v.reason)
	}
	return v
}

// decide turns votes into a decision: commit when every bank voted YES, otherwise abort with the
// first reason in participant order (the payer's bank first).
func decide(votes []vote) (decision, gatewayv1.FailureReason, string) {
	for _, v := range votes {
		if v.err != nil {
			if errors.Is(v.err, context.DeadlineExceeded) || connect.CodeOf(v.err) == connect.CodeDeadlineExceeded {
				return decisionAbort, gatewayv1.FailureReason_FAILURE_REASON_TIMEOUT,
					fmt.Sprintf("bank %s did not answer before the payment's deadline", v.bank)
			}
			return decisionAbort, gatewayv1.FailureReason_FAILURE_REASON_BANK_UNAVAILABLE,
				fmt.Sprintf("bank %s unavailable: %v", v.bank, connectMessage(v.err))
		}
		if !v.yes {
			return decisionAbort, failureReason(v.reason), v.msg
		}
	}
	return decisionCommit, gatewayv1.FailureReason_FAILURE_REASON_UNSPECIFIED, ""
}

func connectMessage(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Message()
	}
	return err.Error()
}

func failureReason(r bankv1.VoteReason) gatewayv1.FailureReason {
	switch r {
	case bankv1.VoteReason_VOTE_REASON_INSUFFICIENT_FUNDS:
		return gatewayv1.FailureReason_FAILURE_REASON_INSUFFICIENT_FUNDS
	case bankv1.VoteReason_VOTE_REASON_UNKNOWN_ACCOUNT:
		return gatewayv1.FailureReason_FAILURE_REASON_UNKNOWN_ACCOUNT
	case bankv1.VoteReason_VOTE_REASON_CURRENCY_MISMATCH:
		return gatewayv1.FailureReason_FAILURE_REASON_CURRENCY_MISMATCH
	case bankv1.VoteReason_VOTE_REASON_ACCOUNT_CLOSED:
		return gatewayv1.FailureReason_FAILURE_REASON_ACCOUNT_CLOSED
	case bankv1.VoteReason_VOTE_REASON_DEADLINE_EXCEEDED, bankv1.VoteReason_VOTE_REASON_ALREADY_ABORTED:
		return gatewayv1.FailureReason_FAILURE_REASON_TIMEOUT
	case bankv1.VoteReason_VOTE_REASON_BALANCE_OVERFLOW:
		return gatewayv1.FailureReason_FAILURE_REASON_BALANCE_OVERFLOW
	}
	return gatewayv1.FailureReason_FAILURE_REASON_DECLINED
}

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
	errs := make([]error, len(banks))
	var once sync.Once
	each(len(banks), func(i int) {
		errs[i] = c.phase2(ctx, banks[i], p)
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
	p, err = c.store.Decide(ctx, id, decisionAbort, int32(gatewayv1.FailureReason_FAILURE_REASON_TIMEOUT),
		"no decision before the deadline; aborted when a bank asked for the outcome", true, c.now())
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
			decided, err := c.store.Decide(ctx, p.PaymentID, decisionAbort, int32(gatewayv1.FailureReason_FAILURE_REASON_TIMEOUT),
				fmt.Sprintf("no decision within the %s timeout", c.timeout), false, c.now())
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
