package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"

	"github.com/paygate/paygate/fixtures"
	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	"github.com/paygate/paygate/gen/paygate/bank/v1/bankv1connect"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
	"github.com/paygate/paygate/internal/account"
	"github.com/paygate/paygate/internal/identity"
	"github.com/paygate/paygate/internal/pki"
	"github.com/paygate/paygate/internal/rpcerr"
	"github.com/paygate/paygate/internal/rpcserver"
	"github.com/paygate/paygate/services/bank"
)

// The in-process test harness: real bank servers and a real gateway on loopback listeners, with
// mTLS certificates made once for the whole package by TestMain.

// certDir holds the PKI shared by every test: a CA, the gateway, bank1..bank3 and two clients,
// "cli" and "other".
var certDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gateway-test-pki-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	certDir = dir
	if err := pki.Generate(dir, pki.Options{Clients: []string{"cli", "other"}}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// leaf returns the certificate files of an identity in certDir.
func leaf(id identity.Identity) pki.Files { return pki.LeafFiles(certDir, id) }

func clientIdentity(name string) identity.Identity {
	return identity.Identity{Role: identity.RoleClient, Name: name}
}

// newHTTPClient returns an HTTP/2 client presenting the certificate of id, closed at cleanup.
func newHTTPClient(t testing.TB, id identity.Identity) *http.Client {
	t.Helper()
	f := leaf(id)
	tlsCfg, err := pki.ClientTLS(pki.CAFile(certDir), f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	c := rpcserver.NewHTTPClient(tlsCfg)
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// protocol is a client protocol the gateway must serve.
type protocol struct {
	name string
	opts []connect.ClientOption
}

// protocols are gRPC and Connect (connect-go's default).
var protocols = []protocol{
	{"grpc", []connect.ClientOption{connect.WithGRPC()}},
	{"connect", nil},
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// fakeClock is a clock tests move by hand; safe for concurrent use.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Now().UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// envOptions configure a test environment.
type envOptions struct {
	// banks are the bank names; default bank1, bank2, bank3 with the repository's fixtures.
	banks []string
	// users replaces fixtures/user_details.json.
	users string
	// config edits the gateway's configuration before New.
	config func(*Config)
	// beforeStart runs after New and before Start: wrap participants, inject clocks.
	beforeStart func(*Gateway)
}

// bankNode is one bank server of an environment; it can be stopped and started again on the
// same address and data directory.
type bankNode struct {
	name string
	cfg  bank.ServerConfig
	addr string

	mu  sync.Mutex
	srv *bank.Server
}

// env is a running system: banks and a gateway.
type env struct {
	dir     string
	banks   map[string]*bankNode
	names   []string
	gw      *Gateway
	url     string
	initial int64 // sum of all balances when the system started

	logs *syncBuffer // what the gateway and the banks logged

	gatewayHTTP *http.Client // gateway certificate: audits the banks
	cliHTTP     *http.Client // client certificate "cli"
}

func fixtureFile(t testing.TB, name string) []byte {
	t.Helper()
	data, err := fixtures.FS.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// newEnv starts banks and a gateway for t, stopped at cleanup.
func newEnv(t *testing.T, opts envOptions) *env {
	t.Helper()
	if len(opts.banks) == 0 {
		opts.banks = []string{"bank1", "bank2", "bank3"}
	}
	e := &env{dir: t.TempDir(), banks: map[string]*bankNode{}, names: opts.banks, logs: &syncBuffer{}}
	logger := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs of the gateway and the banks:\n%s", e.logs.String())
		}
	})
	ctx := context.Background()
	urls := map[string]string{}
	for _, name := range opts.banks {
		accounts := filepath.Join(e.dir, name+"_server_accounts.json")
		if err := os.WriteFile(accounts, fixtureFile(t, name+"_server_accounts.json"), 0o600); err != nil {
			t.Fatal(err)
		}
		f := leaf(identity.Identity{Role: identity.RoleBank, Name: name})
		n := &bankNode{name: name, cfg: bank.ServerConfig{
			Config: bank.Config{Name: name, DataDir: filepath.Join(e.dir, name), AccountsFile: accounts, Logger: logger},
			Listen: "127.0.0.1:0",
			CAFile: pki.CAFile(certDir), CertFile: f.Cert, KeyFile: f.Key,
		}}
		n.start(t)
		n.cfg.Listen = n.addr // a restart reuses the address
		e.banks[name] = n
		urls[name] = "https://" + n.addr
	}

	// Stop the banks together.
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, n := range e.banks {
			wg.Go(func() { n.stop(t) })
		}
		wg.Wait()
	})

	users := filepath.Join(e.dir, "user_details.json")
	content := []byte(opts.users)
	if opts.users == "" {
		content = fixtureFile(t, "user_details.json")
	}
	if err := os.WriteFile(users, content, 0o600); err != nil {
		t.Fatal(err)
	}
	gf := leaf(identity.Identity{Role: identity.RoleGateway})
	cfg := Config{
		Listen:          "127.0.0.1:0",
		Banks:           urls,
		UsersFile:       users,
		DataDir:         filepath.Join(e.dir, "gateway"),
		CAFile:          pki.CAFile(certDir),
		CertFile:        gf.Cert,
		KeyFile:         gf.Key,
		TxnTimeout:      5 * time.Second,
		BankCallTimeout: 2 * time.Second,
		// A probe times out after one interval: keep the default (1s) so that a loaded test
		// machine does not make banks look down. Tests about health shorten it.
		RecoveryInterval: 100 * time.Millisecond,
		BcryptCost:       4,
		Logger:           logger,
		// Tests log in from one address; keep the per-address budget out of their way unless a
		// test is about throttling.
		LoginFailuresBurst: 100,
	}
	if opts.config != nil {
		opts.config(&cfg)
	}
	g, err := New(ctx, cfg)
	if err != nil {
		t.Fatalf("gateway.New: %v", err)
	}
	if opts.beforeStart != nil {
		opts.beforeStart(g)
	}
	if err := g.Start(ctx); err != nil {
		g.store.Close()
		t.Fatalf("gateway.Start: %v", err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := g.Shutdown(sctx); err != nil {
			t.Logf("gateway shutdown: %v", err)
		}
	})
	e.gw = g
	e.url = "https://" + g.Addr()
	e.gatewayHTTP = newHTTPClient(t, identity.Identity{Role: identity.RoleGateway})
	e.cliHTTP = newHTTPClient(t, clientIdentity("cli"))
	l := e.audit(t, ctx)
	e.initial = l.total
	return e
}

func (n *bankNode) start(t testing.TB) {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	srv, err := bank.NewServer(context.Background(), n.cfg)
	if err != nil {
		t.Fatalf("bank %s: %v", n.name, err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatalf("bank %s: %v", n.name, err)
	}
	n.srv = srv
	n.addr = srv.Addr()
}

// stop shuts the bank down; stopping a stopped bank does nothing. Its graceful shutdown is cut
// short: it would wait a second for the gateway to close its idle HTTP/2 connection.
func (n *bankNode) stop(t testing.TB) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := n.srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Logf("bank %s shutdown: %v", n.name, err)
	}
	n.srv = nil
}

func (n *bankNode) running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.srv != nil
}

// bankClient is a client of a bank with the gateway's certificate.
func (e *env) bankClient(name string) bankv1connect.BankServiceClient {
	return bankv1connect.NewBankServiceClient(e.gatewayHTTP, "https://"+e.banks[name].addr, connect.WithGRPC())
}

// ledger is an audit of every account of the running banks.
type ledger struct {
	accounts map[string]*bankv1.AccountBalance
	total    int64
	held     int64
	pending  int64
}

// The bank-side reads below see every payment answered so far applied: like FetchBalance, they
// wait for the gateway's phase twos still running after their answers (settleBarrier).

func (e *env) audit(t testing.TB, ctx context.Context) ledger {
	t.Helper()
	if err := e.gw.coord.settle.waitAll(ctx); err != nil {
		t.Fatal(err)
	}
	l, err := e.tryAudit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func (e *env) tryAudit(ctx context.Context) (ledger, error) {
	l := ledger{accounts: map[string]*bankv1.AccountBalance{}}
	for _, name := range e.names {
		if !e.banks[name].running() {
			return l, fmt.Errorf("audit: bank %s is stopped", name)
		}
		token := ""
		for {
			resp, err := e.bankClient(name).ListAccounts(ctx, connect.NewRequest(&bankv1.ListAccountsRequest{PageSize: 1000, PageToken: token}))
			if err != nil {
				return l, fmt.Errorf("audit %s: %w", name, err)
			}
			for _, a := range resp.Msg.GetAccounts() {
				b := a.GetBalance()
				l.accounts[a.GetAccountId()] = b
				l.total += b.GetBalance()
				l.held += b.GetHeld()
				l.pending += b.GetPendingCredit()
			}
			token = resp.Msg.GetNextPageToken()
			if token == "" {
				break
			}
		}
	}
	return l, nil
}

// balance returns one account's balance at its bank.
func (e *env) balance(t testing.TB, id string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.gw.coord.settle.wait(ctx, id); err != nil {
		t.Fatal(err)
	}
	resp, err := e.bankClient(account.Bank(id)).GetAccount(ctx, connect.NewRequest(&bankv1.GetAccountRequest{AccountId: id}))
	if err != nil {
		t.Fatalf("GetAccount %s: %v", id, err)
	}
	return resp.Msg.GetAccount().GetBalance().GetBalance()
}

// assertSettled waits until no bank holds a hold or a pending credit and checks that the sum of
// all balances is what it was at the start: the invariants every test that moves money ends with.
func (e *env) assertSettled(t testing.TB) ledger {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		l, err := e.tryAudit(ctx)
		cancel()
		if err == nil && l.held == 0 && l.pending == 0 {
			if l.total != e.initial {
				t.Fatalf("conservation: sum of balances is %d, want %d", l.total, e.initial)
			}
			for id, a := range l.accounts {
				if a.GetAvailable() < 0 {
					t.Fatalf("overdraft: %s available %d", id, a.GetAvailable())
				}
			}
			return l
		}
		if time.Now().After(deadline) {
			t.Fatalf("not settled: held %d, pending credit %d, err %v", l.held, l.pending, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// clients are the gateway's services for one protocol and certificate.
type clients struct {
	auth     gatewayv1connect.AuthServiceClient
	payments gatewayv1connect.PaymentServiceClient
	balance  gatewayv1connect.BalanceServiceClient
	health   *grpchealth.Client
	token    string
	username string
}

// clientsWith returns clients with httpClient and protocol p that send authorization as the
// Authorization header when it is set.
func (e *env) clientsWith(httpClient *http.Client, p protocol, authorization string) *clients {
	opts := append([]connect.ClientOption(nil), p.opts...)
	if authorization != "" {
		opts = append(opts, connect.WithInterceptors(bearer(authorization)))
	}
	return &clients{
		auth:     gatewayv1connect.NewAuthServiceClient(httpClient, e.url, opts...),
		payments: gatewayv1connect.NewPaymentServiceClient(httpClient, e.url, opts...),
		balance:  gatewayv1connect.NewBalanceServiceClient(httpClient, e.url, opts...),
		health:   grpchealth.NewClient(httpClient, e.url, p.opts...),
	}
}

// anon returns clients with the "cli" certificate and no token.
func (e *env) anon(p protocol) *clients { return e.clientsWith(e.cliHTTP, p, "") }

// login logs username in with the "cli" certificate and returns clients sending its token.
func (e *env) login(t testing.TB, p protocol, username, password string) *clients {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := e.anon(p).auth.Login(ctx, connect.NewRequest(&gatewayv1.LoginRequest{Username: username, Password: password}))
	if err != nil {
		t.Fatalf("login %s: %v", username, err)
	}
	c := e.clientsWith(e.cliHTTP, p, "Bearer "+resp.Msg.GetToken())
	c.username, c.token = username, resp.Msg.GetToken()
	return c
}

// bearer is an interceptor that sets the Authorization header to its value.
type bearer string

func (b bearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Authorization", string(b))
		return next(ctx, req)
	}
}

func (b bearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set("Authorization", string(b))
		return conn
	}
}

func (b bearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// pay executes a payment and fails the test on an RPC error.
func (c *clients) pay(t testing.TB, id, from, to string, amount int64) *gatewayv1.Payment {
	t.Helper()
	resp, err := c.tryPay(context.Background(), id, from, to, amount)
	if err != nil {
		t.Fatalf("pay %s %s→%s %d: %v", id, from, to, amount, err)
	}
	return resp.Msg.GetPayment()
}

func (c *clients) tryPay(ctx context.Context, id, from, to string, amount int64) (*connect.Response[gatewayv1.ExecutePaymentResponse], error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	return c.payments.ExecutePayment(ctx, connect.NewRequest(&gatewayv1.ExecutePaymentRequest{
		PaymentId: id, FromAccount: from, ToAccount: to, Amount: amount, Currency: "USD",
	}))
}

// newPaymentID returns a random UUID (version 4).
func newPaymentID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// wantErr checks a Connect error's code and ErrorInfo reason (reason "" is not checked).
func wantErr(t testing.TB, err error, code connect.Code, reason string) {
	t.Helper()
	if err == nil {
		t.Fatalf("err = nil; want %v %q", code, reason)
	}
	if connect.CodeOf(err) != code || (reason != "" && rpcerr.Reason(err) != reason) {
		t.Fatalf("err = %v (code %v, reason %q); want %v %q", err, connect.CodeOf(err), rpcerr.Reason(err), code, reason)
	}
}

// recv receives from ch, failing the test after 15s.
func recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(15 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// waitFor polls cond every 10ms until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// gatewayHealth returns the gateway's health status of service.
func (e *env) gatewayHealth(service string) (grpchealth.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := e.anon(protocols[0]).health.Check(ctx, &grpchealth.CheckRequest{Service: service})
	if err != nil {
		return grpchealth.StatusUnknown, err
	}
	return resp.Status, nil
}

// wrapBanks replaces the gateway's participants with wrap(name, participant), before Start.
func wrapBanks(g *Gateway, wrap func(name string, p participant) participant) {
	for name, p := range g.coord.banks {
		g.coord.banks[name] = wrap(name, p)
	}
}
