package main

import (
	"fmt"
	"testing"

	"connectrpc.com/connect"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
)

// enrollmentCases returns TestSecurityMatrix's cases for registration needs the bank's enrollment code.
//
// The banks hold accounts of people without a login (erin's bank1-1004, frank's bank2-2003,
// grace's bank3-3003), and their names are no secret. Knowing a holder's name, or the account
// id, must not be enough to register as the holder, on the web listener (no client certificate)
// or on the API listener: only the code the holder's bank issued, once, for one username.
func enrollmentCases(t *testing.T, m *secMatrix) []secCase {
	c, e := m.c, m.e
	cli := loadPair(t, c, "client-cli")
	listeners := []struct {
		name string
		auth gatewayv1connect.AuthServiceClient
	}{
		// From loopback addresses of their own: the refusals below spend those addresses'
		// registration budgets, not 127.0.0.1's.
		{"web listener", gatewayv1connect.NewAuthServiceClient(httpClientFrom(e, nil, "127.0.0.11"), "https://"+c.WebAddr)},
		{"API listener", gatewayv1connect.NewAuthServiceClient(httpClientFrom(e, cli, "127.0.0.12"), "https://"+c.GatewayAddr, connect.WithGRPC())},
	}
	api := listeners[1].auth
	register := func(auth gatewayv1connect.AuthServiceClient, username string, accountsAndCodes ...string) error {
		req := &gatewayv1.RegisterRequest{Username: username, Password: username + "-password-1"}
		for i := 0; i+1 < len(accountsAndCodes); i += 2 {
			req.Accounts = append(req.Accounts, &gatewayv1.AccountEnrollment{AccountId: accountsAndCodes[i], EnrollmentCode: accountsAndCodes[i+1]})
		}
		_, err := auth.Register(m.ctx(), connect.NewRequest(req))
		return err
	}
	// cannotLogIn checks that a refused registration created no user, from an address of its
	// own each time: these failed logins must not throttle each other.
	logins := 0
	cannotLogIn := func(t *testing.T, username string) {
		t.Helper()
		logins++
		auth := gatewayv1connect.NewAuthServiceClient(httpClientFrom(e, cli, fmt.Sprintf("127.0.2.%d", logins)), "https://"+c.GatewayAddr, connect.WithGRPC())
		_, err := auth.Login(m.ctx(), connect.NewRequest(&gatewayv1.LoginRequest{Username: username, Password: username + "-password-1"}))
		wantCode(t, err, connect.CodeUnauthenticated, "invalid_credentials")
	}
	// notLinked checks that nobody can pay from the account: it is linked to no user (alice, who
	// does not own it either, is refused as she always was).
	notLinked := func(t *testing.T, account string) {
		t.Helper()
		_, err := pay(m.ctx(), m.alice, newID(), account, "bank1-1001", 100)
		wantCode(t, err, connect.CodePermissionDenied, "not_account_owner")
	}
	issue := func(t *testing.T, bank, account string) string {
		t.Helper()
		code, err := c.EnrollmentCode(bank, account)
		if err != nil {
			t.Fatal(err)
		}
		return code
	}

	var cases []secCase
	for _, l := range listeners {
		cases = append(cases, secCase{"register erin's account by her name, without her code, on the " + l.name, func(t *testing.T) {
			// With a made-up code, and with none; then, once her bank has issued her code, with a
			// wrong one.
			wantCode(t, register(l.auth, "erin", "bank1-1004", "K7QX-3MZD-9TRA-WP4C"), connect.CodePermissionDenied, "enrollment_refused")
			wantCode(t, register(l.auth, "erin", "bank1-1004", ""), connect.CodeInvalidArgument, "")
			issue(t, "bank1", "bank1-1004")
			wantCode(t, register(l.auth, "erin", "bank1-1004", "AAAA-BBBB-CCCC-DDDD"), connect.CodePermissionDenied, "enrollment_refused")
			// Under another name too; and with the account listed twice.
			wantCode(t, register(l.auth, "mallory", "bank1-1004", "AAAA-BBBB-CCCC-DDDD"), connect.CodePermissionDenied, "enrollment_refused")
			wantCode(t, register(l.auth, "mallory", "bank1-1004", "AAAA-BBBB-CCCC-DDDD", "bank1-1004", "AAAA-BBBB-CCCC-DDDD"), connect.CodePermissionDenied, "enrollment_refused")
			cannotLogIn(t, "erin")
			cannotLogIn(t, "mallory")
			notLinked(t, "bank1-1004")
		}})
	}
	cases = append(cases,
		secCase{"register with the code: once, for one username", func(t *testing.T) {
			code := issue(t, "bank1", "bank1-1004")
			// A wrong code first does not burn the right one.
			wantCode(t, register(api, "erin", "bank1-1004", "AAAA-BBBB-CCCC-DDDD"), connect.CodePermissionDenied, "enrollment_refused")
			if err := register(listeners[0].auth, "erin", "bank1-1004", code); err != nil {
				t.Fatalf("register erin with her code on the web listener: %v", err)
			}
			erin, err := c.Login("erin", "erin-password-1")
			if err != nil {
				t.Fatalf("erin logs in: %v", err)
			}
			bal, err := erin.Balance.FetchBalance(m.ctx(), connect.NewRequest(&gatewayv1.FetchBalanceRequest{}))
			if err != nil || len(bal.Msg.GetBanks()) != 1 || bal.Msg.GetBanks()[0].GetAccounts()[0].GetAccountId() != "bank1-1004" {
				t.Fatalf("erin's balance: %v, %v; want bank1-1004 only", bal, err)
			}
			// The code is spent: the same again is a taken username, anyone else is refused.
			wantCode(t, register(api, "erin", "bank1-1004", code), connect.CodeAlreadyExists, "username_taken")
			wantCode(t, register(api, "mallory", "bank1-1004", code), connect.CodePermissionDenied, "enrollment_refused")
			wantCode(t, register(listeners[0].auth, "erin2", "bank1-1004", code), connect.CodePermissionDenied, "enrollment_refused")
			cannotLogIn(t, "mallory")
			cannotLogIn(t, "erin2")
		}},
		secCase{"another username with a code bound to the first", func(t *testing.T) {
			// frank's registration fails on its second account, after his bank has bound his
			// code to "frank": the bank refuses the code to anyone else, though the account is
			// linked to nobody yet.
			code := issue(t, "bank2", "bank2-2003")
			wantCode(t, register(api, "frank", "bank2-2003", code, "bank3-3003", "AAAA-BBBB-CCCC-DDDD"), connect.CodePermissionDenied, "enrollment_refused")
			cannotLogIn(t, "frank")
			notLinked(t, "bank2-2003")
			wantCode(t, register(listeners[0].auth, "mallory", "bank2-2003", code), connect.CodePermissionDenied, "enrollment_refused")
			wantCode(t, register(api, "grace", "bank2-2003", code), connect.CodePermissionDenied, "enrollment_refused")
			cannotLogIn(t, "mallory")
			notLinked(t, "bank2-2003")
			// frank retries with the same code and gets his account.
			if err := register(api, "frank", "bank2-2003", code); err != nil {
				t.Fatalf("frank retries: %v", err)
			}
			if _, err := c.Login("frank", "frank-password-1"); err != nil {
				t.Fatalf("frank logs in: %v", err)
			}
		}},
		secCase{"register another user's linked account, with a code its bank issued", func(t *testing.T) {
			// Even a valid code does not take an account that is linked already.
			code := issue(t, "bank1", "bank1-1001")
			wantCode(t, register(api, "mallory", "bank1-1001", code), connect.CodePermissionDenied, "enrollment_refused")
			wantCode(t, register(listeners[0].auth, "alicia", "bank1-1001", code), connect.CodePermissionDenied, "enrollment_refused")
			cannotLogIn(t, "mallory")
			cannotLogIn(t, "alicia")
			_, err := pay(m.ctx(), m.bob, newID(), "bank1-1001", "bank2-2002", 100)
			wantCode(t, err, connect.CodePermissionDenied, "not_account_owner")
		}},
	)
	return cases
}
