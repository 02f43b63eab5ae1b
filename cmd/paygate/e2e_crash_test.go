package main

import (
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	ledgeraudit "github.com/paygate/paygate/internal/audit"
	"github.com/paygate/paygate/internal/cluster"
	"github.com/paygate/paygate/internal/crashpoint"
)

// twoBankUsers are the users of the crash tests: alice pays from bank1, bob receives at bank2.
const twoBankUsers = `{
  "alice": {"password": "alice-pass-123", "accounts": ["bank1-1001"]},
  "bob":   {"password": "bob-pass-456",   "accounts": ["bank2-2002"]}
}`

const crashTxnTimeout = 3 * time.Second

// finalOutcome asks for a payment's outcome by retrying ExecutePayment with the same id and
// parameters until it is decided, then checks that GetPayment and ListPayments give the same
// outcome (agreeOn). No answer may be UNKNOWN.
func finalOutcome(t *testing.T, u *cluster.User, id, from, to string, amount int64, within time.Duration) *gatewayv1.ExecutePaymentResponse {
	t.Helper()
	deadline := time.Now().Add(within)
	var lastErr error
	for time.Now().Before(deadline) {
		resp, err := pay(ctxT(t, 10*time.Second), u, id, from, to, amount)
		if err != nil && connect.CodeOf(err) == connect.CodeUnknown {
			t.Fatalf("ExecutePayment %s answered UNKNOWN: %v", id, err)
		}
		if err == nil && resp.GetPayment().GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_PROCESSING {
			agreeOn(t, u, resp.GetPayment())
			return resp
		}
		lastErr = err
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("payment %s undecided after %s (last error %v)", id, within, lastErr)
	return nil
}

// agreeOn checks that GetPayment and ListPayments show want (an outcome ExecutePayment gave):
// the same status, failure reason and parameters.
func agreeOn(t *testing.T, u *cluster.User, want *gatewayv1.Payment) {
	t.Helper()
	same := func(api string, got *gatewayv1.Payment) {
		t.Helper()
		if got.GetStatus() != want.GetStatus() || got.GetFailureReason() != want.GetFailureReason() ||
			got.GetFromAccount() != want.GetFromAccount() || got.GetToAccount() != want.GetToAccount() ||
			got.GetAmount() != want.GetAmount() || got.GetCurrency() != want.GetCurrency() {
			t.Errorf("%s shows %s as %v %v (%s → %s %d %s); ExecutePayment as %v %v (%s → %s %d %s)", api, want.GetPaymentId(),
				got.GetStatus(), got.GetFailureReason(), got.GetFromAccount(), got.GetToAccount(), got.GetAmount(), got.GetCurrency(),
				want.GetStatus(), want.GetFailureReason(), want.GetFromAccount(), want.GetToAccount(), want.GetAmount(), want.GetCurrency())
		}
	}
	got, err := u.Payments.GetPayment(ctxT(t, 10*time.Second), connect.NewRequest(&gatewayv1.GetPaymentRequest{PaymentId: want.GetPaymentId()}))
	if err != nil {
		t.Errorf("GetPayment %s: %v", want.GetPaymentId(), err)
	} else {
		same("GetPayment", got.Msg.GetPayment())
	}
	list, err := u.Payments.ListPayments(ctxT(t, 10*time.Second), connect.NewRequest(&gatewayv1.ListPaymentsRequest{PageSize: 100}))
	if err != nil {
		t.Errorf("ListPayments: %v", err)
		return
	}
	for _, p := range list.Msg.GetPayments() {
		if p.GetPaymentId() == want.GetPaymentId() {
			same("ListPayments", p)
			return
		}
	}
	t.Errorf("ListPayments does not show %s (%d payments listed)", want.GetPaymentId(), len(list.Msg.GetPayments()))
}

// watchPayments opens a WatchPayments stream of u, waits until the gateway has answered, and
// returns the changes it streams for payment id, until the stream ends.
func watchPayments(t *testing.T, u *cluster.User, id string) <-chan *gatewayv1.Payment {
	t.Helper()
	ctx := ctxT(t, time.Minute)
	s, err := u.Payments.WatchPayments(ctx, connect.NewRequest(&gatewayv1.WatchPaymentsRequest{}))
	if err != nil {
		t.Fatalf("WatchPayments: %v", err)
	}
	s.ResponseHeader() // returns once the gateway has answered: the watch is registered
	if err := s.Err(); err != nil {
		t.Fatalf("WatchPayments: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	out := make(chan *gatewayv1.Payment, 16)
	go func() {
		defer close(out)
		for s.Receive() {
			if p := s.Msg().GetPayment(); p.GetPaymentId() == id {
				out <- p
			}
		}
	}()
	return out
}

// watchedUntil returns the first change on ch with a final status, or nil after d.
func watchedUntil(ch <-chan *gatewayv1.Payment, d time.Duration) *gatewayv1.Payment {
	timeout := time.After(d)
	for {
		select {
		case p, ok := <-ch:
			if !ok {
				return nil
			}
			if p.GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_PROCESSING {
				return p
			}
		case <-timeout:
			return nil
		}
	}
}

// checkAtomic checks that a payment is committed at every bank it involves or at none, in
// agreement with its outcome, and that the balances moved exactly by its amount or not at all.
func checkAtomic(t *testing.T, c *cluster.Cluster, p *gatewayv1.Payment, before, after cluster.Ledger) {
	t.Helper()
	states, err := c.TransactionStates(ctxT(t, 10*time.Second), p.GetPaymentId())
	if err != nil {
		t.Fatal(err)
	}
	committed := 0
	for _, s := range states {
		if s == bankv1.TransactionState_TRANSACTION_STATE_COMMITTED {
			committed++
		}
		if s == bankv1.TransactionState_TRANSACTION_STATE_PREPARED {
			t.Errorf("transaction still prepared at a bank: %v", states)
		}
	}
	want := map[string]int64{}
	switch p.GetStatus() {
	case gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED:
		if committed != 2 {
			t.Errorf("SUCCEEDED but committed at %d of 2 banks: %v", committed, states)
		}
		want = map[string]int64{p.GetFromAccount(): -p.GetAmount(), p.GetToAccount(): p.GetAmount()}
		if strings.HasSuffix(p.GetToAccount(), "-9999") {
			t.Errorf("a payment to an unknown account succeeded")
		}
	case gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED:
		if committed != 0 {
			t.Errorf("FAILED but committed at %d banks: %v", committed, states)
		}
	default:
		t.Errorf("status %v is not final", p.GetStatus())
	}
	if got := delta(before, after); !maps.Equal(got, want) {
		t.Errorf("balance changes %v, want %v", got, want)
	}
}

// admission says what a crash leaves of the payment's row.
type admission int

const (
	// kept: the row was durable before the crash point (or the point is at a bank).
	kept admission = iota
	// lostUnprepared: the row's insert ran but never became durable; no bank heard of the
	// payment. The retry admits it afresh.
	lostUnprepared
	// lostPrepared: the banks prepared (voted YES) while the row was being synced, and the row
	// never became durable. The banks resolve through GetDecision (a presumed abort) and the
	// retry adopts that outcome.
	lostPrepared
)

// TestCrashPoints kills a real process (SIGKILL, from inside, at the named protocol step) in the
// gateway, the payer's bank and the payee's bank, restarts it, and checks that the payment
// reaches exactly one final outcome, the same through a retried ExecutePayment, GetPayment and
// ListPayments (and WatchPayments, for the points that lose the payment's row), with money
// conserved and no hold or pending credit left.
func TestCrashPoints(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real processes")
	}
	const (
		ok       = "bank2-2002" // bob's account: the payment can succeed
		unknown  = "bank2-9999" // the payee's bank votes NO
		amount   = 500
		tooMuch  = 10_000_000 // more than alice has: the payer's bank votes NO
		gateway  = "gateway"
		payer    = "bank1"
		payee    = "bank2"
		succeeds = gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED
		fails    = gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED
	)
	cases := []struct {
		proc, point string
		to          string
		amount      int64
		want        gatewayv1.PaymentStatus
		row         admission
	}{
		{gateway, crashpoint.GatewayAfterInsert, ok, amount, succeeds, lostUnprepared}, // the retry runs it afresh
		{gateway, crashpoint.GatewayVotesBeforeAdmit, ok, amount, fails, lostPrepared}, // presumed abort, adopted by the retry
		{gateway, crashpoint.GatewayAfterAdmit, ok, amount, succeeds, kept},            // resumed after restart
		{gateway, crashpoint.GatewayAfterPrepare, ok, amount, succeeds, kept},
		{gateway, crashpoint.GatewayAfterDecision, ok, amount, succeeds, kept},
		{gateway, crashpoint.GatewayAfterDecision, unknown, amount, fails, kept},
		{gateway, crashpoint.GatewayAfterFirstPhase2, ok, amount, succeeds, kept},
		{gateway, crashpoint.GatewayBeforeReply, ok, amount, succeeds, kept},
		{payer, crashpoint.BankPrepareBeforePersist, ok, amount, fails, kept},
		{payer, crashpoint.BankPrepareAfterPersist, ok, amount, fails, kept},
		{payer, crashpoint.BankCommitBeforePersist, ok, amount, succeeds, kept},
		{payer, crashpoint.BankCommitAfterPersist, ok, amount, succeeds, kept},
		{payer, crashpoint.BankAbortAfterPersist, unknown, amount, fails, kept},
		{payee, crashpoint.BankPrepareBeforePersist, ok, amount, fails, kept},
		{payee, crashpoint.BankPrepareAfterPersist, ok, amount, fails, kept},
		{payee, crashpoint.BankCommitBeforePersist, ok, amount, succeeds, kept},
		{payee, crashpoint.BankCommitAfterPersist, ok, amount, succeeds, kept},
		{payee, crashpoint.BankAbortAfterPersist, ok, tooMuch, fails, kept},
	}
	covered := map[string]bool{}
	for _, tc := range cases {
		covered[tc.point] = true
	}
	for _, point := range crashpoint.All {
		if !covered[point] {
			t.Errorf("crash point %s has no row in the matrix", point)
		}
	}
	for _, tc := range cases {
		name := fmt.Sprintf("%s/%s/%s", tc.proc, tc.point, tc.want)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			// The banks' own resolution through GetDecision is tested on its own below; here
			// the gateway's recovery must finish everything by itself, except where the
			// gateway lost the payment's row: only the banks can then end their prepares.
			resolveAfter := time.Hour
			if tc.row == lostPrepared {
				resolveAfter = time.Second
			}
			c := cluster.New(t, cluster.Options{
				Banks:        []string{"bank1", "bank2"},
				Users:        twoBankUsers,
				Tags:         []string{"crashpoints"},
				TxnTimeout:   crashTxnTimeout,
				ResolveAfter: resolveAfter,
				Env:          map[string][]string{tc.proc: {"PAYGATE_CRASH_AT=" + tc.point}},
			})
			alice := login(t, c, "alice")
			before := audit(t, c)
			id := newID()

			first, firstErr := pay(ctxT(t, 20*time.Second), alice, id, "bank1-1001", tc.to, tc.amount)
			if !c.Proc(tc.proc).Wait(15 * time.Second) {
				t.Fatalf("%s did not die at %s (answer %v, %v)", tc.proc, tc.point, first, firstErr)
			}
			if tc.row != kept {
				// The crash came before the payment's row was durable: the client has no
				// answer, and the banks hold the payment prepared or never heard of it.
				if firstErr == nil {
					t.Fatalf("the client was answered %v before the payment's row was durable", first)
				}
				l := audit(t, c)
				if prepared := l.Held != 0 && l.Pending != 0; prepared != (tc.row == lostPrepared) {
					t.Fatalf("banks hold %d, pending %d after the crash; prepared expected: %v", l.Held, l.Pending, tc.row == lostPrepared)
				}
			}
			// The answer, if the client got one, is final and must hold after recovery.
			if tc.proc == gateway {
				c.StartGateway()
				alice = login(t, c, "alice")
			} else {
				c.StartBank(tc.proc)
			}
			var watch <-chan *gatewayv1.Payment
			if tc.row != kept {
				// The row is lost, not merely late.
				_, err := alice.Payments.GetPayment(ctxT(t, 10*time.Second), connect.NewRequest(&gatewayv1.GetPaymentRequest{PaymentId: id}))
				if connect.CodeOf(err) != connect.CodeNotFound {
					t.Fatalf("GetPayment after the restart: %v; want NOT_FOUND (the row must be lost)", err)
				}
				if tc.row == lostPrepared {
					// The banks end their prepares by asking GetDecision: a presumed abort.
					if _, err := c.WaitSettled(2*crashTxnTimeout + 10*time.Second); err != nil {
						t.Fatalf("the banks did not resolve their prepares: %v", err)
					}
					for _, b := range []string{"bank1", "bank2"} {
						if lines := c.GrepLog(b, "resolved transaction in doubt", id, "DECISION_ABORT"); len(lines) != 1 {
							t.Errorf("%s: %d log lines of resolving %s as an abort through GetDecision, want 1", b, len(lines), id)
						}
					}
				}
				watch = watchPayments(t, alice, id)
			}
			resp := finalOutcome(t, alice, id, "bank1-1001", tc.to, tc.amount, 2*crashTxnTimeout+10*time.Second)
			got := resp.GetPayment()
			if got.GetStatus() != tc.want {
				t.Errorf("outcome %v (%v: %s), want %v", got.GetStatus(), got.GetFailureReason(), got.GetFailureMessage(), tc.want)
			}
			if firstErr == nil && first.GetPayment().GetStatus() != got.GetStatus() {
				t.Errorf("the client was told %v, the payment ended %v", first.GetPayment().GetStatus(), got.GetStatus())
			}
			switch tc.row {
			case lostPrepared:
				if !resp.GetReplayed() || got.GetFailureReason() != gatewayv1.FailureReason_FAILURE_REASON_TIMEOUT {
					t.Errorf("retry answered %v %v replayed=%v; want the presumed abort (TIMEOUT), replayed", got.GetStatus(), got.GetFailureReason(), resp.GetReplayed())
				}
			case lostUnprepared:
				if resp.GetReplayed() {
					t.Errorf("retry answered replayed=true; the payment was never stored, the retry runs it")
				}
			}
			if watch != nil {
				// The watch opened before the retry sees the payment reach its outcome (for a
				// presumed abort: adopted by the retry).
				if w := watchedUntil(watch, 10*time.Second); w == nil {
					t.Errorf("WatchPayments showed no final change of %s", id)
				} else if w.GetStatus() != got.GetStatus() || w.GetAmount() != got.GetAmount() || w.GetFromAccount() != got.GetFromAccount() || w.GetToAccount() != got.GetToAccount() {
					t.Errorf("WatchPayments shows %v (%s → %s %d); the payment is %v (%s → %s %d)", w.GetStatus(), w.GetFromAccount(), w.GetToAccount(), w.GetAmount(),
						got.GetStatus(), got.GetFromAccount(), got.GetToAccount(), got.GetAmount())
				}
			}
			after := checkSettled(t, c, before, 2*crashTxnTimeout+10*time.Second)
			checkAtomic(t, c, got, before, after)
			if tc.row == lostPrepared {
				// A second retry replays the adopted outcome too.
				again := finalOutcome(t, alice, id, "bank1-1001", tc.to, tc.amount, 10*time.Second)
				if again.GetPayment().GetStatus() != got.GetStatus() || !again.GetReplayed() {
					t.Errorf("second retry: %v replayed=%v; want %v replayed", again.GetPayment().GetStatus(), again.GetReplayed(), got.GetStatus())
				}
			}
		})
	}
}

// TestBankUnreachableInPhaseTwo: the payee's bank dies when the commit reaches it. The client
// is still told SUCCEEDED (the decision is durable), and the bank applies the payment when it
// comes back.
func TestBankUnreachableInPhaseTwo(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real processes")
	}
	c := cluster.New(t, cluster.Options{
		Banks: []string{"bank1", "bank2"}, Users: twoBankUsers, Tags: []string{"crashpoints"},
		TxnTimeout: crashTxnTimeout,
		Env:        map[string][]string{"bank2": {"PAYGATE_CRASH_AT=" + crashpoint.BankCommitBeforePersist}},
	})
	alice := login(t, c, "alice")
	before := audit(t, c)
	id := newID()
	resp, err := pay(ctxT(t, 20*time.Second), alice, id, "bank1-1001", "bank2-2002", 800)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetPayment().GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
		t.Fatalf("status %v, want SUCCEEDED while the payee's bank is down", resp.GetPayment().GetStatus())
	}
	if !c.Proc("bank2").Wait(10 * time.Second) {
		t.Fatal("bank2 did not die at its crash point")
	}
	// Down for a while: several recovery rounds fail to reach it.
	time.Sleep(2 * time.Second)
	c.StartBank("bank2")
	after := checkSettled(t, c, before, 20*time.Second)
	checkAtomic(t, c, resp.GetPayment(), before, after)
}

// TestPrepareNeverAnswered: the payee's bank is paused (SIGSTOP) so that it never answers
// Prepare. The payment fails after the configured timeout, and the payer's bank holds nothing.
func TestPrepareNeverAnswered(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real processes")
	}
	c := cluster.New(t, cluster.Options{Banks: []string{"bank1", "bank2"}, Users: twoBankUsers, TxnTimeout: 2 * time.Second})
	alice := login(t, c, "alice")
	before := audit(t, c)
	c.Pause("bank2")
	start := time.Now()
	resp, err := pay(ctxT(t, 20*time.Second), alice, newID(), "bank1-1001", "bank2-2002", 900)
	elapsed := time.Since(start)
	if err != nil {
		c.Resume("bank2")
		t.Fatal(err)
	}
	p := resp.GetPayment()
	if p.GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED || p.GetFailureReason() != gatewayv1.FailureReason_FAILURE_REASON_TIMEOUT {
		t.Errorf("got %v %v (%s), want FAILED TIMEOUT", p.GetStatus(), p.GetFailureReason(), p.GetFailureMessage())
	}
	if elapsed < 2*time.Second {
		t.Errorf("failed after %s, before the 2s timeout", elapsed)
	}
	// While bank2 is still paused, bank1 must come to hold nothing: the answer comes at the
	// decision and phase two follows it, so a read straight from the bank may come first.
	var held int64
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		resp1, err := c.Bank("bank1").FetchBankBalance(ctxT(t, 5*time.Second), connect.NewRequest(&bankv1.FetchBankBalanceRequest{AccountIds: []string{"bank1-1001"}}))
		if err != nil {
			t.Fatal(err)
		}
		if held = resp1.Msg.GetBalances()[0].GetHeld(); held == 0 || time.Now().After(deadline) {
			break
		}
	}
	if held != 0 {
		t.Errorf("bank1 still holds %d 5s after the payment failed", held)
	}
	c.Resume("bank2")
	after := checkSettled(t, c, before, 20*time.Second)
	checkAtomic(t, c, p, before, after)
}

// TestInDoubtResolvedByGetDecision: both banks voted YES, then lost the gateway: it comes back
// unable to reach them (a one-way partition). Past the deadline plus the grace period, the
// banks ask GetDecision and apply the gateway's decision, commit or abort.
func TestInDoubtResolvedByGetDecision(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real processes")
	}
	for _, tc := range []struct {
		point string
		want  gatewayv1.PaymentStatus
	}{
		{crashpoint.GatewayAfterDecision, gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED},
		{crashpoint.GatewayAfterPrepare, gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED},
	} {
		t.Run(tc.want.String(), func(t *testing.T) {
			t.Parallel()
			c := cluster.New(t, cluster.Options{
				Banks: []string{"bank1", "bank2"}, Users: twoBankUsers, Tags: []string{"crashpoints"},
				TxnTimeout: 2 * time.Second, ResolveAfter: time.Second,
				Env: map[string][]string{"gateway": {"PAYGATE_CRASH_AT=" + tc.point}},
			})
			alice := login(t, c, "alice")
			before := audit(t, c)
			id := newID()
			pay(ctxT(t, 20*time.Second), alice, id, "bank1-1001", "bank2-2002", 1500)
			if !c.Proc("gateway").Wait(10 * time.Second) {
				t.Fatal("gateway did not die at its crash point")
			}
			if l := audit(t, c); l.Held == 0 || l.Pending == 0 {
				t.Fatalf("banks hold nothing in doubt: held %d, pending %d", l.Held, l.Pending)
			}
			c.StartGatewayPartitioned([]string{"bank1", "bank2"})
			after, err := c.WaitSettled(20 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range []string{"bank1", "bank2"} {
				if lines := c.GrepLog(b, "resolved transaction in doubt", id); len(lines) != 1 {
					t.Errorf("%s: %d log lines of resolving %s through GetDecision, want 1", b, len(lines), id)
				}
			}
			alice = login(t, c, "alice")
			got, err := alice.Payments.GetPayment(ctxT(t, 10*time.Second), connect.NewRequest(&gatewayv1.GetPaymentRequest{PaymentId: id}))
			if err != nil {
				t.Fatal(err)
			}
			if got.Msg.GetPayment().GetStatus() != tc.want {
				t.Errorf("status %v, want %v", got.Msg.GetPayment().GetStatus(), tc.want)
			}
			checkAtomic(t, c, got.Msg.GetPayment(), before, after)
			if err := ledgeraudit.Conserved(before, after); err != nil {
				t.Errorf("conservation: %v", err)
			}
		})
	}
}

// TestBankDownFailsFast: with a bank stopped, a payment that needs it fails fast (a recorded
// FAILED outcome, BANK_UNAVAILABLE) naming the bank, the gateway's health service reports it NOT_SERVING, balances show it unavailable, and
// everything recovers by itself when the bank is back.
func TestBankDownFailsFast(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real processes")
	}
	c := cluster.New(t, cluster.Options{TxnTimeout: 30 * time.Second})
	alice := login(t, c, "alice")
	before := audit(t, c)
	c.Stop("bank2")
	if err := c.WaitBankHealth("bank2", 2 /* NOT_SERVING */, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	failed, err := pay(ctxT(t, 40*time.Second), alice, newID(), "bank1-1001", "bank2-2002", 100)
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("took %s to fail; the timeout is 30s and the bank is known to be down", elapsed)
	}
	if err != nil || failed.GetPayment().GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED ||
		failed.GetPayment().GetFailureReason() != gatewayv1.FailureReason_FAILURE_REASON_BANK_UNAVAILABLE ||
		!strings.Contains(failed.GetPayment().GetFailureMessage(), "bank2") {
		t.Errorf("got %v, %v; want FAILED, BANK_UNAVAILABLE, naming bank2", failed, err)
	}
	bal, err := alice.Balance.FetchBalance(ctxT(t, 10*time.Second), connect.NewRequest(&gatewayv1.FetchBalanceRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bal.Msg.GetBanks() {
		wantStatus := gatewayv1.BankStatus_BANK_STATUS_AVAILABLE
		if b.GetBank() == "bank2" {
			wantStatus = gatewayv1.BankStatus_BANK_STATUS_UNAVAILABLE
		}
		if b.GetStatus() != wantStatus {
			t.Errorf("%s: %v, want %v", b.GetBank(), b.GetStatus(), wantStatus)
		}
	}
	if len(bal.Msg.GetTotals()) == 0 || !bal.Msg.GetTotals()[0].GetPartial() {
		t.Errorf("totals %v should be marked partial", bal.Msg.GetTotals())
	}
	// A payment that does not need bank2 still works.
	if resp, err := pay(ctxT(t, 10*time.Second), alice, newID(), "bank1-1001", "bank3-3001", 100); err != nil || resp.GetPayment().GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
		t.Errorf("payment between live banks: %v %v", resp, err)
	}

	c.StartBank("bank2")
	if err := c.WaitBankHealth("bank2", 1 /* SERVING */, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	resp, err := pay(ctxT(t, 10*time.Second), alice, newID(), "bank1-1001", "bank2-2002", 100)
	if err != nil || resp.GetPayment().GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
		t.Fatalf("after recovery: %v %v", resp, err)
	}
	after := checkSettled(t, c, before, 10*time.Second)
	want := map[string]int64{"bank1-1001": -200, "bank3-3001": 100, "bank2-2002": 100}
	if got := delta(before, after); !maps.Equal(got, want) {
		t.Errorf("balance changes %v, want %v", got, want)
	}
}
