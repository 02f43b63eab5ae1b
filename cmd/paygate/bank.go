package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"
	"go.opentelemetry.io/otel/attribute"

	"github.com/paygate/paygate/internal/tracing"
	"github.com/paygate/paygate/services/bank"
	"github.com/paygate/paygate/services/gateway"
)

func init() { register(newBankCommand) }

func newBankCommand(e *env) *ffcli.Command {
	fs := newFlagSet(e, "bank")
	name := fs.String("name", "", "bank name, e.g. bank1; it owns the accounts bank1-<number> (required)")
	listen := fs.String("listen", "127.0.0.1:9001", "address to serve BankService on (mTLS, gateway certificates only)")
	accounts := fs.String("accounts", "", "accounts file imported on the first start (default fixtures/<name>_server_accounts.json)")
	data := fs.String("data", ".paygate/data", "directory of the bank's SQLite ledger (<name>.db), when --database-url is empty")
	dbURL := fs.String("database-url", "", "PostgreSQL database of the bank's ledger instead of the SQLite file, postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE; one database per bank")
	currency := fs.String("currency", bank.DefaultCurrency, "currency of accounts in the seed format ({\"bank1-1001\": 100.0})")
	gateways := &gatewayAddrs{}
	fs.Var(gateways, "gateway", "the gateway's API address, HOST:PORT or https://HOST:PORT, asked for the outcome of transactions left in doubt; several replicas as a comma-separated list, asked in turn")
	groupCommit := fs.Bool("group-commit", true, "share one ledger sync between concurrent writes (turn off only to measure what it buys)")
	resolveAfter := fs.Duration("resolve-after", 5*time.Second, "how long past a prepared transaction's deadline to wait before asking the gateway for its outcome")
	var tf tlsFlags
	tf.register(fs)
	var lf logFlags
	lf.register(fs)
	var mf metricsFlag
	mf.register(fs)

	return &ffcli.Command{
		Name:       "bank",
		ShortUsage: "paygate bank --name NAME --listen ADDR --certs DIR [flags]",
		ShortHelp:  "run one bank server: its ledger and the participant side of two-phase commit",
		LongHelp: "Runs one bank. On its first start it imports its accounts from --accounts into a\n" +
			"SQLite ledger under --data, or into the PostgreSQL database --database-url (which\n" +
			"must exist and serve this bank only); afterwards the ledger is the truth. Only the gateway's\n" +
			"certificate may call it. A transaction it voted YES on stays prepared until the\n" +
			"gateway says commit or abort; past its deadline plus --resolve-after the bank asks\n" +
			"the gateway (--gateway) for the decision; given several gateway replicas, it asks\n" +
			"them in turn, starting with the one that answered last.\n\n" +
			"'paygate bank enroll' issues an account's enrollment code, which its holder\n" +
			"registers at the gateway with (see 'paygate bank enroll --help').",
		FlagSet:     fs,
		Options:     ffOptions(),
		Subcommands: []*ffcli.Command{newBankEnrollCommand(e)},
		Exec: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return usageErrorf("unexpected arguments: %s", strings.Join(args, " "))
			}
			if *name == "" {
				return usageErrorf("--name is required")
			}
			log, err := lf.logger(e.stderr)
			if err != nil {
				return err
			}
			ca, cert, key, err := tf.resolve("bank-" + *name)
			if err != nil {
				return err
			}
			if *accounts == "" {
				*accounts = filepath.Join("fixtures", *name+"_server_accounts.json")
			}
			if err := checkDatabaseURLFlag(*dbURL); err != nil {
				return err
			}
			tp, stopTrace, err := startTracing(ctx, tracing.Options{Service: tracing.ServiceBank, Instance: *name,
				Attributes: []attribute.KeyValue{tracing.AttrBank.String(*name)}})
			if err != nil {
				return err
			}
			reg, ops, err := mf.start(log)
			if err != nil {
				return stopTracing(stopTrace, err)
			}
			return stopTracing(stopTrace, stopMetrics(ops, bank.Run(ctx, bank.ServerConfig{
				Config: bank.Config{
					Name:          *name,
					DataDir:       *data,
					DatabaseURL:   *dbURL,
					AccountsFile:  *accounts,
					Currency:      *currency,
					Logger:        log,
					NoGroupCommit: !*groupCommit,
				},
				Listen:         *listen,
				CAFile:         ca,
				CertFile:       cert,
				KeyFile:        key,
				GatewayURLs:    gateways.urls,
				ResolveAfter:   *resolveAfter,
				Metrics:        reg,
				TracerProvider: tp,
			})))
		},
	}
}

func newBankEnrollCommand(e *env) *ffcli.Command {
	fs := newFlagSet(e, "bank enroll")
	name := fs.String("name", "", "the bank, e.g. bank1 (required)")
	acct := fs.String("account", "", "the account to issue a code for, e.g. bank1-1004 (required)")
	data := fs.String("data", ".paygate/data", "directory of the bank's SQLite ledger (<name>.db), as given to 'paygate bank'")
	dbURL := fs.String("database-url", "", "the bank's PostgreSQL database, as given to 'paygate bank' (instead of --data)")
	ttl := fs.Duration("ttl", bank.DefaultEnrollmentTTL, fmt.Sprintf("how long the code is valid (at most %s)", bank.MaxEnrollmentTTL))
	asJSON := fs.Bool("json", false, "print JSON for scripts instead of text")
	return &ffcli.Command{
		Name:       "enroll",
		ShortUsage: "paygate bank enroll --name BANK --account ACCOUNT [--data DIR | --database-url URL] [--ttl 72h] [--json]",
		ShortHelp:  "issue a one-time enrollment code for an account, for its holder to register with",
		LongHelp: "Issues a new enrollment code for ACCOUNT and prints it with its expiry. Send it to\n" +
			"the account's holder by a channel the bank trusts (post, the bank's own app, a\n" +
			"branch); the holder registers at the gateway with it:\n" +
			"  paygate register --account ACCOUNT=CODE USERNAME\n" +
			"The gateway links the account only if the bank redeems the code for that username.\n" +
			"A code works once, for one username (that username may retry), expires after\n" +
			"--ttl, and is burned by 5 wrong attempts. A new code replaces the account's previous\n" +
			"one. The ledger keeps only a hash of the code: it is shown here once.\n\n" +
			"It opens the bank's ledger (under --data, or --database-url) directly, so it works whether the bank is\n" +
			"running or not. It refuses unknown and closed accounts.\n\n" +
			"Example:\n" +
			"  paygate bank enroll --name bank1 --account bank1-1004",
		FlagSet: fs,
		Options: ffOptions(),
		Exec: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return usageErrorf("unexpected arguments: %s", strings.Join(args, " "))
			}
			if *name == "" || *acct == "" {
				return usageErrorf("--name and --account are required")
			}
			if *ttl <= 0 || *ttl > bank.MaxEnrollmentTTL {
				return usageErrorf("--ttl %s: want more than 0 and at most %s", *ttl, bank.MaxEnrollmentTTL)
			}
			if err := checkDatabaseURLFlag(*dbURL); err != nil {
				return err
			}
			cfg := bank.Config{Name: *name, DataDir: *data, DatabaseURL: *dbURL}
			if err := cfg.Validate(); err != nil {
				return usageErrorf("%v", err)
			}
			if cfg.DatabaseURL == "" {
				if _, err := os.Stat(cfg.LedgerPath()); err != nil {
					return fmt.Errorf("no ledger of bank %s at %s: start the bank once (it imports its accounts), or give its --data directory", *name, cfg.LedgerPath())
				}
			}
			ledger, err := bank.OpenLedgerStore(ctx, cfg)
			if err != nil {
				return fmt.Errorf("bank %s: %w", *name, err)
			}
			defer ledger.Close()
			if cfg.DatabaseURL != "" {
				n, err := ledger.CountAccounts(ctx)
				if err != nil {
					return fmt.Errorf("bank %s: %w", *name, err)
				}
				if n == 0 {
					return fmt.Errorf("no accounts in the ledger of bank %s at %s: start the bank once (it imports its accounts), or give its --database-url", *name, cfg.LedgerLocation())
				}
			}
			code, err := ledger.IssueEnrollmentCode(ctx, *acct, *ttl, time.Now())
			switch {
			case errors.Is(err, bank.ErrUnknownAccount):
				return fmt.Errorf("no code issued: bank %s has no account %s", *name, *acct)
			case errors.Is(err, bank.ErrAccountClosed):
				return fmt.Errorf("no code issued: account %s is closed", *acct)
			case err != nil:
				return err
			}
			if *asJSON {
				return printJSON(e.stdout, map[string]any{"bank": *name, "account_id": code.AccountID, "holder": code.Holder,
					"code": code.Code, "expire_time": code.ExpiresAt, "replaced": code.Replaced})
			}
			fmt.Fprintf(e.stdout, "enrollment code for %s (holder %s): %s\n", code.AccountID, code.Holder, code.Code)
			fmt.Fprintf(e.stdout, "expires %s (in %s)\n", code.ExpiresAt.Local().Format(time.DateTime+" MST"), *ttl)
			switch {
			case code.ReplacedRedeemer != "":
				fmt.Fprintf(e.stdout, "it replaces the previous code, which %s had redeemed\n", code.ReplacedRedeemer)
			case code.Replaced:
				fmt.Fprintln(e.stdout, "it replaces the previous code, which no longer works")
			}
			fmt.Fprintf(e.stdout, "send it to the holder; they register with:\n  paygate register --account %s=%s USERNAME\n", code.AccountID, code.Code)
			return nil
		},
	}
}

// checkDatabaseURLFlag is the usage check of --database-url: empty (the SQLite ledger) or a
// postgres:// URL. Its message never quotes the URL, which may hold a password.
func checkDatabaseURLFlag(raw string) error {
	if raw == "" {
		return nil
	}
	cfg := bank.Config{DatabaseURL: raw}
	if err := cfg.CheckDatabaseURL(); err != nil {
		return usageErrorf("--database-url: %v", err)
	}
	return nil
}

// issueDevEnrollments issues, at each start of `paygate dev`, a fresh enrollment code for every
// open demo account whose holder has no login at the gateway and which is linked to nobody, so
// that the holder can register (`paygate register --account ACCOUNT=CODE HOLDER`). Earlier
// codes of those accounts stop working.
func issueDevEnrollments(ctx context.Context, servers []*bank.Server, g *gateway.Gateway) ([]devEnrollment, error) {
	var out []devEnrollment
	now := time.Now()
	for _, s := range servers {
		ledger := s.Ledger()
		token := ""
		for {
			accounts, next, err := ledger.ListAccounts(ctx, bank.MaxPageSize, token)
			if err != nil {
				return nil, err
			}
			for _, a := range accounts {
				if a.Closed || a.Holder == "" {
					continue
				}
				hasLogin, err := g.UserExists(ctx, a.Holder)
				if err != nil {
					return nil, err
				}
				linked, err := g.AccountLinked(ctx, a.ID)
				if err != nil {
					return nil, err
				}
				if hasLogin || linked {
					continue
				}
				c, err := ledger.IssueEnrollmentCode(ctx, a.ID, bank.DefaultEnrollmentTTL, now)
				if err != nil {
					return nil, fmt.Errorf("dev: enrollment code for %s: %w", a.ID, err)
				}
				out = append(out, devEnrollment{Holder: c.Holder, AccountID: c.AccountID, Code: c.Code, ExpireTime: c.ExpiresAt})
			}
			if token = next; token == "" {
				break
			}
		}
	}
	return out, nil
}
