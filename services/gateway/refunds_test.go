package gateway

import (
	"context"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
)

// refund asks for a refund of amount (0: what is left) of paymentID with refund id rid.
func (c *clients) refund(ctx context.Context, rid, paymentID string, amount int64) (*gatewayv1.RefundPaymentResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	resp, err := c.payments.RefundPayment(ctx, connect.NewRequest(&gatewayv1.RefundPaymentRequest{
		RefundId: rid, PaymentId: paymentID, Amount: amount, Reason: "returned",
	}))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// mustRefund is refund that fails the test on an error.
func (c *clients) mustRefund(t testing.TB, rid, paymentID string, amount int64) *gatewayv1.RefundPaymentResponse {
	t.Helper()
	out, err := c.refund(context.Background(), rid, paymentID, amount)
	if err != nil {
		t.Fatalf("refund %d of %s: %v", amount, paymentID, err)
	}
	return out
}

// TestRefundPayment: partial, full and "what is left" refunds by the payee; the refusals
// (over the cap, nothing left, not the payee, someone else's or no payment, a failed payment,
// a refund), idempotent replays and reused refund ids; money conserved.
func TestRefundPayment(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			alice := e.login(t, p, "alice", "alice-pass-123")
			bob := e.login(t, p, "bob", "bob-pass-456")
			carol := e.login(t, p, "carol", "carol-pass-789")
			paid := alice.pay(t, newPaymentID(), "bank1-1001", "bank2-2002", 10000)
			id := paid.GetPaymentId()

			// A partial refund moves 30.00 back, and the payment shows it.
			r1 := newPaymentID()
			out := bob.mustRefund(t, r1, id, 3000)
			ref, pay := out.GetRefund(), out.GetPayment()
			if ref.GetPaymentId() != r1 || ref.GetRefundOf() != id || ref.GetStatus() != statusSucceeded ||
				ref.GetAmount() != 3000 || ref.GetFromAccount() != "bank2-2002" || ref.GetToAccount() != "bank1-1001" ||
				ref.GetUsername() != "bob" || ref.GetDescription() != "returned" || out.GetReplayed() {
				t.Fatalf("refund = %v", out)
			}
			if pay.GetPaymentId() != id || pay.GetRefundedAmount() != 3000 || pay.GetUsername() != "" || pay.GetRefundOf() != "" {
				t.Fatalf("refunded payment = %v, want refunded_amount 3000 and no username (the payee sees it)", pay)
			}

			// More than is left: refused, with what is left in the message.
			_, err := bob.refund(ctx, newPaymentID(), id, 8000)
			wantErr(t, err, connect.CodeFailedPrecondition, "refund_exceeds_payment")
			if !strings.Contains(err.Error(), "70.00") {
				t.Errorf("refusal %q does not say that 70.00 is left", err)
			}

			// The same refund again: its stored outcome; with other parameters, or a payment's
			// id as refund_id: reused.
			again := bob.mustRefund(t, r1, id, 3000)
			if !again.GetReplayed() || again.GetRefund().GetPaymentId() != r1 || again.GetRefund().GetStatus() != statusSucceeded ||
				again.GetPayment().GetRefundedAmount() != 3000 {
				t.Fatalf("replay = %v", again)
			}
			_, err = bob.refund(ctx, r1, id, 2000)
			wantErr(t, err, connect.CodeAlreadyExists, "refund_id_reused")
			_, err = bob.refund(ctx, id, id, 1000)
			wantErr(t, err, connect.CodeAlreadyExists, "refund_id_reused")
			_, err = alice.tryPay(ctx, r1, "bank1-1001", "bank2-2002", 3000)
			wantErr(t, err, connect.CodeAlreadyExists, "payment_id_reused")

			// Who may refund: the payer is told it is not the payee; anyone else, like a
			// missing payment, finds none.
			_, err = alice.refund(ctx, newPaymentID(), id, 100)
			wantErr(t, err, connect.CodePermissionDenied, "not_payee")
			_, errOther := carol.refund(ctx, newPaymentID(), id, 100)
			wantErr(t, errOther, connect.CodeNotFound, "payment_not_found")
			_, errMissing := carol.refund(ctx, newPaymentID(), newPaymentID(), 100)
			wantErr(t, errMissing, connect.CodeNotFound, "payment_not_found")

			// A refund cannot be refunded (alice is its payee).
			_, err = alice.refund(ctx, newPaymentID(), r1, 100)
			wantErr(t, err, connect.CodeFailedPrecondition, "refund_of_refund")

			// Amount 0: all that is left; then nothing is left.
			rest := bob.mustRefund(t, newPaymentID(), id, 0)
			if rest.GetRefund().GetAmount() != 7000 || rest.GetRefund().GetStatus() != statusSucceeded ||
				rest.GetPayment().GetRefundedAmount() != 10000 {
				t.Fatalf("refund of what is left = %v", rest)
			}
			_, err = bob.refund(ctx, newPaymentID(), id, 0)
			wantErr(t, err, connect.CodeFailedPrecondition, "refund_exceeds_payment")
			_, err = bob.refund(ctx, newPaymentID(), id, 1)
			wantErr(t, err, connect.CodeFailedPrecondition, "refund_exceeds_payment")

			// A failed payment cannot be refunded.
			failed := alice.pay(t, newPaymentID(), "bank2-2001", "bank2-2002", 99_999_99)
			if failed.GetStatus() != statusFailed {
				t.Fatalf("payment beyond the balance = %v", failed)
			}
			_, err = bob.refund(ctx, newPaymentID(), failed.GetPaymentId(), 100)
			wantErr(t, err, connect.CodeFailedPrecondition, "payment_not_succeeded")

			// Both sides see the refunds: the payer's GetPayment, and the events.
			resp, err := alice.payments.GetPayment(ctx, connect.NewRequest(&gatewayv1.GetPaymentRequest{PaymentId: id}))
			if err != nil || resp.Msg.GetPayment().GetRefundedAmount() != 10000 || resp.Msg.GetPayment().GetUsername() != "alice" {
				t.Fatalf("GetPayment by the payer = %v, %v", resp, err)
			}
			resp, err = alice.payments.GetPayment(ctx, connect.NewRequest(&gatewayv1.GetPaymentRequest{PaymentId: r1}))
			if err != nil || resp.Msg.GetPayment().GetRefundOf() != id || resp.Msg.GetPayment().GetUsername() != "" {
				t.Fatalf("GetPayment of the refund by its payee = %v, %v", resp, err)
			}
			var types []string
			for _, ev := range listAllEvents(t, alice, 0, 0) {
				switch ev.GetPayment().GetPaymentId() {
				case id, r1:
					types = append(types, ev.GetType())
					if ev.GetType() == "payment.refunded" && ev.GetPayment().GetRefundedAmount() == 0 {
						t.Errorf("payment.refunded event without refunded_amount: %v", ev)
					}
					if strings.HasPrefix(ev.GetType(), "refund.") && ev.GetPayment().GetRefundOf() != id {
						t.Errorf("refund event without refund_of: %v", ev)
					}
				}
			}
			want := "payment.created payment.succeeded refund.created refund.succeeded payment.refunded payment.refunded"
			if got := strings.Join(types, " "); got != want {
				t.Errorf("alice's events of the payment and its first refund: %s; want %s", got, want)
			}
			e.assertSettled(t)
		})
	}
}

// TestRefundPayeeCannotAfford: a refund the payee's account cannot cover is admitted and fails
// with the bank's reason, moving nothing and giving its reservation back: a later refund of the
// whole payment succeeds.
func TestRefundPayeeCannotAfford(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	p := protocols[0]
	alice := e.login(t, p, "alice", "alice-pass-123")
	dave := e.login(t, p, "dave", "dave-pass-000")
	carol := e.login(t, p, "carol", "carol-pass-789")
	paid := alice.pay(t, newPaymentID(), "bank1-1001", "bank1-1003", 5000) // dave: 75.25 + 50.00
	dave.pay(t, newPaymentID(), "bank1-1003", "bank1-1002", 12000)         // dave: 5.25
	before := e.balance(t, "bank1-1001")

	out := dave.mustRefund(t, newPaymentID(), paid.GetPaymentId(), 0)
	ref := out.GetRefund()
	if ref.GetStatus() != statusFailed || ref.GetFailureReason() != gatewayv1.FailureReason_FAILURE_REASON_INSUFFICIENT_FUNDS ||
		ref.GetAmount() != 5000 || out.GetPayment().GetRefundedAmount() != 0 {
		t.Fatalf("refund the payee cannot afford = %v", out)
	}
	if got := e.balance(t, "bank1-1001"); got != before {
		t.Fatalf("failed refund moved money: payer's balance %d, was %d", got, before)
	}
	refunded, reserved := rfState(t, e.gw.store, paid.GetPaymentId())
	if refunded != 0 || reserved != 0 {
		t.Fatalf("after a failed refund: refunded %d, reserved %d; want 0, 0", refunded, reserved)
	}

	carol.pay(t, newPaymentID(), "bank1-1002", "bank1-1003", 10000) // dave: 105.25
	out = dave.mustRefund(t, newPaymentID(), paid.GetPaymentId(), 0)
	if out.GetRefund().GetStatus() != statusSucceeded || out.GetRefund().GetAmount() != 5000 || out.GetPayment().GetRefundedAmount() != 5000 {
		t.Fatalf("refund once the payee can afford it = %v", out)
	}
	if got := e.balance(t, "bank1-1001"); got != before+5000 {
		t.Fatalf("payer's balance %d, want %d", got, before+5000)
	}
	e.assertSettled(t)
}
