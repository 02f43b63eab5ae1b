package client_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/paygate/paygate/client"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
	"github.com/paygate/paygate/internal/identity"
	"github.com/paygate/paygate/internal/pki"
	"github.com/paygate/paygate/internal/rpcerr"
	"github.com/paygate/paygate/internal/rpcserver"
)

// Replicas of a fake gateway for the failover tests: real TLS servers on loopback presenting
// the test PKI's gateway certificate and requiring a client certificate, as the gateway does,
// so that the client's pinning is in play. Replicas made with the same shared state are like
// replicas of one database: a token or a payment made at one is known at the others.

// shared is the state of one "database".
type shared struct {
	mu      sync.Mutex
	tokens  map[string]string // token → username
	users   map[string]bool
	applied map[string]*gatewayv1.Payment
	applies map[string]int // payment id → times it was applied (must stay at most 1)
}

func newShared() *shared {
	return &shared{tokens: map[string]string{}, users: map[string]bool{}, applied: map[string]*gatewayv1.Payment{}, applies: map[string]int{}}
}

func (s *shared) appliesOf(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applies[id]
}

// replica modes.
const (
	modeUp        = iota
	modeReset     // connections are accepted and closed at once: the TLS handshake fails
	modeBlackhole // connections are accepted and never answered
	modeDead      // the listener is closed: connections are refused
)

type replica struct {
	t    *testing.T
	name string
	sh   *shared
	url  string
	ln   net.Listener
	srv  *http.Server

	mode    atomic.Int32
	accepts atomic.Int64

	mu            sync.Mutex
	conns         map[net.Conn]bool
	held          []net.Conn
	calls         map[string]int // method → calls that reached the replica's handlers
	refuse        map[string]error
	attempts      []string // Paygate-Attempt headers of ExecutePayment calls, in order
	watchers      map[chan *gatewayv1.Payment]bool
	draining      bool
	afterApply    func() // ExecutePayment runs it after recording a new payment, before answering
	afterRegister func() // Register runs it after creating the user, before answering
	admin         *replicaAdmin
}

func newReplica(t *testing.T, name string, sh *shared) *replica {
	t.Helper()
	gf := pki.LeafFiles(certDir, identity.Identity{Role: identity.RoleGateway})
	tlsCfg, err := pki.ServerTLS(pki.CAFile(certDir), gf.Cert, gf.Key, tls.RequireAndVerifyClientCert)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{t: t, name: name, sh: sh, url: "https://" + ln.Addr().String(), ln: ln, conns: map[net.Conn]bool{},
		calls: map[string]int{}, refuse: map[string]error{}, watchers: map[chan *gatewayv1.Payment]bool{}}
	opts := connect.WithInterceptors(replicaInterceptor{r})
	r.admin = &replicaAdmin{r: r}
	mux := http.NewServeMux()
	mux.Handle(gatewayv1connect.NewAdminServiceHandler(r.admin, opts))
	mux.Handle(gatewayv1connect.NewAuthServiceHandler(r, opts))
	mux.Handle(gatewayv1connect.NewPaymentServiceHandler(r, opts))
	mux.Handle(gatewayv1connect.NewBalanceServiceHandler(r, opts))
	mux.Handle(grpchealth.NewHandler(grpchealth.NewStaticChecker()))
	var protocols http.Protocols
	protocols.SetHTTP2(true)
	// The handshakes that the tests make fail would be logged to stderr otherwise.
	r.srv = &http.Server{Handler: mux, TLSConfig: tlsCfg, Protocols: &protocols, ErrorLog: log.New(io.Discard, "", 0)}
	go r.srv.ServeTLS(ctlListener{ln, r}, "", "")
	t.Cleanup(func() {
		r.kill()
		r.srv.Close()
	})
	return r
}

// addr is the replica's HOST:PORT.
func (r *replica) addr() string { return strings.TrimPrefix(r.url, "https://") }

// setMode changes how the replica treats connections; leaving modeUp closes the open ones.
func (r *replica) setMode(m int32) {
	r.mode.Store(m)
	if m == modeUp {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for c := range r.conns {
		c.Close()
	}
	if m == modeDead {
		r.ln.Close()
		for _, c := range r.held {
			c.Close()
		}
	}
}

// kill stops the replica for good, as a process that died: the listener and every connection
// close.
func (r *replica) kill() { r.setMode(modeDead) }

func (r *replica) callsOf(method string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[method]
}

func (r *replica) totalCalls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, v := range r.calls {
		n += v
	}
	return n
}

func (r *replica) refuseWith(method string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refuse[method] = err
}

func (r *replica) watcherCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.watchers)
}

// publish sends p to the replica's open watch streams.
func (r *replica) publish(p *gatewayv1.Payment) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for ch := range r.watchers {
		ch <- p
	}
}

// drain makes the replica end its watch streams, and refuse new ones, with the gateway's
// Unavailable "shutting_down".
func (r *replica) drain() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.draining = true
	for ch := range r.watchers {
		close(ch)
		delete(r.watchers, ch)
	}
}

type ctlListener struct {
	net.Listener
	r *replica
}

func (l ctlListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.r.accepts.Add(1)
		switch l.r.mode.Load() {
		case modeUp:
			l.r.mu.Lock()
			l.r.conns[c] = true
			l.r.mu.Unlock()
			return trackedConn{c, l.r}, nil
		case modeBlackhole:
			l.r.mu.Lock()
			l.r.held = append(l.r.held, c)
			l.r.mu.Unlock()
		default:
			c.Close()
		}
	}
}

type trackedConn struct {
	net.Conn
	r *replica
}

func (c trackedConn) Close() error {
	c.r.mu.Lock()
	delete(c.r.conns, c.Conn)
	c.r.mu.Unlock()
	return c.Conn.Close()
}

// replicaInterceptor counts the calls that reach the replica, answers refusals set with
// refuseWith and checks tokens against the shared sessions.
type replicaInterceptor struct{ r *replica }

func method(procedure string) string { return procedure[strings.LastIndex(procedure, "/")+1:] }

func (i replicaInterceptor) check(procedure string, h http.Header) error {
	m := method(procedure)
	i.r.mu.Lock()
	i.r.calls[m]++
	refusal := i.r.refuse[m]
	i.r.mu.Unlock()
	if refusal != nil {
		return refusal
	}
	if m == "Login" || m == "Register" {
		return nil
	}
	i.r.sh.mu.Lock()
	defer i.r.sh.mu.Unlock()
	if _, ok := i.r.sh.tokens[strings.TrimPrefix(h.Get("Authorization"), "Bearer ")]; !ok {
		return rpcerr.New(connect.CodeUnauthenticated, "invalid_token", "unknown token")
	}
	return nil
}

func (i replicaInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if err := i.check(req.Spec().Procedure, req.Header()); err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func (i replicaInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i replicaInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if err := i.check(conn.Spec().Procedure, conn.RequestHeader()); err != nil {
			return err
		}
		return next(ctx, conn)
	}
}

func (r *replica) Login(_ context.Context, req *connect.Request[gatewayv1.LoginRequest]) (*connect.Response[gatewayv1.LoginResponse], error) {
	r.sh.mu.Lock()
	defer r.sh.mu.Unlock()
	if req.Msg.GetPassword() != "right" {
		return nil, rpcerr.New(connect.CodeUnauthenticated, "invalid_credentials", "wrong username or password")
	}
	resp := &gatewayv1.LoginResponse{Username: req.Msg.GetUsername(), Role: "customer", ExpireTime: timestamppb.New(time.Now().Add(time.Hour))}
	switch req.Msg.GetTotpCode() {
	case "":
	case rightCode:
		resp.Role, resp.SecondFactor = "admin", true
	default:
		return nil, rpcerr.New(connect.CodeUnauthenticated, "invalid_credentials", "wrong username, password or code")
	}
	resp.Token = fmt.Sprintf("tok-%s-%d", req.Msg.GetUsername(), len(r.sh.tokens))
	r.sh.tokens[resp.Token] = req.Msg.GetUsername()
	return connect.NewResponse(resp), nil
}

func (r *replica) Logout(_ context.Context, req *connect.Request[gatewayv1.LogoutRequest]) (*connect.Response[gatewayv1.LogoutResponse], error) {
	return connect.NewResponse(&gatewayv1.LogoutResponse{}), nil
}

func (r *replica) Register(_ context.Context, req *connect.Request[gatewayv1.RegisterRequest]) (*connect.Response[gatewayv1.RegisterResponse], error) {
	r.sh.mu.Lock()
	if r.sh.users[req.Msg.GetUsername()] {
		r.sh.mu.Unlock()
		return nil, rpcerr.New(connect.CodeAlreadyExists, "username_taken", "username taken")
	}
	r.sh.users[req.Msg.GetUsername()] = true
	r.sh.mu.Unlock()
	r.mu.Lock()
	after := r.afterRegister
	r.mu.Unlock()
	if after != nil {
		after()
	}
	var ids []string
	for _, a := range req.Msg.GetAccounts() {
		ids = append(ids, a.GetAccountId())
	}
	return connect.NewResponse(&gatewayv1.RegisterResponse{AccountIds: ids}), nil
}

func (r *replica) ExecutePayment(_ context.Context, req *connect.Request[gatewayv1.ExecutePaymentRequest]) (*connect.Response[gatewayv1.ExecutePaymentResponse], error) {
	m := req.Msg
	r.mu.Lock()
	r.attempts = append(r.attempts, req.Header().Get(rpcserver.AttemptHeader))
	after := r.afterApply
	r.mu.Unlock()
	r.sh.mu.Lock()
	if p, ok := r.sh.applied[m.GetPaymentId()]; ok {
		r.sh.mu.Unlock()
		return connect.NewResponse(&gatewayv1.ExecutePaymentResponse{Payment: p, Replayed: true}), nil
	}
	p := &gatewayv1.Payment{PaymentId: m.GetPaymentId(), FromAccount: m.GetFromAccount(), ToAccount: m.GetToAccount(),
		Amount: m.GetAmount(), Currency: m.GetCurrency(), Status: gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED,
		CreateTime: timestamppb.Now(), DecideTime: timestamppb.Now()}
	r.sh.applied[m.GetPaymentId()] = p
	r.sh.applies[m.GetPaymentId()]++
	r.sh.mu.Unlock()
	if after != nil {
		after()
	}
	return connect.NewResponse(&gatewayv1.ExecutePaymentResponse{Payment: p}), nil
}

func (r *replica) GetPayment(_ context.Context, req *connect.Request[gatewayv1.GetPaymentRequest]) (*connect.Response[gatewayv1.GetPaymentResponse], error) {
	r.sh.mu.Lock()
	defer r.sh.mu.Unlock()
	p, ok := r.sh.applied[req.Msg.GetPaymentId()]
	if !ok {
		return nil, rpcerr.New(connect.CodeNotFound, "payment_not_found", "no such payment")
	}
	return connect.NewResponse(&gatewayv1.GetPaymentResponse{Payment: p}), nil
}

func (r *replica) ListPayments(_ context.Context, _ *connect.Request[gatewayv1.ListPaymentsRequest]) (*connect.Response[gatewayv1.ListPaymentsResponse], error) {
	r.sh.mu.Lock()
	defer r.sh.mu.Unlock()
	resp := &gatewayv1.ListPaymentsResponse{}
	for _, p := range r.sh.applied {
		resp.Payments = append(resp.Payments, p)
	}
	return connect.NewResponse(resp), nil
}

func (r *replica) WatchPayments(ctx context.Context, _ *connect.Request[gatewayv1.WatchPaymentsRequest], stream *connect.ServerStream[gatewayv1.WatchPaymentsResponse]) error {
	ch := make(chan *gatewayv1.Payment, 16)
	r.mu.Lock()
	if r.draining {
		r.mu.Unlock()
		return rpcerr.New(connect.CodeUnavailable, "shutting_down", "the gateway is shutting down; watch again")
	}
	r.watchers[ch] = true
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.watchers, ch)
		r.mu.Unlock()
	}()
	if err := stream.Send(nil); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case p, ok := <-ch:
			if !ok {
				return rpcerr.New(connect.CodeUnavailable, "shutting_down", "the gateway is shutting down; watch again")
			}
			if err := stream.Send(&gatewayv1.WatchPaymentsResponse{Payment: p}); err != nil {
				return err
			}
		}
	}
}

func (r *replica) ListEvents(context.Context, *connect.Request[gatewayv1.ListEventsRequest]) (*connect.Response[gatewayv1.ListEventsResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, nil)
}

func (r *replica) FetchBalance(_ context.Context, _ *connect.Request[gatewayv1.FetchBalanceRequest]) (*connect.Response[gatewayv1.FetchBalanceResponse], error) {
	return connect.NewResponse(&gatewayv1.FetchBalanceResponse{Banks: []*gatewayv1.BankBalances{{Bank: r.name}}}), nil
}

// downAddr is an address where nothing listens, for the Examples.
var downAddr = func() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}()

// newFailoverClient is a client of the replicas' addresses, in this order, with the test
// PKI's client certificate.
func newFailoverClient(t *testing.T, addrs []string, opts ...client.Option) *client.Client {
	t.Helper()
	opts = append([]client.Option{client.WithTLSDir(certDir), client.WithRetry(fastRetry), client.WithTimeout(5 * time.Second)}, opts...)
	c, err := client.NewMulti(addrs, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func addrsOf(rs ...*replica) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.addr())
	}
	return out
}

// answeredBy returns the replica whose name FetchBalance reported.
func answeredBy(t *testing.T, c *client.Client) string {
	t.Helper()
	b, err := c.Balance(testCtx(t, 10*time.Second))
	if err != nil {
		t.Fatalf("Balance: %v", err)
	}
	return b.GetBanks()[0].GetBank()
}

func TestFailoverParsesAddressLists(t *testing.T) {
	t.Parallel()
	opt := client.WithHTTPClient(http.DefaultClient)
	c, err := client.New(" 127.0.0.1:1 , https://127.0.0.1:2,", opt)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, want := c.Addresses(), []string{"https://127.0.0.1:1", "https://127.0.0.1:2"}; !slices.Equal(got, want) {
		t.Fatalf("Addresses() = %v, want %v", got, want)
	}
	if got := c.ActiveAddress(); got != "https://127.0.0.1:1" {
		t.Fatalf("ActiveAddress() before any call = %q, want the first", got)
	}
	m, err := client.NewMulti([]string{"127.0.0.1:1", "127.0.0.1:2,127.0.0.1:3"}, opt)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if n := len(m.Addresses()); n != 3 {
		t.Fatalf("NewMulti: %d addresses, want 3", n)
	}
	for _, bad := range [][]string{{""}, {" , "}, {"127.0.0.1:1,127.0.0.1:1"}, {"127.0.0.1:1", "https://127.0.0.1:1"}, {"127.0.0.1:1,http://127.0.0.1:2"}} {
		if c, err := client.NewMulti(bad, opt); err == nil {
			c.Close()
			t.Errorf("NewMulti(%q): no error", bad)
		}
	}
}

// The first address's replica is dead (its listener closed): every call is made at the second.
func TestFailoverFirstAddressDead(t *testing.T) {
	t.Parallel()
	sh := newShared()
	a, b := newReplica(t, "a", sh), newReplica(t, "b", sh)
	a.kill()
	c := newFailoverClient(t, addrsOf(a, b))
	ctx := testCtx(t, 30*time.Second)
	if _, err := c.Login(ctx, "alice", "right"); err != nil {
		t.Fatalf("Login: %v", err)
	}
	if got := c.ActiveAddress(); got != b.url {
		t.Errorf("ActiveAddress() = %s, want %s", got, b.url)
	}
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if got := answeredBy(t, c); got != "b" {
		t.Fatalf("Balance answered by %q, want b", got)
	}
	r, err := c.Pay(ctx, req("bank1-1001", "bank2-2002", 500))
	if err != nil || r.Status != client.StatusSucceeded {
		t.Fatalf("Pay = %+v, %v", r, err)
	}
	if _, err := c.GetPayment(ctx, r.ID); err != nil {
		t.Fatalf("GetPayment: %v", err)
	}
	if _, err := c.History(ctx, client.HistoryQuery{}); err != nil {
		t.Fatalf("History: %v", err)
	}
	if err := c.Logout(ctx); err != nil {
		t.Fatalf("Logout: %v", err)
	}
	for _, m := range []string{"Login", "FetchBalance", "ExecutePayment", "GetPayment", "ListPayments", "Logout"} {
		if n := b.callsOf(m); n != 1 {
			t.Errorf("%s reached b %d times, want 1", m, n)
		}
	}
	if n := a.accepts.Load(); n != 0 {
		t.Errorf("the dead replica accepted %d connections", n)
	}
}

// A server at the first address that is not the gateway (its certificate names a bank) is
// refused during the handshake and sent nothing; the call is made at the real gateway. When no
// address is the gateway, the error still is ErrNotGateway.
func TestFailoverPastAServerThatIsNotTheGateway(t *testing.T) {
	t.Parallel()
	im := newImpostor(t, loadLeaf(t, identity.Identity{Role: identity.RoleBank, Name: "bank1"}))
	b := newReplica(t, "b", newShared())
	c := newFailoverClient(t, []string{im.ln.Addr().String(), b.addr()})
	if _, err := c.Login(testCtx(t, 10*time.Second), "alice", "right"); err != nil {
		t.Fatalf("Login: %v", err)
	}
	n, got := im.stats()
	if n == 0 || len(got) != 0 {
		t.Fatalf("impostor: %d handshakes, %d bytes received; want at least one handshake and no bytes", n, len(got))
	}
	if b.callsOf("Login") != 1 {
		t.Fatalf("Login reached the gateway %d times, want 1", b.callsOf("Login"))
	}

	im2 := newImpostor(t, loadLeaf(t, identity.Identity{Role: identity.RoleBank, Name: "bank2"}))
	only := newFailoverClient(t, []string{im.ln.Addr().String(), im2.ln.Addr().String()})
	_, err := only.Login(testCtx(t, 10*time.Second), "alice", "right")
	if !errors.Is(err, client.ErrNotGateway) || connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("Login with no gateway at any address: %v; want Unavailable wrapping ErrNotGateway", err)
	}
}

// A replica that answers, even with an error, is the gateway's answer: the call is not made at
// another replica (which shares the database and would say the same).
func TestFailoverRefusalIsNotRetriedElsewhere(t *testing.T) {
	t.Parallel()
	tests := []struct {
		method string
		err    error
		call   func(ctx context.Context, c *client.Client) error
		want   connect.Code
	}{
		{"FetchBalance", rpcerr.New(connect.CodeInvalidArgument, "invalid_argument", "bad request"),
			func(ctx context.Context, c *client.Client) error { _, err := c.Balance(ctx); return err }, connect.CodeInvalidArgument},
		{"GetPayment", rpcerr.New(connect.CodePermissionDenied, "permission_denied", "no"),
			func(ctx context.Context, c *client.Client) error {
				_, err := c.GetPayment(ctx, client.NewPaymentID())
				return err
			}, connect.CodePermissionDenied},
		{"ListPayments", rpcerr.New(connect.CodeUnavailable, "storage_unavailable", "the server's storage is unavailable"),
			func(ctx context.Context, c *client.Client) error {
				_, err := c.History(ctx, client.HistoryQuery{})
				return err
			}, connect.CodeUnavailable},
		{"Login", rpcerr.New(connect.CodeUnauthenticated, "invalid_credentials", "wrong username or password"),
			func(ctx context.Context, c *client.Client) error {
				_, err := c.Login(ctx, "alice", "right")
				return err
			}, connect.CodeUnauthenticated},
		{"ExecutePayment", rpcerr.New(connect.CodeFailedPrecondition, "account_closed", "closed"),
			func(ctx context.Context, c *client.Client) error {
				r, err := c.Pay(ctx, req("bank1-1001", "bank2-2002", 500))
				if err == nil && (r.Status != client.StatusFailed || r.Reason != "account_closed" || r.Attempts != 1) {
					return fmt.Errorf("Pay = %+v, want failed account_closed after 1 attempt", r)
				}
				return rpcerr.New(connect.CodeFailedPrecondition, r.Reason, r.Message)
			}, connect.CodeFailedPrecondition},
	}
	for _, tt := range tests {
		t.Run(tt.method, func(t *testing.T) {
			t.Parallel()
			sh := newShared()
			a, b := newReplica(t, "a", sh), newReplica(t, "b", sh)
			c := newFailoverClient(t, addrsOf(a, b))
			if _, err := c.Login(testCtx(t, 10*time.Second), "alice", "right"); err != nil {
				t.Fatal(err)
			}
			before := a.callsOf(tt.method)
			a.refuseWith(tt.method, tt.err)
			err := tt.call(testCtx(t, 10*time.Second), c)
			if connect.CodeOf(err) != tt.want || client.Reason(err) == "" {
				t.Fatalf("%s: %v; want %s with a reason", tt.method, err, tt.want)
			}
			if n := a.callsOf(tt.method) - before; n != 1 {
				t.Errorf("%s reached a %d times, want 1", tt.method, n)
			}
			if n := b.totalCalls(); n != 0 {
				t.Errorf("b was called %d times, want never", n)
			}
			if got := c.ActiveAddress(); got != a.url {
				t.Errorf("ActiveAddress() = %s, want %s (it answered)", got, a.url)
			}
		})
	}
}

// The client starts with the address that answered last, and goes back to the first ones
// only after the failback period.
func TestFailoverIsSticky(t *testing.T) {
	t.Parallel()
	sh := newShared()
	a, b, cc := newReplica(t, "a", sh), newReplica(t, "b", sh), newReplica(t, "c", sh)
	a.setMode(modeReset)
	c := newFailoverClient(t, addrsOf(a, b, cc), client.WithFailback(time.Hour))
	if _, err := c.Login(testCtx(t, 10*time.Second), "alice", "right"); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if got := answeredBy(t, c); got != "b" {
			t.Fatalf("call %d answered by %q, want b", i, got)
		}
	}
	if n := a.accepts.Load(); n != 1 {
		t.Fatalf("the unreachable first address was tried %d times over 6 calls, want once", n)
	}
	// b stops: the client moves on to c, and stays there, not trying a or b again.
	b.setMode(modeReset)
	if got := answeredBy(t, c); got != "c" {
		t.Fatalf("after b stopped: answered by %q, want c", got)
	}
	nb := b.accepts.Load()
	for i := range 3 {
		if got := answeredBy(t, c); got != "c" {
			t.Fatalf("after b stopped, call %d answered by %q, want c", i+2, got)
		}
	}
	if na, nb2 := a.accepts.Load(), b.accepts.Load(); na != 1 || nb2 != nb {
		t.Fatalf("after moving to c, a was connected to %d times (want 1 in all), b %d more times (want 0)", na, nb2-nb)
	}

	t.Run("failback", func(t *testing.T) {
		sh := newShared()
		a, b := newReplica(t, "a", sh), newReplica(t, "b", sh)
		a.setMode(modeReset)
		c := newFailoverClient(t, addrsOf(a, b), client.WithFailback(300*time.Millisecond))
		start := time.Now()
		if _, err := c.Login(testCtx(t, 10*time.Second), "alice", "right"); err != nil {
			t.Fatal(err)
		}
		a.setMode(modeUp)
		// Until the failback period is over the client stays with b, though a is back.
		for time.Since(start) < 200*time.Millisecond {
			if got := answeredBy(t, c); got != "b" {
				t.Fatalf("%s after moving to b: answered by %q, want b", time.Since(start), got)
			}
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(time.Until(start.Add(350 * time.Millisecond)))
		for i := range 3 {
			if got := answeredBy(t, c); got != "a" {
				t.Fatalf("after the failback period, call %d answered by %q, want a", i, got)
			}
		}
		if got := c.ActiveAddress(); got != a.url {
			t.Fatalf("ActiveAddress() = %s, want %s", got, a.url)
		}
	})
}

// WatchPayments moves to another replica when its stream breaks: the replica stops, or it
// ends the stream because it is shutting down.
func TestFailoverWatchPayments(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"stopped", "shutting down"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			sh := newShared()
			a, b := newReplica(t, "a", sh), newReplica(t, "b", sh)
			// A long backoff: reconnecting to the same address after it would not be in time.
			c := newFailoverClient(t, addrsOf(a, b), client.WithRetry(client.RetryPolicy{InitialBackoff: time.Minute, MaxBackoff: time.Minute}))
			ctx := testCtx(t, 20*time.Second)
			if _, err := c.Login(ctx, "alice", "right"); err != nil {
				t.Fatal(err)
			}
			got := make(chan *gatewayv1.Payment, 8)
			wctx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() {
				for p, err := range c.Watch(wctx) {
					if err != nil {
						done <- err
						return
					}
					got <- p
				}
				done <- nil
			}()
			waitFor(t, "a watcher at a", func() bool { return a.watcherCount() == 1 })
			a.publish(&gatewayv1.Payment{PaymentId: "from-a"})
			expectPayment(t, got, "from-a")
			if how == "stopped" {
				a.setMode(modeReset)
			} else {
				a.drain()
			}
			waitFor(t, "a watcher at b", func() bool { return b.watcherCount() == 1 })
			b.publish(&gatewayv1.Payment{PaymentId: "from-b"})
			expectPayment(t, got, "from-b")
			if got := c.ActiveAddress(); got != b.url {
				t.Errorf("ActiveAddress() = %s, want %s", got, b.url)
			}
			stop()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Watch: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Watch did not stop with its context")
			}
		})
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after 5s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func expectPayment(t *testing.T, ch <-chan *gatewayv1.Payment, id string) {
	t.Helper()
	select {
	case p := <-ch:
		if p.GetPaymentId() != id {
			t.Fatalf("watched %q, want %q", p.GetPaymentId(), id)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%q not watched after 5s", id)
	}
}

// The replica that takes a payment dies after recording it, before answering. The client
// sends the same payment_id to the next replica, which answers with the stored outcome: one
// payment, applied once.
func TestFailoverPaymentIsAppliedOnce(t *testing.T) {
	t.Parallel()
	for _, queued := range []bool{false, true} {
		t.Run(map[bool]string{false: "direct", true: "queued"}[queued], func(t *testing.T) {
			t.Parallel()
			sh := newShared()
			a, b := newReplica(t, "a", sh), newReplica(t, "b", sh)
			a.afterApply = a.kill
			var opts []client.Option
			if queued {
				opts = append(opts, client.WithQueue(t.TempDir()), client.WithPayWait(10*time.Second))
			}
			c := newFailoverClient(t, addrsOf(a, b), opts...)
			ctx := testCtx(t, 20*time.Second)
			if _, err := c.Login(ctx, "alice", "right"); err != nil {
				t.Fatal(err)
			}
			r, err := c.Pay(ctx, req("bank1-1001", "bank2-2002", 700))
			if err != nil {
				t.Fatal(err)
			}
			if r.Status != client.StatusSucceeded || !r.Replayed || r.Attempts != 2 {
				t.Fatalf("Pay = %+v; want succeeded, replayed by the second replica, after 2 attempts", r)
			}
			if n := sh.appliesOf(r.ID); n != 1 {
				t.Fatalf("payment applied %d times, want 1", n)
			}
			a.mu.Lock()
			atA := slices.Clone(a.attempts)
			a.mu.Unlock()
			b.mu.Lock()
			atB := slices.Clone(b.attempts)
			b.mu.Unlock()
			if !slices.Equal(atA, []string{"1"}) || !slices.Equal(atB, []string{"2"}) {
				t.Fatalf("Paygate-Attempt headers: a %v, b %v; want [1] and [2]", atA, atB)
			}
			if queued {
				p, err := c.Queue().Get(ctx, r.ID)
				if err != nil || p.Status != client.StatusSucceeded || p.Attempts != 2 {
					t.Fatalf("queue: %+v, %v; want succeeded after 2 attempts", p, err)
				}
			}
		})
	}
}

// Register is not idempotent: once its request reached a replica it is not sent to another,
// even if that replica then failed. One that could not be sent at all moves on.
func TestFailoverRegisterIsNotSentTwice(t *testing.T) {
	t.Parallel()
	sh := newShared()
	a, b := newReplica(t, "a", sh), newReplica(t, "b", sh)
	a.afterRegister = a.kill
	c := newFailoverClient(t, addrsOf(a, b))
	_, err := c.Register(testCtx(t, 10*time.Second), "erin", "erin-password-1", client.Enrollment{Account: "bank1-1004", Code: "K7QX-3MZD-9TRA-WP4C"})
	if connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("Register at a replica that died while answering: %v, want Unavailable", err)
	}
	if n := b.callsOf("Register"); n != 0 {
		t.Fatalf("Register was sent again, to b (%d calls)", n)
	}
	if got := c.ActiveAddress(); got != b.url {
		t.Errorf("ActiveAddress() = %s, want %s: the next call should start after the address that failed", got, b.url)
	}
	// a is dead now: a registration is sent to b.
	c2 := newFailoverClient(t, addrsOf(a, b))
	if _, err := c2.Register(testCtx(t, 10*time.Second), "frank", "frank-password-1", client.Enrollment{Account: "bank2-2003", Code: "K7QX-3MZD-9TRA-WP4C"}); err != nil {
		t.Fatalf("Register with the first replica dead: %v", err)
	}
	if n := b.callsOf("Register"); n != 1 {
		t.Fatalf("Register reached b %d times, want 1", n)
	}
}

// An address that accepts connections but never completes a handshake costs at most the
// connect timeout; the call's own timeout bounds everything.
func TestFailoverConnectTimeoutAndTotalBound(t *testing.T) {
	t.Parallel()
	sh := newShared()
	a, b := newReplica(t, "a", sh), newReplica(t, "b", sh)
	a.setMode(modeBlackhole)
	c := newFailoverClient(t, addrsOf(a, b), client.WithConnectTimeout(200*time.Millisecond))
	if _, err := c.Login(testCtx(t, 10*time.Second), "alice", "right"); err != nil {
		t.Fatal(err)
	}
	// A new client, which does not know yet that a never connects.
	start := time.Now()
	c2 := newFailoverClient(t, addrsOf(a, b), client.WithConnectTimeout(200*time.Millisecond), client.WithToken(c.Token()))
	if got := answeredBy(t, c2); got != "b" {
		t.Fatalf("answered by %q, want b", got)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the call took %s past an address that never connects, want about the connect timeout", d)
	}

	b.setMode(modeBlackhole)
	c3 := newFailoverClient(t, addrsOf(a, b), client.WithTimeout(time.Second), client.WithToken(c.Token()))
	start = time.Now()
	_, err := c3.Balance(context.Background())
	d := time.Since(start)
	if err == nil {
		t.Fatal("Balance with no address connecting: no error")
	}
	if d > 2*time.Second {
		t.Fatalf("Balance with no address connecting took %s, want about WithTimeout's 1s", d)
	}
	t.Logf("after %s: %v", d.Round(time.Millisecond), err)
}

// When no address answers, a payment is queued (the error is Unavailable without a reason),
// and the sender delivers it once an address answers again.
func TestFailoverAllAddressesDownThenOneBack(t *testing.T) {
	t.Parallel()
	sh := newShared()
	a, b := newReplica(t, "a", sh), newReplica(t, "b", sh)
	c := newFailoverClient(t, addrsOf(a, b), client.WithQueue(t.TempDir()))
	ctx := testCtx(t, 30*time.Second)
	if _, err := c.Login(ctx, "alice", "right"); err != nil {
		t.Fatal(err)
	}
	a.kill()
	b.setMode(modeReset)
	_, err := c.Balance(ctx)
	if connect.CodeOf(err) != connect.CodeUnavailable || client.Reason(err) != "" ||
		!strings.Contains(err.Error(), a.url) || !strings.Contains(err.Error(), b.url) {
		t.Fatalf("Balance with every address down: %v; want Unavailable without a reason naming both addresses", err)
	}
	r, err := c.Pay(ctx, req("bank1-1001", "bank2-2002", 300))
	if err != nil || r.Status != client.StatusQueued || !strings.Contains(r.Message, "unreachable") {
		t.Fatalf("Pay with every address down = %+v, %v; want queued, unreachable", r, err)
	}
	b.setMode(modeUp)
	c.Kick()
	if err := c.Flush(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if n := sh.appliesOf(r.ID); n != 1 {
		t.Fatalf("the queued payment was applied %d times, want 1", n)
	}
	if got := c.ActiveAddress(); got != b.url {
		t.Fatalf("ActiveAddress() = %s, want %s", got, b.url)
	}
}
