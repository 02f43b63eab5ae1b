package rpcserver_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	"github.com/paygate/paygate/gen/paygate/bank/v1/bankv1connect"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
	"github.com/paygate/paygate/internal/identity"
	"github.com/paygate/paygate/internal/pki"
	"github.com/paygate/paygate/internal/rpcerr"
	"github.com/paygate/paygate/internal/rpcserver"
)

const (
	goodToken = "good-token-3f9a1c"
	password  = "hunter2-very-secret"
)

var (
	gatewayID = identity.Identity{Role: identity.RoleGateway}
	bank1ID   = identity.Identity{Role: identity.RoleBank, Name: "bank1"}
	bank2ID   = identity.Identity{Role: identity.RoleBank, Name: "bank2"}
	cliID     = identity.Identity{Role: identity.RoleClient, Name: "cli"}
)

// testPKI is a development PKI in a temporary directory.
type testPKI struct{ dir string }

func newPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	if err := pki.Generate(dir, pki.Options{Hosts: []string{"127.0.0.1"}}); err != nil {
		t.Fatal(err)
	}
	return &testPKI{dir: dir}
}

func (p *testPKI) serverTLS(t *testing.T, id identity.Identity, auth tls.ClientAuthType) *tls.Config {
	t.Helper()
	f := pki.LeafFiles(p.dir, id)
	cfg, err := pki.ServerTLS(pki.CAFile(p.dir), f.Cert, f.Key, auth)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// clientTLS returns a client configuration with id's certificate; a zero id presents none.
func (p *testPKI) clientTLS(t *testing.T, id identity.Identity) *tls.Config {
	t.Helper()
	var f pki.Files
	if id.Role != "" {
		f = pki.LeafFiles(p.dir, id)
	}
	cfg, err := pki.ClientTLS(pki.CAFile(p.dir), f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// lockedBuffer is a log sink that tests may read while servers write.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// records returns the JSON log records, in order.
func (b *lockedBuffer) records(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(b.String()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line is not JSON: %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// callRecord returns the one call log line of procedure whose field key equals value.
func (b *lockedBuffer) callRecord(t *testing.T, procedure, key string, value any) map[string]any {
	t.Helper()
	var found []map[string]any
	for _, r := range b.records(t) {
		if r["msg"] == rpcserver.LogMessage && r["procedure"] == procedure && (key == "" || r[key] == value) {
			found = append(found, r)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d call lines for %s with %s=%v, want 1; log:\n%s", len(found), procedure, key, value, b.String())
	}
	return found[0]
}

type userKey struct{}

// fakeBank is a BankService that answers from memory.
type fakeBank struct {
	bankv1connect.UnimplementedBankServiceHandler
	calls   atomic.Int64
	entered chan struct{} // receives when a "slow" prepare starts
	release chan struct{} // closed to let "slow" prepares finish
}

func (b *fakeBank) PrepareTransaction(ctx context.Context, req *connect.Request[bankv1.PrepareTransactionRequest]) (*connect.Response[bankv1.PrepareTransactionResponse], error) {
	b.calls.Add(1)
	if req.Msg.GetTransactionId() == "slow" {
		b.entered <- struct{}{}
		select {
		case <-b.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	rpcserver.CallInfoFrom(ctx).Add(slog.Bool("replayed", true))
	return connect.NewResponse(&bankv1.PrepareTransactionResponse{Vote: bankv1.Vote_VOTE_YES}), nil
}

func (b *fakeBank) FetchBankBalance(ctx context.Context, _ *connect.Request[bankv1.FetchBankBalanceRequest]) (*connect.Response[bankv1.FetchBankBalanceResponse], error) {
	b.calls.Add(1)
	if ctx.Value(userKey{}) != "alice" {
		return nil, connect.NewError(connect.CodeInternal, errors.New("authenticator's context did not reach the handler"))
	}
	return connect.NewResponse(&bankv1.FetchBankBalanceResponse{}), nil
}

func (b *fakeBank) GetAccount(context.Context, *connect.Request[bankv1.GetAccountRequest]) (*connect.Response[bankv1.GetAccountResponse], error) {
	b.calls.Add(1)
	return connect.NewResponse(&bankv1.GetAccountResponse{}), nil
}

func (b *fakeBank) ListAccounts(context.Context, *connect.Request[bankv1.ListAccountsRequest]) (*connect.Response[bankv1.ListAccountsResponse], error) {
	b.calls.Add(1)
	panic("ledger exploded")
}

type fakeAuth struct {
	gatewayv1connect.UnimplementedAuthServiceHandler
}

func (fakeAuth) Login(_ context.Context, req *connect.Request[gatewayv1.LoginRequest]) (*connect.Response[gatewayv1.LoginResponse], error) {
	if req.Msg.GetPassword() != password {
		return nil, rpcerr.New(connect.CodeUnauthenticated, "invalid_credentials", "invalid username or password")
	}
	return connect.NewResponse(&gatewayv1.LoginResponse{Token: goodToken}), nil
}

type fakePayments struct {
	gatewayv1connect.UnimplementedPaymentServiceHandler
}

func (fakePayments) WatchPayments(ctx context.Context, _ *connect.Request[gatewayv1.WatchPaymentsRequest], stream *connect.ServerStream[gatewayv1.WatchPaymentsResponse]) error {
	if ctx.Value(userKey{}) != "alice" {
		return connect.NewError(connect.CodeInternal, errors.New("no user in context"))
	}
	for _, id := range []string{"p-1", "p-2"} {
		if err := stream.Send(&gatewayv1.WatchPaymentsResponse{Payment: &gatewayv1.Payment{PaymentId: id}}); err != nil {
			return err
		}
	}
	return nil
}

func authenticate(ctx context.Context, req rpcserver.Request) (context.Context, string, error) {
	if req.Header().Get("Authorization") != "Bearer "+goodToken {
		return nil, "", rpcerr.New(connect.CodeUnauthenticated, "invalid_token", "missing or invalid token")
	}
	return context.WithValue(ctx, userKey{}, "alice"), "alice", nil
}

var testPolicy = rpcserver.Policy{
	bankv1connect.BankServicePrepareTransactionProcedure:  rpcserver.AccessGateway,
	bankv1connect.BankServiceAbortTransactionProcedure:    rpcserver.AccessBank,
	bankv1connect.BankServiceFetchBankBalanceProcedure:    rpcserver.AccessUser,
	bankv1connect.BankServiceGetAccountProcedure:          rpcserver.AccessPublic,
	bankv1connect.BankServiceListAccountsProcedure:        rpcserver.AccessPublic,
	gatewayv1connect.AuthServiceLoginProcedure:            rpcserver.AccessPublic,
	gatewayv1connect.PaymentServiceWatchPaymentsProcedure: rpcserver.AccessUser,
	// CommitTransaction is deliberately absent.
}

type testServer struct {
	srv  *rpcserver.Server
	url  string
	addr string
	logs *lockedBuffer
	bank *fakeBank
}

type serverOptions struct {
	clientAuth tls.ClientAuthType
	level      slog.Level
}

// startServer runs a server with the bank1 certificate on 127.0.0.1 until the test ends.
func startServer(t *testing.T, p *testPKI, o serverOptions) *testServer {
	t.Helper()
	if o.clientAuth == tls.NoClientCert {
		o.clientAuth = tls.RequireAndVerifyClientCert
	}
	logs := &lockedBuffer{}
	srv, err := rpcserver.New(rpcserver.Config{
		Name:         "bank1",
		Logger:       slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: o.level})),
		Policy:       testPolicy,
		Authenticate: authenticate,
		TLS:          p.serverTLS(t, bank1ID, o.clientAuth),
	})
	if err != nil {
		t.Fatal(err)
	}
	bank := &fakeBank{entered: make(chan struct{}, 1), release: make(chan struct{})}
	srv.Handle(bankv1connect.NewBankServiceHandler(bank, srv.HandlerOptions()...))
	srv.Handle(gatewayv1connect.NewAuthServiceHandler(fakeAuth{}, srv.HandlerOptions()...))
	srv.Handle(gatewayv1connect.NewPaymentServiceHandler(fakePayments{}, srv.HandlerOptions()...))

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return &testServer{srv: srv, url: "https://" + ln.Addr().String(), addr: ln.Addr().String(), logs: logs, bank: bank}
}

func httpClient(t *testing.T, cfg *tls.Config) connect.HTTPClient {
	t.Helper()
	hc := rpcserver.NewHTTPClient(cfg)
	t.Cleanup(hc.CloseIdleConnections)
	return hc
}

var protocols = []struct {
	name string
	opts []connect.ClientOption
}{
	{name: "grpc", opts: rpcserver.ClientOptions()},
	{name: "connect", opts: nil},
}

func prepareRequest(txn string) *connect.Request[bankv1.PrepareTransactionRequest] {
	return connect.NewRequest(&bankv1.PrepareTransactionRequest{
		TransactionId: txn,
		Legs: []*bankv1.Leg{{
			AccountId: "acc-1",
			Direction: bankv1.LegDirection_LEG_DIRECTION_DEBIT,
			Amount:    1050,
			Currency:  "EUR",
		}},
		Deadline: timestamppb.New(time.Now().Add(time.Minute)),
	})
}

func withToken[T any](req *connect.Request[T], token string) *connect.Request[T] {
	req.Header().Set("Authorization", "Bearer "+token)
	return req
}

func TestPolicy(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	ts := startServer(t, p, serverOptions{})

	type call func(ctx context.Context, c bankv1connect.BankServiceClient) error
	// Each call gets a request of its own: the subtests of both protocols run in parallel, and
	// a request's headers are written while it is sent.
	prepare := func(txn string) call {
		return func(ctx context.Context, c bankv1connect.BankServiceClient) error {
			res, err := c.PrepareTransaction(ctx, prepareRequest(txn))
			if err == nil && res.Msg.GetVote() != bankv1.Vote_VOTE_YES {
				return fmt.Errorf("vote %v", res.Msg.GetVote())
			}
			return err
		}
	}
	balance := func(token string) call {
		return func(ctx context.Context, c bankv1connect.BankServiceClient) error {
			req := connect.NewRequest(&bankv1.FetchBankBalanceRequest{AccountIds: []string{"acc-1"}})
			if token != "" {
				req = withToken(req, token)
			}
			_, err := c.FetchBankBalance(ctx, req)
			return err
		}
	}
	tests := []struct {
		name       string
		caller     identity.Identity
		call       call
		wantCode   connect.Code // 0: success
		wantReason string
		wantMsg    string
	}{
		{name: "gateway may prepare", caller: gatewayID, call: prepare("t-1")},
		{
			name: "client may not prepare", caller: cliID, call: prepare("t-1"),
			wantCode: connect.CodePermissionDenied, wantReason: rpcserver.ReasonPermissionDenied,
			wantMsg: "BankService accepts only the gateway role; caller is spiffe://paygate/client/cli",
		},
		{
			name: "bank may not prepare", caller: bank2ID, call: prepare("t-1"),
			wantCode: connect.CodePermissionDenied, wantReason: rpcserver.ReasonPermissionDenied,
			wantMsg: "caller is spiffe://paygate/bank/bank2",
		},
		{
			name: "invalid request names the field", caller: gatewayID, call: prepare(""),
			wantCode: connect.CodeInvalidArgument, wantMsg: "transaction_id",
		},
		{
			name: "denied before validation", caller: cliID, call: prepare(""),
			wantCode: connect.CodePermissionDenied,
		},
		{
			name: "procedure absent from policy", caller: gatewayID,
			call: func(ctx context.Context, c bankv1connect.BankServiceClient) error {
				_, err := c.CommitTransaction(ctx, connect.NewRequest(&bankv1.CommitTransactionRequest{TransactionId: "t-1"}))
				return err
			},
			wantCode: connect.CodePermissionDenied, wantReason: rpcserver.ReasonPermissionDenied,
			wantMsg: "/paygate.bank.v1.BankService/CommitTransaction is not allowed",
		},
		{
			name: "gateway may not call a bank-only procedure", caller: gatewayID,
			call: func(ctx context.Context, c bankv1connect.BankServiceClient) error {
				_, err := c.AbortTransaction(ctx, connect.NewRequest(&bankv1.AbortTransactionRequest{TransactionId: "t-1"}))
				return err
			},
			wantCode: connect.CodePermissionDenied, wantMsg: "accepts only the bank role; caller is spiffe://paygate/gateway",
		},
		{
			name: "bank passes a bank-only procedure", caller: bank2ID,
			call: func(ctx context.Context, c bankv1connect.BankServiceClient) error {
				_, err := c.AbortTransaction(ctx, connect.NewRequest(&bankv1.AbortTransactionRequest{TransactionId: "t-1"}))
				return err
			},
			wantCode: connect.CodeUnimplemented, // the fake does not implement it: the policy let it through
		},
		{name: "user with token", caller: cliID, call: balance(goodToken)},
		{
			name: "user without token", caller: cliID, call: balance(""),
			wantCode: connect.CodeUnauthenticated, wantReason: "invalid_token",
		},
		{
			name: "user with a wrong token", caller: cliID, call: balance("nope"),
			wantCode: connect.CodeUnauthenticated,
		},
		{
			name: "public procedure", caller: cliID,
			call: func(ctx context.Context, c bankv1connect.BankServiceClient) error {
				_, err := c.GetAccount(ctx, connect.NewRequest(&bankv1.GetAccountRequest{AccountId: "acc-1"}))
				return err
			},
		},
		{
			name: "panic becomes Internal", caller: cliID,
			call: func(ctx context.Context, c bankv1connect.BankServiceClient) error {
				_, err := c.ListAccounts(ctx, connect.NewRequest(&bankv1.ListAccountsRequest{}))
				return err
			},
			wantCode: connect.CodeInternal, wantMsg: "internal error",
		},
	}
	for _, proto := range protocols {
		for _, tt := range tests {
			t.Run(proto.name+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
				defer cancel()
				c := bankv1connect.NewBankServiceClient(httpClient(t, p.clientTLS(t, tt.caller)), ts.url, proto.opts...)
				err := tt.call(ctx, c)
				if tt.wantCode == 0 {
					if err != nil {
						t.Fatalf("call failed: %v", err)
					}
					return
				}
				if got := connect.CodeOf(err); got != tt.wantCode {
					t.Fatalf("code %v (%v), want %v", got, err, tt.wantCode)
				}
				if tt.wantReason != "" {
					if got := rpcerr.Reason(err); got != tt.wantReason {
						t.Errorf("reason %q, want %q", got, tt.wantReason)
					}
				}
				if !strings.Contains(err.Error(), tt.wantMsg) {
					t.Errorf("message %q does not contain %q", err.Error(), tt.wantMsg)
				}
			})
		}
	}
}

func TestTLSHandshakeRefusals(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	ts := startServer(t, p, serverOptions{level: slog.LevelDebug})

	foreign, err := pki.NewCA("foreign", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	// A foreign CA's gateway certificate: the right role, the wrong authority.
	leaf, err := pki.IssueLeaf(foreign, gatewayID, []string{"127.0.0.1"}, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	foreignCfg := presenting(p.clientTLS(t, identity.Identity{}), leaf.TLSCertificate())

	// An expired certificate from the right CA.
	ca, err := pki.LoadCA(pki.CAFile(p.dir), p.dir+"/"+pki.CAKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	expired, err := pki.IssueLeaf(ca, gatewayID, []string{"127.0.0.1"}, time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	expiredCfg := presenting(p.clientTLS(t, identity.Identity{}), expired.TLSCertificate())

	tests := []struct {
		name    string
		cfg     *tls.Config
		wantLog string // in the server's handshake error
	}{
		{name: "no client certificate", cfg: p.clientTLS(t, identity.Identity{}), wantLog: "didn't provide a certificate"},
		{name: "foreign CA", cfg: foreignCfg, wantLog: "unknown authority"},
		{name: "expired", cfg: expiredCfg, wantLog: "expired"},
	}
	for _, tt := range tests {
		// Not parallel: the log check below runs after the subtests.
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			c := bankv1connect.NewBankServiceClient(httpClient(t, tt.cfg), ts.url, rpcserver.ClientOptions()...)
			_, err := c.PrepareTransaction(ctx, prepareRequest("t-1"))
			if err == nil {
				t.Fatal("call succeeded")
			}
			if code := connect.CodeOf(err); code == connect.CodePermissionDenied || code == connect.CodeUnauthenticated {
				t.Fatalf("refused by the policy (%v), want refusal at the handshake", err)
			}
		})
	}
	if n := ts.bank.calls.Load(); n != 0 {
		t.Errorf("handler ran %d times for refused handshakes", n)
	}
	// The refusals reach the server's log through slog, as warnings, not stderr.
	deadline := time.Now().Add(5 * time.Second)
	for strings.Count(ts.logs.String(), "TLS handshake error") < len(tests) {
		if time.Now().After(deadline) {
			t.Fatalf("handshake errors not logged; log:\n%s", ts.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, tt := range tests {
		found := false
		for _, r := range ts.logs.records(t) {
			msg, _ := r["msg"].(string)
			if strings.Contains(msg, "TLS handshake error") && strings.Contains(msg, tt.wantLog) {
				found = true
				if r["level"] != "WARN" || r["component"] != "http" {
					t.Errorf("%s: logged as %v", tt.name, r)
				}
			}
		}
		if !found {
			t.Errorf("%s: no handshake error mentioning %q; log:\n%s", tt.name, tt.wantLog, ts.logs.String())
		}
	}
}

// presenting returns cfg that always presents cert, even when the server would not accept its
// issuer (Go's client otherwise sends no certificate at all).
func presenting(cfg *tls.Config, cert tls.Certificate) *tls.Config {
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	return cfg
}

func TestNoClientCertificateIsUnauthenticated(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	// A listener that lets callers without a certificate in (like the browser-facing one).
	ts := startServer(t, p, serverOptions{clientAuth: tls.VerifyClientCertIfGiven})
	c := bankv1connect.NewBankServiceClient(httpClient(t, p.clientTLS(t, identity.Identity{})), ts.url, rpcserver.ClientOptions()...)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	_, err := c.PrepareTransaction(ctx, prepareRequest("t-1"))
	if connect.CodeOf(err) != connect.CodeUnauthenticated || rpcerr.Reason(err) != rpcserver.ReasonUnauthenticated {
		t.Fatalf("err = %v (reason %q), want unauthenticated", err, rpcerr.Reason(err))
	}
	if _, err := c.GetAccount(ctx, connect.NewRequest(&bankv1.GetAccountRequest{AccountId: "acc-1"})); err != nil {
		t.Fatalf("public procedure without certificate: %v", err)
	}
}

func TestHealth(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	ts := startServer(t, p, serverOptions{})
	hc := grpchealth.NewClient(httpClient(t, p.clientTLS(t, cliID)), ts.url, rpcserver.ClientOptions()...)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for _, svc := range []string{"", bankv1connect.BankServiceName, gatewayv1connect.AuthServiceName} {
		res, err := hc.Check(ctx, &grpchealth.CheckRequest{Service: svc})
		if err != nil {
			t.Fatalf("check %q: %v", svc, err)
		}
		if res.Status != grpchealth.StatusServing {
			t.Errorf("check %q: %v, want SERVING", svc, res.Status)
		}
	}
	if _, err := hc.Check(ctx, &grpchealth.CheckRequest{Service: "no.such.Service"}); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("unknown service: %v, want NotFound", err)
	}
	ts.srv.Health().SetStatus(bankv1connect.BankServiceName, grpchealth.StatusNotServing)
	res, err := hc.Check(ctx, &grpchealth.CheckRequest{Service: bankv1connect.BankServiceName})
	if err != nil || res.Status != grpchealth.StatusNotServing {
		t.Errorf("after SetStatus: %v, %v; want NOT_SERVING", res, err)
	}
}

func TestReflection(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	ts := startServer(t, p, serverOptions{})
	rc := grpcreflect.NewClient(httpClient(t, p.clientTLS(t, cliID)), ts.url, rpcserver.ClientOptions()...)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	stream := rc.NewStream(ctx)
	t.Cleanup(func() { _, _ = stream.Close() })

	names, err := stream.ListServices()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, n := range names {
		got = append(got, string(n))
	}
	for _, want := range []string{bankv1connect.BankServiceName, gatewayv1connect.AuthServiceName, grpchealth.HealthV1ServiceName} {
		if !slices.Contains(got, want) {
			t.Errorf("reflection lists %v, missing %s", got, want)
		}
	}
	files, err := stream.FileContainingSymbol(bankv1connect.BankServiceName)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 || files[0].GetPackage() != "paygate.bank.v1" {
		t.Errorf("descriptor of BankService: %d files", len(files))
	}
}

func TestCallLog(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	ts := startServer(t, p, serverOptions{})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	gw := bankv1connect.NewBankServiceClient(httpClient(t, p.clientTLS(t, gatewayID)), ts.url, rpcserver.ClientOptions()...)
	req := withToken(prepareRequest("t-log"), "s3cret-bearer-token")
	req.Header().Set(rpcserver.AttemptHeader, "3")
	if _, err := gw.PrepareTransaction(ctx, req); err != nil {
		t.Fatal(err)
	}
	rec := ts.logs.callRecord(t, bankv1connect.BankServicePrepareTransactionProcedure, "transaction_id", "t-log")
	want := map[string]any{
		"level":    "INFO",
		"server":   "bank1",
		"identity": "spiffe://paygate/gateway",
		"amount":   float64(1050),
		"currency": "EUR",
		"attempt":  float64(3),
		"retry":    true,
		"code":     "ok",
		"replayed": true,
	}
	for k, v := range want {
		if rec[k] != v {
			t.Errorf("%s = %v, want %v", k, rec[k], v)
		}
	}
	if peer, _ := rec["peer"].(string); !strings.HasPrefix(peer, "127.0.0.1:") {
		t.Errorf("peer = %v", rec["peer"])
	}
	if d, ok := rec["duration"].(float64); !ok || d <= 0 {
		t.Errorf("duration = %v", rec["duration"])
	}

	// A denied call is a WARN line with the code and the message.
	cli := bankv1connect.NewBankServiceClient(httpClient(t, p.clientTLS(t, cliID)), ts.url, rpcserver.ClientOptions()...)
	if _, err := cli.PrepareTransaction(ctx, prepareRequest("t-denied")); err == nil {
		t.Fatal("client prepared")
	}
	rec = ts.logs.callRecord(t, bankv1connect.BankServicePrepareTransactionProcedure, "transaction_id", "t-denied")
	if rec["level"] != "WARN" || rec["code"] != "permission_denied" || !strings.Contains(fmt.Sprint(rec["error"]), "accepts only the gateway role") {
		t.Errorf("denied call logged as %v", rec)
	}
	if _, ok := rec["attempt"]; ok {
		t.Errorf("first attempt logged an attempt: %v", rec)
	}

	// The user of a login comes from the request; the password never appears.
	auth := gatewayv1connect.NewAuthServiceClient(httpClient(t, p.clientTLS(t, cliID)), ts.url)
	if _, err := auth.Login(ctx, connect.NewRequest(&gatewayv1.LoginRequest{Username: "alice", Password: password})); err != nil {
		t.Fatal(err)
	}
	rec = ts.logs.callRecord(t, gatewayv1connect.AuthServiceLoginProcedure, "", nil)
	if rec["user"] != "alice" || rec["identity"] != "spiffe://paygate/client/cli" {
		t.Errorf("login logged as %v", rec)
	}

	// An authenticated call carries the user the Authenticator named.
	if _, err := cli.FetchBankBalance(ctx, withToken(connect.NewRequest(&bankv1.FetchBankBalanceRequest{AccountIds: []string{"a"}}), goodToken)); err != nil {
		t.Fatal(err)
	}
	rec = ts.logs.callRecord(t, bankv1connect.BankServiceFetchBankBalanceProcedure, "", nil)
	if rec["user"] != "alice" || rec["code"] != "ok" {
		t.Errorf("balance logged as %v", rec)
	}

	// A panic is an ERROR line.
	if _, err := cli.ListAccounts(ctx, connect.NewRequest(&bankv1.ListAccountsRequest{})); err == nil {
		t.Fatal("ListAccounts succeeded")
	}
	rec = ts.logs.callRecord(t, bankv1connect.BankServiceListAccountsProcedure, "", nil)
	if rec["level"] != "ERROR" || rec["code"] != "internal" {
		t.Errorf("panic logged as %v", rec)
	}

	out := ts.logs.String()
	for _, secret := range []string{"s3cret-bearer-token", goodToken, password} {
		if strings.Contains(out, secret) {
			t.Errorf("log contains secret %q:\n%s", secret, out)
		}
	}
}

func TestCallLogQuietAboveInfo(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	ts := startServer(t, p, serverOptions{level: slog.LevelWarn})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	gw := bankv1connect.NewBankServiceClient(httpClient(t, p.clientTLS(t, gatewayID)), ts.url, rpcserver.ClientOptions()...)
	if _, err := gw.PrepareTransaction(ctx, prepareRequest("t-ok")); err != nil {
		t.Fatal(err)
	}
	if _, err := gw.CommitTransaction(ctx, connect.NewRequest(&bankv1.CommitTransactionRequest{TransactionId: "t-ok"})); err == nil {
		t.Fatal("commit allowed")
	}
	var lines []string
	for _, r := range ts.logs.records(t) {
		if r["msg"] == rpcserver.LogMessage {
			lines = append(lines, fmt.Sprint(r["procedure"]))
		}
	}
	if !slices.Equal(lines, []string{bankv1connect.BankServiceCommitTransactionProcedure}) {
		t.Errorf("call lines at WARN: %v, want only the denied commit", lines)
	}
}

func TestServerStreaming(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	ts := startServer(t, p, serverOptions{})
	for _, proto := range protocols {
		t.Run(proto.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			c := gatewayv1connect.NewPaymentServiceClient(httpClient(t, p.clientTLS(t, cliID)), ts.url, proto.opts...)

			stream, err := c.WatchPayments(ctx, withToken(connect.NewRequest(&gatewayv1.WatchPaymentsRequest{}), goodToken))
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for stream.Receive() {
				ids = append(ids, stream.Msg().GetPayment().GetPaymentId())
			}
			if err := stream.Err(); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ids, []string{"p-1", "p-2"}) {
				t.Errorf("received %v", ids)
			}

			stream, err = c.WatchPayments(ctx, connect.NewRequest(&gatewayv1.WatchPaymentsRequest{}))
			if err == nil {
				for stream.Receive() {
					t.Error("received a message without a token")
				}
				err = stream.Err()
			}
			if connect.CodeOf(err) != connect.CodeUnauthenticated {
				t.Fatalf("without token: %v, want Unauthenticated", err)
			}
		})
	}
	t.Cleanup(func() {
		var users []any
		for _, r := range ts.logs.records(t) {
			if r["procedure"] == gatewayv1connect.PaymentServiceWatchPaymentsProcedure && r["code"] == "ok" {
				users = append(users, r["user"])
			}
		}
		if len(users) != 2 || users[0] != "alice" || users[1] != "alice" {
			t.Errorf("stream log users %v, want alice twice", users)
		}
	})
}

func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	logs := &lockedBuffer{}
	srv, err := rpcserver.New(rpcserver.Config{
		Name:   "bank1",
		Logger: slog.New(slog.NewJSONHandler(logs, nil)),
		Policy: testPolicy, Authenticate: authenticate,
		TLS: p.serverTLS(t, bank1ID, tls.RequireAndVerifyClientCert),
	})
	if err != nil {
		t.Fatal(err)
	}
	bank := &fakeBank{entered: make(chan struct{}, 1), release: make(chan struct{})}
	srv.Handle(bankv1connect.NewBankServiceHandler(bank, srv.HandlerOptions()...))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	addr := ln.Addr().String()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	c := bankv1connect.NewBankServiceClient(httpClient(t, p.clientTLS(t, gatewayID)), "https://"+addr, rpcserver.ClientOptions()...)
	called := make(chan error, 1)
	go func() {
		_, err := c.PrepareTransaction(ctx, prepareRequest("slow"))
		called <- err
	}()
	select {
	case <-bank.entered:
	case <-ctx.Done():
		t.Fatal("slow call never reached the handler")
	}

	shutdown := make(chan error, 1)
	go func() { shutdown <- srv.Shutdown(ctx) }()
	<-srv.Draining()
	// The listener closes: new connections are refused while the call is still in flight.
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break
		}
		_ = conn.Close()
		select {
		case <-ctx.Done():
			t.Fatal("listener still accepting after Shutdown began")
		case <-time.After(10 * time.Millisecond):
		}
	}
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned (%v) while a call was in flight", err)
	default:
	}

	close(bank.release)
	if err := <-called; err != nil {
		t.Errorf("in-flight call failed during graceful shutdown: %v", err)
	}
	if err := <-shutdown; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
}

func TestShutdownDeadlineForcesClose(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	srv, err := rpcserver.New(rpcserver.Config{
		Policy: testPolicy, Authenticate: authenticate,
		TLS: p.serverTLS(t, bank1ID, tls.RequireAndVerifyClientCert),
	})
	if err != nil {
		t.Fatal(err)
	}
	bank := &fakeBank{entered: make(chan struct{}, 1), release: make(chan struct{})}
	srv.Handle(bankv1connect.NewBankServiceHandler(bank, srv.HandlerOptions()...))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	c := bankv1connect.NewBankServiceClient(httpClient(t, p.clientTLS(t, gatewayID)), "https://"+ln.Addr().String(), rpcserver.ClientOptions()...)
	called := make(chan error, 1)
	go func() {
		_, err := c.PrepareTransaction(ctx, prepareRequest("slow"))
		called <- err
	}()
	<-bank.entered

	expired, cancelExpired := context.WithCancel(ctx)
	cancelExpired()
	if err := srv.Shutdown(expired); !errors.Is(err, context.Canceled) {
		t.Errorf("Shutdown with a done context: %v, want context.Canceled", err)
	}
	if err := <-called; err == nil {
		t.Error("in-flight call succeeded after a forced close")
	}
	close(bank.release)
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	tlsCfg := p.serverTLS(t, bank1ID, tls.RequireAndVerifyClientCert)
	tests := []struct {
		name string
		cfg  rpcserver.Config
		want string
	}{
		{name: "no TLS", cfg: rpcserver.Config{}, want: "TLS is required"},
		{name: "TLS without certificate", cfg: rpcserver.Config{TLS: &tls.Config{}}, want: "no server certificate"},
		{
			name: "user access without authenticator",
			cfg:  rpcserver.Config{TLS: tlsCfg, Policy: rpcserver.Policy{bankv1connect.BankServiceGetAccountProcedure: rpcserver.AccessUser}},
			want: "Authenticate is nil",
		},
		{
			name: "unknown access",
			cfg:  rpcserver.Config{TLS: tlsCfg, Policy: rpcserver.Policy{bankv1connect.BankServiceGetAccountProcedure: 0}},
			want: "unknown access",
		},
		{
			name: "key that is not a procedure",
			cfg:  rpcserver.Config{TLS: tlsCfg, Policy: rpcserver.Policy{"GetAccount": rpcserver.AccessPublic}},
			want: "not a procedure",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := rpcserver.New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "rpcserver: ") {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestCallInfoOutsideACall(t *testing.T) {
	t.Parallel()
	ci := rpcserver.CallInfoFrom(context.Background())
	ci.SetUser("bob") // must not panic on nil
	ci.Add(slog.Bool("x", true))
	if ci.User() != "" || ci.Attrs() != nil {
		t.Error("nil CallInfo recorded something")
	}
	ctx, ci := rpcserver.NewCallContext(context.Background())
	rpcserver.CallInfoFrom(ctx).SetUser("bob")
	rpcserver.CallInfoFrom(ctx).Add(slog.Bool("replayed", true))
	if ci.User() != "bob" || len(ci.Attrs()) != 1 {
		t.Errorf("user %q attrs %v", ci.User(), ci.Attrs())
	}
}
