package gateway

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
)

// newTestCoordinator returns a coordinator over fake banks "bankA" and "bankB" with its own
// store. Background work started by recoverOnce is waited for before the store closes.
func newTestCoordinator(t *testing.T, timeout time.Duration, a, b *fakeBank) (*Coordinator, Store) {
	t.Helper()
	store, err := OpenStore(context.Background(), filepath.Join(t.TempDir(), "gateway.db"), false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	c := newCoordinator(store, map[string]participant{"bankA": a, "bankB": b}, nil, newBroker(), slog.New(slog.DiscardHandler), timeout, testProofKey)
	t.Cleanup(func() { waitIdle(t, c) })
	return c, store
}

// execute is c.Execute, returning once the payment's phase two (which runs after the answer)
// is over, so that the fake banks' counters include it. It may run on any goroutine: a phase two
// that does not end is reported with t.Errorf and as the error.
func execute(t testing.TB, c *Coordinator, ctx context.Context, p paymentRecord) (paymentRecord, bool, error) {
	t.Helper()
	out, replayed, err := c.Execute(ctx, p)
	wctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if werr := c.settle.waitAll(wctx); werr != nil {
		t.Errorf("phase two still running: %v", werr)
		if err == nil {
			err = werr
		}
	}
	return out, replayed, err
}

// waitIdle waits until the coordinator drives no payment.
func waitIdle(t testing.TB, c *Coordinator) {
	t.Helper()
	waitFor(t, 10*time.Second, "the coordinator to be idle", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.inflight) == 0
	})
}

func testPayment(from, to string, amount int64) paymentRecord {
	p := paymentRecord{PaymentID: newPaymentID(), Username: "alice", From: from, To: to, Amount: amount, Currency: "USD"}
	p.Fingerprint = paymentFingerprint(p.Username, p.From, p.To, p.Amount, p.Currency)
	return p
}

func stored(t testing.TB, s Store, id string) paymentRecord {
	t.Helper()
	p, err := s.Payment(context.Background(), id)
	if err != nil {
		t.Fatalf("payment %s: %v", id, err)
	}
	return p
}

func TestCoordinatorAllYesCommits(t *testing.T) {
	t.Parallel()
	a, b := &fakeBank{}, &fakeBank{}
	c, s := newTestCoordinator(t, 5*time.Second, a, b)
	p := testPayment("bankA-1", "bankB-2", 700)
	out, replayed, err := execute(t, c, context.Background(), p)
	if err != nil || replayed {
		t.Fatalf("Execute = %v, %v", replayed, err)
	}
	if out.Decision != decisionCommit || out.proto().GetStatus() != statusSucceeded {
		t.Fatalf("decision = %v", out.Decision)
	}
	for name, f := range map[string]*fakeBank{"bankA": a, "bankB": b} {
		if f.prepares.Load() != 1 || f.commits.Load() != 1 || f.aborts.Load() != 0 {
			t.Errorf("%s: prepares %d, commits %d, aborts %d; want 1, 1, 0", name, f.prepares.Load(), f.commits.Load(), f.aborts.Load())
		}
	}
	// One leg each: the payer's bank is debited, the payee's credited, both before the deadline.
	if legs := a.legsOf(p.PaymentID); len(legs) != 1 || legs[0].GetDirection() != bankv1.LegDirection_LEG_DIRECTION_DEBIT || legs[0].GetAccountId() != "bankA-1" || legs[0].GetAmount() != 700 {
		t.Errorf("bankA legs = %v", legs)
	}
	if legs := b.legsOf(p.PaymentID); len(legs) != 1 || legs[0].GetDirection() != bankv1.LegDirection_LEG_DIRECTION_CREDIT || legs[0].GetAccountId() != "bankB-2" {
		t.Errorf("bankB legs = %v", legs)
	}
	got := stored(t, s, p.PaymentID)
	if got.Decision != decisionCommit || !got.Completed || got.DecidedAt.IsZero() {
		t.Errorf("stored = %+v; want commit, completed", got)
	}
	// Same payment again: the stored outcome, nothing sent.
	out, replayed, err = execute(t, c, context.Background(), p)
	if err != nil || !replayed || out.Decision != decisionCommit || a.prepares.Load() != 1 {
		t.Fatalf("replay = %v, %v, %v (prepares %d)", out.Decision, replayed, err, a.prepares.Load())
	}
	q := p
	q.Amount++
	q.Fingerprint = paymentFingerprint(q.Username, q.From, q.To, q.Amount, q.Currency)
	if _, _, err := execute(t, c, context.Background(), q); !errors.Is(err, ErrPaymentReused) {
		t.Fatalf("reuse = %v; want ErrPaymentReused", err)
	}
}

func TestCoordinatorSameBankIsOneCall(t *testing.T) {
	t.Parallel()
	a, b := &fakeBank{}, &fakeBank{}
	c, _ := newTestCoordinator(t, 5*time.Second, a, b)
	p := testPayment("bankA-1", "bankA-2", 5)
	out, _, err := execute(t, c, context.Background(), p)
	if err != nil || out.Decision != decisionCommit {
		t.Fatalf("Execute = %v, %v", out.Decision, err)
	}
	if a.prepares.Load() != 1 || b.prepares.Load() != 0 || len(a.legsOf(p.PaymentID)) != 2 {
		t.Fatalf("bankA prepares %d with legs %v, bankB prepares %d; want one call with two legs",
			a.prepares.Load(), a.legsOf(p.PaymentID), b.prepares.Load())
	}
}

func TestCoordinatorNoVoteAborts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		vote bankv1.VoteReason
		want gatewayv1.FailureReason
	}{
		{bankv1.VoteReason_VOTE_REASON_INSUFFICIENT_FUNDS, gatewayv1.FailureReason_FAILURE_REASON_INSUFFICIENT_FUNDS},
		{bankv1.VoteReason_VOTE_REASON_UNKNOWN_ACCOUNT, gatewayv1.FailureReason_FAILURE_REASON_UNKNOWN_ACCOUNT},
		{bankv1.VoteReason_VOTE_REASON_CURRENCY_MISMATCH, gatewayv1.FailureReason_FAILURE_REASON_CURRENCY_MISMATCH},
		{bankv1.VoteReason_VOTE_REASON_ACCOUNT_CLOSED, gatewayv1.FailureReason_FAILURE_REASON_ACCOUNT_CLOSED},
		{bankv1.VoteReason_VOTE_REASON_DEADLINE_EXCEEDED, gatewayv1.FailureReason_FAILURE_REASON_TIMEOUT},
		{bankv1.VoteReason_VOTE_REASON_ALREADY_ABORTED, gatewayv1.FailureReason_FAILURE_REASON_TIMEOUT},
		{bankv1.VoteReason_VOTE_REASON_BALANCE_OVERFLOW, gatewayv1.FailureReason_FAILURE_REASON_BALANCE_OVERFLOW},
		{bankv1.VoteReason_VOTE_REASON_CONFLICT, gatewayv1.FailureReason_FAILURE_REASON_DECLINED},
	}
	for _, tt := range tests {
		for _, noAt := range []string{"payer", "payee"} {
			t.Run(tt.vote.String()+"/"+noAt, func(t *testing.T) {
				t.Parallel()
				a, b := &fakeBank{}, &fakeBank{}
				if noAt == "payer" {
					a.noReason = tt.vote
				} else {
					b.noReason = tt.vote
				}
				c, s := newTestCoordinator(t, 5*time.Second, a, b)
				p := testPayment("bankA-1", "bankB-2", 9)
				out, _, err := execute(t, c, context.Background(), p)
				if err != nil {
					t.Fatal(err)
				}
				if out.Decision != decisionAbort || gatewayv1.FailureReason(out.FailureReason) != tt.want || out.FailureMessage == "" {
					t.Fatalf("outcome = %v %v %q; want abort %v", out.Decision, gatewayv1.FailureReason(out.FailureReason), out.FailureMessage, tt.want)
				}
				for name, f := range map[string]*fakeBank{"bankA": a, "bankB": b} {
					if f.commits.Load() != 0 || f.aborts.Load() != 1 {
						t.Errorf("%s: commits %d, aborts %d; want 0, 1", name, f.commits.Load(), f.aborts.Load())
					}
				}
				if !stored(t, s, p.PaymentID).Completed {
					t.Error("abort acknowledged by both banks but payment not completed")
				}
			})
		}
	}
}

func TestCoordinatorPrepareErrorAborts(t *testing.T) {
	t.Parallel()
	a, b := &fakeBank{}, &fakeBank{prepareErr: errFakeUnavailable}
	c, _ := newTestCoordinator(t, 5*time.Second, a, b)
	out, _, err := execute(t, c, context.Background(), testPayment("bankA-1", "bankB-2", 9))
	if err != nil {
		t.Fatal(err)
	}
	if out.Decision != decisionAbort || gatewayv1.FailureReason(out.FailureReason) != gatewayv1.FailureReason_FAILURE_REASON_BANK_UNAVAILABLE ||
		!strings.Contains(out.FailureMessage, "bankB") {
		t.Fatalf("outcome = %v %v %q", out.Decision, gatewayv1.FailureReason(out.FailureReason), out.FailureMessage)
	}
	if a.aborts.Load() != 1 || b.aborts.Load() != 1 || a.commits.Load()+b.commits.Load() != 0 {
		t.Fatalf("aborts %d/%d commits %d/%d", a.aborts.Load(), b.aborts.Load(), a.commits.Load(), b.commits.Load())
	}
}

func TestCoordinatorTimeout(t *testing.T) {
	t.Parallel()
	for _, hangAt := range []string{"payer", "payee"} {
		t.Run(hangAt, func(t *testing.T) {
			t.Parallel()
			a, b := &fakeBank{}, &fakeBank{}
			if hangAt == "payer" {
				a.hang = true
			} else {
				b.hang = true
			}
			const timeout = 300 * time.Millisecond
			c, s := newTestCoordinator(t, timeout, a, b)
			p := testPayment("bankA-1", "bankB-2", 9)
			start := time.Now()
			out, _, err := execute(t, c, context.Background(), p)
			if err != nil {
				t.Fatal(err)
			}
			if elapsed := time.Since(start); elapsed < timeout {
				t.Errorf("decided after %s, before the %s timeout", elapsed, timeout)
			}
			if out.Decision != decisionAbort || gatewayv1.FailureReason(out.FailureReason) != gatewayv1.FailureReason_FAILURE_REASON_TIMEOUT {
				t.Fatalf("outcome = %v %v %q; want abort TIMEOUT", out.Decision, gatewayv1.FailureReason(out.FailureReason), out.FailureMessage)
			}
			if a.aborts.Load() != 1 || b.aborts.Load() != 1 || a.commits.Load()+b.commits.Load() != 0 {
				t.Fatalf("aborts %d/%d, commits %d/%d; want an abort at both banks", a.aborts.Load(), b.aborts.Load(), a.commits.Load(), b.commits.Load())
			}
			if got := stored(t, s, p.PaymentID); got.Decision != decisionAbort || !got.Completed {
				t.Fatalf("stored = %+v", got)
			}
		})
	}
}

func TestCoordinatorCommitRetriedUntilAcknowledged(t *testing.T) {
	t.Parallel()
	const failures = 2
	a, b := &fakeBank{}, &fakeBank{}
	b.commitFailures.Store(failures)
	c, s := newTestCoordinator(t, 5*time.Second, a, b)
	p := testPayment("bankA-1", "bankB-2", 9)
	out, _, err := execute(t, c, context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	// The decision is durable, so the payer is told it succeeded although bankB has not applied
	// it yet.
	if out.Decision != decisionCommit || out.proto().GetStatus() != statusSucceeded {
		t.Fatalf("decision = %v", out.Decision)
	}
	if got := stored(t, s, p.PaymentID); got.Decision != decisionCommit || got.Completed {
		t.Fatalf("stored = %+v; want commit, not completed", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Recover(ctx, 20*time.Millisecond) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, 10*time.Second, "phase two to be acknowledged", func() bool { return stored(t, s, p.PaymentID).Completed })
	if got := b.commits.Load(); got != failures+1 {
		t.Errorf("bankB received %d commits; want %d", got, failures+1)
	}
	if a.aborts.Load()+b.aborts.Load() != 0 {
		t.Error("an abort was sent for a committed payment")
	}
	if got := stored(t, s, p.PaymentID); got.Decision != decisionCommit {
		t.Fatalf("decision changed to %v", got.Decision)
	}
	c.mu.Lock()
	_, pending := c.retry[p.PaymentID]
	c.mu.Unlock()
	if pending {
		t.Error("retry state kept after completion")
	}
}

// testProofKey keys the decision proofs of test coordinators.
var testProofKey = []byte("test decision proof key, 32 byte")

// askAs is a bank's GetDecision about id, presenting the proof the coordinator sent it.
func askAs(ctx context.Context, c *Coordinator, bank, id string) (paymentRecord, error) {
	return c.DecisionFor(ctx, id, bank, decisionProof(testProofKey, id, bank))
}

func TestCoordinatorDecisionFor(t *testing.T) {
	t.Parallel()
	a, b := &fakeBank{}, &fakeBank{}
	c, s := newTestCoordinator(t, 5*time.Second, a, b)
	ctx := context.Background()

	// Unknown: a presumed abort is recorded, and is the answer ever after.
	unknown := newPaymentID()
	for i := range 2 {
		got, err := askAs(ctx, c, "bankA", unknown)
		if err != nil {
			t.Fatal(err)
		}
		if got.Decision != decisionAbort || !got.Presumed {
			t.Fatalf("answer %d = %v presumed %v; want a presumed abort", i+1, got.Decision, got.Presumed)
		}
	}
	if got := stored(t, s, unknown); got.Decision != decisionAbort || !got.Presumed || !got.Completed {
		t.Fatalf("stored = %+v", got)
	}
	// The id can never commit now, nor be used for a payment.
	if got, err := s.Decide(ctx, unknown, decisionCommit, 0, "", false, time.Now(), decidedByRequest); err != nil || got.Decision != decisionAbort {
		t.Fatalf("commit after presumed abort = %v, %v", got.Decision, err)
	}
	p := testPayment("bankA-1", "bankB-2", 9)
	p.PaymentID = unknown
	// A retry of a payment that a bank asked about before the gateway stored it (the gateway
	// stopped between sending prepares and storing the row) is answered with the abort, and the
	// presumed abort becomes the sender's payment: stored with its parameters from then on.
	out, replayed, err := execute(t, c, ctx, p)
	if err != nil || out.Decision != decisionAbort || !out.Presumed || !replayed || out.From != p.From || out.Amount != p.Amount {
		t.Fatalf("Execute of a presumed-aborted id = %+v, replayed %v, %v; want the request's payment, aborted, replayed", out, replayed, err)
	}
	if a.prepares.Load()+b.prepares.Load() != 0 {
		t.Fatal("a presumed-aborted id was prepared")
	}
	if got := stored(t, s, unknown); got.Username != p.Username || got.From != p.From || got.To != p.To ||
		got.Amount != p.Amount || !bytes.Equal(got.Fingerprint, p.Fingerprint) || got.Decision != decisionAbort {
		t.Fatalf("stored after the retry = %+v; want the request's parameters, aborted", got)
	}
	if list, err := s.ListPayments(ctx, p.Username, nil, nil, 10); err != nil || !slices.ContainsFunc(list, func(q paymentRecord) bool { return q.PaymentID == unknown }) {
		t.Fatalf("ListPayments of %s = %v, %v; want the adopted payment", p.Username, list, err)
	}
	// Then it is an ordinary stored payment: the same retry is a replay, other parameters are
	// a reuse.
	if out, replayed, err := execute(t, c, ctx, p); err != nil || out.Decision != decisionAbort || !replayed {
		t.Fatalf("second retry = %v replayed %v, %v", out.Decision, replayed, err)
	}
	other := p
	other.Amount++
	other.Fingerprint = paymentFingerprint(other.Username, other.From, other.To, other.Amount, other.Currency)
	if _, _, err := execute(t, c, ctx, other); !errors.Is(err, ErrPaymentReused) {
		t.Fatalf("retry with another amount: %v; want ErrPaymentReused", err)
	}

	// Committed: commit.
	q := testPayment("bankA-1", "bankB-2", 9)
	if out, _, err := execute(t, c, ctx, q); err != nil || out.Decision != decisionCommit {
		t.Fatalf("Execute = %v, %v", out.Decision, err)
	}
	got, err := askAs(ctx, c, "bankB", q.PaymentID)
	if err != nil || got.Decision != decisionCommit || got.Presumed {
		t.Fatalf("DecisionFor committed = %v presumed %v, %v", got.Decision, got.Presumed, err)
	}
	// A participant without a proof (prepared before proofs existed) is answered about a stored
	// payment.
	if got, err := c.DecisionFor(ctx, q.PaymentID, "bankA", nil); err != nil || got.Decision != decisionCommit {
		t.Fatalf("DecisionFor without proof from a participant = %v, %v", got.Decision, err)
	}
}

// TestCoordinatorDecisionForRefusesOutsiders: a bank learns and affects only the transactions
// it was sent. Asking about another bank's payment, with that bank's proof or its own proof
// for the id, or about an id it was never sent, is refused the same way and records nothing.
func TestCoordinatorDecisionForRefusesOutsiders(t *testing.T) {
	t.Parallel()
	a, b := &fakeBank{}, &fakeBank{}
	c, s := newTestCoordinator(t, 5*time.Second, a, b)
	ctx := context.Background()
	q := testPayment("bankA-1", "bankA-2", 9) // within bankA: bankB takes no part
	if out, _, err := execute(t, c, ctx, q); err != nil || out.Decision != decisionCommit {
		t.Fatalf("Execute = %v, %v", out.Decision, err)
	}
	pending := testPayment("bankA-1", "bankB-2", 9)
	pending.PaymentID = newPaymentID()
	unknown := newPaymentID()
	for _, tc := range []struct {
		name, id, bank string
		proof          []byte
	}{
		{"another bank's payment with its own proof for the id", q.PaymentID, "bankB", decisionProof(testProofKey, q.PaymentID, "bankB")},
		{"another bank's payment with that bank's proof", q.PaymentID, "bankB", decisionProof(testProofKey, q.PaymentID, "bankA")},
		{"another bank's payment without proof", q.PaymentID, "bankB", nil},
		{"an id never sent, without proof", unknown, "bankA", nil},
		{"an id never sent, with a forged proof", unknown, "bankA", decisionProof([]byte("another key"), unknown, "bankA")},
		{"an id never sent, with another bank's proof", unknown, "bankA", decisionProof(testProofKey, unknown, "bankB")},
	} {
		got, err := c.DecisionFor(ctx, tc.id, tc.bank, tc.proof)
		if !errors.Is(err, ErrNotParticipant) {
			t.Errorf("%s: DecisionFor = %+v, %v; want ErrNotParticipant", tc.name, got, err)
		}
		if got.Decision != decisionNone || got.PaymentID != "" {
			t.Errorf("%s: the refusal carries a payment: %+v", tc.name, got)
		}
	}
	if _, err := s.Payment(ctx, unknown); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a refused GetDecision recorded %s: %v", unknown, err)
	}
	if got := stored(t, s, q.PaymentID); got.Decision != decisionCommit || got.Presumed {
		t.Fatalf("the refused calls changed %s: %+v", q.PaymentID, got)
	}
}

// TestCoordinatorDecisionForWhilePreparing: a bank asks for the outcome while the coordinator
// still waits for the other bank's vote. The presumed abort wins; the late YES cannot commit.
func TestCoordinatorDecisionForWhilePreparing(t *testing.T) {
	t.Parallel()
	a := &fakeBank{}
	b := &fakeBank{gate: make(chan struct{}), entered: make(chan string, 1)}
	c, s := newTestCoordinator(t, 5*time.Second, a, b)
	p := testPayment("bankA-1", "bankB-2", 9)
	type result struct {
		out paymentRecord
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, _, err := execute(t, c, context.Background(), p)
		done <- result{out, err}
	}()
	recv(t, b.entered, "the prepare at bankB")
	got, err := askAs(context.Background(), c, "bankA", p.PaymentID)
	if err != nil || got.Decision != decisionAbort || !got.Presumed {
		t.Fatalf("DecisionFor = %v presumed %v, %v", got.Decision, got.Presumed, err)
	}
	close(b.gate)
	r := recv(t, done, "Execute")
	if r.err != nil || r.out.Decision != decisionAbort {
		t.Fatalf("Execute = %v, %v; want the presumed abort", r.out.Decision, r.err)
	}
	if a.commits.Load()+b.commits.Load() != 0 || a.aborts.Load() != 1 || b.aborts.Load() != 1 {
		t.Fatalf("commits %d/%d aborts %d/%d", a.commits.Load(), b.commits.Load(), a.aborts.Load(), b.aborts.Load())
	}
	if got := stored(t, s, p.PaymentID); got.Decision != decisionAbort || !got.Presumed || !got.Completed {
		t.Fatalf("stored = %+v", got)
	}
}

func TestCoordinatorRecoverAbortsExpiredUndecided(t *testing.T) {
	t.Parallel()
	a, b := &fakeBank{}, &fakeBank{}
	c, s := newTestCoordinator(t, 5*time.Second, a, b)
	ctx := context.Background()
	// Admitted by an earlier process that died before deciding; its deadline has passed.
	p := testPayment("bankA-1", "bankB-2", 9)
	p.CreatedAt = time.Now().Add(-time.Minute)
	p.Deadline = p.CreatedAt.Add(30 * time.Second)
	if _, inserted, err := admitPayment(ctx, s, p); err != nil || !inserted {
		t.Fatalf("admit = %v, %v", inserted, err)
	}
	// One still within its deadline is resumed instead.
	q := testPayment("bankA-3", "bankB-4", 10)
	q.CreatedAt = time.Now()
	q.Deadline = q.CreatedAt.Add(time.Minute)
	if _, _, err := admitPayment(ctx, s, q); err != nil {
		t.Fatal(err)
	}
	ch, cancel := c.events.waitFor(p.PaymentID)
	defer cancel()

	c.recoverOnce(ctx)
	waitIdle(t, c)

	got := stored(t, s, p.PaymentID)
	if got.Decision != decisionAbort || gatewayv1.FailureReason(got.FailureReason) != gatewayv1.FailureReason_FAILURE_REASON_TIMEOUT || got.Presumed || !got.Completed {
		t.Fatalf("expired payment = %+v; want a completed TIMEOUT abort", got)
	}
	if legs := a.legsOf(p.PaymentID); legs != nil {
		t.Errorf("the expired payment was prepared: %v", legs)
	}
	select {
	case out := <-ch:
		if out.Decision != decisionAbort {
			t.Errorf("published %v", out.Decision)
		}
	default:
		t.Error("the abort was not published to waiters")
	}
	if got := stored(t, s, q.PaymentID); got.Decision != decisionCommit || !got.Completed {
		t.Fatalf("resumed payment = %+v; want a completed commit", got)
	}
	// p: one abort at each bank; q: one prepare and one commit at each.
	if a.aborts.Load() != 1 || b.aborts.Load() != 1 || a.commits.Load() != 1 || b.commits.Load() != 1 {
		t.Errorf("aborts %d/%d, commits %d/%d; want 1/1, 1/1", a.aborts.Load(), b.aborts.Load(), a.commits.Load(), b.commits.Load())
	}
	// Nothing is left to do.
	c.recoverOnce(ctx)
	waitIdle(t, c)
	if a.aborts.Load() != 1 || a.commits.Load() != 1 {
		t.Error("recovery sent phase two again for completed payments")
	}
}

func TestCoordinatorRecoverSkipsPaymentsInFlight(t *testing.T) {
	t.Parallel()
	a := &fakeBank{}
	b := &fakeBank{gate: make(chan struct{}), entered: make(chan string, 4)}
	c, s := newTestCoordinator(t, 5*time.Second, a, b)
	p := testPayment("bankA-1", "bankB-2", 9)
	done := make(chan error, 1)
	go func() {
		_, _, err := execute(t, c, context.Background(), p)
		done <- err
	}()
	recv(t, b.entered, "the prepare at bankB")
	// The admission is synced while the banks prepare: wait until the row is visible, so that
	// the recovery loop lists it and only the claim keeps it away.
	waitFor(t, 10*time.Second, "the admission to be durable", func() bool {
		_, err := s.Payment(context.Background(), p.PaymentID)
		return err == nil
	})
	c.recoverOnce(context.Background())
	close(b.gate)
	if err := recv(t, done, "Execute"); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, c)
	if got := b.prepares.Load(); got != 1 {
		t.Fatalf("bankB saw %d prepares; the recovery loop drove a payment in flight", got)
	}
}

// TestCoordinatorRecoverRereadsAfterClaim: the recovery loop lists unfinished payments, then
// claims them one by one; a payment that a request finished in between (decided, completed,
// released) must be left alone, not driven again from the stale listing.
func TestCoordinatorRecoverRereadsAfterClaim(t *testing.T) {
	t.Parallel()
	a, b := &fakeBank{}, &fakeBank{}
	c, s := newTestCoordinator(t, 5*time.Second, a, b)
	ctx := context.Background()
	p := testPayment("bankA-1", "bankB-2", 9)
	p.CreatedAt = time.Now()
	p.Deadline = p.CreatedAt.Add(5 * time.Second)
	// The listing as the recovery loop read it: admitted, undecided.
	if _, _, err := admitPayment(ctx, s, p); err != nil {
		t.Fatal(err)
	}
	stale, err := s.Unfinished(ctx, nil, 10)
	if err != nil || len(stale) != 1 {
		t.Fatalf("Unfinished = %v, %v", stale, err)
	}
	// Meanwhile the payment is decided and completed.
	if _, err := s.Decide(ctx, p.PaymentID, decisionCommit, 0, "", false, time.Now(), decidedByRequest); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkCompleted(ctx, []string{p.PaymentID}, time.Now()); err != nil {
		t.Fatal(err)
	}
	c.recoverList(ctx, stale)
	waitIdle(t, c)
	if n := a.prepares.Load() + b.prepares.Load() + a.commits.Load() + b.commits.Load() + a.aborts.Load() + b.aborts.Load(); n != 0 {
		t.Fatalf("the recovery loop sent %d calls for a payment completed after it was listed", n)
	}
}

// TestDecide checks how votes and prepare errors turn into a decision and its reason.
func TestDecide(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		votes []vote
		want  decision
		why   gatewayv1.FailureReason
	}{
		{"all yes", []vote{{bank: "a", yes: true}, {bank: "b", yes: true}}, decisionCommit, 0},
		{"deadline", []vote{{bank: "a", err: context.DeadlineExceeded}, {bank: "b", yes: true}}, decisionAbort, gatewayv1.FailureReason_FAILURE_REASON_TIMEOUT},
		{"connect deadline", []vote{{bank: "a", yes: true}, {bank: "b", err: connect.NewError(connect.CodeDeadlineExceeded, errors.New("slow"))}}, decisionAbort, gatewayv1.FailureReason_FAILURE_REASON_TIMEOUT},
		{"unavailable", []vote{{bank: "a", err: errFakeUnavailable}}, decisionAbort, gatewayv1.FailureReason_FAILURE_REASON_BANK_UNAVAILABLE},
		{"payer's reason first", []vote{{bank: "a", reason: bankv1.VoteReason_VOTE_REASON_INSUFFICIENT_FUNDS, msg: "x"}, {bank: "b", reason: bankv1.VoteReason_VOTE_REASON_UNKNOWN_ACCOUNT, msg: "y"}}, decisionAbort, gatewayv1.FailureReason_FAILURE_REASON_INSUFFICIENT_FUNDS},
	}
	for _, tt := range tests {
		d, why, msg := decide(tt.votes)
		if d != tt.want || why != tt.why || (d == decisionAbort && msg == "") {
			t.Errorf("%s: decide = %v %v %q; want %v %v", tt.name, d, why, msg, tt.want, tt.why)
		}
	}
}

// TestCoordinatorRecoveryIsBounded: a backlog of unfinished payments (a bank that holds every
// prepare) is driven at most maxRecoveryWorkers at a time, not with one goroutine each.
func TestCoordinatorRecoveryIsBounded(t *testing.T) {
	t.Parallel()
	const backlog = 3 * maxRecoveryWorkers
	a := &fakeBank{}
	b := &fakeBank{gate: make(chan struct{}), entered: make(chan string, backlog)}
	c, s := newTestCoordinator(t, 30*time.Second, a, b)
	ctx := context.Background()
	for range backlog {
		p := testPayment("bankA-1", "bankB-2", 1)
		p.CreatedAt = time.Now()
		p.Deadline = p.CreatedAt.Add(30 * time.Second)
		if _, _, err := admitPayment(ctx, s, p); err != nil {
			t.Fatal(err)
		}
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); c.recoverOnce(rctx) }()
	waitFor(t, 10*time.Second, "the recovery loop to fill its workers", func() bool { return len(b.entered) >= maxRecoveryWorkers })
	time.Sleep(100 * time.Millisecond) // room for any more to start, if they could
	if n := len(b.entered); n != maxRecoveryWorkers {
		t.Errorf("%d payments driven at once; want at most %d", n, maxRecoveryWorkers)
	}
	cancel()
	close(b.gate)
	<-done
}
