package bench

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/grpchealth"

	"github.com/paygate/paygate/gen/paygate/bank/v1/bankv1connect"
	"github.com/paygate/paygate/internal/audit"
	"github.com/paygate/paygate/internal/launch"
	"github.com/paygate/paygate/internal/pki"
	"github.com/paygate/paygate/internal/rpcserver"
	"github.com/paygate/paygate/services/bank"
	"github.com/paygate/paygate/services/gateway"
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
	gatewayURL string // the first gateway replica's
	// gatewayURLs are every replica's, gatewayURL first.
	gatewayURLs []string
	banks       map[string]string // bank name → https URL
	users       []user
	// balance is the opening balance of every generated account (own system), in minor units.
	balance  int64
	currency string

	clientTLS  *tls.Config // client-role certificate: calls the gateway as a user
	gatewayTLS *tls.Config // gateway-role certificate: audits the banks

	own *launch.System // the processes of a system the bench started
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
	gateways    int    // gateway replicas
	// databaseURL, when set, puts the system on PostgreSQL (launch.SystemDatabases).
	databaseURL string
}

// startOwnSystem makes certificates and fixtures under cfg.dir and starts the banks and the
// gateway replicas as separate processes of cfg.binary, each with its own SQLite store, or on
// PostgreSQL (cfg.databaseURL: the gateways share its database, each bank has <name>_<bank>).
func startOwnSystem(ctx context.Context, cfg ownSystemConfig) (*system, error) {
	s := &system{mode: "processes", dir: cfg.dir, banks: map[string]string{}, balance: cfg.balance, currency: "USD"}
	names := make([]string, cfg.banks)
	for i := range names {
		names[i] = fmt.Sprintf("bank%d", i+1)
	}

	// Fixtures: user NNN has account <bank>-<10000+NNN> at every bank.
	usersFile := map[string]gateway.UserFixture{}
	for i := range cfg.users {
		u := user{Name: fmt.Sprintf("user%03d", i), Password: fmt.Sprintf("bench-password-%03d", i)}
		for _, b := range names {
			u.Accounts = append(u.Accounts, fmt.Sprintf("%s-%d", b, 10000+i))
		}
		s.users = append(s.users, u)
		usersFile[u.Name] = gateway.UserFixture{Password: u.Password, Accounts: u.Accounts}
	}
	accounts := map[string]string{}
	for bi, b := range names {
		f := bank.AccountsFile{Currency: s.currency}
		for _, u := range s.users {
			f.Accounts = append(f.Accounts, bank.AccountFixture{ID: u.Accounts[bi], Holder: u.Name,
				Balance: json.RawMessage(strconv.Quote(fmtMinor(cfg.balance)))})
		}
		data, err := marshalFixture(f)
		if err != nil {
			return nil, err
		}
		accounts[b] = data
	}
	users, err := marshalFixture(usersFile)
	if err != nil {
		return nil, err
	}

	var gatewayDB string
	var bankDB func(string) string
	if cfg.databaseURL != "" {
		gw, banks, err := launch.SystemDatabases(ctx, cfg.databaseURL, names)
		if err != nil {
			return nil, err
		}
		gatewayDB, bankDB = gw, func(b string) string { return banks[b] }
	}
	gateways := map[string]bool{}
	for i := range max(cfg.gateways, 1) {
		gateways[launch.ReplicaName(i)] = true
	}
	procs := func(name string) int {
		if gateways[name] {
			return 0
		}
		return cfg.bankProcs
	}
	own, err := launch.New(launch.Options{
		Dir: cfg.dir, Bin: cfg.binary, Banks: names, Accounts: accounts, Users: users,
		Gateways: cfg.gateways, GatewayDatabaseURL: gatewayDB, BankDatabaseURL: bankDB,
		Hosts:      []string{"127.0.0.1", "localhost"},
		TxnTimeout: cfg.txnTimeout, BcryptCost: 4, LogLevel: "warn",
		ServerArgs: cfg.serverArgs, BankArgs: cfg.bankArgs, GatewayArgs: cfg.gatewayArgs,
		Environ: func(name string) []string {
			return childEnv(os.Environ(), name, cfg.profileDir, procs(name))
		},
		// A child must not outlive the bench if the bench is killed.
		StopWithParent: true,
	})
	if err != nil {
		return nil, err
	}
	s.own = own
	s.gatewayURL = "https://" + own.GatewayAddr
	for _, a := range own.GatewayAddrs {
		s.gatewayURLs = append(s.gatewayURLs, "https://"+a)
	}
	for _, b := range names {
		s.banks[b] = "https://" + own.BankAddrs[b]
	}
	certDir := own.CertDir
	if err := s.loadTLS(pki.CAFile(certDir), filepath.Join(certDir, "client-cli.pem"), filepath.Join(certDir, "client-cli-key.pem"),
		filepath.Join(certDir, "gateway.pem"), filepath.Join(certDir, "gateway-key.pem")); err != nil {
		own.Close(false)
		return nil, err
	}
	// Every child must serve before the bench starts, and the gateway must report every bank
	// SERVING, so that the first payments are not refused as "bank unavailable".
	err = own.Start(ctx)
	for _, b := range names {
		if err != nil {
			break
		}
		err = own.WaitBankHealth(ctx, b, grpchealth.StatusServing, 30*time.Second)
	}
	if err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// marshalFixture formats a fixtures file.
func marshalFixture(v any) (string, error) {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return "", err
	}
	return string(append(data, '\n')), nil
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

// stop ends the children gracefully (SIGTERM, so that CPU profiles are written), the gateway
// first, then the banks, killing any that take more than 15 seconds.
func (s *system) stop() {
	if s.own == nil {
		return
	}
	s.own.Shutdown(launch.StopTimeout)
	s.own.Close(false)
}

// exited returns the names of children that are no longer running.
func (s *system) exited() []string {
	if s.own == nil {
		return nil
	}
	return s.own.Exited()
}

// devInfo is the part of a `paygate dev` DIR/dev.json the bench reads.
type devInfo struct {
	API   string            `json:"api"`
	APIs  []string          `json:"apis"`
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
	apis := info.APIs
	if len(apis) == 0 {
		apis = []string{info.API}
	}
	for _, a := range apis {
		if !strings.HasPrefix(a, "https://") {
			a = "https://" + a
		}
		s.gatewayURLs = append(s.gatewayURLs, a)
	}
	s.gatewayURL = s.gatewayURLs[0]
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
	// audit is the audit itself, for the conservation check (audit.Conserved).
	audit audit.Ledger
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
	return ledger{Accounts: len(l.Accounts), Total: l.Total, Held: l.Held, Pending: l.Pending, audit: l}
}

// waitSettled audits until no bank holds a hold or a pending credit, up to d.
func (s *system) waitSettled(ctx context.Context, hc *http.Client, d time.Duration) (ledger, error) {
	l, err := audit.WaitSettled(ctx, s.bankClients(hc), d)
	return summarize(l), err
}
