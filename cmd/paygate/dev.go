package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/paygate/paygate/fixtures"
	"github.com/paygate/paygate/internal/pki"
	"github.com/paygate/paygate/services/bank"
	"github.com/paygate/paygate/services/gateway"
	dashboard "github.com/paygate/paygate/web"
)

func init() { register(newDevCommand) }

// devInfo is DIR/dev.json: what scripts and tests need to find a running `paygate dev`.
type devInfo struct {
	API   string            `json:"api"`
	Web   string            `json:"web"`
	Banks map[string]string `json:"banks"`
	Certs devCerts          `json:"certs"`
	Users []devUser         `json:"users"`
	// Enrollments are the codes issued at this start for the demo holders who have no login
	// yet, to register with.
	Enrollments []devEnrollment `json:"enrollments"`
}

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
	var lf logFlags
	lf.register(fs)

	return &ffcli.Command{
		Name:       "dev",
		ShortUsage: "paygate dev [--dir .paygate] [--listen 127.0.0.1:8443] [--web 127.0.0.1:8080] [--banks 3]",
		ShortHelp:  "run the whole system in one process: banks, gateway, certificates, demo users",
		LongHelp: "Runs N banks and the gateway in one process on the embedded SQLite store.\n" +
			"On the first run it makes a CA and certificates under DIR/certs and imports the\n" +
			"demo fixtures; later runs keep the data under DIR/data. It writes DIR/dev.json with\n" +
			"the endpoints, certificate paths and demo users. Ctrl-C shuts down gracefully.",
		FlagSet: fs,
		Options: ffOptions(),
		Exec: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return usageErrorf("unexpected arguments: %s", strings.Join(args, " "))
			}
			if *nbanks < 1 || *nbanks > 26 {
				return usageErrorf("--banks %d: want 1 to 26", *nbanks)
			}
			log, err := lf.logger(e.stderr)
			if err != nil {
				return err
			}
			return runDev(ctx, e, devConfig{dir: *dir, listen: *listen, web: *web, banks: *nbanks,
				fixtures: *fixturesDir, txnTimeout: *txnTimeout, log: log})
		},
	}
}

type devConfig struct {
	dir, listen, web string
	banks            int
	fixtures         string
	txnTimeout       time.Duration
	log              *slog.Logger
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
	certs, err := pki.GenerateReport(certDir, pki.Options{Banks: names})
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
	gatewayURL := "https://" + cfg.listen
	for _, n := range names {
		s, err := bank.NewServer(ctx, bank.ServerConfig{
			Config: bank.Config{
				Name:         n,
				DataDir:      dataDir,
				AccountsFile: filepath.Join(fixDir, n+"_server_accounts.json"),
				Logger:       cfg.log,
			},
			Listen:      "127.0.0.1:0",
			CAFile:      filepath.Join(certDir, "ca.pem"),
			CertFile:    filepath.Join(certDir, "bank-"+n+".pem"),
			KeyFile:     filepath.Join(certDir, "bank-"+n+"-key.pem"),
			GatewayURLs: []string{gatewayURL},
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

	gcfg := gateway.DefaultConfig()
	gcfg.Listen, gcfg.WebListen = cfg.listen, cfg.web
	gcfg.WebHandler = dashboard.Handler(dashboard.DistFS())
	gcfg.Banks = bankURLs
	gcfg.UsersFile = filepath.Join(fixDir, "user_details.json")
	gcfg.DataDir = dataDir
	gcfg.CAFile = filepath.Join(certDir, "ca.pem")
	gcfg.CertFile = filepath.Join(certDir, "gateway.pem")
	gcfg.KeyFile = filepath.Join(certDir, "gateway-key.pem")
	gcfg.TxnTimeout = cfg.txnTimeout
	gcfg.Logger = cfg.log
	g, err := gateway.New(ctx, gcfg)
	if err != nil {
		return err
	}
	if err := g.Start(ctx); err != nil {
		// Nothing is served yet: close the store and stop what New started.
		g.Shutdown(context.Background())
		return err
	}

	enrollments, err := issueDevEnrollments(ctx, servers, g)
	if err != nil {
		g.Shutdown(context.Background())
		return err
	}
	info, err := writeDevInfo(dir, g, bankURLs, certDir, filepath.Join(fixDir, "user_details.json"), enrollments)
	if err != nil {
		g.Shutdown(context.Background())
		return err
	}
	fmt.Fprintf(e.stderr, "\npaygate dev is running\n  API (mTLS)  %s\n  web (TLS)   https://%s\n  banks       %s\n  dev info    %s\n  try         grpcurl -cacert %s -cert %s -key %s %s list\n",
		info.API, info.Web, strings.Join(sortedValues(bankURLs), " "), filepath.Join(dir, "dev.json"),
		rel(info.Certs.CA), rel(info.Certs.Cert), rel(info.Certs.Key), info.API)
	for _, en := range enrollments {
		fmt.Fprintf(e.stderr, "  enroll      %-6s %-11s %s\n", en.Holder, en.AccountID, en.Code)
	}
	if len(enrollments) > 0 {
		fmt.Fprintf(e.stderr, "              (register with: paygate register --account %s=%s %s)\n",
			enrollments[0].AccountID, enrollments[0].Code, enrollments[0].Holder)
	}
	fmt.Fprintln(e.stderr)

	<-ctx.Done()
	cfg.log.Info("shutting down: gateway first, then banks")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = g.Shutdown(sctx)
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

func writeDevInfo(dir string, g *gateway.Gateway, banks map[string]string, certDir, usersFile string, enrollments []devEnrollment) (devInfo, error) {
	info := devInfo{
		API:         g.Addr(),
		Web:         g.WebAddr(),
		Banks:       banks,
		Enrollments: enrollments,
		Certs: devCerts{
			CA:   filepath.Join(certDir, "ca.pem"),
			Cert: filepath.Join(certDir, "client-cli.pem"),
			Key:  filepath.Join(certDir, "client-cli-key.pem"),
		},
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
