package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/paygate/paygate/internal/chaos"
)

func init() { register(newChaosCommand) }

func newChaosCommand(e *env) *ffcli.Command {
	d := chaos.DefaultConfig()
	fs := newFlagSet(e, "chaos")
	duration := fs.Duration("duration", 30*time.Minute, "how long clients pay and faults are injected")
	seed := fs.Uint64("seed", 0, "seed of every random choice (workload and faults); 0 picks one from the clock")
	clients := fs.Int("clients", d.Clients, "concurrent clients, each logged in as its own user (2 to 8)")
	faultMin := fs.Duration("fault-every-min", d.FaultEveryMin, "shortest interval between two faults")
	faultMax := fs.Duration("fault-every-max", d.FaultEveryMax, "longest interval between two faults")
	noFaults := fs.Bool("no-faults", false, "run the workload without faults (a baseline)")
	txnTimeout := fs.Duration("txn-timeout", d.TxnTimeout, "the gateway's --txn-timeout")
	resolveAfter := fs.Duration("resolve-after", d.ResolveAfter, "the banks' --resolve-after")
	settle := fs.Duration("settle-timeout", d.SettleTimeout, "how long the system may take to quiesce after the faults stop")
	progress := fs.Duration("progress", 30*time.Second, "interval of progress lines")
	diskMiB := fs.Int64("disk-size-mb", d.DiskSize>>20, "size in MiB of the tmpfs under each process's data directory, which the disk-full faults fill; it must hold the run's stores")
	dbURL := fs.String("database-url", "", "the PostgreSQL profile, postgres://USER[:PASSWORD]@HOST[:PORT]/NAME: the gateway replicas use database NAME, each bank NAME_<bank> on the same server (created if missing; give a fresh NAME for each run)")
	gateways := fs.Int("gateways", 0, "gateway replicas, killed, paused and restarted like every process; 0 means 2 with --database-url, else 1 (replicas need --database-url)")
	leaseTTL := fs.Duration("lease-ttl", 2*time.Second, "the gateway replicas' --lease-ttl, with --database-url")
	dir := fs.String("dir", "", "directory for the system (certificates, fixtures, stores, logs); default a temporary one")
	keep := fs.Bool("keep", false, "keep the system's directory after a run without violations (it is always kept after one with violations)")

	return &ffcli.Command{
		Name:       "chaos",
		ShortUsage: "paygate chaos [--duration 30m] [--seed N] [flags]",
		ShortHelp:  "randomized fault run: payments and refunds under kills, pauses and network faults, then the invariants",
		LongHelp: "Starts three banks and a gateway as separate processes of this binary, each with its\n" +
			"own store, the gateway reaching every bank through a TCP fault proxy. Concurrent clients\n" +
			"make random payments (same bank, across banks, overdrafts, unknown payees, retries with\n" +
			"the same payment_id), refunds of payments made to them (partial, of all that is left,\n" +
			"over the cap, several of one payment at once, retried with the same refund_id), and now\n" +
			"and then a deposit or a withdrawal straight to a bank (retried with the same entry_id),\n" +
			"while faults are injected at random times: SIGKILL and restart of any process,\n" +
			"SIGSTOP/SIGCONT, and latency, dropped connections, resets and blackholes between the\n" +
			"gateway and the banks. After --duration every fault is healed, the system quiesces, and\n" +
			"the invariants are checked: money conserved, no overdraft, no hold left, every payment\n" +
			"and refund at both banks or neither and at most once, every account moved by its\n" +
			"payments, its refunds and its journaled entries, every entry journaled once as answered,\n" +
			"every answer a client got matches the ledgers, every accepted payment and refund\n" +
			"decided, each payment's succeeded refunds adding up to its refunded_amount and never to\n" +
			"more than its amount. Prints the seed first (replay a run with --seed), progress lines,\n" +
			"and a report (refunds counted by outcome); exits 1 on any violation. See\n" +
			"docs/RELIABILITY.md.\n\n" +
			"The PostgreSQL profile (--database-url postgres://HOST/NAME) keeps the gateway's store in\n" +
			"database NAME and each bank's in NAME_<bank>, created when missing, and runs --gateways\n" +
			"replicas of the gateway on NAME (2 by default). Clients spread over the replicas and\n" +
			"send each retry to the next one; replicas are killed (and restarted) and paused like\n" +
			"any process; there are no disk-full faults. The checks add: every replica answers\n" +
			"GetPayment with the same outcome for every payment and refund. The run audits the money\n" +
			"its own payments moved, so it needs databases of its own: give a fresh NAME each time (it\n" +
			"refuses databases that hold stores already; they are kept after the run, for\n" +
			"inspection: drop them with dropdb when done).",
		FlagSet: fs,
		Options: ffOptions(),
		Exec: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return usageErrorf("unexpected arguments: %s", strings.Join(args, " "))
			}
			bin, err := os.Executable()
			if err != nil {
				return err
			}
			cfg := d
			cfg.Duration, cfg.Seed, cfg.Clients = *duration, *seed, *clients
			cfg.FaultEveryMin, cfg.FaultEveryMax, cfg.NoFaults = *faultMin, *faultMax, *noFaults
			cfg.TxnTimeout, cfg.ResolveAfter, cfg.SettleTimeout = *txnTimeout, *resolveAfter, *settle
			cfg.Progress, cfg.Bin, cfg.Log = *progress, bin, e.stderr
			cfg.DiskSize = *diskMiB << 20
			cfg.DatabaseURL, cfg.Gateways, cfg.LeaseTTL = *dbURL, *gateways, *leaseTTL
			if err := checkGatewayDatabaseURL(*dbURL); err != nil {
				return err
			}
			if cfg.Seed == 0 {
				cfg.Seed = uint64(time.Now().UnixNano())
			}
			if err := cfg.Validate(); err != nil {
				return usageErrorf("%v", err)
			}
			root := *dir
			if root == "" {
				if root, err = os.MkdirTemp("", "paygate-chaos-"); err != nil {
					return err
				}
			} else if err := os.MkdirAll(root, 0o755); err != nil {
				return err
			}
			cfg.Dir = root
			fmt.Fprintf(e.stdout, "seed %d\n", cfg.Seed)
			rep, err := chaos.Run(ctx, nil, cfg)
			if err != nil {
				fmt.Fprintf(e.stderr, "chaos: the system's files are in %s\n", root)
				return err
			}
			fmt.Fprint(e.stdout, rep.String())
			if !rep.OK() {
				fmt.Fprintf(e.stderr, "chaos: the system's files (stores and logs) are in %s\n", root)
				return fmt.Errorf("%d invariant violations (seed %d)", len(rep.Violations), rep.Seed)
			}
			if *keep {
				fmt.Fprintf(e.stderr, "chaos: the system's files are in %s\n", root)
			} else {
				os.RemoveAll(root)
			}
			return nil
		},
	}
}
