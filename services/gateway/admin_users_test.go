package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
	"github.com/paygate/paygate/internal/pgdb/pgtest"
	"github.com/paygate/paygate/internal/rpcerr"
)

// AdminService's user and audit procedures, end to end.

// adminCall is one call of every AdminService procedure, with a request that would change
// something (or read) if it were allowed.
type adminCall struct {
	name string
	call func(ctx context.Context, c gatewayv1connect.AdminServiceClient) error
}

func everyAdminCall() []adminCall {
	id := newPaymentID
	return []adminCall{
		{"ListUsers", func(ctx context.Context, c gatewayv1connect.AdminServiceClient) error {
			_, err := c.ListUsers(ctx, connect.NewRequest(&gatewayv1.ListUsersRequest{}))
			return err
		}},
		{"GetUser", func(ctx context.Context, c gatewayv1connect.AdminServiceClient) error {
			_, err := c.GetUser(ctx, connect.NewRequest(&gatewayv1.GetUserRequest{Username: "alice"}))
			return err
		}},
		{"CreateUser", func(ctx context.Context, c gatewayv1connect.AdminServiceClient) error {
			_, err := c.CreateUser(ctx, connect.NewRequest(&gatewayv1.CreateUserRequest{Username: "carol", InitialPassword: "initial-pass-1", Role: RoleAdmin, AccountIds: []string{"bank3-3002"}}))
			return err
		}},
		{"DisableUser", func(ctx context.Context, c gatewayv1connect.AdminServiceClient) error {
			_, err := c.DisableUser(ctx, connect.NewRequest(&gatewayv1.DisableUserRequest{Username: "bob", Reason: "test"}))
			return err
		}},
		{"EnableUser", func(ctx context.Context, c gatewayv1connect.AdminServiceClient) error {
			_, err := c.EnableUser(ctx, connect.NewRequest(&gatewayv1.EnableUserRequest{Username: "bob"}))
			return err
		}},
		{"ResetPassword", func(ctx context.Context, c gatewayv1connect.AdminServiceClient) error {
			_, err := c.ResetPassword(ctx, connect.NewRequest(&gatewayv1.ResetPasswordRequest{Username: "bob", InitialPassword: "initial-pass-1"}))
			return err
		}},
		{"SetRole", func(ctx context.Context, c gatewayv1connect.AdminServiceClient) error {
			_, err := c.SetRole(ctx, connect.NewRequest(&gatewayv1.SetRoleRequest{Username: "alice", Role: RoleAdmin}))
			return err
		}},
		{"LinkAccount", func(ctx context.Context, c gatewayv1connect.AdminServiceClient) error {
			_, err := c.LinkAccount(ctx, connect.NewRequest(&gatewayv1.LinkAccountRequest{Username: "dave", AccountId: "bank1-1003"}))
			return err
		}},
		{"UnlinkAccount", func(ctx context.Context, c gatewayv1connect.AdminServiceClient) error {
			_, err := c.UnlinkAccount(ctx, connect.NewRequest(&gatewayv1.UnlinkAccountRequest{Username: "alice", AccountId: "bank1-1001"}))
			return err
		}},
		{"OpenAccount", func(ctx context.Context, c gatewayv1connect.AdminServiceClient) error {
			_, err := c.OpenAccount(ctx, connect.NewRequest(&gatewayv1.OpenAccountRequest{Bank: "bank1", Holder: "zed", Currency: "USD", RequestId: id()}))
			return err
		}},
		{"CloseAccount", func(ctx context.Context, c gatewayv1connect.AdminServiceClient) error {
			_, err := c.CloseAccount(ctx, connect.NewRequest(&gatewayv1.CloseAccountRequest{AccountId: "bank1-1004", Reason: "test"}))
			return err
		}},
		{"ListBankAccounts", func(ctx context.Context, c gatewayv1connect.AdminServiceClient) error {
			_, err := c.ListBankAccounts(ctx, connect.NewRequest(&gatewayv1.ListBankAccountsRequest{Bank: "bank1"}))
			return err
		}},
		{"Deposit", func(ctx context.Context, c gatewayv1connect.AdminServiceClient) error {
			_, err := c.Deposit(ctx, connect.NewRequest(&gatewayv1.DepositRequest{AccountId: "bank1-1001", Amount: 100, Currency: "USD", Reason: "test", RequestId: id()}))
			return err
		}},
		{"Withdraw", func(ctx context.Context, c gatewayv1connect.AdminServiceClient) error {
			_, err := c.Withdraw(ctx, connect.NewRequest(&gatewayv1.WithdrawRequest{AccountId: "bank1-1001", Amount: 100, Currency: "USD", Reason: "test", RequestId: id()}))
			return err
		}},
		{"ListLedgerEntries", func(ctx context.Context, c gatewayv1connect.AdminServiceClient) error {
			_, err := c.ListLedgerEntries(ctx, connect.NewRequest(&gatewayv1.ListLedgerEntriesRequest{Bank: "bank1"}))
			return err
		}},
		{"SearchPayments", func(ctx context.Context, c gatewayv1connect.AdminServiceClient) error {
			_, err := c.SearchPayments(ctx, connect.NewRequest(&gatewayv1.SearchPaymentsRequest{}))
			return err
		}},
		{"GetPaymentTrail", func(ctx context.Context, c gatewayv1connect.AdminServiceClient) error {
			_, err := c.GetPaymentTrail(ctx, connect.NewRequest(&gatewayv1.GetPaymentTrailRequest{PaymentId: id()}))
			return err
		}},
		{"GetOperations", func(ctx context.Context, c gatewayv1connect.AdminServiceClient) error {
			_, err := c.GetOperations(ctx, connect.NewRequest(&gatewayv1.GetOperationsRequest{}))
			return err
		}},
		{"RedrivePayment", func(ctx context.Context, c gatewayv1connect.AdminServiceClient) error {
			_, err := c.RedrivePayment(ctx, connect.NewRequest(&gatewayv1.RedrivePaymentRequest{PaymentId: id()}))
			return err
		}},
		{"ListAuditLog", func(ctx context.Context, c gatewayv1connect.AdminServiceClient) error {
			_, err := c.ListAuditLog(ctx, connect.NewRequest(&gatewayv1.ListAuditLogRequest{}))
			return err
		}},
		{"VerifyAuditLog", func(ctx context.Context, c gatewayv1connect.AdminServiceClient) error {
			_, err := c.VerifyAuditLog(ctx, connect.NewRequest(&gatewayv1.VerifyAuditLogRequest{}))
			return err
		}},
	}
}

// systemState is what an admin call could change: every user as stored, and every account at
// the banks.
type systemState struct {
	users    []userRecord
	accounts map[string]*bankv1.AccountBalance
}

func (e *adminEnv) state(t testing.TB) systemState {
	t.Helper()
	users, err := e.gw.store.ListUsers(context.Background(), "", "", "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	return systemState{users: users, accounts: e.audit(t, context.Background()).accounts}
}

func (s systemState) equal(o systemState) bool {
	if !reflect.DeepEqual(s.users, o.users) || len(s.accounts) != len(o.accounts) {
		return false
	}
	for id, a := range s.accounts {
		b, ok := o.accounts[id]
		if !ok || a.GetBalance() != b.GetBalance() || a.GetHeld() != b.GetHeld() {
			return false
		}
	}
	return true
}

// TestAdminServiceRefused: every AdminService procedure is refused to anyone but an admin whose
// session passed the second factor and, on the API listener, who presents an admin certificate;
// with the right code and reason, nothing changed, and an audit entry for each refusal.
func TestAdminServiceRefused(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, envOptions{})
	calls := everyAdminCall()
	var names []string
	for _, c := range calls {
		names = append(names, c.name)
	}
	var procs []string
	for _, p := range adminProcedures {
		procs = append(procs, procedureName(p))
	}
	if !slices.Equal(names, procs) {
		t.Fatalf("the test calls %v; AdminService has %v", names, procs)
	}

	adminHTTP := adminHTTPClient(t, "root")
	callers := []struct {
		name       string
		admin      gatewayv1connect.AdminServiceClient
		code       connect.Code
		reason     string
		actor      string
		actorCert  string
		listenerOf string
	}{
		{name: "web, customer", admin: e.loginAt(t, e.webHTTP, e.webURL, "alice", "").admin,
			code: connect.CodePermissionDenied, reason: reasonAdminRequired, actor: "alice"},
		{name: "web, admin without the second factor", admin: e.loginAt(t, e.webHTTP, e.webURL, "root", "").admin,
			code: connect.CodePermissionDenied, reason: reasonSecondFactorRequired, actor: "root"},
		{name: "api, customer with an admin certificate", admin: e.loginAt(t, adminHTTP, e.url, "alice", "").admin,
			code: connect.CodePermissionDenied, reason: reasonAdminRequired, actor: "alice", actorCert: "spiffe://paygate/admin/root"},
		{name: "api, admin without the second factor", admin: e.loginAt(t, adminHTTP, e.url, "root", "").admin,
			code: connect.CodePermissionDenied, reason: reasonSecondFactorRequired, actor: "root", actorCert: "spiffe://paygate/admin/root"},
		{name: "api, admin with a client certificate", admin: e.loginAt(t, e.cliHTTP, e.url, "root", e.code(t, "root")).admin,
			code: connect.CodePermissionDenied, reason: "admin_certificate_required", actorCert: "spiffe://paygate/client/cli"},
		{name: "api, no token", admin: gatewayv1connect.NewAdminServiceClient(adminHTTP, e.url),
			code: connect.CodeUnauthenticated, reason: "missing_token", actorCert: "spiffe://paygate/admin/root"},
	}
	ctx := context.Background()
	before := e.state(t)
	for _, c := range callers {
		t.Run(c.name, func(t *testing.T) {
			logged := len(e.auditLog(t))
			for _, call := range calls {
				wantErr(t, call.call(ctx, c.admin), c.code, c.reason)
			}
			entries := e.auditLog(t)[logged:]
			if len(entries) != len(calls) {
				t.Fatalf("%d audit entries appended; want one per refused call (%d)", len(entries), len(calls))
			}
			for i, r := range entries {
				if r.Action != calls[i].name || r.Outcome != c.code.String() || r.Reason != c.reason ||
					r.Actor != c.actor || r.ActorCert != c.actorCert || r.Peer != "127.0.0.1" || r.After != "" || r.RequestID == "" {
					t.Errorf("audit entry %d = %+v; want action %s, outcome %s, reason %s, actor %q, certificate %q",
						i, r, calls[i].name, c.code, c.reason, c.actor, c.actorCert)
				}
			}
		})
	}
	if after := e.state(t); !before.equal(after) {
		t.Fatalf("refused calls changed the system:\nbefore %+v\nafter  %+v", before, after)
	}
	// The same admin with its certificate and second factor gets through.
	root := e.admin(t, "root")
	if _, err := root.admin.GetUser(ctx, connect.NewRequest(&gatewayv1.GetUserRequest{Username: "alice"})); err != nil {
		t.Fatalf("GetUser as an admin: %v", err)
	}
	web := e.loginAt(t, e.webHTTP, e.webURL, "root", e.code(t, "root"))
	if _, err := web.admin.GetUser(ctx, connect.NewRequest(&gatewayv1.GetUserRequest{Username: "alice"})); err != nil {
		t.Fatalf("GetUser as an admin on the web listener: %v", err)
	}
	// A request id sent by the caller is the audit entry's.
	req := connect.NewRequest(&gatewayv1.GetUserRequest{Username: "bob"})
	req.Header().Set(RequestIDHeader, "op-ticket-42")
	if _, err := root.admin.GetUser(ctx, req); err != nil {
		t.Fatal(err)
	}
	log := e.auditLog(t)
	if last := log[len(log)-1]; last.RequestID != "op-ticket-42" || last.Action != "GetUser" || last.Target != "user:bob" || last.Actor != "root" || last.Outcome != "ok" {
		t.Fatalf("last audit entry %+v; want GetUser user:bob by root, ok, request id op-ticket-42", last)
	}
}

// TestRefusedAdminCallsAuditBudget: a stranger's refused calls are audited up to a budget per
// address and minute; the rest are counted in one summary entry.
func TestRefusedAdminCallsAuditBudget(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, envOptions{})
	lim := e.gw.refusalBudget()
	lim.mu.Lock()
	lim.burst = refusalAuditBurst
	lim.mu.Unlock()
	ctx := context.Background()
	stranger := gatewayv1connect.NewAdminServiceClient(adminHTTPClient(t, "root"), e.url)
	logged := len(e.auditLog(t))
	for range refusalAuditBurst + 7 {
		_, err := stranger.ListUsers(ctx, connect.NewRequest(&gatewayv1.ListUsersRequest{}))
		wantErr(t, err, connect.CodeUnauthenticated, "missing_token")
	}
	if n := len(e.auditLog(t)) - logged; n != refusalAuditBurst {
		t.Fatalf("%d entries for %d refusals; want %d", n, refusalAuditBurst+7, refusalAuditBurst)
	}
	// The next window: the summary of the one before, then the refusal.
	e.clk.Advance(refusalAuditWindow)
	_, err := stranger.ListUsers(ctx, connect.NewRequest(&gatewayv1.ListUsersRequest{}))
	wantErr(t, err, connect.CodeUnauthenticated, "missing_token")
	entries := e.auditLog(t)[logged+refusalAuditBurst:]
	if len(entries) != 2 {
		t.Fatalf("entries after the window: %+v; want the summary and the refusal", entries)
	}
	sum := entries[0]
	var after struct {
		Count   int    `json:"count"`
		Summary string `json:"summary"`
	}
	if err := json.Unmarshal([]byte(sum.After), &after); err != nil {
		t.Fatalf("summary's after %q: %v", sum.After, err)
	}
	if sum.Action != refusalSummaryAction || sum.Target != "peer:127.0.0.1" || after.Count != 7 || after.Summary != "7 more refused admin calls from 127.0.0.1" {
		t.Fatalf("summary entry %+v (%+v)", sum, after)
	}
	if entries[1].Action != "ListUsers" || entries[1].Reason != "missing_token" {
		t.Fatalf("entry after the summary %+v", entries[1])
	}
	// An admin's calls are not refusals and are all audited.
	root := e.admin(t, "root")
	for range refusalAuditBurst + 1 {
		if _, err := root.admin.ListUsers(ctx, connect.NewRequest(&gatewayv1.ListUsersRequest{})); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(e.auditLog(t)) - logged - refusalAuditBurst - 2; n != refusalAuditBurst+1 {
		t.Fatalf("%d entries for %d admin calls", n, refusalAuditBurst+1)
	}
}

// TestRefusalLimiterSummaryWhenWindowEnds: the summary is appended when the window ends even if
// no refusal follows.
func TestRefusalLimiterSummaryWhenWindowEnds(t *testing.T) {
	t.Parallel()
	s, err := OpenStore(context.Background(), filepath.Join(t.TempDir(), "gateway.db"), false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	g := &Gateway{store: s, logger: slog.New(slog.DiscardHandler)}
	l := newRefusalLimiter(2, 100*time.Millisecond)
	now := time.Now()
	var admitted int
	for i := range 5 {
		if l.admit(g, "10.0.0.1", now.Add(time.Duration(i)*time.Millisecond)) {
			admitted++
		}
	}
	if !l.admit(g, "10.0.0.2", now) || admitted != 2 {
		t.Fatalf("admitted %d of 5 from one address; want 2, and another address admitted", admitted)
	}
	waitFor(t, 5*time.Second, "the summary", func() bool {
		recs, err := s.ScanAudit(context.Background(), 0, 10)
		return err == nil && len(recs) == 1 && strings.Contains(recs[0].After, `"3 more refused admin calls from 10.0.0.1"`)
	})
	// It is appended once: not again when the next window starts.
	time.Sleep(200 * time.Millisecond)
	if !l.admit(g, "10.0.0.1", now.Add(time.Second)) {
		t.Fatal("a refusal of the next window was not admitted")
	}
	if recs, err := s.ScanAudit(context.Background(), 0, 10); err != nil || len(recs) != 1 {
		t.Fatalf("audit log %+v, %v; want the one summary", recs, err)
	}
}

// hookStore lets a test run code inside the gateway's store calls.
type hookStore struct {
	Store
	beforeUpdate atomic.Pointer[func(username string)]
}

func (s *hookStore) UpdateUser(ctx context.Context, username string, fn func(u *userRecord) error, revoke bool, now time.Time) (userRecord, userRecord, int, error) {
	if h := s.beforeUpdate.Load(); h != nil {
		(*h)(username)
	}
	return s.Store.UpdateUser(ctx, username, fn, revoke, now)
}

// TestAdminSelfAndLastAdmin: an admin cannot disable itself or drop its own admin role, and two
// admins demoting each other at the same time leave one admin.
func TestAdminSelfAndLastAdmin(t *testing.T) {
	t.Parallel()
	var hs *hookStore
	e := newAdminEnv(t, envOptions{beforeStart: func(g *Gateway) {
		hs = &hookStore{Store: g.store}
		g.store = hs
	}})
	ctx := context.Background()
	root, ops := e.admin(t, "root"), e.admin(t, "ops")
	before := e.state(t)
	_, err := root.admin.DisableUser(ctx, connect.NewRequest(&gatewayv1.DisableUserRequest{Username: "root", Reason: "test"}))
	wantErr(t, err, connect.CodeFailedPrecondition, reasonCannotChangeSelf)
	_, err = root.admin.SetRole(ctx, connect.NewRequest(&gatewayv1.SetRoleRequest{Username: "root", Role: RoleCustomer}))
	wantErr(t, err, connect.CodeFailedPrecondition, reasonCannotChangeSelf)
	if !before.equal(e.state(t)) {
		t.Fatal("a refused self-change changed the users")
	}

	// Both calls reach the store before either is written.
	var barrier sync.WaitGroup
	barrier.Add(2)
	hook := func(string) { barrier.Done(); barrier.Wait() }
	hs.beforeUpdate.Store(&hook)
	errs := make(chan error, 2)
	go func() {
		_, err := root.admin.SetRole(ctx, connect.NewRequest(&gatewayv1.SetRoleRequest{Username: "ops", Role: RoleCustomer}))
		errs <- err
	}()
	go func() {
		_, err := ops.admin.DisableUser(ctx, connect.NewRequest(&gatewayv1.DisableUserRequest{Username: "root", Reason: "coup"}))
		errs <- err
	}()
	var ok, lastAdmin int
	for range 2 {
		switch err := <-errs; {
		case err == nil:
			ok++
		case connect.CodeOf(err) == connect.CodeFailedPrecondition && rpcerr.Reason(err) == reasonLastAdmin:
			lastAdmin++
		default:
			t.Errorf("unexpected answer %v", err)
		}
	}
	hs.beforeUpdate.Store(nil)
	if ok != 1 || lastAdmin != 1 {
		t.Fatalf("%d succeeded and %d refused last_admin; want one each", ok, lastAdmin)
	}
	users, err := e.gw.store.ListUsers(ctx, "", RoleAdmin, "", 10)
	if err != nil {
		t.Fatal(err)
	}
	enabled := 0
	for _, u := range users {
		if !u.Disabled {
			enabled++
		}
	}
	if enabled != 1 {
		t.Fatalf("enabled admins after the race: %+v; want exactly one", users)
	}
}

// TestDisableUserEndsWatchStream: DisableUser ends the user's open WatchPayments streams at once.
func TestDisableUserEndsWatchStream(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, envOptions{})
	root := e.admin(t, "root")
	alice := e.customer(t, "alice")
	bob := e.customer(t, "bob")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	watch := func(s *session) <-chan error {
		ended := make(chan error, 1)
		stream, err := s.payments.WatchPayments(ctx, connect.NewRequest(&gatewayv1.WatchPaymentsRequest{}))
		if err != nil {
			ended <- err
			return ended
		}
		go func() {
			for stream.Receive() {
			}
			ended <- stream.Err()
			stream.Close()
		}()
		return ended
	}
	aliceEnded, bobEnded := watch(alice), watch(bob)
	waitFor(t, 5*time.Second, "the watchers", func() bool {
		return e.gw.events.watcherCount("alice") == 1 && e.gw.events.watcherCount("bob") == 1
	})
	start := time.Now()
	if _, err := root.admin.DisableUser(ctx, connect.NewRequest(&gatewayv1.DisableUserRequest{Username: "alice", Reason: "test"})); err != nil {
		t.Fatal(err)
	}
	err := recv(t, aliceEnded, "alice's stream to end")
	wantErr(t, err, connect.CodeUnauthenticated, reasonUserDisabled)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the stream ended %s after DisableUser; want at once", d)
	}
	select {
	case err := <-bobEnded:
		t.Fatalf("bob's stream ended too: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	// A new stream of the disabled user is refused.
	wantErr(t, <-watch(alice), connect.CodeUnauthenticated, reasonUserDisabled)
}

// TestCreateUserAndLinks: CreateUser and LinkAccount link only accounts whose bank confirms the
// holder, open and not linked; nothing is created when an account fails.
func TestCreateUserAndLinks(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, envOptions{})
	ctx := context.Background()
	root := e.admin(t, "root")
	create := func(username string, accounts ...string) (*gatewayv1.CreateUserResponse, error) {
		resp, err := root.admin.CreateUser(ctx, connect.NewRequest(&gatewayv1.CreateUserRequest{Username: username, InitialPassword: "initial-pass-1", AccountIds: accounts}))
		if err != nil {
			return nil, err
		}
		return resp.Msg, nil
	}
	// A closed account held by dave.
	bank1 := e.bankClient("bank1")
	opened, err := bank1.OpenAccount(ctx, connect.NewRequest(&bankv1.OpenAccountRequest{RequestId: newPaymentID(), Holder: "dave", Currency: "USD"}))
	if err != nil {
		t.Fatalf("open an account at bank1: %v", err)
	}
	closedID := opened.Msg.GetAccount().GetAccountId()
	if _, err := bank1.CloseAccount(ctx, connect.NewRequest(&bankv1.CloseAccountRequest{AccountId: closedID})); err != nil {
		t.Fatalf("close %s: %v", closedID, err)
	}
	before := e.state(t)
	for _, c := range []struct {
		name     string
		accounts []string
		code     connect.Code
		reason   string
		field    string
	}{
		{"unknown bank", []string{"bank1-1003", "bank9-1"}, connect.CodeNotFound, reasonAccountNotFound, "account_ids[1]"},
		{"unknown account", []string{"bank1-9999"}, connect.CodeNotFound, reasonAccountNotFound, "account_ids[0]"},
		{"another holder", []string{"bank1-1003", "bank2-2003"}, connect.CodeFailedPrecondition, reasonHolderMismatch, "account_ids[1]"},
		{"linked to alice", []string{"bank1-1003", "bank1-1001"}, connect.CodeAlreadyExists, reasonAccountLinked, "account_ids[1]"},
		{"closed", []string{"bank1-1003", closedID}, connect.CodeFailedPrecondition, reasonAccountClosed, "account_ids[1]"},
	} {
		_, err := create("dave", c.accounts...)
		wantErr(t, err, c.code, c.reason)
		if !strings.Contains(err.Error(), c.field) {
			t.Errorf("%s: %v does not name %s", c.name, err, c.field)
		}
	}
	_, err = create("alice")
	wantErr(t, err, connect.CodeAlreadyExists, "username_taken")
	// A bank that is down.
	e.banks["bank3"].stop(t)
	_, err = create("carol", "bank3-3002")
	wantErr(t, err, connect.CodeUnavailable, "bank_unavailable")
	e.banks["bank3"].start(t)
	if !before.equal(e.state(t)) {
		t.Fatal("a refused CreateUser changed the users")
	}

	resp, err := create("dave", "bank1-1003")
	if err != nil {
		t.Fatalf("CreateUser dave: %v", err)
	}
	u := resp.GetUser()
	if u.GetUsername() != "dave" || u.GetRole() != RoleCustomer || !u.GetPasswordChangeRequired() || u.GetDisabled() ||
		u.GetSecondFactorEnrolled() || !slices.Equal(u.GetAccountIds(), []string{"bank1-1003"}) || u.GetCreateTime() == nil || resp.GetSecondFactor() != nil {
		t.Fatalf("CreateUser = %+v", resp)
	}

	// LinkAccount and UnlinkAccount.
	link := func(username, id string) error {
		_, err := root.admin.LinkAccount(ctx, connect.NewRequest(&gatewayv1.LinkAccountRequest{Username: username, AccountId: id}))
		return err
	}
	unlink := func(username, id string) error {
		_, err := root.admin.UnlinkAccount(ctx, connect.NewRequest(&gatewayv1.UnlinkAccountRequest{Username: username, AccountId: id}))
		return err
	}
	wantErr(t, link("nobody", "bank1-1004"), connect.CodeNotFound, reasonUserNotFound)
	wantErr(t, link("dave", "bank1-1004"), connect.CodeFailedPrecondition, reasonHolderMismatch) // erin's
	wantErr(t, link("dave", "bank1-1003"), connect.CodeAlreadyExists, reasonAccountLinked)
	wantErr(t, link("dave", "bank2-2001"), connect.CodeAlreadyExists, reasonAccountLinked)
	wantErr(t, link("dave", closedID), connect.CodeFailedPrecondition, reasonAccountClosed)
	opened, err = bank1.OpenAccount(ctx, connect.NewRequest(&bankv1.OpenAccountRequest{RequestId: newPaymentID(), Holder: "dave", Currency: "USD"}))
	if err != nil {
		t.Fatal(err)
	}
	second := opened.Msg.GetAccount().GetAccountId()
	if err := link("dave", second); err != nil {
		t.Fatalf("LinkAccount: %v", err)
	}
	got, err := root.admin.GetUser(ctx, connect.NewRequest(&gatewayv1.GetUserRequest{Username: "dave"}))
	if err != nil || !slices.Contains(got.Msg.GetUser().GetAccountIds(), second) {
		t.Fatalf("GetUser after LinkAccount = %v, %v", got, err)
	}
	wantErr(t, unlink("dave", "bank1-1001"), connect.CodeNotFound, reasonAccountNotLinked)
	wantErr(t, unlink("nobody", "bank1-1001"), connect.CodeNotFound, reasonUserNotFound)

	// An unlinked account can no longer be paid from, even by a user who paid from it before.
	alice := e.customer(t, "alice")
	alice.pay(t, newPaymentID(), "bank1-1001", "bank2-2002", 100)
	if err := unlink("alice", "bank1-1001"); err != nil {
		t.Fatalf("UnlinkAccount: %v", err)
	}
	_, err = alice.tryPay(ctx, newPaymentID(), "bank1-1001", "bank2-2002", 100)
	wantErr(t, err, connect.CodePermissionDenied, "not_account_owner")
	// ... and may be linked to its holder again.
	if err := link("alice", "bank1-1001"); err != nil {
		t.Fatalf("LinkAccount back: %v", err)
	}
	alice.pay(t, newPaymentID(), "bank1-1001", "bank2-2002", 100)
	e.assertSettled(t)
}

// TestSetRole: making a user an admin enrolls a second factor it can sign in with; demoting it
// removes it; sessions end either way.
func TestSetRole(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, envOptions{})
	ctx := context.Background()
	root := e.admin(t, "root")
	bob := e.customer(t, "bob")
	resp, err := root.admin.SetRole(ctx, connect.NewRequest(&gatewayv1.SetRoleRequest{Username: "bob", Role: RoleAdmin}))
	if err != nil {
		t.Fatalf("SetRole admin: %v", err)
	}
	sf := resp.Msg.GetSecondFactor()
	if resp.Msg.GetUser().GetRole() != RoleAdmin || !resp.Msg.GetUser().GetSecondFactorEnrolled() || sf.GetSecret() == "" ||
		!strings.HasPrefix(sf.GetOtpauthUrl(), "otpauth://totp/paygate:bob?") || !strings.Contains(sf.GetOtpauthUrl(), "secret="+sf.GetSecret()) {
		t.Fatalf("SetRole = %+v", resp.Msg)
	}
	wantErr(t, tryBalance(bob.clients), connect.CodeUnauthenticated, "token_revoked")
	e.secrets["bob"] = sf.GetSecret()
	bobAdmin := e.admin(t, "bob")
	if !bobAdmin.login.GetSecondFactor() || bobAdmin.login.GetRole() != RoleAdmin {
		t.Fatalf("bob's admin login = %+v", bobAdmin.login)
	}
	if _, err := bobAdmin.admin.ListUsers(ctx, connect.NewRequest(&gatewayv1.ListUsersRequest{})); err != nil {
		t.Fatalf("bob's ListUsers: %v", err)
	}
	// The same role again changes nothing: no new secret, no session ends.
	again, err := root.admin.SetRole(ctx, connect.NewRequest(&gatewayv1.SetRoleRequest{Username: "bob", Role: RoleAdmin}))
	if err != nil || again.Msg.GetSecondFactor() != nil {
		t.Fatalf("SetRole admin again = %v, %v; want no new second factor", again, err)
	}
	if _, err := bobAdmin.admin.ListUsers(ctx, connect.NewRequest(&gatewayv1.ListUsersRequest{})); err != nil {
		t.Fatalf("bob's session after a SetRole that changed nothing: %v", err)
	}
	demoted, err := root.admin.SetRole(ctx, connect.NewRequest(&gatewayv1.SetRoleRequest{Username: "bob", Role: RoleCustomer}))
	if err != nil || demoted.Msg.GetUser().GetSecondFactorEnrolled() || demoted.Msg.GetUser().GetRole() != RoleCustomer {
		t.Fatalf("SetRole customer = %v, %v", demoted, err)
	}
	_, err = bobAdmin.admin.ListUsers(ctx, connect.NewRequest(&gatewayv1.ListUsersRequest{}))
	wantErr(t, err, connect.CodeUnauthenticated, "token_revoked")
	_, err = e.tryLoginAt(adminHTTPClient(t, "bob"), e.url, "bob", "bob-pass-456", e.code(t, "bob"))
	wantErr(t, err, connect.CodeUnauthenticated, "invalid_credentials")
	_, err = root.admin.SetRole(ctx, connect.NewRequest(&gatewayv1.SetRoleRequest{Username: "nobody", Role: RoleAdmin}))
	wantErr(t, err, connect.CodeNotFound, reasonUserNotFound)

	// An admin without a second factor (as a users file makes them) is enrolled by SetRole admin.
	if _, _, _, err := e.gw.store.UpdateUser(ctx, "ops", func(u *userRecord) error { u.TOTPSecret = ""; return nil }, false, e.clk.Now()); err != nil {
		t.Fatal(err)
	}
	enrolled, err := root.admin.SetRole(ctx, connect.NewRequest(&gatewayv1.SetRoleRequest{Username: "ops", Role: RoleAdmin}))
	if err != nil || enrolled.Msg.GetSecondFactor().GetSecret() == "" || !enrolled.Msg.GetUser().GetSecondFactorEnrolled() {
		t.Fatalf("SetRole admin of an admin without a second factor = %v, %v; want one enrolled", enrolled, err)
	}
	e.secrets["ops"] = enrolled.Msg.GetSecondFactor().GetSecret()
	if s := e.admin(t, "ops"); !s.login.GetSecondFactor() {
		t.Fatalf("ops's login with its new second factor = %+v", s.login)
	}

	// CreateUser of an admin enrolls one too.
	created, err := root.admin.CreateUser(ctx, connect.NewRequest(&gatewayv1.CreateUserRequest{Username: "auditor", InitialPassword: "initial-pass-1", Role: RoleAdmin}))
	if err != nil || created.Msg.GetSecondFactor().GetSecret() == "" || !created.Msg.GetUser().GetSecondFactorEnrolled() {
		t.Fatalf("CreateUser admin = %v, %v", created, err)
	}
	// Its initial password must be changed before AdminService takes it.
	e.secrets["auditor"] = created.Msg.GetSecondFactor().GetSecret()
	s, err := e.tryLoginAt(adminHTTPClient(t, "auditor"), e.url, "auditor", "initial-pass-1", e.code(t, "auditor"))
	if err != nil || !s.login.GetSecondFactor() || !s.login.GetPasswordChangeRequired() {
		t.Fatalf("the new admin's login = %v, %v", s, err)
	}
	_, err = s.admin.ListUsers(ctx, connect.NewRequest(&gatewayv1.ListUsersRequest{}))
	wantErr(t, err, connect.CodeFailedPrecondition, reasonPasswordChangeRequired)
}

// TestListUsers: pages, filters and page tokens.
func TestListUsers(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, envOptions{})
	ctx := context.Background()
	root := e.admin(t, "root")
	list := func(m *gatewayv1.ListUsersRequest) []string {
		t.Helper()
		var names []string
		for {
			resp, err := root.admin.ListUsers(ctx, connect.NewRequest(m))
			if err != nil {
				t.Fatalf("ListUsers(%v): %v", m, err)
			}
			for _, u := range resp.Msg.GetUsers() {
				names = append(names, u.GetUsername())
			}
			if resp.Msg.GetNextPageToken() == "" {
				return names
			}
			m.PageToken = resp.Msg.GetNextPageToken()
		}
	}
	if got := list(&gatewayv1.ListUsersRequest{PageSize: 1}); !slices.Equal(got, []string{"alice", "bob", "ops", "root"}) {
		t.Fatalf("every user a page at a time = %v", got)
	}
	if got := list(&gatewayv1.ListUsersRequest{Role: RoleAdmin}); !slices.Equal(got, []string{"ops", "root"}) {
		t.Fatalf("admins = %v", got)
	}
	if got := list(&gatewayv1.ListUsersRequest{Query: "O", PageSize: 2}); !slices.Equal(got, []string{"bob", "ops", "root"}) {
		t.Fatalf("query o = %v", got)
	}
	first, err := root.admin.ListUsers(ctx, connect.NewRequest(&gatewayv1.ListUsersRequest{PageSize: 1}))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []*gatewayv1.ListUsersRequest{
		{PageToken: "garbage!"},
		{PageToken: "eyJ4IjoxfQ"},                                  // {"x":1}
		{PageToken: first.Msg.GetNextPageToken(), Role: RoleAdmin}, // another listing's
	} {
		_, err := root.admin.ListUsers(ctx, connect.NewRequest(m))
		wantErr(t, err, connect.CodeInvalidArgument, reasonInvalidPageToken)
	}
	alice, err := root.admin.GetUser(ctx, connect.NewRequest(&gatewayv1.GetUserRequest{Username: "alice"}))
	if err != nil || !slices.Equal(alice.Msg.GetUser().GetAccountIds(), []string{"bank1-1001", "bank2-2001"}) || alice.Msg.GetUser().GetRole() != RoleCustomer {
		t.Fatalf("GetUser alice = %v, %v", alice, err)
	}
	_, err = root.admin.GetUser(ctx, connect.NewRequest(&gatewayv1.GetUserRequest{Username: "nobody"}))
	wantErr(t, err, connect.CodeNotFound, reasonUserNotFound)
}

// TestAuditLogOfAdminActions: the audit log holds exactly the admin actions made, with what
// each changed and never a password, hash or secret; it verifies.
func TestAuditLogOfAdminActions(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, envOptions{})
	ctx := context.Background()
	root := e.admin(t, "root")
	created, err := root.admin.CreateUser(ctx, connect.NewRequest(&gatewayv1.CreateUserRequest{Username: "dave", InitialPassword: "daves-initial-1", Role: RoleAdmin, AccountIds: []string{"bank1-1003"}}))
	if err != nil {
		t.Fatal(err)
	}
	secret := created.Msg.GetSecondFactor().GetSecret()
	steps := []func() error{
		func() error {
			_, err := root.admin.DisableUser(ctx, connect.NewRequest(&gatewayv1.DisableUserRequest{Username: "bob", Reason: "lost laptop"}))
			return err
		},
		func() error {
			_, err := root.admin.EnableUser(ctx, connect.NewRequest(&gatewayv1.EnableUserRequest{Username: "bob"}))
			return err
		},
		func() error {
			_, err := root.admin.ResetPassword(ctx, connect.NewRequest(&gatewayv1.ResetPasswordRequest{Username: "bob", InitialPassword: "bobs-initial-2"}))
			return err
		},
		func() error {
			_, err := root.admin.SetRole(ctx, connect.NewRequest(&gatewayv1.SetRoleRequest{Username: "dave", Role: RoleCustomer}))
			return err
		},
		func() error {
			_, err := root.admin.UnlinkAccount(ctx, connect.NewRequest(&gatewayv1.UnlinkAccountRequest{Username: "alice", AccountId: "bank2-2001"}))
			return err
		},
		func() error {
			_, err := root.admin.LinkAccount(ctx, connect.NewRequest(&gatewayv1.LinkAccountRequest{Username: "alice", AccountId: "bank2-2001"}))
			return err
		},
		func() error { // refused by the handler: audited with its reason
			_, err := root.admin.GetUser(ctx, connect.NewRequest(&gatewayv1.GetUserRequest{Username: "nobody"}))
			if connect.CodeOf(err) == connect.CodeNotFound {
				return nil
			}
			return fmt.Errorf("GetUser nobody: %v", err)
		},
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	resp, err := root.admin.ListAuditLog(ctx, connect.NewRequest(&gatewayv1.ListAuditLogRequest{Actor: "root"}))
	if err != nil {
		t.Fatal(err)
	}
	type want struct{ action, target, outcome, reason string }
	wanted := []want{ // newest first
		{"GetUser", "user:nobody", "not_found", reasonUserNotFound},
		{"LinkAccount", "user:alice", "ok", ""},
		{"UnlinkAccount", "user:alice", "ok", ""},
		{"SetRole", "user:dave", "ok", ""},
		{"ResetPassword", "user:bob", "ok", ""},
		{"EnableUser", "user:bob", "ok", ""},
		{"DisableUser", "user:bob", "ok", ""},
		{"CreateUser", "user:dave", "ok", ""},
	}
	entries := resp.Msg.GetEntries()
	if len(entries) != len(wanted) {
		t.Fatalf("root's audit entries: %v; want %d", entries, len(wanted))
	}
	for i, w := range wanted {
		en := entries[i]
		if en.GetAction() != w.action || en.GetTarget() != w.target || en.GetOutcome() != w.outcome || en.GetReason() != w.reason ||
			en.GetActor() != "root" || en.GetActorCertificate() != "spiffe://paygate/admin/root" || len(en.GetHash()) != 64 {
			t.Errorf("entry %d = %v; want %+v", i, en, w)
		}
		if i > 0 && entries[i-1].GetPrevHash() != en.GetHash() {
			t.Errorf("entry %d's hash is not the previous hash of the one after it", i)
		}
		for _, secretText := range []string{secret, "daves-initial-1", "bobs-initial-2", "$2a$", "lost laptop\\u0000"} {
			if strings.Contains(en.GetBefore()+en.GetAfter(), secretText) {
				t.Errorf("entry %d holds %q: %s / %s", i, secretText, en.GetBefore(), en.GetAfter())
			}
		}
	}
	var disable struct {
		Disabled bool   `json:"disabled"`
		Reason   string `json:"reason"`
	}
	if err := json.Unmarshal([]byte(entries[6].GetAfter()), &disable); err != nil || !disable.Disabled || disable.Reason != "lost laptop" {
		t.Errorf("DisableUser's after = %s", entries[6].GetAfter())
	}
	if !strings.Contains(entries[6].GetBefore(), `"disabled":false`) {
		t.Errorf("DisableUser's before = %s", entries[6].GetBefore())
	}
	if !strings.Contains(entries[3].GetBefore(), `"role":"admin"`) || !strings.Contains(entries[3].GetAfter(), `"role":"customer"`) {
		t.Errorf("SetRole's before/after = %s / %s", entries[3].GetBefore(), entries[3].GetAfter())
	}

	// Paging newest first, and tokens.
	var seqs []int64
	req := &gatewayv1.ListAuditLogRequest{PageSize: 3}
	for {
		page, err := root.admin.ListAuditLog(ctx, connect.NewRequest(req))
		if err != nil {
			t.Fatal(err)
		}
		for _, en := range page.Msg.GetEntries() {
			seqs = append(seqs, en.GetSeq())
		}
		if page.Msg.GetNextPageToken() == "" {
			break
		}
		req.PageToken = page.Msg.GetNextPageToken()
	}
	for i := range seqs {
		if seqs[i] != seqs[0]-int64(i) {
			t.Fatalf("audit log pages = %v; want every seq once, newest first", seqs)
		}
	}
	if seqs[len(seqs)-1] != 1 {
		t.Fatalf("audit log pages end at %d; want 1", seqs[len(seqs)-1])
	}
	_, err = root.admin.ListAuditLog(ctx, connect.NewRequest(&gatewayv1.ListAuditLogRequest{PageToken: "nope"}))
	wantErr(t, err, connect.CodeInvalidArgument, reasonInvalidPageToken)

	v, err := root.admin.VerifyAuditLog(ctx, connect.NewRequest(&gatewayv1.VerifyAuditLogRequest{}))
	if err != nil || !v.Msg.GetOk() || v.Msg.GetEntries() < int64(len(wanted)) || v.Msg.GetFirstBrokenSeq() != 0 {
		t.Fatalf("VerifyAuditLog = %v, %v", v, err)
	}
	log := e.auditLog(t)
	if last := log[len(log)-1]; last.Action != "VerifyAuditLog" || last.Target != auditTarget || !strings.Contains(last.After, `"ok":true`) {
		t.Fatalf("VerifyAuditLog's own entry = %+v", last)
	}
}

// TestBootstrapAdmin: the first admin, made against the store, signs in with its second factor.
func TestBootstrapAdmin(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	at := StoreLocation{DataDir: e.gw.cfg.DataDir}
	for _, c := range []struct{ username, password, want string }{
		{"r", "root-pass-123", "username"},
		{"root", "short", "password"},
		{"alice", "root-pass-123", "alice exists already"},
	} {
		_, err := BootstrapAdmin(ctx, at, c.username, c.password, "local:root")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("BootstrapAdmin(%q, %q) = %v; want an error naming %s", c.username, c.password, err, c.want)
		}
	}
	if _, err := BootstrapAdmin(ctx, StoreLocation{DataDir: filepath.Join(e.dir, "typo")}, "root", "root-pass-123", "local:root"); err == nil {
		t.Error("BootstrapAdmin made a store in a directory that had none")
	} else if _, serr := os.Stat(filepath.Join(e.dir, "typo")); serr == nil {
		t.Error("BootstrapAdmin created the mistyped directory")
	}
	enr, err := BootstrapAdmin(ctx, at, "root", "root-pass-123", "local:root")
	if err != nil {
		t.Fatalf("BootstrapAdmin: %v", err)
	}
	if enr.Username != "root" || enr.Secret == "" || !strings.HasPrefix(enr.URL, "otpauth://totp/paygate:root?") {
		t.Fatalf("enrollment = %+v", enr)
	}
	if _, err := BootstrapAdmin(ctx, at, "root2", "root-pass-123", "local:root"); !errors.Is(err, ErrAdminExists) {
		t.Fatalf("second BootstrapAdmin = %v; want ErrAdminExists", err)
	}

	code, err := CurrentTOTP(enr.Secret, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ae := &adminEnv{env: e}
	s, err := ae.tryLoginAt(adminHTTPClient(t, "root"), e.url, "root", "root-pass-123", code)
	if err != nil {
		t.Fatalf("the bootstrapped admin's login: %v", err)
	}
	if !s.login.GetSecondFactor() || s.login.GetPasswordChangeRequired() {
		t.Fatalf("login = %+v; want the second factor and no password change", s.login)
	}
	if _, err := s.admin.ListUsers(ctx, connect.NewRequest(&gatewayv1.ListUsersRequest{})); err != nil {
		t.Fatalf("ListUsers as the bootstrapped admin: %v", err)
	}
	log, err := e.gw.store.ScanAudit(ctx, 0, 10)
	if err != nil || len(log) < 2 {
		t.Fatalf("audit log %v, %v", log, err)
	}
	if b := log[0]; b.Action != "bootstrap" || b.Actor != "local:root" || b.Target != "user:root" || b.Outcome != "ok" || strings.Contains(b.After, enr.Secret) {
		t.Fatalf("bootstrap entry %+v", b)
	}
	v, err := VerifyAuditLog(ctx, at)
	if err != nil || !v.OK || v.Entries != int64(len(log)) {
		t.Fatalf("VerifyAuditLog = %+v, %v; want OK over %d entries", v, err, len(log))
	}
}

// TestDisableUserOnOtherReplica: on a shared PostgreSQL store, a user disabled through one
// replica loses its token and its streams on another within about a second.
func TestDisableUserOnOtherReplica(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t, "paygate_admin_replica_")
	e := newAdminEnv(t, envOptions{config: func(c *Config) { c.DatabaseURL = url }})
	cfg := e.gw.cfg
	cfg.Listen, cfg.WebListen = "127.0.0.1:0", ""
	g2, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := g2.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		g2.Shutdown(ctx)
	})
	other := "https://" + g2.Addr()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	alice := e.loginAt(t, e.cliHTTP, other, "alice", "")
	if err := tryBalance(alice.clients); err != nil {
		t.Fatal(err)
	}
	stream, err := alice.payments.WatchPayments(ctx, connect.NewRequest(&gatewayv1.WatchPaymentsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() {
		for stream.Receive() {
		}
		ended <- stream.Err()
		stream.Close()
	}()
	waitFor(t, 5*time.Second, "the watcher", func() bool { return g2.events.watcherCount("alice") == 1 })

	root := e.admin(t, "root")
	start := time.Now()
	if _, err := root.admin.DisableUser(ctx, connect.NewRequest(&gatewayv1.DisableUserRequest{Username: "alice", Reason: "test"})); err != nil {
		t.Fatal(err)
	}
	wantErr(t, tryBalance(alice.clients), connect.CodeUnauthenticated, reasonUserDisabled)
	wantErr(t, recv(t, ended, "the stream on the other replica to end"), connect.CodeUnauthenticated, reasonUserDisabled)
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("the stream on the other replica ended %s after DisableUser; want about a second", d)
	}
}
