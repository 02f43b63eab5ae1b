package rpcserver_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/paygate/paygate/internal/rpcserver"
)

// TestServerAnswersEveryRequestWithAnID: a Server's answers that no Connect handler gives (an
// unknown path, a message over the size limit refused before any interceptor) carry a request id
// too, and a call carries exactly one.
func TestServerAnswersEveryRequestWithAnID(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	s := startServer(t, p, serverOptions{})
	hc := httpClient(t, p.clientTLS(t, gatewayID)).(*http.Client)
	for name, req := range map[string]func() *http.Request{
		"unknown path": func() *http.Request {
			r, _ := http.NewRequest(http.MethodGet, s.url+"/nothing/here", nil)
			return r
		},
		"oversized message": func() *http.Request {
			body := strings.Repeat("x", rpcserver.DefaultReadMaxBytes+10)
			r, _ := http.NewRequest(http.MethodPost, s.url+"/paygate.bank.v1.BankService/GetAccount", bytes.NewReader([]byte(`{"accountId":"`+body+`"}`)))
			r.Header.Set("Content-Type", "application/json")
			return r
		},
	} {
		resp, err := hc.Do(req())
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		resp.Body.Close()
		if ids := resp.Header.Values(rpcserver.RequestIDHeader); len(ids) != 1 || !rpcserver.ValidRequestID(ids[0]) {
			t.Errorf("%s: HTTP %d with request ids %q; want one", name, resp.StatusCode, ids)
		}
	}
}
