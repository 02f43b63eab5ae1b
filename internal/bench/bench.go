// Package bench is paygate's load generator, behind `paygate bench`.
//
// Run starts a whole system as separate processes (three banks and a gateway, each re-executed
// from the paygate binary with its own SQLite store, generated certificates and generated users)
// or uses a running `paygate dev`, logs its users in, and sends payments from concurrent workers:
// a mix of cross-bank, same-bank and failing ones, each with a fresh payment_id (a UUIDv7, as
// the client makes). After a warmup it measures for a duration or a count, with a progress line
// every second, and then reports throughput, exact latency percentiles, errors by Connect code,
// the processes' memory and CPU, and the transport ceiling: empty unary calls per second over
// the same mutual-TLS HTTP/2 loopback transport, divided by the RPCs a payment takes. Every run
// ends with the conservation check: once every hold and pending credit is resolved, the sum of
// all balances must equal the sum before the run, plus the deposits and minus the withdrawals
// made meanwhile (audit.Conserved).
package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
	"github.com/paygate/paygate/internal/account"
	"github.com/paygate/paygate/internal/audit"
	"github.com/paygate/paygate/internal/launch"
	"github.com/paygate/paygate/internal/rpcserver"
)

// ErrConservation is returned by Run when the balances do not add up after the run.
var ErrConservation = errors.New("conservation check failed")

// Config configures Run.
type Config struct {
	// Concurrency is the number of workers, each with one request in flight.
	Concurrency int
	// Duration is how long to measure, after Warmup. Ignored when Count > 0.
	Duration time.Duration
	// Count is how many requests to measure, after Warmup.
	Count int
	// Warmup is how long to send requests before measuring.
	Warmup time.Duration
	// Mix weighs the kinds of payment.
	Mix Mix
	// Conns is the number of HTTP/2 connections the workers share (default 1).
	Conns int

	// Ceiling measures only the ceiling: empty unary calls, for Duration or Count.
	Ceiling bool
	// CeilingCalls, when positive, is a ceiling measured before (calls/s); otherwise the
	// payment bench measures one for CeilingDuration first. A negative value skips it.
	CeilingCalls    float64
	CeilingDuration time.Duration

	// DevDir is the directory of a running `paygate dev`; empty starts a system.
	DevDir string
	// Binary is the paygate executable whose bank and gateway subcommands run the system.
	Binary string
	// Dir is where the system lives (certificates, fixtures, data, logs); empty makes a
	// temporary directory, removed at the end unless Keep (the results in it are kept when Out
	// is empty).
	Dir  string
	Keep bool
	// Out is the directory of bench.json and latency.svg; default the system's directory.
	Out string
	// Banks and Users size the generated system; Balance is every account's opening balance
	// in minor units.
	Banks, Users int
	Balance      int64
	// TxnTimeout is the gateway's --txn-timeout.
	TxnTimeout time.Duration
	// Gateways is the number of gateway replicas of the system the bench starts (default 1);
	// more than one need DatabaseURL. Each worker sends to one replica, round-robin, and moves
	// on to the next when its replica cannot be reached.
	Gateways int
	// DatabaseURL puts the system the bench starts on PostgreSQL: the gateways use the
	// database it names, each bank <that name>_<bank> on the same server, created if missing.
	DatabaseURL string
	// ServerArgs go to every server, BankArgs to each bank, GatewayArgs to the gateway.
	ServerArgs, BankArgs, GatewayArgs []string
	// NoGroupCommit starts the servers with group commit turned off.
	NoGroupCommit bool
	// Procs is the GOMAXPROCS of each bank the bench starts and of the bench's own workers
	// while they send payments to it. 0 gives each its share of the machine they share with
	// the gateway, CPUs/(Banks+1) and at least 1, unless GOMAXPROCS is set in the environment
	// (then everyone inherits it); a negative value leaves Go's default, every CPU. The
	// gateway always keeps Go's default.
	Procs int
	// ProfileDir, when set, receives a CPU profile of every process: the children's through
	// PAYGATE_CPUPROFILE, the bench's own as bench.cpu.pprof.
	ProfileDir string
	// SettleTimeout bounds the wait for every hold to resolve before the conservation check.
	SettleTimeout time.Duration
	// RequestTimeout bounds each request.
	RequestTimeout time.Duration

	// Command is the command line, recorded in bench.json.
	Command []string
	// Stdout receives the summary, Stderr the progress.
	Stdout, Stderr io.Writer
}

func (c *Config) defaults() {
	if c.Concurrency <= 0 {
		c.Concurrency = 64
	}
	if c.Duration <= 0 && c.Count <= 0 {
		c.Duration = 10 * time.Second
	}
	if c.Mix.total() == 0 {
		c.Mix = DefaultMix
	}
	if c.Conns <= 0 {
		c.Conns = 1
	}
	if c.CeilingDuration <= 0 {
		c.CeilingDuration = 3 * time.Second
	}
	if c.Banks <= 0 {
		c.Banks = 3
	}
	if c.Gateways <= 0 {
		c.Gateways = 1
	}
	if c.Users <= 0 {
		c.Users = 64
	}
	if c.Balance <= 0 {
		c.Balance = 1_000_000_00
	}
	if c.TxnTimeout <= 0 {
		c.TxnTimeout = 30 * time.Second
	}
	if c.SettleTimeout <= 0 {
		c.SettleTimeout = 60 * time.Second
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = c.TxnTimeout + 30*time.Second
	}
	if c.Stdout == nil {
		c.Stdout = io.Discard
	}
	if c.Stderr == nil {
		c.Stderr = io.Discard
	}
}

// Result is everything a run measured; bench.json holds it.
type Result struct {
	Command []string  `json:"command"`
	Time    time.Time `json:"time"`
	Machine Machine   `json:"machine"`
	// Kind is "payments" or "ceiling".
	Kind string `json:"kind"`
	// System is "processes" (started by the bench), "dev" (a running paygate dev) or
	// "in-process" (the ceiling server).
	System string        `json:"system"`
	Config ResultConfig  `json:"config"`
	Load   *LoadResult   `json:"results"`
	Procs  []ProcFigures `json:"processes"`
	// RPCsPerPayment is the mean number of RPCs per measured payment.
	RPCsPerPayment float64 `json:"rpcs_per_payment,omitempty"`
	// Ceiling is empty unary calls per second over the same transport.
	Ceiling *CeilingFigure `json:"ceiling,omitempty"`
	// CeilingPayments is Ceiling / RPCsPerPayment: the payments/s the transport alone allows.
	CeilingPayments float64 `json:"ceiling_payments_per_second,omitempty"`
	// CeilingPercent is payments/s as a percentage of CeilingPayments (target ≥ 40).
	CeilingPercent float64       `json:"ceiling_percent,omitempty"`
	Conservation   *Conservation `json:"conservation,omitempty"`
	// RSSSeries samples every process's RSS and CPU time during the measurement, about 30
	// times, to show whether memory stays flat and what a payment costs as the run goes on.
	RSSSeries []RSSSample `json:"rss_series,omitempty"`
	Dir       string      `json:"dir,omitempty"`
}

// RSSSample is the RSS of each process, in MiB, T seconds into the measurement, with the CPU
// time each has used since the measurement started and the requests measured so far.
type RSSSample struct {
	T        float64            `json:"t_s"`
	MB       map[string]float64 `json:"rss_mb"`
	CPU      map[string]float64 `json:"cpu_s"`
	Requests int64              `json:"requests"`
}

// rssSeries samples the processes' RSS in the background.
type rssSeries struct {
	done    chan struct{}
	stopped chan struct{}
	samples []RSSSample
}

func (s *rssSeries) start(procs []*proc, d time.Duration, measured *atomic.Int64) {
	every := max(d/30, time.Second)
	s.done, s.stopped = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(s.stopped)
		t0 := time.Now()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-s.done:
				return
			case <-tick.C:
				smp := RSSSample{T: math.Round(time.Since(t0).Seconds()), MB: map[string]float64{},
					CPU: map[string]float64{}, Requests: measured.Load()}
				for _, p := range procs {
					if ps, err := readProc(p.pid); err == nil {
						smp.MB[p.name] = mb(ps.RSSKB)
						smp.CPU[p.name] = math.Round((ps.CPUSec-p.start.CPUSec)*100) / 100
					}
				}
				s.samples = append(s.samples, smp)
			}
		}
	}()
}

func (s *rssSeries) stop() []RSSSample {
	if s.done == nil {
		return nil
	}
	close(s.done)
	<-s.stopped
	return s.samples
}

// ResultConfig is the configuration a run used.
type ResultConfig struct {
	Concurrency int      `json:"concurrency"`
	DurationS   float64  `json:"duration_s,omitempty"`
	Count       int      `json:"count,omitempty"`
	WarmupS     float64  `json:"warmup_s"`
	Mix         string   `json:"mix,omitempty"`
	Conns       int      `json:"conns"`
	Banks       int      `json:"banks,omitempty"`
	Gateways    int      `json:"gateways,omitempty"`
	Backend     string   `json:"backend,omitempty"`
	Users       int      `json:"users,omitempty"`
	TxnTimeout  string   `json:"txn_timeout,omitempty"`
	GroupCommit string   `json:"group_commit,omitempty"`
	ServerArgs  []string `json:"server_args,omitempty"`
	BankArgs    []string `json:"bank_args,omitempty"`
	GatewayArgs []string `json:"gateway_args,omitempty"`
	// Procs is the GOMAXPROCS the banks were started with and the bench's workers ran with;
	// 0 when they kept Go's default or the environment's GOMAXPROCS.
	Procs int `json:"procs,omitempty"`
	// ClientGOMAXPROCS is the GOMAXPROCS the bench's workers ran with.
	ClientGOMAXPROCS int `json:"client_gomaxprocs,omitempty"`
}

// CeilingFigure is the transport ceiling a payment run is compared with.
type CeilingFigure struct {
	CallsPerSecond float64 `json:"calls_per_second"`
	// Source is "measured" (just before the run) or "given" (--ceiling-calls).
	Source    string   `json:"source"`
	DurationS float64  `json:"duration_s,omitempty"`
	Latency   *Latency `json:"latency,omitempty"`
}

// ProcFigures are the memory and CPU of one process over the measurement.
type ProcFigures struct {
	Name string `json:"name"`
	PID  int    `json:"pid"`
	// RSS when the measurement started (after the warmup) and when it ended, and the peak
	// (VmHWM) over the process's life, in MiB.
	RSSStartMB float64 `json:"rss_start_mb"`
	RSSEndMB   float64 `json:"rss_end_mb"`
	PeakMB     float64 `json:"peak_rss_mb"`
	// CPUSeconds is user+system CPU time used during the measurement; CPUCores is that over
	// the elapsed time (1.0 = one core busy throughout).
	CPUSeconds float64 `json:"cpu_s"`
	CPUCores   float64 `json:"cpu_cores"`
}

// Conservation is the audit at the end of a run.
type Conservation struct {
	OK          bool   `json:"ok"`
	TotalBefore int64  `json:"total_before"`
	TotalAfter  int64  `json:"total_after"`
	Held        int64  `json:"held"`
	Pending     int64  `json:"pending_credit"`
	Accounts    int    `json:"accounts"`
	Message     string `json:"message"`
}

// proc is a process the bench samples.
type proc struct {
	name  string
	pid   int
	start procSample
}

// Run runs the bench cfg describes, prints progress to cfg.Stderr and the summary to
// cfg.Stdout, and writes bench.json and latency.svg. It returns ErrConservation (with the
// result) when the audit fails, and other errors when the run could not be made.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg.defaults()
	res := &Result{Command: cfg.Command, Time: time.Now().UTC(), Machine: machine(),
		Config: ResultConfig{Concurrency: cfg.Concurrency, Count: cfg.Count, WarmupS: cfg.Warmup.Seconds(), Conns: cfg.Conns}}
	if cfg.Count <= 0 {
		res.Config.DurationS = cfg.Duration.Seconds()
	}
	if cfg.ProfileDir != "" {
		if err := os.MkdirAll(cfg.ProfileDir, 0o755); err != nil {
			return nil, err
		}
		f, err := os.Create(filepath.Join(cfg.ProfileDir, "bench.cpu.pprof"))
		if err != nil {
			return nil, err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return nil, fmt.Errorf("--profile: %w (is %s set too?)", err, ProfileEnv)
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	if cfg.Ceiling {
		return runCeilingOnly(ctx, cfg, res)
	}
	return runPayments(ctx, cfg, res)
}

func (cfg *Config) loadConfig() loadConfig {
	return loadConfig{concurrency: cfg.Concurrency, warmup: cfg.Warmup, duration: cfg.Duration, count: cfg.Count,
		reqTimeout: cfg.RequestTimeout, progress: cfg.Stderr}
}

func runCeilingOnly(ctx context.Context, cfg Config, res *Result) (*Result, error) {
	res.Kind, res.System = "ceiling", "in-process"
	out := cfg.Out
	if out == "" {
		dir, err := os.MkdirTemp("", "paygate-bench-")
		if err != nil {
			return nil, err
		}
		out = dir
	}
	fmt.Fprintf(cfg.Stderr, "ceiling: empty unary calls (grpc.health.v1.Health/Check) over mTLS HTTP/2 on loopback, %d workers, %d connection(s)\n",
		cfg.Concurrency, cfg.Conns)
	self := []*proc{{name: "bench (server and client)"}}
	lc := cfg.loadConfig()
	lc.onMeasure = func() { sampleStart(self) }
	load, err := runCeiling(ctx, lc, cfg.Conns)
	if err != nil {
		return nil, err
	}
	res.Load = load
	res.Procs = sampleEnd(self, load.ElapsedS)
	res.Ceiling = &CeilingFigure{CallsPerSecond: load.PerSecond, Source: "measured", DurationS: load.ElapsedS, Latency: &load.Latency}
	res.Dir = out
	printCeiling(cfg.Stdout, res)
	if err := writeResults(out, res, "ceiling: empty unary calls"); err != nil {
		return res, err
	}
	fmt.Fprintf(cfg.Stdout, "results      %s, %s\n", filepath.Join(out, "bench.json"), filepath.Join(out, "latency.svg"))
	return res, nil
}

func runPayments(ctx context.Context, cfg Config, res *Result) (*Result, error) {
	res.Kind = "payments"
	res.Config.Mix = cfg.Mix.String()

	// The ceiling first, while nothing else runs.
	switch {
	case cfg.CeilingCalls > 0:
		res.Ceiling = &CeilingFigure{CallsPerSecond: cfg.CeilingCalls, Source: "given"}
	case cfg.CeilingCalls == 0:
		fmt.Fprintf(cfg.Stderr, "measuring the ceiling (empty unary calls) for %s...\n", cfg.CeilingDuration)
		lc := loadConfig{concurrency: cfg.Concurrency, warmup: min(cfg.Warmup, time.Second), duration: cfg.CeilingDuration,
			reqTimeout: 10 * time.Second}
		load, err := runCeiling(ctx, lc, cfg.Conns)
		if err != nil {
			return nil, fmt.Errorf("ceiling: %w", err)
		}
		res.Ceiling = &CeilingFigure{CallsPerSecond: load.PerSecond, Source: "measured", DurationS: load.ElapsedS, Latency: &load.Latency}
		fmt.Fprintf(cfg.Stderr, "ceiling: %.0f calls/s (p50 %s, p99 %s)\n", load.PerSecond, fmtMS(load.Latency.P50), fmtMS(load.Latency.P99))
	}

	// The system.
	var sys *system
	var procs []*proc
	var err error
	if cfg.DevDir != "" {
		if sys, err = devSystem(cfg.DevDir); err != nil {
			return nil, err
		}
		res.System = "dev"
		u, _ := strings.CutPrefix(sys.gatewayURL, "https://")
		if pid := listenerPID(u); pid > 0 {
			procs = append(procs, &proc{name: "paygate dev", pid: pid})
		}
	} else {
		groupArgs, groupState, err := groupCommitArgs(cfg)
		if err != nil {
			return nil, err
		}
		res.System = "processes"
		res.Config.Banks, res.Config.Users, res.Config.Gateways = cfg.Banks, cfg.Users, cfg.Gateways
		res.Config.Backend = "sqlite"
		if cfg.DatabaseURL != "" {
			res.Config.Backend = "postgres"
		}
		if cfg.Gateways > 1 && cfg.DatabaseURL == "" {
			return nil, errors.New("bench: gateway replicas share a PostgreSQL database: give one with --database-url")
		}
		res.Config.TxnTimeout = cfg.TxnTimeout.String()
		res.Config.GroupCommit = groupState
		res.Config.ServerArgs = append(groupArgs, cfg.ServerArgs...)
		res.Config.BankArgs, res.Config.GatewayArgs = cfg.BankArgs, cfg.GatewayArgs
		res.Config.Procs = shareProcs(cfg.Procs, cfg.Banks, runtime.NumCPU(), os.Getenv("GOMAXPROCS") != "")
		dir := cfg.Dir
		temp := dir == ""
		if temp {
			if dir, err = os.MkdirTemp("", "paygate-bench-"); err != nil {
				return nil, err
			}
		}
		if cfg.Binary == "" {
			return nil, errors.New("bench: no paygate binary to run the servers")
		}
		gws := "a gateway"
		if cfg.Gateways > 1 {
			gws = fmt.Sprintf("%d gateway replicas", cfg.Gateways)
		}
		fmt.Fprintf(cfg.Stderr, "starting %d banks and %s (%s) in %s...\n", cfg.Banks, gws, res.Config.Backend, dir)
		sys, err = startOwnSystem(ctx, ownSystemConfig{binary: cfg.Binary, dir: dir, banks: cfg.Banks, users: cfg.Users,
			balance: cfg.Balance, txnTimeout: cfg.TxnTimeout, serverArgs: res.Config.ServerArgs, bankArgs: cfg.BankArgs,
			gatewayArgs: cfg.GatewayArgs, bankProcs: res.Config.Procs, profileDir: cfg.ProfileDir,
			gateways: cfg.Gateways, databaseURL: cfg.DatabaseURL})
		if err != nil {
			if temp && !cfg.Keep {
				os.RemoveAll(dir)
			}
			return nil, err
		}
		defer func() {
			sys.stop()
			switch {
			case cfg.Keep || !temp:
				fmt.Fprintf(cfg.Stderr, "kept %s\n", dir)
			case cfg.Out == "":
				// The results are in dir: keep them and the logs, drop the rest.
				for _, d := range []string{"data", "certs", "fixtures"} {
					os.RemoveAll(filepath.Join(dir, d))
				}
			default:
				os.RemoveAll(dir)
			}
		}()
		for _, name := range sys.own.Names() {
			procs = append(procs, &proc{name: name, pid: sys.own.Proc(name).Pid()})
		}
		res.Dir = dir
	}
	procs = append(procs, &proc{name: "bench (client)"})
	out := cfg.Out
	if out == "" {
		out = sys.dir
	}
	if out == "" {
		if out, err = os.MkdirTemp("", "paygate-bench-"); err != nil {
			return nil, err
		}
	}
	res.Dir = out

	// Clients and users: cfg.Conns connections to every replica.
	conns := make([][]gatewayv1connect.PaymentServiceClient, len(sys.gatewayURLs))
	for r, url := range sys.gatewayURLs {
		conns[r] = make([]gatewayv1connect.PaymentServiceClient, cfg.Conns)
		for i := range conns[r] {
			conns[r][i] = gatewayv1connect.NewPaymentServiceClient(sys.httpClient(sys.clientTLS), url, rpcserver.ClientOptions()...)
		}
	}
	replicas := len(sys.gatewayURLs)
	auditClient := sys.httpClient(sys.gatewayTLS)
	gen, err := newPayer(ctx, sys, cfg)
	if err != nil {
		return nil, err
	}

	// The ledger before: settled first, in case an earlier run against a dev system left
	// holds.
	before, err := sys.waitSettled(ctx, auditClient, cfg.SettleTimeout)
	if err != nil {
		return nil, fmt.Errorf("audit before the run: %w", err)
	}

	what := fmt.Sprintf("%d banks, %d users, each account %s", len(sys.banks), len(sys.users), fmtMinor(sys.balance))
	if replicas > 1 {
		what += fmt.Sprintf(", %d gateway replicas (worker i sends to replica i mod %d)", replicas, replicas)
	}
	if sys.mode == "dev" {
		what = fmt.Sprintf("paygate dev at %s, %d users", sys.gatewayURL, len(sys.users))
	}
	length := cfg.Duration.String()
	if cfg.Count > 0 {
		length = fmt.Sprintf("%d payments", cfg.Count)
	}
	fmt.Fprintf(cfg.Stderr, "bench: %d workers, %s after %s warmup, mix %s; %s\n", cfg.Concurrency, length, cfg.Warmup, cfg.Mix, what)
	lc := cfg.loadConfig()
	lc.noun, lc.perKind = "payments", true
	series := &rssSeries{}
	lc.measured = new(atomic.Int64)
	lc.onMeasure = func() {
		sampleStart(procs)
		series.start(procs, cfg.Duration, lc.measured)
	}
	if res.Config.Procs > 0 {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(res.Config.Procs))
	}
	res.Config.ClientGOMAXPROCS = runtime.GOMAXPROCS(0)
	lc.replicas = replicas
	load := runLoad(ctx, lc, func(ctx context.Context, w *worker) outcome {
		// Worker i starts at replica i mod N and stays there while it answers; when it cannot
		// be reached, the worker moves on to the next (the list is its failover order).
		r := (w.id + w.moved) % replicas
		o := gen.pay(ctx, w, conns[r][(w.id/replicas)%cfg.Conns])
		o.replica = r
		if replicas > 1 && unreachable(o.code) {
			w.moved++
		}
		return o
	})
	if replicas > 1 {
		load.ByReplica = map[string]*ReplicaStats{}
		for r, url := range sys.gatewayURLs {
			if st := load.replicaStats(r); st != nil {
				st.URL = url
				load.ByReplica[launch.ReplicaName(r)] = st
			}
		}
	}
	res.RSSSeries = series.stop()
	res.Load = load
	res.Procs = sampleEnd(procs, load.ElapsedS)
	if gone := sys.exited(); len(gone) > 0 {
		fmt.Fprintf(cfg.Stderr, "warning: %s exited during the run; see the logs in %s\n", strings.Join(gone, ", "), filepath.Join(sys.dir, "logs"))
	}

	var rpcs float64
	for k := range numKinds {
		if ks := load.ByKind[Kind(k).String()]; ks != nil {
			rpcs += float64(ks.Count * Kind(k).RPCs())
		}
	}
	if load.Requests > 0 {
		res.RPCsPerPayment = rpcs / float64(load.Requests)
	} else {
		res.RPCsPerPayment = cfg.Mix.RPCsPerPayment()
	}
	if res.Ceiling != nil && res.Ceiling.CallsPerSecond > 0 {
		res.CeilingPayments = res.Ceiling.CallsPerSecond / res.RPCsPerPayment
		res.CeilingPercent = 100 * load.PerSecond / res.CeilingPayments
	}

	// Conservation, after every transaction has resolved.
	fmt.Fprintf(cfg.Stderr, "waiting for every hold to resolve (up to %s)...\n", cfg.SettleTimeout)
	after, settleErr := sys.waitSettled(context.WithoutCancel(ctx), auditClient, cfg.SettleTimeout)
	c := &Conservation{TotalBefore: before.Total, TotalAfter: after.Total, Held: after.Held, Pending: after.Pending, Accounts: after.Accounts}
	// Deposits and withdrawals made during the run change the total; they are named only then.
	flows := ""
	if d, w := after.audit.Deposited-before.audit.Deposited, after.audit.Withdrawn-before.audit.Withdrawn; d != 0 || w != 0 {
		flows = fmt.Sprintf(", deposits %d, withdrawals %d", d, w)
	}
	switch conserved := audit.Conserved(before.audit, after.audit); {
	case settleErr != nil:
		c.Message = fmt.Sprintf("conservation: FAILED (%v; total %d before, %d now)", settleErr, before.Total, after.Total)
	case conserved != nil && after.audit.Base() != before.audit.Base():
		c.Message = fmt.Sprintf("conservation: FAILED (total %d before, %d after%s: %+d)", before.Total, after.Total, flows, after.audit.Base()-before.audit.Base())
	case conserved != nil:
		want := after.audit.Initial + after.audit.Deposited - after.audit.Withdrawn
		c.Message = fmt.Sprintf("conservation: FAILED (total %d, initial %d + deposits %d - withdrawals %d = %d: %+d)", after.Total,
			after.audit.Initial, after.audit.Deposited, after.audit.Withdrawn, want, after.Total-want)
	case flows != "":
		c.OK = true
		c.Message = fmt.Sprintf("conservation: OK (total %d before, %d after%s, no holds)", before.Total, after.Total, flows)
	default:
		c.OK = true
		c.Message = fmt.Sprintf("conservation: OK (total %d before and after, no holds)", before.Total)
	}
	res.Conservation = c

	printPayments(cfg.Stdout, cfg, res)
	title := fmt.Sprintf("paygate bench: %d workers, mix %s, %.0f payments/s", cfg.Concurrency, cfg.Mix, load.PerSecond)
	if err := writeResults(out, res, title); err != nil {
		return res, err
	}
	fmt.Fprintf(cfg.Stdout, "results      %s, %s\n", filepath.Join(out, "bench.json"), filepath.Join(out, "latency.svg"))
	fmt.Fprintln(cfg.Stdout, c.Message)
	if !c.OK {
		return res, ErrConservation
	}
	return res, nil
}

// shareProcs resolves Config.Procs to the GOMAXPROCS to give each bank and the bench's
// workers, 0 for none.
//
// Every process of the system the bench starts shares one machine with the bench. Each Go
// runtime sizes itself for every CPU, and on a small machine five of them waking idle threads
// for each other cost more than they run: on 2 CPUs, banks limited to one thread each (they
// use about a quarter of a CPU each) gave 12 to 30% more payments/s, and the bench's workers
// on one thread about 7% more again. See docs/PERFORMANCE.md.
func shareProcs(flag, banks, cpus int, envSet bool) int {
	switch {
	case flag > 0:
		return flag
	case flag < 0 || envSet:
		return 0
	}
	return max(1, cpus/(banks+1))
}

// groupCommitArgs returns the server flags that turn group commit off when cfg asks for it,
// as the servers spell them (their --help says), and the state of group commit for the record.
func groupCommitArgs(cfg Config) ([]string, string, error) {
	state := "on"
	for _, a := range append(append(append([]string(nil), cfg.ServerArgs...), cfg.BankArgs...), cfg.GatewayArgs...) {
		if strings.Contains(a, "group-commit=false") || strings.Contains(a, "no-group-commit") {
			state = "off (by server flags)"
		}
	}
	if !cfg.NoGroupCommit {
		return nil, state, nil
	}
	var flag string
	for _, sub := range []string{"bank", "gateway"} {
		var help bytes.Buffer
		cmd := exec.Command(cfg.Binary, sub, "--help")
		cmd.Stdout, cmd.Stderr = &help, &help
		_ = cmd.Run() // --help exits 0; the text is what matters
		f := ""
		switch {
		case strings.Contains(help.String(), "-no-group-commit"):
			f = "--no-group-commit"
		case strings.Contains(help.String(), "-group-commit"):
			f = "--group-commit=false"
		default:
			return nil, "", fmt.Errorf("--no-group-commit: `paygate %s` has no group commit flag in this build", sub)
		}
		if flag != "" && flag != f {
			return nil, "", fmt.Errorf("--no-group-commit: bank and gateway spell the flag differently (%s, %s); use --bank-args and --gateway-args", flag, f)
		}
		flag = f
	}
	return []string{flag}, "off", nil
}

func sampleStart(procs []*proc) {
	for _, p := range procs {
		p.start, _ = readProc(p.pid)
	}
}

func sampleEnd(procs []*proc, elapsed float64) []ProcFigures {
	var out []ProcFigures
	for _, p := range procs {
		end, err := readProc(p.pid)
		if err != nil {
			continue
		}
		pid := p.pid
		if pid == 0 {
			pid = os.Getpid()
		}
		f := ProcFigures{Name: p.name, PID: pid, RSSStartMB: mb(p.start.RSSKB), RSSEndMB: mb(end.RSSKB), PeakMB: mb(end.HWMKB),
			CPUSeconds: round2(end.CPUSec - p.start.CPUSec)}
		if elapsed > 0 {
			f.CPUCores = round2(f.CPUSeconds / elapsed)
		}
		out = append(out, f)
	}
	return out
}

func mb(kb int64) float64      { return round2(float64(kb) / 1024) }
func round2(v float64) float64 { return math.Round(v*100) / 100 }

// fmtMinor formats an amount in minor units of a two-decimal currency.
func fmtMinor(v int64) string { return fmt.Sprintf("%d.%02d", v/100, v%100) }

func writeResults(dir string, res *Result, title string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	data, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "bench.json"), append(data, '\n'), 0o644); err != nil {
		return err
	}
	var svg bytes.Buffer
	if err := WriteSVG(&svg, res.Load.latencies, res.Load.Latency, title); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "latency.svg"), svg.Bytes(), 0o644)
}

// payer makes payments for the workers.
type payer struct {
	mix      Mix
	users    []benchUser
	byBank   map[string][]string // every known account, by bank
	banks    []string
	currency string
	// amountMax bounds a normal payment's amount (minor units); failAmount is above every
	// balance.
	amountMax, failAmount int64
}

type benchUser struct {
	name     string
	token    string
	accounts []string
}

func newPayer(ctx context.Context, sys *system, cfg Config) (*payer, error) {
	p := &payer{mix: cfg.Mix, byBank: map[string][]string{}, currency: sys.currency, amountMax: 10000, failAmount: 100_000_000_000_000}
	if sys.mode == "dev" {
		p.amountMax = 100 // the demo accounts hold little
	}
	auth := gatewayv1connect.NewAuthServiceClient(sys.httpClient(sys.clientTLS), sys.gatewayURL, rpcserver.ClientOptions()...)
	for _, u := range sys.users {
		lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		resp, err := auth.Login(lctx, connect.NewRequest(&gatewayv1.LoginRequest{Username: u.Name, Password: u.Password}))
		cancel()
		if err != nil {
			return nil, fmt.Errorf("login %s: %w", u.Name, err)
		}
		p.users = append(p.users, benchUser{name: u.Name, token: resp.Msg.GetToken(), accounts: u.Accounts})
		for _, a := range u.Accounts {
			b := account.Bank(a)
			if _, ok := sys.banks[b]; ok {
				p.byBank[b] = append(p.byBank[b], a)
			}
		}
	}
	for b := range p.byBank {
		p.banks = append(p.banks, b)
	}
	sort.Strings(p.banks)
	if len(p.banks) < 2 && (cfg.Mix[Cross] > 0 || cfg.Mix[Fail] > 0) {
		return nil, errors.New("cross-bank and failing payments need accounts at two banks at least")
	}
	return p, nil
}

// newPaymentID returns a fresh payment_id, a UUIDv7 as the Go client makes one.
func newPaymentID() string {
	id, err := uuid.NewV7()
	if err != nil {
		return uuid.NewString()
	}
	return id.String()
}

// pay sends one payment of a kind drawn from the mix, from a random user's random account.
func (p *payer) pay(ctx context.Context, w *worker, c gatewayv1connect.PaymentServiceClient) outcome {
	r := w.rng
	u := &p.users[r.IntN(len(p.users))]
	from := u.accounts[r.IntN(len(u.accounts))]
	fromBank := account.Bank(from)
	kind := p.mix.pick(r)
	amount := 1 + r.Int64N(p.amountMax)
	var to string
	otherBank := func() string {
		for {
			if b := p.banks[r.IntN(len(p.banks))]; b != fromBank {
				return b
			}
		}
	}
	switch kind {
	case Same:
		same := p.byBank[fromBank]
		if len(same) < 2 {
			kind = Cross
			break
		}
		for to = from; to == from; {
			to = same[r.IntN(len(same))]
		}
	case Fail:
		b := otherBank()
		if r.IntN(2) == 0 {
			to = p.byBank[b][r.IntN(len(p.byBank[b]))]
			amount = p.failAmount
		} else {
			to = fmt.Sprintf("%s-%d", b, 90_000_000+r.IntN(10_000_000)) // no such account
		}
	}
	if kind == Cross {
		b := otherBank()
		to = p.byBank[b][r.IntN(len(p.byBank[b]))]
	}
	req := connect.NewRequest(&gatewayv1.ExecutePaymentRequest{
		PaymentId: newPaymentID(), FromAccount: from, ToAccount: to, Amount: amount, Currency: p.currency,
	})
	req.Header().Set("Authorization", "Bearer "+u.token)
	resp, err := c.ExecutePayment(ctx, req)
	if err != nil {
		return outcome{kind: kind, code: connect.CodeOf(err).String()}
	}
	pm := resp.Msg.GetPayment()
	o := outcome{kind: kind}
	switch pm.GetStatus() {
	case gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED:
		o.status = "succeeded"
		o.expected = kind != Fail
	case gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED:
		o.status = "failed"
		o.reason = strings.TrimPrefix(pm.GetFailureReason().String(), "FAILURE_REASON_")
		o.expected = kind == Fail
	default:
		o.status = strings.ToLower(strings.TrimPrefix(pm.GetStatus().String(), "PAYMENT_STATUS_"))
	}
	return o
}
