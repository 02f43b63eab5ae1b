package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
	"github.com/paygate/paygate/internal/rpcerr"
)

// The gateway's budgets, as `paygate gateway` has them by default: failed logins per user and
// per address, refused registrations per address and per account (four times as many).
const (
	loginBudget    = 5
	registerBudget = 4 * loginBudget
)

// throttleCases returns TestSecurityMatrix's cases for login and registration budgets under
// concurrency.
//
// An attempt must be paid for before its password or code is checked: otherwise a burst of
// concurrent guesses is checked in full before the first failure is counted. Each case calls from
// loopback addresses of its own (127.0.0.0/8), so that the budgets it spends are not those of the
// matrix's other cases, which call from 127.0.0.1.
func throttleCases(t *testing.T, m *secMatrix) []secCase {
	e := m.e
	cli := loadPair(t, m.c, "client-cli")
	// authFrom returns an AuthService client calling from ip, its connection open: the burst
	// that follows arrives at once rather than behind a TLS handshake.
	authFrom := func(t *testing.T, ip string) gatewayv1connect.AuthServiceClient {
		hc := httpClientFrom(e, cli, ip)
		url := "https://" + m.c.GatewayAddr
		if _, err := grpchealth.NewClient(hc, url, connect.WithGRPC()).Check(m.ctx(), &grpchealth.CheckRequest{}); err != nil {
			t.Fatalf("health check from %s: %v", ip, err)
		}
		return gatewayv1connect.NewAuthServiceClient(hc, url, connect.WithGRPC())
	}
	return []secCase{
		{"40 concurrent wrong passwords for one user from one address", func(t *testing.T) {
			auth := authFrom(t, "127.0.0.21")
			reasons := burst(40, func(i int) error {
				_, err := auth.Login(m.ctx(), connect.NewRequest(&gatewayv1.LoginRequest{Username: "dave", Password: fmt.Sprintf("wrong-password-%02d", i)}))
				return err
			})
			t.Logf("answers: %v", reasons)
			if reasons["invalid_credentials"] > loginBudget || reasons["invalid_credentials"]+reasons["login_throttled"] != 40 {
				t.Fatalf("40 concurrent wrong passwords answered %v; want at most %d checked (invalid_credentials), the rest login_throttled", reasons, loginBudget)
			}
			// The right password waits too, and says for how long.
			_, err := auth.Login(m.ctx(), connect.NewRequest(&gatewayv1.LoginRequest{Username: "dave", Password: passwords["dave"]}))
			wantCode(t, err, connect.CodeResourceExhausted, "login_throttled")
		}},
		{"40 concurrent wrong codes for one account from one address", func(t *testing.T) {
			auth := authFrom(t, "127.0.0.22")
			reasons := burst(40, func(i int) error {
				return registerWith(m.ctx(), auth, fmt.Sprintf("grace%02d", i), "bank3-3003", "AAAA-BBBB-CCCC-DDDD")
			})
			t.Logf("answers: %v", reasons)
			if reasons["enrollment_refused"] > registerBudget || reasons["enrollment_refused"]+reasons["register_throttled"] != 40 {
				t.Fatalf("40 concurrent wrong codes answered %v; want at most %d checked (enrollment_refused), the rest register_throttled", reasons, registerBudget)
			}
		}},
		{"40 concurrent wrong codes for one account from 40 addresses", func(t *testing.T) {
			var auths []gatewayv1connect.AuthServiceClient
			for i := range 40 {
				auths = append(auths, authFrom(t, fmt.Sprintf("127.0.1.%d", 10+i)))
			}
			reasons := burst(40, func(i int) error {
				return registerWith(m.ctx(), auths[i], fmt.Sprintf("guess%02d", i), "bank3-9999", "AAAA-BBBB-CCCC-DDDD")
			})
			t.Logf("answers: %v", reasons)
			if reasons["enrollment_refused"] > registerBudget || reasons["enrollment_refused"]+reasons["register_throttled"] != 40 {
				t.Fatalf("40 concurrent wrong codes from 40 addresses answered %v; want at most %d checked (enrollment_refused), the rest register_throttled", reasons, registerBudget)
			}
		}},
	}
}

func registerWith(ctx context.Context, auth gatewayv1connect.AuthServiceClient, username, account, code string) error {
	_, err := auth.Register(ctx, connect.NewRequest(&gatewayv1.RegisterRequest{Username: username, Password: username + "-password-1",
		Accounts: []*gatewayv1.AccountEnrollment{{AccountId: account, EnrollmentCode: code}}}))
	return err
}

// burst runs n calls of f at once and counts their answers by reason ("ok" for success).
func burst(n int, f func(i int) error) map[string]int {
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
					r = connect.CodeOf(err).String()
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

// httpClientFrom is e.httpClient(cert) with connections from the loopback address ip.
func httpClientFrom(e *secEnv, cert *tls.Certificate, ip string) *http.Client {
	cfg := e.roots.Clone()
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	var protocols http.Protocols
	protocols.SetHTTP2(true)
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig: cfg,
		Protocols:       &protocols,
		DialContext:     (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}).DialContext,
	}}
}
