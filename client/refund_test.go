package client_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/paygate/paygate/client"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/internal/rpcerr"
	"github.com/paygate/paygate/internal/rpcserver"
)

// RefundPayment of the fake replica: a refund is recorded once per refund_id in the shared
// state (as ExecutePayment records payments), then afterApply runs; a refund of more than 100.00
// is refused as more than is left.
func (r *replica) RefundPayment(_ context.Context, req *connect.Request[gatewayv1.RefundPaymentRequest]) (*connect.Response[gatewayv1.RefundPaymentResponse], error) {
	m := req.Msg
	r.mu.Lock()
	r.attempts = append(r.attempts, req.Header().Get(rpcserver.AttemptHeader))
	after := r.afterApply
	r.mu.Unlock()
	if m.GetAmount() > 10000 {
		return nil, rpcerr.New(connect.CodeFailedPrecondition, "refund_exceeds_payment", "amount: only 100.00 is left")
	}
	parent := &gatewayv1.Payment{PaymentId: m.GetPaymentId(), Amount: 10000, Currency: "USD",
		Status: gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED, RefundedAmount: m.GetAmount()}
	r.sh.mu.Lock()
	if p, ok := r.sh.applied[m.GetRefundId()]; ok {
		r.sh.mu.Unlock()
		return connect.NewResponse(&gatewayv1.RefundPaymentResponse{Refund: p, Payment: parent, Replayed: true}), nil
	}
	p := &gatewayv1.Payment{PaymentId: m.GetRefundId(), RefundOf: m.GetPaymentId(), Amount: m.GetAmount(), Currency: "USD",
		Status: gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED, CreateTime: timestamppb.Now(), DecideTime: timestamppb.Now()}
	r.sh.applied[m.GetRefundId()] = p
	r.sh.applies[m.GetRefundId()]++
	r.sh.mu.Unlock()
	if after != nil {
		after()
	}
	return connect.NewResponse(&gatewayv1.RefundPaymentResponse{Refund: p, Payment: parent}), nil
}

// The replica that takes a refund dies after recording it, before answering: the client sends
// the same refund_id to the next replica, which answers with the stored outcome. A refusal is
// a failed result, sent once; a malformed request is not sent at all.
func TestRefundRetriesWithTheSameID(t *testing.T) {
	t.Parallel()
	sh := newShared()
	a, b := newReplica(t, "a", sh), newReplica(t, "b", sh)
	a.afterApply = a.kill
	c := newFailoverClient(t, addrsOf(a, b))
	ctx := testCtx(t, 20*time.Second)
	if _, err := c.Refund(ctx, client.RefundRequest{PaymentID: "01J0000000000000000000000A", Amount: 100}); !errors.Is(err, client.ErrNotLoggedIn) {
		t.Fatalf("Refund before Login: %v, want ErrNotLoggedIn", err)
	}
	if _, err := c.Login(ctx, "alice", "right"); err != nil {
		t.Fatal(err)
	}
	paymentID := client.NewPaymentID()
	r, err := c.Refund(ctx, client.RefundRequest{PaymentID: paymentID, Amount: 2500, Reason: "damaged"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != client.StatusSucceeded || !r.Replayed || r.Attempts != 2 || r.Refund.GetRefundOf() != paymentID ||
		r.Payment.GetRefundedAmount() != 2500 || r.ID == "" {
		t.Fatalf("Refund = %+v; want succeeded, replayed by the second replica, after 2 attempts", r)
	}
	if n := sh.appliesOf(r.ID); n != 1 {
		t.Fatalf("refund applied %d times, want 1", n)
	}
	b.mu.Lock()
	atB := slices.Clone(b.attempts)
	b.mu.Unlock()
	if !slices.Equal(atB, []string{"2"}) {
		t.Fatalf("Paygate-Attempt headers at b: %v; want [2]", atB)
	}

	refused, err := c.Refund(ctx, client.RefundRequest{PaymentID: paymentID, Amount: 20000})
	if err != nil || refused.Status != client.StatusFailed || refused.Reason != "refund_exceeds_payment" ||
		refused.Attempts != 1 || refused.Refund != nil {
		t.Fatalf("refused Refund = %+v, %v; want failed refund_exceeds_payment after 1 attempt", refused, err)
	}
	for _, bad := range []client.RefundRequest{{PaymentID: ""}, {PaymentID: paymentID, Amount: -1}, {ID: "nope", PaymentID: paymentID}} {
		if _, err := c.Refund(ctx, bad); !errors.Is(err, client.ErrInvalidPayment) {
			t.Errorf("Refund(%+v) = %v, want ErrInvalidPayment", bad, err)
		}
	}
}
