package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"

	"github.com/paygate/paygate/client"
	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	"github.com/paygate/paygate/gen/paygate/bank/v1/bankv1connect"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
	"github.com/paygate/paygate/internal/cluster"
	"github.com/paygate/paygate/internal/identity"
	"github.com/paygate/paygate/internal/pki"
)

// impostor is a TLS server in the test process, on a loopback port the OS chooses, presenting a
// certificate of the cluster's CA that is not the one its callers expect. It answers nothing:
// it counts the handshakes attempted and completed, and records every byte that arrives after a
// completed handshake (an HTTP/2 preface, a request, a password).
type impostor struct {
	ln   net.Listener
	cert atomic.Pointer[tls.Certificate]

	mu        sync.Mutex
	attempts  int
	completed int
	received  []byte
}

func newImpostor(t *testing.T, cert *tls.Certificate) *impostor {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	im := &impostor{ln: ln}
	im.cert.Store(cert)
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return im.cert.Load(), nil
		},
	}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go im.serve(tls.Server(conn, cfg))
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return im
}

func (im *impostor) serve(conn *tls.Conn) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	im.mu.Lock()
	im.attempts++
	im.mu.Unlock()
	if conn.Handshake() != nil {
		return
	}
	im.mu.Lock()
	im.completed++
	im.mu.Unlock()
	buf := make([]byte, 4096)
	for {
		n, err := conn.Read(buf)
		im.mu.Lock()
		im.received = append(im.received, buf[:n]...)
		im.mu.Unlock()
		if err != nil {
			return
		}
	}
}

func (im *impostor) addr() string { return im.ln.Addr().String() }

// present makes the impostor present cert from now on and forgets what it saw so far.
func (im *impostor) present(cert *tls.Certificate) {
	im.mu.Lock()
	defer im.mu.Unlock()
	im.cert.Store(cert)
	im.attempts, im.completed, im.received = 0, 0, nil
}

func (im *impostor) stats() (attempts, completed int, received []byte) {
	im.mu.Lock()
	defer im.mu.Unlock()
	return im.attempts, im.completed, append([]byte(nil), im.received...)
}

// waitAttempts waits until n handshakes were attempted since present.
func (im *impostor) waitAttempts(t *testing.T, n int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if a, _, _ := im.stats(); a >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the impostor at %s saw fewer than %d handshake attempts in %s", im.addr(), n, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wantNothingReceived checks that no handshake with the impostor completed and no byte reached
// it: its callers refused it during the handshake.
func (im *impostor) wantNothingReceived(t *testing.T) {
	t.Helper()
	attempts, completed, received := im.stats()
	if completed != 0 || len(received) != 0 {
		t.Fatalf("the impostor completed %d of %d handshakes and received %d bytes: %.200q", completed, attempts, len(received), received)
	}
	t.Logf("the impostor saw %d handshake attempts, none completed, nothing received", attempts)
}

// servingCertAs issues with ca a certificate naming id that may serve TLS (server and client
// authentication), whatever id's role: what pki.IssueLeaf no longer makes for clients.
func servingCertAs(t *testing.T, ca *pki.CA, id identity.Identity) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 100))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "impostor " + id.String(), Organization: []string{"paygate"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id.URI()},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// sideProc is a paygate process a test runs beside its cluster, e.g. a second gateway pointed
// at an impostor. It is killed when the test ends.
type sideProc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func startSideProc(t *testing.T, c *cluster.Cluster, name string, args []string) *sideProc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	p := &sideProc{name: name, cmd: exec.Command(c.Bin, args...), log: logPath, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		f.Close()
		t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			data, _ := os.ReadFile(p.log)
			lines := strings.Split(strings.TrimSpace(string(data)), "\n")
			t.Logf("---- last lines of %s\n%s", name, strings.Join(lines[max(0, len(lines)-30):], "\n"))
		}
	})
	return p
}

func (p *sideProc) stop() {
	select {
	case <-p.done:
	default:
		p.cmd.Process.Kill()
		<-p.done
	}
}

// waitServing waits until the health service at addr answers SERVING to hc.
func (p *sideProc) waitServing(t *testing.T, hc connect.HTTPClient, addr string) {
	t.Helper()
	health := grpchealth.NewClient(hc, "https://"+addr, connect.WithGRPC())
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-p.done:
			t.Fatalf("%s exited while starting", p.name)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := health.Check(ctx, &grpchealth.CheckRequest{})
		cancel()
		if err == nil && resp.Status == grpchealth.StatusServing {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not serving at %s after 30s: %v", p.name, addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitLog waits until a line of the process's log contains every one of subs.
func (p *sideProc) waitLog(t *testing.T, d time.Duration, subs ...string) string {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if f, err := os.Open(p.log); err == nil {
			sc := bufio.NewScanner(f)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				line := sc.Text()
				found := true
				for _, s := range subs {
					found = found && strings.Contains(line, s)
				}
				if found {
					f.Close()
					return line
				}
			}
			f.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s logged no line with %q in %s", p.name, subs, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// withArgs returns a copy of a paygate command line with the values of the flags in set
// replaced, and the --bank NAME=ADDR entries of the banks in banks pointed at those addresses.
func withArgs(args []string, set map[string]string, banks map[string]string) []string {
	out := append([]string(nil), args...)
	for i := 0; i+1 < len(out); i++ {
		if v, ok := set[out[i]]; ok {
			out[i+1] = v
		}
		if out[i] == "--bank" {
			name, _, _ := strings.Cut(out[i+1], "=")
			if a, ok := banks[name]; ok {
				out[i+1] = name + "=https://" + a
			}
		}
	}
	return out
}

// withoutFlag returns args without flag and its value.
func withoutFlag(args []string, flag string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		if args[i] == flag && i+1 < len(args) {
			i++
			continue
		}
		out = append(out, args[i])
	}
	return out
}

// pinningCases returns TestSecurityMatrix's cases for impostor servers: callers check the role of the server they reach.
//
// A second gateway process runs beside the cluster's, with the cluster's certificates and banks
// except that it dials an impostor as bank1. Another impostor stands where a gateway should be,
// for `paygate login`, the Go client and a bank asking for a decision. Each impostor is a TLS
// server with a certificate of the cluster's own CA; every caller must refuse it during the
// handshake, before it sends anything.
func pinningCases(t *testing.T, m *secMatrix) []secCase {
	c, e := m.c, m.e
	cli := loadPair(t, c, "client-cli")
	gatewayCert := loadPair(t, c, "gateway")
	bank1Cert := loadPair(t, c, "bank-bank1")
	bank2Cert := loadPair(t, c, "bank-bank2")
	// A client certificate that may serve TLS: pki makes client certificates for client
	// authentication only, so an attacker holding one has to get it issued elsewhere.
	cliServing := servingCertAs(t, m.ourCA, identity.Identity{Role: identity.RoleClient, Name: "cli"})

	// The second gateway, with bank1 at an impostor's address.
	fakeBank1 := newImpostor(t, cli)
	gw2Addr := cluster.FreePort(t)
	gw2 := startSideProc(t, c, "gateway-impostor-bank1", withArgs(c.GatewayArgs(),
		map[string]string{"--listen": gw2Addr, "--web": cluster.FreePort(t), "--data": filepath.Join(t.TempDir(), "gateway")},
		map[string]string{"bank1": fakeBank1.addr()}))
	gw2.waitServing(t, e.httpClient(cli), gw2Addr)
	gw2Auth := gatewayv1connect.NewAuthServiceClient(e.httpClient(cli), "https://"+gw2Addr, connect.WithGRPC())
	resp, err := gw2Auth.Login(m.ctx(), connect.NewRequest(&gatewayv1.LoginRequest{Username: "alice", Password: passwords["alice"]}))
	if err != nil {
		t.Fatalf("login at the second gateway: %v", err)
	}
	gw2Pay := gatewayv1connect.NewPaymentServiceClient(e.httpClient(cli), "https://"+gw2Addr, connect.WithGRPC(),
		connect.WithInterceptors(cluster.Bearer(resp.Msg.GetToken())))

	impostorBank := func(cert *tls.Certificate, wantLog string) func(t *testing.T) {
		return func(t *testing.T) {
			fakeBank1.present(cert)
			// The gateway's health probe dials bank1 every second.
			fakeBank1.waitAttempts(t, 1, 10*time.Second)
			// A payment within bank1: only the impostor could take part in it.
			presp, err := gw2Pay.ExecutePayment(m.ctx(), connect.NewRequest(&gatewayv1.ExecutePaymentRequest{
				PaymentId: newID(), FromAccount: "bank1-1001", ToAccount: "bank1-1002", Amount: 100, Currency: "USD"}))
			if err == nil && presp.Msg.GetPayment().GetStatus() == gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
				t.Fatalf("a payment at bank1 succeeded with an impostor as bank1: %v", presp.Msg.GetPayment())
			}
			t.Logf("payment refused: %v %v", err, presp.Msg.GetPayment().GetFailureMessage())
			fakeBank1.waitAttempts(t, 2, 10*time.Second)
			fakeBank1.wantNothingReceived(t)
			if wantLog != "" {
				gw2.waitLog(t, 10*time.Second, wantLog)
			}
		}
	}

	// The impostor gateway.
	fakeGateway := newImpostor(t, cliServing)
	cliLogin := func(cert *tls.Certificate, wantErr string) func(t *testing.T) {
		return func(t *testing.T) {
			fakeGateway.present(cert)
			out, errOut, code := newCLIUser(t, c).run("login", "--gateway", fakeGateway.addr(), "--password", passwords["alice"], "alice")
			fakeGateway.waitAttempts(t, 1, time.Second)
			fakeGateway.wantNothingReceived(t)
			if code == 0 || !strings.Contains(errOut, wantErr) {
				t.Fatalf("paygate login at an impostor: exit %d, want a failure saying %q\nstdout: %s\nstderr: %s", code, wantErr, out, errOut)
			}
			if strings.Contains(out+errOut, passwords["alice"]) {
				t.Errorf("the output shows the password:\n%s%s", out, errOut)
			}
			t.Logf("paygate login: %s", strings.TrimSpace(errOut))
		}
	}
	goLogin := func(cert *tls.Certificate, wantErr string) func(t *testing.T) {
		return func(t *testing.T) {
			fakeGateway.present(cert)
			cl, err := client.New(fakeGateway.addr(), client.WithTLSDir(c.CertDir), client.WithTimeout(10*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			_, err = cl.Login(m.ctx(), "alice", passwords["alice"])
			fakeGateway.waitAttempts(t, 1, time.Second)
			fakeGateway.wantNothingReceived(t)
			if err == nil || !strings.Contains(err.Error(), wantErr) || !errors.Is(err, client.ErrNotGateway) {
				t.Fatalf("Login at an impostor: %v; want a client.ErrNotGateway saying %q", err, wantErr)
			}
			t.Logf("Login: %v", err)
		}
	}

	return []secCase{
		// (a) The gateway dials bank1 and reaches a server of the same CA that is not bank1.
		{"impostor bank1 with a client certificate", impostorBank(cli, "certificate specifies an incompatible key usage")},
		{"impostor bank1 with a client certificate that may serve", impostorBank(cliServing, "")},
		{"impostor bank1 with bank2's certificate", impostorBank(bank2Cert, "")},
		{"impostor bank1 with the gateway's certificate", impostorBank(gatewayCert, "")},
		// (b) A user's password goes only to the gateway.
		{"paygate login at an impostor with a client certificate that may serve", cliLogin(cliServing,
			"server certificate is spiffe://paygate/client/cli, not the gateway (spiffe://paygate/gateway)")},
		{"paygate login at an impostor with a bank's certificate", cliLogin(bank1Cert,
			"server certificate is spiffe://paygate/bank/bank1, not the gateway")},
		{"paygate login at an impostor with a client certificate", cliLogin(cli, "incompatible key usage")},
		{"Go client login at an impostor with a client certificate that may serve", goLogin(cliServing,
			"server certificate is spiffe://paygate/client/cli, not the gateway")},
		{"Go client login at an impostor with a bank's certificate", goLogin(bank2Cert,
			"server certificate is spiffe://paygate/bank/bank2, not the gateway")},
		// A bank asks only the gateway for the decision on a transaction in doubt: another bank,
		// or a client, must not learn or dictate the outcome.
		{"a bank asks an impostor coordinator for a decision", func(t *testing.T) {
			fakeGateway.present(bank2Cert)
			bankAddr := cluster.FreePort(t)
			// Its own ledger, a SQLite file, whatever the cluster's stores are: the transaction
			// it leaves in doubt on purpose must not be a hold in the cluster's bank1.
			b := startSideProc(t, c, "bank1-impostor-gateway", withArgs(withoutFlag(c.BankArgs("bank1"), "--database-url"),
				map[string]string{"--listen": bankAddr, "--data": filepath.Join(t.TempDir(), "bank1"),
					"--gateway": "https://" + fakeGateway.addr(), "--resolve-after": "200ms"}, nil))
			asGateway := e.httpClient(gatewayCert)
			b.waitServing(t, asGateway, bankAddr)
			bank := bankv1connect.NewBankServiceClient(asGateway, "https://"+bankAddr, connect.WithGRPC())
			txn := newID()
			vote, err := bank.PrepareTransaction(m.ctx(), connect.NewRequest(&bankv1.PrepareTransactionRequest{
				TransactionId: txn, Deadline: timestampIn(300 * time.Millisecond),
				Legs: []*bankv1.Leg{{AccountId: "bank1-1001", Direction: bankv1.LegDirection_LEG_DIRECTION_DEBIT, Amount: 100, Currency: "USD"}},
			}))
			if err != nil || vote.Msg.GetVote() != bankv1.Vote_VOTE_YES {
				t.Fatalf("prepare at the side bank: %v %v", vote, err)
			}
			// The resolver asks every second once the deadline is past.
			fakeGateway.waitAttempts(t, 1, 15*time.Second)
			line := b.waitLog(t, 15*time.Second, "coordinator unreachable", txn)
			fakeGateway.wantNothingReceived(t)
			if want := "server certificate is spiffe://paygate/bank/bank2, not the gateway"; !strings.Contains(line, want) {
				t.Fatalf("the bank logged %s; want the reason %q", line, want)
			}
			fakeGateway.present(cliServing)
			fakeGateway.waitAttempts(t, 1, 15*time.Second)
			b.waitLog(t, 10*time.Second, "coordinator unreachable", txn, "server certificate is spiffe://paygate/client/cli, not the gateway")
			fakeGateway.wantNothingReceived(t)
			tr, err := bank.GetTransaction(m.ctx(), connect.NewRequest(&bankv1.GetTransactionRequest{TransactionId: txn}))
			if err != nil || tr.Msg.GetTransaction().GetState() != bankv1.TransactionState_TRANSACTION_STATE_PREPARED {
				t.Fatalf("the transaction left in doubt is %v (%v); want it still prepared", tr.Msg.GetTransaction().GetState(), err)
			}
		}},
	}
}
