package main

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/internal/cluster"
	"github.com/paygate/paygate/internal/crashpoint"
	"github.com/paygate/paygate/internal/rpcerr"
)

// End-to-end tests of refunds with real processes: concurrent full refunds of one payment (on
// SQLite, and sent to two gateway replicas on PostgreSQL), a gateway killed mid-refund, and
// the CLI. They run inside the clusters of TestPaymentsEndToEnd and TestReplicasDuplicateAtOnce
// where they can, and TestRefundCrash starts its own (crash points).

// refund sends RefundPayment as u.
func refund(ctx context.Context, u *cluster.User, rid, paymentID string, amount int64) (*gatewayv1.RefundPaymentResponse, error) {
	resp, err := u.Payments.RefundPayment(ctx, connect.NewRequest(&gatewayv1.RefundPaymentRequest{
		RefundId: rid, PaymentId: paymentID, Amount: amount, Reason: "returned",
	}))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// concurrentFullRefunds has alice (payers[i] is her client of replica i) pay bob 10.00, then
// bob refund the whole payment twice at once, the two refunds sent to two clients (two
// replicas, or the same gateway twice), rounds times: each time exactly one refund succeeds
// and the other is refused with refund_exceeds_payment (nothing recorded), the payment shows
// 10.00 refunded, and the money is back with alice, conserved.
func concurrentFullRefunds(t *testing.T, c *cluster.Cluster, payers, payees []*cluster.User, rounds int) {
	t.Helper()
	before := audit(t, c)
	for round := range rounds {
		paid, err := pay(ctxT(t, 20*time.Second), payers[round%len(payers)], newID(), "bank1-1001", "bank2-2002", 1000)
		if err != nil || paid.GetPayment().GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
			t.Fatalf("round %d: payment %v, %v", round, paid, err)
		}
		id := paid.GetPayment().GetPaymentId()
		var wg sync.WaitGroup
		outs := make([]*gatewayv1.RefundPaymentResponse, 2)
		errs := make([]error, 2)
		start := make(chan struct{})
		for i := range 2 {
			wg.Go(func() {
				<-start
				// One asks for 10.00, the other for what is left: both are the whole payment.
				outs[i], errs[i] = refund(ctxT(t, 30*time.Second), payees[i%len(payees)], newID(), id, int64(1000*(1-i)))
			})
		}
		close(start)
		wg.Wait()
		succeeded := 0
		for i := range 2 {
			switch {
			case errs[i] == nil && outs[i].GetRefund().GetStatus() == gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED:
				succeeded++
				if outs[i].GetRefund().GetAmount() != 1000 || outs[i].GetPayment().GetRefundedAmount() != 1000 {
					t.Errorf("round %d: the refund that succeeded: %v", round, outs[i])
				}
			case connect.CodeOf(errs[i]) == connect.CodeFailedPrecondition && rpcerr.Reason(errs[i]) == "refund_exceeds_payment":
			default:
				t.Errorf("round %d: refund %d answered %v, %v", round, i, outs[i], errs[i])
			}
		}
		if succeeded != 1 {
			t.Fatalf("round %d: %d of two full refunds of %s succeeded, want exactly 1", round, succeeded, id)
		}
		for _, u := range payees {
			got, err := u.Payments.GetPayment(ctxT(t, 10*time.Second), connect.NewRequest(&gatewayv1.GetPaymentRequest{PaymentId: id}))
			if err != nil || got.Msg.GetPayment().GetRefundedAmount() != 1000 {
				t.Fatalf("round %d: GetPayment of %s by the payee: %v, %v; want refunded_amount 1000", round, id, got, err)
			}
		}
	}
	after := checkSettled(t, c, before, 30*time.Second)
	if d := delta(before, after); len(d) != 0 {
		t.Errorf("each payment was refunded in full once, yet balances moved by %v", d)
	}
}

// refundsEndToEnd is TestPaymentsEndToEnd's refunds, on its cluster (one gateway).
func refundsEndToEnd(t *testing.T, c *cluster.Cluster) {
	alice, bob := login(t, c, "alice"), login(t, c, "bob")
	t.Run("concurrent full refunds", func(t *testing.T) {
		concurrentFullRefunds(t, c, []*cluster.User{alice}, []*cluster.User{bob, bob}, 5)
	})
	t.Run("refund CLI", func(t *testing.T) {
		before := audit(t, c)
		paid, err := pay(ctxT(t, 20*time.Second), alice, newID(), "bank1-1001", "bank2-2002", 2000)
		if err != nil {
			t.Fatal(err)
		}
		id := paid.GetPayment().GetPaymentId()
		u := newCLIUser(t, c)
		u.login("bob")

		out := u.must(0, "refund", id, "--amount", "5.00", "--reason", "damaged")
		for _, want := range []string{"refund succeeded", "bank2-2002 -> bank1-1001  5.00 USD  refund of " + id,
			"payment " + id + "  20.00 USD  refunded 5.00  left 15.00"} {
			if !strings.Contains(out, want) {
				t.Errorf("paygate refund: output lacks %q:\n%s", want, out)
			}
		}
		// More than is left: refused, exit 3, saying what is left.
		out, _, code := u.run("refund", id, "--amount", "20.00")
		if code != exitPaymentFailed || !strings.Contains(out, "refund_exceeds_payment") || !strings.Contains(out, "15.00 USD of 20.00 USD left") {
			t.Errorf("refund of more than is left: exit %d, output:\n%s", code, out)
		}
		// Someone else's payment looks missing.
		carol := newCLIUser(t, c)
		carol.login("carol")
		out, _, code = carol.run("refund", id)
		if code != exitPaymentFailed || !strings.Contains(out, "payment_not_found") {
			t.Errorf("refund of someone else's payment: exit %d, output:\n%s", code, out)
		}
		// The rest, as JSON; then the same refund id again is a replay.
		var r refundJSON
		lastJSON(t, u.must(0, "refund", id, "--json"), &r)
		if r.Status != "succeeded" || r.Refund == nil || r.Refund.Amount != 1500 || r.Refund.RefundOf != id ||
			r.Payment == nil || r.Payment.RefundedAmount != 2000 {
			t.Fatalf("refund of what is left: %+v", r)
		}
		lastJSON(t, u.must(0, "refund", id, "--refund-id", r.RefundID, "--json"), &r)
		if !r.Replayed || r.Status != "succeeded" {
			t.Errorf("refund with the same --refund-id: %+v, want the replayed outcome", r)
		}
		// Histories mark the refund, and what was refunded of the payment.
		if out := u.must(0, "history"); !strings.Contains(out, "refund of "+id) {
			t.Errorf("bob's history does not mark the refunds of %s:\n%s", id, out)
		}
		payer := newCLIUser(t, c)
		payer.login("alice")
		if out := payer.must(0, "history"); !strings.Contains(out, id+"  bank1-1001 -> bank2-2002  20.00 USD  refunded 20.00") {
			t.Errorf("alice's history does not show %s refunded:\n%s", id, out)
		}
		// What was paid to each, to pick one to refund: bob received the payment, refunded in
		// full, and not the refunds he made; alice received those refunds.
		recv := u.must(0, "history", "--received")
		if !strings.Contains(recv, id+"  bank1-1001 -> bank2-2002  20.00 USD  refunded 20.00") || strings.Contains(recv, "refund of "+id) {
			t.Errorf("bob's history --received does not list %s refunded, or lists his refunds:\n%s", id, recv)
		}
		if recv := payer.must(0, "history", "--received", "--status", "succeeded"); strings.Count(recv, "bank2-2002 -> bank1-1001") < 2 ||
			!strings.Contains(recv, "5.00 USD  refund of "+id) || !strings.Contains(recv, "15.00 USD  refund of "+id) {
			t.Errorf("alice's history --received does not list bob's two refunds of %s:\n%s", id, recv)
		}
		var page struct {
			Payments      []paymentJSON `json:"payments"`
			NextPageToken string        `json:"next_page_token"`
		}
		lastJSON(t, u.must(0, "history", "--received", "--page-size", "1", "--json"), &page)
		if len(page.Payments) != 1 || page.Payments[0].PaymentID != id || page.NextPageToken == "" {
			t.Fatalf("bob's first received page of one: %+v, want %s and a next page", page, id)
		}
		if out := u.must(0, "history", "--received", "--page-size", "1"); !strings.Contains(out, "next page: paygate history --page-size 1 --received --page-token ") {
			t.Errorf("history --received does not end with the command for its next page:\n%s", out)
		}
		// A received page's token fetches no page of bob's own payments.
		if _, errOut, code := u.run("history", "--page-token", page.NextPageToken); code == 0 || !strings.Contains(errOut, "not a token from the previous page of this listing") {
			t.Errorf("history with a --received token: exit %d, %s; want the token refused", code, errOut)
		}
		if _, errOut, code := u.run("refund"); code != exitUsage || !strings.Contains(errOut, "PAYMENT_ID") {
			t.Errorf("refund without a payment id: exit %d, %s; want a usage error", code, errOut)
		}
		after := checkSettled(t, c, before, 30*time.Second)
		if d := delta(before, after); len(d) != 0 {
			t.Errorf("a payment refunded in full moved balances by %v", d)
		}
	})
}

// TestRefundCrash kills the gateway (SIGKILL, at a crash point reached by the refund, the
// second payment it runs) and restarts it: the refund ends decided, once, and the retry with
// the same refund_id answers that outcome; the payment's refunded_amount agrees, a lost
// admission leaves no reservation behind (a full refund still succeeds), and money is
// conserved, the refund committed at both banks or neither.
func TestRefundCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real processes")
	}
	const amount = 500
	cases := []struct {
		point string
		want  gatewayv1.PaymentStatus
		lost  bool // the refund's admission was never durable (banks prepared: presumed abort)
	}{
		{crashpoint.GatewayAfterAdmit, gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED, false},
		{crashpoint.GatewayAfterDecision, gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED, false},
		{crashpoint.GatewayVotesBeforeAdmit, gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED, true},
	}
	for _, tc := range cases {
		t.Run(tc.point, func(t *testing.T) {
			t.Parallel()
			resolveAfter := time.Hour
			if tc.lost {
				resolveAfter = time.Second
			}
			c := cluster.New(t, cluster.Options{
				Banks:        []string{"bank1", "bank2"},
				Users:        twoBankUsers,
				Tags:         []string{"crashpoints"},
				TxnTimeout:   crashTxnTimeout,
				ResolveAfter: resolveAfter,
				Env:          map[string][]string{"gateway": {"PAYGATE_CRASH_AT=" + tc.point + "@2"}},
			})
			alice, bob := login(t, c, "alice"), login(t, c, "bob")
			start := audit(t, c)
			paid, err := pay(ctxT(t, 20*time.Second), alice, newID(), "bank1-1001", "bank2-2002", amount)
			if err != nil || paid.GetPayment().GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
				t.Fatalf("payment: %v, %v", paid, err)
			}
			id := paid.GetPayment().GetPaymentId()
			before := checkSettled(t, c, start, 10*time.Second) // the payment applied
			rid := newID()
			first, firstErr := refund(ctxT(t, 20*time.Second), bob, rid, id, 0)
			if !c.Proc("gateway").Wait(15 * time.Second) {
				t.Fatalf("the gateway did not die at %s (answer %v, %v)", tc.point, first, firstErr)
			}
			c.StartGateway()
			bob = login(t, c, "bob")
			if tc.lost {
				if _, err := c.WaitSettled(2*crashTxnTimeout + 10*time.Second); err != nil {
					t.Fatalf("the banks did not resolve their prepares: %v", err)
				}
			}
			// Retry with the same refund_id until decided.
			var final *gatewayv1.RefundPaymentResponse
			deadline := time.Now().Add(2*crashTxnTimeout + 10*time.Second)
			for final == nil && time.Now().Before(deadline) {
				out, err := refund(ctxT(t, 10*time.Second), bob, rid, id, 0)
				switch {
				case err != nil && connect.CodeOf(err) == connect.CodeUnknown:
					t.Fatalf("retry answered UNKNOWN: %v", err)
				case err == nil && out.GetRefund().GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_PROCESSING:
					final = out
				default:
					time.Sleep(100 * time.Millisecond)
				}
			}
			if final == nil {
				t.Fatalf("refund %s undecided after the restart", rid)
			}
			got := final.GetRefund()
			if got.GetStatus() != tc.want || !final.GetReplayed() || got.GetRefundOf() != id {
				t.Fatalf("refund after the crash: %v (replayed %v), want %v replayed", got, final.GetReplayed(), tc.want)
			}
			if firstErr == nil && first.GetRefund().GetStatus() != got.GetStatus() {
				t.Errorf("the client was told %v, the refund ended %v", first.GetRefund().GetStatus(), got.GetStatus())
			}
			wantRefunded := int64(0)
			if tc.want == gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
				wantRefunded = amount
			}
			if final.GetPayment().GetRefundedAmount() != wantRefunded {
				t.Errorf("payment refunded_amount %d, want %d", final.GetPayment().GetRefundedAmount(), wantRefunded)
			}
			after := checkSettled(t, c, before, 2*crashTxnTimeout+10*time.Second)
			checkAtomic(t, c, got, before, after)
			if tc.lost {
				// The lost admission's reservation went with it: the whole payment can still be
				// refunded.
				again, err := refund(ctxT(t, 20*time.Second), bob, newID(), id, 0)
				if err != nil || again.GetRefund().GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED || again.GetRefund().GetAmount() != amount {
					t.Fatalf("full refund after the lost one: %v, %v", again, err)
				}
				checkSettled(t, c, before, 10*time.Second)
			}
			if _, err := refund(ctxT(t, 10*time.Second), bob, newID(), id, 1); rpcerr.Reason(err) != "refund_exceeds_payment" {
				t.Errorf("refund once the payment is refunded in full: %v, want refund_exceeds_payment", err)
			}
		})
	}
}
