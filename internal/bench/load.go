package bench

import (
	"context"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// outcome is the result of one request.
type outcome struct {
	kind Kind
	// status is "succeeded" or "failed" for a payment answered with an outcome, "" for an RPC
	// error and for a ceiling call.
	status string
	// reason is the failure reason of a failed payment, e.g. "INSUFFICIENT_FUNDS".
	reason string
	// code is the Connect code of an RPC error, e.g. "unavailable"; "" when the call succeeded.
	code string
	// expected is whether the outcome is the one the request was built for: success for cross
	// and same, a decline for fail, no error for a ceiling call.
	expected bool
	// replica is the gateway replica the request went to (an index into the system's list).
	replica int
}

// unreachable reports whether a request's Connect code says its server could not be reached
// (or did not answer in time), so that a worker tries the next gateway replica.
func unreachable(code string) bool {
	return code == "unavailable" || code == "deadline_exceeded"
}

// op sends one request as worker w.
type op func(ctx context.Context, w *worker) outcome

// loadConfig says how to drive an op.
type loadConfig struct {
	concurrency int
	warmup      time.Duration
	duration    time.Duration // measured time, when count is 0
	count       int           // measured requests, when > 0
	reqTimeout  time.Duration
	noun        string // "payments" or "calls", for the progress line
	progress    io.Writer
	// onMeasure runs when the measurement starts, after the warmup.
	onMeasure func()
	// perKind reports figures per kind of payment.
	perKind bool
	// measured, when set, counts the measured requests as they end.
	measured *atomic.Int64
	// replicas is the number of gateway replicas the requests are spread over (0 or 1: one).
	replicas int
}

// worker is one concurrent sender. Its figures are its own until the load ends.
type worker struct {
	id  int
	rng *rand.Rand

	lat        [numKinds][]time.Duration
	kinds      [numKinds]KindStats
	errors     map[string]int
	failures   map[string]int
	unexpected map[string]int
	last       time.Time // end of its last measured request
	// moved counts the worker's moves to the next gateway replica; replicas are its figures
	// per replica.
	moved    int
	replicas []ReplicaStats
}

func (w *worker) record(o outcome, d time.Duration) {
	if o.replica < len(w.replicas) {
		r := &w.replicas[o.replica]
		r.Requests++
		switch {
		case o.code != "":
			r.Errors++
		case o.status == "succeeded":
			r.Succeeded++
		case o.status == "failed":
			r.Failed++
		}
	}
	w.lat[o.kind] = append(w.lat[o.kind], d)
	k := &w.kinds[o.kind]
	k.Count++
	switch {
	case o.code != "":
		k.Errors++
		w.errors[o.code]++
	case o.status == "succeeded":
		k.Succeeded++
	case o.status == "failed":
		k.Failed++
		w.failures[o.reason]++
	}
	if !o.expected && o.code == "" && o.status != "" {
		what := o.status
		if o.reason != "" {
			what += " " + o.reason
		}
		w.unexpected[o.kind.String()+" payment "+what]++
	}
}

// KindStats are the figures of one kind of request.
type KindStats struct {
	Count     int     `json:"count"`
	Succeeded int     `json:"succeeded"`
	Failed    int     `json:"failed"`
	Errors    int     `json:"errors"`
	PerSecond float64 `json:"per_second"`
	Latency   Latency `json:"latency"`
}

// ReplicaStats are the measured requests sent to one gateway replica.
type ReplicaStats struct {
	URL       string `json:"url"`
	Requests  int    `json:"requests"`
	Succeeded int    `json:"succeeded"`
	Failed    int    `json:"failed"`
	Errors    int    `json:"errors"`
}

// LoadResult is what a load measured.
type LoadResult struct {
	// Requests is the number of measured requests, whatever their outcome.
	Requests  int     `json:"requests"`
	ElapsedS  float64 `json:"elapsed_s"`
	PerSecond float64 `json:"per_second"`
	// Succeeded and Failed count payments answered SUCCEEDED and FAILED; Errors count RPC
	// errors. For the ceiling, Succeeded counts calls without error.
	Succeeded          int                   `json:"succeeded"`
	Failed             int                   `json:"failed"`
	Errors             int                   `json:"errors"`
	SucceededPerSecond float64               `json:"succeeded_per_second"`
	FailedPerSecond    float64               `json:"failed_per_second"`
	Latency            Latency               `json:"latency"`
	ByKind             map[string]*KindStats `json:"by_kind,omitempty"`
	// ErrorsByCode counts RPC errors by Connect code.
	ErrorsByCode map[string]int `json:"errors_by_code"`
	// FailureReasons counts failed payments by reason.
	FailureReasons map[string]int `json:"failure_reasons,omitempty"`
	// Unexpected counts outcomes the requests were not built for (a failed cross-bank payment,
	// a failing payment that succeeded).
	Unexpected  map[string]int `json:"unexpected,omitempty"`
	Interrupted bool           `json:"interrupted,omitempty"`
	// ByReplica counts the requests by the gateway replica they were sent to ("gateway",
	// "gateway2"...), when there were several.
	ByReplica map[string]*ReplicaStats `json:"by_replica,omitempty"`

	latencies []time.Duration // sorted
	replicas  []ReplicaStats
}

// replicaStats returns the figures of replica r, or nil.
func (l *LoadResult) replicaStats(r int) *ReplicaStats {
	if r >= len(l.replicas) {
		return nil
	}
	st := l.replicas[r]
	return &st
}

// runLoad drives op from cfg.concurrency workers: a warmup whose requests are not measured,
// then cfg.duration (or cfg.count requests) measured, with a progress line every second. A
// cancelled ctx ends the load early; requests in flight are finished, not cancelled.
func runLoad(ctx context.Context, cfg loadConfig, do op) *LoadResult {
	var (
		recording, stopping atomic.Bool
		tickets             atomic.Int64
		completed, bad      atomic.Int64
		measured            = cfg.measured
		hist                liveHist
		measureStart        time.Time // written before recording is set
		wg                  sync.WaitGroup
	)
	if measured == nil {
		measured = new(atomic.Int64)
	}
	seed := uint64(time.Now().UnixNano())
	workers := make([]*worker, cfg.concurrency)
	begin := func() {
		if cfg.onMeasure != nil {
			cfg.onMeasure()
		}
		measureStart = time.Now()
		recording.Store(true)
	}
	if cfg.warmup <= 0 {
		begin()
	}
	reqCtx := context.WithoutCancel(ctx)
	for i := range workers {
		w := &worker{id: i, rng: rand.New(rand.NewPCG(seed, uint64(i))),
			errors: map[string]int{}, failures: map[string]int{}, unexpected: map[string]int{},
			replicas: make([]ReplicaStats, max(cfg.replicas, 1))}
		workers[i] = w
		wg.Go(func() {
			for !stopping.Load() {
				rec := recording.Load()
				if rec && cfg.count > 0 && tickets.Add(1) > int64(cfg.count) {
					return
				}
				rctx, cancel := context.WithTimeout(reqCtx, cfg.reqTimeout)
				t := time.Now()
				o := do(rctx, w)
				end := time.Now()
				cancel()
				completed.Add(1)
				if rec {
					d := end.Sub(t)
					w.record(o, d)
					w.last = end
					hist.add(d)
					measured.Add(1)
					if o.code != "" {
						bad.Add(1)
					}
				}
			}
		})
	}
	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()

	start := time.Now()
	var warm, end <-chan time.Time
	if cfg.warmup > 0 {
		warm = time.After(cfg.warmup)
	} else if cfg.count == 0 {
		end = time.After(cfg.duration)
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	done := ctx.Done()
	interrupted := false
	lastTick, lastCompleted := start, int64(0)
loop:
	for {
		select {
		case <-warm:
			warm = nil
			begin()
			if cfg.count == 0 {
				end = time.After(cfg.duration)
			}
		case <-end:
			end = nil
			stopping.Store(true)
		case <-done:
			done = nil
			interrupted = true
			stopping.Store(true)
		case now := <-tick.C:
			if cfg.progress == nil {
				continue
			}
			c := completed.Load()
			rate := float64(c-lastCompleted) / now.Sub(lastTick).Seconds()
			lastTick, lastCompleted = now, c
			if !recording.Load() {
				fmt.Fprintf(cfg.progress, "warmup %4.0fs  rate %6.0f/s\n", now.Sub(start).Seconds(), rate)
				continue
			}
			p99 := "-"
			if q := hist.quantile(0.99); q > 0 {
				p99 = fmtDur(q)
			}
			fmt.Fprintf(cfg.progress, "%6.0fs  %s %8d  rate %6.0f/s  p99 %8s  errors %d\n",
				max(now.Sub(measureStart).Seconds(), 0), cfg.noun, measured.Load(), rate, p99, bad.Load())
		case <-allDone:
			break loop
		}
	}

	res := &LoadResult{Interrupted: interrupted, ErrorsByCode: map[string]int{}, FailureReasons: map[string]int{},
		Unexpected: map[string]int{}}
	var last time.Time
	var byKind [numKinds][]time.Duration
	var kinds [numKinds]KindStats
	for _, w := range workers {
		if w.last.After(last) {
			last = w.last
		}
		for k := range numKinds {
			byKind[k] = append(byKind[k], w.lat[k]...)
			kinds[k].Count += w.kinds[k].Count
			kinds[k].Succeeded += w.kinds[k].Succeeded
			kinds[k].Failed += w.kinds[k].Failed
			kinds[k].Errors += w.kinds[k].Errors
		}
		if res.replicas == nil {
			res.replicas = make([]ReplicaStats, len(w.replicas))
		}
		for r, st := range w.replicas {
			res.replicas[r].Requests += st.Requests
			res.replicas[r].Succeeded += st.Succeeded
			res.replicas[r].Failed += st.Failed
			res.replicas[r].Errors += st.Errors
		}
		mergeCounts(res.ErrorsByCode, w.errors)
		mergeCounts(res.FailureReasons, w.failures)
		mergeCounts(res.Unexpected, w.unexpected)
	}
	if !last.IsZero() {
		res.ElapsedS = last.Sub(measureStart).Seconds()
	}
	if cfg.perKind {
		res.ByKind = map[string]*KindStats{}
	}
	for k := range numKinds {
		res.Requests += kinds[k].Count
		res.Succeeded += kinds[k].Succeeded
		res.Failed += kinds[k].Failed
		res.Errors += kinds[k].Errors
		res.latencies = append(res.latencies, byKind[k]...)
		if cfg.perKind && kinds[k].Count > 0 {
			ks := kinds[k]
			ks.Latency = Summarize(byKind[k])
			ks.PerSecond = perSecond(ks.Count, res.ElapsedS)
			res.ByKind[Kind(k).String()] = &ks
		}
	}
	res.Latency = Summarize(res.latencies)
	res.PerSecond = perSecond(res.Requests, res.ElapsedS)
	res.SucceededPerSecond = perSecond(res.Succeeded, res.ElapsedS)
	res.FailedPerSecond = perSecond(res.Failed, res.ElapsedS)
	return res
}

func mergeCounts(dst, src map[string]int) {
	for k, v := range src {
		dst[k] += v
	}
}

func perSecond(n int, seconds float64) float64 {
	if seconds <= 0 {
		return 0
	}
	return float64(n) / seconds
}

// fmtDur formats d with three significant digits in a unit that suits it.
func fmtDur(d time.Duration) string {
	switch {
	case d < time.Microsecond:
		return fmt.Sprintf("%dns", d.Nanoseconds())
	case d < time.Millisecond:
		return fmt.Sprintf("%.3gµs", float64(d)/1e3)
	case d < time.Second:
		return fmt.Sprintf("%.3gms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.3gs", d.Seconds())
}

// fmtMS formats a duration given in milliseconds.
func fmtMS(v float64) string { return fmtDur(time.Duration(v * 1e6)) }

// sortedKeys returns m's keys by descending count, then by name.
func sortedKeys(m map[string]int) []string {
	keys := slices.Collect(maps.Keys(m))
	slices.SortFunc(keys, func(a, b string) int {
		if m[a] != m[b] {
			return m[b] - m[a]
		}
		if a < b {
			return -1
		}
		return 1
	})
	return keys
}
