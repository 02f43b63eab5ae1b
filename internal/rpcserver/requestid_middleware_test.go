package rpcserver_test

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"connectrpc.com/connect"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	"github.com/paygate/paygate/gen/paygate/bank/v1/bankv1connect"
	"github.com/paygate/paygate/internal/rpcserver"
)

// TestRequestIDMiddleware: behind RequestIDMiddleware, every answer carries one request id: the
// RPCs' (on success and on error, in both protocols, the same id as their ErrorInfo and log
// line) and plain HTTP answers'.
func TestRequestIDMiddleware(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	logs := &lockedBuffer{}
	srv, err := rpcserver.New(rpcserver.Config{
		Name:   "bank1",
		Logger: slog.New(slog.NewJSONHandler(logs, nil)),
		Policy: rpcserver.Policy{bankv1connect.BankServiceGetAccountProcedure: rpcserver.AccessPublic},
		TLS:    p.serverTLS(t, bank1ID, 0),
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(bankv1connect.NewBankServiceHandler(failingBank{}, srv.HandlerOptions()...))
	mux.HandleFunc("GET /index.html", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "<html></html>") })
	ts := httptest.NewUnstartedServer(rpcserver.RequestIDMiddleware(mux))
	ts.EnableHTTP2 = true
	ts.StartTLS()
	t.Cleanup(ts.Close)

	one := func(t *testing.T, h http.Header) string {
		t.Helper()
		ids := h.Values(rpcserver.RequestIDHeader)
		if len(ids) != 1 || !rpcserver.ValidRequestID(ids[0]) {
			t.Fatalf("request ids %q; want one well-formed id", ids)
		}
		return ids[0]
	}
	for _, proto := range protocols {
		t.Run(proto.name, func(t *testing.T) {
			c := bankv1connect.NewBankServiceClient(ts.Client(), ts.URL, proto.opts...)
			req := connect.NewRequest(&bankv1.GetAccountRequest{AccountId: "ok-" + proto.name})
			req.Header().Set(rpcserver.RequestIDHeader, "mw-"+proto.name)
			res, err := c.GetAccount(t.Context(), req)
			if err != nil {
				t.Fatal(err)
			}
			if id := one(t, res.Header()); id != "mw-"+proto.name {
				t.Fatalf("request id %q, want the caller's mw-%s", id, proto.name)
			}

			req = connect.NewRequest(&bankv1.GetAccountRequest{AccountId: "reasoned"})
			req.Header().Set(rpcserver.RequestIDHeader, "not well formed!")
			_, err = c.GetAccount(t.Context(), req)
			var ce *connect.Error
			if !errors.As(err, &ce) || ce.Code() != connect.CodeNotFound {
				t.Fatalf("GetAccount(reasoned) = %v; want NotFound", err)
			}
			id := one(t, ce.Meta())
			if got := errorInfoRequestID(t, err); got != id {
				t.Fatalf("ErrorInfo request_id %q; the header's is %q", got, id)
			}
			logs.callRecord(t, bankv1connect.BankServiceGetAccountProcedure, "request_id", id)
		})
	}

	for _, path := range []string{"/index.html", "/nothing-here"} {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, ts.URL+path, nil)
		req.Header.Set(rpcserver.RequestIDHeader, "page-load-1")
		res, err := ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if id := one(t, res.Header); id != "page-load-1" {
			t.Fatalf("GET %s: request id %q, want page-load-1", path, id)
		}
	}
}
