// Package cluster runs a whole paygate system as real processes for end-to-end tests: the
// paygate binary built from this module, one process per bank and one gateway (or several
// gateway replicas sharing a PostgreSQL database), each with its own store (SQLite, or
// PostgreSQL), talking mTLS with certificates made for the test. Tests kill, pause and restart
// processes and then audit the ledgers through the banks' APIs.
//
// The backend is SQLite unless a test asks for PostgreSQL (Options.Backend, Options.Gateways)
// or the environment does: PAYGATE_TEST_BACKEND=postgres puts the gateway and every bank of
// every cluster on fresh PostgreSQL databases of their own (on PAYGATE_TEST_DATABASE_URL's
// server, see internal/pgdb/pgtest), dropped when the test ends, so that the same end-to-end
// tests run on both backends. A test on PostgreSQL skips when no server can be reached.
//
// The processes are run by internal/launch; this package is its layer for tests: defaults
// for tests (the repository's fixtures, short timeouts, JSON logs at debug level), a failure
// as t.Fatal, everything stopped when the test ends, and the last lines of every log when it
// failed. Its helpers that fail the test must be called from the test's goroutine.
package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"

	"github.com/paygate/paygate/client"
	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	"github.com/paygate/paygate/gen/paygate/bank/v1/bankv1connect"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
	"github.com/paygate/paygate/internal/audit"
	"github.com/paygate/paygate/internal/launch"
	"github.com/paygate/paygate/internal/pgdb/pgtest"
)

// TB is the test a cluster belongs to: *testing.T or *testing.B.
type TB = testing.TB

// Backend is where the servers keep their stores.
type Backend string

const (
	// BackendDefault is the environment's: PAYGATE_TEST_BACKEND, or SQLite when it is unset.
	BackendDefault Backend = ""
	// SQLite gives every process its SQLite file under its data directory.
	SQLite Backend = "sqlite"
	// Postgres gives the gateway (all its replicas) one fresh PostgreSQL database and each bank
	// one of its own.
	Postgres Backend = "postgres"
)

// BackendEnv names the environment variable that sets the backend of the clusters that do not
// choose one: "sqlite" (the default) or "postgres".
const BackendEnv = "PAYGATE_TEST_BACKEND"

// EnvBackend returns the backend PAYGATE_TEST_BACKEND asks for, SQLite when it is unset.
func EnvBackend() (Backend, error) {
	switch v := Backend(strings.ToLower(os.Getenv(BackendEnv))); v {
	case "", SQLite:
		return SQLite, nil
	case Postgres, "postgresql", "pg":
		return Postgres, nil
	default:
		return "", fmt.Errorf("%s=%q: want sqlite or postgres", BackendEnv, v)
	}
}

// ModuleRoot returns the directory of this module's go.mod.
func ModuleRoot() (string, error) { return launch.ModuleRoot() }

// Binary builds the paygate command once per test process (per set of build tags) and returns
// its path. The crash-point tests build with the "crashpoints" tag.
func Binary(t TB, tags ...string) string {
	t.Helper()
	bin, err := launch.Build(tags...)
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// Options configure a cluster.
type Options struct {
	// Banks are the bank names; default bank1, bank2, bank3.
	Banks []string
	// Accounts maps a bank to its accounts file content; default: the repository's fixtures.
	Accounts map[string]string
	// Users is the users file content; default: the repository's fixtures/user_details.json.
	Users string
	// TxnTimeout is the gateway's --txn-timeout; default 5s (tests keep it short).
	TxnTimeout time.Duration
	// ResolveAfter is the banks' grace period past a deadline before asking GetDecision;
	// default 1s.
	ResolveAfter time.Duration
	// Tags are build tags of the binary, e.g. "crashpoints".
	Tags []string
	// GatewayArgs are extra gateway flags.
	GatewayArgs []string
	// BankDatabaseURL, when set, gives each bank its PostgreSQL database (--database-url) by
	// bank name; a bank it returns "" for keeps its SQLite ledger (or, on the Postgres
	// backend, gets a fresh database).
	BankDatabaseURL func(bank string) string
	// Backend is where the stores are: BackendDefault follows PAYGATE_TEST_BACKEND, except
	// that a cluster with DataDisks stays on SQLite (a full disk under a data directory is a
	// fault of the SQLite stores) and one with Gateways > 1 is on PostgreSQL.
	Backend Backend
	// Gateways is the number of gateway replicas, default 1: "gateway", "gateway2"... (Names).
	// More than one need the Postgres backend.
	Gateways int
	// GatewayDatabaseURL is the gateway's PostgreSQL database; default, on the Postgres
	// backend, a fresh one.
	GatewayDatabaseURL string
	// LeaseTTL is the gateways' --lease-ttl; default 2s on PostgreSQL (tests keep it short).
	LeaseTTL time.Duration
	// Bin is the paygate binary to run; default: built from this module by Binary.
	Bin string
	// BankAddrs are the banks' listen addresses ("127.0.0.1:port"); default: free ports.
	BankAddrs map[string]string
	// GatewayBankAddrs overrides, per bank, the address ("host:port") the gateway dials for it,
	// e.g. a faultproxy in front of the bank. Banks not in it are dialled directly.
	GatewayBankAddrs map[string]string
	// Env is extra environment of the first start of a process, by name ("gateway",
	// "gateway2"... or a bank name), e.g. {"bank1": {"PAYGATE_CRASH_AT=bank.prepare.after_persist"}}.
	Env map[string][]string
	// DataDisks mounts, per process name, a tmpfs of that many bytes at the process's data
	// directory before it starts, for tests that make its disk full (Cluster.Disk). Mounting
	// needs root or CAP_SYS_ADMIN; check TmpfsAvailable first.
	DataDisks map[string]int64
}

// Cluster is a running system.
type Cluster struct {
	t       TB
	sys     *launch.System
	Bin     string
	Dir     string
	CertDir string
	Root    string

	// GatewayAddr and WebAddr are the first gateway replica's ("gateway"); GatewayAddrs and
	// WebAddrs every replica's, in the order of GatewayNames.
	GatewayAddr  string
	WebAddr      string
	GatewayAddrs []string
	WebAddrs     []string
	BankAddrs    map[string]string
	// Backend is where the stores are (SQLite or Postgres, resolved).
	Backend Backend

	httpClient *http.Client // client-role certificate: calls the gateway as a user
}

// Proc is one running paygate process.
type Proc = launch.Proc

// FreePort returns a loopback address with a port that was free a moment ago. Ports come from
// below the kernel's ephemeral range (32768 and up by default on Linux), so that an outgoing
// connection cannot take one before its server binds it, and no port is handed out twice in a
// process, so that two servers of one test never get the same one.
func FreePort(t TB) string {
	t.Helper()
	addr, err := launch.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// New makes certificates and fixtures in a temporary directory, starts every bank and the
// gateway, and waits until all are serving. Everything is stopped when the test ends.
func New(t TB, opts Options) *Cluster {
	t.Helper()
	if len(opts.Banks) == 0 {
		opts.Banks = []string{"bank1", "bank2", "bank3"}
	}
	if opts.TxnTimeout == 0 {
		opts.TxnTimeout = 5 * time.Second
	}
	if opts.ResolveAfter == 0 {
		opts.ResolveAfter = time.Second
	}
	// The module root is needed for the default binary and fixtures only.
	root, rootErr := ModuleRoot()
	fixture := func(name string) string {
		t.Helper()
		if rootErr != nil {
			t.Fatal(rootErr)
		}
		data, err := os.ReadFile(filepath.Join(root, "fixtures", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	accounts := map[string]string{}
	for _, b := range opts.Banks {
		content, ok := opts.Accounts[b]
		if !ok {
			content = fixture(b + "_server_accounts.json")
		}
		accounts[b] = content
	}
	users := opts.Users
	if users == "" {
		users = fixture("user_details.json")
	}
	backend := opts.Backend
	if backend == BackendDefault {
		var err error
		switch {
		case opts.Gateways > 1:
			backend = Postgres
		case len(opts.DataDisks) > 0:
			backend = SQLite
		default:
			if backend, err = EnvBackend(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if opts.Gateways > 1 && backend != Postgres {
		t.Fatalf("cluster: %d gateway replicas need the Postgres backend", opts.Gateways)
	}
	bankDB := opts.BankDatabaseURL
	gatewayDB := opts.GatewayDatabaseURL
	if backend == Postgres {
		prefix := "paygate_e2e_"
		if gatewayDB == "" {
			gatewayDB = pgtest.NewDatabase(t, prefix+"gw_")
		}
		urls := map[string]string{}
		for _, b := range opts.Banks {
			if opts.BankDatabaseURL != nil {
				if u := opts.BankDatabaseURL(b); u != "" {
					urls[b] = u
					continue
				}
			}
			urls[b] = pgtest.NewDatabase(t, prefix+b+"_")
		}
		bankDB = func(b string) string { return urls[b] }
		t.Logf("cluster: stores on PostgreSQL, the gateway's %s, the banks' %v", launch.Redact(gatewayDB), redactAll(urls))
		if opts.LeaseTTL == 0 {
			opts.LeaseTTL = 2 * time.Second
		}
	}
	bin := opts.Bin
	if bin == "" {
		bin = Binary(t, opts.Tags...)
	}
	sys, err := launch.New(launch.Options{
		Dir:                t.TempDir(),
		Bin:                bin,
		Banks:              opts.Banks,
		Accounts:           accounts,
		Users:              users,
		Clients:            []string{"cli", "other"},
		TxnTimeout:         opts.TxnTimeout,
		ResolveAfter:       opts.ResolveAfter,
		BcryptCost:         4,
		LogFormat:          "json",
		LogLevel:           "debug",
		Web:                true,
		BankAddrs:          opts.BankAddrs,
		GatewayBankAddrs:   opts.GatewayBankAddrs,
		GatewayArgs:        opts.GatewayArgs,
		BankDatabaseURL:    bankDB,
		Gateways:           opts.Gateways,
		GatewayDatabaseURL: gatewayDB,
		LeaseTTL:           opts.LeaseTTL,
		Env:                opts.Env,
		DataDisks:          opts.DataDisks,
	})
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{t: t, sys: sys, Bin: sys.Bin, Dir: sys.Dir, CertDir: sys.CertDir, Root: root,
		GatewayAddr: sys.GatewayAddr, WebAddr: sys.WebAddr, GatewayAddrs: sys.GatewayAddrs, WebAddrs: sys.WebAddrs,
		BankAddrs: sys.BankAddrs, Backend: backend, httpClient: sys.UserHTTP()}
	t.Cleanup(c.stopAll)
	if err := sys.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return c
}

// CertPath returns the path of a file made by pki.Generate, e.g. "client-cli.pem".
func (c *Cluster) CertPath(name string) string { return c.sys.CertPath(name) }

// BankArgs returns the command line of bank name.
func (c *Cluster) BankArgs(name string) []string { return c.sys.BankArgs(name) }

// BankDataDir returns the --data directory of bank name (its ledger is <name>.db in it).
func (c *Cluster) BankDataDir(name string) string { return c.sys.DataDir(name) }

// EnrollmentCode issues a new enrollment code for account at bank, as an operator does, with
// `paygate bank enroll` against the bank's data directory (or its database), and returns it.
func (c *Cluster) EnrollmentCode(bank, account string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := []string{"bank", "enroll", "--name", bank, "--account", account, "--data", c.BankDataDir(bank), "--json"}
	if u := c.sys.BankDatabaseURL(bank); u != "" {
		args = append(args, "--database-url", u)
	}
	cmd := exec.CommandContext(ctx, c.Bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("paygate bank enroll --name %s --account %s: %v: %s", bank, account, err, stderr.String())
	}
	var res struct {
		Code string `json:"code"`
	}
	if err := json.Unmarshal(out, &res); err != nil || res.Code == "" {
		return "", fmt.Errorf("paygate bank enroll: unexpected output %q (%v)", out, err)
	}
	return res.Code, nil
}

// GatewayArgs returns the gateway's command line. Banks in unreachable are given an address
// where nothing listens: the gateway cannot reach them, though they can reach it.
func (c *Cluster) GatewayArgs(unreachable ...string) []string {
	c.t.Helper()
	args, err := c.sys.GatewayArgs(unreachable...)
	if err != nil {
		c.t.Fatal(err)
	}
	return args
}

// must fails the test if err is set, and returns p otherwise.
func (c *Cluster) must(p *Proc, err error) *Proc {
	c.t.Helper()
	if err != nil {
		c.t.Fatal(err)
	}
	return p
}

// StartBank starts bank name (again) with extra environment, e.g. "PAYGATE_CRASH_AT=...", and
// waits until it serves.
func (c *Cluster) StartBank(name string, env ...string) *Proc {
	c.t.Helper()
	return c.must(c.sys.StartBank(context.Background(), name, env...))
}

// StartBankNoWait starts bank name without waiting for it to serve.
func (c *Cluster) StartBankNoWait(name string, env ...string) *Proc {
	c.t.Helper()
	return c.must(c.sys.StartBankNoWait(name, env...))
}

// StartGateway starts the gateway (again) with extra environment and waits until it serves.
func (c *Cluster) StartGateway(env ...string) *Proc {
	c.t.Helper()
	return c.must(c.sys.StartGateway(context.Background(), env...))
}

// StartGatewayPartitioned starts the gateway unable to reach the banks named in unreachable
// (a one-way partition: those banks still reach the gateway).
func (c *Cluster) StartGatewayPartitioned(unreachable []string, env ...string) *Proc {
	c.t.Helper()
	return c.must(c.sys.StartGatewayPartitioned(context.Background(), unreachable, env...))
}

// StartGatewayNoWait starts the gateway without waiting for it to serve.
func (c *Cluster) StartGatewayNoWait(env ...string) *Proc {
	c.t.Helper()
	return c.must(c.sys.StartGatewayNoWait(env...))
}

// StartReplica starts gateway replica name ("gateway2"...) again with extra environment and
// waits until it serves.
func (c *Cluster) StartReplica(name string, env ...string) *Proc {
	c.t.Helper()
	return c.must(c.sys.StartReplica(context.Background(), name, env...))
}

// StartReplicaNoWait starts gateway replica name without waiting for it to serve.
func (c *Cluster) StartReplicaNoWait(name string, env ...string) *Proc {
	c.t.Helper()
	return c.must(c.sys.StartReplicaNoWait(name, env...))
}

// GatewayNames returns the process names of the gateway replicas: "gateway", "gateway2"...
func (c *Cluster) GatewayNames() []string { return c.sys.GatewayNames() }

// GatewayAddrOf returns the API address of gateway replica name.
func (c *Cluster) GatewayAddrOf(name string) string { return c.sys.GatewayAddrOf(name) }

// GatewayList returns every replica's API address, comma-separated, as clients take it
// (PAYGATE_GATEWAY, client.New).
func (c *Cluster) GatewayList() string { return c.sys.GatewayList() }

// GatewayDatabaseURL returns the gateways' PostgreSQL database, or "" on SQLite.
func (c *Cluster) GatewayDatabaseURL() string { return c.sys.GatewayDatabaseURL() }

// BankDatabaseURL returns bank name's PostgreSQL database, or "" when it is on SQLite.
func (c *Cluster) BankDatabaseURL(name string) string { return c.sys.BankDatabaseURL(name) }

// Names returns the names of the processes: the banks, then the gateway replicas.
func (c *Cluster) Names() []string { return c.sys.Names() }

// Proc returns the process named name (a gateway replica's or a bank's).
func (c *Cluster) Proc(name string) *Proc { return c.sys.Proc(name) }

// Kill sends SIGKILL to the process and waits for it to exit.
func (c *Cluster) Kill(name string) {
	c.t.Helper()
	if err := c.sys.Kill(name); err != nil {
		c.t.Fatal(err)
	}
}

// Stop sends SIGTERM (graceful shutdown) and waits for the process to exit.
func (c *Cluster) Stop(name string) {
	c.t.Helper()
	if err := c.sys.Stop(name); err != nil {
		c.t.Fatal(err)
	}
}

// Pause stops the process with SIGSTOP; Resume continues it.
func (c *Cluster) Pause(name string) {
	c.t.Helper()
	if err := c.sys.Pause(name); err != nil {
		c.t.Fatal(err)
	}
}

// Resume continues a process stopped by Pause.
func (c *Cluster) Resume(name string) {
	c.t.Helper()
	if err := c.sys.Resume(name); err != nil {
		c.t.Fatal(err)
	}
}

// stopAll kills every process, logs the last lines of each log when the test failed, and
// unmounts the data disks (keeping a copy of their stores when the test failed).
func (c *Cluster) stopAll() {
	c.sys.KillAll()
	failed := c.t.Failed()
	if failed {
		for _, name := range c.sys.Names() {
			if p := c.sys.Proc(name); p != nil {
				c.t.Logf("---- last lines of %s (%s)\n%s", p.Name, p.LogPath, p.Tail(40))
			}
		}
	}
	if err := c.sys.Close(failed); err != nil {
		c.t.Logf("%v", err)
	}
}

// WaitBankHealth waits until the (first) gateway's health service reports bank as want
// (SERVING or NOT_SERVING), up to d.
func (c *Cluster) WaitBankHealth(bank string, want grpchealth.Status, d time.Duration) error {
	return c.sys.WaitBankHealth(context.Background(), bank, want, d)
}

// User is a logged-in user's set of gateway clients.
type User struct {
	Name     string
	Token    string
	Auth     gatewayv1connect.AuthServiceClient
	Payments gatewayv1connect.PaymentServiceClient
	Balance  gatewayv1connect.BalanceServiceClient
}

// Clients returns clients of the (first) gateway with the client-role certificate and no token.
func (c *Cluster) Clients() *User { return c.ClientsAt(c.GatewayAddr) }

// ClientsAt returns clients of the gateway replica at addr, as Clients.
func (c *Cluster) ClientsAt(addr string) *User {
	url := "https://" + addr
	opts := []connect.ClientOption{connect.WithGRPC()}
	return &User{
		Auth:     gatewayv1connect.NewAuthServiceClient(c.httpClient, url, opts...),
		Payments: gatewayv1connect.NewPaymentServiceClient(c.httpClient, url, opts...),
		Balance:  gatewayv1connect.NewBalanceServiceClient(c.httpClient, url, opts...),
	}
}

// NewClient returns a Go client (package client) of every gateway replica: the comma-separated
// list of their addresses, with failover, and the client-role certificate "cli". It is closed
// when the test ends.
func (c *Cluster) NewClient(opts ...client.Option) *client.Client {
	c.t.Helper()
	cl, err := client.New(c.GatewayList(), append([]client.Option{client.WithTLSDir(c.CertDir)}, opts...)...)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// Login logs a user in at the (first) gateway and returns clients that send the token.
func (c *Cluster) Login(username, password string) (*User, error) {
	return c.LoginAt(c.GatewayAddr, username, password)
}

// LoginAt logs a user in at the gateway replica at addr and returns clients of that replica
// that send the token.
func (c *Cluster) LoginAt(addr, username, password string) (*User, error) {
	u := c.ClientsAt(addr)
	resp, err := u.Auth.Login(context.Background(), connect.NewRequest(&gatewayv1.LoginRequest{Username: username, Password: password}))
	if err != nil {
		return nil, err
	}
	return c.UserAt(addr, username, resp.Msg.GetToken()), nil
}

// UserAt returns clients of the gateway replica at addr that send token, a session of
// username made at any replica (the replicas share their sessions).
func (c *Cluster) UserAt(addr, username, tok string) *User {
	url := "https://" + addr
	opts := []connect.ClientOption{connect.WithGRPC(), connect.WithInterceptors(bearer(tok))}
	return &User{
		Name:     username,
		Token:    tok,
		Auth:     gatewayv1connect.NewAuthServiceClient(c.httpClient, url, opts...),
		Payments: gatewayv1connect.NewPaymentServiceClient(c.httpClient, url, opts...),
		Balance:  gatewayv1connect.NewBalanceServiceClient(c.httpClient, url, opts...),
	}
}

type bearer string

func (b bearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Authorization", "Bearer "+string(b))
		return next(ctx, req)
	}
}

func (b bearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set("Authorization", "Bearer "+string(b))
		return conn
	}
}

func (b bearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// Bearer returns an interceptor that sends token as a bearer token.
func Bearer(token string) connect.Interceptor { return bearer(token) }

// Bank returns a client of bank name with the gateway-role certificate.
func (c *Cluster) Bank(name string) bankv1connect.BankServiceClient { return c.sys.Bank(name) }

// Ledger is an audit of every account of every bank.
type Ledger = audit.Ledger

// Audit reads every account of every bank through ListAccounts.
func (c *Cluster) Audit(ctx context.Context) (Ledger, error) { return c.sys.Audit(ctx) }

// WaitSettled waits until no bank holds a hold or a pending credit (every transaction is
// resolved), up to d, and returns the final audit.
func (c *Cluster) WaitSettled(d time.Duration) (Ledger, error) {
	return c.sys.WaitSettled(context.Background(), d)
}

// TransactionStates returns each bank's state of transaction id (banks that never saw it are
// left out).
func (c *Cluster) TransactionStates(ctx context.Context, id string) (map[string]bankv1.TransactionState, error) {
	return c.sys.TransactionStates(ctx, id)
}

// Logs returns everything the processes have logged so far.
func (c *Cluster) Logs() string { return c.sys.Logs() }

// GrepLog returns the log lines of process name that contain every one of subs.
func (c *Cluster) GrepLog(name string, subs ...string) []string {
	p := c.Proc(name)
	if p == nil {
		return nil
	}
	return p.Grep(subs...)
}

func redactAll(urls map[string]string) map[string]string {
	out := make(map[string]string, len(urls))
	for k, u := range urls {
		out[k] = launch.Redact(u)
	}
	return out
}
