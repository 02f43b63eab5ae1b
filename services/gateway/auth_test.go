package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/internal/account"
	"github.com/paygate/paygate/internal/identity"
	"github.com/paygate/paygate/internal/pki"
	"github.com/paygate/paygate/internal/rpcerr"
	"github.com/paygate/paygate/services/bank"
)

func loginReq(username, password string) *connect.Request[gatewayv1.LoginRequest] {
	return connect.NewRequest(&gatewayv1.LoginRequest{Username: username, Password: password})
}

func TestLogin(t *testing.T) {
	t.Parallel()
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			clk := newFakeClock()
			e := newEnv(t, envOptions{
				config:      func(c *Config) { c.TokenTTL = time.Hour },
				beforeStart: func(g *Gateway) { g.now = clk.Now },
			})
			ctx := context.Background()
			anon := e.anon(p)

			resp, err := anon.auth.Login(ctx, loginReq("alice", "alice-pass-123"))
			if err != nil {
				t.Fatalf("login: %v", err)
			}
			tok := resp.Msg.GetToken()
			if !strings.HasPrefix(tok, "pgt_") || len(tok) < len("pgt_")+43 {
				t.Errorf("token %q: want pgt_ and 256 random bits", tok)
			}
			if got, want := resp.Msg.GetExpireTime().AsTime(), clk.Now().Add(time.Hour); !got.Equal(want) {
				t.Errorf("expire_time = %v, want %v", got, want)
			}
			if resp.Msg.GetUsername() != "alice" {
				t.Errorf("username = %q", resp.Msg.GetUsername())
			}
			// The token works.
			user := e.clientsWith(e.cliHTTP, p, "Bearer "+tok)
			if _, err := user.balance.FetchBalance(ctx, connect.NewRequest(&gatewayv1.FetchBalanceRequest{})); err != nil {
				t.Fatalf("FetchBalance with a fresh token: %v", err)
			}
			// Two logins give two different tokens.
			resp2, err := anon.auth.Login(ctx, loginReq("alice", "alice-pass-123"))
			if err != nil || resp2.Msg.GetToken() == tok {
				t.Fatalf("second login = %v, %v; want a new token", resp2, err)
			}

			// A wrong password and an unknown user are indistinguishable.
			_, errWrong := anon.auth.Login(ctx, loginReq("alice", "not-her-password"))
			_, errUnknown := anon.auth.Login(ctx, loginReq("nobody", "whatever-password"))
			for _, err := range []error{errWrong, errUnknown} {
				wantErr(t, err, connect.CodeUnauthenticated, "invalid_credentials")
				var ce *connect.Error
				if !errors.As(err, &ce) || ce.Message() != "invalid username or password" {
					t.Errorf("message of %v: want %q", err, "invalid username or password")
				}
			}

			// Expiry follows the gateway's clock: valid until TokenTTL has passed.
			clk.Advance(time.Hour - time.Second)
			if _, err := user.balance.FetchBalance(ctx, connect.NewRequest(&gatewayv1.FetchBalanceRequest{})); err != nil {
				t.Fatalf("FetchBalance a second before expiry: %v", err)
			}
			clk.Advance(time.Second)
			_, err = user.balance.FetchBalance(ctx, connect.NewRequest(&gatewayv1.FetchBalanceRequest{}))
			wantErr(t, err, connect.CodeUnauthenticated, "token_expired")
		})
	}
}

func TestLoginThrottled(t *testing.T) {
	t.Parallel()
	clk := newFakeClock()
	const every = time.Minute
	e := newEnv(t, envOptions{
		config: func(c *Config) {
			c.LoginFailuresBurst = 3
			c.LoginFailureEvery = every
		},
		beforeStart: func(g *Gateway) { g.now = clk.Now },
	})
	ctx := context.Background()
	anon := e.anon(protocols[0])
	for i := range 3 {
		_, err := anon.auth.Login(ctx, loginReq("alice", "guess-"+string(rune('a'+i))))
		wantErr(t, err, connect.CodeUnauthenticated, "invalid_credentials")
	}
	// The budget is spent: wrong and right passwords alike are refused, with a hint of when to
	// come back.
	for _, pw := range []string{"guess-d", "alice-pass-123"} {
		_, err := anon.auth.Login(ctx, loginReq("alice", pw))
		wantErr(t, err, connect.CodeResourceExhausted, "login_throttled")
		if !strings.Contains(err.Error(), "try again in") {
			t.Errorf("throttled message %q does not say when to retry", err)
		}
	}
	// The per-address budget is spent too: another user from the same address waits as well.
	_, err := anon.auth.Login(ctx, loginReq("bob", "bob-pass-456"))
	wantErr(t, err, connect.CodeResourceExhausted, "login_throttled")

	clk.Advance(every / 2)
	_, err = anon.auth.Login(ctx, loginReq("alice", "alice-pass-123"))
	wantErr(t, err, connect.CodeResourceExhausted, "login_throttled")

	// Once the window has passed, the right password works again.
	clk.Advance(every / 2)
	if _, err := anon.auth.Login(ctx, loginReq("alice", "alice-pass-123")); err != nil {
		t.Fatalf("login after the window: %v", err)
	}
}

func TestLogout(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			alice := e.login(t, p, "alice", "alice-pass-123")
			other := e.login(t, p, "alice", "alice-pass-123")
			if _, err := alice.auth.Logout(ctx, connect.NewRequest(&gatewayv1.LogoutRequest{})); err != nil {
				t.Fatalf("logout: %v", err)
			}
			_, err := alice.balance.FetchBalance(ctx, connect.NewRequest(&gatewayv1.FetchBalanceRequest{}))
			wantErr(t, err, connect.CodeUnauthenticated, "token_revoked")
			_, err = alice.auth.Logout(ctx, connect.NewRequest(&gatewayv1.LogoutRequest{}))
			wantErr(t, err, connect.CodeUnauthenticated, "token_revoked")
			// Logout revokes that token only.
			if _, err := other.balance.FetchBalance(ctx, connect.NewRequest(&gatewayv1.FetchBalanceRequest{})); err != nil {
				t.Fatalf("the user's other session: %v", err)
			}
		})
	}
}

func TestTokenBoundToCertificate(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	otherHTTP := newHTTPClient(t, clientIdentity("other"))
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			alice := e.login(t, p, "alice", "alice-pass-123")
			stolen := e.clientsWith(otherHTTP, p, "Bearer "+alice.token)
			_, err := stolen.balance.FetchBalance(ctx, connect.NewRequest(&gatewayv1.FetchBalanceRequest{}))
			wantErr(t, err, connect.CodeUnauthenticated, "token_certificate_mismatch")
			_, err = stolen.payments.ListPayments(ctx, connect.NewRequest(&gatewayv1.ListPaymentsRequest{}))
			wantErr(t, err, connect.CodeUnauthenticated, "token_certificate_mismatch")
			// The owner of the certificate still uses it.
			if _, err := alice.balance.FetchBalance(ctx, connect.NewRequest(&gatewayv1.FetchBalanceRequest{})); err != nil {
				t.Fatalf("FetchBalance with the certificate that logged in: %v", err)
			}
		})
	}
}

func TestAuthorizationHeader(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	alice := e.login(t, protocols[0], "alice", "alice-pass-123")
	tests := []struct {
		name   string
		header string
		reason string // "" means accepted
	}{
		{"missing", "", "missing_token"},
		{"scheme only", "Bearer", "missing_token"},
		{"empty token", "Bearer   ", "missing_token"},
		{"basic scheme", "Basic YWxpY2U6YWxpY2UtcGFzcy0xMjM=", "missing_token"},
		{"token without scheme", alice.token, "missing_token"},
		{"garbled token", "Bearer pgt_not-a-real-token", "invalid_token"},
		{"truncated token", "Bearer " + alice.token[:len(alice.token)-1], "invalid_token"},
		{"lower-case scheme", "bearer " + alice.token, ""},
		{"extra spaces", "Bearer   " + alice.token + "  ", ""},
	}
	for _, p := range protocols {
		for _, tt := range tests {
			t.Run(p.name+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				c := e.clientsWith(e.cliHTTP, p, tt.header)
				_, err := c.balance.FetchBalance(context.Background(), connect.NewRequest(&gatewayv1.FetchBalanceRequest{}))
				if tt.reason == "" {
					if err != nil {
						t.Fatalf("FetchBalance: %v", err)
					}
					return
				}
				wantErr(t, err, connect.CodeUnauthenticated, tt.reason)
			})
		}
	}
}

// registerReq is a registration of username with accountsAndCodes: account, code, account,
// code...
func registerReq(username, password string, accountsAndCodes ...string) *connect.Request[gatewayv1.RegisterRequest] {
	m := &gatewayv1.RegisterRequest{Username: username, Password: password}
	for i := 0; i+1 < len(accountsAndCodes); i += 2 {
		m.Accounts = append(m.Accounts, &gatewayv1.AccountEnrollment{AccountId: accountsAndCodes[i], EnrollmentCode: accountsAndCodes[i+1]})
	}
	return connect.NewRequest(m)
}

func TestRegister(t *testing.T) {
	t.Parallel()
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{})
			ctx := context.Background()
			anon := e.anon(p)

			// Erin holds bank1-1004 and frank bank2-2003; their banks sent them codes. Alice's
			// bank1-1001 is linked already, yet its bank issues a code for it too.
			const wrong = "AAAA-BBBB-CCCC-DDDD"
			erinCode := e.enrollmentCode(t, "bank1-1004")
			frankCode := e.enrollmentCode(t, "bank2-2003")
			aliceCode := e.enrollmentCode(t, "bank1-1001")

			refusals := []struct {
				name     string
				req      *connect.Request[gatewayv1.RegisterRequest]
				code     connect.Code
				reason   string
				mentions string
			}{
				// One refusal, whatever the cause, naming the account's place in the request.
				{"the holder's name without a code", registerReq("erin", "erin-password-1", "bank1-1004", wrong),
					connect.CodePermissionDenied, reasonEnrollmentRefused, "accounts[0]"},
				{"another holder's code", registerReq("erin", "erin-password-1", "bank1-1004", frankCode),
					connect.CodePermissionDenied, reasonEnrollmentRefused, "accounts[0]"},
				{"another holder's account with one's own code", registerReq("mallory", "mallory-password", "bank2-2003", erinCode),
					connect.CodePermissionDenied, reasonEnrollmentRefused, "accounts[0]"},
				{"unknown account", registerReq("erin", "erin-password-1", "bank1-9999", erinCode),
					connect.CodePermissionDenied, reasonEnrollmentRefused, "accounts[0]"},
				{"unknown bank", registerReq("erin", "erin-password-1", "bank9-1004", erinCode),
					connect.CodePermissionDenied, reasonEnrollmentRefused, "accounts[0]"},
				{"account linked to another user, with a valid code", registerReq("alicia", "alicia-password", "bank1-1001", aliceCode),
					connect.CodePermissionDenied, reasonEnrollmentRefused, "accounts[0]"},
				{"an account listed twice", registerReq("erin", "erin-password-1", "bank1-1004", erinCode, "bank1-1004", erinCode),
					connect.CodePermissionDenied, reasonEnrollmentRefused, "accounts[1]"},
				{"username taken", registerReq("dave", "dave-password-2", "bank1-1004", erinCode),
					connect.CodeAlreadyExists, "username_taken", "dave"},
				{"short password", registerReq("erin", "short", "bank1-1004", erinCode),
					connect.CodeInvalidArgument, "", "password"},
				{"bad username", registerReq("9erin", "erin-password-1", "bank1-1004", erinCode),
					connect.CodeInvalidArgument, "", "username"},
				{"no accounts", registerReq("erin", "erin-password-1"),
					connect.CodeInvalidArgument, "", "accounts"},
				{"no code", registerReq("erin", "erin-password-1", "bank1-1004", ""),
					connect.CodeInvalidArgument, "", "enrollment_code"},
			}
			var messages []string
			for _, tt := range refusals {
				_, err := anon.auth.Register(ctx, tt.req)
				if err == nil {
					t.Fatalf("%s: Register succeeded", tt.name)
				}
				if connect.CodeOf(err) != tt.code || (tt.reason != "" && rpcerr.Reason(err) != tt.reason) {
					t.Errorf("%s: err = %v (reason %q); want %v %q", tt.name, err, rpcerr.Reason(err), tt.code, tt.reason)
				}
				if !strings.Contains(err.Error(), tt.mentions) {
					t.Errorf("%s: message %q does not mention %q", tt.name, err, tt.mentions)
				}
				if tt.reason == reasonEnrollmentRefused {
					messages = append(messages, strings.Replace(err.Error(), tt.mentions, "accounts[i]", 1))
				}
			}
			// The refusals do not tell their causes apart.
			for _, m := range messages[1:] {
				if m != messages[0] {
					t.Errorf("refusals differ: %q and %q", messages[0], m)
				}
			}
			// Nothing was created by a refusal: no user can log in, erin's account is still free,
			// and no code was spent: a taken username and a linked account never reach the bank.
			for _, u := range []struct{ name, password string }{{"mallory", "mallory-password"}, {"erin", "erin-password-1"}, {"alicia", "alicia-password"}} {
				_, err := anon.auth.Login(ctx, loginReq(u.name, u.password))
				wantErr(t, err, connect.CodeUnauthenticated, "invalid_credentials")
			}
			if _, err := e.gw.store.AccountOwner(ctx, "bank1-1004"); err != ErrNotFound {
				t.Fatalf("bank1-1004 owner lookup = %v; want not linked", err)
			}
			for _, id := range []string{"bank1-1004", "bank2-2003", "bank1-1001"} {
				if st := e.enrollmentStatus(t, id); st.RedeemedBy != "" {
					t.Errorf("%s's code was redeemed by %s", id, st.RedeemedBy)
				}
			}

			// A registration refused for its second account binds the first account's code to
			// its username: another username cannot use it, the same one can retry.
			_, err := anon.auth.Register(ctx, registerReq("erin", "erin-password-1", "bank1-1004", erinCode, "bank2-2003", wrong))
			wantErr(t, err, connect.CodePermissionDenied, reasonEnrollmentRefused)
			if !strings.Contains(err.Error(), "accounts[1]") {
				t.Errorf("refusal %v does not name accounts[1]", err)
			}
			_, err = anon.auth.Register(ctx, registerReq("mallory", "mallory-password", "bank1-1004", erinCode))
			wantErr(t, err, connect.CodePermissionDenied, reasonEnrollmentRefused)

			// erin registers with her code (the way she typed it), logs in and pays.
			resp, err := anon.auth.Register(ctx, registerReq("erin", "erin-password-1", "bank1-1004", strings.ToLower(erinCode)))
			if err != nil {
				t.Fatalf("register erin: %v", err)
			}
			if got := resp.Msg.GetAccountIds(); len(got) != 1 || got[0] != "bank1-1004" || resp.Msg.GetUsername() != "erin" {
				t.Fatalf("register response = %v", resp.Msg)
			}
			_, err = anon.auth.Register(ctx, registerReq("erin", "erin-password-2", "bank1-1004", erinCode))
			wantErr(t, err, connect.CodeAlreadyExists, "username_taken")
			_, err = anon.auth.Register(ctx, registerReq("erin2", "erin-password-2", "bank1-1004", erinCode))
			wantErr(t, err, connect.CodePermissionDenied, reasonEnrollmentRefused)
			// frank's code still works for frank: refusals of others did not burn it.
			if _, err := anon.auth.Register(ctx, registerReq("frank", "frank-password", "bank2-2003", frankCode)); err != nil {
				t.Fatalf("register frank: %v", err)
			}

			erin := e.login(t, p, "erin", "erin-password-1")
			bal, err := erin.balance.FetchBalance(ctx, connect.NewRequest(&gatewayv1.FetchBalanceRequest{}))
			if err != nil {
				t.Fatalf("FetchBalance: %v", err)
			}
			if len(bal.Msg.GetBanks()) != 1 || bal.Msg.GetBanks()[0].GetAccounts()[0].GetBalance() != 50000 {
				t.Fatalf("erin's balances = %v; want bank1-1004 with 50000", bal.Msg)
			}
			before := e.balance(t, "bank2-2001")
			pay := erin.pay(t, newPaymentID(), "bank1-1004", "bank2-2001", 12345)
			if pay.GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
				t.Fatalf("erin's payment = %v", pay)
			}
			if got := e.balance(t, "bank1-1004"); got != 50000-12345 {
				t.Errorf("bank1-1004 = %d, want %d", got, 50000-12345)
			}
			if got := e.balance(t, "bank2-2001"); got != before+12345 {
				t.Errorf("bank2-2001 = %d, want %d", got, before+12345)
			}
			// She cannot pay from an account she did not register.
			_, err = erin.tryPay(ctx, newPaymentID(), "bank1-1001", "bank1-1004", 1)
			wantErr(t, err, connect.CodePermissionDenied, "not_account_owner")
			e.assertSettled(t)
		})
	}
}

// TestLoginUnknownUserCostsLikeWrongPassword checks that a login of an unknown user does as
// much bcrypt work as a wrong password, so response times do not tell which usernames exist.
func TestLoginUnknownUserCostsLikeWrongPassword(t *testing.T) {
	t.Parallel()
	cost, err := bcrypt.Cost(dummyHashFor(DefaultConfig().BcryptCost))
	if err != nil {
		t.Fatal(err)
	}
	if want := DefaultConfig().BcryptCost; cost != want {
		t.Skipf("BUG: dummyHash (auth.go) has bcrypt cost %d but users' hashes have cost %d by default: "+
			"a login of an unknown username answers about %dx faster than a wrong password, which "+
			"tells an attacker which usernames exist", cost, want, 1<<(want-cost))
	}
}

// enrollmentCode issues a code for account at its bank, as `paygate bank enroll` does.
func (e *env) enrollmentCode(t testing.TB, id string) string {
	t.Helper()
	n := e.banks[account.Bank(id)]
	n.mu.Lock()
	defer n.mu.Unlock()
	c, err := n.srv.Ledger().IssueEnrollmentCode(context.Background(), id, 0, time.Now())
	if err != nil {
		t.Fatalf("issue an enrollment code for %s: %v", id, err)
	}
	return c.Code
}

// enrollmentStatus returns what account's bank knows of its code.
func (e *env) enrollmentStatus(t testing.TB, id string) bank.EnrollmentStatus {
	t.Helper()
	n := e.banks[account.Bank(id)]
	n.mu.Lock()
	defer n.mu.Unlock()
	st, _, err := n.srv.Ledger().EnrollmentStatus(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestLoginThrottleHoldsUnderConcurrency sends many wrong passwords at once for one user from
// one address: no more than the budget are checked, however they interleave.
func TestLoginThrottleHoldsUnderConcurrency(t *testing.T) {
	t.Parallel()
	clk := newFakeClock()
	const burst = 5
	e := newEnv(t, envOptions{
		// A check slow enough (a few milliseconds) that the guesses overlap.
		config: func(c *Config) {
			c.LoginFailuresBurst, c.LoginFailureEvery, c.BcryptCost = burst, time.Minute, 8
		},
		beforeStart: func(g *Gateway) { g.now = clk.Now },
	})
	anon := e.anon(protocols[0])
	// A right password first, on the connection the guesses then share: it spends nothing.
	if _, err := anon.auth.Login(context.Background(), loginReq("alice", "alice-pass-123")); err != nil {
		t.Fatal(err)
	}
	reasons := concurrently(40, func(i int) error {
		_, err := anon.auth.Login(context.Background(), loginReq("alice", fmt.Sprintf("guess-%02d", i)))
		return err
	})
	if reasons["invalid_credentials"] > burst || reasons["invalid_credentials"]+reasons["login_throttled"] != 40 {
		t.Fatalf("40 concurrent wrong passwords answered %v; want at most %d invalid_credentials, the rest login_throttled", reasons, burst)
	}
	// A right password does not spend the budget: with one attempt back, many right logins in a
	// row all work.
	clk.Advance(time.Minute)
	for i := range burst + 1 {
		if _, err := anon.auth.Login(context.Background(), loginReq("alice", "alice-pass-123")); err != nil {
			t.Fatalf("right password %d: %v", i+1, err)
		}
	}
}

// errorMetadata returns the ErrorInfo metadata key of err.
func errorMetadata(err error, key string) string {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return ""
	}
	for _, d := range ce.Details() {
		if v, verr := d.Value(); verr == nil {
			if info, ok := v.(*errdetails.ErrorInfo); ok {
				return info.GetMetadata()[key]
			}
		}
	}
	return ""
}

// concurrently runs n calls of f at once and counts the answers by reason ("ok" for none).
func concurrently(n int, f func(i int) error) map[string]int {
	var (
		mu      sync.Mutex
		reasons = map[string]int{}
		start   = make(chan struct{})
		wg      sync.WaitGroup
	)
	for i := range n {
		wg.Go(func() {
			<-start
			err := f(i)
			r := "ok"
			if err != nil {
				if r = rpcerr.Reason(err); r == "" {
					r = err.Error()
				}
			}
			mu.Lock()
			reasons[r]++
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	return reasons
}

// TestRegisterThrottled checks the registration budgets: per address, and per account, reserved
// before the code is checked and given back on success.
func TestRegisterThrottled(t *testing.T) {
	t.Parallel()
	clk := newFakeClock()
	const burst = 12 // refused registrations per address and per account: 4 × LoginFailuresBurst
	e := newEnv(t, envOptions{
		config:      func(c *Config) { c.LoginFailuresBurst = burst / 4; c.LoginFailureEvery = time.Minute },
		beforeStart: func(g *Gateway) { g.now = clk.Now },
	})
	ctx := context.Background()
	from := func(ip string) *clients {
		return e.clientsWith(newHTTPClientFrom(t, clientIdentity("cli"), ip), protocols[0], "")
	}
	first, second, third := from("127.0.0.1"), from("127.0.0.2"), from("127.0.0.3")

	// Concurrent wrong codes for frank's account from one address: at most the budget are
	// checked.
	reasons := concurrently(40, func(i int) error {
		_, err := first.auth.Register(ctx, registerReq(fmt.Sprintf("mallory%02d", i), "mallory-password", "bank2-2003", "AAAA-AAAA-AAAA-AAAA"))
		return err
	})
	if reasons[reasonEnrollmentRefused] > burst || reasons[reasonEnrollmentRefused]+reasons["register_throttled"] != 40 {
		t.Fatalf("40 concurrent wrong codes answered %v; want at most %d enrollment_refused, the rest register_throttled", reasons, burst)
	}
	// The account's budget is spent for every address; another account's is not.
	_, err := second.auth.Register(ctx, registerReq("mallory", "mallory-password", "bank2-2003", "AAAA-AAAA-AAAA-AAAA"))
	wantErr(t, err, connect.CodeResourceExhausted, "register_throttled")
	if got := errorMetadata(err, "retry_after_seconds"); got != "60" || !strings.Contains(err.Error(), "try again in 1m") {
		t.Errorf("throttled registration %v (retry_after_seconds %q); want it to say to retry in 60 s", err, got)
	}
	if _, err := second.auth.Register(ctx, registerReq("grace", "grace-password", "bank3-3003", e.enrollmentCode(t, "bank3-3003"))); err != nil {
		t.Fatalf("register grace from another address: %v", err)
	}
	// Once a refusal's worth of time has passed, frank registers with his (new) code.
	clk.Advance(time.Minute)
	if _, err := second.auth.Register(ctx, registerReq("frank", "frank-password", "bank2-2003", e.enrollmentCode(t, "bank2-2003"))); err != nil {
		t.Fatalf("register frank after the window: %v", err)
	}

	// Per address: refusals for many accounts spend it, then even a right code waits.
	for i := range burst {
		_, err := third.auth.Register(ctx, registerReq("mallory", "mallory-password", fmt.Sprintf("bank1-%d", 9000+i), "AAAA-AAAA-AAAA-AAAA"))
		wantErr(t, err, connect.CodePermissionDenied, reasonEnrollmentRefused)
	}
	erin := e.enrollmentCode(t, "bank1-1004")
	_, err = third.auth.Register(ctx, registerReq("erin", "erin-password", "bank1-1004", erin))
	wantErr(t, err, connect.CodeResourceExhausted, "register_throttled")
	if _, err := second.auth.Register(ctx, registerReq("erin", "erin-password", "bank1-1004", erin)); err != nil {
		t.Fatalf("register erin from another address: %v", err)
	}
}

// newHTTPClientFrom is newHTTPClient with connections from the loopback address ip (any of
// 127.0.0.0/8), for tests about per-address budgets.
func newHTTPClientFrom(t testing.TB, id identity.Identity, ip string) *http.Client {
	t.Helper()
	f := leaf(id)
	tlsCfg, err := pki.ClientTLS(pki.CAFile(certDir), f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	var http2Only http.Protocols
	http2Only.SetHTTP2(true)
	c := &http.Client{Transport: &http.Transport{
		TLSClientConfig: tlsCfg,
		Protocols:       &http2Only,
		DialContext:     (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}).DialContext,
	}}
	t.Cleanup(c.CloseIdleConnections)
	return c
}
