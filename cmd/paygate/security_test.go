package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	"github.com/paygate/paygate/gen/paygate/bank/v1/bankv1connect"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
	"github.com/paygate/paygate/internal/cluster"
	"github.com/paygate/paygate/internal/identity"
	"github.com/paygate/paygate/internal/pki"
	"github.com/paygate/paygate/internal/rpcerr"
	"github.com/paygate/paygate/internal/rpcserver"
)

// credentials are what a caller presents: a client certificate (or none) and a token (or none).
type credentials struct {
	cert  *tls.Certificate
	token string
}

// secEnv is a cluster and a TLS configuration that trusts its CA.
type secEnv struct {
	c     *cluster.Cluster
	roots *tls.Config // the cluster's CA as root, no client certificate
}

// httpClient returns an HTTP client trusting the cluster's CA that presents cert (nil: none).
func (e *secEnv) httpClient(cert *tls.Certificate) *http.Client {
	cfg := e.roots.Clone()
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return rpcserver.NewHTTPClient(cfg)
}

func (e *secEnv) gatewayClients(cr credentials) (gatewayv1connect.AuthServiceClient, gatewayv1connect.PaymentServiceClient, gatewayv1connect.BalanceServiceClient, gatewayv1connect.CoordinatorServiceClient) {
	hc := e.httpClient(cr.cert)
	url := "https://" + e.c.GatewayAddr
	opts := []connect.ClientOption{connect.WithGRPC()}
	if cr.token != "" {
		opts = append(opts, connect.WithInterceptors(cluster.Bearer(cr.token)))
	}
	return gatewayv1connect.NewAuthServiceClient(hc, url, opts...),
		gatewayv1connect.NewPaymentServiceClient(hc, url, opts...),
		gatewayv1connect.NewBalanceServiceClient(hc, url, opts...),
		gatewayv1connect.NewCoordinatorServiceClient(hc, url, opts...)
}

func loadPair(t *testing.T, c *cluster.Cluster, name string) *tls.Certificate {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(c.CertPath(name+".pem"), c.CertPath(name+"-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return &cert
}

func leafPair(t *testing.T, leaf *pki.Leaf) *tls.Certificate {
	t.Helper()
	cert := leaf.TLSCertificate()
	return &cert
}

func newSecEnv(t *testing.T, opts cluster.Options) *secEnv {
	t.Helper()
	c := cluster.New(t, opts)
	roots, err := pki.LoadPool(c.CertPath("ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return &secEnv{c: c, roots: pki.ClientTLSFrom(roots, nil)}
}

// wantCode checks that err is a refusal with code and, when reason is not empty, that reason.
func wantCode(t *testing.T, err error, code connect.Code, reason string) {
	t.Helper()
	if err == nil {
		t.Fatalf("call succeeded; want %v %s", code, reason)
	}
	if got := connect.CodeOf(err); got != code {
		t.Fatalf("code %v (%v); want %v %s", got, err, code, reason)
	}
	if reason != "" && rpcerr.Reason(err) != reason {
		t.Fatalf("reason %q (%v); want %q", rpcerr.Reason(err), err, reason)
	}
}

// wantHandshakeRefused checks that the TLS handshake with addr refuses cert (nil: no
// certificate): the server's alert arrives on the first read. err is what an RPC with the same
// certificate got: it must be a transport failure, not an answer of the application.
func wantHandshakeRefused(t *testing.T, e *secEnv, addr string, cert *tls.Certificate, err error) {
	t.Helper()
	if err == nil {
		t.Fatal("call succeeded; want the TLS handshake to refuse the client certificate")
	}
	if rpcerr.Reason(err) != "" {
		t.Fatalf("error %v carries an application reason; the handshake should have refused it", err)
	}
	cfg := e.roots.Clone()
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	cfg.NextProtos = []string{"h2"}
	conn, derr := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if derr == nil {
		defer conn.Close()
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, derr = conn.Read(make([]byte, 1))
	}
	if derr == nil || !strings.Contains(derr.Error(), "remote error: tls:") {
		t.Fatalf("TLS handshake: %v; want the server to refuse the certificate with an alert", derr)
	}
	t.Logf("refused: %v", derr)
}

func randomToken() string {
	var b [32]byte
	rand.Read(b[:])
	return "pgt_" + base64.RawURLEncoding.EncodeToString(b[:])
}

// secCase is one hostile call of TestSecurityMatrix; the ledgers are audited after it.
type secCase struct {
	name string
	run  func(t *testing.T)
}

// secMatrix is what the cases of TestSecurityMatrix share: one cluster, its CA, two logged-in
// users and a payment of alice's. Cases are grouped by what they attack, one file each
// (security_*_test.go), and must leave the ledgers as they found them.
type secMatrix struct {
	e        *secEnv
	c        *cluster.Cluster
	ctx      func() context.Context
	ourCA    *pki.CA
	alice    *cluster.User
	bob      *cluster.User
	alicePay string
}

// TestSecurityMatrix calls the gateway and the banks with wrong certificates, wrong tokens and
// other users' accounts. Each call must get its refusal and change nothing: the ledgers of
// every bank are audited after each case.
func TestSecurityMatrix(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real processes")
	}
	t.Parallel()
	e := newSecEnv(t, cluster.Options{})
	c := e.c
	ctx := func() context.Context { return ctxT(t, 15*time.Second) }

	// Certificates the cluster does not trust, or trusts for something else.
	now := time.Now()
	foreignCA, err := pki.NewCA("foreign CA", now.Add(-time.Hour), now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	selfSigned := &tls.Certificate{Certificate: [][]byte{foreignCA.Cert.Raw}, PrivateKey: foreignCA.Key}
	foreignLeaf, err := pki.IssueLeaf(foreignCA, identity.Identity{Role: identity.RoleClient, Name: "cli"}, nil, now.Add(-time.Hour), now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	ourCA, err := pki.LoadCA(c.CertPath("ca.pem"), c.CertPath("ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	expiredLeaf, err := pki.IssueLeaf(ourCA, identity.Identity{Role: identity.RoleClient, Name: "cli"}, nil, now.Add(-48*time.Hour), now.Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	cli := loadPair(t, c, "client-cli")
	other := loadPair(t, c, "client-other")
	bankCert := loadPair(t, c, "bank-bank1")
	gatewayCert := loadPair(t, c, "gateway")

	alice := login(t, c, "alice")
	bob := login(t, c, "bob")
	// A payment of alice's to carol, which bob (neither its payer nor its payee) must not see.
	alicePay := newID()
	if _, err := pay(ctx(), alice, alicePay, "bank1-1001", "bank1-1002", 100); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitSettled(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	before := audit(t, c)

	payReq := func(from, to string) *connect.Request[gatewayv1.ExecutePaymentRequest] {
		return connect.NewRequest(&gatewayv1.ExecutePaymentRequest{PaymentId: newID(), FromAccount: from, ToAccount: to, Amount: 100, Currency: "USD"})
	}
	cases := []secCase{
		// The TLS handshake of the API listener refuses certificates it cannot verify.
		{"no client certificate", func(t *testing.T) {
			_, p, _, _ := e.gatewayClients(credentials{token: alice.Token})
			_, err := p.ExecutePayment(ctx(), payReq("bank1-1001", "bank2-2002"))
			wantHandshakeRefused(t, e, c.GatewayAddr, nil, err)
		}},
		{"self-signed certificate", func(t *testing.T) {
			a, _, _, _ := e.gatewayClients(credentials{cert: selfSigned})
			_, err := a.Login(ctx(), connect.NewRequest(&gatewayv1.LoginRequest{Username: "alice", Password: passwords["alice"]}))
			wantHandshakeRefused(t, e, c.GatewayAddr, selfSigned, err)
		}},
		{"certificate from another CA", func(t *testing.T) {
			a, _, _, _ := e.gatewayClients(credentials{cert: leafPair(t, foreignLeaf)})
			_, err := a.Login(ctx(), connect.NewRequest(&gatewayv1.LoginRequest{Username: "alice", Password: passwords["alice"]}))
			wantHandshakeRefused(t, e, c.GatewayAddr, leafPair(t, foreignLeaf), err)
		}},
		{"expired certificate", func(t *testing.T) {
			a, _, _, _ := e.gatewayClients(credentials{cert: leafPair(t, expiredLeaf)})
			_, err := a.Login(ctx(), connect.NewRequest(&gatewayv1.LoginRequest{Username: "alice", Password: passwords["alice"]}))
			wantHandshakeRefused(t, e, c.GatewayAddr, leafPair(t, expiredLeaf), err)
		}},
		{"certificate from another CA at a bank", func(t *testing.T) {
			hc := e.httpClient(leafPair(t, foreignLeaf))
			b := bankv1connect.NewBankServiceClient(hc, "https://"+c.BankAddrs["bank1"], connect.WithGRPC())
			_, err := b.ListAccounts(ctx(), connect.NewRequest(&bankv1.ListAccountsRequest{}))
			wantHandshakeRefused(t, e, c.BankAddrs["bank1"], leafPair(t, foreignLeaf), err)
		}},
		// Valid certificates with the wrong role.
		{"client certificate calls a bank", func(t *testing.T) {
			b := bankv1connect.NewBankServiceClient(e.httpClient(cli), "https://"+c.BankAddrs["bank1"], connect.WithGRPC())
			_, err := b.CommitTransaction(ctx(), connect.NewRequest(&bankv1.CommitTransactionRequest{TransactionId: alicePay}))
			wantCode(t, err, connect.CodePermissionDenied, rpcserver.ReasonPermissionDenied)
		}},
		{"bank certificate calls another bank", func(t *testing.T) {
			b := bankv1connect.NewBankServiceClient(e.httpClient(bankCert), "https://"+c.BankAddrs["bank2"], connect.WithGRPC())
			_, err := b.ListAccounts(ctx(), connect.NewRequest(&bankv1.ListAccountsRequest{}))
			wantCode(t, err, connect.CodePermissionDenied, rpcserver.ReasonPermissionDenied)
		}},
		{"client certificate asks for a decision", func(t *testing.T) {
			_, _, _, co := e.gatewayClients(credentials{cert: cli, token: alice.Token})
			_, err := co.GetDecision(ctx(), connect.NewRequest(&gatewayv1.GetDecisionRequest{TransactionId: alicePay}))
			wantCode(t, err, connect.CodePermissionDenied, rpcserver.ReasonPermissionDenied)
		}},
		{"gateway certificate asks for a decision", func(t *testing.T) {
			_, _, _, co := e.gatewayClients(credentials{cert: gatewayCert})
			_, err := co.GetDecision(ctx(), connect.NewRequest(&gatewayv1.GetDecisionRequest{TransactionId: alicePay}))
			wantCode(t, err, connect.CodePermissionDenied, rpcserver.ReasonPermissionDenied)
		}},
		{"bank certificate uses a user's token", func(t *testing.T) {
			// User calls need the client role: a bank's certificate is refused before the
			// token is even looked at.
			_, p, _, _ := e.gatewayClients(credentials{cert: bankCert, token: alice.Token})
			_, err := p.ExecutePayment(ctx(), payReq("bank1-1001", "bank2-2002"))
			wantCode(t, err, connect.CodePermissionDenied, rpcserver.ReasonPermissionDenied)
		}},
		{"bank certificate logs in as a user", func(t *testing.T) {
			a, _, _, _ := e.gatewayClients(credentials{cert: bankCert})
			_, err := a.Login(ctx(), connect.NewRequest(&gatewayv1.LoginRequest{Username: "alice", Password: passwords["alice"]}))
			wantCode(t, err, connect.CodePermissionDenied, rpcserver.ReasonPermissionDenied)
		}},
		{"gateway certificate logs in as a user", func(t *testing.T) {
			a, _, _, _ := e.gatewayClients(credentials{cert: gatewayCert})
			_, err := a.Login(ctx(), connect.NewRequest(&gatewayv1.LoginRequest{Username: "alice", Password: passwords["alice"]}))
			wantCode(t, err, connect.CodePermissionDenied, rpcserver.ReasonPermissionDenied)
		}},
		{"a token used with another client certificate", func(t *testing.T) {
			_, p, _, _ := e.gatewayClients(credentials{cert: other, token: alice.Token})
			_, err := p.ExecutePayment(ctx(), payReq("bank1-1001", "bank2-2002"))
			wantCode(t, err, connect.CodeUnauthenticated, "token_certificate_mismatch")
		}},
		// Tokens.
		{"no token", func(t *testing.T) {
			_, p, _, _ := e.gatewayClients(credentials{cert: cli})
			_, err := p.ExecutePayment(ctx(), payReq("bank1-1001", "bank2-2002"))
			wantCode(t, err, connect.CodeUnauthenticated, "missing_token")
		}},
		{"forged token", func(t *testing.T) {
			_, _, bal, _ := e.gatewayClients(credentials{cert: cli, token: randomToken()})
			_, err := bal.FetchBalance(ctx(), connect.NewRequest(&gatewayv1.FetchBalanceRequest{}))
			wantCode(t, err, connect.CodeUnauthenticated, "invalid_token")
		}},
		{"token that is not a token", func(t *testing.T) {
			_, p, _, _ := e.gatewayClients(credentials{cert: cli, token: "alice"})
			_, err := p.ExecutePayment(ctx(), payReq("bank1-1001", "bank2-2002"))
			wantCode(t, err, connect.CodeUnauthenticated, "invalid_token")
		}},
		{"revoked token", func(t *testing.T) {
			u := login(t, c, "alice")
			if _, err := u.Auth.Logout(ctx(), connect.NewRequest(&gatewayv1.LogoutRequest{})); err != nil {
				t.Fatal(err)
			}
			_, err := u.Payments.ExecutePayment(ctx(), payReq("bank1-1001", "bank2-2002"))
			wantCode(t, err, connect.CodeUnauthenticated, "token_revoked")
			_, err = u.Balance.FetchBalance(ctx(), connect.NewRequest(&gatewayv1.FetchBalanceRequest{}))
			wantCode(t, err, connect.CodeUnauthenticated, "token_revoked")
		}},
		{"token used with another client certificate", func(t *testing.T) {
			_, p, bal, _ := e.gatewayClients(credentials{cert: other, token: alice.Token})
			_, err := p.ExecutePayment(ctx(), payReq("bank1-1001", "bank2-2002"))
			wantCode(t, err, connect.CodeUnauthenticated, "token_certificate_mismatch")
			_, err = bal.FetchBalance(ctx(), connect.NewRequest(&gatewayv1.FetchBalanceRequest{}))
			wantCode(t, err, connect.CodeUnauthenticated, "token_certificate_mismatch")
		}},
		// Another user's token acts as that user, and other users' accounts stay out of reach.
		{"pay from another user's account", func(t *testing.T) {
			_, err := alice.Payments.ExecutePayment(ctx(), payReq("bank2-2002", "bank1-1001"))
			wantCode(t, err, connect.CodePermissionDenied, "not_account_owner")
			_, err = bob.Payments.ExecutePayment(ctx(), payReq("bank1-1001", "bank2-2002"))
			wantCode(t, err, connect.CodePermissionDenied, "not_account_owner")
		}},
		{"pay from an account nobody owns", func(t *testing.T) {
			_, err := alice.Payments.ExecutePayment(ctx(), payReq("bank1-1004", "bank1-1001"))
			wantCode(t, err, connect.CodePermissionDenied, "not_account_owner")
		}},
		{"another user's payment", func(t *testing.T) {
			_, err := bob.Payments.GetPayment(ctx(), connect.NewRequest(&gatewayv1.GetPaymentRequest{PaymentId: alicePay}))
			wantCode(t, err, connect.CodeNotFound, "payment_not_found")
			// Nor may he refund it: to him it does not exist.
			_, err = bob.Payments.RefundPayment(ctx(), connect.NewRequest(&gatewayv1.RefundPaymentRequest{RefundId: newID(), PaymentId: alicePay}))
			wantCode(t, err, connect.CodeNotFound, "payment_not_found")
			// Its payee sees it, without who paid.
			carol := login(t, c, "carol")
			if r, err := carol.Payments.GetPayment(ctx(), connect.NewRequest(&gatewayv1.GetPaymentRequest{PaymentId: alicePay})); err != nil ||
				r.Msg.GetPayment().GetUsername() != "" || r.Msg.GetPayment().GetAmount() != 100 {
				t.Fatalf("the payee's GetPayment: %v, %v; want the payment without its payer's username", r, err)
			}
			// Replaying alice's payment_id as bob is refused, not answered with her payment.
			_, err = bob.Payments.ExecutePayment(ctx(), connect.NewRequest(&gatewayv1.ExecutePaymentRequest{
				PaymentId: alicePay, FromAccount: "bank2-2002", ToAccount: "bank1-1001", Amount: 100, Currency: "USD"}))
			wantCode(t, err, connect.CodeAlreadyExists, "payment_id_reused")
		}},
		{"another user's history", func(t *testing.T) {
			resp, err := bob.Payments.ListPayments(ctx(), connect.NewRequest(&gatewayv1.ListPaymentsRequest{PageSize: 100}))
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range resp.Msg.GetPayments() {
				if p.GetUsername() != "bob" || p.GetPaymentId() == alicePay {
					t.Errorf("bob's history shows %s of %s", p.GetPaymentId(), p.GetUsername())
				}
			}
			resp, err = alice.Payments.ListPayments(ctx(), connect.NewRequest(&gatewayv1.ListPaymentsRequest{PageSize: 100}))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.ContainsFunc(resp.Msg.GetPayments(), func(p *gatewayv1.Payment) bool { return p.GetPaymentId() == alicePay }) {
				t.Errorf("alice's history does not show her payment %s", alicePay)
			}
		}},
		{"another user's balance", func(t *testing.T) {
			resp, err := bob.Balance.FetchBalance(ctx(), connect.NewRequest(&gatewayv1.FetchBalanceRequest{}))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, b := range resp.Msg.GetBanks() {
				for _, a := range b.GetAccounts() {
					got = append(got, a.GetAccountId())
				}
			}
			slices.Sort(got)
			if want := []string{"bank2-2002", "bank3-3001"}; !slices.Equal(got, want) {
				t.Errorf("bob's balance shows %v, want only his accounts %v", got, want)
			}
		}},
	}
	m := &secMatrix{e: e, c: c, ctx: ctx, ourCA: ourCA, alice: alice, bob: bob, alicePay: alicePay}
	for _, more := range []func(*testing.T, *secMatrix) []secCase{pinningCases, enrollmentCases, decisionCases, paymentIDCases, throttleCases, limitCases} {
		cases = append(cases, more(t, m)...)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t)
			after := audit(t, c)
			if d := delta(before, after); len(d) != 0 || after.Held != 0 || after.Pending != 0 {
				t.Errorf("the refused call changed the ledgers: %v, held %d, pending %d", d, after.Held, after.Pending)
			}
		})
	}
}

// TestSecurityTokenExpiryAndLoginThrottle runs a gateway whose tokens live 2 s: an expired
// token is refused. Then a burst of wrong passwords throttles the login: even the right
// password is refused until the window passes.
func TestSecurityTokenExpiryAndLoginThrottle(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real processes")
	}
	t.Parallel()
	e := newSecEnv(t, cluster.Options{GatewayArgs: []string{"--token-ttl", "2s"}})
	c := e.c
	ctx := func() context.Context { return ctxT(t, 15*time.Second) }
	before := audit(t, c)

	t.Run("expired token", func(t *testing.T) {
		u := login(t, c, "carol")
		if _, err := u.Balance.FetchBalance(ctx(), connect.NewRequest(&gatewayv1.FetchBalanceRequest{})); err != nil {
			t.Fatalf("fresh token: %v", err)
		}
		// The gateway's clock is its own process's: poll (a read, no money) until the token
		// is refused, rather than sleeping for a guess of its TTL. The in-process tests
		// (services/gateway TestLogin) check the exact instant with a fake clock.
		issued := time.Now()
		for {
			_, err := u.Balance.FetchBalance(ctx(), connect.NewRequest(&gatewayv1.FetchBalanceRequest{}))
			if err != nil {
				wantCode(t, err, connect.CodeUnauthenticated, "token_expired")
				break
			}
			if time.Since(issued) > 15*time.Second {
				t.Fatal("a token with a 2 s TTL still works after 15 s")
			}
			time.Sleep(100 * time.Millisecond)
		}
		_, err := u.Payments.ExecutePayment(ctx(), connect.NewRequest(&gatewayv1.ExecutePaymentRequest{
			PaymentId: newID(), FromAccount: "bank3-3002", ToAccount: "bank1-1001", Amount: 100, Currency: "USD"}))
		wantCode(t, err, connect.CodeUnauthenticated, "token_expired")
	})

	t.Run("login throttling", func(t *testing.T) {
		auth := c.Clients().Auth
		loginAs := func(pw string) error {
			_, err := auth.Login(ctx(), connect.NewRequest(&gatewayv1.LoginRequest{Username: "dave", Password: pw}))
			return err
		}
		var throttled int
		for i := range 12 {
			err := loginAs("wrong-password-" + string(rune('a'+i)))
			switch connect.CodeOf(err) {
			case connect.CodeUnauthenticated:
				if r := rpcerr.Reason(err); r != "invalid_credentials" {
					t.Fatalf("attempt %d: reason %q, want invalid_credentials", i, r)
				}
			case connect.CodeResourceExhausted:
				throttled++
			default:
				t.Fatalf("attempt %d: %v", i, err)
			}
		}
		if throttled == 0 {
			t.Fatal("12 wrong passwords in a burst were never throttled")
		}
		wantCode(t, loginAs(passwords["dave"]), connect.CodeResourceExhausted, "login_throttled")
		// The window passes (one attempt per 10 s): the right password works again.
		deadline := time.Now().Add(25 * time.Second)
		for {
			err := loginAs(passwords["dave"])
			if err == nil {
				break
			}
			if connect.CodeOf(err) != connect.CodeResourceExhausted || time.Now().After(deadline) {
				t.Fatalf("right password after the window: %v", err)
			}
			time.Sleep(time.Second)
		}
	})

	if d := delta(before, audit(t, c)); len(d) != 0 {
		t.Errorf("the refused calls changed the ledgers: %v", d)
	}
}
