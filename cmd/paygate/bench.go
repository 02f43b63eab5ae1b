package main

import (
	"context"
	"errors"
	"os"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/paygate/paygate/internal/bench"
)

func init() { register(newBenchCommand) }

func newBenchCommand(e *env) *ffcli.Command {
	fs := newFlagSet(e, "bench")
	concurrency := fs.Int("concurrency", 64, "workers, each with one request in flight")
	duration := fs.Duration("duration", 10*time.Second, "how long to measure, after the warmup")
	count := fs.Int("count", 0, "measure this many requests instead of a duration")
	warmup := fs.Duration("warmup", 2*time.Second, "how long to send requests before measuring")
	mix := fs.String("mix", bench.DefaultMix.String(), "payment mix as KIND=WEIGHT: cross (between banks), same (within a bank), fail (declined: amount above the balance, or unknown payee)")
	conns := fs.Int("conns", 1, "HTTP/2 connections the workers share")
	dev := fs.String("dev", "", "bench a running 'paygate dev' whose --dir is DIR (reads DIR/dev.json) instead of starting a system")
	dir := fs.String("dir", "", "directory for the system the bench starts (certificates, fixtures, data, logs); default a temporary one")
	keep := fs.Bool("keep", false, "keep the system's directory (data and logs) after the run")
	out := fs.String("out", "", "directory for bench.json and latency.svg (default the system's directory)")
	banks := fs.Int("banks", 3, "banks of the system the bench starts")
	gateways := fs.Int("gateways", 1, "gateway replicas of the system the bench starts (more than one need --database-url); worker i sends to replica i mod N")
	dbURL := fs.String("database-url", "", "run the system the bench starts on PostgreSQL, postgres://USER[:PASSWORD]@HOST[:PORT]/NAME: the gateways use database NAME, each bank NAME_<bank> on the same server (created if missing)")
	users := fs.Int("users", 64, "users of the system the bench starts, each with an account at every bank holding 1,000,000.00 USD")
	txnTimeout := fs.Duration("txn-timeout", 30*time.Second, "the gateway's --txn-timeout")
	serverArgs := fs.String("server-args", "", "extra flags for every server the bench starts, space-separated")
	bankArgs := fs.String("bank-args", "", "extra flags for each bank the bench starts, space-separated")
	gatewayArgs := fs.String("gateway-args", "", "extra flags for the gateway the bench starts, space-separated")
	procs := fs.Int("procs", 0, "GOMAXPROCS of each bank the bench starts and of its own workers: 0 gives each its share of this machine, CPUs/(banks+1) and at least 1 (unless GOMAXPROCS is set); -1 leaves Go's default, every CPU")
	noGroup := fs.Bool("no-group-commit", false, "start the servers with group commit turned off (to measure what it buys)")
	ceiling := fs.Bool("ceiling", false, "measure only the ceiling: empty unary calls per second over the same mTLS transport")
	ceilingCalls := fs.Float64("ceiling-calls", 0, "ceiling measured earlier, in calls/s, instead of measuring it before the run; -1 skips it")
	ceilingDuration := fs.Duration("ceiling-duration", 3*time.Second, "how long the payment bench measures the ceiling first")
	profile := fs.String("profile", "", "write CPU profiles of every process to DIR (<name>.cpu.pprof; see "+bench.ProfileEnv+")")
	settle := fs.Duration("settle-timeout", 60*time.Second, "how long to wait for every hold to resolve before the conservation check")

	return &ffcli.Command{
		Name:       "bench",
		ShortUsage: "paygate bench [--concurrency 64] [--duration 10s | --count N] [--mix cross=80,same=10,fail=10] [--dev DIR] [flags]",
		ShortHelp:  "load generator: payments/s, latency percentiles, memory, and the transport ceiling",
		LongHelp: "Starts three banks and a gateway as separate processes of this binary (SQLite\n" +
			"stores, generated certificates, 64 generated users), or uses a running 'paygate dev'\n" +
			"(--dev DIR), and sends payments from concurrent workers: each a random user, a fresh\n" +
			"payment_id (a UUIDv7, as the Go client makes one) and a kind drawn from --mix. After\n" +
			"--warmup it measures for --duration (or --count payments) with a progress line every\n" +
			"second on stderr, then prints throughput, latency p50/p90/p99/p99.9/max, errors by\n" +
			"Connect code, RPCs per payment, and the RSS and CPU of each process; it writes\n" +
			"bench.json and latency.svg to --out. Before the run it measures the ceiling, empty unary\n" +
			"calls per second over the same mTLS transport (--ceiling measures only that), and\n" +
			"compares: payments/s against ceiling / RPCs-per-payment. Every run ends with the\n" +
			"conservation check: once no hold is left, the sum of all balances must equal the sum\n" +
			"before; otherwise the exit code is 1.\n\n" +
			"All the processes share this machine, so each bank and the bench's own workers run with\n" +
			"GOMAXPROCS of their share of the CPUs (--procs); the gateway keeps Go's default.\n\n" +
			"PostgreSQL and replicas: --database-url postgres://HOST/NAME puts the stores on a\n" +
			"PostgreSQL server: the gateway in database NAME, each bank in NAME_<bank>, created\n" +
			"when missing (the databases are kept: a later run with the same URL starts on their\n" +
			"data, so use a fresh NAME per run for figures from the same start). --gateways N\n" +
			"starts N gateway replicas on that database; worker i sends to replica i mod N and\n" +
			"moves on to the next when its replica cannot be reached; the report counts the\n" +
			"requests per replica.\n\n" +
			"Profiling: " + bench.ProfileEnv + "=FILE makes any paygate command write a CPU profile of\n" +
			"its run to FILE; --profile DIR sets it for each server the bench starts and profiles\n" +
			"the bench itself, for 'go tool pprof'.",
		FlagSet: fs,
		Options: ffOptions(),
		Exec: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return usageErrorf("unexpected arguments: %s", strings.Join(args, " "))
			}
			m, err := bench.ParseMix(*mix)
			if err != nil {
				return usageErrorf("--mix: %v", err)
			}
			switch {
			case *concurrency < 1:
				return usageErrorf("--concurrency %d: want at least 1", *concurrency)
			case *count < 0:
				return usageErrorf("--count %d: want 0 (use --duration) or more", *count)
			case *count == 0 && *duration <= 0:
				return usageErrorf("--duration %s: want a positive duration (or --count)", *duration)
			case *warmup < 0:
				return usageErrorf("--warmup %s: negative", *warmup)
			case *conns < 1:
				return usageErrorf("--conns %d: want at least 1", *conns)
			case *banks < 2 || *banks > 26:
				return usageErrorf("--banks %d: want 2 to 26", *banks)
			case *users < 1 || *users > 10000:
				return usageErrorf("--users %d: want 1 to 10000", *users)
			case *dev != "" && (*noGroup || *serverArgs != "" || *bankArgs != "" || *gatewayArgs != "" || *procs != 0 || *dbURL != "" || *gateways != 1):
				return usageErrorf("--dev benches a running system: --no-group-commit, --procs, --database-url, --gateways and --*-args only apply to a system the bench starts")
			case *gateways < 1 || *gateways > 16:
				return usageErrorf("--gateways %d: want 1 to 16", *gateways)
			case *gateways > 1 && *dbURL == "":
				return usageErrorf("--gateways %d: replicas share one PostgreSQL database; give it with --database-url", *gateways)
			}
			if err := checkGatewayDatabaseURL(*dbURL); err != nil {
				return err
			}
			bin, err := os.Executable()
			if err != nil {
				return err
			}
			cfg := bench.Config{
				Concurrency: *concurrency, Duration: *duration, Count: *count, Warmup: *warmup, Mix: m, Conns: *conns,
				Ceiling: *ceiling, CeilingCalls: *ceilingCalls, CeilingDuration: *ceilingDuration,
				DevDir: *dev, Binary: bin, Dir: *dir, Keep: *keep, Out: *out,
				Banks: *banks, Users: *users, TxnTimeout: *txnTimeout, Gateways: *gateways, DatabaseURL: *dbURL,
				ServerArgs: strings.Fields(*serverArgs), BankArgs: strings.Fields(*bankArgs), GatewayArgs: strings.Fields(*gatewayArgs),
				NoGroupCommit: *noGroup, Procs: *procs, ProfileDir: *profile, SettleTimeout: *settle,
				Command: append([]string{"paygate"}, os.Args[1:]...),
				Stdout:  e.stdout, Stderr: e.stderr,
			}
			_, err = bench.Run(ctx, cfg)
			if errors.Is(err, bench.ErrConservation) {
				return errors.New("the balances do not add up after the run (see above)")
			}
			return err
		},
	}
}
