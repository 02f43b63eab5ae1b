package bench

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"io"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 1000; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	rand.Shuffle(len(d), func(i, j int) { d[i], d[j] = d[j], d[i] })
	l := Summarize(d)
	for _, c := range []struct {
		name      string
		got, want float64
	}{
		{"p50", l.P50, 500}, {"p90", l.P90, 900}, {"p99", l.P99, 990}, {"p99.9", l.P999, 999},
		{"max", l.Max, 1000}, {"min", l.Min, 1}, {"mean", l.Mean, 500.5},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v ms; want %v", c.name, c.got, c.want)
		}
	}
	if !slices.IsSorted(d) {
		t.Error("Summarize did not sort its input")
	}

	for _, c := range []struct {
		values []time.Duration
		p      float64
		want   time.Duration
	}{
		{nil, 50, 0},
		{[]time.Duration{7}, 1, 7},
		{[]time.Duration{7}, 100, 7},
		{[]time.Duration{1, 2}, 50, 1},
		{[]time.Duration{1, 2}, 50.1, 2},
		{[]time.Duration{1, 2, 3, 4}, 75, 3},
		{[]time.Duration{1, 2, 3, 4}, 99.9, 4},
	} {
		if got := Percentile(c.values, c.p); got != c.want {
			t.Errorf("Percentile(%v, %v) = %v; want %v", c.values, c.p, got, c.want)
		}
	}
	if l := Summarize(nil); l.Count != 0 || l.Max != 0 {
		t.Errorf("Summarize(nil) = %+v", l)
	}
}

func TestLiveHistQuantileIsAnUpperBoundWithin12Percent(t *testing.T) {
	var h liveHist
	if h.quantile(0.99) != 0 {
		t.Fatal("empty histogram has a quantile")
	}
	var exact []time.Duration
	r := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		d := time.Duration(r.ExpFloat64() * float64(5*time.Millisecond))
		h.add(d)
		exact = append(exact, d)
	}
	slices.Sort(exact)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		want := Percentile(exact, q*100)
		got := h.quantile(q)
		if got < want || float64(got) > float64(want)*1.125+1 {
			t.Errorf("quantile(%v) = %v; exact %v", q, got, want)
		}
	}
	// Every bucket's upper bound is the value just below the next bucket's first.
	for ns := int64(0); ns < 1<<20; ns += 1 + ns/7 {
		b := histBucket(ns)
		if ns > histUpper(b) || (b > 0 && ns <= histUpper(b-1)) {
			t.Fatalf("value %d in bucket %d: bounds (%d, %d]", ns, b, histUpper(b-1), histUpper(b))
		}
	}
}

func TestParseMix(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Mix
		err  string
	}{
		{"cross=80,same=10,fail=10", Mix{80, 10, 10}, ""},
		{" cross = 1 , fail=3", Mix{Cross: 1, Fail: 3}, ""},
		{"same=5", Mix{Same: 5}, ""},
		{"cross=0,same=0", Mix{}, "at least one weight must be positive"},
		{"", Mix{}, "at least one weight must be positive"},
		{"cross", Mix{}, "want KIND=WEIGHT"},
		{"cross=-1", Mix{}, "whole number"},
		{"cross=1.5", Mix{}, "whole number"},
		{"bogus=1", Mix{}, `unknown kind "bogus"`},
		{"cross=1,cross=2", Mix{}, "given twice"},
	} {
		got, err := ParseMix(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseMix(%q) error = %v; want one containing %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("ParseMix(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
		if again, err := ParseMix(got.String()); err != nil || again != got {
			t.Errorf("ParseMix(%q.String()) = %v, %v", c.in, again, err)
		}
	}
	if got := DefaultMix.RPCsPerPayment(); got != 4.8 {
		t.Errorf("RPCs per payment of the default mix = %v; want 4.8", got)
	}
}

func TestMixPickFollowsWeights(t *testing.T) {
	m := Mix{Cross: 70, Same: 0, Fail: 30}
	r := rand.New(rand.NewPCG(3, 4))
	var n [numKinds]int
	for range 10000 {
		n[m.pick(r)]++
	}
	if n[Same] != 0 || n[Cross] < 6700 || n[Cross] > 7300 {
		t.Errorf("picked %v from %v", n, m)
	}
}

// wellFormed parses doc as XML to the end.
func wellFormed(t *testing.T, doc []byte) {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(doc))
	root := ""
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v\n%s", err, doc)
		}
		if se, ok := tok.(xml.StartElement); ok && root == "" {
			root = se.Name.Local
			if se.Name.Space != "http://www.w3.org/2000/svg" {
				t.Errorf("root namespace %q", se.Name.Space)
			}
		}
	}
	if root != "svg" {
		t.Fatalf("root element %q; want svg", root)
	}
}

func TestWriteSVG(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	var d []time.Duration
	for range 5000 {
		d = append(d, time.Duration(r.ExpFloat64()*float64(3*time.Millisecond))+200*time.Microsecond)
	}
	d = append(d, 900*time.Millisecond) // a far outlier
	l := Summarize(d)
	var b bytes.Buffer
	if err := WriteSVG(&b, d, l, `bench <&> "quotes"`); err != nil {
		t.Fatal(err)
	}
	wellFormed(t, b.Bytes())
	for _, want := range []string{"p50 ", "p99 ", "p99.9 ", "max 900ms", "&lt;&amp;&gt;", "<rect"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("SVG lacks %q", want)
		}
	}

	for _, d := range [][]time.Duration{nil, {5 * time.Millisecond}, {0, 0}} {
		b.Reset()
		if err := WriteSVG(&b, d, Summarize(d), "edge"); err != nil {
			t.Fatal(err)
		}
		wellFormed(t, b.Bytes())
	}
}

func TestRunLoadCountAndWarmup(t *testing.T) {
	var progress bytes.Buffer
	started := false
	res := runLoad(context.Background(), loadConfig{
		concurrency: 4, warmup: 1100 * time.Millisecond, count: 200, reqTimeout: time.Second,
		noun: "calls", progress: &progress, perKind: true, onMeasure: func() { started = true },
	}, func(ctx context.Context, w *worker) outcome {
		time.Sleep(time.Millisecond)
		switch w.rng.IntN(4) {
		case 0:
			return outcome{kind: Fail, status: "failed", reason: "INSUFFICIENT_FUNDS", expected: true}
		case 1:
			return outcome{kind: Cross, code: "unavailable"}
		case 2:
			return outcome{kind: Same, status: "failed", reason: "UNKNOWN_ACCOUNT"}
		}
		return outcome{kind: Cross, status: "succeeded", expected: true}
	})
	if !started {
		t.Error("onMeasure was not called")
	}
	if res.Requests != 200 {
		t.Errorf("measured %d requests; want 200", res.Requests)
	}
	if res.Succeeded+res.Failed+res.Errors != 200 || res.Errors != res.ErrorsByCode["unavailable"] {
		t.Errorf("counts: %+v", res)
	}
	if res.Unexpected["same payment failed UNKNOWN_ACCOUNT"] != res.ByKind["same"].Failed {
		t.Errorf("unexpected: %v", res.Unexpected)
	}
	if res.ElapsedS <= 0 || res.PerSecond <= 0 || res.Latency.P50 < 1 {
		t.Errorf("elapsed %v, rate %v, latency %+v", res.ElapsedS, res.PerSecond, res.Latency)
	}
	if !strings.Contains(progress.String(), "warmup") {
		t.Errorf("no warmup progress line in %q", progress.String())
	}
}

func TestRunLoadStopsWhenCancelled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	res := runLoad(ctx, loadConfig{concurrency: 2, duration: time.Hour, reqTimeout: time.Second},
		func(ctx context.Context, w *worker) outcome {
			time.Sleep(time.Millisecond)
			return outcome{kind: Cross, status: "succeeded", expected: true}
		})
	if time.Since(start) > 5*time.Second || !res.Interrupted || res.Requests == 0 {
		t.Errorf("after %v: interrupted %v, %d requests", time.Since(start), res.Interrupted, res.Requests)
	}
}

func TestRunCeiling(t *testing.T) {
	res, err := runCeiling(context.Background(), loadConfig{concurrency: 4, count: 300, reqTimeout: 5 * time.Second}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 300 || res.Errors != 0 || res.PerSecond <= 0 {
		t.Errorf("ceiling: %d calls, %d errors (%v), %.0f/s", res.Requests, res.Errors, res.ErrorsByCode, res.PerSecond)
	}
}

func TestReadProc(t *testing.T) {
	s, err := readProc(0)
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	if s.RSSKB <= 0 || s.HWMKB < s.RSSKB || s.CPUSec < 0 {
		t.Errorf("readProc(self) = %+v", s)
	}
	if m := machine(); m.GOMAXPROCS < 1 || m.GoVersion == "" {
		t.Errorf("machine() = %+v", m)
	}
}

func TestShareProcs(t *testing.T) {
	for _, c := range []struct {
		flag, banks, cpus int
		envSet            bool
		want              int
	}{
		{flag: 0, banks: 3, cpus: 2, want: 1},                // a small machine: one thread per bank
		{flag: 0, banks: 3, cpus: 16, want: 4},               // the banks' share of a larger one
		{flag: 0, banks: 2, cpus: 1, want: 1},                // never zero
		{flag: 0, banks: 3, cpus: 16, envSet: true, want: 0}, // GOMAXPROCS in the environment wins
		{flag: 2, banks: 3, cpus: 2, envSet: true, want: 2},  // the flag wins over it
		{flag: -1, banks: 3, cpus: 2, want: 0},               // Go's default
	} {
		if got := shareProcs(c.flag, c.banks, c.cpus, c.envSet); got != c.want {
			t.Errorf("shareProcs(%d, %d banks, %d CPUs, env set %v) = %d, want %d", c.flag, c.banks, c.cpus, c.envSet, got, c.want)
		}
	}
}

func TestChildEnv(t *testing.T) {
	parent := []string{"HOME=/root", "GOMAXPROCS=8", ProfileEnv + "=/tmp/bench.pprof"}
	got := childEnv(parent, "bank1", "/prof", 1)
	want := []string{"HOME=/root", ProfileEnv + "=" + filepath.Join("/prof", "bank1.cpu.pprof"), "GOMAXPROCS=1"}
	if !slices.Equal(got, want) {
		t.Errorf("childEnv with procs 1 = %q, want %q", got, want)
	}
	if got, want := childEnv(parent, "gateway", "", 0), []string{"HOME=/root", "GOMAXPROCS=8"}; !slices.Equal(got, want) {
		t.Errorf("childEnv with procs 0 = %q, want %q (the parent's GOMAXPROCS kept, its profile request dropped)", got, want)
	}
	if parent[1] != "GOMAXPROCS=8" || len(parent) != 3 {
		t.Errorf("childEnv changed its argument: %q", parent)
	}
}
