package main

import (
	"crypto/tls"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	"github.com/paygate/paygate/gen/paygate/bank/v1/bankv1connect"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
	"github.com/paygate/paygate/internal/cluster"
	"github.com/paygate/paygate/internal/pki"
	"github.com/paygate/paygate/internal/rpcerr"
	"github.com/paygate/paygate/internal/rpcserver"
)

// TestPaymentsEndToEnd runs the walking skeleton against real processes: three banks and a
// gateway, each with its own SQLite store, mTLS with generated certificates. Every subtest that
// moves money ends by checking the invariants.
func TestPaymentsEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real processes")
	}
	c := cluster.New(t, cluster.Options{})
	alice := login(t, c, "alice")

	t.Run("cross-bank payment", func(t *testing.T) {
		before := audit(t, c)
		resp, err := pay(ctxT(t, 10*time.Second), alice, newID(), "bank1-1001", "bank2-2002", 2500)
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.GetPayment().GetStatus(); got != gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
			t.Fatalf("status %v, want SUCCEEDED", got)
		}
		after := checkSettled(t, c, before, 10*time.Second)
		want := map[string]int64{"bank1-1001": -2500, "bank2-2002": 2500}
		if got := delta(before, after); !maps.Equal(got, want) {
			t.Errorf("balance changes %v, want %v", got, want)
		}
	})

	t.Run("same-bank payment", func(t *testing.T) {
		before := audit(t, c)
		resp, err := pay(ctxT(t, 10*time.Second), alice, newID(), "bank1-1001", "bank1-1002", 1234)
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.GetPayment().GetStatus(); got != gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
			t.Fatalf("status %v, want SUCCEEDED", got)
		}
		after := checkSettled(t, c, before, 10*time.Second)
		want := map[string]int64{"bank1-1001": -1234, "bank1-1002": 1234}
		if got := delta(before, after); !maps.Equal(got, want) {
			t.Errorf("balance changes %v, want %v", got, want)
		}
	})

	t.Run("insufficient funds", func(t *testing.T) {
		before := audit(t, c)
		resp, err := pay(ctxT(t, 10*time.Second), alice, newID(), "bank2-2001", "bank3-3001", 30001)
		if err != nil {
			t.Fatal(err)
		}
		p := resp.GetPayment()
		if p.GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED || p.GetFailureReason() != gatewayv1.FailureReason_FAILURE_REASON_INSUFFICIENT_FUNDS {
			t.Fatalf("got %v %v, want FAILED INSUFFICIENT_FUNDS", p.GetStatus(), p.GetFailureReason())
		}
		if !strings.Contains(p.GetFailureMessage(), "bank2-2001") {
			t.Errorf("failure message %q does not name the account", p.GetFailureMessage())
		}
		after := checkSettled(t, c, before, 10*time.Second)
		if d := delta(before, after); len(d) != 0 {
			t.Errorf("a failed payment changed balances: %v", d)
		}
	})

	t.Run("unknown destination account", func(t *testing.T) {
		before := audit(t, c)
		resp, err := pay(ctxT(t, 10*time.Second), alice, newID(), "bank1-1001", "bank3-9999", 100)
		if err != nil {
			t.Fatal(err)
		}
		p := resp.GetPayment()
		if p.GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED || p.GetFailureReason() != gatewayv1.FailureReason_FAILURE_REASON_UNKNOWN_ACCOUNT {
			t.Fatalf("got %v %v, want FAILED UNKNOWN_ACCOUNT", p.GetStatus(), p.GetFailureReason())
		}
		// An account at a bank that does not exist is refused before anything is recorded.
		_, err = pay(ctxT(t, 10*time.Second), alice, newID(), "bank1-1001", "nobank-1", 100)
		if connect.CodeOf(err) != connect.CodeNotFound || !strings.Contains(err.Error(), "to_account") {
			t.Errorf("unknown bank: got %v, want NotFound naming to_account", err)
		}
		after := checkSettled(t, c, before, 10*time.Second)
		if d := delta(before, after); len(d) != 0 {
			t.Errorf("a failed payment changed balances: %v", d)
		}
	})

	t.Run("paying from another user's account", func(t *testing.T) {
		before := audit(t, c)
		_, err := pay(ctxT(t, 10*time.Second), alice, newID(), "bank2-2002", "bank1-1001", 100) // bob's account
		if connect.CodeOf(err) != connect.CodePermissionDenied || rpcerr.Reason(err) != "not_account_owner" {
			t.Fatalf("got %v (reason %q), want PermissionDenied not_account_owner", err, rpcerr.Reason(err))
		}
		checkSettled(t, c, before, 10*time.Second)
		if d := delta(before, audit(t, c)); len(d) != 0 {
			t.Errorf("balances changed: %v", d)
		}
	})

	t.Run("no token", func(t *testing.T) {
		anon := c.Clients()
		_, err := pay(ctxT(t, 10*time.Second), anon, newID(), "bank1-1001", "bank2-2002", 100)
		if connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Fatalf("got %v, want Unauthenticated", err)
		}
		_, err = anon.Balance.FetchBalance(ctxT(t, 10*time.Second), connect.NewRequest(&gatewayv1.FetchBalanceRequest{}))
		if connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Fatalf("balance: got %v, want Unauthenticated", err)
		}
	})

	t.Run("bad amounts", func(t *testing.T) {
		before := audit(t, c)
		for _, amount := range []int64{0, -1, -9223372036854775808, 1_000_000_000_000_001, 9223372036854775807} {
			_, err := pay(ctxT(t, 10*time.Second), alice, newID(), "bank1-1001", "bank2-2002", amount)
			if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "amount") || rpcerr.Reason(err) != "invalid_argument" {
				t.Errorf("amount %d: got %v (reason %q), want InvalidArgument naming amount, reason invalid_argument", amount, err, rpcerr.Reason(err))
			}
		}
		// An amount that does not fit in int64 never reaches the handler: the server's JSON
		// decoder refuses it as InvalidArgument.
		for _, amount := range []string{`"99999999999999999999"`, `1e400`, `"12.5"`} {
			body := `{"paymentId":"` + newID() + `","fromAccount":"bank1-1001","toAccount":"bank2-2002","amount":` + amount + `,"currency":"USD"}`
			code, msg := postJSON(t, c, alice.Token, "/paygate.gateway.v1.PaymentService/ExecutePayment", body)
			if code != "invalid_argument" || !strings.Contains(msg, "amount") {
				t.Errorf("amount %s: code %q message %q, want invalid_argument naming amount", amount, code, msg)
			}
		}
		checkSettled(t, c, before, 10*time.Second)
		if d := delta(before, audit(t, c)); len(d) != 0 {
			t.Errorf("balances changed: %v", d)
		}
	})

	t.Run("balance aggregates across banks", func(t *testing.T) {
		resp, err := alice.Balance.FetchBalance(ctxT(t, 10*time.Second), connect.NewRequest(&gatewayv1.FetchBalanceRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		l := audit(t, c)
		var total int64
		var banks []string
		for _, b := range resp.Msg.GetBanks() {
			banks = append(banks, b.GetBank())
			if b.GetStatus() != gatewayv1.BankStatus_BANK_STATUS_AVAILABLE {
				t.Errorf("bank %s: %v", b.GetBank(), b.GetStatus())
			}
			for _, a := range b.GetAccounts() {
				if a.GetBalance() != l.Accounts[a.GetAccountId()].GetBalance() {
					t.Errorf("%s: gateway says %d, bank says %d", a.GetAccountId(), a.GetBalance(), l.Accounts[a.GetAccountId()].GetBalance())
				}
				total += a.GetBalance()
			}
		}
		if strings.Join(banks, ",") != "bank1,bank2" {
			t.Errorf("banks %v, want bank1,bank2", banks)
		}
		if len(resp.Msg.GetTotals()) != 1 || resp.Msg.GetTotals()[0].GetBalance() != total {
			t.Errorf("totals %v, want one USD total of %d", resp.Msg.GetTotals(), total)
		}
	})

	t.Run("no client certificate is refused at the handshake", func(t *testing.T) {
		tlsCfg, err := pki.ClientTLS(c.CertPath("ca.pem"), "", "")
		if err != nil {
			t.Fatal(err)
		}
		conn, err := tls.Dial("tcp", c.GatewayAddr, tlsCfg)
		if err == nil {
			// TLS 1.3: the client learns of the refusal on its first read.
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = conn.Read(make([]byte, 1))
			conn.Close()
		}
		if err == nil || !strings.Contains(err.Error(), "certificate required") {
			t.Fatalf("got %v, want the handshake refused with 'certificate required'", err)
		}
		auth := gatewayv1connect.NewAuthServiceClient(rpcserver.NewHTTPClient(tlsCfg), "https://"+c.GatewayAddr, connect.WithGRPC())
		_, err = auth.Login(ctxT(t, 10*time.Second), connect.NewRequest(&gatewayv1.LoginRequest{Username: "alice", Password: passwords["alice"]}))
		if err == nil {
			t.Fatal("login without a client certificate succeeded")
		}
	})

	t.Run("a non-gateway certificate calling a bank", func(t *testing.T) {
		before := audit(t, c)
		for _, cert := range []string{"client-cli", "bank-bank2"} {
			tlsCfg, err := pki.ClientTLS(c.CertPath("ca.pem"), c.CertPath(cert+".pem"), c.CertPath(cert+"-key.pem"))
			if err != nil {
				t.Fatal(err)
			}
			b := bankv1connect.NewBankServiceClient(rpcserver.NewHTTPClient(tlsCfg), "https://"+c.BankAddrs["bank1"], connect.WithGRPC())
			_, err = b.PrepareTransaction(ctxT(t, 10*time.Second), connect.NewRequest(&bankv1.PrepareTransactionRequest{
				TransactionId: newID(),
				Legs:          []*bankv1.Leg{{AccountId: "bank1-1001", Direction: bankv1.LegDirection_LEG_DIRECTION_DEBIT, Amount: 100, Currency: "USD"}},
				Deadline:      timestampIn(time.Minute),
			}))
			if connect.CodeOf(err) != connect.CodePermissionDenied {
				t.Errorf("%s: got %v, want PermissionDenied", cert, err)
			}
			_, err = b.FetchBankBalance(ctxT(t, 10*time.Second), connect.NewRequest(&bankv1.FetchBankBalanceRequest{AccountIds: []string{"bank1-1001"}}))
			if connect.CodeOf(err) != connect.CodePermissionDenied {
				t.Errorf("%s balance: got %v, want PermissionDenied", cert, err)
			}
		}
		if after := audit(t, c); after.Held != 0 || len(delta(before, after)) != 0 {
			t.Errorf("a refused prepare left a trace: held %d, changes %v", after.Held, delta(before, after))
		}
	})

	t.Run("replay and reuse of a payment_id", func(t *testing.T) {
		before := audit(t, c)
		id := newID()
		first, err := pay(ctxT(t, 10*time.Second), alice, id, "bank1-1001", "bank3-3001", 700)
		if err != nil || first.GetReplayed() {
			t.Fatalf("first: %v %v", first, err)
		}
		again, err := pay(ctxT(t, 10*time.Second), alice, id, "bank1-1001", "bank3-3001", 700)
		if err != nil {
			t.Fatal(err)
		}
		if !again.GetReplayed() || again.GetPayment().GetStatus() != first.GetPayment().GetStatus() {
			t.Errorf("retry: replayed=%v status=%v, want replayed %v", again.GetReplayed(), again.GetPayment().GetStatus(), first.GetPayment().GetStatus())
		}
		_, err = pay(ctxT(t, 10*time.Second), alice, id, "bank1-1001", "bank3-3001", 701)
		if connect.CodeOf(err) != connect.CodeAlreadyExists || !strings.Contains(err.Error(), "different parameters") {
			t.Errorf("reuse: got %v, want AlreadyExists 'different parameters'", err)
		}
		after := checkSettled(t, c, before, 10*time.Second)
		want := map[string]int64{"bank1-1001": -700, "bank3-3001": 700}
		if got := delta(before, after); !maps.Equal(got, want) {
			t.Errorf("balance changes %v, want %v (applied exactly once)", got, want)
		}
		if lines := c.GrepLog("gateway", `"payment_id":"`+id+`"`, `"replayed":true`); len(lines) != 1 {
			t.Errorf("gateway log lines marking the replay: %d, want 1", len(lines))
		}
	})

	refundsEndToEnd(t, c) // e2e_refunds_test.go
}

// TestConcurrentPaymentsNeverOverdraw sends 50 concurrent payments from one account that
// together exceed its balance: it is never overdrawn, and the successful payments add up
// exactly to what left it.
func TestConcurrentPaymentsNeverOverdraw(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real processes")
	}
	c := cluster.New(t, cluster.Options{})
	dave := login(t, c, "dave") // bank1-1003 holds 75.25 USD
	before := audit(t, c)
	start := before.Accounts["bank1-1003"].GetBalance()

	const n = 50
	const amount = 300 // 50 × 3.00 = 150.00 > 75.25
	targets := []string{"bank2-2002", "bank3-3001", "bank1-1001"}
	var mu sync.Mutex
	succeeded, failed := 0, 0
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := pay(ctxT(t, 30*time.Second), dave, newID(), "bank1-1003", targets[i%len(targets)], amount)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				t.Errorf("payment %d: %v", i, err)
			case resp.GetPayment().GetStatus() == gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED:
				succeeded++
			case resp.GetPayment().GetFailureReason() == gatewayv1.FailureReason_FAILURE_REASON_INSUFFICIENT_FUNDS:
				failed++
			default:
				t.Errorf("payment %d: %v %v", i, resp.GetPayment().GetStatus(), resp.GetPayment().GetFailureMessage())
			}
		}()
	}
	wg.Wait()
	after := checkSettled(t, c, before, 15*time.Second)
	left := start - after.Accounts["bank1-1003"].GetBalance()
	if left != int64(succeeded)*amount {
		t.Errorf("%d payments succeeded (%d), but %d left the account", succeeded, int64(succeeded)*amount, left)
	}
	if max := start / amount; int64(succeeded) != max {
		t.Errorf("succeeded %d, want exactly %d (the balance covers that many)", succeeded, max)
	}
	if succeeded+failed != n {
		t.Errorf("succeeded %d + failed %d != %d", succeeded, failed, n)
	}
	var received int64
	for _, id := range targets {
		received += after.Accounts[id].GetBalance() - before.Accounts[id].GetBalance()
	}
	if received != left {
		t.Errorf("payees received %d, payer lost %d", received, left)
	}
}
