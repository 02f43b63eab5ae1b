package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
	"github.com/paygate/paygate/internal/cluster"
	"github.com/paygate/paygate/internal/pki"
	"github.com/paygate/paygate/internal/rpcerr"
	"github.com/paygate/paygate/internal/rpcserver"
)

// TestLogsHoldNoSecrets runs a whole session against real processes logging JSON at debug level,
// then checks that no password and no token, nor a recognisable piece of one, reached any log,
// and that every call left one line with the fields an operator needs.
func TestLogsHoldNoSecrets(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster of processes; skipped with -short")
	}
	t.Parallel()
	c := cluster.New(t, cluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The demo users, from the fixtures file itself.
	data, err := os.ReadFile(filepath.Join(c.Root, "fixtures", "user_details.json"))
	if err != nil {
		t.Fatal(err)
	}
	var fixtureUsers map[string]struct {
		Password string   `json:"password"`
		Accounts []string `json:"accounts"`
	}
	if err := json.Unmarshal(data, &fixtureUsers); err != nil {
		t.Fatal(err)
	}
	var secrets []string // passwords and tokens
	for _, u := range fixtureUsers {
		secrets = append(secrets, u.Password)
	}
	const wrongPassword = "wrong-password-Zq8x"
	const erinPassword = "erin-secret-pass-9931"
	const forgedToken = "pgt_Tm90QVJlYWxUb2tlbkJ1dEl0TXVzdE5vdEJlTG9nZ2VkMDA"
	secrets = append(secrets, wrongPassword, erinPassword, forgedToken)

	type call struct {
		name   string
		fields map[string]any // what the call's log line must hold
	}
	var calls []call
	expect := func(name string, fields map[string]any) { calls = append(calls, call{name, fields}) }
	const (
		login    = "/paygate.gateway.v1.AuthService/Login"
		logout   = "/paygate.gateway.v1.AuthService/Logout"
		register = "/paygate.gateway.v1.AuthService/Register"
		balance  = "/paygate.gateway.v1.BalanceService/FetchBalance"
		execute  = "/paygate.gateway.v1.PaymentService/ExecutePayment"
		prepare  = "/paygate.bank.v1.BankService/PrepareTransaction"
		redeem   = "/paygate.bank.v1.BankService/RedeemEnrollmentCode"
	)

	// Every demo user logs in and fetches balances.
	users := map[string]*cluster.User{}
	for name, u := range fixtureUsers {
		lu, err := c.Login(name, u.Password)
		if err != nil {
			t.Fatalf("login %s: %v", name, err)
		}
		users[name] = lu
		secrets = append(secrets, lu.Token)
		expect("login "+name, map[string]any{"procedure": login, "user": name, "code": "ok"})
		if _, err := lu.Balance.FetchBalance(ctx, connect.NewRequest(&gatewayv1.FetchBalanceRequest{})); err != nil {
			t.Fatalf("balance %s: %v", name, err)
		}
		expect("balance "+name, map[string]any{"procedure": balance, "user": name, "code": "ok"})
	}
	// Wrong passwords: a made-up one, and another user's real one.
	for _, try := range []struct{ user, password string }{{"alice", wrongPassword}, {"bob", fixtureUsers["carol"].Password}} {
		_, err := c.Login(try.user, try.password)
		if connect.CodeOf(err) != connect.CodeUnauthenticated || rpcerr.Reason(err) != "invalid_credentials" {
			t.Fatalf("login %s with a wrong password: %v, want unauthenticated invalid_credentials", try.user, err)
		}
		expect("failed login "+try.user, map[string]any{"procedure": login, "user": try.user, "code": "unauthenticated"})
	}

	// Payments: one that succeeds, its replay, a reuse with other parameters, and one that fails
	// for insufficient funds.
	alice, dave := users["alice"], users["dave"]
	okID, poorID := logTestUUID(), logTestUUID()
	okReq := &gatewayv1.ExecutePaymentRequest{PaymentId: okID, FromAccount: "bank1-1001", ToAccount: "bank2-2002", Amount: 1500, Currency: "USD"}
	resp, err := alice.Payments.ExecutePayment(ctx, connect.NewRequest(okReq))
	if err != nil || resp.Msg.GetPayment().GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
		t.Fatalf("payment: %v %v", resp, err)
	}
	expect("payment", map[string]any{"procedure": execute, "user": "alice", "payment_id": okID, "amount": 1500.0, "currency": "USD", "code": "ok", "status": "PAYMENT_STATUS_SUCCEEDED"})
	expect("prepare at bank1", map[string]any{"procedure": prepare, "transaction_id": okID, "amount": 1500.0, "identity": "spiffe://paygate/gateway", "code": "ok"})
	resp, err = alice.Payments.ExecutePayment(ctx, connect.NewRequest(okReq))
	if err != nil || !resp.Msg.GetReplayed() {
		t.Fatalf("replay: %v %v", resp, err)
	}
	expect("replay", map[string]any{"procedure": execute, "user": "alice", "payment_id": okID, "code": "ok", "replayed": true})
	reused := &gatewayv1.ExecutePaymentRequest{PaymentId: okID, FromAccount: "bank1-1001", ToAccount: "bank2-2002", Amount: 1501, Currency: "USD"}
	if _, err := alice.Payments.ExecutePayment(ctx, connect.NewRequest(reused)); connect.CodeOf(err) != connect.CodeAlreadyExists {
		t.Fatalf("reused payment_id: %v, want already_exists", err)
	}
	expect("reuse", map[string]any{"procedure": execute, "user": "alice", "payment_id": okID, "amount": 1501.0, "code": "already_exists"})
	poor := &gatewayv1.ExecutePaymentRequest{PaymentId: poorID, FromAccount: "bank1-1003", ToAccount: "bank3-3002", Amount: 99_999_999, Currency: "USD"}
	resp, err = dave.Payments.ExecutePayment(ctx, connect.NewRequest(poor))
	if err != nil || resp.Msg.GetPayment().GetFailureReason() != gatewayv1.FailureReason_FAILURE_REASON_INSUFFICIENT_FUNDS {
		t.Fatalf("payment beyond the balance: %v %v, want FAILED for insufficient funds", resp, err)
	}
	expect("insufficient funds", map[string]any{"procedure": execute, "user": "dave", "payment_id": poorID, "amount": 99_999_999.0, "code": "ok", "status": "PAYMENT_STATUS_FAILED"})

	// Registration of erin, who holds bank1-1004, with the enrollment code her bank issued (a
	// secret too), and her first login.
	erinCode, err := c.EnrollmentCode("bank1", "bank1-1004")
	if err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, erinCode, strings.ReplaceAll(erinCode, "-", ""))
	anon := c.Clients()
	if _, err := anon.Auth.Register(ctx, connect.NewRequest(&gatewayv1.RegisterRequest{Username: "erin", Password: erinPassword,
		Accounts: []*gatewayv1.AccountEnrollment{{AccountId: "bank1-1004", EnrollmentCode: erinCode}}})); err != nil {
		t.Fatalf("register erin: %v", err)
	}
	expect("register", map[string]any{"procedure": register, "user": "erin", "code": "ok"})
	expect("redeem at bank1", map[string]any{"procedure": redeem, "user": "erin", "identity": "spiffe://paygate/gateway", "code": "ok"})
	erin, err := c.Login("erin", erinPassword)
	if err != nil {
		t.Fatalf("login erin: %v", err)
	}
	secrets = append(secrets, erin.Token)
	expect("login erin", map[string]any{"procedure": login, "user": "erin", "code": "ok"})

	// Logout, then the revoked token, then a forged one.
	if _, err := alice.Auth.Logout(ctx, connect.NewRequest(&gatewayv1.LogoutRequest{})); err != nil {
		t.Fatalf("logout: %v", err)
	}
	expect("logout", map[string]any{"procedure": logout, "user": "alice", "code": "ok"})
	_, err = alice.Balance.FetchBalance(ctx, connect.NewRequest(&gatewayv1.FetchBalanceRequest{}))
	if connect.CodeOf(err) != connect.CodeUnauthenticated || rpcerr.Reason(err) != "token_revoked" {
		t.Fatalf("balance with a revoked token: %v, want unauthenticated token_revoked", err)
	}
	expect("revoked token", map[string]any{"procedure": balance, "code": "unauthenticated", "error": "token was revoked by logout: log in again"})
	cliTLS, err := pki.ClientTLS(c.CertPath("ca.pem"), c.CertPath("client-cli.pem"), c.CertPath("client-cli-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	forged := gatewayv1connect.NewBalanceServiceClient(rpcserver.NewHTTPClient(cliTLS), "https://"+c.GatewayAddr,
		connect.WithGRPC(), connect.WithInterceptors(cluster.Bearer(forgedToken)))
	if _, err := forged.FetchBalance(ctx, connect.NewRequest(&gatewayv1.FetchBalanceRequest{})); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("balance with a forged token: %v, want unauthenticated", err)
	}

	logs := c.Logs()
	if logs == "" {
		t.Fatal("the processes logged nothing")
	}

	// No secret, nor a 12-character piece of a token, anywhere.
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("a secret is in the logs: %q", s)
		}
		if body, ok := strings.CutPrefix(s, "pgt_"); ok {
			for i := 0; i+12 <= len(body); i++ {
				if piece := body[i : i+12]; strings.Contains(logs, piece) {
					t.Errorf("a piece of token %s... is in the logs: %q", s[:8], piece)
					break
				}
			}
		}
	}
	for _, s := range []string{"Bearer pgt_", "pgt_"} {
		if i := strings.Index(logs, s); i >= 0 {
			t.Errorf("the logs contain %q: ...%s...", s, logs[max(0, i-100):min(len(logs), i+100)])
		}
	}

	// Every line is JSON, and each call has its line.
	var lines []map[string]any
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Errorf("a log line is not JSON (%v): %s", err, sc.Text())
			continue
		}
		if m["msg"] == "rpc" {
			lines = append(lines, m)
		}
	}
	for _, want := range calls {
		if !hasLogLine(lines, want.fields) {
			t.Errorf("no log line for the %s call with %v", want.name, want.fields)
		}
	}
	for _, l := range lines {
		for _, f := range []string{"time", "level", "procedure", "peer", "code", "duration"} {
			if _, ok := l[f]; !ok {
				t.Errorf("an rpc log line lacks %q: %v", f, l)
			}
		}
		if d, ok := l["duration"].(float64); !ok || d < 0 {
			t.Errorf("an rpc log line's duration is not a number of nanoseconds: %v", l)
		}
	}
	if t.Failed() {
		t.Logf("rpc lines:\n%s", formatLogLines(lines))
	}
}

// hasLogLine reports whether one of lines has every field of want.
func hasLogLine(lines []map[string]any, want map[string]any) bool {
	for _, l := range lines {
		ok := true
		for k, v := range want {
			if l[k] != v {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func formatLogLines(lines []map[string]any) string {
	var b strings.Builder
	for _, l := range lines {
		out, _ := json.Marshal(l)
		b.Write(out)
		b.WriteByte('\n')
	}
	return b.String()
}

// logTestUUID returns a random (version 4) UUID.
func logTestUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
