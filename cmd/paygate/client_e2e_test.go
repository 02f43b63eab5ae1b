package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/internal/cluster"
)

// End-to-end tests of the client commands: a real cluster (banks and gateway as processes)
// and the built paygate binary as the client process, each user with config and state
// directories of its own.

// cliUser runs the paygate binary as one user of a cluster.
type cliUser struct {
	t         *testing.T
	c         *cluster.Cluster
	configDir string
	stateDir  string
	// gateway is PAYGATE_GATEWAY: "" for the cluster's (first) gateway, "-" for none, so that
	// the commands take the address from the session of the last login.
	gateway string
}

func newCLIUser(t *testing.T, c *cluster.Cluster) *cliUser {
	dir := t.TempDir()
	return &cliUser{t: t, c: c, configDir: filepath.Join(dir, "config"), stateDir: filepath.Join(dir, "state")}
}

func (u *cliUser) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PAYGATE_") {
			env = append(env, kv)
		}
	}
	switch u.gateway {
	case "":
		env = append(env, "PAYGATE_GATEWAY="+u.c.GatewayAddr)
	case "-":
	default:
		env = append(env, "PAYGATE_GATEWAY="+u.gateway)
	}
	return append(env,
		"PAYGATE_CONFIG_DIR="+u.configDir,
		"PAYGATE_STATE_DIR="+u.stateDir,
		"PAYGATE_CERTS="+u.c.CertDir,
		"PAYGATE_DEV_DIR="+filepath.Join(u.configDir, "no-dev"),
		"PAYGATE_RETRY_MAX=300ms",
		"PAYGATE_TIMEOUT=10s",
	)
}

func (u *cliUser) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, u.c.Bin, args...)
	cmd.Env = u.env()
	return cmd
}

// run runs paygate with args, bounded to a minute, and returns stdout, stderr and the exit
// code.
func (u *cliUser) run(args ...string) (string, string, int) {
	u.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := u.command(ctx, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		u.t.Fatalf("paygate %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// must runs paygate and fails the test unless it exits with want.
func (u *cliUser) must(want int, args ...string) string {
	u.t.Helper()
	out, errOut, code := u.run(args...)
	if code != want {
		u.t.Fatalf("paygate %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, want, out, errOut)
	}
	return out
}

func (u *cliUser) login(name string) {
	u.t.Helper()
	u.must(0, "login", "--password", passwords[name], name)
}

var queuedLine = regexp.MustCompile(`(?m)^queued ([0-9a-f-]{36}) `)

// payQueued runs `paygate pay` and checks that it queued the payment; it returns the id.
func (u *cliUser) payQueued(from, to, amount string) string {
	u.t.Helper()
	out := u.must(0, "pay", "--from", from, "--to", to, "--amount", amount)
	m := queuedLine.FindStringSubmatch(out)
	if m == nil {
		u.t.Fatalf("paygate pay: output does not say queued <id>:\n%s", out)
	}
	return m[1]
}

type queueJSON struct {
	Pending []paymentJSON `json:"pending"`
	Recent  []paymentJSON `json:"recent"`
}

// lastJSON decodes the last line of out into v.
func lastJSON(t *testing.T, out string, v any) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), v); err != nil {
		t.Fatalf("decode %q: %v", lines[len(lines)-1], err)
	}
}

func outcomeOf(list []paymentJSON, id string) (paymentJSON, bool) {
	for _, p := range list {
		if p.PaymentID == id {
			return p, true
		}
	}
	return paymentJSON{}, false
}

// startGateway starts the gateway again and waits until it reports every bank serving, so
// that queued payments do not meet a bank it has not probed yet (they would fail with
// bank_unavailable, a definitive outcome).
func startGateway(t *testing.T, c *cluster.Cluster) {
	t.Helper()
	c.StartGateway()
	for _, b := range []string{"bank1", "bank2", "bank3"} {
		if err := c.WaitBankHealth(b, grpchealth.StatusServing, 20*time.Second); err != nil {
			t.Fatal(err)
		}
	}
}

// executeLines returns the gateway's log lines of ExecutePayment calls for id.
func executeLines(c *cluster.Cluster, id string) []string {
	return c.GrepLog("gateway", `"payment_id":"`+id+`"`, "ExecutePayment")
}

func TestCLIQueueWhileGatewayStoppedThenDelivered(t *testing.T) {
	t.Parallel()
	c := cluster.New(t, cluster.Options{})
	before := audit(t, c)
	u := newCLIUser(t, c)
	u.login("alice")

	c.Stop("gateway")
	id := u.payQueued("bank1-1001", "bank2-2002", "25.00")
	var q queueJSON
	lastJSON(t, u.must(0, "queue", "--no-send", "--json"), &q)
	if _, ok := outcomeOf(q.Pending, id); !ok || len(q.Pending) != 1 {
		t.Fatalf("queue --no-send: pending %+v, want %s", q.Pending, id)
	}

	startGateway(t, c)
	out := u.must(0, "queue")
	if !strings.Contains(out, "queued payment settled: succeeded  "+id) || !strings.Contains(out, "pending (0)") {
		t.Fatalf("paygate queue after the gateway came back:\n%s", out)
	}
	// The first attempt never reached the gateway; the one that did is logged as a retry.
	if lines := executeLines(c, id); len(lines) != 1 || !strings.Contains(lines[0], `"retry":true`) {
		t.Errorf("gateway log of %s: %q, want one ExecutePayment flagged retry", id, lines)
	}

	// paygate watch delivers a payment queued while the gateway was down, and reports it.
	c.Stop("gateway")
	id2 := u.payQueued("bank1-1001", "bank3-3001", "10.00")
	startGateway(t, c)
	out = u.must(0, "watch", "--for", "6s", "--json")
	found := false
	for line := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		var p paymentJSON
		if json.Unmarshal([]byte(line), &p) == nil && p.PaymentID == id2 && p.Status == "succeeded" {
			found = true
		}
	}
	if !found {
		t.Fatalf("paygate watch did not report %s succeeded:\n%s", id2, out)
	}

	after := checkSettled(t, c, before, 30*time.Second)
	want := map[string]int64{"bank1-1001": -3500, "bank2-2002": 2500, "bank3-3001": 1000}
	if got := delta(before, after); !mapsEqual(got, want) {
		t.Errorf("balances moved by %v, want %v (each payment exactly once)", got, want)
	}
}

func TestCLIQueueSurvivesSIGKILLOfTheClient(t *testing.T) {
	t.Parallel()
	c := cluster.New(t, cluster.Options{})
	before := audit(t, c)
	u := newCLIUser(t, c)
	u.login("alice")
	c.Stop("gateway")
	var ids []string
	for range 12 {
		ids = append(ids, u.payQueued("bank1-1001", "bank2-2002", "1.00"))
	}

	// A sender holding the queue while the gateway is down, killed with SIGKILL.
	kill := func(after time.Duration) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := u.command(ctx, "queue", "send")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(after)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
	}
	kill(1500 * time.Millisecond)

	// The gateway is back; a sender is killed while it delivers.
	startGateway(t, c)
	kill(150 * time.Millisecond)

	// On restart the rest is sent; nothing is applied twice.
	out := u.must(0, "queue", "send", "--json")
	var q queueJSON
	lastJSON(t, out, &q)
	if len(q.Pending) != 0 {
		t.Fatalf("still pending after queue send: %+v", q.Pending)
	}
	for _, id := range ids {
		if p, ok := outcomeOf(q.Recent, id); !ok || p.Status != "succeeded" {
			t.Errorf("payment %s: %+v, want succeeded", id, p)
		}
		if n := len(executeLines(c, id)); n == 0 {
			t.Errorf("payment %s never reached the gateway", id)
		}
	}
	after := checkSettled(t, c, before, 30*time.Second)
	want := map[string]int64{"bank1-1001": -1200, "bank2-2002": 1200}
	if got := delta(before, after); !mapsEqual(got, want) {
		t.Errorf("balances moved by %v, want %v (each payment exactly once)", got, want)
	}
}

func TestCLIQueueHundredOfflinePaymentsFlushedInOrder(t *testing.T) {
	t.Parallel()
	c := cluster.New(t, cluster.Options{})
	before := audit(t, c)
	u := newCLIUser(t, c)
	u.login("alice")
	c.Stop("gateway")

	sources := []string{"bank1-1001", "bank2-2001"}
	queued := map[string][]string{}
	want := map[string]int64{}
	for i := range 100 {
		from, to := sources[i%2], []string{"bank2-2002", "bank3-3001"}[i/2%2]
		cents := int64(100 + i)
		id := u.payQueued(from, to, fmt.Sprintf("%d.%02d", cents/100, cents%100))
		queued[from] = append(queued[from], id)
		want[from] -= cents
		want[to] += cents
	}
	startGateway(t, c)
	out, errOut, code := u.run("queue", "--flush", "--json")
	if code != 0 {
		t.Fatalf("queue --flush: exit %d\n%s\n%s", code, out, errOut)
	}
	if !strings.Contains(errOut, "sending:") {
		t.Errorf("queue --flush showed no progress on stderr:\n%s", errOut)
	}

	// The gateway's history: every payment succeeded once, each account's in queue order.
	alice := login(t, c, "alice")
	var all []*gatewayv1.Payment
	token := ""
	for {
		resp, err := alice.Payments.ListPayments(ctxT(t, 10*time.Second), connect.NewRequest(&gatewayv1.ListPaymentsRequest{PageSize: 100, PageToken: token}))
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, resp.Msg.GetPayments()...)
		if token = resp.Msg.GetNextPageToken(); token == "" {
			break
		}
	}
	if len(all) != 100 {
		t.Fatalf("gateway has %d payments of alice, want 100", len(all))
	}
	slices.SortFunc(all, func(a, b *gatewayv1.Payment) int {
		return a.GetCreateTime().AsTime().Compare(b.GetCreateTime().AsTime())
	})
	got := map[string][]string{}
	for _, p := range all {
		if p.GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
			t.Errorf("payment %s: %s %s", p.GetPaymentId(), p.GetStatus(), p.GetFailureMessage())
		}
		got[p.GetFromAccount()] = append(got[p.GetFromAccount()], p.GetPaymentId())
	}
	for _, from := range sources {
		if !slices.Equal(got[from], queued[from]) {
			t.Errorf("%s: applied in order\n%v\nqueued in order\n%v", from, got[from], queued[from])
		}
	}
	after := checkSettled(t, c, before, 30*time.Second)
	if d := delta(before, after); !mapsEqual(d, want) {
		t.Errorf("balances moved by %v, want %v (each payment exactly once)", d, want)
	}
}

func TestCLIQueuedPaymentRefusedIsFailedAndNotRetried(t *testing.T) {
	t.Parallel()
	c := cluster.New(t, cluster.Options{})
	before := audit(t, c)
	u := newCLIUser(t, c)
	u.login("dave") // bank1-1003 holds 75.25
	c.Stop("gateway")
	id := u.payQueued("bank1-1003", "bank2-2002", "500.00")
	startGateway(t, c)

	out := u.must(exitPaymentFailed, "queue")
	if !strings.Contains(out, "failed     "+id) || !strings.Contains(out, "insufficient_funds") {
		t.Fatalf("paygate queue: want %s failed with insufficient_funds:\n%s", id, out)
	}
	// Shown once as news; afterwards among the recent outcomes, and never sent again.
	time.Sleep(time.Second)
	var q queueJSON
	lastJSON(t, u.must(0, "queue", "--json"), &q)
	if p, ok := outcomeOf(q.Recent, id); !ok || p.Status != "failed" || p.Reason != "insufficient_funds" || len(q.Pending) != 0 {
		t.Fatalf("queue after the refusal: %+v", q)
	}
	if n := len(executeLines(c, id)); n != 1 {
		t.Errorf("the refused payment reached the gateway %d times, want 1", n)
	}
	// Refused online: exit code 3 and the reason.
	out, _, code := u.run("pay", "--from", "bank1-1003", "--to", "bank2-2002", "--amount", "100.00")
	if code != exitPaymentFailed || !strings.Contains(out, "insufficient_funds") {
		t.Errorf("online refusal: exit %d, output %q", code, out)
	}
	after := checkSettled(t, c, before, 30*time.Second)
	if d := delta(before, after); len(d) != 0 {
		t.Errorf("balances moved by %v, want no change", d)
	}
}

func TestCLIRegisterLoginAndPay(t *testing.T) {
	t.Parallel()
	c := cluster.New(t, cluster.Options{})
	before := audit(t, c)
	// erin's bank issues her code, as its operator would, with `paygate bank enroll`.
	enrollCode, err := c.EnrollmentCode("bank1", "bank1-1004")
	if err != nil {
		t.Fatal(err)
	}
	// Her name without her code is refused, and no user is created; an account without a code
	// is a usage error.
	mallory := newCLIUser(t, c)
	_, errOut, code := mallory.run("register", "--account", "bank1-1004=AAAA-BBBB-CCCC-DDDD", "--password", "mallory-password", "erin")
	if code != exitFailure || !strings.Contains(errOut, "enrollment_refused") {
		t.Fatalf("register with a wrong code: exit %d, %s", code, errOut)
	}
	if _, _, code := mallory.run("login", "--password", "mallory-password", "erin"); code != exitFailure {
		t.Fatalf("login of a refused registration: exit %d, want 1", code)
	}
	if _, errOut, code := mallory.run("register", "--account", "bank1-1004", "--password", "mallory-password", "mallory"); code != exitUsage || !strings.Contains(errOut, "ACCOUNT=CODE") {
		t.Fatalf("register without a code: exit %d, %s; want a usage error", code, errOut)
	}
	erin := newCLIUser(t, c)
	out := erin.must(0, "register", "--account", "bank1-1004="+strings.ToLower(enrollCode), "--password", "erin-password-1", "erin")
	if !strings.Contains(out, "registered erin") {
		t.Fatalf("register: %s", out)
	}
	// The code is spent: another username cannot use it.
	if _, errOut, code := mallory.run("register", "--account", "bank1-1004="+enrollCode, "--password", "mallory-password", "mallory"); code != exitFailure || !strings.Contains(errOut, "enrollment_refused") {
		t.Fatalf("register with erin's spent code: exit %d, %s", code, errOut)
	}

	erin.must(0, "login", "--password", "erin-password-1", "erin")
	info, err := os.Stat(filepath.Join(erin.configDir, sessionFile))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("session file: %v, mode %v; want 0600", err, info.Mode().Perm())
	}
	out = erin.must(0, "pay", "--from", "bank1-1004", "--to", "bank2-2002", "--amount", "10.00", "--json")
	var r paymentJSON
	lastJSON(t, out, &r)
	if r.Status != "succeeded" || r.Amount != 1000 {
		t.Fatalf("erin's payment: %+v", r)
	}
	var bal struct {
		Accounts []struct {
			Account   string `json:"account_id"`
			Available int64  `json:"available"`
		} `json:"accounts"`
	}
	lastJSON(t, erin.must(0, "balance", "--json"), &bal)
	if len(bal.Accounts) != 1 || bal.Accounts[0].Account != "bank1-1004" || bal.Accounts[0].Available != 49000 {
		t.Fatalf("erin's balance: %+v", bal)
	}
	erin.must(0, "logout")
	if _, errOut, code := erin.run("balance"); code != exitFailure || !strings.Contains(errOut, "not logged in") {
		t.Fatalf("balance after logout: exit %d, %s", code, errOut)
	}
	after := checkSettled(t, c, before, 30*time.Second)
	want := map[string]int64{"bank1-1004": -1000, "bank2-2002": 1000}
	if d := delta(before, after); !mapsEqual(d, want) {
		t.Errorf("balances moved by %v, want %v", d, want)
	}
}

func TestCLIHistoryPaginatesAndShowsOnlyOwnPayments(t *testing.T) {
	t.Parallel()
	c := cluster.New(t, cluster.Options{})
	before := audit(t, c)
	carol, bob := newCLIUser(t, c), newCLIUser(t, c)
	carol.login("carol")
	bob.login("bob")
	var carolIDs, bobIDs []string
	for i := range 5 {
		out := carol.must(0, "pay", "--from", "bank3-3002", "--to", "bank1-1001", "--amount", fmt.Sprintf("%d.00", i+1), "--json")
		var r paymentJSON
		lastJSON(t, out, &r)
		carolIDs = append(carolIDs, r.PaymentID)
	}
	for range 2 {
		out := bob.must(0, "pay", "--from", "bank2-2002", "--to", "bank3-3002", "--amount", "2.50", "--json")
		var r paymentJSON
		lastJSON(t, out, &r)
		bobIDs = append(bobIDs, r.PaymentID)
	}
	type page struct {
		Payments      []paymentJSON `json:"payments"`
		NextPageToken string        `json:"next_page_token"`
	}
	var seen []string
	token, pages := "", 0
	for {
		args := []string{"history", "--page-size", "2", "--json"}
		if token != "" {
			args = append(args, "--page-token", token)
		}
		var p page
		lastJSON(t, carol.must(0, args...), &p)
		pages++
		if len(p.Payments) > 2 {
			t.Fatalf("page of %d payments, want at most 2", len(p.Payments))
		}
		for _, pay := range p.Payments {
			seen = append(seen, pay.PaymentID)
		}
		if token = p.NextPageToken; token == "" {
			break
		}
	}
	slices.Reverse(carolIDs) // newest first
	if pages != 3 || !slices.Equal(seen, carolIDs) {
		t.Fatalf("carol's history over %d pages: %v, want %v over 3 pages", pages, seen, carolIDs)
	}
	var p page
	lastJSON(t, bob.must(0, "history", "--all", "--json"), &p)
	var bobSeen []string
	for _, pay := range p.Payments {
		bobSeen = append(bobSeen, pay.PaymentID)
	}
	slices.Reverse(bobIDs)
	if !slices.Equal(bobSeen, bobIDs) {
		t.Fatalf("bob's history %v, want only his own %v", bobSeen, bobIDs)
	}
	text := carol.must(0, "history", "--page-size", "2")
	if !strings.Contains(text, "next page: paygate history --page-size 2 --page-token ") {
		t.Errorf("text history does not say how to get the next page:\n%s", text)
	}
	carol.must(exitUsage, "history", "--page-size", "0")
	checkSettled(t, c, before, 30*time.Second)
}

func TestCLIClientCommandsHaveHelpAndUsageErrors(t *testing.T) {
	t.Parallel()
	bin := cluster.Binary(t)
	for _, name := range []string{"register", "login", "logout", "pay", "balance", "history", "queue", "watch", "refund"} {
		cmd := exec.Command(bin, name, "--help")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "paygate "+name) || !strings.Contains(string(out), "-json") ||
			!strings.Contains(string(out), "for several gateway replicas a comma-separated list") {
			t.Errorf("paygate %s --help: %v\n%s", name, err, out)
		}
	}
	dir := t.TempDir()
	for _, args := range [][]string{
		{"pay", "--from", "bank1-1001", "--to", "bank2-2002"},
		{"pay", "--from", "bank1-1001", "--to", "bank2-2002", "--amount", "0.001"},
		{"login"},
		{"register", "someone"},
		{"queue", "--flush", "--no-send"},
		{"balance", "--gateway", "127.0.0.1:1,127.0.0.1:1"},
		{"balance", "--gateway", "127.0.0.1:1,http://127.0.0.1:2"},
		{"login", "--gateway", "127.0.0.1", "--password", "x", "alice"},
		{"refund"},
		{"refund", "0198c2d4-5a1e-7c3b-9f00-1b2c3d4e5f60", "extra"},
		{"refund", "0198c2d4-5a1e-7c3b-9f00-1b2c3d4e5f60", "--refund-id", "nope"},
	} {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "PAYGATE_CONFIG_DIR="+dir, "PAYGATE_STATE_DIR="+dir)
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != exitUsage {
			t.Errorf("paygate %v: %v, want exit %d", args, err, exitUsage)
		}
	}
}

func mapsEqual(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// The CLI given several gateway addresses, the first of which does not answer (a replica
// that is down: nothing listens there), in PAYGATE_GATEWAY or once to login (which keeps the
// list in the session): every command moves on to the gateway at the second address, and each
// payment is made once.
func TestCLIFailoverPastADeadGatewayAddress(t *testing.T) {
	t.Parallel()
	c := cluster.New(t, cluster.Options{})
	before := audit(t, c)
	list := cluster.FreePort(t) + "," + c.GatewayAddr
	alice := newCLIUser(t, c)
	alice.gateway = list
	out := alice.must(0, "login", "--password", passwords["alice"], "alice")
	if want := "logged in as alice at " + c.GatewayAddr + " "; !strings.HasPrefix(out, want) {
		t.Fatalf("login: %q, want it to start with %q", out, want)
	}
	bob := newCLIUser(t, c)
	bob.gateway = "-"
	bob.must(0, "login", "--gateway", list, "--password", passwords["bob"], "bob")
	data, err := os.ReadFile(filepath.Join(bob.configDir, sessionFile))
	if err != nil {
		t.Fatal(err)
	}
	var s session
	if err := json.Unmarshal(data, &s); err != nil || s.Gateway != list {
		t.Fatalf("bob's session: gateway %q (%v), want %q", s.Gateway, err, list)
	}

	var ids []string
	for _, u := range []struct {
		user     *cliUser
		from, to string
	}{{alice, "bank1-1001", "bank2-2002"}, {bob, "bank2-2002", "bank3-3002"}} {
		var r paymentJSON
		lastJSON(t, u.user.must(0, "pay", "--from", u.from, "--to", u.to, "--amount", "3.00", "--json"), &r)
		if r.Status != "succeeded" {
			t.Fatalf("pay from %s: %+v, want succeeded", u.from, r)
		}
		ids = append(ids, r.PaymentID)
		u.user.must(0, "balance")
		if out := u.user.must(0, "history", "--json"); !strings.Contains(out, r.PaymentID) {
			t.Fatalf("history after the payment does not show %s:\n%s", r.PaymentID, out)
		}
	}
	for _, id := range ids {
		if n := len(executeLines(c, id)); n != 1 {
			t.Errorf("%s: %d ExecutePayment calls at the gateway, want 1", id, n)
		}
	}
	after := checkSettled(t, c, before, 30*time.Second)
	// bank2-2002 received 3.00 from alice and paid 3.00 to bob's payee.
	want := map[string]int64{"bank1-1001": -300, "bank3-3002": 300}
	if d := delta(before, after); !mapsEqual(d, want) {
		t.Errorf("balances moved by %v, want %v", d, want)
	}
}
