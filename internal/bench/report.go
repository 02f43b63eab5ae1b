package bench

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

func printLatency(w io.Writer, l Latency) {
	fmt.Fprintf(w, "latency      p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (mean %s)\n",
		fmtMS(l.P50), fmtMS(l.P90), fmtMS(l.P99), fmtMS(l.P999), fmtMS(l.Max), fmtMS(l.Mean))
}

func printCounts(w io.Writer, label string, m map[string]int, none string) {
	if len(m) == 0 {
		if none != "" {
			fmt.Fprintf(w, "%-12s %s\n", label, none)
		}
		return
	}
	parts := make([]string, 0, len(m))
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	fmt.Fprintf(w, "%-12s %s\n", label, strings.Join(parts, ", "))
}

func printProcs(w io.Writer, procs []ProcFigures) {
	if len(procs) == 0 {
		return
	}
	fmt.Fprintf(w, "processes    %-34s %9s %9s %9s %8s %6s\n", "", "RSS start", "RSS end", "peak RSS", "CPU", "cores")
	for _, p := range procs {
		fmt.Fprintf(w, "             %-34s %7.1fMB %7.1fMB %7.1fMB %7.1fs %6.2f\n",
			fmt.Sprintf("%s (pid %d)", p.Name, p.PID), p.RSSStartMB, p.RSSEndMB, p.PeakMB, p.CPUSeconds, p.CPUCores)
	}
}

func printCeiling(w io.Writer, res *Result) {
	l := res.Load
	fmt.Fprintf(w, "\nceiling      %d workers, %d connection(s), in one process: server (rpcserver, mTLS, interceptors) and client\n",
		res.Config.Concurrency, res.Config.Conns)
	fmt.Fprintf(w, "calls        %d in %.2fs: %.0f calls/s (errors %d)\n", l.Requests, l.ElapsedS, l.PerSecond, l.Errors)
	printLatency(w, l.Latency)
	printCounts(w, "errors", l.ErrorsByCode, "none")
	printProcs(w, res.Procs)
}

func printPayments(w io.Writer, cfg Config, res *Result) {
	l := res.Load
	fmt.Fprintln(w)
	if l.Interrupted {
		fmt.Fprintln(w, "(interrupted: figures cover the part that ran)")
	}
	gc := ""
	if res.Config.GroupCommit != "" {
		gc = ", group commit " + res.Config.GroupCommit
	}
	if res.Config.Procs > 0 {
		gc += fmt.Sprintf(", banks and bench at GOMAXPROCS=%d", res.Config.Procs)
	}
	fmt.Fprintf(w, "bench        %d workers, mix %s, %s system%s\n", cfg.Concurrency, cfg.Mix, res.System, gc)
	fmt.Fprintf(w, "payments     %d in %.2fs: %.1f/s (succeeded %.1f/s, failed %.1f/s, errors %d)\n",
		l.Requests, l.ElapsedS, l.PerSecond, l.SucceededPerSecond, l.FailedPerSecond, l.Errors)
	for k := range numKinds {
		ks := l.ByKind[Kind(k).String()]
		if ks == nil {
			continue
		}
		fmt.Fprintf(w, "  %-10s %8d  %8.1f/s  succeeded %d, failed %d, errors %d; p50 %s, p99 %s\n",
			Kind(k), ks.Count, ks.PerSecond, ks.Succeeded, ks.Failed, ks.Errors, fmtMS(ks.Latency.P50), fmtMS(ks.Latency.P99))
	}
	for _, name := range sortedReplicas(l.ByReplica) {
		r := l.ByReplica[name]
		fmt.Fprintf(w, "  %-10s %8d  succeeded %d, failed %d, errors %d (%s)\n", name, r.Requests, r.Succeeded, r.Failed, r.Errors, r.URL)
	}
	printLatency(w, l.Latency)
	printCounts(w, "errors", l.ErrorsByCode, "none")
	printCounts(w, "failures", l.FailureReasons, "")
	printCounts(w, "unexpected", l.Unexpected, "")
	fmt.Fprintf(w, "RPCs/payment %.2f (cross %d, same %d, fail %d: ExecutePayment and the gateway's calls to the banks)\n",
		res.RPCsPerPayment, Cross.RPCs(), Same.RPCs(), Fail.RPCs())
	if c := res.Ceiling; c != nil && c.CallsPerSecond > 0 {
		fmt.Fprintf(w, "ceiling      %.0f empty calls/s (%s) / %.2f RPCs per payment = %.0f payments/s\n",
			c.CallsPerSecond, c.Source, res.RPCsPerPayment, res.CeilingPayments)
		fmt.Fprintf(w, "             payments/s vs ceiling/RPCs-per-payment = %.1f%% (target ≥ 40%%)\n", res.CeilingPercent)
	}
	printProcs(w, res.Procs)
}

// sortedReplicas returns the replicas' names in launch order: "gateway", "gateway2", ...
// "gateway10" (by length, then name).
func sortedReplicas(m map[string]*ReplicaStats) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		if len(names[i]) != len(names[j]) {
			return len(names[i]) < len(names[j])
		}
		return names[i] < names[j]
	})
	return names
}
