package main

import (
	"context"
	"strings"

	"github.com/peterbourgon/ff/v3/ffcli"

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
	data := fs.String("data", ".paygate/data", "directory of the gateway's store (gateway.db)")
	txnTimeout := fs.Duration("txn-timeout", d.TxnTimeout, "longest time from accepting a payment to deciding it; undecided payments are aborted")
	tokenTTL := fs.Duration("token-ttl", d.TokenTTL, "how long a login token is valid")
	groupCommit := fs.Bool("group-commit", true, "share one store sync between concurrent writes (turn off only to measure what it buys)")
	batch := fs.Bool("batch", true, "batch concurrent prepares, commits and aborts bound for the same bank into one call (turn off only to measure what it buys)")
	bcryptCost := fs.Int("bcrypt-cost", d.BcryptCost, "bcrypt cost of password hashes (4 to 31)")
	var limits limitFlags
	limits.register(fs, d)
	var tf tlsFlags
	tf.register(fs)
	var lf logFlags
	lf.register(fs)

	return &ffcli.Command{
		Name:       "gateway",
		ShortUsage: "paygate gateway --bank NAME=ADDR... --certs DIR [flags]",
		ShortHelp:  "run the payment gateway: logins, payments by two-phase commit, balances",
		LongHelp: "Runs the gateway. On its first start it imports the users file (hashing the\n" +
			"passwords) into a SQLite store under --data. It serves the API on --listen (mTLS)\n" +
			"and the user-facing services on --web (server TLS, for browsers). Payments are\n" +
			"two-phase commits across the banks given with --bank; unfinished payments are\n" +
			"recovered after a restart.",
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
			cfg.UsersFile, cfg.DataDir = *users, *data
			cfg.CAFile, cfg.CertFile, cfg.KeyFile = ca, cert, key
			cfg.TxnTimeout, cfg.TokenTTL, cfg.BcryptCost = *txnTimeout, *tokenTTL, *bcryptCost
			cfg.NoGroupCommit, cfg.NoBatching = !*groupCommit, !*batch
			if err := limits.apply(&cfg); err != nil {
				return err
			}
			cfg.Logger = log
			if err := cfg.Validate(); err != nil {
				return usageErrorf("%v", err)
			}
			return gateway.Run(ctx, cfg)
		},
	}
}
