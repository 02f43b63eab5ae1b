package gateway

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
)

// TestReadsSeeAnsweredPayments: ExecutePayment answers once the decision is durable, before
// phase two reaches the banks. What the client does next must still see the payment applied:
// FetchBalance waits for it, and so does a payment from the account it credits.
func TestReadsSeeAnsweredPayments(t *testing.T) {
	t.Parallel()
	gate := &fakeBank{phase2Gate: make(chan struct{}), phase2Entered: make(chan string, 16)}
	e := newEnv(t, envOptions{beforeStart: func(g *Gateway) {
		wrapBanks(g, func(name string, p participant) participant {
			if name != "bank2" {
				return p
			}
			gate.next = p
			return gate
		})
	}})
	alice := e.login(t, protocols[0], "alice", "alice-pass-123")
	ctx := context.Background()
	balances := func() map[string]int64 {
		resp, err := alice.balance.FetchBalance(ctx, connect.NewRequest(&gatewayv1.FetchBalanceRequest{}))
		if err != nil {
			t.Errorf("FetchBalance: %v", err)
			return nil
		}
		out := map[string]int64{}
		for _, b := range resp.Msg.GetBanks() {
			for _, a := range b.GetAccounts() {
				out[a.GetAccountId()] = a.GetBalance()
			}
		}
		return out
	}
	before := balances()

	// bank1-1001 pays bank2-2001 (both alice's); bank2's commit is held.
	if p := alice.pay(t, newPaymentID(), "bank1-1001", "bank2-2001", 700); p.GetStatus() != statusSucceeded {
		t.Fatalf("payment = %v", p)
	}
	recv(t, gate.phase2Entered, "bank2's commit") // answered while phase two is still held

	read := make(chan map[string]int64, 1)
	go func() { read <- balances() }()
	paid := make(chan *gatewayv1.Payment, 1)
	go func() {
		// Not alice.pay: t.Fatal must not be called from this goroutine.
		resp, err := alice.tryPay(ctx, newPaymentID(), "bank2-2001", "bank1-1001", 1)
		if err != nil {
			t.Errorf("second payment: %v", err)
			paid <- nil
			return
		}
		paid <- resp.Msg.GetPayment()
	}()
	select {
	case got := <-read:
		t.Fatalf("FetchBalance answered before the payment was applied at bank2: %v", got)
	case p := <-paid:
		t.Fatalf("a payment from the credited account ran before the credit was applied: %v", p)
	case <-time.After(300 * time.Millisecond):
	}
	close(gate.phase2Gate)
	got := recv(t, read, "FetchBalance")
	// Released together, the read and the second payment (1 back from bank2-2001) run in either
	// order, and a read is not atomic across banks: each account shows the 700 applied, with or
	// without that 1.
	b1, b2 := got["bank1-1001"]-(before["bank1-1001"]-700), got["bank2-2001"]-(before["bank2-2001"]+700)
	if (b1 != 0 && b1 != 1) || (b2 != 0 && b2 != -1) {
		t.Errorf("balances after the payment = %v, before %v; want 700 moved (and perhaps the second payment's 1 back)", got, before)
	}
	if p := recv(t, paid, "the second payment"); p.GetStatus() != statusSucceeded {
		t.Errorf("second payment = %v", p)
	}
	e.assertSettled(t)
}

// waitAll is wait for every phase two pending now, whatever its keys: for tests that read the
// banks directly.
func (b *settleBarrier) waitAll(ctx context.Context) error {
	b.mu.Lock()
	keys := make([]string, 0, len(b.m))
	for k := range b.m {
		keys = append(keys, k)
	}
	b.mu.Unlock()
	return b.wait(ctx, keys...)
}
