package web_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	"github.com/paygate/paygate/gen/paygate/bank/v1/bankv1connect"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
	"github.com/paygate/paygate/internal/cluster"
)

// browserClient is an HTTP client like a browser's: it trusts the dev CA and has no client
// certificate.
func browserClient(t *testing.T, c *cluster.Cluster) *http.Client {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: caOnlyTLS(t, c), ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// caOnlyTLS trusts the cluster's CA and presents no client certificate, as a browser does.
func caOnlyTLS(t *testing.T, c *cluster.Cluster) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(c.CertPath("ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("ca.pem: no certificate")
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
}

// TestWebListener checks what the gateway's web listener serves to a client without a
// certificate: the dashboard and the user-facing services, never the bank or coordinator
// services; and that the API listener still requires a client certificate.
func TestWebListener(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a whole system")
	}
	c := cluster.New(t, cluster.Options{})
	hc := browserClient(t, c)
	web := "https://" + c.WebAddr
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	t.Run("dashboard", func(t *testing.T) {
		resp, err := hc.Get(web + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `<div id="app">`) {
			t.Fatalf("GET /: %s\n%s", resp.Status, body)
		}
		csp := resp.Header.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'self'", "frame-ancestors 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("Content-Security-Policy %q lacks %q", csp, want)
			}
		}
		if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("X-Content-Type-Options = %q", got)
		}
		if got := resp.Header.Get("Cache-Control"); got != "no-cache" {
			t.Errorf("index.html Cache-Control = %q, want no-cache", got)
		}
		if resp.ProtoMajor != 2 {
			t.Errorf("served over %s, want HTTP/2", resp.Proto)
		}
	})

	// A user signs in on the web listener; the token works there.
	auth := gatewayv1connect.NewAuthServiceClient(hc, web)
	login, err := auth.Login(ctx, connect.NewRequest(&gatewayv1.LoginRequest{Username: "alice", Password: "alice-pass-123"}))
	if err != nil {
		t.Fatalf("login on the web listener without a client certificate: %v", err)
	}
	token := login.Msg.GetToken()
	balance := gatewayv1connect.NewBalanceServiceClient(hc, web, connect.WithInterceptors(cluster.Bearer(token)))
	if _, err := balance.FetchBalance(ctx, connect.NewRequest(&gatewayv1.FetchBalanceRequest{})); err != nil {
		t.Fatalf("FetchBalance on the web listener: %v", err)
	}

	t.Run("refuses bank and coordinator procedures", func(t *testing.T) {
		for _, proto := range []struct {
			name string
			opts []connect.ClientOption
		}{
			{"connect", nil},
			{"grpc", []connect.ClientOption{connect.WithGRPC()}},
			{"grpc-web", []connect.ClientOption{connect.WithGRPCWeb()}},
		} {
			opts := append([]connect.ClientOption{connect.WithInterceptors(cluster.Bearer(token))}, proto.opts...)
			_, err := connect.NewClient[gatewayv1.GetDecisionRequest, gatewayv1.GetDecisionResponse](
				hc, web+gatewayv1connect.CoordinatorServiceGetDecisionProcedure, opts...,
			).CallUnary(ctx, connect.NewRequest(&gatewayv1.GetDecisionRequest{TransactionId: "0b8e7d6c-5a4f-4e3d-8c2b-1a0f9e8d7c6b"}))
			checkRefused(t, proto.name+" GetDecision", err)
			_, err = bankv1connect.NewBankServiceClient(hc, web, opts...).
				PrepareTransaction(ctx, connect.NewRequest(&bankv1.PrepareTransactionRequest{}))
			checkRefused(t, proto.name+" PrepareTransaction", err)
		}
		for _, proc := range []string{gatewayv1connect.CoordinatorServiceGetDecisionProcedure, bankv1connect.BankServicePrepareTransactionProcedure} {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, web+proc, strings.NewReader(`{}`))
			req.Header.Set("Content-Type", "application/json")
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("POST %s: %s, want 404", proc, resp.Status)
			}
		}
	})

	t.Run("a web token is bound to no certificate", func(t *testing.T) {
		// The client-cli certificate, on the API listener.
		api := gatewayv1connect.NewBalanceServiceClient(httpClientOf(t, c), "https://"+c.GatewayAddr, connect.WithGRPC(), connect.WithInterceptors(cluster.Bearer(token)))
		_, err := api.FetchBalance(ctx, connect.NewRequest(&gatewayv1.FetchBalanceRequest{}))
		if connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Errorf("the web token on the API listener: %v, want Unauthenticated", err)
		}
	})

	t.Run("API listener requires a client certificate", func(t *testing.T) {
		api := gatewayv1connect.NewAuthServiceClient(hc, "https://"+c.GatewayAddr, connect.WithGRPC())
		_, err := api.Login(ctx, connect.NewRequest(&gatewayv1.LoginRequest{Username: "alice", Password: "alice-pass-123"}))
		if err == nil {
			t.Fatal("the API listener answered a client without a certificate")
		}
		t.Logf("without a client certificate: %v", err)
		// Through an HTTP client the refusal surfaces as whatever the transport saw first (a
		// handshake error, a broken pipe, a reset); the handshake itself says why.
		if code := connect.CodeOf(err); code != connect.CodeUnavailable && code != connect.CodeUnknown && code != connect.CodeCanceled {
			t.Errorf("no client certificate: %v, want a transport failure", err)
		}
		conn, derr := tls.Dial("tcp", c.GatewayAddr, caOnlyTLS(t, c))
		if derr == nil {
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, derr = conn.Read(make([]byte, 1))
			conn.Close()
		}
		if derr == nil || !strings.Contains(derr.Error(), "certificate required") {
			t.Errorf("TLS handshake without a client certificate: %v, want 'certificate required'", derr)
		}
		if _, err := hc.Get("https://" + c.GatewayAddr + "/"); err == nil {
			t.Error("GET / on the API listener without a client certificate succeeded")
		}
		// With the certificate it answers, and serves no dashboard.
		resp, err := httpClientOf(t, c).Get("https://" + c.GatewayAddr + "/")
		if err != nil {
			t.Fatalf("GET / on the API listener with a client certificate: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET / on the API listener: %s, want 404 (the dashboard is on the web listener only)", resp.Status)
		}
	})
}

// checkRefused checks that err is the refusal of a procedure the listener does not serve.
func checkRefused(t *testing.T, what string, err error) {
	t.Helper()
	switch connect.CodeOf(err) {
	case connect.CodeUnimplemented, connect.CodeNotFound, connect.CodePermissionDenied:
	default:
		t.Errorf("%s on the web listener: %v, want Unimplemented (404), NotFound or PermissionDenied", what, err)
	}
}

// httpClientOf returns an HTTP client with the client-cli certificate.
func httpClientOf(t *testing.T, c *cluster.Cluster) *http.Client {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(c.CertPath("client-cli.pem"), c.CertPath("client-cli-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	hc := browserClient(t, c)
	hc.Transport.(*http.Transport).TLSClientConfig.Certificates = []tls.Certificate{cert}
	return hc
}
