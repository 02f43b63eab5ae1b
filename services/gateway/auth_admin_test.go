package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
	"github.com/paygate/paygate/internal/identity"
	"github.com/paygate/paygate/internal/pki"
	"github.com/paygate/paygate/internal/rpcserver"
)

// Sign-in of admins and users as admins manage them: the second factor, disabled users,
// initial passwords, ChangePassword.

// adminTestUsers are the users of the admin tests: two customers, and two admins whose second
// factors newAdminEnv enrolls. The fixtures' carol (bank1-1002, bank3-3002) and dave
// (bank1-1003) are left out: their accounts are free for CreateUser and LinkAccount.
const adminTestUsers = `{
  "alice": {"password": "alice-pass-123", "accounts": ["bank1-1001", "bank2-2001"]},
  "bob":   {"password": "bob-pass-456",   "accounts": ["bank2-2002", "bank3-3001"]},
  "root":  {"password": "root-pass-123",  "accounts": [], "role": "admin"},
  "ops":   {"password": "ops-pass-456",   "accounts": [], "role": "admin"}
}`

var adminTestPasswords = map[string]string{"alice": "alice-pass-123", "bob": "bob-pass-456", "root": "root-pass-123", "ops": "ops-pass-456"}

// adminEnv is an env for the admin tests: its gateway's clock is clk (so that TOTP codes are
// known), it has a web listener, and the admins root and ops have second factors.
type adminEnv struct {
	*env
	clk     *fakeClock
	secrets map[string]string // admin → TOTP secret
	webURL  string
	webHTTP *http.Client // no client certificate, as a browser
}

func newAdminEnv(t *testing.T, opts envOptions) *adminEnv {
	t.Helper()
	clk := newFakeClock()
	if opts.users == "" {
		opts.users = adminTestUsers
	}
	config := opts.config
	opts.config = func(c *Config) {
		c.WebListen = "127.0.0.1:0"
		if config != nil {
			config(c)
		}
	}
	before := opts.beforeStart
	opts.beforeStart = func(g *Gateway) {
		g.now = clk.Now
		if before != nil {
			before(g)
		}
	}
	e := newEnv(t, opts)
	ae := &adminEnv{env: e, clk: clk, secrets: map[string]string{}, webURL: "https://" + e.gw.WebAddr()}
	pool, err := pki.LoadPool(pki.CAFile(certDir))
	if err != nil {
		t.Fatal(err)
	}
	ae.webHTTP = rpcserver.NewHTTPClient(pki.ClientTLSFrom(pool, nil))
	t.Cleanup(ae.webHTTP.CloseIdleConnections)
	for _, name := range []string{"root", "ops"} {
		ae.enroll(t, name)
	}
	// The tests count every refused call in the audit log, all made from one address.
	lim := e.gw.refusalBudget()
	lim.mu.Lock()
	lim.burst = 1 << 20
	lim.mu.Unlock()
	return ae
}

// enroll gives name a new second factor, through the store.
func (e *adminEnv) enroll(t testing.TB, name string) {
	t.Helper()
	k, err := newTOTPKey(name)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := e.gw.store.UpdateUser(context.Background(), name, func(u *userRecord) error {
		u.TOTPSecret = k.Secret()
		return nil
	}, false, e.clk.Now()); err != nil {
		t.Fatalf("enroll %s: %v", name, err)
	}
	e.secrets[name] = k.Secret()
}

// code returns name's TOTP code now, after moving the clock to the next time step so that it
// was never used.
func (e *adminEnv) code(t testing.TB, name string) string {
	t.Helper()
	e.clk.Advance(totpPeriod * time.Second)
	c, err := CurrentTOTP(e.secrets[name], e.clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// adminCerts caches the admin certificates issued by adminHTTPClient, by name.
var adminCerts sync.Map // string → tls.Certificate

// adminHTTPClient returns an HTTP client presenting a certificate of the admin role
// (spiffe://paygate/admin/<name>), issued by the tests' CA.
func adminHTTPClient(t testing.TB, name string) *http.Client {
	t.Helper()
	pool, err := pki.LoadPool(pki.CAFile(certDir))
	if err != nil {
		t.Fatal(err)
	}
	v, ok := adminCerts.Load(name)
	if !ok {
		ca, err := pki.LoadCA(pki.CAFile(certDir), filepath.Join(certDir, pki.CAKeyFile))
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		l, err := pki.IssueLeaf(ca, identity.Identity{Role: identity.RoleAdmin, Name: name}, pki.DefaultHosts, now.Add(-time.Hour), now.Add(24*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		v, _ = adminCerts.LoadOrStore(name, l.TLSCertificate())
	}
	cert := v.(tls.Certificate)
	c := rpcserver.NewHTTPClient(pki.ClientTLSFrom(pool, &cert))
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// session is a signed-in user's clients on one listener.
type session struct {
	*clients
	admin gatewayv1connect.AdminServiceClient
	login *gatewayv1.LoginResponse
}

// tryLoginAt logs username in at url with httpClient (and a TOTP code when code is set).
func (e *adminEnv) tryLoginAt(httpClient *http.Client, url, username, password, code string) (*session, error) {
	// Generous: a bootstrapped admin's password has bcrypt's default cost, slow under the race
	// detector on a busy machine (5 s was not always enough).
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	anon := gatewayv1connect.NewAuthServiceClient(httpClient, url)
	resp, err := anon.Login(ctx, connect.NewRequest(&gatewayv1.LoginRequest{Username: username, Password: password, TotpCode: code}))
	if err != nil {
		return nil, err
	}
	tok := resp.Msg.GetToken()
	c := e.clientsAt(httpClient, url, "Bearer "+tok)
	c.username, c.token = username, tok
	return &session{clients: c, admin: gatewayv1connect.NewAdminServiceClient(httpClient, url, connect.WithInterceptors(bearer("Bearer "+tok))), login: resp.Msg}, nil
}

// clientsAt is clientsWith for the listener at url.
func (e *adminEnv) clientsAt(httpClient *http.Client, url, authorization string) *clients {
	opts := []connect.ClientOption{connect.WithInterceptors(bearer(authorization))}
	return &clients{
		auth:     gatewayv1connect.NewAuthServiceClient(httpClient, url, opts...),
		payments: gatewayv1connect.NewPaymentServiceClient(httpClient, url, opts...),
		balance:  gatewayv1connect.NewBalanceServiceClient(httpClient, url, opts...),
	}
}

func (e *adminEnv) loginAt(t testing.TB, httpClient *http.Client, url, username, code string) *session {
	t.Helper()
	s, err := e.tryLoginAt(httpClient, url, username, adminTestPasswords[username], code)
	if err != nil {
		t.Fatalf("login %s at %s: %v", username, url, err)
	}
	return s
}

// admin signs name in on the API listener with its admin certificate and second factor.
func (e *adminEnv) admin(t testing.TB, name string) *session {
	t.Helper()
	return e.loginAt(t, adminHTTPClient(t, name), e.url, name, e.code(t, name))
}

// customer signs name in on the API listener with the "cli" certificate.
func (e *adminEnv) customer(t testing.TB, name string) *session {
	t.Helper()
	return e.loginAt(t, e.cliHTTP, e.url, name, "")
}

func tryBalance(c *clients) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.balance.FetchBalance(ctx, connect.NewRequest(&gatewayv1.FetchBalanceRequest{}))
	return err
}

// auditLog returns the whole audit log, oldest first, from the store.
func (e *adminEnv) auditLog(t testing.TB) []auditRecord {
	t.Helper()
	recs, err := e.gw.store.ScanAudit(context.Background(), 0, 100_000)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func TestLoginSecondFactor(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, envOptions{})
	ctx := context.Background()
	httpc := adminHTTPClient(t, "root")
	listUsers := func(s *session) error {
		_, err := s.admin.ListUsers(ctx, connect.NewRequest(&gatewayv1.ListUsersRequest{}))
		return err
	}

	// A right code: the session passed the second factor.
	code := e.code(t, "root")
	s, err := e.tryLoginAt(httpc, e.url, "root", "root-pass-123", code)
	if err != nil {
		t.Fatalf("login with the right code: %v", err)
	}
	if !s.login.GetSecondFactor() || s.login.GetRole() != RoleAdmin || s.login.GetPasswordChangeRequired() {
		t.Fatalf("login = %+v; want role admin, second_factor, no password change", s.login)
	}
	if err := listUsers(s); err != nil {
		t.Fatalf("ListUsers with the second factor: %v", err)
	}

	// The same code again, in the same step: a replay, refused as a wrong password.
	_, err = e.tryLoginAt(httpc, e.url, "root", "root-pass-123", code)
	wantErr(t, err, connect.CodeUnauthenticated, "invalid_credentials")
	// Nor is it accepted once its step has passed (it is still within the skew).
	e.clk.Advance(totpPeriod * time.Second)
	_, err = e.tryLoginAt(httpc, e.url, "root", "root-pass-123", code)
	wantErr(t, err, connect.CodeUnauthenticated, "invalid_credentials")

	// A code one step old is accepted (clock skew) when it was never used; two steps old is not.
	e.clk.Advance(3 * totpPeriod * time.Second)
	prev, _ := CurrentTOTP(e.secrets["root"], e.clk.Now().Add(-totpPeriod*time.Second))
	if _, err := e.tryLoginAt(httpc, e.url, "root", "root-pass-123", prev); err != nil {
		t.Fatalf("login with the code of the step before: %v", err)
	}
	e.clk.Advance(5 * totpPeriod * time.Second)
	old, _ := CurrentTOTP(e.secrets["root"], e.clk.Now().Add(-2*totpPeriod*time.Second))
	_, err = e.tryLoginAt(httpc, e.url, "root", "root-pass-123", old)
	wantErr(t, err, connect.CodeUnauthenticated, "invalid_credentials")

	// A wrong code fails exactly as a wrong password does.
	wrong := e.code(t, "root")
	wrong = string(rune('0'+(wrong[0]-'0'+1)%10)) + wrong[1:]
	_, errCode := e.tryLoginAt(httpc, e.url, "root", "root-pass-123", wrong)
	_, errPassword := e.tryLoginAt(httpc, e.url, "root", "not-the-password", "")
	for _, err := range []error{errCode, errPassword} {
		wantErr(t, err, connect.CodeUnauthenticated, "invalid_credentials")
		if ce := (*connect.Error)(nil); !errors.As(err, &ce) || ce.Message() != "invalid username or password" {
			t.Errorf("message of %v: want the generic one", err)
		}
	}
	// A right code with a wrong password is a wrong password.
	_, err = e.tryLoginAt(httpc, e.url, "root", "not-the-password", e.code(t, "root"))
	wantErr(t, err, connect.CodeUnauthenticated, "invalid_credentials")

	// Without a code an admin signs in, and AdminService refuses the session.
	s, err = e.tryLoginAt(httpc, e.url, "root", "root-pass-123", "")
	if err != nil {
		t.Fatalf("login without a code: %v", err)
	}
	if s.login.GetSecondFactor() || s.login.GetRole() != RoleAdmin {
		t.Fatalf("login without a code = %+v; want role admin without second_factor", s.login)
	}
	wantErr(t, listUsers(s), connect.CodePermissionDenied, reasonSecondFactorRequired)

	// A customer has no second factor: a code fails the login; without one it works, as before.
	_, err = e.tryLoginAt(e.cliHTTP, e.url, "alice", "alice-pass-123", "123456")
	wantErr(t, err, connect.CodeUnauthenticated, "invalid_credentials")
	alice := e.customer(t, "alice")
	if alice.login.GetRole() != RoleCustomer || alice.login.GetSecondFactor() || alice.login.GetPasswordChangeRequired() {
		t.Fatalf("alice's login = %+v", alice.login)
	}
	if err := tryBalance(alice.clients); err != nil {
		t.Fatalf("alice's FetchBalance: %v", err)
	}
	// An admin's customer calls work without the second factor.
	rootNoCode := e.loginAt(t, e.cliHTTP, e.url, "root", "")
	if err := tryBalance(rootNoCode.clients); err != nil {
		t.Fatalf("an admin's FetchBalance without the second factor: %v", err)
	}
}

// TestLoginWrongCodeThrottled: a wrong code is a failed login for the throttle, with no refund.
func TestLoginWrongCodeThrottled(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, envOptions{config: func(c *Config) {
		c.LoginFailuresBurst = 2
		c.LoginFailureEvery = time.Hour
	}})
	httpc := adminHTTPClient(t, "root")
	for range 2 {
		_, err := e.tryLoginAt(httpc, e.url, "root", "root-pass-123", "000000")
		wantErr(t, err, connect.CodeUnauthenticated, "invalid_credentials")
	}
	_, err := e.tryLoginAt(httpc, e.url, "root", "root-pass-123", e.code(t, "root"))
	wantErr(t, err, connect.CodeResourceExhausted, "login_throttled")
}

func TestDisabledUserRefused(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, envOptions{})
	ctx := context.Background()
	root := e.admin(t, "root")
	api := e.customer(t, "alice")
	web := e.loginAt(t, e.webHTTP, e.webURL, "alice", "")
	for _, s := range []*session{api, web} {
		if err := tryBalance(s.clients); err != nil { // and now cached
			t.Fatal(err)
		}
	}

	resp, err := root.admin.DisableUser(ctx, connect.NewRequest(&gatewayv1.DisableUserRequest{Username: "alice", Reason: "left the company"}))
	if err != nil {
		t.Fatalf("DisableUser: %v", err)
	}
	if !resp.Msg.GetUser().GetDisabled() || resp.Msg.GetRevokedSessions() != 2 {
		t.Fatalf("DisableUser = %+v; want disabled with 2 sessions revoked", resp.Msg)
	}
	// Both live tokens are refused at once, on both listeners.
	for _, s := range []*session{api, web} {
		wantErr(t, tryBalance(s.clients), connect.CodeUnauthenticated, reasonUserDisabled)
	}
	// The right password is told it is disabled; a wrong one is not.
	_, err = e.tryLoginAt(e.cliHTTP, e.url, "alice", "alice-pass-123", "")
	wantErr(t, err, connect.CodePermissionDenied, reasonUserDisabled)
	_, err = e.tryLoginAt(e.webHTTP, e.webURL, "alice", "alice-pass-123", "")
	wantErr(t, err, connect.CodePermissionDenied, reasonUserDisabled)
	_, err = e.tryLoginAt(e.cliHTTP, e.url, "alice", "wrong-password", "")
	wantErr(t, err, connect.CodeUnauthenticated, "invalid_credentials")
	// Other users are not affected.
	if err := tryBalance(e.customer(t, "bob").clients); err != nil {
		t.Fatal(err)
	}

	if _, err := root.admin.EnableUser(ctx, connect.NewRequest(&gatewayv1.EnableUserRequest{Username: "alice"})); err != nil {
		t.Fatalf("EnableUser: %v", err)
	}
	// The old tokens stay revoked; a new login works.
	wantErr(t, tryBalance(api.clients), connect.CodeUnauthenticated, "token_revoked")
	if err := tryBalance(e.customer(t, "alice").clients); err != nil {
		t.Fatalf("FetchBalance after EnableUser: %v", err)
	}
}

// TestMustChangePassword: a user created by an admin signs in with its initial password and may
// only change it (or log out) until it has.
func TestMustChangePassword(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, envOptions{})
	ctx := context.Background()
	root := e.admin(t, "root")
	if _, err := root.admin.CreateUser(ctx, connect.NewRequest(&gatewayv1.CreateUserRequest{
		Username: "carol", InitialPassword: "initial-pass-1", AccountIds: []string{"bank1-1002"}})); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	for _, at := range []struct {
		name string
		http *http.Client
		url  string
	}{{"api", e.cliHTTP, e.url}, {"web", e.webHTTP, e.webURL}} {
		s, err := e.tryLoginAt(at.http, at.url, "carol", "initial-pass-1", "")
		if err != nil {
			t.Fatalf("%s: login with the initial password: %v", at.name, err)
		}
		if !s.login.GetPasswordChangeRequired() {
			t.Fatalf("%s: login = %+v; want password_change_required", at.name, s.login)
		}
		wantErr(t, tryBalance(s.clients), connect.CodeFailedPrecondition, reasonPasswordChangeRequired)
		_, err = s.payments.ListPayments(ctx, connect.NewRequest(&gatewayv1.ListPaymentsRequest{}))
		wantErr(t, err, connect.CodeFailedPrecondition, reasonPasswordChangeRequired)
		stream, err := s.payments.WatchPayments(ctx, connect.NewRequest(&gatewayv1.WatchPaymentsRequest{}))
		if err == nil {
			for stream.Receive() {
			}
			err = stream.Err()
			stream.Close()
		}
		wantErr(t, err, connect.CodeFailedPrecondition, reasonPasswordChangeRequired)
		// Logout is allowed.
		if _, err := s.auth.Logout(ctx, connect.NewRequest(&gatewayv1.LogoutRequest{})); err != nil {
			t.Fatalf("%s: Logout with an initial password: %v", at.name, err)
		}
	}

	s, err := e.tryLoginAt(e.cliHTTP, e.url, "carol", "initial-pass-1", "")
	if err != nil {
		t.Fatal(err)
	}
	change := func(current, next string) error {
		_, err := s.auth.ChangePassword(ctx, connect.NewRequest(&gatewayv1.ChangePasswordRequest{CurrentPassword: current, NewPassword: next}))
		return err
	}
	wantErr(t, change("not-the-password", "carols-own-pass"), connect.CodeUnauthenticated, "invalid_credentials")
	err = change("initial-pass-1", "initial-pass-1")
	wantErr(t, err, connect.CodeInvalidArgument, "")
	if !strings.Contains(err.Error(), "new_password") {
		t.Errorf("%v: want the field new_password named", err)
	}
	wantErr(t, change("initial-pass-1", "short"), connect.CodeInvalidArgument, "")
	if err := change("initial-pass-1", "carols-own-pass"); err != nil {
		t.Fatalf("ChangePassword: %v", err)
	}
	// Every session ended, this one included.
	wantErr(t, change("carols-own-pass", "carols-next-pass"), connect.CodeUnauthenticated, "token_revoked")
	_, err = e.tryLoginAt(e.cliHTTP, e.url, "carol", "initial-pass-1", "")
	wantErr(t, err, connect.CodeUnauthenticated, "invalid_credentials")
	s, err = e.tryLoginAt(e.cliHTTP, e.url, "carol", "carols-own-pass", "")
	if err != nil {
		t.Fatalf("login with the new password: %v", err)
	}
	if s.login.GetPasswordChangeRequired() {
		t.Fatal("password_change_required after ChangePassword")
	}
	if err := tryBalance(s.clients); err != nil {
		t.Fatalf("FetchBalance after ChangePassword: %v", err)
	}

	// ResetPassword: the user must change it again, and its sessions end.
	reset, err := root.admin.ResetPassword(ctx, connect.NewRequest(&gatewayv1.ResetPasswordRequest{Username: "carol", InitialPassword: "second-initial-1"}))
	if err != nil {
		t.Fatalf("ResetPassword: %v", err)
	}
	if !reset.Msg.GetUser().GetPasswordChangeRequired() || reset.Msg.GetRevokedSessions() != 1 {
		t.Fatalf("ResetPassword = %+v; want password_change_required and 1 session revoked", reset.Msg)
	}
	wantErr(t, tryBalance(s.clients), connect.CodeUnauthenticated, "token_revoked")
	s, err = e.tryLoginAt(e.cliHTTP, e.url, "carol", "second-initial-1", "")
	if err != nil || !s.login.GetPasswordChangeRequired() {
		t.Fatalf("login after ResetPassword = %v, %v; want password_change_required", s, err)
	}
	wantErr(t, tryBalance(s.clients), connect.CodeFailedPrecondition, reasonPasswordChangeRequired)
}

// TestChangePasswordThrottled: wrong current passwords count as failed logins.
func TestChangePasswordThrottled(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, envOptions{config: func(c *Config) {
		c.LoginFailuresBurst = 3
		c.LoginFailureEvery = time.Hour
	}})
	ctx := context.Background()
	alice := e.customer(t, "alice")
	for range 3 {
		_, err := alice.auth.ChangePassword(ctx, connect.NewRequest(&gatewayv1.ChangePasswordRequest{CurrentPassword: "guess-guess", NewPassword: "alices-new-pass"}))
		wantErr(t, err, connect.CodeUnauthenticated, "invalid_credentials")
	}
	_, err := alice.auth.ChangePassword(ctx, connect.NewRequest(&gatewayv1.ChangePasswordRequest{CurrentPassword: "alice-pass-123", NewPassword: "alices-new-pass"}))
	wantErr(t, err, connect.CodeResourceExhausted, "login_throttled")
	_, err = e.tryLoginAt(e.cliHTTP, e.url, "alice", "alice-pass-123", "")
	wantErr(t, err, connect.CodeResourceExhausted, "login_throttled")
}
