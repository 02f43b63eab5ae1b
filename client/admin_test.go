package client_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/paygate/paygate/client"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
	"github.com/paygate/paygate/internal/rpcerr"
)

// rightCode is the TOTP code the fake replicas accept.
const rightCode = "123456"

// replicaAdmin is a replica's AdminService: a few procedures, enough to see where calls go
// and what they carry.
type replicaAdmin struct {
	gatewayv1connect.UnimplementedAdminServiceHandler
	r *replica

	mu         sync.Mutex
	after      map[string]func() // method → run after doing the work, before answering
	requestIDs []string
}

// setAfter makes method run f after doing its work, before answering.
func (a *replicaAdmin) setAfter(method string, f func()) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.after == nil {
		a.after = map[string]func(){}
	}
	a.after[method] = f
}

func (a *replicaAdmin) runAfter(method string) {
	a.mu.Lock()
	f := a.after[method]
	a.mu.Unlock()
	if f != nil {
		f()
	}
}

func (a *replicaAdmin) ListUsers(_ context.Context, req *connect.Request[gatewayv1.ListUsersRequest]) (*connect.Response[gatewayv1.ListUsersResponse], error) {
	a.mu.Lock()
	a.requestIDs = append(a.requestIDs, req.Header().Get("Paygate-Request-Id"))
	a.mu.Unlock()
	// The answering replica's name, as the only user.
	return connect.NewResponse(&gatewayv1.ListUsersResponse{Users: []*gatewayv1.User{{Username: a.r.name}}}), nil
}

func (a *replicaAdmin) CreateUser(_ context.Context, req *connect.Request[gatewayv1.CreateUserRequest]) (*connect.Response[gatewayv1.CreateUserResponse], error) {
	a.r.sh.mu.Lock()
	if a.r.sh.users[req.Msg.GetUsername()] {
		a.r.sh.mu.Unlock()
		return nil, rpcerr.New(connect.CodeAlreadyExists, "username_taken", "username taken")
	}
	a.r.sh.users[req.Msg.GetUsername()] = true
	a.r.sh.mu.Unlock()
	a.runAfter("CreateUser")
	return connect.NewResponse(&gatewayv1.CreateUserResponse{User: &gatewayv1.User{Username: req.Msg.GetUsername(), Role: req.Msg.GetRole()}}), nil
}

func (a *replicaAdmin) Deposit(_ context.Context, req *connect.Request[gatewayv1.DepositRequest]) (*connect.Response[gatewayv1.DepositResponse], error) {
	a.runAfter("Deposit")
	return connect.NewResponse(&gatewayv1.DepositResponse{Entry: &gatewayv1.LedgerEntry{EntryId: req.Msg.GetRequestId(), Admin: a.r.name}}), nil
}

func (r *replica) ChangePassword(_ context.Context, req *connect.Request[gatewayv1.ChangePasswordRequest]) (*connect.Response[gatewayv1.ChangePasswordResponse], error) {
	r.sh.mu.Lock()
	defer r.sh.mu.Unlock()
	if req.Msg.GetCurrentPassword() != "right" {
		return nil, rpcerr.New(connect.CodeUnauthenticated, "invalid_credentials", "wrong password")
	}
	user := r.sh.tokens[strings.TrimPrefix(req.Header().Get("Authorization"), "Bearer ")]
	for tok, u := range r.sh.tokens {
		if u == user {
			delete(r.sh.tokens, tok)
		}
	}
	return connect.NewResponse(&gatewayv1.ChangePasswordResponse{}), nil
}

func TestLoginWithCode(t *testing.T) {
	t.Parallel()
	sh := newShared()
	a := newReplica(t, "a", sh)
	c := newFailoverClient(t, addrsOf(a))
	ctx := testCtx(t, 10*time.Second)

	s, err := c.LoginWithCode(ctx, "root", "right", rightCode)
	if err != nil {
		t.Fatal(err)
	}
	if s.Role != client.RoleAdmin || !s.SecondFactor || s.Token == "" || c.Token() != s.Token {
		t.Errorf("LoginWithCode = %+v (client token %q), want an admin session that passed the second factor", s, c.Token())
	}

	// Without a code: the session has not passed the second factor.
	s, err = c.Login(ctx, "root", "right")
	if err != nil {
		t.Fatal(err)
	}
	if s.SecondFactor || s.Role != client.RoleCustomer {
		t.Errorf("Login = %+v, want no second factor", s)
	}

	// A wrong code fails the login as a wrong password does, and keeps the old token.
	before := c.Token()
	_, err = c.LoginWithCode(ctx, "root", "right", "000000")
	if connect.CodeOf(err) != connect.CodeUnauthenticated || client.Reason(err) != "invalid_credentials" {
		t.Errorf("wrong code: %v, want Unauthenticated invalid_credentials", err)
	}
	if c.Token() != before {
		t.Errorf("a failed login changed the token")
	}
}

func TestChangePassword(t *testing.T) {
	t.Parallel()
	sh := newShared()
	a := newReplica(t, "a", sh)
	c := newFailoverClient(t, addrsOf(a))
	ctx := testCtx(t, 10*time.Second)
	if err := c.ChangePassword(ctx, "right", "a-new-password"); !errors.Is(err, client.ErrNotLoggedIn) {
		t.Fatalf("ChangePassword before login: %v, want ErrNotLoggedIn", err)
	}
	if _, err := c.Login(ctx, "alice", "right"); err != nil {
		t.Fatal(err)
	}
	tok := c.Token()

	err := c.ChangePassword(ctx, "wrong", "a-new-password")
	if connect.CodeOf(err) != connect.CodeUnauthenticated || client.Reason(err) != "invalid_credentials" {
		t.Fatalf("wrong current password: %v, want Unauthenticated invalid_credentials", err)
	}
	if c.Token() != tok {
		t.Fatal("a refused change forgot the token")
	}

	if err := c.ChangePassword(ctx, "right", "a-new-password"); err != nil {
		t.Fatal(err)
	}
	if n := a.callsOf("ChangePassword"); n != 2 {
		t.Errorf("ChangePassword reached the gateway %d times, want 2", n)
	}
	if c.Token() != "" {
		t.Errorf("token %q kept after the gateway ended the user's sessions", c.Token())
	}
	sh.mu.Lock()
	_, live := sh.tokens[tok]
	sh.mu.Unlock()
	if live {
		t.Error("the old token is still a session at the gateway")
	}
}

// Admin's calls carry the token and the caller's headers, and move past a dead address.
func TestAdminFailover(t *testing.T) {
	t.Parallel()
	sh := newShared()
	a, b := newReplica(t, "a", sh), newReplica(t, "b", sh)
	c := newFailoverClient(t, addrsOf(a, b))
	ctx := testCtx(t, 10*time.Second)
	if _, err := c.LoginWithCode(ctx, "root", "right", rightCode); err != nil {
		t.Fatal(err)
	}
	admin := c.Admin()

	req := connect.NewRequest(&gatewayv1.ListUsersRequest{})
	req.Header().Set("Paygate-Request-Id", "req-1")
	resp, err := admin.ListUsers(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.Msg.GetUsers()[0].GetUsername(); got != "a" {
		t.Errorf("ListUsers answered by %s, want a", got)
	}

	// Without a token the gateway refuses the call, as it refuses any other.
	other := newFailoverClient(t, addrsOf(a, b))
	if _, err := other.Admin().ListUsers(ctx, connect.NewRequest(&gatewayv1.ListUsersRequest{})); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("ListUsers without a token: %v, want Unauthenticated", err)
	}

	a.kill()
	req.Header().Set("Paygate-Request-Id", "req-2")
	resp, err = admin.ListUsers(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.Msg.GetUsers()[0].GetUsername(); got != "b" {
		t.Errorf("ListUsers with a dead: answered by %s, want b", got)
	}
	b.admin.mu.Lock()
	ids := b.admin.requestIDs
	b.admin.mu.Unlock()
	if len(ids) != 1 || ids[0] != "req-2" {
		t.Errorf("request ids at b: %v, want [req-2]", ids)
	}
	// Not sent to a: a change moves on too.
	if _, err := admin.CreateUser(ctx, connect.NewRequest(&gatewayv1.CreateUserRequest{Username: "erin", InitialPassword: "initial-pass-1"})); err != nil {
		t.Fatal(err)
	}
	if got := c.ActiveAddress(); got != b.url {
		t.Errorf("ActiveAddress() = %s, want %s", got, b.url)
	}
}

// A change that reached a replica that then died is not sent to another (it could be made
// twice); one with a request_id is.
func TestAdminChangeNotResentAfterItWasSent(t *testing.T) {
	t.Parallel()
	sh := newShared()
	a, b := newReplica(t, "a", sh), newReplica(t, "b", sh)
	c := newFailoverClient(t, addrsOf(a, b))
	ctx := testCtx(t, 10*time.Second)
	if _, err := c.LoginWithCode(ctx, "root", "right", rightCode); err != nil {
		t.Fatal(err)
	}
	a.admin.setAfter("CreateUser", a.kill)
	_, err := c.Admin().CreateUser(ctx, connect.NewRequest(&gatewayv1.CreateUserRequest{Username: "erin", InitialPassword: "initial-pass-1"}))
	if connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("CreateUser at a replica that died answering: %v, want Unavailable", err)
	}
	if n := b.callsOf("CreateUser"); n != 0 {
		t.Errorf("CreateUser sent to b %d times after it reached a", n)
	}

	// A deposit names itself with its request_id: one that reached a replica that died
	// answering is sent to the next, which answers it.
	a, b = newReplica(t, "a", sh), newReplica(t, "b", sh)
	c = newFailoverClient(t, addrsOf(a, b))
	if _, err := c.LoginWithCode(ctx, "root", "right", rightCode); err != nil {
		t.Fatal(err)
	}
	a.admin.setAfter("Deposit", a.kill)
	id := client.NewPaymentID()
	resp, err := c.Admin().Deposit(ctx, connect.NewRequest(&gatewayv1.DepositRequest{AccountId: "bank1-1001", Amount: 100, Currency: "USD", Reason: "test", RequestId: id}))
	if err != nil {
		t.Fatal(err)
	}
	if e := resp.Msg.GetEntry(); e.GetAdmin() != "b" || e.GetEntryId() != id {
		t.Errorf("Deposit answered %v, want b's entry %s", e, id)
	}
	if n := a.callsOf("Deposit"); n != 1 {
		t.Errorf("Deposit reached a %d times, want 1", n)
	}
}
