package gateway

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
)

// fastHealth probes the banks often, for tests that stop and start them.
func fastHealth(c *Config) { c.HealthInterval = 200 * time.Millisecond }

func waitBankHealth(t testing.TB, e *env, bank string, want grpchealth.Status) {
	t.Helper()
	var last grpchealth.Status
	var lastErr error
	deadline := time.Now().Add(10 * time.Second)
	for {
		last, lastErr = e.gatewayHealth(BankHealthService(bank))
		if lastErr == nil && last == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway health of %s = %v (%v); want %v", bank, last, lastErr, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func fetchBalance(t testing.TB, c *clients) *gatewayv1.FetchBalanceResponse {
	t.Helper()
	resp, err := c.balance.FetchBalance(context.Background(), connect.NewRequest(&gatewayv1.FetchBalanceRequest{}))
	if err != nil {
		t.Fatalf("FetchBalance: %v", err)
	}
	return resp.Msg
}

func bankBalances(m *gatewayv1.FetchBalanceResponse, bank string) *gatewayv1.BankBalances {
	for _, b := range m.GetBanks() {
		if b.GetBank() == bank {
			return b
		}
	}
	return nil
}

func TestBankDown(t *testing.T) {
	t.Parallel()
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{config: fastHealth})
			alice := e.login(t, p, "alice", "alice-pass-123")
			ctx := context.Background()
			for _, b := range e.names {
				waitBankHealth(t, e, b, grpchealth.StatusServing)
			}

			e.banks["bank2"].stop(t)
			waitBankHealth(t, e, "bank2", grpchealth.StatusNotServing)
			waitBankHealth(t, e, "bank1", grpchealth.StatusServing)
			waitBankHealth(t, e, "bank3", grpchealth.StatusServing)

			// A new payment that needs bank2 fails fast with BANK_UNAVAILABLE, names the bank
			// and holds nothing at bank1 meanwhile. It is a recorded outcome, not a refusal:
			// every later answer for the id is the same.
			before := e.balance(t, "bank1-1001")
			id := newPaymentID()
			start := time.Now()
			resp, err := alice.tryPay(ctx, id, "bank1-1001", "bank2-2002", 1000)
			elapsed := time.Since(start)
			if err != nil {
				t.Fatalf("payment needing bank2: %v; want a FAILED outcome", err)
			}
			got := resp.Msg.GetPayment()
			if got.GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED ||
				got.GetFailureReason() != gatewayv1.FailureReason_FAILURE_REASON_BANK_UNAVAILABLE {
				t.Fatalf("payment needing bank2 = %v %v; want FAILED, BANK_UNAVAILABLE", got.GetStatus(), got.GetFailureReason())
			}
			if !strings.Contains(got.GetFailureMessage(), "bank2") {
				t.Errorf("failure message %q does not name bank2", got.GetFailureMessage())
			}
			if txnTimeout := e.gw.cfg.TxnTimeout; elapsed > txnTimeout/2 {
				t.Errorf("answered after %s; want well under the %s transaction timeout", elapsed, txnTimeout)
			}
			if g, err := alice.payments.GetPayment(ctx, connect.NewRequest(&gatewayv1.GetPaymentRequest{PaymentId: id})); err != nil ||
				g.Msg.GetPayment().GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED {
				t.Fatalf("GetPayment = %v, %v; want the same FAILED outcome", g, err)
			}
			acct, err := e.bankClient("bank1").GetAccount(ctx, connect.NewRequest(&bankv1.GetAccountRequest{AccountId: "bank1-1001"}))
			if err != nil {
				t.Fatal(err)
			}
			if b := acct.Msg.GetAccount().GetBalance(); b.GetBalance() != before || b.GetHeld() != 0 {
				t.Fatalf("bank1-1001 = %v; want %d and nothing held", b, before)
			}
			// Payments that do not need bank2 go on.
			if got := alice.pay(t, newPaymentID(), "bank1-1001", "bank1-1002", 100); got.GetStatus() != statusSucceeded {
				t.Fatalf("payment within bank1 = %v", got)
			}

			// Balances: bank2 is reported unavailable, not as zero; bank1 answers; totals are
			// partial.
			m := fetchBalance(t, alice)
			b1, b2 := bankBalances(m, "bank1"), bankBalances(m, "bank2")
			if b1.GetStatus() != gatewayv1.BankStatus_BANK_STATUS_AVAILABLE || len(b1.GetAccounts()) != 1 ||
				b1.GetAccounts()[0].GetBalance() != before-100 {
				t.Errorf("bank1 = %v", b1)
			}
			if b2.GetStatus() != gatewayv1.BankStatus_BANK_STATUS_UNAVAILABLE || !strings.Contains(b2.GetError(), "bank2") ||
				len(b2.GetAccounts()) != 1 || b2.GetAccounts()[0].GetAccountId() != "bank2-2001" {
				t.Errorf("bank2 = %v", b2)
			}
			var usd *gatewayv1.CurrencyTotal
			for _, tot := range m.GetTotals() {
				if tot.GetCurrency() == "USD" {
					usd = tot
				}
			}
			if usd == nil || !usd.GetPartial() || usd.GetBalance() != before-100 {
				t.Errorf("totals = %v; want a partial USD total of bank1 only", m.GetTotals())
			}

			// bank2 comes back on the same address with the same ledger.
			e.banks["bank2"].start(t)
			waitBankHealth(t, e, "bank2", grpchealth.StatusServing)
			// The failed payment stays failed: a retry with its id is a replay of the outcome.
			resp, err = alice.tryPay(ctx, id, "bank1-1001", "bank2-2002", 1000)
			if err != nil || !resp.Msg.GetReplayed() || resp.Msg.GetPayment().GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED {
				t.Fatalf("retry after the bank is back = %v, %v; want the FAILED outcome replayed", resp, err)
			}
			// A new payment goes through.
			if got := alice.pay(t, newPaymentID(), "bank1-1001", "bank2-2002", 1000); got.GetStatus() != statusSucceeded {
				t.Fatalf("new payment after the bank is back = %v", got)
			}
			m = fetchBalance(t, alice)
			for _, b := range m.GetBanks() {
				if b.GetStatus() != gatewayv1.BankStatus_BANK_STATUS_AVAILABLE {
					t.Errorf("%s: %v", b.GetBank(), b.GetStatus())
				}
			}
			if len(m.GetTotals()) != 1 || m.GetTotals()[0].GetPartial() || m.GetTotals()[0].GetBalance() != before-100-1000+30000 {
				t.Errorf("totals = %v", m.GetTotals())
			}
			e.assertSettled(t)
		})
	}
}

// TestPartialTotalsHaveNoEmptyCurrency: while a bank is down, its accounts (whose currency the
// gateway does not know) must not add a total with an empty currency.
func TestPartialTotalsHaveNoEmptyCurrency(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{config: fastHealth})
	alice := e.login(t, protocols[0], "alice", "alice-pass-123")
	e.banks["bank2"].stop(t)
	waitBankHealth(t, e, "bank2", grpchealth.StatusNotServing)
	m := fetchBalance(t, alice)
	for _, tot := range m.GetTotals() {
		if tot.GetCurrency() == "" {
			t.Fatalf("totals = %v: the unavailable bank's accounts add a total without a currency", m.GetTotals())
		}
	}
}

// TestPaymentWithSilentBankTimesOut: bank2 takes a prepare and never answers. The payment fails
// with TIMEOUT once the transaction timeout passes, bank1's hold is released and nothing moves.
func TestPaymentWithSilentBankTimesOut(t *testing.T) {
	t.Parallel()
	silent := &fakeBank{hang: true}
	e := newEnv(t, envOptions{
		config: func(c *Config) { c.TxnTimeout = 500 * time.Millisecond },
		beforeStart: func(g *Gateway) {
			wrapBanks(g, func(name string, p participant) participant {
				if name != "bank2" {
					return p
				}
				silent.next = p
				return silent
			})
		},
	})
	alice := e.login(t, protocols[0], "alice", "alice-pass-123")
	before := e.audit(t, context.Background())
	start := time.Now()
	got := alice.pay(t, newPaymentID(), "bank1-1001", "bank2-2002", 2000)
	if got.GetStatus() != statusFailed || got.GetFailureReason() != gatewayv1.FailureReason_FAILURE_REASON_TIMEOUT {
		t.Fatalf("payment = %v; want FAILED TIMEOUT", got)
	}
	if elapsed := time.Since(start); elapsed < 500*time.Millisecond {
		t.Errorf("failed after %s, before the timeout", elapsed)
	}
	// At least one abort; more when a phase-two call failed and the recovery loop sent the
	// decision again to every participant.
	if silent.aborts.Load() < 1 {
		t.Errorf("bank2 received no abort")
	}
	l := e.assertSettled(t)
	for _, id := range []string{"bank1-1001", "bank2-2002"} {
		if l.accounts[id].GetBalance() != before.accounts[id].GetBalance() {
			t.Errorf("%s moved from %d to %d", id, before.accounts[id].GetBalance(), l.accounts[id].GetBalance())
		}
	}
}

// TestCommitRetriedAtRealBank: bank2 fails the first commits; the payer is told SUCCEEDED at
// once, and the recovery loop delivers the commit until bank2 applies the credit.
func TestCommitRetriedAtRealBank(t *testing.T) {
	t.Parallel()
	flaky := &fakeBank{}
	flaky.commitFailures.Store(2)
	e := newEnv(t, envOptions{beforeStart: func(g *Gateway) {
		wrapBanks(g, func(name string, p participant) participant {
			if name != "bank2" {
				return p
			}
			flaky.next = p
			return flaky
		})
	}})
	alice := e.login(t, protocols[1], "alice", "alice-pass-123")
	before := e.audit(t, context.Background())
	id := newPaymentID()
	got := alice.pay(t, id, "bank1-1001", "bank2-2002", 2500)
	if got.GetStatus() != statusSucceeded {
		t.Fatalf("payment = %v", got)
	}
	l := e.assertSettled(t)
	if d := l.accounts["bank2-2002"].GetBalance() - before.accounts["bank2-2002"].GetBalance(); d != 2500 {
		t.Errorf("bank2-2002 credited %d; want 2500", d)
	}
	if d := l.accounts["bank1-1001"].GetBalance() - before.accounts["bank1-1001"].GetBalance(); d != -2500 {
		t.Errorf("bank1-1001 debited %d; want 2500", -d)
	}
	waitFor(t, 5*time.Second, "the payment to be completed", func() bool {
		p, err := e.gw.store.Payment(context.Background(), id)
		return err == nil && p.Completed
	})
	if got := flaky.commits.Load(); got != 3 {
		t.Errorf("bank2 received %d commits; want 3", got)
	}
}

// TestBankHealthPublishedInOrder: changes observed concurrently are published so that the last
// published state is the monitor's state, whatever the interleaving.
func TestBankHealthPublishedInOrder(t *testing.T) {
	t.Parallel()
	down := connect.NewError(connect.CodeUnavailable, errors.New("connection refused"))
	var mu sync.Mutex
	var published bool
	h := newBankHealth([]string{"bank1"}, slog.New(slog.DiscardHandler), func(_ string, up bool) {
		mu.Lock()
		published = up
		mu.Unlock()
	})
	disagreed := 0
	for range 2000 {
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Go(func() {
				if i%2 == 0 {
					h.observe("bank1", down, false)
				} else {
					h.observe("bank1", nil, false)
				}
			})
		}
		wg.Wait()
		mu.Lock()
		if published != (h.check("bank1") == nil) {
			disagreed++
		}
		mu.Unlock()
	}
	if disagreed > 0 {
		t.Fatalf("in %d of 2000 rounds the published health disagreed with the monitor's", disagreed)
	}
}
