package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/paygate/paygate/fixtures"
	"github.com/paygate/paygate/internal/identity"
	"github.com/paygate/paygate/internal/launch"
	"github.com/paygate/paygate/internal/metrics"
	"github.com/paygate/paygate/internal/pki"
	"github.com/paygate/paygate/internal/tracing"
	"github.com/paygate/paygate/services/bank"
	"github.com/paygate/paygate/services/gateway"
	dashboard "github.com/paygate/paygate/web"
)

func init() { register(newDevCommand) }

// devInfo is DIR/dev.json: what scripts and tests need to find a running `paygate dev`.
type devInfo struct {
	API string `json:"api"`
	Web string `json:"web"`
	// APIs and Webs are every gateway replica's addresses (--gateways), API and Web first.
	APIs []string `json:"apis"`
	Webs []string `json:"webs,omitempty"`
	// Backend is where the stores are: "sqlite" (under DIR/data) or "postgres".
	Backend string            `json:"backend"`
	Banks   map[string]string `json:"banks"`
	Certs   devCerts          `json:"certs"`
	Users   []devUser         `json:"users"`
	// Enrollments are the codes issued at this start for the demo holders who have no login
	// yet, to register with.
	Enrollments []devEnrollment `json:"enrollments"`
	// Admin is the demo admin: its password, second factor and certificate.
	Admin *devAdmin `json:"admin,omitempty"`
	// Metrics are the operations listeners, by server ("gateway", "gateway2"..., each bank):
	// Prometheus metrics at http://ADDR/metrics.
	Metrics map[string]string `json:"metrics"`
}

// devAdmin is the admin `paygate dev` makes on the first start of a store (bootstrap): the
// password and TOTP secret are kept in dev.json (and DIR/admin.json), for 'paygate login' and
// the dashboard's admin pages.
type devAdmin struct {
	Username   string `json:"username"`
	Password   string `json:"password"`
	TOTPSecret string `json:"totp_secret"`
	OTPAuthURL string `json:"otpauth_url"`
	// Cert and Key are the admin certificate (spiffe://paygate/admin/admin) that AdminService
	// calls on the API listener present.
	Cert string `json:"cert"`
	Key  string `json:"key"`
}

// devAdminName is the username and certificate name of the demo admin.
const devAdminName = "admin"

// devEnrollment is an enrollment code `paygate dev` issued for a demo account.
type devEnrollment struct {
	Holder     string    `json:"holder"`
	AccountID  string    `json:"account_id"`
	Code       string    `json:"code"`
	ExpireTime time.Time `json:"expire_time"`
}

type devCerts struct {
	CA   string `json:"ca"`
	Cert string `json:"cert"`
	Key  string `json:"key"`
}

type devUser struct {
	Username string   `json:"username"`
	Password string   `json:"password"`
	Accounts []string `json:"accounts"`
}

func newDevCommand(e *env) *ffcli.Command {
	fs := newFlagSet(e, "dev")
	dir := fs.String("dir", ".paygate", "directory for certificates, data and dev.json")
	listen := fs.String("listen", "127.0.0.1:8443", "gateway API address (mTLS)")
	web := fs.String("web", "127.0.0.1:8080", "gateway web address (server TLS); empty disables it")
	nbanks := fs.Int("banks", 3, "number of banks (bank1..bankN), each with a fixtures file")
	fixturesDir := fs.String("fixtures", "", "directory with user_details.json and <bank>_server_accounts.json (default: the fixtures built into paygate)")
	txnTimeout := fs.Duration("txn-timeout", 30*time.Second, "longest time from accepting a payment to deciding it")
	dbURL := fs.String("database-url", "", "run on PostgreSQL instead of SQLite files, postgres://USER[:PASSWORD]@HOST[:PORT]/NAME: the gateway uses database NAME and each bank NAME_<bank> on the same server, created if missing")
	gateways := fs.Int("gateways", 1, "gateway replicas (more than one need --database-url): replica i listens on --listen's and --web's ports plus i")
	var lf logFlags
	lf.register(fs)

	return &ffcli.Command{
		Name:       "dev",
		ShortUsage: "paygate dev [--dir .paygate] [--listen 127.0.0.1:8443] [--web 127.0.0.1:8080] [--banks 3]",
		ShortHelp:  "run the whole system in one process: banks, gateway, certificates, demo users",
		LongHelp: "Runs N banks and the gateway in one process on the embedded SQLite store.\n" +
			"On the first run it makes a CA and certificates under DIR/certs and imports the\n" +
			"demo fixtures; later runs keep the data under DIR/data. It writes DIR/dev.json with\n" +
			"the endpoints, certificate paths, demo users and every server's metrics address\n" +
			"(\"metrics\": Prometheus at http://ADDR/metrics). Ctrl-C shuts down gracefully.\n\n" +
			"It also makes an admin, \"admin\", with a random password, a TOTP second factor and\n" +
			"an admin certificate (DIR/certs/admin-admin.pem), all in dev.json (\"admin\"):\n" +
			"'paygate login admin' signs in with them, code included, for 'paygate admin'.\n\n" +
			"With --database-url postgres://HOST/NAME the stores are on PostgreSQL instead: the\n" +
			"gateway's in database NAME, each bank's in NAME_<bank> on the same server, created\n" +
			"when missing and kept across runs. --gateways N then runs N gateway replicas on\n" +
			"NAME, the first on --listen and --web, replica i on their ports plus i; the banks\n" +
			"and dev.json (\"apis\") get every replica's address.",
		FlagSet: fs,
		Options: ffOptions(),
		Exec: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return usageErrorf("unexpected arguments: %s", strings.Join(args, " "))
			}
			if *nbanks < 1 || *nbanks > 26 {
				return usageErrorf("--banks %d: want 1 to 26", *nbanks)
			}
			if *gateways < 1 || *gateways > 16 {
				return usageErrorf("--gateways %d: want 1 to 16", *gateways)
			}
			if *gateways > 1 && *dbURL == "" {
				return usageErrorf("--gateways %d: replicas share one PostgreSQL database; give it with --database-url", *gateways)
			}
			if err := checkGatewayDatabaseURL(*dbURL); err != nil {
				return err
			}
			listens, err := replicaAddrs(*listen, *gateways)
			if err != nil {
				return usageErrorf("--listen: %v", err)
			}
			webs := make([]string, *gateways)
			if *web != "" {
				if webs, err = replicaAddrs(*web, *gateways); err != nil {
					return usageErrorf("--web: %v", err)
				}
			}
			log, err := lf.logger(e.stderr)
			if err != nil {
				return err
			}
			return runDev(ctx, e, devConfig{dir: *dir, listens: listens, webs: webs, banks: *nbanks,
				fixtures: *fixturesDir, txnTimeout: *txnTimeout, databaseURL: *dbURL, log: log})
		},
	}
}

type devConfig struct {
	dir string
	// listens and webs are each gateway replica's API and web addresses (a web address may be
	// empty: no web listener).
	listens, webs []string
	banks         int
	fixtures      string
	txnTimeout    time.Duration
	databaseURL   string // PostgreSQL: launch.SystemDatabases; empty: SQLite under dir/data
	log           *slog.Logger
}

// replicaAddrs returns n addresses: addr, then addr's port plus 1, plus 2... (a port of 0
// stays 0: each replica gets one of its own choosing).
func replicaAddrs(addr string, n int) ([]string, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port+n-1 > 65535 {
		return nil, fmt.Errorf("port %q: want a number from 0 to %d", portStr, 65535-(n-1))
	}
	out := []string{addr}
	for i := 1; i < n; i++ {
		p := port + i
		if port == 0 {
			p = 0
		}
		out = append(out, net.JoinHostPort(host, strconv.Itoa(p)))
	}
	return out, nil
}

func runDev(ctx context.Context, e *env, cfg devConfig) error {
	dir, err := filepath.Abs(cfg.dir)
	if err != nil {
		return err
	}
	names := make([]string, cfg.banks)
	for i := range names {
		names[i] = fmt.Sprintf("bank%d", i+1)
	}
	certDir := filepath.Join(dir, "certs")
	// Certificates of an earlier run are kept if they still fit; those that do not (expired,
	// or made before client certificates lost server authentication) are issued again.
	certs, err := pki.GenerateReport(certDir, pki.Options{Banks: names, Admins: []string{devAdminName}})
	if err != nil {
		return err
	}
	for _, r := range certs.Replaced {
		cfg.log.Info("dev: reissued certificate", "identity", r.Identity.String(), "file", r.Cert, "reason", r.Reason)
	}
	var src fs.FS = fixtures.FS
	if cfg.fixtures != "" {
		src = os.DirFS(cfg.fixtures)
	}
	fixDir := filepath.Join(dir, "fixtures")
	files := []string{"user_details.json"}
	for _, n := range names {
		files = append(files, n+"_server_accounts.json")
	}
	if err := copyFixtures(src, fixDir, files); err != nil {
		return err
	}
	dataDir := filepath.Join(dir, "data")
	var gatewayDB string
	bankDB := map[string]string{}
	if cfg.databaseURL != "" {
		if gatewayDB, bankDB, err = launch.SystemDatabases(ctx, cfg.databaseURL, names); err != nil {
			return fmt.Errorf("dev: %w", err)
		}
	}

	// Every server has its own registry and operations listener, on a port of its own choosing.
	metricsAddrs := map[string]string{}
	var opsServers []*metrics.Server
	startMetrics := func(name string) (*prometheus.Registry, error) {
		reg := metrics.NewRegistry()
		ops, err := metrics.Listen("127.0.0.1:0", reg, cfg.log.With("server", name))
		if err != nil {
			return nil, err
		}
		opsServers = append(opsServers, ops)
		metricsAddrs[name] = ops.Addr().String()
		return reg, nil
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, ops := range opsServers {
			if err := ops.Shutdown(sctx); err != nil {
				cfg.log.Warn("metrics shutdown", "error", err)
			}
		}
	}()

	// Every server has its own tracer provider (its own service.name), flushed when all have
	// stopped; all off unless OTEL_* asks (see startTracing).
	var traceStops []func(context.Context) error
	startTrace := func(opts tracing.Options) (trace.TracerProvider, error) {
		tp, stop, err := startTracing(ctx, opts)
		if err == nil {
			traceStops = append(traceStops, stop)
		}
		return tp, err
	}
	defer func() {
		for _, stop := range traceStops {
			if err := stopTracing(stop, nil); err != nil {
				cfg.log.Warn("tracing flush", "error", err)
			}
		}
	}()

	// Banks first, on ports of their own choosing; the gateway is told where they are.
	var servers []*bank.Server
	shutdownBanks := func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, s := range servers {
			if err := s.Shutdown(sctx); err != nil {
				cfg.log.Warn("bank shutdown", "error", err)
			}
		}
	}
	bankURLs := map[string]string{}
	var gatewayURLs []string
	for _, l := range cfg.listens {
		gatewayURLs = append(gatewayURLs, "https://"+l)
	}
	for _, n := range names {
		reg, err := startMetrics(n)
		if err != nil {
			shutdownBanks()
			return err
		}
		tp, err := startTrace(tracing.Options{Service: tracing.ServiceBank, Instance: n, Attributes: []attribute.KeyValue{tracing.AttrBank.String(n)}})
		if err != nil {
			shutdownBanks()
			return err
		}
		s, err := bank.NewServer(ctx, bank.ServerConfig{
			Config: bank.Config{
				Name:         n,
				DataDir:      dataDir,
				DatabaseURL:  bankDB[n],
				AccountsFile: filepath.Join(fixDir, n+"_server_accounts.json"),
				Logger:       cfg.log,
			},
			Listen:         "127.0.0.1:0",
			CAFile:         filepath.Join(certDir, "ca.pem"),
			CertFile:       filepath.Join(certDir, "bank-"+n+".pem"),
			KeyFile:        filepath.Join(certDir, "bank-"+n+"-key.pem"),
			GatewayURLs:    gatewayURLs,
			Metrics:        reg,
			TracerProvider: tp,
		})
		if err == nil {
			err = s.Start(ctx)
		}
		if err != nil {
			shutdownBanks()
			return err
		}
		servers = append(servers, s)
		bankURLs[n] = "https://" + s.Addr()
	}
	defer shutdownBanks()

	// The gateway replicas, the first alone (it applies the store's migrations and imports
	// the users), then the others.
	var gws []*gateway.Gateway
	shutdownGateways := func() error {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var errs []error
		for _, g := range gws {
			errs = append(errs, g.Shutdown(sctx))
		}
		gws = nil
		return errors.Join(errs...)
	}
	for i, listen := range cfg.listens {
		gcfg := gateway.DefaultConfig()
		gcfg.Listen, gcfg.WebListen = listen, cfg.webs[i]
		gcfg.WebHandler = dashboard.Handler(dashboard.DistFS())
		gcfg.Banks = bankURLs
		gcfg.UsersFile = filepath.Join(fixDir, "user_details.json")
		gcfg.DataDir = dataDir
		gcfg.DatabaseURL = gatewayDB
		gcfg.CAFile = filepath.Join(certDir, "ca.pem")
		gcfg.CertFile = filepath.Join(certDir, "gateway.pem")
		gcfg.KeyFile = filepath.Join(certDir, "gateway-key.pem")
		gcfg.TxnTimeout = cfg.txnTimeout
		// Everything runs on loopback: so may the webhook endpoints being developed.
		gcfg.WebhookAllowPrivate, gcfg.WebhookAllowHTTP = true, true
		gcfg.Logger = cfg.log
		if len(cfg.listens) > 1 {
			gcfg.Logger = cfg.log.With("replica", i+1)
		}
		name := "gateway"
		if i > 0 {
			name = fmt.Sprintf("gateway%d", i+1)
		}
		if gcfg.Metrics, err = startMetrics(name); err != nil {
			shutdownGateways()
			return err
		}
		if gcfg.TracerProvider, err = startTrace(tracing.Options{Service: tracing.ServiceGateway, Instance: name}); err != nil {
			shutdownGateways()
			return err
		}
		g, err := gateway.New(ctx, gcfg)
		if err != nil {
			shutdownGateways()
			return err
		}
		if err := g.Start(ctx); err != nil {
			// Nothing is served yet: close the store and stop what New started.
			g.Shutdown(context.Background())
			shutdownGateways()
			return err
		}
		gws = append(gws, g)
	}
	g := gws[0]

	enrollments, err := issueDevEnrollments(ctx, servers, g)
	if err != nil {
		shutdownGateways()
		return err
	}
	backend := "sqlite"
	if cfg.databaseURL != "" {
		backend = "postgres"
	}
	admin, err := devBootstrapAdmin(ctx, dir, certDir, gateway.StoreLocation{DataDir: dataDir, DatabaseURL: gatewayDB})
	if err != nil {
		// The system works without it; only the admin commands and pages need it.
		cfg.log.Warn("dev: no admin: "+err.Error(), "error", err)
	}
	info, err := writeDevInfo(dir, gws, backend, bankURLs, certDir, filepath.Join(fixDir, "user_details.json"), enrollments, admin, metricsAddrs)
	if err != nil {
		shutdownGateways()
		return err
	}
	api, web := info.API, "https://"+info.Web
	if len(gws) > 1 {
		api = strings.Join(info.APIs, ",")
		var webs []string
		for _, w := range info.Webs {
			webs = append(webs, "https://"+w)
		}
		web = strings.Join(webs, " ")
	}
	fmt.Fprintf(e.stderr, "\npaygate dev is running\n  API (mTLS)  %s\n  web (TLS)   %s\n  banks       %s\n  dev info    %s\n  try         grpcurl -cacert %s -cert %s -key %s %s list\n",
		api, web, strings.Join(sortedValues(bankURLs), " "), filepath.Join(dir, "dev.json"),
		rel(info.Certs.CA), rel(info.Certs.Cert), rel(info.Certs.Key), info.API)
	if cfg.databaseURL != "" {
		fmt.Fprintf(e.stderr, "  store       PostgreSQL %s (banks: <database>_<bank>)\n", launch.Redact(gatewayDB))
	}
	for _, en := range enrollments {
		fmt.Fprintf(e.stderr, "  enroll      %-6s %-11s %s\n", en.Holder, en.AccountID, en.Code)
	}
	if len(enrollments) > 0 {
		fmt.Fprintf(e.stderr, "              (register with: paygate register --account %s=%s %s)\n",
			enrollments[0].AccountID, enrollments[0].Code, enrollments[0].Holder)
	}
	if admin != nil {
		fmt.Fprintf(e.stderr, "  admin       %s  password %s  TOTP secret %s\n", admin.Username, admin.Password, admin.TOTPSecret)
		fmt.Fprintf(e.stderr, "              (log in with: paygate login %s; then paygate admin --help)\n", admin.Username)
	}
	for _, name := range slices.Sorted(maps.Keys(metricsAddrs)) {
		fmt.Fprintf(e.stderr, "  metrics     %-8s http://%s/metrics\n", name, metricsAddrs[name])
	}
	fmt.Fprint(e.stderr, "  webhooks    endpoints may be http:// and at loopback or private addresses (dev only:\n"+
		"              --webhook-allow-http --webhook-allow-private)\n")
	fmt.Fprintln(e.stderr)

	<-ctx.Done()
	cfg.log.Info("shutting down: gateway first, then banks")
	err = shutdownGateways()
	shutdownBanks()
	servers = nil
	cfg.log.Info("stopped")
	return err
}

// copyFixtures copies the fixture files into dir unless they are there already (the user may
// have edited them before the first start). The users file holds passwords in plain text: dir
// is created 0700 and every file is 0600, including files that were there already, whatever
// the mode of a directory that existed before.
func copyFixtures(src fs.FS, dir string, files []string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, f := range files {
		dst := filepath.Join(dir, f)
		if _, err := os.Stat(dst); err == nil {
			if err := os.Chmod(dst, 0o600); err != nil {
				return err
			}
			continue
		}
		data, err := fs.ReadFile(src, f)
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("dev: no fixtures file %s (add it, or use fewer --banks)", f)
		}
		if err != nil {
			return err
		}
		if err := writePrivate(dst, data); err != nil {
			return err
		}
	}
	return nil
}

// writePrivate writes data to path with mode 0600, also when path exists with another mode: the
// mode is set before anything is written.
func writePrivate(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// devAdminFile is where `paygate dev` keeps the demo admin's password and second factor
// across starts (mode 0600), besides dev.json.
const devAdminFile = "admin.json"

// devBootstrapAdmin makes the demo admin on a store that has none, with a new random
// password, or finds the one an earlier start made in dir/admin.json.
func devBootstrapAdmin(ctx context.Context, dir, certDir string, at gateway.StoreLocation) (*devAdmin, error) {
	files := pki.LeafFiles(certDir, identity.Identity{Role: identity.RoleAdmin, Name: devAdminName})
	path := filepath.Join(dir, devAdminFile)
	pw := generatePassword()
	enr, err := gateway.BootstrapAdmin(ctx, at, devAdminName, pw, "local:paygate-dev")
	if errors.Is(err, gateway.ErrAdminExists) {
		// Made by an earlier start on this store.
		var a devAdmin
		data, rerr := os.ReadFile(path)
		if rerr != nil || json.Unmarshal(data, &a) != nil || a.TOTPSecret == "" {
			return nil, fmt.Errorf("the store has an admin already, and %s does not say its password: sign in as that admin, or start on a new --dir", path)
		}
		a.Cert, a.Key = files.Cert, files.Key
		return &a, nil
	}
	if err != nil {
		return nil, err
	}
	a := &devAdmin{Username: enr.Username, Password: pw, TOTPSecret: enr.Secret, OTPAuthURL: enr.URL, Cert: files.Cert, Key: files.Key}
	data, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := writePrivate(path, append(data, '\n')); err != nil {
		return nil, fmt.Errorf("admin %s was made, but its password could not be kept: %w", a.Username, err)
	}
	return a, nil
}

func writeDevInfo(dir string, gws []*gateway.Gateway, backend string, banks map[string]string, certDir, usersFile string, enrollments []devEnrollment, admin *devAdmin, metricsAddrs map[string]string) (devInfo, error) {
	info := devInfo{
		Metrics:     metricsAddrs,
		API:         gws[0].Addr(),
		Web:         gws[0].WebAddr(),
		Backend:     backend,
		Banks:       banks,
		Enrollments: enrollments,
		Admin:       admin,
		Certs: devCerts{
			CA:   filepath.Join(certDir, "ca.pem"),
			Cert: filepath.Join(certDir, "client-cli.pem"),
			Key:  filepath.Join(certDir, "client-cli-key.pem"),
		},
	}
	for _, g := range gws {
		info.APIs = append(info.APIs, g.Addr())
		if w := g.WebAddr(); w != "" {
			info.Webs = append(info.Webs, w)
		}
	}
	data, err := os.ReadFile(usersFile)
	if err != nil {
		return info, err
	}
	users, err := gateway.ParseUsers(strings.NewReader(string(data)))
	if err != nil {
		return info, err
	}
	for name, u := range users {
		info.Users = append(info.Users, devUser{Username: name, Password: u.Password, Accounts: u.Accounts})
	}
	sort.Slice(info.Users, func(i, j int) bool { return info.Users[i].Username < info.Users[j].Username })
	out, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return info, err
	}
	return info, writePrivate(filepath.Join(dir, "dev.json"), append(out, '\n'))
}

func sortedValues(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k + "=" + m[k]
	}
	return out
}

// rel shortens path relative to the working directory when that is shorter.
func rel(path string) string {
	wd, err := os.Getwd()
	if err != nil {
		return path
	}
	if r, err := filepath.Rel(wd, path); err == nil && len(r) < len(path) {
		return r
	}
	return path
}
