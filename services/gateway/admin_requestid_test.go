package gateway

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/paygate/paygate/gen/paygate/bank/v1/bankv1connect"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
	"github.com/paygate/paygate/internal/rpcserver"
)

// TestAuditRequestIDIsTheAnswers: the audit entry of an admin call records the request id its
// answer carries, whether the caller sent none, a malformed one, or the call failed or was
// refused.
func TestAuditRequestIDIsTheAnswers(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, envOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	root := e.admin(t, "root")
	lastAudit := func(t *testing.T, action, want string) {
		t.Helper()
		log := e.auditLog(t)
		last := log[len(log)-1]
		if last.Action != action {
			t.Fatalf("last audit entry %+v; want %s", last, action)
		}
		if !rpcserver.ValidRequestID(want) || last.RequestID != want {
			t.Fatalf("audit entry's request id %q; the answer's is %q", last.RequestID, want)
		}
	}
	errID := func(t *testing.T, err error) string {
		t.Helper()
		var ce *connect.Error
		if !errors.As(err, &ce) {
			t.Fatalf("%v is not a Connect error", err)
		}
		return ce.Meta().Get(RequestIDHeader)
	}

	for _, sent := range []string{"", "not a valid id!"} {
		req := connect.NewRequest(&gatewayv1.GetUserRequest{Username: "bob"})
		if sent != "" {
			req.Header().Set(RequestIDHeader, sent)
		}
		res, err := root.admin.GetUser(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		id := res.Header().Get(RequestIDHeader)
		if id == sent {
			t.Fatalf("request id %q sent, kept", sent)
		}
		lastAudit(t, "GetUser", id)
	}

	// A failed admin call.
	_, err := root.admin.GetUser(ctx, connect.NewRequest(&gatewayv1.GetUserRequest{Username: "nobody-here"}))
	if err == nil {
		t.Fatal("GetUser of an unknown user succeeded")
	}
	lastAudit(t, "GetUser", errID(t, err))

	// A refused admin call (no token).
	stranger := gatewayv1connect.NewAdminServiceClient(adminHTTPClient(t, "root"), e.url)
	_, err = stranger.ListUsers(ctx, connect.NewRequest(&gatewayv1.ListUsersRequest{}))
	wantErr(t, err, connect.CodeUnauthenticated, "missing_token")
	lastAudit(t, "ListUsers", errID(t, err))
}

// TestPaymentRequestIDReachesBanks: the gateway's calls to the banks for a payment forward the
// payment call's request id, so the banks' log lines of the payment carry it.
func TestPaymentRequestIDReachesBanks(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, envOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	alice := e.customer(t, "alice")
	req := connect.NewRequest(&gatewayv1.ExecutePaymentRequest{
		PaymentId: newPaymentID(), FromAccount: "bank1-1001", ToAccount: "bank2-2001", Amount: 5, Currency: "USD"})
	req.Header().Set(RequestIDHeader, "pay-call-77")
	res, err := alice.payments.ExecutePayment(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Header().Get(RequestIDHeader); got != "pay-call-77" {
		t.Fatalf("payment's request id %q, want pay-call-77", got)
	}
	for _, bank := range []string{"bank1", "bank2"} {
		found := false
		for line := range strings.Lines(e.logs.String()) {
			if strings.Contains(line, "server="+bank+" ") && strings.Contains(line, "procedure="+bankv1connect.BankServicePrepareTransactionProcedure+" ") {
				if !strings.Contains(line, "request_id=pay-call-77 ") {
					t.Fatalf("%s's prepare was logged without the payment's request id: %s", bank, line)
				}
				found = true
			}
		}
		if !found {
			t.Fatalf("no prepare logged by %s", bank)
		}
	}
}
