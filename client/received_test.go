package client_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/paygate/paygate/client"
	"github.com/paygate/paygate/internal/rpcerr"
)

// TestHistoryReceived: on a system of its own, History with Received and AllReceived list the
// payments others made to the user's accounts, newest first across pages, without who paid
// and with what is refunded of each; the payer receives the refund; a page token of one
// listing is refused by the other; and the ledger is conserved.
func TestHistoryReceived(t *testing.T) {
	sys := newSystem(t)
	before := sys.settledBalances(t)
	ctx := testCtx(t, 60*time.Second)
	login := func(user, password string) *client.Client {
		c, err := client.New(sys.addr, client.WithTLSDir(certDir))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := c.Login(ctx, user, password); err != nil {
			t.Fatal(err)
		}
		return c
	}
	alice, bob := login("alice", "alice-pass-123"), login("bob", "bob-pass-456")
	var want []string // bob's received, newest first
	for _, cents := range []int64{100, 200, 300} {
		r, err := alice.Pay(ctx, req("bank1-1001", "bank2-2002", cents))
		if err != nil || r.Status != client.StatusSucceeded {
			t.Fatalf("pay %d: %+v, %v", cents, r, err)
		}
		want = slices.Insert(want, 0, r.ID)
	}
	if r, err := bob.Pay(ctx, req("bank2-2002", "bank3-3001", 50)); err != nil || r.Status != client.StatusSucceeded {
		t.Fatalf("bob pays himself: %+v, %v", r, err)
	}
	rr, err := bob.Refund(ctx, client.RefundRequest{PaymentID: want[0], Amount: 120})
	if err != nil || rr.Status != client.StatusSucceeded {
		t.Fatalf("refund: %+v, %v", rr, err)
	}

	var got []string
	for p, err := range bob.AllReceived(ctx, 2) {
		if err != nil {
			t.Fatal(err)
		}
		if p.GetUsername() != "" {
			t.Errorf("bob received %s showing its payer %q", p.GetPaymentId(), p.GetUsername())
		}
		if p.GetPaymentId() == want[0] && p.GetRefundedAmount() != 120 {
			t.Errorf("bob received %v, want refunded_amount 120", p)
		}
		got = append(got, p.GetPaymentId())
	}
	if !slices.Equal(got, want) {
		t.Fatalf("bob received %v, want %v", got, want)
	}
	page, err := alice.History(ctx, client.HistoryQuery{Received: true})
	if err != nil || len(page.Payments) != 1 || page.Payments[0].GetPaymentId() != rr.ID || page.Payments[0].GetRefundOf() != want[0] {
		t.Fatalf("alice received %v, %v; want bob's refund %s", page.Payments, err, rr.ID)
	}

	first, err := bob.History(ctx, client.HistoryQuery{PageSize: 1, Received: true})
	if err != nil || first.NextPageToken == "" {
		t.Fatalf("bob's first received page: %+v, %v", first, err)
	}
	_, err = bob.History(ctx, client.HistoryQuery{PageToken: first.NextPageToken})
	if connect.CodeOf(err) != connect.CodeInvalidArgument || rpcerr.Reason(err) != "invalid_page_token" {
		t.Errorf("a received token for bob's own payments: %v, want invalid_page_token", err)
	}
	if err != nil && !strings.Contains(err.Error(), "page_token") {
		t.Errorf("the refusal %q does not name page_token", err)
	}

	after := sys.settledBalances(t)
	if total(after) != total(before) {
		t.Fatalf("conservation: sum of balances %d, was %d", total(after), total(before))
	}
	if d := after["bank1-1001"] - before["bank1-1001"]; d != -600+120 {
		t.Errorf("bank1-1001 moved by %d, want %d", d, -600+120)
	}
}
