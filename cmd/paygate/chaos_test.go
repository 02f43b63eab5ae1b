package main

import (
	"context"
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/paygate/paygate/internal/chaos"
	"github.com/paygate/paygate/internal/cluster"
)

var (
	chaosDuration = flag.Duration("chaos.duration", 2*time.Minute, "how long TestChaosShort makes payments and injects faults")
	chaosSeed     = flag.Uint64("chaos.seed", 0, "seed of TestChaosShort (0: from the clock); every run logs its seed")
	chaosBin      = flag.String("chaos.bin", "", "paygate binary TestChaosShort runs (default: built from this module)")
)

// TestChaosShort is the short profile of the randomized fault run (see internal/chaos and
// docs/RELIABILITY.md): three banks and a gateway as real processes, six concurrent clients
// paying at random and refunding payments made to them, and for -chaos.duration random
// SIGKILLs and restarts, SIGSTOP pauses and network faults between the gateway and the banks.
// Then every invariant is checked, the refunds' included. Replay a
// failure with -chaos.seed=<the seed it logged>; run longer with -chaos.duration or
// `paygate chaos --duration 30m`.
func TestChaosShort(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real processes for minutes")
	}
	cfg := chaos.DefaultConfig()
	cfg.Duration = *chaosDuration
	cfg.Seed = *chaosSeed
	if cfg.Seed == 0 {
		cfg.Seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay: go test ./cmd/paygate -run TestChaosShort -chaos.seed=%d)", cfg.Seed, cfg.Seed)
	cfg.Bin = *chaosBin
	if cfg.Bin == "" {
		cfg.Bin = cluster.Binary(t)
	}
	cfg.Log = testWriter{t}
	cfg.Progress = 20 * time.Second
	rep, err := chaos.Run(context.Background(), t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("report:\n%s", rep)
	for _, v := range rep.Violations {
		t.Errorf("violation: %s", v)
	}
	if rep.Succeeded == 0 || rep.Failed == 0 {
		t.Errorf("a mix of outcomes was expected (succeeded %d, failed %d)", rep.Succeeded, rep.Failed)
	}
	if rep.RefundOutcomes["succeeded"] == 0 || rep.RefundOutcomes["refused/refund_exceeds_payment"] == 0 {
		t.Errorf("refunds that succeed and refunds over the cap were expected: %v", rep.RefundOutcomes)
	}
	total := 0
	for _, n := range rep.Faults {
		total += n
	}
	if total == 0 {
		t.Error("no fault was injected")
	}
}

// testWriter sends the run's progress lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p[:len(p)-min(len(p), 1)]))
	return len(p), nil
}

func TestChaosCommandUsage(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"chaos", "--clients", "1"},
		{"chaos", "--duration", "0s"},
		{"chaos", "--fault-every-min", "5s", "--fault-every-max", "1s"},
		{"chaos", "extra"},
	} {
		var stdout, stderr strings.Builder
		if code := run(context.Background(), args, &stdout, &stderr); code != exitUsage {
			t.Errorf("%v: exit %d, want %d (usage)\n%s", args, code, exitUsage, stderr.String())
		}
	}
}
