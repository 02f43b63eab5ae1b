package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	"github.com/paygate/paygate/gen/paygate/bank/v1/bankv1connect"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
	"github.com/paygate/paygate/internal/cluster"
	"github.com/paygate/paygate/internal/pki"
	"github.com/paygate/paygate/internal/rpcserver"
)

// devProcess is a `paygate dev` running as a child process of a test.
type devProcess struct {
	t    testing.TB
	cmd  *exec.Cmd
	dir  string // --dir
	out  *lockedBuffer
	done chan struct{}
	err  error // cmd.Wait's result, once done is closed
	info devInfo
}

// lockedBuffer collects a process's output; the test reads it while the process writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startDevProcess runs `paygate <args>` in workdir with extra environment, waits until dir/dev.json
// is written and the API accepts connections, and reads dev.json. dir is the --dir the command
// uses, as seen from the test. The process is killed when the test ends if it is still running.
func startDevProcess(t testing.TB, bin, workdir, dir string, env []string, args ...string) *devProcess {
	t.Helper()
	d := &devProcess{t: t, dir: dir, out: &lockedBuffer{}, done: make(chan struct{})}
	// A dev.json left by an earlier run must not be mistaken for this run's.
	if err := os.Remove(filepath.Join(dir, "dev.json")); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	d.cmd = exec.Command(bin, args...)
	d.cmd.Dir = workdir
	d.cmd.Stdout = d.out
	d.cmd.Stderr = d.out
	d.cmd.Env = append(os.Environ(), env...)
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		d.err = d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		if !d.exited() {
			d.cmd.Process.Kill()
			<-d.done
		}
	})

	deadline := time.Now().Add(60 * time.Second)
	for {
		if d.exited() {
			t.Fatalf("paygate %s exited while starting (%v):\n%s", strings.Join(args, " "), d.err, d.out)
		}
		if time.Now().After(deadline) {
			t.Fatalf("paygate %s: no dev.json and API after 60s:\n%s", strings.Join(args, " "), d.out)
		}
		if data, err := os.ReadFile(filepath.Join(dir, "dev.json")); err == nil {
			var info devInfo
			if err := json.Unmarshal(data, &info); err == nil && info.API != "" {
				if conn, err := net.DialTimeout("tcp", info.API, time.Second); err == nil {
					conn.Close()
					d.info = info
					return d
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (d *devProcess) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// interrupt sends SIGINT, as Ctrl-C does, and checks that the process exits with status 0 within
// 15 seconds.
func (d *devProcess) interrupt() {
	d.t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGINT); err != nil {
		d.t.Fatalf("SIGINT: %v", err)
	}
	select {
	case <-d.done:
	case <-time.After(15 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
		d.t.Fatalf("paygate dev did not exit within 15s of SIGINT:\n%s", d.out)
	}
	if d.err != nil {
		d.t.Fatalf("paygate dev after SIGINT: %v (want exit status 0):\n%s", d.err, d.out)
	}
}

// devClients are a user's gateway clients over the API listener, with dev.json's client
// certificate.
type devClients struct {
	auth     gatewayv1connect.AuthServiceClient
	payments gatewayv1connect.PaymentServiceClient
	balance  gatewayv1connect.BalanceServiceClient
	health   *grpchealth.Client
}

func newDevClients(t testing.TB, info devInfo, token string) devClients {
	t.Helper()
	tlsCfg, err := pki.ClientTLS(info.Certs.CA, info.Certs.Cert, info.Certs.Key)
	if err != nil {
		t.Fatalf("dev.json certificates: %v", err)
	}
	hc := rpcserver.NewHTTPClient(tlsCfg)
	url := "https://" + info.API
	opts := []connect.ClientOption{connect.WithGRPC()}
	if token != "" {
		opts = append(opts, connect.WithInterceptors(cluster.Bearer(token)))
	}
	return devClients{
		auth:     gatewayv1connect.NewAuthServiceClient(hc, url, opts...),
		payments: gatewayv1connect.NewPaymentServiceClient(hc, url, opts...),
		balance:  gatewayv1connect.NewBalanceServiceClient(hc, url, opts...),
		health:   grpchealth.NewClient(hc, url, connect.WithGRPC()),
	}
}

// devLogin logs username in with the password dev.json lists and returns clients sending the
// token.
func devLogin(ctx context.Context, t testing.TB, info devInfo, username string) devClients {
	t.Helper()
	password := ""
	for _, u := range info.Users {
		if u.Username == username {
			password = u.Password
		}
	}
	if password == "" {
		t.Fatalf("dev.json lists no user %s", username)
	}
	resp, err := newDevClients(t, info, "").auth.Login(ctx, connect.NewRequest(&gatewayv1.LoginRequest{Username: username, Password: password}))
	if err != nil {
		t.Fatalf("login %s: %v", username, err)
	}
	return newDevClients(t, info, resp.Msg.GetToken())
}

// devBalances returns the balance of every account of the user.
func devBalances(ctx context.Context, t testing.TB, c devClients) map[string]int64 {
	t.Helper()
	resp, err := c.balance.FetchBalance(ctx, connect.NewRequest(&gatewayv1.FetchBalanceRequest{}))
	if err != nil {
		t.Fatalf("FetchBalance: %v", err)
	}
	out := map[string]int64{}
	for _, b := range resp.Msg.GetBanks() {
		if b.GetStatus() != gatewayv1.BankStatus_BANK_STATUS_AVAILABLE {
			t.Fatalf("bank %s: %s %s", b.GetBank(), b.GetStatus(), b.GetError())
		}
		for _, a := range b.GetAccounts() {
			out[a.GetAccountId()] = a.GetBalance()
		}
	}
	return out
}

func TestDevWritesDevJSONAndKeepsDataAcrossRestarts(t *testing.T) {
	t.Parallel()
	bin := cluster.Binary(t)
	work := t.TempDir()
	dir := filepath.Join(work, "state")
	api, web := cluster.FreePort(t), cluster.FreePort(t)

	d := startDevProcess(t, bin, work, dir, nil, "dev", "--dir", dir, "--listen", api, "--web", web)
	info := d.info

	// dev.json: endpoints, certificates and the demo users.
	if info.API != api || info.Web != web {
		t.Errorf("dev.json api %q web %q, want %q and %q", info.API, info.Web, api, web)
	}
	if len(info.Banks) != 3 {
		t.Errorf("dev.json banks = %v, want bank1, bank2 and bank3", info.Banks)
	}
	for _, name := range []string{"bank1", "bank2", "bank3"} {
		if u := info.Banks[name]; !strings.HasPrefix(u, "https://127.0.0.1:") {
			t.Errorf("dev.json banks[%s] = %q, want https://127.0.0.1:PORT", name, u)
		}
	}
	wantCerts := devCerts{
		CA:   filepath.Join(dir, "certs", "ca.pem"),
		Cert: filepath.Join(dir, "certs", "client-cli.pem"),
		Key:  filepath.Join(dir, "certs", "client-cli-key.pem"),
	}
	if info.Certs != wantCerts {
		t.Errorf("dev.json certs = %+v, want %+v", info.Certs, wantCerts)
	}
	wantUsers := map[string]string{"alice": "alice-pass-123", "bob": "bob-pass-456", "carol": "carol-pass-789", "dave": "dave-pass-000"}
	if len(info.Users) != len(wantUsers) {
		t.Errorf("dev.json users = %+v, want %d users", info.Users, len(wantUsers))
	}
	for _, u := range info.Users {
		if wantUsers[u.Username] != u.Password || len(u.Accounts) == 0 {
			t.Errorf("dev.json user %+v: want password %q and accounts", u, wantUsers[u.Username])
		}
	}
	if st, err := os.Stat(filepath.Join(dir, "dev.json")); err != nil || st.Mode().Perm()&0o077 != 0 {
		t.Errorf("dev.json holds passwords and must be private to its owner: %v %v", st.Mode(), err)
	}
	for _, want := range []string{"paygate dev is running", "API (mTLS)  " + api, "web (TLS)   https://" + web, filepath.Join(dir, "dev.json"), "grpcurl -cacert "} {
		if !strings.Contains(d.out.String(), want) {
			t.Errorf("the start banner lacks %q:\n%s", want, d.out)
		}
	}
	caBefore, err := os.ReadFile(info.Certs.CA)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// The certificates work: the client certificate for the gateway, the gateway's for a bank.
	hresp, err := newDevClients(t, info, "").health.Check(ctx, &grpchealth.CheckRequest{Service: "bank/bank2"})
	if err != nil || hresp.Status != grpchealth.StatusServing {
		t.Fatalf("gateway health of bank/bank2: %v %v", hresp, err)
	}
	gwTLS, err := pki.ClientTLS(info.Certs.CA, filepath.Join(dir, "certs", "gateway.pem"), filepath.Join(dir, "certs", "gateway-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	bank1 := bankv1connect.NewBankServiceClient(rpcserver.NewHTTPClient(gwTLS), info.Banks["bank1"], connect.WithGRPC())
	if _, err := bank1.GetAccount(ctx, connect.NewRequest(&bankv1.GetAccountRequest{AccountId: "bank1-1001"})); err != nil {
		t.Fatalf("bank1 GetAccount with the gateway certificate: %v", err)
	}

	// A payment in the first run.
	alice := devLogin(ctx, t, info, "alice")
	before := devBalances(ctx, t, alice)
	const paymentID = "5b7d0c1e-3f2a-4b8c-9d6e-7a1f0e2d3c4b"
	payReq := &gatewayv1.ExecutePaymentRequest{PaymentId: paymentID, FromAccount: "bank1-1001", ToAccount: "bank3-3002", Amount: 1234, Currency: "USD"}
	presp, err := alice.payments.ExecutePayment(ctx, connect.NewRequest(payReq))
	if err != nil {
		t.Fatalf("ExecutePayment: %v", err)
	}
	if st := presp.Msg.GetPayment().GetStatus(); st != gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
		t.Fatalf("payment status %s, want SUCCEEDED: %v", st, presp.Msg)
	}
	after := devBalances(ctx, t, alice)
	if after["bank1-1001"] != before["bank1-1001"]-1234 {
		t.Fatalf("bank1-1001: %d before, %d after paying 1234", before["bank1-1001"], after["bank1-1001"])
	}

	// Enrollment codes for the demo holders without a login, in dev.json and the banner; erin
	// registers with hers.
	codes := devEnrollmentCodes(t, info, d.out.String(), "erin bank1-1004", "frank bank2-2003", "grace bank3-3003")
	if _, err := newDevClients(t, info, "").auth.Register(ctx, connect.NewRequest(&gatewayv1.RegisterRequest{Username: "erin", Password: "erin-password-1",
		Accounts: []*gatewayv1.AccountEnrollment{{AccountId: "bank1-1004", EnrollmentCode: codes["bank1-1004"]}}})); err != nil {
		t.Fatalf("register erin with the code of dev.json: %v", err)
	}
	d.interrupt()

	// The second run on the same directory, configured from the environment this time, keeps
	// the CA, the users and the ledgers.
	api2, web2 := cluster.FreePort(t), cluster.FreePort(t)
	d2 := startDevProcess(t, bin, work, dir, []string{"PAYGATE_DIR=" + dir, "PAYGATE_LISTEN=" + api2, "PAYGATE_WEB=" + web2}, "dev")
	if d2.info.API != api2 || d2.info.Web != web2 {
		t.Errorf("second run: dev.json api %q web %q, want %q and %q from PAYGATE_LISTEN and PAYGATE_WEB", d2.info.API, d2.info.Web, api2, web2)
	}
	caAfter, err := os.ReadFile(d2.info.Certs.CA)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(caBefore, caAfter) {
		t.Errorf("the second run replaced the CA; it must keep it")
	}
	alice = devLogin(ctx, t, d2.info, "alice")
	if got := devBalances(ctx, t, alice); got["bank1-1001"] != after["bank1-1001"] || got["bank2-2001"] != after["bank2-2001"] {
		t.Errorf("after restart alice has %v, want %v as at the end of the first run", got, after)
	}
	gresp, err := alice.payments.GetPayment(ctx, connect.NewRequest(&gatewayv1.GetPaymentRequest{PaymentId: paymentID}))
	if err != nil || gresp.Msg.GetPayment().GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
		t.Fatalf("GetPayment after restart: %v %v", gresp, err)
	}
	// Exactly once across restarts: the same payment again is a replay and moves nothing.
	presp, err = alice.payments.ExecutePayment(ctx, connect.NewRequest(payReq))
	if err != nil || !presp.Msg.GetReplayed() {
		t.Fatalf("ExecutePayment again after restart: %v %v, want replayed", presp, err)
	}
	if got := devBalances(ctx, t, alice); got["bank1-1001"] != after["bank1-1001"] {
		t.Errorf("the replay moved money: bank1-1001 = %d, want %d", got["bank1-1001"], after["bank1-1001"])
	}
	// New codes at each start, none for erin now that she has a login; the old codes are gone.
	codes2 := devEnrollmentCodes(t, d2.info, d2.out.String(), "frank bank2-2003", "grace bank3-3003")
	if codes2["bank2-2003"] == codes["bank2-2003"] {
		t.Errorf("the second start kept frank's code; want a fresh one")
	}
	if _, err := newDevClients(t, d2.info, "").auth.Login(ctx, connect.NewRequest(&gatewayv1.LoginRequest{Username: "erin", Password: "erin-password-1"})); err != nil {
		t.Errorf("erin, registered in the first run, logs in after the restart: %v", err)
	}
	d2.interrupt()
}

// devEnrollmentCodes checks that dev.json and the start banner list enrollment codes for exactly
// the holders and accounts of want ("erin bank1-1004"), and returns the codes by account.
func devEnrollmentCodes(t *testing.T, info devInfo, banner string, want ...string) map[string]string {
	t.Helper()
	codes := map[string]string{}
	var got []string
	for _, e := range info.Enrollments {
		got = append(got, e.Holder+" "+e.AccountID)
		codes[e.AccountID] = e.Code
		if len(e.Code) != 19 || strings.Count(e.Code, "-") != 3 || time.Until(e.ExpireTime) < time.Hour {
			t.Errorf("dev.json enrollment %+v: want a code like K7QX-3MZD-9TRA-WP4C, valid for days", e)
		}
		if line := fmt.Sprintf("%-6s %-11s %s", e.Holder, e.AccountID, e.Code); !strings.Contains(banner, "enroll      "+line) {
			t.Errorf("the start banner lacks the line %q:\n%s", "enroll      "+line, banner)
		}
	}
	if strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Errorf("dev.json enrollments for %v; want %v", got, want)
	}
	return codes
}

func TestDevRefusesBadArguments(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"dev", "--banks", "0"},
		{"dev", "--banks", "27"},
		{"dev", "extra"},
		{"dev", "--log-level", "loud"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, &stdout, &stderr); code != exitUsage {
			t.Errorf("paygate %s: exit %d, want %d:\n%s", strings.Join(args, " "), code, exitUsage, stderr.String())
		}
	}
	var stderr bytes.Buffer
	if code := run(context.Background(), []string{"dev", "--help"}, io.Discard, &stderr); code != exitOK {
		t.Errorf("paygate dev --help: exit %d, want 0", code)
	}
	for _, flag := range []string{"-dir", "-listen", "-web", "-banks", "-fixtures", "-txn-timeout", "-log-format", "-log-level"} {
		if !strings.Contains(stderr.String(), flag) {
			t.Errorf("paygate dev --help does not mention %s:\n%s", flag, stderr.String())
		}
	}
}
