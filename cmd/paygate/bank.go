package main

import (
	"context"
	"path/filepath"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/paygate/paygate/services/bank"
)

func init() { register(newBankCommand) }

func newBankCommand(e *env) *ffcli.Command {
	fs := newFlagSet(e, "bank")
	name := fs.String("name", "", "bank name, e.g. bank1; it owns the accounts bank1-<number> (required)")
	listen := fs.String("listen", "127.0.0.1:9001", "address to serve BankService on (mTLS, gateway certificates only)")
	accounts := fs.String("accounts", "", "accounts file imported on the first start (default fixtures/<name>_server_accounts.json)")
	data := fs.String("data", ".paygate/data", "directory of the bank's ledger (<name>.db)")
	currency := fs.String("currency", bank.DefaultCurrency, "currency of accounts in the seed format ({\"bank1-1001\": 100.0})")
	gateway := fs.String("gateway", "", "the gateway's API address, HOST:PORT or https://HOST:PORT, asked for the outcome of transactions left in doubt")
	groupCommit := fs.Bool("group-commit", true, "share one ledger sync between concurrent writes (turn off only to measure what it buys)")
	resolveAfter := fs.Duration("resolve-after", 5*time.Second, "how long past a prepared transaction's deadline to wait before asking the gateway for its outcome")
	var tf tlsFlags
	tf.register(fs)
	var lf logFlags
	lf.register(fs)

	return &ffcli.Command{
		Name:       "bank",
		ShortUsage: "paygate bank --name NAME --listen ADDR --certs DIR [flags]",
		ShortHelp:  "run one bank server: its ledger and the participant side of two-phase commit",
		LongHelp: "Runs one bank. On its first start it imports its accounts from --accounts into a\n" +
			"SQLite ledger under --data; afterwards the ledger is the truth. Only the gateway's\n" +
			"certificate may call it. A transaction it voted YES on stays prepared until the\n" +
			"gateway says commit or abort; past its deadline plus --resolve-after the bank asks\n" +
			"the gateway (--gateway) for the decision.",
		FlagSet: fs,
		Options: ffOptions(),
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
			gw := *gateway
			if gw != "" && !strings.HasPrefix(gw, "https://") {
				gw = "https://" + gw
			}
			return bank.Run(ctx, bank.ServerConfig{
				Config: bank.Config{
					Name:          *name,
					DataDir:       *data,
					AccountsFile:  *accounts,
					Currency:      *currency,
					Logger:        log,
					NoGroupCommit: !*groupCommit,
				},
				Listen:       *listen,
				CAFile:       ca,
				CertFile:     cert,
				KeyFile:      key,
				GatewayURL:   gw,
				ResolveAfter: *resolveAfter,
			})
		},
	}
}
