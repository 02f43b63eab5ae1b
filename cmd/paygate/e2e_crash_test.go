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
// parameters until it is decided, then reads it with GetPayment too; both must agree.
func finalOutcome(t *testing.T, u *cluster.User, id, from, to string, amount int64, within time.Duration) *gatewayv1.Payment {
	t.Helper()
	deadline := time.Now().Add(within)
	var lastErr error
	for time.Now().Before(deadline) {
		resp, err := pay(ctxT(t, 10*time.Second), u, id, from, to, amount)
		if err == nil && resp.GetPayment().GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_PROCESSING {
			got, gerr := u.Payments.GetPayment(ctxT(t, 10*time.Second), connect.NewRequest(&gatewayv1.GetPaymentRequest{PaymentId: id}))
			if gerr != nil {
				t.Fatalf("GetPayment %s: %v", id, gerr)
			}
			if got.Msg.GetPayment().GetStatus() != resp.GetPayment().GetStatus() {
				t.Fatalf("GetPayment says %v, ExecutePayment retry says %v", got.Msg.GetPayment().GetStatus(), resp.GetPayment().GetStatus())
			}
			return resp.GetPayment()
		}
		lastErr = err
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("payment %s undecided after %s (last error %v)", id, within, lastErr)
	return nil
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

// TestCrashPoints kills a real process (SIGKILL, from inside, at the named protocol step) in the
// gateway, the payer's bank and the payee's bank, restarts it, and checks that the payment
// reaches exactly one final outcome, the same through GetPayment and a retried ExecutePayment,
// with money conserved and no hold or pending credit left.
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
	}{
		{gateway, crashpoint.GatewayAfterAdmit, ok, amount, succeeds}, // resumed after restart
		{gateway, crashpoint.GatewayAfterPrepare, ok, amount, succeeds},
		{gateway, crashpoint.GatewayAfterDecision, ok, amount, succeeds},
		{gateway, crashpoint.GatewayAfterDecision, unknown, amount, fails},
		{gateway, crashpoint.GatewayAfterFirstPhase2, ok, amount, succeeds},
		{gateway, crashpoint.GatewayBeforeReply, ok, amount, succeeds},
		{payer, crashpoint.BankPrepareBeforePersist, ok, amount, fails},
		{payer, crashpoint.BankPrepareAfterPersist, ok, amount, fails},
		{payer, crashpoint.BankCommitBeforePersist, ok, amount, succeeds},
		{payer, crashpoint.BankCommitAfterPersist, ok, amount, succeeds},
		{payer, crashpoint.BankAbortAfterPersist, unknown, amount, fails},
		{payee, crashpoint.BankPrepareBeforePersist, ok, amount, fails},
		{payee, crashpoint.BankPrepareAfterPersist, ok, amount, fails},
		{payee, crashpoint.BankCommitBeforePersist, ok, amount, succeeds},
		{payee, crashpoint.BankCommitAfterPersist, ok, amount, succeeds},
		{payee, crashpoint.BankAbortAfterPersist, ok, tooMuch, fails},
	}
	for _, tc := range cases {
		name := fmt.Sprintf("%s/%s/%s", tc.proc, tc.point, tc.want)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := cluster.New(t, cluster.Options{
				Banks:      []string{"bank1", "bank2"},
				Users:      twoBankUsers,
				Tags:       []string{"crashpoints"},
				TxnTimeout: crashTxnTimeout,
				// The banks' own resolution through GetDecision is tested on its own below;
				// here the gateway's recovery must finish everything by itself.
				ResolveAfter: time.Hour,
				Env:          map[string][]string{tc.proc: {"PAYGATE_CRASH_AT=" + tc.point}},
			})
			alice := login(t, c, "alice")
			before := audit(t, c)
			id := newID()

			first, firstErr := pay(ctxT(t, 20*time.Second), alice, id, "bank1-1001", tc.to, tc.amount)
			if !c.Proc(tc.proc).Wait(15 * time.Second) {
				t.Fatalf("%s did not die at %s (answer %v, %v)", tc.proc, tc.point, first, firstErr)
			}
			// The answer, if the client got one, is final and must hold after recovery.
			if tc.proc == gateway {
				c.StartGateway()
				alice = login(t, c, "alice")
			} else {
				c.StartBank(tc.proc)
			}
			got := finalOutcome(t, alice, id, "bank1-1001", tc.to, tc.amount, 2*crashTxnTimeout+10*time.Second)
			if got.GetStatus() != tc.want {
				t.Errorf("outcome %v (%v: %s), want %v", got.GetStatus(), got.GetFailureReason(), got.GetFailureMessage(), tc.want)
			}
			if firstErr == nil && first.GetPayment().GetStatus() != got.GetStatus() {
				t.Errorf("the client was told %v, the payment ended %v", first.GetPayment().GetStatus(), got.GetStatus())
			}
			after := checkSettled(t, c, before, 2*crashTxnTimeout+10*time.Second)
			checkAtomic(t, c, got, before, after)
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
			if after.Total != before.Total {
				t.Errorf("conservation: %d before, %d after", before.Total, after.Total)
			}
		})
	}
}

// TestBankDownFailsFast: with a bank stopped, a payment that needs it fails fast naming the
// bank, the gateway's health service reports it NOT_SERVING, balances show it unavailable, and
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
	_, err := pay(ctxT(t, 40*time.Second), alice, newID(), "bank1-1001", "bank2-2002", 100)
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("took %s to fail; the timeout is 30s and the bank is known to be down", elapsed)
	}
	if connect.CodeOf(err) != connect.CodeUnavailable || !strings.Contains(err.Error(), "bank2") {
		t.Errorf("got %v, want Unavailable naming bank2", err)
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
