package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/paygate/paygate/internal/cluster"
	"github.com/paygate/paygate/services/gateway"
)

// End-to-end test of the paygate admin commands: a real cluster, and the built binary as the
// operator's and the users' client processes.

// runIn runs paygate as u with stdin and extra environment, bounded to a minute.
func runIn(u *cliUser, stdin string, env []string, args ...string) (string, string, int) {
	u.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := u.command(ctx, args...)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return out.String(), errb.String(), ee.ExitCode()
	case err != nil:
		u.t.Fatalf("paygate %v: %v", args, err)
	}
	return out.String(), errb.String(), 0
}

// mustJSON runs paygate as u, wants exit 0 and decodes its one line of JSON into v.
func mustJSON(u *cliUser, v any, args ...string) {
	u.t.Helper()
	out := u.must(0, args...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		u.t.Fatalf("paygate %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// wantRefused runs paygate as u and wants exit 1 with stderr naming reason.
func wantRefused(u *cliUser, reason string, args ...string) string {
	u.t.Helper()
	out, errOut, code := u.run(args...)
	if code != exitFailure || !strings.Contains(errOut, reason) {
		u.t.Fatalf("paygate %s: exit %d, want %d and %q\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, exitFailure, reason, out, errOut)
	}
	return errOut
}

// storeArgs are the --data or --database-url of the cluster's gateway store.
func storeArgs(c *cluster.Cluster) []string {
	if u := c.GatewayDatabaseURL(); u != "" {
		return []string{"--database-url", u}
	}
	return []string{"--data", c.GatewayDataDir()}
}

// TestAdminCLI: an operator bootstraps the first admin, signs in with the second factor and
// an admin certificate, onboards a user with an initial password (who changes it and pays),
// deposits with a request id that a retry reuses, follows the payment's trail, sees the
// banks, is refused without the second factor or the admin certificate, disables the user,
// and finds it all in the audit log, whose chain verifies.
func TestAdminCLI(t *testing.T) {
	t.Parallel()
	c := cluster.New(t, cluster.Options{})
	ops := newCLIUser(t, c)
	const opsPassword = "ops-password-0123"

	// Bootstrap: once.
	out, errOut, code := runIn(ops, "", []string{"PAYGATE_ADMIN_PASSWORD=" + opsPassword}, append(append([]string{"admin", "bootstrap"}, storeArgs(c)...), "--username", "ops", "--json")...)
	if code != 0 {
		t.Fatalf("bootstrap: exit %d\n%s%s", code, out, errOut)
	}
	var enr map[string]string
	if err := json.Unmarshal([]byte(out), &enr); err != nil {
		t.Fatalf("bootstrap --json: %v\n%s", err, out)
	}
	if enr["username"] != "ops" || enr["totp_secret"] == "" || !strings.HasPrefix(enr["otpauth_url"], "otpauth://totp/") || strings.Contains(out, opsPassword) {
		t.Fatalf("bootstrap printed %s", out)
	}
	out, errOut, code = runIn(ops, "other-password-1\n", nil, append(append([]string{"admin", "bootstrap"}, storeArgs(c)...), "--username", "ops2", "--password-stdin")...)
	if code != exitFailure || !strings.Contains(errOut, "has an admin already") {
		t.Fatalf("second bootstrap: exit %d, want %d and a refusal\n%s%s", code, exitFailure, out, errOut)
	}

	// Sign in with the second factor and the admin certificate.
	cert := c.AdminCert("ops")
	totp, err := gateway.CurrentTOTP(enr["totp_secret"], time.Now())
	if err != nil {
		t.Fatal(err)
	}
	out = ops.must(0, "login", "--cert", cert.Cert, "--key", cert.Key, "--totp", totp, "--password", opsPassword, "ops")
	if !strings.Contains(out, "role: admin, second factor passed") {
		t.Fatalf("admin login: %s", out)
	}

	// A user with an initial password, who must change it before paying.
	var created struct {
		User            userJSON `json:"user"`
		InitialPassword string   `json:"initial_password"`
	}
	mustJSON(ops, &created, "admin", "users", "create", "--account", "bank1-1004", "--generate-password", "--json", "erin")
	if created.User.Username != "erin" || !created.User.PasswordChangeRequired || len(created.User.Accounts) != 1 || created.InitialPassword == "" {
		t.Fatalf("users create: %+v", created)
	}
	erin := newCLIUser(t, c)
	if out := erin.must(0, "login", "--password", created.InitialPassword, "erin"); !strings.Contains(out, "run 'paygate change-password'") {
		t.Errorf("login with an initial password: %s", out)
	}
	wantRefused(erin, "password", "balance")
	if out, errOut, code := runIn(erin, created.InitialPassword+"\nerin-new-password-1\n", nil, "change-password"); code != 0 || !strings.Contains(out, "password of erin changed") {
		t.Fatalf("change-password: exit %d\n%s%s", code, out, errOut)
	}
	wantRefused(erin, "not logged in", "balance")
	erin.must(0, "login", "--password", "erin-new-password-1", "erin")

	// A deposit, and its retry with the printed request id, which moves nothing more.
	type accounts struct {
		Accounts []bankAccountJSON `json:"accounts"`
	}
	balanceOf := func(id string) int64 {
		t.Helper()
		var list accounts
		mustJSON(ops, &list, "admin", "accounts", "list", "--bank", "bank1", "--json")
		for _, a := range list.Accounts {
			if a.AccountID == id {
				if a.LinkedUsername != "erin" && id == "bank1-1004" {
					t.Errorf("%s linked to %q, want erin", id, a.LinkedUsername)
				}
				return a.Balance
			}
		}
		t.Fatalf("accounts list has no %s: %+v", id, list)
		return 0
	}
	before := balanceOf("bank1-1004")
	var dep struct {
		Entry     ledgerEntryJSON `json:"entry"`
		Replayed  bool            `json:"replayed"`
		RequestID string          `json:"request_id"`
	}
	mustJSON(ops, &dep, "admin", "deposit", "--reason", "cash deposit, branch 12", "--json", "bank1-1004", "12.34")
	if dep.Entry.Amount != 1234 || dep.Entry.Currency != "USD" || dep.Replayed || dep.RequestID == "" || dep.Entry.Admin != "ops" {
		t.Fatalf("deposit: %+v", dep)
	}
	out = ops.must(0, "admin", "deposit", "--reason", "cash deposit, branch 12", "--request-id", dep.RequestID, "bank1-1004", "12.34")
	if !strings.Contains(out, "nothing moved now") || !strings.Contains(out, "request id "+dep.RequestID) {
		t.Errorf("deposit retried: %s", out)
	}
	if got := balanceOf("bank1-1004"); got != before+1234 {
		t.Errorf("bank1-1004: %d after one deposit of 1234 sent twice, want %d", got, before+1234)
	}
	wantRefused(ops, "insufficient_funds", "admin", "withdraw", "--reason", "too much", "bank1-1004", "1000000")
	out = ops.must(0, "admin", "entries", "--bank", "bank1")
	if !strings.Contains(out, "deposit") || !strings.Contains(out, "12.34 USD") || strings.Count(out, dep.RequestID) != 1 {
		t.Errorf("entries: %s", out)
	}

	// erin pays; the operator finds the payment and its trail.
	if out := erin.must(0, "pay", "--from", "bank1-1004", "--to", "bank2-2002", "--amount", "5.00"); !strings.HasPrefix(out, "succeeded") {
		t.Fatalf("pay: %s", out)
	}
	var found struct {
		Payments []paymentJSON `json:"payments"`
	}
	mustJSON(ops, &found, "admin", "payments", "search", "--user", "erin", "--since", "1h", "--json")
	if len(found.Payments) != 1 || found.Payments[0].Status != "succeeded" || found.Payments[0].Amount != 500 {
		t.Fatalf("payments search: %+v", found)
	}
	out = ops.must(0, "admin", "payments", "trail", found.Payments[0].PaymentID)
	for _, s := range []string{"status      succeeded", "admitted", "vote", "commit", "acknowledged", "completed   yes", "committed"} {
		if !strings.Contains(out, s) {
			t.Errorf("trail lacks %q:\n%s", s, out)
		}
	}
	var ops1 operationsJSON
	mustJSON(ops, &ops1, "admin", "ops", "--json")
	if len(ops1.Banks) != 3 || len(ops1.InDoubt) != 0 {
		t.Errorf("ops: %+v", ops1)
	}
	for _, b := range ops1.Banks {
		if b.Status != "available" {
			t.Errorf("ops: bank %+v", b)
		}
	}

	// Refused: another certificate than the admin's; a session without the second factor.
	wantRefused(ops, "admin_certificate_required", "admin", "users", "list", "--cert", c.CertPath("client-cli.pem"), "--key", c.CertPath("client-cli-key.pem"))
	ops2 := newCLIUser(t, c)
	if out := ops2.must(0, "login", "--cert", cert.Cert, "--key", cert.Key, "--password", opsPassword, "ops"); !strings.Contains(out, "without second factor") {
		t.Errorf("admin login without --totp: %s", out)
	}
	if errOut := wantRefused(ops2, "second_factor_required", "admin", "users", "list"); !strings.Contains(errOut, "--totp CODE") {
		t.Errorf("the refusal does not say what to do:\n%s", errOut)
	}

	// Disabling erin ends her session at once.
	if out := ops.must(0, "admin", "users", "disable", "--reason", "reported stolen", "erin"); !strings.Contains(out, "disabled erin") {
		t.Errorf("disable: %s", out)
	}
	wantRefused(erin, "unauthenticated", "balance")

	// The audit log has it all, refusals included, and its chain is whole.
	var audit struct {
		Entries []auditEntryJSON `json:"entries"`
	}
	mustJSON(ops, &audit, "admin", "audit", "list", "--limit", "100", "--json")
	seen := map[string]bool{}
	for _, e := range audit.Entries {
		seen[e.Action+" "+e.Outcome+" "+e.Reason] = true
	}
	for _, want := range []string{"bootstrap ok ", "CreateUser ok ", "Deposit ok ", "DisableUser ok ", "ListUsers permission_denied admin_certificate_required",
		"ListUsers permission_denied second_factor_required"} {
		if !seen[want] {
			t.Errorf("audit log lacks %q: %v", want, seen)
		}
	}
	if out := ops.must(0, "admin", "audit", "verify"); !strings.HasPrefix(out, "audit log OK: ") {
		t.Errorf("audit verify at the gateway: %s", out)
	}
	if out := ops.must(0, append([]string{"admin", "audit", "verify"}, storeArgs(c)...)...); !strings.HasPrefix(out, "audit log OK: ") {
		t.Errorf("audit verify of the store: %s", out)
	}
}
