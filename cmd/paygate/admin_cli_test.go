package main

import (
	"bytes"
	"context"
	"flag"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/services/gateway"
)

// Tests of paygate admin that need no gateway: help, command-line mistakes, parsing, and what
// the tables and JSON look like.

// adminLeaves returns the path of every runnable subcommand of paygate admin, e.g.
// "admin users list".
func adminLeaves(c *ffcli.Command, prefix string) []string {
	path := strings.TrimSpace(prefix + " " + c.Name)
	if len(c.Subcommands) == 0 {
		return []string{path}
	}
	var out []string
	for _, s := range c.Subcommands {
		out = append(out, adminLeaves(s, path)...)
	}
	return out
}

func TestAdminCommandsHaveHelpWithAnExample(t *testing.T) {
	t.Parallel()
	leaves := adminLeaves(newAdminCommand(&env{stdout: io.Discard, stderr: io.Discard}), "")
	want := []string{"admin bootstrap", "admin audit verify", "admin audit list", "admin users list", "admin users get",
		"admin users create", "admin users disable", "admin users enable", "admin users reset-password", "admin users set-role",
		"admin users link", "admin users unlink", "admin accounts list", "admin accounts open", "admin accounts close",
		"admin deposit", "admin withdraw", "admin entries", "admin payments search", "admin payments trail", "admin ops", "admin redrive"}
	if !slices.Equal(sortedCopy(leaves), sortedCopy(want)) {
		t.Fatalf("admin subcommands %v, want %v", leaves, want)
	}
	for _, path := range leaves {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			code, out, errOut := runCmd(t, append(strings.Fields(path), "--help")...)
			if code != exitOK || out != "" {
				t.Fatalf("exit %d, stdout %q; want 0 and the help on stderr", code, out)
			}
			for _, s := range []string{"paygate " + path, "Example:\n  paygate " + path, "-json"} {
				if !strings.Contains(errOut, s) {
					t.Errorf("help lacks %q:\n%s", s, errOut)
				}
			}
		})
	}
	// The groups list their subcommands.
	for _, group := range []string{"admin", "admin users", "admin accounts", "admin payments", "admin audit"} {
		code, _, errOut := runCmd(t, strings.Fields(group)...)
		if code != exitUsage || !strings.Contains(errOut, "SUBCOMMANDS") {
			t.Errorf("paygate %s: exit %d, want %d and the subcommands:\n%s", group, code, exitUsage, errOut)
		}
	}
	if code, _, errOut := runCmd(t, "admin", "users", "frobnicate"); code != exitUsage || !strings.Contains(errOut, `unknown subcommand "frobnicate"`) {
		t.Errorf("unknown subcommand: exit %d:\n%s", code, errOut)
	}
}

func sortedCopy(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

// Mistakes on the command line are usage errors (exit 2) that name the mistake and the
// command's help, before anything is sent: there is no session and no gateway here.
func TestAdminUsageErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"admin", "users", "get"}, "want USERNAME, got 0"},
		{[]string{"admin", "users", "get", "alice", "bob"}, "want USERNAME, got 2"},
		{[]string{"admin", "users", "get", "alice", "--nope"}, "flag provided but not defined: -nope"},
		{[]string{"admin", "users", "list", "--limit", "0"}, "--limit 0: want 1 to 500"},
		{[]string{"admin", "users", "list", "--role", "root"}, `--role "root": want customer or admin`},
		{[]string{"admin", "users", "create", "--role", "boss", "erin"}, `--role "boss"`},
		{[]string{"admin", "users", "disable", "alice"}, "--reason is required"},
		{[]string{"admin", "users", "set-role", "alice", "root"}, `ROLE "root": want customer or admin`},
		{[]string{"admin", "users", "link", "alice"}, "want USERNAME ACCOUNT"},
		{[]string{"admin", "accounts", "list"}, "--bank is required"},
		{[]string{"admin", "accounts", "open", "--bank", "bank1"}, "--holder and --currency are required"},
		{[]string{"admin", "accounts", "close", "bank1-1001"}, "--reason is required"},
		{[]string{"admin", "deposit", "bank1-1001", "10.00"}, "--reason is required"},
		{[]string{"admin", "deposit", "--reason", "x", "nobank", "10.00"}, `ACCOUNT "nobank": want <bank>-<number>`},
		{[]string{"admin", "deposit", "--reason", "x", "--currency", "USD", "bank1-1001", "10.001"}, "more decimal places than USD's 2"},
		{[]string{"admin", "deposit", "--reason", "x", "--currency", "USD", "bank1-1001", "0"}, "want more than zero"},
		{[]string{"admin", "withdraw", "--reason", "x", "--currency", "USD", "bank1-1001", "ten"}, "not a decimal number"},
		{[]string{"admin", "deposit", "--reason", "x", "--request-id", "again", "bank1-1001", "1"}, `--request-id "again": want a UUID or a ULID`},
		{[]string{"admin", "entries"}, "--bank is required"},
		{[]string{"admin", "payments", "search", "--status", "lost"}, `--status "lost"`},
		{[]string{"admin", "payments", "search", "--reason", "bad_luck"}, "want one of insufficient_funds, unknown_account"},
		{[]string{"admin", "payments", "search", "--status", "succeeded", "--reason", "timeout"}, "needs --status failed"},
		{[]string{"admin", "payments", "search", "--since", "yesterday"}, `--since "yesterday"`},
		{[]string{"admin", "payments", "search", "--since", "1h", "--until", "2h"}, "--until must be after --since"},
		{[]string{"admin", "payments", "trail"}, "want PAYMENT_ID"},
		{[]string{"admin", "ops", "--limit", "5000"}, "--limit 5000: want 1 to 1000"},
		{[]string{"admin", "redrive"}, "want PAYMENT_ID"},
		{[]string{"admin", "bootstrap", "--username", "ops"}, "give --data DIR or --database-url URL"},
		{[]string{"admin", "bootstrap", "--data", "d", "--database-url", "postgres://h/db", "--username", "ops"}, "not both"},
		{[]string{"admin", "bootstrap", "--data", "d"}, "--username is required"},
		{[]string{"admin", "audit", "verify", "extra"}, "unexpected arguments: extra"},
		{[]string{"admin", "audit", "list", "--limit", "501"}, "--limit 501: want 1 to 500"},
		{[]string{"login", "--totp", "12345", "admin"}, `--totp "12345": want the 6 digits`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			code, out, errOut := runCmd(t, tt.args...)
			if code != exitUsage || !strings.Contains(errOut, tt.want) {
				t.Errorf("exit %d, want %d and stderr containing %q\nstdout: %s\nstderr: %s", code, exitUsage, tt.want, out, errOut)
			}
			if tt.args[0] == "admin" && !strings.Contains(errOut, "paygate "+adminPathOf(tt.args)+" --help") && !strings.Contains(errOut, "USAGE") {
				t.Errorf("stderr does not point at the command's help:\n%s", errOut)
			}
		})
	}
}

// adminPathOf returns the command words of args: "admin users get" of admin users get alice.
func adminPathOf(args []string) string {
	c := newAdminCommand(&env{stdout: io.Discard, stderr: io.Discard})
	path := []string{"admin"}
	for _, a := range args[1:] {
		var next *ffcli.Command
		for _, s := range c.Subcommands {
			if s.Name == a {
				next = s
			}
		}
		if next == nil {
			break
		}
		c, path = next, append(path, a)
	}
	return strings.Join(path, " ")
}

// Without a login the commands that call the gateway say so and exit 1.
func TestAdminNeedsALogin(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	code, _, errOut := runCmd(t, "admin", "users", "list", "--config-dir", dir, "--dev-dir", filepath.Join(dir, "none"))
	if code != exitFailure || !strings.Contains(errOut, "not logged in: run 'paygate login USERNAME'") {
		t.Errorf("exit %d: %s", code, errOut)
	}
}

func TestAdminFlagsAfterArguments(t *testing.T) {
	t.Parallel()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	asJSON := fs.Bool("json", false, "")
	reason := fs.String("reason", "", "")
	args, err := parseInterleaved(fs, []string{"bank1-1001", "--json", "10.00", "--reason", "cash"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(args, []string{"bank1-1001", "10.00"}) || !*asJSON || *reason != "cash" {
		t.Errorf("args %v json %v reason %q", args, *asJSON, *reason)
	}
	if _, err := parseInterleaved(fs, []string{"x", "--nope"}); err == nil {
		t.Error("an unknown flag after an argument was accepted")
	}
}

func TestParseWhen(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Time
	}{
		{"2026-11-30T08:00:00Z", time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)},
		{"2026-11-30", time.Date(2026, 11, 30, 0, 0, 0, 0, time.Local)},
		{"2026-11-30 15:04", time.Date(2026, 11, 30, 15, 4, 0, 0, time.Local)},
		{"90m", now.Add(-90 * time.Minute)},
		{"36h", now.Add(-36 * time.Hour)},
		{"7d", now.AddDate(0, 0, -7)},
	}
	for _, tt := range tests {
		got, err := parseWhen(tt.in, now)
		if err != nil || !got.Equal(tt.want) {
			t.Errorf("parseWhen(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "yesterday", "-1h", "-2d", "2026-13-01", "1w"} {
		if got, err := parseWhen(bad, now); err == nil {
			t.Errorf("parseWhen(%q) = %v, want an error", bad, got)
		}
	}
}

func TestSearchFlagsRequest(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	req, err := searchFlags{user: "alice", acct: "bank1-1001", bank: "bank1", reason: "insufficient_funds", since: "24h", until: "2026-12-01T11:00:00Z"}.request(now)
	if err != nil {
		t.Fatal(err)
	}
	if req.GetUsername() != "alice" || req.GetAccountId() != "bank1-1001" || req.GetBank() != "bank1" ||
		req.GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED || // implied by --reason
		req.GetFailureReason() != gatewayv1.FailureReason_FAILURE_REASON_INSUFFICIENT_FUNDS ||
		!req.GetCreatedAfter().AsTime().Equal(now.Add(-24*time.Hour)) || !req.GetCreatedBefore().AsTime().Equal(now.Add(-time.Hour)) {
		t.Errorf("request %v", req)
	}
	req, err = searchFlags{status: "processing"}.request(now)
	if err != nil || req.GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_PROCESSING || req.GetCreatedAfter() != nil || req.GetCreatedBefore() != nil {
		t.Errorf("request %v, %v", req, err)
	}
}

// columns returns the start of each column of a table line: where a run of two or more
// spaces ends.
func tableColumns(line string) []int {
	out := []int{0}
	for _, m := range regexp.MustCompile(` {2,}`).FindAllStringIndex(line, -1) {
		out = append(out, m[1])
	}
	return out
}

// checkAligned checks that the first n lines of table start their columns at the same places.
func checkAligned(t *testing.T, table string, n int) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(table, "\n"), "\n")
	if len(lines) < n {
		t.Fatalf("table of %d lines, want at least %d:\n%s", len(lines), n, table)
	}
	want := tableColumns(lines[0])
	for _, l := range lines[1:n] {
		if got := tableColumns(l); !slices.Equal(got, want) {
			t.Errorf("columns at %v, header's at %v:\n%s", got, want, table)
		}
	}
}

func renderTable(write func(w io.Writer)) string {
	var b bytes.Buffer
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	write(tw)
	tw.Flush()
	return b.String()
}

func TestAdminTables(t *testing.T) {
	t.Parallel()
	created := time.Date(2026, 12, 1, 9, 30, 0, 0, time.UTC)
	users := []userJSON{
		userToJSON(&gatewayv1.User{Username: "alice", Role: "customer", AccountIds: []string{"bank1-1001", "bank2-2001"}}),
		userToJSON(&gatewayv1.User{Username: "ops", Role: "admin", SecondFactorEnrolled: true}),
		userToJSON(&gatewayv1.User{Username: "erin", Role: "customer", PasswordChangeRequired: true}),
		userToJSON(&gatewayv1.User{Username: "mallory", Role: "customer", Disabled: true}),
	}
	users[0].CreateTime = &created
	out := renderTable(func(w io.Writer) { writeUsersTable(w, users) })
	checkAligned(t, out, 5)
	for _, s := range []string{"bank1-1001,bank2-2001", "must change password", "disabled", "active", when(&created)} {
		if !strings.Contains(out, s) {
			t.Errorf("users table lacks %q:\n%s", s, out)
		}
	}
	if users[1].Accounts == nil {
		t.Error("a user without accounts has null accounts in JSON; want []")
	}

	accounts := []bankAccountJSON{bankAccountToJSON(&gatewayv1.BankAccount{AccountId: "bank1-1001", Bank: "bank1", Holder: "alice", Currency: "USD",
		Balance: &gatewayv1.AccountBalance{Balance: 100050, Held: 2500, Available: 97550, PendingCredit: 100}, LinkedUsername: "alice"}),
		bankAccountToJSON(&gatewayv1.BankAccount{AccountId: "bank1-1005", Bank: "bank1", Holder: "zed", Currency: "JPY", Closed: true, Balance: &gatewayv1.AccountBalance{}})}
	out = renderTable(func(w io.Writer) { writeAccountsTable(w, accounts) })
	checkAligned(t, out, 3)
	for _, s := range []string{"1000.50", "25.00", "975.50", "1.00", "closed", "alice"} {
		if !strings.Contains(out, s) {
			t.Errorf("accounts table lacks %q:\n%s", s, out)
		}
	}

	entries := []ledgerEntryJSON{ledgerEntryToJSON(&gatewayv1.LedgerEntry{EntryId: "e1", Kind: gatewayv1.LedgerEntryKind_LEDGER_ENTRY_KIND_DEPOSIT,
		AccountId: "bank1-1004", Amount: 25000, Currency: "USD", Admin: "ops", Reason: "cash deposit, branch 12", BalanceAfter: 75000})}
	if e := entries[0]; e.Kind != "deposit" || e.AmountDecimal != "250.00" {
		t.Errorf("entry %+v", e)
	}
	out = renderTable(func(w io.Writer) { writeEntriesTable(w, entries) })
	checkAligned(t, out, 2)
	if !strings.Contains(out, "250.00 USD") || !strings.Contains(out, "750.00") {
		t.Errorf("entries table:\n%s", out)
	}

	audit := []auditEntryJSON{auditEntryToJSON(&gatewayv1.AuditEntry{Seq: 2, Actor: "ops", ActorCertificate: "spiffe://paygate/admin/ops", Action: "CreateUser",
		Target: "user:erin", Outcome: "ok"}), auditEntryToJSON(&gatewayv1.AuditEntry{Seq: 1, Action: "ListUsers", Outcome: "permission_denied", Reason: "admin_certificate_required"})}
	out = renderTable(func(w io.Writer) { writeAuditTable(w, audit) })
	checkAligned(t, out, 3)
	if !strings.Contains(out, "admin/ops") || !strings.Contains(out, "permission_denied (admin_certificate_required)") {
		t.Errorf("audit table:\n%s", out)
	}
}

func TestAdminTrail(t *testing.T) {
	t.Parallel()
	ts := func(s int) *time.Time { v := time.Date(2026, 12, 1, 9, 0, s, 0, time.UTC); return &v }
	events := []struct {
		ev   *gatewayv1.TrailEvent
		want string
	}{
		{&gatewayv1.TrailEvent{Kind: gatewayv1.TrailEventKind_TRAIL_EVENT_KIND_VOTE, Bank: "bank1", Vote: "no", Detail: "insufficient funds"}, "no: insufficient funds"},
		{&gatewayv1.TrailEvent{Kind: gatewayv1.TrailEventKind_TRAIL_EVENT_KIND_DECIDED, Decision: "abort", DecidedBy: gatewayv1.DecidedBy_DECIDED_BY_TIMEOUT_MONITOR}, "abort by timeout monitor"},
		{&gatewayv1.TrailEvent{Kind: gatewayv1.TrailEventKind_TRAIL_EVENT_KIND_RETRY, Bank: "bank2", Attempt: 3, Detail: "unavailable"}, "attempt 3: unavailable"},
		{&gatewayv1.TrailEvent{Kind: gatewayv1.TrailEventKind_TRAIL_EVENT_KIND_CLAIMED, Replica: "gw-2"}, "(replica gw-2)"},
		{&gatewayv1.TrailEvent{Kind: gatewayv1.TrailEventKind_TRAIL_EVENT_KIND_ADMITTED}, "-"},
	}
	resp := &gatewayv1.GetPaymentTrailResponse{
		Payment: &gatewayv1.Payment{PaymentId: "p1", FromAccount: "bank1-1001", ToAccount: "bank2-2002", Amount: 500, Currency: "USD",
			Status: gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED, FailureReason: gatewayv1.FailureReason_FAILURE_REASON_INSUFFICIENT_FUNDS},
		Banks: []*gatewayv1.BankTransaction{{Bank: "bank1", State: "aborted"}, {Bank: "bank2", State: "unavailable", Detail: "connection refused"}},
	}
	for _, e := range events {
		if got := trailDetail(trailEventToJSON(e.ev)); got != e.want {
			t.Errorf("detail of %v = %q, want %q", e.ev, got, e.want)
		}
		resp.Events = append(resp.Events, e.ev)
	}
	tr := trailToJSON(resp)
	tr.Events[0].Time = ts(1)
	if tr.Events[1].DecidedBy != "timeout_monitor" || tr.Events[0].Event != "vote" {
		t.Errorf("events %+v", tr.Events)
	}
	out := renderTable(func(w io.Writer) { writeTrail(w, tr) })
	for _, s := range []string{"status      failed (insufficient_funds)", "5.00 USD", "bank1-1001 -> bank2-2002", "completed   no",
		"2026-12-01", "decided", "abort by timeout monitor", "unavailable  connection refused"} {
		if !strings.Contains(out, s) {
			t.Errorf("trail lacks %q:\n%s", s, out)
		}
	}
	lines := strings.Split(out, "\n")
	var timeline []string
	for i, l := range lines {
		if strings.HasPrefix(l, "TIME") {
			timeline = lines[i : i+1+len(events)]
		}
	}
	checkAligned(t, strings.Join(timeline, "\n"), len(timeline))
}

func TestAdminOperations(t *testing.T) {
	t.Parallel()
	o := operationsToJSON(&gatewayv1.GetOperationsResponse{
		InDoubt: []*gatewayv1.InDoubtPayment{{Payment: &gatewayv1.Payment{PaymentId: "p1", Amount: 100, Currency: "USD"}, Stage: "awaiting_acknowledgement", WaitingFor: []string{"bank2"}, Attempts: 4}},
		More:    true,
		Banks: []*gatewayv1.BankOperations{{Bank: "bank1", Status: gatewayv1.BankStatus_BANK_STATUS_AVAILABLE, Accounts: 4, Balance: 182575},
			{Bank: "bank2", Status: gatewayv1.BankStatus_BANK_STATUS_UNAVAILABLE, Error: "connection refused"}},
	})
	if o.Banks[1].Status != "unavailable" || o.InDoubt[0].Stage != "awaiting_acknowledgement" {
		t.Errorf("%+v", o)
	}
	out := renderTable(func(w io.Writer) { writeOperations(w, o) })
	for _, s := range []string{"unavailable: connection refused", "182575", "awaiting acknowledgement", "bank2", "more in doubt than shown"} {
		if !strings.Contains(out, s) {
			t.Errorf("ops lacks %q:\n%s", s, out)
		}
	}
	empty := renderTable(func(w io.Writer) { writeOperations(w, operationsToJSON(&gatewayv1.GetOperationsResponse{})) })
	if !strings.Contains(empty, "no payments in doubt") {
		t.Errorf("ops without payments in doubt:\n%s", empty)
	}
}

func TestAuditVerdict(t *testing.T) {
	t.Parallel()
	if got := auditVerdict(gateway.AuditVerification{OK: true, Entries: 42}); got != "audit log OK: 42 entries" {
		t.Errorf("ok: %q", got)
	}
	if got := auditVerdict(gateway.AuditVerification{Entries: 9, FirstBroken: 7, Problem: "hash mismatch"}); got != "audit log BROKEN at entry 7: hash mismatch" {
		t.Errorf("broken: %q", got)
	}
}

func TestValidTOTPCode(t *testing.T) {
	t.Parallel()
	for code, want := range map[string]bool{"123456": true, "000000": true, "12345": false, "1234567": false, "12a456": false, "": false, "１２３４５６": false} {
		if got := validTOTPCode(code); got != want {
			t.Errorf("validTOTPCode(%q) = %v, want %v", code, got, want)
		}
	}
}

// Passwords piped to stdin are read a line each, in order, and never prompted for.
func TestSecretReaderReadsLines(t *testing.T) {
	t.Parallel()
	f, err := os.CreateTemp(t.TempDir(), "stdin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("current-pass\r\nnew-password-1\nshort\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	r := &secretReader{e: &env{stdout: io.Discard, stderr: &stderr}, in: f}
	ctx := context.Background()
	if r.prompting() {
		t.Fatal("a file is not a terminal")
	}
	if got, err := r.read(ctx, "Current password", "x"); err != nil || got != "current-pass" {
		t.Errorf("first line %q, %v", got, err)
	}
	if got, err := r.newPassword(ctx, "New password", "x"); err != nil || got != "new-password-1" {
		t.Errorf("second line %q, %v", got, err)
	}
	if _, err := r.newPassword(ctx, "New password", "x"); err == nil || !strings.Contains(err.Error(), "at least 10") {
		t.Errorf("a short new password: %v", err)
	}
	if _, err := r.read(ctx, "Password", "give it on stdin"); err == nil || !strings.Contains(err.Error(), "no password: give it on stdin") {
		t.Errorf("at the end of stdin: %v", err)
	}
	if stderr.Len() != 0 {
		t.Errorf("prompted without a terminal: %q", stderr.String())
	}
}

func TestGeneratePassword(t *testing.T) {
	t.Parallel()
	a, b := generatePassword(), generatePassword()
	if a == b || len(a) < 20 || checkNewPassword(a) != nil {
		t.Errorf("generated %q and %q", a, b)
	}
}
