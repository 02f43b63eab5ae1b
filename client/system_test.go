package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"

	"github.com/paygate/paygate/fixtures"
	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	"github.com/paygate/paygate/gen/paygate/bank/v1/bankv1connect"
	"github.com/paygate/paygate/internal/identity"
	"github.com/paygate/paygate/internal/pki"
	"github.com/paygate/paygate/internal/rpcserver"
	"github.com/paygate/paygate/services/bank"
	"github.com/paygate/paygate/services/gateway"
)

// A small paygate system in this test process: three real bank servers and a real gateway on
// loopback, with the repository's fixtures, sharing one test PKI. The Examples run against one
// started by TestMain; tests that stop the gateway start their own.

var (
	// certDir is a directory as `paygate certs` makes it: ca.pem, client-cli.pem, ...
	certDir string
	// gatewayAddr is the gateway of the system the Examples use, as after `paygate dev`.
	gatewayAddr string
	// frankCode is the enrollment code of frank's account bank2-2003 in that system.
	frankCode string
)

func TestMain(m *testing.M) {
	code, err := func() (int, error) {
		dir, err := os.MkdirTemp("", "paygate-client-test-")
		if err != nil {
			return 1, err
		}
		defer os.RemoveAll(dir)
		certDir = filepath.Join(dir, "certs")
		if err := pki.Generate(certDir, pki.Options{Clients: []string{"cli"}}); err != nil {
			return 1, err
		}
		sys, err := startSystem(filepath.Join(dir, "example"))
		if err != nil {
			return 1, err
		}
		defer sys.stop()
		gatewayAddr = sys.addr
		// The code frank's bank sent him, as `paygate bank enroll` makes it.
		code, err := sys.banks["bank2"].Ledger().IssueEnrollmentCode(context.Background(), "bank2-2003", 0, time.Now())
		if err != nil {
			return 1, err
		}
		frankCode = code.Code
		return m.Run(), nil
	}()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}

type system struct {
	dir   string
	addr  string
	banks map[string]*bank.Server
	names []string
	urls  map[string]string

	mu sync.Mutex
	gw *gateway.Gateway
}

func startSystem(dir string) (*system, error) {
	s := &system{dir: dir, banks: map[string]*bank.Server{}, names: []string{"bank1", "bank2", "bank3"}}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ctx := context.Background()
	urls := map[string]string{}
	for _, name := range s.names {
		data, err := fixtures.FS.ReadFile(name + "_server_accounts.json")
		if err != nil {
			return nil, err
		}
		accounts := filepath.Join(dir, name+"_server_accounts.json")
		if err := os.WriteFile(accounts, data, 0o600); err != nil {
			return nil, err
		}
		f := pki.LeafFiles(certDir, identity.Identity{Role: identity.RoleBank, Name: name})
		srv, err := bank.NewServer(ctx, bank.ServerConfig{
			Config: bank.Config{Name: name, DataDir: filepath.Join(dir, name), AccountsFile: accounts},
			Listen: "127.0.0.1:0",
			CAFile: pki.CAFile(certDir), CertFile: f.Cert, KeyFile: f.Key,
		})
		if err == nil {
			err = srv.Start(ctx)
		}
		if err != nil {
			s.stop()
			return nil, fmt.Errorf("bank %s: %w", name, err)
		}
		s.banks[name] = srv
		urls[name] = "https://" + srv.Addr()
	}
	users, err := fixtures.FS.ReadFile("user_details.json")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "user_details.json"), users, 0o600); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.addr = ln.Addr().String()
	ln.Close()
	s.urls = urls
	if err := s.startGateway(); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

func (s *system) startGateway() error {
	gf := pki.LeafFiles(certDir, identity.Identity{Role: identity.RoleGateway})
	cfg := gateway.Config{
		Listen:             s.addr,
		Banks:              s.urls,
		UsersFile:          filepath.Join(s.dir, "user_details.json"),
		DataDir:            filepath.Join(s.dir, "gateway"),
		CAFile:             pki.CAFile(certDir),
		CertFile:           gf.Cert,
		KeyFile:            gf.Key,
		TxnTimeout:         5 * time.Second,
		BankCallTimeout:    2 * time.Second,
		HealthInterval:     50 * time.Millisecond,
		RecoveryInterval:   50 * time.Millisecond,
		BcryptCost:         4,
		LoginFailuresBurst: 100,
	}
	ctx := context.Background()
	var lastErr error
	// The address was free a moment ago; after a stop, the old listener may linger briefly.
	for range 50 {
		g, err := gateway.New(ctx, cfg)
		if err != nil {
			return err
		}
		if lastErr = g.Start(ctx); lastErr == nil {
			s.mu.Lock()
			s.gw = g
			s.mu.Unlock()
			return nil
		}
		g.Shutdown(ctx)
		time.Sleep(100 * time.Millisecond)
	}
	return lastErr
}

// waitBanksServing waits until the gateway reports every bank SERVING, so that a test's
// payments do not meet a bank the gateway has not probed yet since its start.
func (s *system) waitBanksServing(t *testing.T) {
	t.Helper()
	f := pki.LeafFiles(certDir, identity.Identity{Role: identity.RoleClient, Name: "cli"})
	tlsCfg, err := pki.ClientTLS(pki.CAFile(certDir), f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	hc := rpcserver.NewHTTPClient(tlsCfg)
	defer hc.CloseIdleConnections()
	health := grpchealth.NewClient(hc, "https://"+s.addr, connect.WithGRPC())
	deadline := time.Now().Add(20 * time.Second)
	for _, name := range s.names {
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			resp, err := health.Check(ctx, &grpchealth.CheckRequest{Service: "bank/" + name})
			cancel()
			if err == nil && resp.Status == grpchealth.StatusServing {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("gateway does not report %s serving after 20s (%v)", name, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func (s *system) stopGateway() {
	s.mu.Lock()
	g := s.gw
	s.gw = nil
	s.mu.Unlock()
	if g == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g.Shutdown(ctx)
}

func (s *system) stop() {
	s.stopGateway()
	var wg sync.WaitGroup
	for _, b := range s.banks {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			b.Shutdown(ctx)
		})
	}
	wg.Wait()
}

// newSystem starts a system of its own for t, stopped at cleanup.
func newSystem(t *testing.T) *system {
	t.Helper()
	s, err := startSystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.stop)
	return s
}

// balances returns every account's balance, read from the banks with the gateway's
// certificate, after waiting until no bank holds a hold or a pending credit.
func (s *system) settledBalances(t *testing.T) map[string]int64 {
	t.Helper()
	gf := pki.LeafFiles(certDir, identity.Identity{Role: identity.RoleGateway})
	tlsCfg, err := pki.ClientTLS(pki.CAFile(certDir), gf.Cert, gf.Key)
	if err != nil {
		t.Fatal(err)
	}
	hc := rpcserver.NewHTTPClient(tlsCfg)
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, unsettled, err := s.audit(hc)
		if err == nil && !unsettled {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("ledger not settled after 20s (err %v)", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *system) audit(hc connect.HTTPClient) (map[string]int64, bool, error) {
	out := map[string]int64{}
	unsettled := false
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, name := range s.names {
		bc := bankv1connect.NewBankServiceClient(hc, "https://"+s.banks[name].Addr(), connect.WithGRPC())
		resp, err := bc.ListAccounts(ctx, connect.NewRequest(&bankv1.ListAccountsRequest{PageSize: 1000}))
		if err != nil {
			return nil, false, err
		}
		for _, a := range resp.Msg.GetAccounts() {
			b := a.GetBalance()
			out[a.GetAccountId()] = b.GetBalance()
			if b.GetHeld() != 0 || b.GetPendingCredit() != 0 {
				unsettled = true
			}
			if b.GetBalance() < 0 || b.GetAvailable() < 0 {
				return nil, false, errors.New("overdraft at " + a.GetAccountId())
			}
		}
	}
	return out, unsettled, nil
}

func total(m map[string]int64) int64 {
	var t int64
	for _, v := range m {
		t += v
	}
	return t
}
