package rpcserver_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	"github.com/paygate/paygate/gen/paygate/bank/v1/bankv1connect"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
	"github.com/paygate/paygate/internal/rpcserver"
)

// errorInfoRequestID returns the "request_id" metadata of err's ErrorInfo.
func errorInfoRequestID(t *testing.T, err error) string {
	t.Helper()
	var ce *connect.Error
	if !errors.As(err, &ce) {
		t.Fatalf("%v is not a Connect error", err)
	}
	for _, d := range ce.Details() {
		if v, verr := d.Value(); verr == nil {
			if info, ok := v.(*errdetails.ErrorInfo); ok {
				return info.GetMetadata()[rpcserver.RequestIDMetadataKey]
			}
		}
	}
	t.Fatalf("%v has no ErrorInfo", err)
	return ""
}

// TestRequestID: every answer, success or error, over both protocols, carries the call's
// request id in its header; an error's ErrorInfo and the call's log line carry the same id; a
// well-formed id sent by the caller is kept, a malformed one replaced.
func TestRequestID(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	ts := startServer(t, p, serverOptions{})
	for _, proto := range protocols {
		t.Run(proto.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			gw := bankv1connect.NewBankServiceClient(httpClient(t, p.clientTLS(t, gatewayID)), ts.url, proto.opts...)
			cli := bankv1connect.NewBankServiceClient(httpClient(t, p.clientTLS(t, cliID)), ts.url, proto.opts...)
			for _, tc := range []struct {
				name, sent string
				kept       bool
			}{
				{"none", "", false},
				{"kept", "op-" + proto.name + ":ticket_42.a", true},
				{"longest", proto.name + strings.Repeat("x", 64-len(proto.name)), true},
				{"too long", proto.name + strings.Repeat("x", 65-len(proto.name)), false},
				{"bad character", proto.name + " ticket/42", false},
			} {
				t.Run(tc.name, func(t *testing.T) {
					check := func(got, what string) {
						t.Helper()
						if !rpcserver.ValidRequestID(got) {
							t.Fatalf("%s: request id %q is not well formed", what, got)
						}
						if kept := got == tc.sent; kept != tc.kept {
							t.Fatalf("%s: request id %q for %q sent; kept %v, want %v", what, got, tc.sent, kept, tc.kept)
						}
					}
					// Success.
					txn := "t-rid-" + proto.name + "-" + strings.ReplaceAll(tc.name, " ", "-")
					req := prepareRequest(txn)
					if tc.sent != "" {
						req.Header().Set(rpcserver.RequestIDHeader, tc.sent)
					}
					res, err := gw.PrepareTransaction(ctx, req)
					if err != nil {
						t.Fatal(err)
					}
					if ids := res.Header().Values(rpcserver.RequestIDHeader); len(ids) != 1 {
						t.Fatalf("request ids %q; want one", ids)
					}
					id := res.Header().Get(rpcserver.RequestIDHeader)
					check(id, "success")
					if rec := ts.logs.callRecord(t, bankv1connect.BankServicePrepareTransactionProcedure, "transaction_id", txn); rec["request_id"] != id {
						t.Fatalf("log line request_id %v; the answer's is %q", rec["request_id"], id)
					}

					// An error (the policy refuses a client's prepare).
					req = prepareRequest(txn + "-denied")
					if tc.sent != "" {
						req.Header().Set(rpcserver.RequestIDHeader, tc.sent)
					}
					_, err = cli.PrepareTransaction(ctx, req)
					if connect.CodeOf(err) != connect.CodePermissionDenied {
						t.Fatalf("client's prepare: %v, want PermissionDenied", err)
					}
					var ce *connect.Error
					errors.As(err, &ce)
					if ids := ce.Meta().Values(rpcserver.RequestIDHeader); len(ids) != 1 {
						t.Fatalf("error's request ids %q; want one", ids)
					}
					id = ce.Meta().Get(rpcserver.RequestIDHeader)
					check(id, "error")
					if got := errorInfoRequestID(t, err); got != id {
						t.Fatalf("ErrorInfo request_id %q; the answer's header is %q", got, id)
					}
					if rec := ts.logs.callRecord(t, bankv1connect.BankServicePrepareTransactionProcedure, "transaction_id", txn+"-denied"); rec["request_id"] != id {
						t.Fatalf("log line request_id %v; the answer's is %q", rec["request_id"], id)
					}
				})
			}
		})
	}
}

// TestRequestIDOnStreams: a stream's answer carries the request id, on success and on error.
func TestRequestIDOnStreams(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	ts := startServer(t, p, serverOptions{})
	for _, proto := range protocols {
		t.Run(proto.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			c := gatewayv1connect.NewPaymentServiceClient(httpClient(t, p.clientTLS(t, cliID)), ts.url, proto.opts...)

			req := withToken(connect.NewRequest(&gatewayv1.WatchPaymentsRequest{}), goodToken)
			req.Header().Set(rpcserver.RequestIDHeader, "watch-"+proto.name)
			stream, err := c.WatchPayments(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			for stream.Receive() {
			}
			if err := stream.Err(); err != nil {
				t.Fatal(err)
			}
			if got := stream.ResponseHeader().Get(rpcserver.RequestIDHeader); got != "watch-"+proto.name {
				t.Fatalf("stream's request id %q, want watch-%s", got, proto.name)
			}

			req = connect.NewRequest(&gatewayv1.WatchPaymentsRequest{}) // no token
			req.Header().Set(rpcserver.RequestIDHeader, "watch-denied-"+proto.name)
			stream, err = c.WatchPayments(ctx, req)
			if err == nil {
				for stream.Receive() {
				}
				err = stream.Err()
			}
			var ce *connect.Error
			if !errors.As(err, &ce) || ce.Code() != connect.CodeUnauthenticated {
				t.Fatalf("without a token: %v, want Unauthenticated", err)
			}
			if got := ce.Meta().Get(rpcserver.RequestIDHeader); got != "watch-denied-"+proto.name {
				t.Fatalf("refused stream's request id %q, want watch-denied-%s", got, proto.name)
			}
			if got := errorInfoRequestID(t, err); got != "watch-denied-"+proto.name {
				t.Fatalf("refused stream's ErrorInfo request_id %q", got)
			}
		})
	}
}

// TestRequestIDForwarded: a client built with ClientOptions forwards the request id of the
// context it calls in, unless the request has its own.
func TestRequestIDForwarded(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	ts := startServer(t, p, serverOptions{})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	gw := bankv1connect.NewBankServiceClient(httpClient(t, p.clientTLS(t, gatewayID)), ts.url, rpcserver.ClientOptions()...)

	res, err := gw.PrepareTransaction(rpcserver.WithRequestID(ctx, "payment-call-7"), prepareRequest("t-fwd"))
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Header().Get(rpcserver.RequestIDHeader); got != "payment-call-7" {
		t.Fatalf("answer's request id %q, want the forwarded payment-call-7", got)
	}
	if rec := ts.logs.callRecord(t, bankv1connect.BankServicePrepareTransactionProcedure, "transaction_id", "t-fwd"); rec["request_id"] != "payment-call-7" {
		t.Fatalf("bank's log line request_id %v, want payment-call-7", rec["request_id"])
	}

	req := prepareRequest("t-own")
	req.Header().Set(rpcserver.RequestIDHeader, "own-id")
	res, err = gw.PrepareTransaction(rpcserver.WithRequestID(ctx, "payment-call-8"), req)
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Header().Get(rpcserver.RequestIDHeader); got != "own-id" {
		t.Fatalf("answer's request id %q, want the request's own-id", got)
	}

	// Outside a call nothing is forwarded: the server picks an id.
	acc, err := gw.GetAccount(ctx, connect.NewRequest(&bankv1.GetAccountRequest{AccountId: "acc-1"}))
	if err != nil {
		t.Fatal(err)
	}
	if got := acc.Header().Get(rpcserver.RequestIDHeader); !rpcserver.ValidRequestID(got) {
		t.Fatalf("answer's request id %q is not well formed", got)
	}
}

func TestValidRequestID(t *testing.T) {
	t.Parallel()
	for id, want := range map[string]bool{
		"":                             false,
		"a":                            true,
		"op-ticket_42.b:c":             true,
		strings.Repeat("x", 64):        true,
		strings.Repeat("x", 65):        false,
		"with space":                   false,
		"slash/":                       false,
		"ünicode":                      false,
		"new\nline":                    false,
		rpcserver.NewRequestID():       true,
		"0190f3c4-7d1e-7a3b-9c2d-1e2f": true,
	} {
		if got := rpcserver.ValidRequestID(id); got != want {
			t.Errorf("ValidRequestID(%q) = %v, want %v", id, got, want)
		}
	}
}
