package main

import (
	"database/sql"
	"encoding/json"
	"maps"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"
	_ "modernc.org/sqlite"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
	"github.com/paygate/paygate/internal/cluster"
	"github.com/paygate/paygate/services/gateway"
)

// End-to-end tests of the admin interface through real processes: an admin onboarding a user
// who then pays, every admin procedure refused to whoever is not a signed-in admin with an
// admin certificate, a stuck payment seen and finished by operations, and the audit log's hash
// chain verified by `paygate admin audit verify`, before and after a row is edited.

const (
	adminName     = "root"
	adminPassword = "root-password-0123"
)

// adminSystem is a cluster with a bootstrapped admin.
type adminSystem struct {
	c      *cluster.Cluster
	secret string
	cert   *http.Client // the admin certificate
}

func newAdminSystem(t *testing.T, opts cluster.Options) *adminSystem {
	t.Helper()
	c := cluster.New(t, opts)
	enr, err := gateway.BootstrapAdmin(ctxT(t, 30*time.Second), storeLocation(c), adminName, adminPassword, "local:test")
	if err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	return &adminSystem{c: c, secret: enr.Secret, cert: c.CertHTTP(c.AdminCert(adminName))}
}

func storeLocation(c *cluster.Cluster) gateway.StoreLocation {
	if u := c.GatewayDatabaseURL(); u != "" {
		return gateway.StoreLocation{DatabaseURL: u}
	}
	return gateway.StoreLocation{DataDir: c.GatewayDataDir()}
}

func (s *adminSystem) apiURL() string { return "https://" + s.c.GatewayAddr }

// code returns a TOTP code of the admin's secret that was not used yet: codes are accepted
// once, so a second login within one 30 s step waits for the next.
func (s *adminSystem) code(t *testing.T, used map[string]bool) string {
	t.Helper()
	deadline := time.Now().Add(40 * time.Second)
	for time.Now().Before(deadline) {
		code, err := gateway.CurrentTOTP(s.secret, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if !used[code] {
			used[code] = true
			return code
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatal("no fresh TOTP code within 40 s")
	return ""
}

// login signs the admin in with password and a fresh TOTP code, with the admin certificate.
func (s *adminSystem) login(t *testing.T, used map[string]bool) *cluster.Admin {
	t.Helper()
	code := s.code(t, used)
	a, resp, err := cluster.LoginWith(ctxT(t, 10*time.Second), s.cert, s.apiURL(), adminName, adminPassword, code)
	if err != nil {
		t.Fatalf("admin login: %v", err)
	}
	if !resp.GetSecondFactor() || resp.GetRole() != "admin" {
		t.Fatalf("admin login: role %q, second factor %v; want admin with the second factor", resp.GetRole(), resp.GetSecondFactor())
	}
	return a
}

// TestAdminOnboardsUserWhoPays: an admin creates a user, opens an account for them at a bank and
// deposits 100.00; the user changes the initial password, logs in and pays from the account.
// The audit log shows exactly these actions, and the ledger balances with the deposit counted.
func TestAdminOnboardsUserWhoPays(t *testing.T) {
	t.Parallel()
	s := newAdminSystem(t, cluster.Options{})
	ctx := ctxT(t, 90*time.Second)
	before := audit(t, s.c)
	adm := s.login(t, map[string]bool{}).Admin

	if _, err := adm.CreateUser(ctx, connect.NewRequest(&gatewayv1.CreateUserRequest{Username: "zoe", InitialPassword: "zoe-initial-pass"})); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	open, err := adm.OpenAccount(ctx, connect.NewRequest(&gatewayv1.OpenAccountRequest{
		Bank: "bank1", Holder: "zoe", Currency: "USD", RequestId: newID(), LinkUsername: "zoe"}))
	if err != nil {
		t.Fatalf("OpenAccount: %v", err)
	}
	acct := open.Msg.GetAccount().GetAccountId()
	if acct == "" || !strings.HasPrefix(acct, "bank1-") || open.Msg.GetAccount().GetLinkedUsername() != "zoe" {
		t.Fatalf("OpenAccount = %v; want a bank1 account linked to zoe", open.Msg.GetAccount())
	}
	dep, err := adm.Deposit(ctx, connect.NewRequest(&gatewayv1.DepositRequest{
		AccountId: acct, Amount: 100_00, Currency: "USD", Reason: "opening deposit", RequestId: newID()}))
	if err != nil {
		t.Fatalf("Deposit: %v", err)
	}
	if got := dep.Msg.GetEntry().GetBalanceAfter(); got != 100_00 {
		t.Errorf("deposit: balance after %d, want 10000", got)
	}

	// The user signs in with the initial password: only ChangePassword is allowed.
	zoe, err := s.c.Login("zoe", "zoe-initial-pass")
	if err != nil {
		t.Fatalf("zoe's first login: %v", err)
	}
	if _, err := pay(ctx, zoe, newID(), acct, "bank2-2001", 25_00); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("paying before changing the initial password: %v; want FAILED_PRECONDITION", err)
	}
	if _, err := zoe.Auth.ChangePassword(ctx, connect.NewRequest(&gatewayv1.ChangePasswordRequest{
		CurrentPassword: "zoe-initial-pass", NewPassword: "zoe-own-password-1"})); err != nil {
		t.Fatalf("ChangePassword: %v", err)
	}
	zoe, err = s.c.Login("zoe", "zoe-own-password-1")
	if err != nil {
		t.Fatalf("login with the new password: %v", err)
	}
	id := newID()
	resp, err := pay(ctx, zoe, id, acct, "bank2-2001", 25_00)
	if err != nil || resp.GetPayment().GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
		t.Fatalf("zoe pays 25.00: %v, %v; want SUCCEEDED", resp, err)
	}

	// The audit log: exactly the admin's actions (the bootstrap included), in order.
	list, err := adm.ListAuditLog(ctx, connect.NewRequest(&gatewayv1.ListAuditLogRequest{PageSize: 500}))
	if err != nil {
		t.Fatalf("ListAuditLog: %v", err)
	}
	var got []string
	for _, e := range slices.Backward(list.Msg.GetEntries()) {
		if e.GetAction() == "ListAuditLog" {
			continue
		}
		got = append(got, e.GetAction()+" "+e.GetTarget()+" "+e.GetOutcome())
	}
	want := []string{"bootstrap user:root ok", "CreateUser user:zoe ok", "OpenAccount account:" + acct + " ok", "Deposit account:" + acct + " ok"}
	if !slices.Equal(got, want) {
		t.Errorf("audit log:\n got %q\nwant %q", got, want)
	}

	after := checkSettled(t, s.c, before, 20*time.Second)
	if d := after.Deposited - before.Deposited; d != 100_00 {
		t.Errorf("deposits counted by the ledger audit: %d, want 10000", d)
	}
	if got := after.Accounts[acct].GetBalance(); got != 75_00 {
		t.Errorf("%s: balance %d, want 7500 (100.00 deposited, 25.00 paid)", acct, got)
	}
	if d := delta(before, after)["bank2-2001"]; d != 25_00 {
		t.Errorf("bank2-2001 moved by %d, want +2500", d)
	}
}

// adminCalls is a request for every AdminService procedure, each one that changes something
// valid, so that a refusal is the policy's and not the request's.
func adminCalls() map[string]string {
	return map[string]string{
		gatewayv1connect.AdminServiceListUsersProcedure:         `{}`,
		gatewayv1connect.AdminServiceGetUserProcedure:           `{"username":"alice"}`,
		gatewayv1connect.AdminServiceCreateUserProcedure:        `{"username":"mallory","initialPassword":"mallory-pass-123","role":"admin"}`,
		gatewayv1connect.AdminServiceDisableUserProcedure:       `{"username":"alice","reason":"test"}`,
		gatewayv1connect.AdminServiceEnableUserProcedure:        `{"username":"alice"}`,
		gatewayv1connect.AdminServiceResetPasswordProcedure:     `{"username":"alice","initialPassword":"reset-pass-1234"}`,
		gatewayv1connect.AdminServiceSetRoleProcedure:           `{"username":"alice","role":"admin"}`,
		gatewayv1connect.AdminServiceLinkAccountProcedure:       `{"username":"alice","accountId":"bank1-1004"}`,
		gatewayv1connect.AdminServiceUnlinkAccountProcedure:     `{"username":"alice","accountId":"bank1-1001"}`,
		gatewayv1connect.AdminServiceOpenAccountProcedure:       `{"bank":"bank1","holder":"mallory","currency":"USD","requestId":"` + newID() + `"}`,
		gatewayv1connect.AdminServiceCloseAccountProcedure:      `{"accountId":"bank1-1003","reason":"test"}`,
		gatewayv1connect.AdminServiceListBankAccountsProcedure:  `{"bank":"bank1"}`,
		gatewayv1connect.AdminServiceDepositProcedure:           `{"accountId":"bank1-1001","amount":"100000","currency":"USD","reason":"test","requestId":"` + newID() + `"}`,
		gatewayv1connect.AdminServiceWithdrawProcedure:          `{"accountId":"bank1-1001","amount":"100","currency":"USD","reason":"test","requestId":"` + newID() + `"}`,
		gatewayv1connect.AdminServiceListLedgerEntriesProcedure: `{"bank":"bank1"}`,
		gatewayv1connect.AdminServiceSearchPaymentsProcedure:    `{}`,
		gatewayv1connect.AdminServiceGetPaymentTrailProcedure:   `{"paymentId":"` + newID() + `"}`,
		gatewayv1connect.AdminServiceGetOperationsProcedure:     `{}`,
		gatewayv1connect.AdminServiceRedrivePaymentProcedure:    `{"paymentId":"` + newID() + `"}`,
		gatewayv1connect.AdminServiceListAuditLogProcedure:      `{}`,
		gatewayv1connect.AdminServiceVerifyAuditLogProcedure:    `{}`,
	}
}

// callJSON sends body to procedure at url through hc with the Connect protocol's JSON encoding
// and returns the answer's error code ("" for success) and message.
func callJSON(t *testing.T, hc *http.Client, url, token, procedure, body string) (code, msg string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctxT(t, 10*time.Second), http.MethodPost, url+procedure, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e struct{ Code, Message string }
	json.NewDecoder(resp.Body).Decode(&e)
	return e.Code, e.Message
}

// TestAdminProceduresRefused: a customer's token, an admin's token without the second factor,
// and an admin's token with a client certificate instead of an admin one are each refused every
// AdminService procedure on the API listener; the first two on the web listener too. Nothing
// changes: not the ledger, not the users; the refusals are in the audit log.
func TestAdminProceduresRefused(t *testing.T) {
	t.Parallel()
	s := newAdminSystem(t, cluster.Options{})
	used := map[string]bool{}
	before := audit(t, s.c)
	cli := s.c.CertHTTP(s.c.ClientCert("cli"))
	api, web := s.apiURL(), "https://"+s.c.WebAddr
	webHTTP := s.c.CertHTTP(s.c.ClientCert("cli")) // the web listener asks for no certificate

	customer := login(t, s.c, "alice").Token
	noFactor, _, err := cluster.LoginWith(ctxT(t, 10*time.Second), s.cert, api, adminName, adminPassword, "")
	if err != nil {
		t.Fatalf("admin login without a code: %v", err)
	}
	adm := s.login(t, used).Admin // for the checks at the end; codes are accepted once, in order
	code := s.code(t, used)
	withClientCert, _, err := cluster.LoginWith(ctxT(t, 10*time.Second), cli, api, adminName, adminPassword, code)
	if err != nil {
		t.Fatalf("admin login with a client certificate: %v", err)
	}
	webCustomer, _, err := cluster.LoginWith(ctxT(t, 10*time.Second), webHTTP, web, "alice", passwords["alice"], "")
	if err != nil {
		t.Fatal(err)
	}
	webNoFactor, _, err := cluster.LoginWith(ctxT(t, 10*time.Second), webHTTP, web, adminName, adminPassword, "")
	if err != nil {
		t.Fatal(err)
	}
	callers := []struct {
		name, url, token string
		hc               *http.Client
		code             string
	}{
		{"no token", api, "", s.cert, "unauthenticated"},
		{"customer token", api, customer, cli, "permission_denied"},
		{"customer token, admin certificate", api, customer, s.cert, "unauthenticated"}, // the token is bound to alice's certificate
		{"admin token without the second factor", api, noFactor.Token, s.cert, "permission_denied"},
		{"admin token with a client certificate", api, withClientCert.Token, cli, "permission_denied"},
		{"web: customer token", web, webCustomer.Token, webHTTP, "permission_denied"},
		{"web: admin token without the second factor", web, webNoFactor.Token, webHTTP, "permission_denied"},
	}
	calls := adminCalls()
	if n := gatewayv1.File_paygate_gateway_v1_admin_proto.Services().ByName("AdminService").Methods().Len(); len(calls) != n {
		t.Fatalf("adminCalls has %d procedures; AdminService has %d", len(calls), n)
	}
	refused := 0
	for _, who := range callers {
		for _, proc := range slices.Sorted(maps.Keys(calls)) {
			code, msg := callJSON(t, who.hc, who.url, who.token, proc, calls[proc])
			if code != who.code {
				t.Errorf("%s: %s answered %q (%s); want %s", who.name, proc, code, msg, who.code)
			}
			refused++
		}
	}

	// Nothing changed.
	after := audit(t, s.c)
	if after.Total != before.Total || after.Deposited != before.Deposited || after.Withdrawn != before.Withdrawn || len(after.Accounts) != len(before.Accounts) {
		t.Errorf("the ledger changed: total %d → %d, deposited %d → %d, withdrawn %d → %d, accounts %d → %d",
			before.Total, after.Total, before.Deposited, after.Deposited, before.Withdrawn, after.Withdrawn, len(before.Accounts), len(after.Accounts))
	}
	ctx := ctxT(t, 30*time.Second)
	for _, u := range []string{"alice", "mallory"} {
		got, err := adm.GetUser(ctx, connect.NewRequest(&gatewayv1.GetUserRequest{Username: u}))
		switch {
		case u == "mallory" && connect.CodeOf(err) != connect.CodeNotFound:
			t.Errorf("mallory: %v, %v; want NOT_FOUND (never created)", got, err)
		case u == "alice" && err != nil:
			t.Errorf("alice: %v", err)
		case u == "alice" && (got.Msg.GetUser().GetRole() != "customer" || got.Msg.GetUser().GetDisabled() || got.Msg.GetUser().GetPasswordChangeRequired() ||
			!slices.Equal(got.Msg.GetUser().GetAccountIds(), []string{"bank1-1001", "bank2-2001"})):
			t.Errorf("alice changed: %v", got.Msg.GetUser())
		}
	}
	if _, err := s.c.Login("alice", passwords["alice"]); err != nil {
		t.Errorf("alice's password changed: %v", err)
	}
	list, err := adm.ListAuditLog(ctx, connect.NewRequest(&gatewayv1.ListAuditLogRequest{PageSize: 500}))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range list.Msg.GetEntries() {
		if e.GetOutcome() != "ok" {
			n++
		}
	}
	if n == 0 {
		t.Errorf("the audit log has no refused entries after %d refused calls", refused)
	}
	t.Logf("%d refused calls; %d refused entries in the audit log (refusals from one address are bounded)", refused, n)
}

// TestAdminStuckPaymentFinishesAfterBankReturns: a payment whose bank stops answering shows in
// operations as in doubt, its trail is readable from the CLI, and it finishes once the bank is
// back and an admin re-drives it; its decision never changes.
func TestAdminStuckPaymentFinishesAfterBankReturns(t *testing.T) {
	t.Parallel()
	s := newAdminSystem(t, cluster.Options{TxnTimeout: 3 * time.Second})
	before := audit(t, s.c)
	adm := s.login(t, map[string]bool{}).Admin
	alice := login(t, s.c, "alice")
	ctx := ctxT(t, 120*time.Second)

	s.c.Pause("bank2")
	id := newID()
	resp, err := pay(ctx, alice, id, "bank1-1001", "bank2-2002", 10_00)
	if err != nil {
		t.Fatalf("pay with bank2 paused: %v", err)
	}
	if st := resp.GetPayment().GetStatus(); st != gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED {
		t.Fatalf("payment with bank2 paused: %v; want FAILED", st)
	}
	ops, err := adm.GetOperations(ctx, connect.NewRequest(&gatewayv1.GetOperationsRequest{}))
	if err != nil {
		t.Fatalf("GetOperations: %v", err)
	}
	var stuck *gatewayv1.InDoubtPayment
	for _, p := range ops.Msg.GetInDoubt() {
		if p.GetPayment().GetPaymentId() == id {
			stuck = p
		}
	}
	if stuck == nil || !slices.Contains(stuck.GetWaitingFor(), "bank2") {
		t.Fatalf("operations: in doubt %v; want %s waiting for bank2", ops.Msg.GetInDoubt(), id)
	}

	s.c.Resume("bank2")
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := adm.RedrivePayment(ctx, connect.NewRequest(&gatewayv1.RedrivePaymentRequest{PaymentId: id}))
		if err == nil && r.Msg.GetCompleted() {
			if r.Msg.GetPayment().GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED {
				t.Errorf("after re-drive: %v; the decision changed", r.Msg.GetPayment().GetStatus())
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not completed 30 s after bank2 came back: %v, %v", r, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
	// Trail events other than admission, decision and completion are written behind the
	// payment's path, in batches: they show within moments.
	var kinds []string
	want := []string{"ADMITTED:", "DECIDED:", "ACKNOWLEDGED:bank1", "ACKNOWLEDGED:bank2", "COMPLETED:"}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		trail, err := adm.GetPaymentTrail(ctx, connect.NewRequest(&gatewayv1.GetPaymentTrailRequest{PaymentId: id}))
		if err != nil {
			t.Fatalf("GetPaymentTrail: %v", err)
		}
		kinds = kinds[:0]
		for _, e := range trail.Msg.GetEvents() {
			kinds = append(kinds, strings.TrimPrefix(e.GetKind().String(), "TRAIL_EVENT_KIND_")+":"+e.GetBank())
		}
		if !slices.ContainsFunc(want, func(k string) bool { return !slices.Contains(kinds, k) }) || time.Now().After(deadline) {
			break
		}
	}
	for _, k := range want {
		if !slices.Contains(kinds, k) {
			t.Errorf("trail %v has no %s", kinds, k)
		}
	}
	checkSettled(t, s.c, before, 20*time.Second)
}

// TestAdminAuditVerify: `paygate admin audit verify` passes on the audit log the admin's actions
// wrote, and fails, naming the entry, once one row is edited in the database.
func TestAdminAuditVerify(t *testing.T) {
	t.Parallel()
	s := newAdminSystem(t, cluster.Options{})
	adm := s.login(t, map[string]bool{}).Admin
	ctx := ctxT(t, 60*time.Second)
	for _, u := range []string{"yara", "yuri"} {
		if _, err := adm.CreateUser(ctx, connect.NewRequest(&gatewayv1.CreateUserRequest{Username: u, InitialPassword: u + "-initial-pass"})); err != nil {
			t.Fatal(err)
		}
	}
	loc := storeLocation(s.c)
	where := []string{"--data", loc.DataDir}
	if loc.DatabaseURL != "" {
		where = []string{"--database-url", loc.DatabaseURL}
	}
	verify := func() (string, error) {
		out, err := exec.CommandContext(ctx, s.c.Bin, append([]string{"admin", "audit", "verify"}, where...)...).CombinedOutput()
		return string(out), err
	}
	if out, err := verify(); err != nil {
		t.Fatalf("verify of an intact log: %v\n%s", err, out)
	}
	// An insider rewrites who was created by the second entry.
	const edit = `UPDATE audit_log SET target = 'user:mallory' WHERE seq = 2`
	if loc.DatabaseURL != "" {
		conn, err := pgx.Connect(ctx, loc.DatabaseURL)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, edit); err != nil {
			t.Fatal(err)
		}
	} else {
		db, err := sql.Open("sqlite", filepath.Join(loc.DataDir, "gateway.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.ExecContext(ctx, edit); err != nil {
			t.Fatal(err)
		}
	}
	out, err := verify()
	if err == nil {
		t.Fatalf("verify passed after an audit row was edited:\n%s", out)
	}
	if !strings.Contains(out, "2") || !strings.Contains(strings.ToLower(out), "broken") {
		t.Errorf("verify's report does not name entry 2 as broken:\n%s", out)
	}
	r, err := adm.VerifyAuditLog(ctx, connect.NewRequest(&gatewayv1.VerifyAuditLogRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if r.Msg.GetOk() || r.Msg.GetFirstBrokenSeq() != 2 {
		t.Errorf("VerifyAuditLog = %v; want broken at 2", r.Msg)
	}
}

// TestAdminBadInput: every field of every AdminService request that can be wrong is refused
// with INVALID_ARGUMENT naming the field, and nothing changes: not the ledger, not the users.
func TestAdminBadInput(t *testing.T) {
	t.Parallel()
	s := newAdminSystem(t, cluster.Options{})
	adm := s.login(t, map[string]bool{})
	before := audit(t, s.c)
	long := strings.Repeat("x", 300)
	id := newID()
	type bad struct{ proc, body, field string }
	P := func(m string) string { return "/paygate.gateway.v1.AdminService/" + m }
	cases := []bad{
		{P("ListUsers"), `{"query":"` + long + `"}`, "query"},
		{P("ListUsers"), `{"role":"root"}`, "role"},
		{P("ListUsers"), `{"pageSize":501}`, "page_size"},
		{P("ListUsers"), `{"pageToken":"garbage"}`, "page_token"},
		{P("GetUser"), `{}`, "username"},
		{P("CreateUser"), `{"username":"1abc","initialPassword":"long-enough-pass"}`, "username"},
		{P("CreateUser"), `{"username":"zed","initialPassword":"short"}`, "initial_password"},
		{P("CreateUser"), `{"username":"zed","initialPassword":"long-enough-pass","role":"root"}`, "role"},
		{P("CreateUser"), `{"username":"zed","initialPassword":"long-enough-pass","accountIds":["bank1-1003","bank1-1003"]}`, "account_ids"},
		{P("CreateUser"), `{"username":"zed","initialPassword":"long-enough-pass","accountIds":[""]}`, "account_ids"},
		{P("DisableUser"), `{"username":"alice"}`, "reason"},
		{P("DisableUser"), `{"username":"alice","reason":"` + long + `"}`, "reason"},
		{P("EnableUser"), `{}`, "username"},
		{P("ResetPassword"), `{"username":"alice","initialPassword":"short"}`, "initial_password"},
		{P("SetRole"), `{"username":"alice","role":""}`, "role"},
		{P("SetRole"), `{"username":"alice","role":"owner"}`, "role"},
		{P("LinkAccount"), `{"username":"alice"}`, "account_id"},
		{P("UnlinkAccount"), `{"accountId":"bank1-1001"}`, "username"},
		{P("OpenAccount"), `{"bank":"Bank1","holder":"zed","currency":"USD","requestId":"` + id + `"}`, "bank"},
		{P("OpenAccount"), `{"bank":"bank1","holder":"","currency":"USD","requestId":"` + id + `"}`, "holder"},
		{P("OpenAccount"), `{"bank":"bank1","holder":"zed","currency":"usd","requestId":"` + id + `"}`, "currency"},
		{P("OpenAccount"), `{"bank":"bank1","holder":"zed","currency":"USD","requestId":"again"}`, "request_id"},
		{P("CloseAccount"), `{"accountId":"bank1-1003"}`, "reason"},
		{P("ListBankAccounts"), `{"bank":""}`, "bank"},
		{P("ListBankAccounts"), `{"bank":"bank1","pageSize":5000}`, "page_size"},
		{P("Deposit"), `{"accountId":"bank1-1001","amount":"0","currency":"USD","reason":"x","requestId":"` + id + `"}`, "amount"},
		{P("Deposit"), `{"accountId":"bank1-1001","amount":"-5","currency":"USD","reason":"x","requestId":"` + id + `"}`, "amount"},
		{P("Deposit"), `{"accountId":"bank1-1001","amount":"1000000000000001","currency":"USD","reason":"x","requestId":"` + id + `"}`, "amount"},
		{P("Deposit"), `{"accountId":"bank1-1001","amount":"100","currency":"US","reason":"x","requestId":"` + id + `"}`, "currency"},
		{P("Deposit"), `{"accountId":"bank1-1001","amount":"100","currency":"USD","reason":"","requestId":"` + id + `"}`, "reason"},
		{P("Deposit"), `{"accountId":"","amount":"100","currency":"USD","reason":"x","requestId":"` + id + `"}`, "account_id"},
		{P("Deposit"), `{"accountId":"bank1-1001","amount":"100","currency":"USD","reason":"x"}`, "request_id"},
		{P("Withdraw"), `{"accountId":"bank1-1001","amount":"0","currency":"USD","reason":"x","requestId":"` + id + `"}`, "amount"},
		{P("Withdraw"), `{"accountId":"bank1-1001","amount":"100","currency":"USD","reason":"` + long + `","requestId":"` + id + `"}`, "reason"},
		{P("ListLedgerEntries"), `{"bank":"bank1","pageSize":501}`, "page_size"},
		{P("SearchPayments"), `{"status":99}`, "status"},
		{P("SearchPayments"), `{"failureReason":99}`, "failure_reason"},
		{P("SearchPayments"), `{"createdAfter":"2026-01-02T00:00:00Z","createdBefore":"2026-01-01T00:00:00Z"}`, "created_before"},
		{P("SearchPayments"), `{"pageToken":"` + long + `"}`, "page_token"},
		{P("GetPaymentTrail"), `{}`, "payment_id"},
		{P("GetOperations"), `{"pageSize":1001}`, "page_size"},
		{P("RedrivePayment"), `{"paymentId":"` + long + `"}`, "payment_id"},
		{P("ListAuditLog"), `{"actor":"` + long + `"}`, "actor"},
		{P("ListAuditLog"), `{"pageSize":501}`, "page_size"},
	}
	for _, c := range cases {
		code, msg := callJSON(t, s.cert, s.apiURL(), adm.Token, c.proc, c.body)
		if code != "invalid_argument" || !strings.Contains(msg, c.field) {
			t.Errorf("%s %s: %q %q; want invalid_argument naming %s", procedureOf(c.proc), c.body, code, msg, c.field)
		}
	}
	after := audit(t, s.c)
	if after.Total != before.Total || after.Deposited != before.Deposited || after.Withdrawn != before.Withdrawn || len(after.Accounts) != len(before.Accounts) {
		t.Errorf("the ledger changed: total %d → %d, deposited %d → %d, withdrawn %d → %d, accounts %d → %d",
			before.Total, after.Total, before.Deposited, after.Deposited, before.Withdrawn, after.Withdrawn, len(before.Accounts), len(after.Accounts))
	}
	users, err := adm.Admin.ListUsers(ctxT(t, 10*time.Second), connect.NewRequest(&gatewayv1.ListUsersRequest{PageSize: 500}))
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range users.Msg.GetUsers() {
		if u.GetUsername() == "zed" || u.GetDisabled() || u.GetPasswordChangeRequired() || (u.GetUsername() == "alice" && u.GetRole() != "customer") {
			t.Errorf("a refused request changed a user: %v", u)
		}
	}
}

func procedureOf(p string) string { return p[strings.LastIndexByte(p, '/')+1:] }
