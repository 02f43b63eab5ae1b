// Package cluster runs a whole paygate system as real processes for end-to-end tests: the
// paygate binary built from this module, one process per bank and one gateway, each with its
// own SQLite store, talking mTLS with certificates made for the test. Tests kill, pause and
// restart processes and then audit the ledgers through the banks' APIs.
package cluster

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	"github.com/paygate/paygate/gen/paygate/bank/v1/bankv1connect"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
	"github.com/paygate/paygate/internal/audit"
	"github.com/paygate/paygate/internal/pki"
	"github.com/paygate/paygate/internal/rpcserver"
)

// TB is the part of testing.TB the cluster uses. *testing.T and *testing.B satisfy it; a
// program that runs a cluster outside a test (`paygate chaos`) supplies its own.
type TB interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
	Cleanup(func())
	TempDir() string
	Failed() bool
}

// ModuleRoot returns the directory of this module's go.mod.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("cluster: go.mod not found above the working directory")
		}
		dir = parent
	}
}

var (
	buildMu   sync.Mutex
	buildDone = map[string]string{}
)

// Binary builds the paygate command once per test process (per set of build tags) and returns
// its path. The crash-point tests build with the "crashpoints" tag.
func Binary(t TB, tags ...string) string {
	t.Helper()
	key := strings.Join(tags, ",")
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := buildDone[key]; ok {
		return p
	}
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "paygate-bin-")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "paygate")
	args := []string{"build", "-o", out}
	if key != "" {
		args = append(args, "-tags", key)
	}
	args = append(args, "./cmd/paygate")
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build paygate: %v\n%s", err, b)
	}
	buildDone[key] = out
	return out
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
	// Bin is the paygate binary to run; default: built from this module by Binary.
	Bin string
	// BankAddrs are the banks' listen addresses ("127.0.0.1:port"); default: free ports.
	BankAddrs map[string]string
	// GatewayBankAddrs overrides, per bank, the address ("host:port") the gateway dials for it,
	// e.g. a faultproxy in front of the bank. Banks not in it are dialled directly.
	GatewayBankAddrs map[string]string
	// Env is extra environment of the first start of a process, by name ("gateway" or a bank
	// name), e.g. {"bank1": {"PAYGATE_CRASH_AT=bank.prepare.after_persist"}}.
	Env map[string][]string
}

// Cluster is a running system.
type Cluster struct {
	t       TB
	opts    Options
	Bin     string
	Dir     string
	CertDir string
	Root    string

	GatewayAddr string
	WebAddr     string
	BankAddrs   map[string]string

	mu    sync.Mutex
	procs map[string]*Proc

	httpGateway *http.Client // gateway-role certificate: audits banks
	httpClient  *http.Client // client-role certificate: calls the gateway as a user
}

// Proc is one running paygate process.
type Proc struct {
	Name    string
	cmd     *exec.Cmd
	done    chan struct{}
	LogPath string
	logFile *os.File
}

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits for the process to exit, up to d.
func (p *Proc) Wait(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// FreePort returns a loopback address with a port that was free a moment ago. Ports come from
// below the kernel's ephemeral range (32768 and up by default on Linux), so that an outgoing
// connection cannot take one before its server binds it, and no port is handed out twice in a
// process, so that two servers of one test never get the same one.
func FreePort(t TB) string {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 1000 {
		port := 20000 + rand.IntN(12000)
		if portsGiven[port] {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		ln.Close()
		portsGiven[port] = true
		return ln.Addr().String()
	}
	t.Fatal("cluster: no free port found in 20000-31999")
	return ""
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

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
	needRoot := opts.Bin == "" || opts.Users == ""
	for _, b := range opts.Banks {
		if _, ok := opts.Accounts[b]; !ok {
			needRoot = true
		}
	}
	if rootErr != nil && needRoot {
		t.Fatal(rootErr)
	}
	c := &Cluster{t: t, opts: opts, Root: root, Dir: t.TempDir(), procs: map[string]*Proc{}, BankAddrs: map[string]string{}}
	c.Bin = opts.Bin
	if c.Bin == "" {
		c.Bin = Binary(t, opts.Tags...)
	}
	c.CertDir = filepath.Join(c.Dir, "certs")
	if err := pki.Generate(c.CertDir, pki.Options{Banks: opts.Banks, Clients: []string{"cli", "other"}}); err != nil {
		t.Fatal(err)
	}
	fix := filepath.Join(c.Dir, "fixtures")
	if err := os.MkdirAll(fix, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, b := range opts.Banks {
		content, ok := opts.Accounts[b]
		if !ok {
			data, err := os.ReadFile(filepath.Join(root, "fixtures", b+"_server_accounts.json"))
			if err != nil {
				t.Fatal(err)
			}
			content = string(data)
		}
		if err := os.WriteFile(filepath.Join(fix, b+"_server_accounts.json"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if a, ok := opts.BankAddrs[b]; ok {
			c.BankAddrs[b] = a
		} else {
			c.BankAddrs[b] = FreePort(t)
		}
	}
	users := opts.Users
	if users == "" {
		data, err := os.ReadFile(filepath.Join(root, "fixtures", "user_details.json"))
		if err != nil {
			t.Fatal(err)
		}
		users = string(data)
	}
	if err := os.WriteFile(filepath.Join(fix, "user_details.json"), []byte(users), 0o644); err != nil {
		t.Fatal(err)
	}
	c.GatewayAddr = FreePort(t)
	c.WebAddr = FreePort(t)

	gwTLS, err := pki.ClientTLS(c.cert("ca.pem"), c.cert("gateway.pem"), c.cert("gateway-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	c.httpGateway = rpcserver.NewHTTPClient(gwTLS)
	cliTLS, err := pki.ClientTLS(c.cert("ca.pem"), c.cert("client-cli.pem"), c.cert("client-cli-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	c.httpClient = rpcserver.NewHTTPClient(cliTLS)
	t.Cleanup(c.stopAll)

	for _, b := range opts.Banks {
		c.StartBank(b, opts.Env[b]...)
	}
	c.StartGateway(opts.Env["gateway"]...)
	return c
}

func (c *Cluster) cert(name string) string { return filepath.Join(c.CertDir, name) }

// CertPath returns the path of a file made by pki.Generate, e.g. "client-cli.pem".
func (c *Cluster) CertPath(name string) string { return c.cert(name) }

// BankArgs returns the command line of bank name.
func (c *Cluster) BankArgs(name string) []string {
	return []string{"bank",
		"--name", name,
		"--listen", c.BankAddrs[name],
		"--accounts", filepath.Join(c.Dir, "fixtures", name+"_server_accounts.json"),
		"--data", filepath.Join(c.Dir, "data", name),
		"--ca", c.cert("ca.pem"),
		"--cert", c.cert("bank-" + name + ".pem"),
		"--key", c.cert("bank-" + name + "-key.pem"),
		"--gateway", "https://" + c.GatewayAddr,
		"--resolve-after", c.opts.ResolveAfter.String(),
		"--log-format", "json",
		"--log-level", "debug",
	}
}

// BankDataDir returns the --data directory of bank name (its ledger is <name>.db in it).
func (c *Cluster) BankDataDir(name string) string { return filepath.Join(c.Dir, "data", name) }

// EnrollmentCode issues a new enrollment code for account at bank, as an operator does, with
// `paygate bank enroll` against the bank's data directory, and returns it.
func (c *Cluster) EnrollmentCode(bank, account string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.Bin, "bank", "enroll", "--name", bank, "--account", account, "--data", c.BankDataDir(bank), "--json")
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
	args := []string{"gateway",
		"--listen", c.GatewayAddr,
		"--web", c.WebAddr,
		"--users", filepath.Join(c.Dir, "fixtures", "user_details.json"),
		"--data", filepath.Join(c.Dir, "data", "gateway"),
		"--ca", c.cert("ca.pem"),
		"--cert", c.cert("gateway.pem"),
		"--key", c.cert("gateway-key.pem"),
		"--txn-timeout", c.opts.TxnTimeout.String(),
		"--bcrypt-cost", "4",
		"--log-format", "json",
		"--log-level", "debug",
	}
	for _, b := range c.opts.Banks {
		addr := c.BankAddrs[b]
		if a, ok := c.opts.GatewayBankAddrs[b]; ok {
			addr = a
		}
		if slices.Contains(unreachable, b) {
			addr = FreePort(c.t)
		}
		args = append(args, "--bank", b+"=https://"+addr)
	}
	return append(args, c.opts.GatewayArgs...)
}

// start runs the binary with args and env, logging to DIR/logs/<name>.log (appending across
// restarts).
func (c *Cluster) start(name string, args []string, env []string) *Proc {
	c.t.Helper()
	logDir := filepath.Join(c.Dir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		c.t.Fatal(err)
	}
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(c.Bin, args...)
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		f.Close()
		c.t.Fatal(err)
	}
	p := &Proc{Name: name, cmd: cmd, done: make(chan struct{}), LogPath: logPath, logFile: f}
	go func() {
		cmd.Wait()
		f.Close()
		close(p.done)
	}()
	c.mu.Lock()
	c.procs[name] = p
	c.mu.Unlock()
	return p
}

// StartBank starts bank name (again) with extra environment, e.g. "PAYGATE_CRASH_AT=...", and
// waits until it serves.
func (c *Cluster) StartBank(name string, env ...string) *Proc {
	c.t.Helper()
	p := c.StartBankNoWait(name, env...)
	c.waitServing(p, c.BankAddrs[name])
	return p
}

// StartBankNoWait starts bank name without waiting for it to serve.
func (c *Cluster) StartBankNoWait(name string, env ...string) *Proc {
	c.t.Helper()
	return c.start(name, c.BankArgs(name), env)
}

// StartGateway starts the gateway (again) with extra environment and waits until it serves.
func (c *Cluster) StartGateway(env ...string) *Proc {
	c.t.Helper()
	p := c.start("gateway", c.GatewayArgs(), env)
	c.waitServing(p, c.GatewayAddr)
	return p
}

// StartGatewayPartitioned starts the gateway unable to reach the banks named in unreachable
// (a one-way partition: those banks still reach the gateway).
func (c *Cluster) StartGatewayPartitioned(unreachable []string, env ...string) *Proc {
	c.t.Helper()
	p := c.start("gateway", c.GatewayArgs(unreachable...), env)
	c.waitServing(p, c.GatewayAddr)
	return p
}

// StartGatewayNoWait starts the gateway without waiting for it to serve.
func (c *Cluster) StartGatewayNoWait(env ...string) *Proc {
	c.t.Helper()
	return c.start("gateway", c.GatewayArgs(), env)
}

// Proc returns the process named name ("gateway" or a bank name).
func (c *Cluster) Proc(name string) *Proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.procs[name]
}

// Kill sends SIGKILL to the process and waits for it to exit.
func (c *Cluster) Kill(name string) {
	c.t.Helper()
	p := c.Proc(name)
	if p == nil || p.Exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGCONT) // a paused process must not stay paused
	p.cmd.Process.Kill()
	if !p.Wait(10 * time.Second) {
		c.t.Fatalf("%s did not exit after SIGKILL", name)
	}
}

// Stop sends SIGTERM (graceful shutdown) and waits for the process to exit.
func (c *Cluster) Stop(name string) {
	c.t.Helper()
	p := c.Proc(name)
	if p == nil || p.Exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if !p.Wait(15 * time.Second) {
		p.cmd.Process.Kill()
		c.t.Fatalf("%s did not exit within 15s of SIGTERM", name)
	}
}

// Pause stops the process with SIGSTOP; Resume continues it.
func (c *Cluster) Pause(name string)  { c.Proc(name).cmd.Process.Signal(syscall.SIGSTOP) }
func (c *Cluster) Resume(name string) { c.Proc(name).cmd.Process.Signal(syscall.SIGCONT) }

func (c *Cluster) stopAll() {
	c.mu.Lock()
	procs := make([]*Proc, 0, len(c.procs))
	for _, p := range c.procs {
		procs = append(procs, p)
	}
	c.mu.Unlock()
	for _, p := range procs {
		if !p.Exited() {
			p.cmd.Process.Signal(syscall.SIGCONT)
			p.cmd.Process.Kill()
			p.Wait(10 * time.Second)
		}
	}
	if c.t.Failed() {
		for _, p := range procs {
			c.t.Logf("---- last lines of %s (%s)\n%s", p.Name, p.LogPath, tail(p.LogPath, 40))
		}
	}
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

// waitServing waits until the health service at addr answers SERVING, failing the test if the
// process exits first or it takes more than 30s.
func (c *Cluster) waitServing(p *Proc, addr string) {
	c.t.Helper()
	hc := grpchealth.NewClient(c.httpGateway, "https://"+addr, connect.WithGRPC())
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if p.Exited() {
			c.t.Fatalf("%s exited while starting:\n%s", p.Name, tail(p.LogPath, 40))
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := hc.Check(ctx, &grpchealth.CheckRequest{})
		cancel()
		if err == nil && resp.Status == grpchealth.StatusServing {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("%s not serving at %s after 30s:\n%s", p.Name, addr, tail(p.LogPath, 40))
}

// WaitBankHealth waits until the gateway's health service reports bank as want (SERVING or
// NOT_SERVING), up to d.
func (c *Cluster) WaitBankHealth(bank string, want grpchealth.Status, d time.Duration) error {
	hc := grpchealth.NewClient(c.httpClient, "https://"+c.GatewayAddr, connect.WithGRPC())
	deadline := time.Now().Add(d)
	var last grpchealth.Status
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := hc.Check(ctx, &grpchealth.CheckRequest{Service: "bank/" + bank})
		cancel()
		if err == nil {
			last = resp.Status
			if last == want {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("gateway reports %s as %s after %s, want %s", bank, last, d, want)
}

// User is a logged-in user's set of gateway clients.
type User struct {
	Name     string
	Token    string
	Auth     gatewayv1connect.AuthServiceClient
	Payments gatewayv1connect.PaymentServiceClient
	Balance  gatewayv1connect.BalanceServiceClient
}

// Clients returns gateway clients with the client-role certificate and no token.
func (c *Cluster) Clients() *User {
	url := "https://" + c.GatewayAddr
	opts := []connect.ClientOption{connect.WithGRPC()}
	return &User{
		Auth:     gatewayv1connect.NewAuthServiceClient(c.httpClient, url, opts...),
		Payments: gatewayv1connect.NewPaymentServiceClient(c.httpClient, url, opts...),
		Balance:  gatewayv1connect.NewBalanceServiceClient(c.httpClient, url, opts...),
	}
}

// Login logs a user in and returns clients that send the token.
func (c *Cluster) Login(username, password string) (*User, error) {
	u := c.Clients()
	resp, err := u.Auth.Login(context.Background(), connect.NewRequest(&gatewayv1.LoginRequest{Username: username, Password: password}))
	if err != nil {
		return nil, err
	}
	tok := resp.Msg.GetToken()
	url := "https://" + c.GatewayAddr
	opts := []connect.ClientOption{connect.WithGRPC(), connect.WithInterceptors(bearer(tok))}
	return &User{
		Name:     username,
		Token:    tok,
		Auth:     gatewayv1connect.NewAuthServiceClient(c.httpClient, url, opts...),
		Payments: gatewayv1connect.NewPaymentServiceClient(c.httpClient, url, opts...),
		Balance:  gatewayv1connect.NewBalanceServiceClient(c.httpClient, url, opts...),
	}, nil
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
func (c *Cluster) Bank(name string) bankv1connect.BankServiceClient {
	return bankv1connect.NewBankServiceClient(c.httpGateway, "https://"+c.BankAddrs[name], connect.WithGRPC())
}

// Ledger is an audit of every account of every bank.
type Ledger = audit.Ledger

func (c *Cluster) bankClients() map[string]bankv1connect.BankServiceClient {
	out := make(map[string]bankv1connect.BankServiceClient, len(c.opts.Banks))
	for _, b := range c.opts.Banks {
		out[b] = c.Bank(b)
	}
	return out
}

// Audit reads every account of every bank through ListAccounts.
func (c *Cluster) Audit(ctx context.Context) (Ledger, error) {
	return audit.Take(ctx, c.bankClients())
}

// WaitSettled waits until no bank holds a hold or a pending credit (every transaction is
// resolved), up to d, and returns the final audit.
func (c *Cluster) WaitSettled(d time.Duration) (Ledger, error) {
	return audit.WaitSettled(context.Background(), c.bankClients(), d)
}

// TransactionStates returns each bank's state of transaction id (banks that never saw it are
// left out).
func (c *Cluster) TransactionStates(ctx context.Context, id string) (map[string]bankv1.TransactionState, error) {
	out := map[string]bankv1.TransactionState{}
	for _, b := range c.opts.Banks {
		resp, err := c.Bank(b).GetTransaction(ctx, connect.NewRequest(&bankv1.GetTransactionRequest{TransactionId: id}))
		if connect.CodeOf(err) == connect.CodeNotFound {
			continue
		}
		if err != nil {
			return nil, err
		}
		out[b] = resp.Msg.GetTransaction().GetState()
	}
	return out, nil
}

// Logs returns everything the processes have logged so far.
func (c *Cluster) Logs() string {
	c.mu.Lock()
	var paths []string
	for _, p := range c.procs {
		paths = append(paths, p.LogPath)
	}
	c.mu.Unlock()
	sort.Strings(paths)
	var b bytes.Buffer
	for _, p := range paths {
		data, _ := os.ReadFile(p)
		b.Write(data)
	}
	return b.String()
}

// GrepLog returns the log lines of process name that contain every one of subs.
func (c *Cluster) GrepLog(name string, subs ...string) []string {
	p := c.Proc(name)
	if p == nil {
		return nil
	}
	f, err := os.Open(p.LogPath)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}
