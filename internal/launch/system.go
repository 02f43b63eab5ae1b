package launch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	"github.com/paygate/paygate/gen/paygate/bank/v1/bankv1connect"
	"github.com/paygate/paygate/internal/audit"
	"github.com/paygate/paygate/internal/pki"
	"github.com/paygate/paygate/internal/rpcserver"
)

// Timeouts of a System's processes.
const (
	// ReadyTimeout bounds the wait for a started server to report SERVING.
	ReadyTimeout = 30 * time.Second
	// StopTimeout bounds a graceful stop (SIGTERM) before the process is killed.
	StopTimeout = 15 * time.Second
	// KillTimeout bounds the wait for a process to exit after SIGKILL.
	KillTimeout = 10 * time.Second
)

// GatewayName is the process name of the gateway, the first replica when there are several
// (ReplicaName); banks are named by their bank names.
const GatewayName = "gateway"

// ReplicaName returns the process name of gateway replica i (from 0): "gateway" for the first,
// then "gateway2", "gateway3"...
func ReplicaName(i int) string {
	if i == 0 {
		return GatewayName
	}
	return GatewayName + strconv.Itoa(i+1)
}

// Options configure a System.
type Options struct {
	// Dir holds the system: certs/, fixtures/, data/<name>/ and logs/<name>.log. Required.
	Dir string
	// Bin is the paygate binary whose bank and gateway subcommands run the servers. Required.
	Bin string
	// Banks are the bank names; default bank1, bank2, bank3.
	Banks []string
	// Accounts maps every bank to the content of its accounts file
	// (<bank>_server_accounts.json; bank.AccountsFile is its type). Required for every bank.
	Accounts map[string]string
	// Users is the content of the users file (user_details.json; a map of usernames to
	// gateway.UserFixture). Required.
	Users string
	// Clients name the client-role certificates made besides the banks' and the gateway's;
	// default "cli" (client-cli.pem, which UserHTTP presents).
	Clients []string
	// Hosts are the certificates' host names and addresses; default pki.DefaultHosts.
	Hosts []string
	// TxnTimeout is the gateway's --txn-timeout and ResolveAfter the banks' --resolve-after;
	// zero leaves the servers' defaults.
	TxnTimeout, ResolveAfter time.Duration
	// BcryptCost is the gateway's --bcrypt-cost; zero leaves its default.
	BcryptCost int
	// LogFormat and LogLevel are every server's --log-format and --log-level; empty leaves the
	// servers' defaults.
	LogFormat, LogLevel string
	// Web turns the gateway's web listener on, at a free port (WebAddr); otherwise it is off.
	Web bool
	// BankAddrs are the banks' listen addresses ("127.0.0.1:port"); default free ports.
	BankAddrs map[string]string
	// GatewayBankAddrs overrides, per bank, the address ("host:port") the gateway dials for it,
	// e.g. a faultproxy in front of the bank. Banks not in it are dialled directly.
	GatewayBankAddrs map[string]string
	// BankDatabaseURL, when set, gives each bank its PostgreSQL database (--database-url) by
	// bank name; a bank it returns "" for keeps its SQLite ledger under DataDir.
	BankDatabaseURL func(bank string) string
	// Gateways is the number of gateway replicas, default 1. They are named by ReplicaName,
	// each with its own listen (and web) address; banks are given every replica's address.
	// More than one share their store, so they need GatewayDatabaseURL.
	Gateways int
	// GatewayDatabaseURL, when set, is every gateway replica's --database-url (their shared
	// PostgreSQL store); otherwise the gateway keeps its SQLite store under its DataDir.
	GatewayDatabaseURL string
	// LeaseTTL is the gateways' --lease-ttl; zero leaves their default.
	LeaseTTL time.Duration
	// ServerArgs go to every server after the flags above, then BankArgs to each bank and
	// GatewayArgs to the gateway (a flag given twice takes its last value).
	ServerArgs, BankArgs, GatewayArgs []string
	// Environ returns the environment of process name, to which each start adds its own; nil
	// gives every process this program's environment.
	Environ func(name string) []string
	// Env is extra environment of the first start of a process (Start), by name ("gateway",
	// "gateway2"... or a bank name), e.g. {"bank1": {"PAYGATE_CRASH_AT=bank.prepare.after_persist"}}.
	Env map[string][]string
	// DataDisks mounts, per process name, a tmpfs of that many bytes at the process's data
	// directory, for runs that make its disk full (System.Disk). Mounting needs root or
	// CAP_SYS_ADMIN; TmpfsAvailable says whether it can be done here.
	DataDisks map[string]int64
	// StopWithParent makes every process get SIGTERM when this program ends
	// (Spec.StopWithParent).
	StopWithParent bool
}

// System is a paygate system of processes: banks and one or more gateway replicas, each
// with its own store in Dir (or the replicas sharing one PostgreSQL database). Its processes
// are started, stopped and started again on the same addresses.
type System struct {
	opts    Options
	Bin     string
	Dir     string
	CertDir string

	// GatewayAddr and WebAddr are the first replica's; GatewayAddrs and WebAddrs every
	// replica's, in ReplicaName order.
	GatewayAddr  string
	WebAddr      string // empty unless Options.Web
	GatewayAddrs []string
	WebAddrs     []string // nil unless Options.Web
	BankAddrs    map[string]string

	gatewayHTTP *http.Client // gateway-role certificate: health checks, audits of the banks
	userHTTP    *http.Client // client-role certificate: calls the gateway as a user

	mu    sync.Mutex
	procs map[string]*Proc
	disks map[string]*Disk // Options.DataDisks, mounted
}

// New prepares a system in opts.Dir: certificates, fixtures, addresses and the data disks.
// Nothing runs yet: Start starts the servers. Close undoes what New did (the disks).
func New(opts Options) (*System, error) {
	if opts.Dir == "" || opts.Bin == "" {
		return nil, errors.New("launch: a system needs a directory and a paygate binary")
	}
	if len(opts.Banks) == 0 {
		opts.Banks = []string{"bank1", "bank2", "bank3"}
	}
	if len(opts.Clients) == 0 {
		opts.Clients = []string{"cli"}
	}
	if opts.Gateways <= 0 {
		opts.Gateways = 1
	}
	if opts.Gateways > 1 && opts.GatewayDatabaseURL == "" {
		return nil, errors.New("launch: gateway replicas share one store: they need a PostgreSQL database (GatewayDatabaseURL)")
	}
	s := &System{opts: opts, Bin: opts.Bin, Dir: opts.Dir, CertDir: filepath.Join(opts.Dir, "certs"),
		BankAddrs: map[string]string{}, procs: map[string]*Proc{}, disks: map[string]*Disk{}}
	if err := pki.Generate(s.CertDir, pki.Options{Banks: opts.Banks, Clients: opts.Clients, Hosts: opts.Hosts}); err != nil {
		return nil, err
	}
	if err := s.writeFixtures(); err != nil {
		return nil, err
	}
	for _, b := range opts.Banks {
		addr, ok := opts.BankAddrs[b]
		if !ok {
			var err error
			if addr, err = FreePort(); err != nil {
				return nil, err
			}
		}
		s.BankAddrs[b] = addr
	}
	for range opts.Gateways {
		addr, err := FreePort()
		if err != nil {
			return nil, err
		}
		s.GatewayAddrs = append(s.GatewayAddrs, addr)
		if opts.Web {
			if addr, err = FreePort(); err != nil {
				return nil, err
			}
			s.WebAddrs = append(s.WebAddrs, addr)
		}
	}
	s.GatewayAddr = s.GatewayAddrs[0]
	if opts.Web {
		s.WebAddr = s.WebAddrs[0]
	}
	gwTLS, err := pki.ClientTLS(s.CertPath("ca.pem"), s.CertPath("gateway.pem"), s.CertPath("gateway-key.pem"))
	if err != nil {
		return nil, err
	}
	s.gatewayHTTP = rpcserver.NewHTTPClient(gwTLS)
	cli := "client-" + opts.Clients[0]
	cliTLS, err := pki.ClientTLS(s.CertPath("ca.pem"), s.CertPath(cli+".pem"), s.CertPath(cli+"-key.pem"))
	if err != nil {
		return nil, err
	}
	s.userHTTP = rpcserver.NewHTTPClient(cliTLS)
	if err := s.mountDisks(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *System) writeFixtures() error {
	dir := filepath.Join(s.Dir, "fixtures")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, b := range s.opts.Banks {
		content, ok := s.opts.Accounts[b]
		if !ok {
			return fmt.Errorf("launch: no accounts file for bank %s", b)
		}
		if err := os.WriteFile(s.accountsPath(b), []byte(content), 0o600); err != nil {
			return err
		}
	}
	if s.opts.Users == "" {
		return errors.New("launch: no users file")
	}
	return os.WriteFile(s.usersPath(), []byte(s.opts.Users), 0o600)
}

func (s *System) accountsPath(bank string) string {
	return filepath.Join(s.Dir, "fixtures", bank+"_server_accounts.json")
}

func (s *System) usersPath() string { return filepath.Join(s.Dir, "fixtures", "user_details.json") }

// mountDisks mounts the disks of Options.DataDisks at the processes' data directories.
func (s *System) mountDisks() error {
	for _, name := range slices.Sorted(maps.Keys(s.opts.DataDisks)) {
		d, err := mountDisk(s.DataDir(name), s.opts.DataDisks[name])
		if err != nil {
			s.unmountDisks(false)
			return err
		}
		s.mu.Lock()
		s.disks[name] = d
		s.mu.Unlock()
	}
	return nil
}

// unmountDisks unmounts every data disk, after copying its files to <dir>.kept when keep is
// set (they go with the unmount).
func (s *System) unmountDisks(keep bool) error {
	s.mu.Lock()
	disks := s.disks
	s.disks = map[string]*Disk{}
	s.mu.Unlock()
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(disks)) {
		d := disks[name]
		if keep {
			if err := d.copyTo(d.Dir + ".kept"); err != nil {
				errs = append(errs, fmt.Errorf("launch: keep the store of %s: %w", name, err))
			}
		}
		if err := unmount(d.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Disk returns the tmpfs mounted at process name's data directory (Options.DataDisks), or nil.
func (s *System) Disk(name string) *Disk {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.disks[name]
}

// Close kills every process still running and unmounts the data disks; with keepStores, a
// disk's files are first copied to <its directory>.kept, for inspection after a failed run.
func (s *System) Close(keepStores bool) error {
	s.KillAll()
	return s.unmountDisks(keepStores)
}

// Banks returns the bank names.
func (s *System) Banks() []string { return slices.Clone(s.opts.Banks) }

// Names returns the names of the processes: the banks, then the gateway replicas.
func (s *System) Names() []string { return append(s.Banks(), s.GatewayNames()...) }

// GatewayNames returns the process names of the gateway replicas: "gateway", "gateway2"...
func (s *System) GatewayNames() []string {
	out := make([]string, s.opts.Gateways)
	for i := range out {
		out[i] = ReplicaName(i)
	}
	return out
}

// IsGateway reports whether name is one of the gateway replicas.
func (s *System) IsGateway(name string) bool { return s.replica(name) >= 0 }

// replica returns the index of gateway replica name, or -1.
func (s *System) replica(name string) int {
	for i := range s.opts.Gateways {
		if ReplicaName(i) == name {
			return i
		}
	}
	return -1
}

// GatewayList returns every replica's API address as a comma-separated list
// ("127.0.0.1:20001,127.0.0.1:20002"), as clients and banks take it.
func (s *System) GatewayList() string { return strings.Join(s.GatewayAddrs, ",") }

// GatewayAddrOf returns the API address of gateway replica name.
func (s *System) GatewayAddrOf(name string) string {
	if i := s.replica(name); i >= 0 {
		return s.GatewayAddrs[i]
	}
	return ""
}

// GatewayDatabaseURL returns the gateways' PostgreSQL database, or "" when the gateway keeps
// its SQLite store.
func (s *System) GatewayDatabaseURL() string { return s.opts.GatewayDatabaseURL }

// CertPath returns the path of a file made by pki.Generate, e.g. "client-cli.pem".
func (s *System) CertPath(name string) string { return filepath.Join(s.CertDir, name) }

// DataDir returns the --data directory of process name.
func (s *System) DataDir(name string) string { return filepath.Join(s.Dir, "data", name) }

// LogPath returns the log file of process name, kept across restarts.
func (s *System) LogPath(name string) string { return filepath.Join(s.Dir, "logs", name+".log") }

// UserHTTP returns an HTTP client with the first client-role certificate (Options.Clients),
// for calls to the gateway as a user.
func (s *System) UserHTTP() *http.Client { return s.userHTTP }

func (s *System) logArgs() []string {
	var args []string
	if s.opts.LogFormat != "" {
		args = append(args, "--log-format", s.opts.LogFormat)
	}
	if s.opts.LogLevel != "" {
		args = append(args, "--log-level", s.opts.LogLevel)
	}
	return args
}

// BankArgs returns the command line of bank name.
func (s *System) BankArgs(name string) []string {
	args := []string{"bank",
		"--name", name,
		"--listen", s.BankAddrs[name],
		"--accounts", s.accountsPath(name),
		"--data", s.DataDir(name),
		"--ca", s.CertPath("ca.pem"),
		"--cert", s.CertPath("bank-" + name + ".pem"),
		"--key", s.CertPath("bank-" + name + "-key.pem"),
		"--gateway", s.gatewayURLs(),
	}
	if s.opts.ResolveAfter > 0 {
		args = append(args, "--resolve-after", s.opts.ResolveAfter.String())
	}
	if u := s.BankDatabaseURL(name); u != "" {
		args = append(args, "--database-url", u)
	}
	args = append(args, s.logArgs()...)
	return append(append(args, s.opts.ServerArgs...), s.opts.BankArgs...)
}

// BankDatabaseURL returns the PostgreSQL database of bank name (Options.BankDatabaseURL), or
// "" when its ledger is the SQLite file under its data directory.
func (s *System) BankDatabaseURL(name string) string {
	if s.opts.BankDatabaseURL == nil {
		return ""
	}
	return s.opts.BankDatabaseURL(name)
}

// gatewayURLs is the banks' --gateway: every replica, comma-separated.
func (s *System) gatewayURLs() string {
	urls := make([]string, len(s.GatewayAddrs))
	for i, a := range s.GatewayAddrs {
		urls[i] = "https://" + a
	}
	return strings.Join(urls, ",")
}

// GatewayArgs returns the (first) gateway's command line. Banks in unreachable are given an
// address where nothing listens: the gateway cannot reach them, though they can reach it.
func (s *System) GatewayArgs(unreachable ...string) ([]string, error) {
	return s.ReplicaArgs(GatewayName, unreachable...)
}

// ReplicaArgs returns the command line of gateway replica name, as GatewayArgs.
func (s *System) ReplicaArgs(name string, unreachable ...string) ([]string, error) {
	i := s.replica(name)
	if i < 0 {
		return nil, fmt.Errorf("launch: no gateway replica %q in the system", name)
	}
	web := ""
	if s.opts.Web {
		web = s.WebAddrs[i]
	}
	args := []string{"gateway",
		"--listen", s.GatewayAddrs[i],
		"--web", web,
		"--users", s.usersPath(),
		"--data", s.DataDir(name),
		"--ca", s.CertPath("ca.pem"),
		"--cert", s.CertPath("gateway.pem"),
		"--key", s.CertPath("gateway-key.pem"),
	}
	if s.opts.GatewayDatabaseURL != "" {
		args = append(args, "--database-url", s.opts.GatewayDatabaseURL)
	}
	if s.opts.LeaseTTL > 0 {
		args = append(args, "--lease-ttl", s.opts.LeaseTTL.String())
	}
	if s.opts.TxnTimeout > 0 {
		args = append(args, "--txn-timeout", s.opts.TxnTimeout.String())
	}
	if s.opts.BcryptCost > 0 {
		args = append(args, "--bcrypt-cost", strconv.Itoa(s.opts.BcryptCost))
	}
	args = append(args, s.logArgs()...)
	for _, b := range s.opts.Banks {
		addr := s.BankAddrs[b]
		if a, ok := s.opts.GatewayBankAddrs[b]; ok {
			addr = a
		}
		if slices.Contains(unreachable, b) {
			var err error
			if addr, err = FreePort(); err != nil {
				return nil, err
			}
		}
		args = append(args, "--bank", b+"=https://"+addr)
	}
	return append(append(args, s.opts.ServerArgs...), s.opts.GatewayArgs...), nil
}

// start runs the binary as process name with args, and the environment of name plus env.
func (s *System) start(name string, args, env []string) (*Proc, error) {
	base := s.opts.Environ
	if base == nil {
		base = func(string) []string { return os.Environ() }
	}
	p, err := Start(Spec{Name: name, Bin: s.Bin, Args: args, Env: append(slices.Clip(base(name)), env...),
		LogPath: s.LogPath(name), StopWithParent: s.opts.StopWithParent})
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.procs[name] = p
	s.mu.Unlock()
	return p, nil
}

// Start starts every bank with its Options.Env, waits until they serve, then does the same
// for the first gateway replica and, once it serves (it has applied the store's migrations
// and imported the users), for the other replicas together. It stops at the first failure;
// Close stops what runs.
func (s *System) Start(ctx context.Context) error {
	procs := map[string]*Proc{}
	for _, b := range s.opts.Banks {
		p, err := s.StartBankNoWait(b, s.opts.Env[b]...)
		if err != nil {
			return err
		}
		procs[b] = p
	}
	for _, b := range s.opts.Banks {
		if err := s.WaitServing(ctx, procs[b], s.BankAddrs[b]); err != nil {
			return err
		}
	}
	if _, err := s.StartGateway(ctx, s.opts.Env[GatewayName]...); err != nil {
		return err
	}
	replicas := map[string]*Proc{}
	for _, name := range s.GatewayNames()[1:] {
		p, err := s.StartReplicaNoWait(name, s.opts.Env[name]...)
		if err != nil {
			return err
		}
		replicas[name] = p
	}
	for _, name := range s.GatewayNames()[1:] {
		if err := s.WaitServing(ctx, replicas[name], s.GatewayAddrOf(name)); err != nil {
			return err
		}
	}
	return nil
}

// StartBank starts bank name (again, on the same address) with extra environment, e.g.
// "PAYGATE_CRASH_AT=...", and waits until it serves.
func (s *System) StartBank(ctx context.Context, name string, env ...string) (*Proc, error) {
	p, err := s.StartBankNoWait(name, env...)
	if err != nil {
		return nil, err
	}
	return p, s.WaitServing(ctx, p, s.BankAddrs[name])
}

// StartBankNoWait starts bank name without waiting for it to serve.
func (s *System) StartBankNoWait(name string, env ...string) (*Proc, error) {
	if !slices.Contains(s.opts.Banks, name) {
		return nil, fmt.Errorf("launch: no bank %q in the system", name)
	}
	return s.start(name, s.BankArgs(name), env)
}

// StartGateway starts the (first) gateway (again, on the same address) with extra
// environment and waits until it serves.
func (s *System) StartGateway(ctx context.Context, env ...string) (*Proc, error) {
	return s.StartGatewayPartitioned(ctx, nil, env...)
}

// StartGatewayPartitioned starts the (first) gateway unable to reach the banks named in
// unreachable (a one-way partition: those banks still reach the gateway) and waits until it
// serves.
func (s *System) StartGatewayPartitioned(ctx context.Context, unreachable []string, env ...string) (*Proc, error) {
	return s.startReplica(ctx, GatewayName, unreachable, env)
}

// StartGatewayNoWait starts the (first) gateway without waiting for it to serve.
func (s *System) StartGatewayNoWait(env ...string) (*Proc, error) {
	return s.StartReplicaNoWait(GatewayName, env...)
}

// StartReplica starts gateway replica name (again, on the same addresses) with extra
// environment and waits until it serves.
func (s *System) StartReplica(ctx context.Context, name string, env ...string) (*Proc, error) {
	return s.startReplica(ctx, name, nil, env)
}

func (s *System) startReplica(ctx context.Context, name string, unreachable, env []string) (*Proc, error) {
	args, err := s.ReplicaArgs(name, unreachable...)
	if err != nil {
		return nil, err
	}
	p, err := s.start(name, args, env)
	if err != nil {
		return nil, err
	}
	return p, s.WaitServing(ctx, p, s.GatewayAddrOf(name))
}

// StartReplicaNoWait starts gateway replica name without waiting for it to serve.
func (s *System) StartReplicaNoWait(name string, env ...string) (*Proc, error) {
	args, err := s.ReplicaArgs(name)
	if err != nil {
		return nil, err
	}
	return s.start(name, args, env)
}

// Restart starts process name again: a bank with StartBank, a gateway replica with
// StartReplica.
func (s *System) Restart(ctx context.Context, name string, env ...string) (*Proc, error) {
	if s.IsGateway(name) {
		return s.StartReplica(ctx, name, env...)
	}
	return s.StartBank(ctx, name, env...)
}

// WaitServing waits until the health service of p at addr answers SERVING, up to
// ReadyTimeout; it fails when p exits first.
func (s *System) WaitServing(ctx context.Context, p *Proc, addr string) error {
	hc := grpchealth.NewClient(s.gatewayHTTP, "https://"+addr, connect.WithGRPC())
	return p.WaitReady(ctx, ReadyTimeout, func(ctx context.Context) error {
		resp, err := hc.Check(ctx, &grpchealth.CheckRequest{})
		switch {
		case err != nil:
			return fmt.Errorf("health at %s: %w", addr, err)
		case resp.Status != grpchealth.StatusServing:
			return fmt.Errorf("health at %s: %s", addr, resp.Status)
		}
		return nil
	})
}

// Proc returns the process named name (a gateway replica's or a bank's): the last one started.
func (s *System) Proc(name string) *Proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.procs[name]
}

func (s *System) proc(name string) (*Proc, error) {
	p := s.Proc(name)
	if p == nil {
		return nil, fmt.Errorf("launch: %s was never started", name)
	}
	return p, nil
}

// Kill sends SIGKILL to process name and waits for it to exit. A process never started or
// exited already is left alone.
func (s *System) Kill(name string) error {
	if p := s.Proc(name); p != nil {
		return p.Kill(KillTimeout)
	}
	return nil
}

// Stop stops process name gracefully (SIGTERM), killing it after StopTimeout.
func (s *System) Stop(name string) error {
	if p := s.Proc(name); p != nil {
		return p.Stop(StopTimeout)
	}
	return nil
}

// Pause stops process name with SIGSTOP; Resume continues it.
func (s *System) Pause(name string) error {
	p, err := s.proc(name)
	if err != nil {
		return err
	}
	return p.Pause()
}

// Resume continues process name after Pause.
func (s *System) Resume(name string) error {
	p, err := s.proc(name)
	if err != nil {
		return err
	}
	return p.Resume()
}

// KillAll kills every process still running.
func (s *System) KillAll() {
	for _, name := range s.Names() {
		s.Kill(name)
	}
}

// Shutdown stops every process gracefully (SIGTERM, so that they flush what they write at
// exit, e.g. CPU profiles), the gateway replicas first and then the banks, killing any that
// takes more than d.
func (s *System) Shutdown(d time.Duration) error {
	names := s.Names()
	slices.Reverse(names)
	var errs []error
	for _, name := range names {
		if p := s.Proc(name); p != nil {
			errs = append(errs, p.Stop(d))
		}
	}
	return errors.Join(errs...)
}

// Exited returns the names of the processes started that are no longer running.
func (s *System) Exited() []string {
	var out []string
	for _, name := range s.Names() {
		if p := s.Proc(name); p != nil && p.Exited() {
			out = append(out, name)
		}
	}
	return out
}

// Logs returns everything the processes have logged so far, file by file in name order.
func (s *System) Logs() string {
	s.mu.Lock()
	var paths []string
	for _, p := range s.procs {
		paths = append(paths, p.LogPath)
	}
	s.mu.Unlock()
	sort.Strings(paths)
	var b bytes.Buffer
	for _, p := range paths {
		data, _ := os.ReadFile(p)
		b.Write(data)
	}
	return b.String()
}

// WaitBankHealth waits until the (first) gateway's health service reports bank as want
// (SERVING or NOT_SERVING), up to d.
func (s *System) WaitBankHealth(ctx context.Context, bank string, want grpchealth.Status, d time.Duration) error {
	return s.WaitReplicaBankHealth(ctx, GatewayName, bank, want, d)
}

// WaitReplicaBankHealth waits until the health service of gateway replica name reports bank as
// want, up to d.
func (s *System) WaitReplicaBankHealth(ctx context.Context, name, bank string, want grpchealth.Status, d time.Duration) error {
	hc := grpchealth.NewClient(s.userHTTP, "https://"+s.GatewayAddrOf(name), connect.WithGRPC())
	deadline := time.Now().Add(d)
	var last grpchealth.Status
	for time.Now().Before(deadline) {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := hc.Check(cctx, &grpchealth.CheckRequest{Service: "bank/" + bank})
		cancel()
		if err == nil {
			last = resp.Status
			if last == want {
				return nil
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s reports %s as %s after %s, want %s", name, bank, last, d, want)
}

// Bank returns a client of bank name with the gateway-role certificate.
func (s *System) Bank(name string) bankv1connect.BankServiceClient {
	return bankv1connect.NewBankServiceClient(s.gatewayHTTP, "https://"+s.BankAddrs[name], connect.WithGRPC())
}

func (s *System) bankClients() map[string]bankv1connect.BankServiceClient {
	out := make(map[string]bankv1connect.BankServiceClient, len(s.opts.Banks))
	for _, b := range s.opts.Banks {
		out[b] = s.Bank(b)
	}
	return out
}

// Audit reads every account of every bank through ListAccounts.
func (s *System) Audit(ctx context.Context) (audit.Ledger, error) {
	return audit.Take(ctx, s.bankClients())
}

// WaitSettled waits until no bank holds a hold or a pending credit (every transaction is
// resolved), up to d, and returns the final audit.
func (s *System) WaitSettled(ctx context.Context, d time.Duration) (audit.Ledger, error) {
	return audit.WaitSettled(ctx, s.bankClients(), d)
}

// TransactionStates returns each bank's state of transaction id (banks that never saw it are
// left out).
func (s *System) TransactionStates(ctx context.Context, id string) (map[string]bankv1.TransactionState, error) {
	out := map[string]bankv1.TransactionState{}
	for _, b := range s.opts.Banks {
		resp, err := s.Bank(b).GetTransaction(ctx, connect.NewRequest(&bankv1.GetTransactionRequest{TransactionId: id}))
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
