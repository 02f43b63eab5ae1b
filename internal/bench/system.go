package bench

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"

	"github.com/paygate/paygate/gen/paygate/bank/v1/bankv1connect"
	"github.com/paygate/paygate/internal/audit"
	"github.com/paygate/paygate/internal/pki"
	"github.com/paygate/paygate/internal/rpcserver"
)

// user is a user the bench pays as.
type user struct {
	Name     string
	Password string
	Accounts []string
}

// system is the paygate the bench runs against: one it started, or a running `paygate dev`.
type system struct {
	mode       string // "processes" or "dev"
	dir        string // the bench's temporary directory (own system)
	gatewayURL string
	banks      map[string]string // bank name → https URL
	users      []user
	// balance is the opening balance of every generated account (own system), in minor units.
	balance  int64
	currency string

	clientTLS  *tls.Config // client-role certificate: calls the gateway as a user
	gatewayTLS *tls.Config // gateway-role certificate: audits the banks

	procs []*child
}

// child is a server process of the bench's own system.
type child struct {
	name    string
	cmd     *exec.Cmd
	done    chan struct{}
	logPath string
}

// ownSystemConfig says how to start a system.
type ownSystemConfig struct {
	binary      string
	dir         string
	banks       int
	users       int
	balance     int64
	txnTimeout  time.Duration
	serverArgs  []string
	bankArgs    []string
	gatewayArgs []string
	bankProcs   int    // GOMAXPROCS of each bank; 0 leaves it to the environment
	profileDir  string // when set, children write CPU profiles there (PAYGATE_CPUPROFILE)
	log         io.Writer
}

// startOwnSystem makes certificates and fixtures under cfg.dir and starts the banks and the
// gateway as separate processes of cfg.binary, each with its own SQLite store.
func startOwnSystem(ctx context.Context, cfg ownSystemConfig) (*system, error) {
	s := &system{mode: "processes", dir: cfg.dir, banks: map[string]string{}, balance: cfg.balance, currency: "USD"}
	names := make([]string, cfg.banks)
	for i := range names {
		names[i] = fmt.Sprintf("bank%d", i+1)
	}
	certDir := filepath.Join(cfg.dir, "certs")
	if err := pki.Generate(certDir, pki.Options{Banks: names, Hosts: []string{"127.0.0.1", "localhost"}}); err != nil {
		return nil, err
	}
	if err := s.loadTLS(pki.CAFile(certDir), filepath.Join(certDir, "client-cli.pem"), filepath.Join(certDir, "client-cli-key.pem"),
		filepath.Join(certDir, "gateway.pem"), filepath.Join(certDir, "gateway-key.pem")); err != nil {
		return nil, err
	}

	// Fixtures: user NNN has account <bank>-<10000+NNN> at every bank.
	fixDir := filepath.Join(cfg.dir, "fixtures")
	if err := os.MkdirAll(fixDir, 0o755); err != nil {
		return nil, err
	}
	type account struct {
		ID      string `json:"id"`
		Holder  string `json:"holder"`
		Balance string `json:"balance"`
	}
	type userFixture struct {
		Password string   `json:"password"`
		Accounts []string `json:"accounts"`
	}
	usersFile := map[string]userFixture{}
	for i := range cfg.users {
		u := user{Name: fmt.Sprintf("user%03d", i), Password: fmt.Sprintf("bench-password-%03d", i)}
		for _, b := range names {
			u.Accounts = append(u.Accounts, fmt.Sprintf("%s-%d", b, 10000+i))
		}
		s.users = append(s.users, u)
		usersFile[u.Name] = userFixture{Password: u.Password, Accounts: u.Accounts}
	}
	for bi, b := range names {
		var accounts []account
		for _, u := range s.users {
			accounts = append(accounts, account{ID: u.Accounts[bi], Holder: u.Name,
				Balance: fmt.Sprintf("%d.%02d", cfg.balance/100, cfg.balance%100)})
		}
		if err := writeJSON(filepath.Join(fixDir, b+"_server_accounts.json"),
			map[string]any{"currency": s.currency, "accounts": accounts}); err != nil {
			return nil, err
		}
	}
	if err := writeJSON(filepath.Join(fixDir, "user_details.json"), usersFile); err != nil {
		return nil, err
	}

	// Addresses: free loopback ports, chosen now so that banks know the gateway's and the
	// gateway the banks'.
	gwAddr, err := freePort()
	if err != nil {
		return nil, err
	}
	s.gatewayURL = "https://" + gwAddr
	bankAddr := map[string]string{}
	for _, b := range names {
		a, err := freePort()
		if err != nil {
			return nil, err
		}
		bankAddr[b] = a
		s.banks[b] = "https://" + a
	}

	common := []string{"--certs", certDir, "--log-level", "warn"}
	for _, b := range names {
		args := []string{"bank", "--name", b, "--listen", bankAddr[b],
			"--accounts", filepath.Join(fixDir, b+"_server_accounts.json"),
			"--data", filepath.Join(cfg.dir, "data", b),
			"--gateway", s.gatewayURL}
		args = append(append(append(args, common...), cfg.serverArgs...), cfg.bankArgs...)
		if err := s.start(ctx, cfg, b, args, cfg.bankProcs); err != nil {
			s.stop()
			return nil, err
		}
	}
	args := []string{"gateway", "--listen", gwAddr, "--web", "",
		"--users", filepath.Join(fixDir, "user_details.json"),
		"--data", filepath.Join(cfg.dir, "data", "gateway"),
		"--txn-timeout", cfg.txnTimeout.String(),
		"--bcrypt-cost", "4"}
	for _, b := range names {
		args = append(args, "--bank", b+"="+s.banks[b])
	}
	args = append(append(append(args, common...), cfg.serverArgs...), cfg.gatewayArgs...)
	if err := s.start(ctx, cfg, "gateway", args, 0); err != nil {
		s.stop()
		return nil, err
	}
	// Every child must serve before the bench starts; banks first (the gateway only reports
	// them healthy once it reaches them).
	for _, p := range s.procs {
		url := s.gatewayURL
		if p.name != "gateway" {
			url = s.banks[p.name]
		}
		if err := s.waitServing(ctx, p, url); err != nil {
			s.stop()
			return nil, err
		}
	}
	if err := s.waitBanksHealthy(ctx); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o600)
}

// freePort returns a loopback address whose port was free a moment ago.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func (s *system) loadTLS(ca, clientCert, clientKey, gwCert, gwKey string) error {
	var err error
	if s.clientTLS, err = pki.ClientTLS(ca, clientCert, clientKey); err != nil {
		return err
	}
	s.gatewayTLS, err = pki.ClientTLS(ca, gwCert, gwKey)
	return err
}

// childEnv is the environment of a child: the bench's, without a CPU profile request meant
// for the bench itself, plus one of its own when profiling, and GOMAXPROCS when procs > 0.
func childEnv(environ []string, name, profileDir string, procs int) []string {
	env := slices.DeleteFunc(slices.Clone(environ), func(kv string) bool {
		return strings.HasPrefix(kv, ProfileEnv+"=") || (procs > 0 && strings.HasPrefix(kv, "GOMAXPROCS="))
	})
	if profileDir != "" {
		env = append(env, ProfileEnv+"="+filepath.Join(profileDir, name+".cpu.pprof"))
	}
	if procs > 0 {
		env = append(env, "GOMAXPROCS="+strconv.Itoa(procs))
	}
	return env
}

// ProfileEnv names the environment variable that makes any paygate command write a CPU profile
// of its whole run to the file it names.
const ProfileEnv = "PAYGATE_CPUPROFILE"

// start starts a child; procs > 0 sets its GOMAXPROCS.
func (s *system) start(ctx context.Context, cfg ownSystemConfig, name string, args []string, procs int) error {
	logDir := filepath.Join(cfg.dir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return err
	}
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(cfg.binary, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = childEnv(os.Environ(), name, cfg.profileDir, procs)
	// A child must not outlive the bench if the bench is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	p := &child{name: name, cmd: cmd, done: make(chan struct{}), logPath: logPath}
	go func() {
		cmd.Wait()
		f.Close()
		close(p.done)
	}()
	s.procs = append(s.procs, p)
	return nil
}

func (s *system) waitServing(ctx context.Context, p *child, url string) error {
	hc := grpchealth.NewClient(s.httpClient(s.gatewayTLS), url, connect.WithGRPC())
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited while starting (%s):\n%s", p.name, p.cmd.ProcessState, tail(p.logPath, 20))
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := hc.Check(cctx, &grpchealth.CheckRequest{})
		cancel()
		if err == nil && resp.Status == grpchealth.StatusServing {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not serving at %s after 30s:\n%s", p.name, url, tail(p.logPath, 20))
}

// waitBanksHealthy waits until the gateway reports every bank SERVING, so that the first
// payments are not refused as "bank unavailable".
func (s *system) waitBanksHealthy(ctx context.Context) error {
	hc := grpchealth.NewClient(s.httpClient(s.clientTLS), s.gatewayURL, connect.WithGRPC())
	deadline := time.Now().Add(30 * time.Second)
	for b := range s.banks {
		for {
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			resp, err := hc.Check(cctx, &grpchealth.CheckRequest{Service: "bank/" + b})
			cancel()
			if err == nil && resp.Status == grpchealth.StatusServing {
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("the gateway does not report %s as serving after 30s", b)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// stop ends the children gracefully (SIGTERM, so that CPU profiles are written), the gateway
// first, then the banks, killing any that take more than 15 seconds.
func (s *system) stop() {
	for i := len(s.procs) - 1; i >= 0; i-- { // the gateway was started last
		p := s.procs[i]
		select {
		case <-p.done:
			continue
		default:
		}
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
	}
}

// exited returns the names of children that are no longer running.
func (s *system) exited() []string {
	var out []string
	for _, p := range s.procs {
		select {
		case <-p.done:
			out = append(out, p.name)
		default:
		}
	}
	return out
}

// devInfo is the part of a `paygate dev` DIR/dev.json the bench reads.
type devInfo struct {
	API   string            `json:"api"`
	Banks map[string]string `json:"banks"`
	Certs struct {
		CA   string `json:"ca"`
		Cert string `json:"cert"`
		Key  string `json:"key"`
	} `json:"certs"`
	Users []struct {
		Username string   `json:"username"`
		Password string   `json:"password"`
		Accounts []string `json:"accounts"`
	} `json:"users"`
}

// devSystem describes the running `paygate dev` whose directory is dir. Banks are audited with
// dir/certs/gateway.pem.
func devSystem(dir string) (*system, error) {
	data, err := os.ReadFile(filepath.Join(dir, "dev.json"))
	if err != nil {
		return nil, fmt.Errorf("--dev: %w (is `paygate dev --dir %s` running?)", err, dir)
	}
	var info devInfo
	if err := json.Unmarshal(data, &info); err != nil {
		return nil, fmt.Errorf("--dev: %s: %w", filepath.Join(dir, "dev.json"), err)
	}
	s := &system{mode: "dev", banks: map[string]string{}, currency: "USD"}
	s.gatewayURL = info.API
	if !strings.HasPrefix(s.gatewayURL, "https://") {
		s.gatewayURL = "https://" + s.gatewayURL
	}
	for n, u := range info.Banks {
		if !strings.HasPrefix(u, "https://") {
			u = "https://" + u
		}
		s.banks[n] = u
	}
	certDir := filepath.Join(dir, "certs")
	if err := s.loadTLS(info.Certs.CA, info.Certs.Cert, info.Certs.Key,
		filepath.Join(certDir, "gateway.pem"), filepath.Join(certDir, "gateway-key.pem")); err != nil {
		return nil, fmt.Errorf("--dev: %w", err)
	}
	for _, u := range info.Users {
		if len(u.Accounts) > 0 {
			s.users = append(s.users, user{Name: u.Username, Password: u.Password, Accounts: u.Accounts})
		}
	}
	if len(s.users) == 0 {
		return nil, errors.New("--dev: dev.json lists no users with accounts")
	}
	return s, nil
}

// httpClient returns a client for calls between paygate parties, as the services make them.
func (s *system) httpClient(cfg *tls.Config) *http.Client {
	return rpcserver.NewHTTPClient(cfg)
}

// ledger is an audit of every account of every bank.
type ledger struct {
	Accounts int   `json:"accounts"`
	Total    int64 `json:"total"`
	Held     int64 `json:"held"`
	Pending  int64 `json:"pending_credit"`
}

// bankClients returns clients of every bank over hc (the gateway's certificate).
func (s *system) bankClients(hc *http.Client) map[string]bankv1connect.BankServiceClient {
	out := make(map[string]bankv1connect.BankServiceClient, len(s.banks))
	for n, url := range s.banks {
		out[n] = bankv1connect.NewBankServiceClient(hc, url, rpcserver.ClientOptions()...)
	}
	return out
}

func summarize(l audit.Ledger) ledger {
	return ledger{Accounts: len(l.Accounts), Total: l.Total, Held: l.Held, Pending: l.Pending}
}

// waitSettled audits until no bank holds a hold or a pending credit, up to d.
func (s *system) waitSettled(ctx context.Context, hc *http.Client, d time.Duration) (ledger, error) {
	l, err := audit.WaitSettled(ctx, s.bankClients(hc), d)
	return summarize(l), err
}
