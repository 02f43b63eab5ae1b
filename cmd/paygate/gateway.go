package main

import (
	"context"
	"strings"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/paygate/paygate/internal/tracing"
	"github.com/paygate/paygate/services/bank"
	"github.com/paygate/paygate/services/gateway"
	dashboard "github.com/paygate/paygate/web"
)

func init() { register(newGatewayCommand) }

func newGatewayCommand(e *env) *ffcli.Command {
	fs := newFlagSet(e, "gateway")
	d := gateway.DefaultConfig()
	listen := fs.String("listen", d.Listen, "API address (mTLS: clients need a certificate from the CA)")
	web := fs.String("web", "127.0.0.1:8080", "web address (server TLS only, user-facing services); empty disables it")
	banks := bankAddrs{}
	fs.Var(banks, "bank", "a bank as NAME=HOST:PORT; repeat for each bank (PAYGATE_BANK takes a comma-separated list)")
	users := fs.String("users", "fixtures/user_details.json", "users file imported on the first start")
	data := fs.String("data", ".paygate/data", "directory of the gateway's SQLite store (gateway.db), when --database-url is empty")
	dbURL := fs.String("database-url", "", "PostgreSQL database of the gateway's store instead of the SQLite file, postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE; every replica of one gateway is given the same one")
	leaseTTL := fs.Duration("lease-ttl", d.LeaseTTL, "with --database-url: how long this replica's lease on the payments it drives lasts without renewal; when the replica dies, another takes its payments over after this long")
	txnTimeout := fs.Duration("txn-timeout", d.TxnTimeout, "longest time from accepting a payment to deciding it; undecided payments are aborted")
	tokenTTL := fs.Duration("token-ttl", d.TokenTTL, "how long a login token is valid")
	groupCommit := fs.Bool("group-commit", true, "share one store sync between concurrent writes (turn off only to measure what it buys)")
	batch := fs.Bool("batch", true, "batch concurrent prepares, commits and aborts bound for the same bank into one call (turn off only to measure what it buys)")
	bcryptCost := fs.Int("bcrypt-cost", d.BcryptCost, "bcrypt cost of password hashes (4 to 31)")
	var limits limitFlags
	limits.register(fs, d)
	var hooks webhookFlags
	hooks.register(fs, d)
	var tf tlsFlags
	tf.register(fs)
	var lf logFlags
	lf.register(fs)
	var mf metricsFlag
	mf.register(fs)

	return &ffcli.Command{
		Name:       "gateway",
		ShortUsage: "paygate gateway --bank NAME=ADDR... --certs DIR [flags]",
		ShortHelp:  "run the payment gateway: logins, payments by two-phase commit, balances",
		LongHelp: "Runs the gateway. On its first start it imports the users file (hashing the\n" +
			"passwords) into a SQLite store under --data, or into the PostgreSQL database\n" +
			"--database-url. It serves the API on --listen (mTLS) and the user-facing services on\n" +
			"--web (server TLS, for browsers). Payments are two-phase commits across the banks\n" +
			"given with --bank; unfinished payments are recovered after a restart.\n\n" +
			"Replicas: any number of gateways may share one PostgreSQL database (the same\n" +
			"--database-url, the same --bank list and certificate, each its own --listen and\n" +
			"--web); any of them takes any request. Each drives the payments it admitted under a\n" +
			"lease in the database, renewed while it runs; when a replica dies, another takes its\n" +
			"payments over once the lease has run out (--lease-ttl). Give the banks every\n" +
			"replica's address (paygate bank --gateway a,b,c) and clients the list too\n" +
			"(PAYGATE_GATEWAY=a,b,c). --data is not used then. See docs/SCALING.md.\n\n" +
			"Webhooks: users' events are POSTed to the endpoints they register, signed, retried\n" +
			"with backoff for --webhook-retry-for. Endpoints must be https:// URLs at public\n" +
			"addresses unless --webhook-allow-http and --webhook-allow-private say otherwise.\n\n" +
			"--metrics-listen ADDR serves Prometheus metrics at http://ADDR/metrics (plain HTTP,\n" +
			"nothing of the API): RPCs per procedure, payments by outcome, phase latencies, and\n" +
			"whether each bank answers its health probes.",
		FlagSet: fs,
		Options: ffOptions(),
		Exec: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return usageErrorf("unexpected arguments: %s", strings.Join(args, " "))
			}
			log, err := lf.logger(e.stderr)
			if err != nil {
				return err
			}
			ca, cert, key, err := tf.resolve("gateway")
			if err != nil {
				return err
			}
			cfg := gateway.DefaultConfig()
			cfg.Listen, cfg.WebListen = *listen, *web
			cfg.WebHandler = dashboard.Handler(dashboard.DistFS())
			cfg.Banks = banks
			if err := checkGatewayDatabaseURL(*dbURL); err != nil {
				return err
			}
			if *leaseTTL <= 0 {
				return usageErrorf("--lease-ttl %s: want a positive duration", *leaseTTL)
			}
			cfg.UsersFile, cfg.DataDir, cfg.DatabaseURL = *users, *data, *dbURL
			if cfg.DatabaseURL != "" {
				cfg.LeaseTTL = *leaseTTL
			}
			cfg.CAFile, cfg.CertFile, cfg.KeyFile = ca, cert, key
			cfg.TxnTimeout, cfg.TokenTTL, cfg.BcryptCost = *txnTimeout, *tokenTTL, *bcryptCost
			cfg.NoGroupCommit, cfg.NoBatching = !*groupCommit, !*batch
			if err := limits.apply(&cfg); err != nil {
				return err
			}
			if err := hooks.apply(&cfg); err != nil {
				return err
			}
			cfg.Logger = log
			if err := cfg.Validate(); err != nil {
				return usageErrorf("%v", err)
			}
			tp, stopTrace, err := startTracing(ctx, tracing.Options{Service: tracing.ServiceGateway, Instance: cfg.Listen})
			if err != nil {
				return err
			}
			cfg.TracerProvider = tp
			reg, ops, err := mf.start(log)
			if err != nil {
				return stopTracing(stopTrace, err)
			}
			cfg.Metrics = reg
			return stopTracing(stopTrace, stopMetrics(ops, gateway.Run(ctx, cfg)))
		},
	}
}

// checkGatewayDatabaseURL is the usage check of the gateway's --database-url: the bank's rule
// (empty, or a postgres:// URL, never quoted in the message), in the gateway's words.
func checkGatewayDatabaseURL(raw string) error {
	cfg := bank.Config{DatabaseURL: raw}
	if err := cfg.CheckDatabaseURL(); err != nil {
		return usageErrorf("--database-url: %s", strings.TrimPrefix(err.Error(), "bank: "))
	}
	return nil
}
