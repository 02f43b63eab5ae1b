package gateway

import (
	"context"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
)

// searchAll pages through a search with pages of size and returns the payment ids found, in
// order.
func searchAll(t testing.TB, s *session, q *gatewayv1.SearchPaymentsRequest, size int32) []string {
	t.Helper()
	var ids []string
	q = proto.CloneOf(q)
	q.PageSize = size
	for pages := 0; ; pages++ {
		if pages > 100 {
			t.Fatal("search does not end")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := s.admin.SearchPayments(ctx, connect.NewRequest(q))
		cancel()
		if err != nil {
			t.Fatalf("SearchPayments(%v): %v", q, err)
		}
		if size > 0 && len(resp.Msg.GetPayments()) > int(size) {
			t.Fatalf("page of %d payments, want at most %d", len(resp.Msg.GetPayments()), size)
		}
		for _, p := range resp.Msg.GetPayments() {
			ids = append(ids, p.GetPaymentId())
		}
		if resp.Msg.GetNextPageToken() == "" {
			return ids
		}
		q.PageToken = resp.Msg.GetNextPageToken()
	}
}

// TestSearchPayments: every user's payments, newest first, filtered by user, account, bank,
// status, failure reason and creation time, in pages whose tokens only work for the same
// filters.
func TestSearchPayments(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, envOptions{})
	alice, bob, root := e.customer(t, "alice"), e.customer(t, "bob"), e.admin(t, "root")
	type made struct {
		id     string
		status gatewayv1.PaymentStatus
	}
	var all []made // oldest first
	pay := func(c *session, from, to string, amount int64) string {
		p := c.pay(t, newPaymentID(), from, to, amount)
		all = append(all, made{p.GetPaymentId(), p.GetStatus()})
		return p.GetPaymentId()
	}
	a1 := pay(alice, "bank1-1001", "bank2-2002", 100)        // alice: bank1 → bank2
	a2 := pay(alice, "bank2-2001", "bank3-3001", 200)        // alice: bank2 → bank3
	b1 := pay(bob, "bank2-2002", "bank1-1001", 300)          // bob: bank2 → bank1
	mid := time.Now()                                        // between b1 and the next
	a3 := pay(alice, "bank1-1001", "bank3-3001", 10_000_000) // declined: insufficient funds
	b2 := pay(bob, "bank3-3001", "bank3-3002", 50)           // bob: within bank3
	if all[3].status != gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED {
		t.Fatalf("the payment above the balance: %v", all[3].status)
	}
	newest := func(ids ...string) []string { slices.Reverse(ids); return ids }

	for _, tc := range []struct {
		name string
		q    *gatewayv1.SearchPaymentsRequest
		want []string
	}{
		{"all", &gatewayv1.SearchPaymentsRequest{}, newest(a1, a2, b1, a3, b2)},
		{"user", &gatewayv1.SearchPaymentsRequest{Username: "alice"}, newest(a1, a2, a3)},
		{"account", &gatewayv1.SearchPaymentsRequest{AccountId: "bank1-1001"}, newest(a1, b1, a3)},
		{"bank", &gatewayv1.SearchPaymentsRequest{Bank: "bank3"}, newest(a2, a3, b2)},
		{"bank and user", &gatewayv1.SearchPaymentsRequest{Bank: "bank2", Username: "bob"}, newest(b1)},
		{"failed", &gatewayv1.SearchPaymentsRequest{Status: gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED}, newest(a3)},
		{"succeeded", &gatewayv1.SearchPaymentsRequest{Status: gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED}, newest(a1, a2, b1, b2)},
		{"processing", &gatewayv1.SearchPaymentsRequest{Status: gatewayv1.PaymentStatus_PAYMENT_STATUS_PROCESSING}, nil},
		{"failure reason", &gatewayv1.SearchPaymentsRequest{FailureReason: gatewayv1.FailureReason_FAILURE_REASON_INSUFFICIENT_FUNDS}, newest(a3)},
		{"other failure reason", &gatewayv1.SearchPaymentsRequest{FailureReason: gatewayv1.FailureReason_FAILURE_REASON_TIMEOUT}, nil},
		{"created after", &gatewayv1.SearchPaymentsRequest{CreatedAfter: timestamppb.New(mid)}, newest(a3, b2)},
		{"created before", &gatewayv1.SearchPaymentsRequest{CreatedBefore: timestamppb.New(mid)}, newest(a1, a2, b1)},
		{"unknown user", &gatewayv1.SearchPaymentsRequest{Username: "nobody"}, nil},
	} {
		for _, size := range []int32{0, 1, 2} {
			got := searchAll(t, root, tc.q, size)
			if !slices.Equal(got, tc.want) {
				t.Errorf("%s (pages of %d): %v, want %v", tc.name, size, got, tc.want)
			}
		}
	}

	// A page token works only with the filters it was made for.
	ctx := context.Background()
	resp, err := root.admin.SearchPayments(ctx, connect.NewRequest(&gatewayv1.SearchPaymentsRequest{Username: "alice", PageSize: 1}))
	if err != nil || resp.Msg.GetNextPageToken() == "" {
		t.Fatalf("first page: %v, %v", resp, err)
	}
	tok := resp.Msg.GetNextPageToken()
	for _, q := range []*gatewayv1.SearchPaymentsRequest{
		{Username: "bob", PageToken: tok},
		{PageToken: tok},
		{Username: "alice", Status: gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED, PageToken: tok},
		{Username: "alice", PageToken: "not-a-token"},
		{Username: "alice", PageToken: tok[:len(tok)-2]},
	} {
		_, err := root.admin.SearchPayments(ctx, connect.NewRequest(q))
		wantErr(t, err, connect.CodeInvalidArgument, "invalid_page_token")
	}
	if _, err := root.admin.SearchPayments(ctx, connect.NewRequest(&gatewayv1.SearchPaymentsRequest{Username: "alice", PageToken: tok, PageSize: 5})); err != nil {
		t.Fatalf("the token with its filters and another page size: %v", err)
	}
	// The range rule of the request is checked before anything.
	_, err = root.admin.SearchPayments(ctx, connect.NewRequest(&gatewayv1.SearchPaymentsRequest{
		CreatedAfter: timestamppb.New(mid), CreatedBefore: timestamppb.New(mid.Add(-time.Second))}))
	wantErr(t, err, connect.CodeInvalidArgument, "")
	// A customer cannot search.
	_, err = alice.admin.SearchPayments(ctx, connect.NewRequest(&gatewayv1.SearchPaymentsRequest{}))
	wantErr(t, err, connect.CodePermissionDenied, "")
	e.assertSettled(t)
}
