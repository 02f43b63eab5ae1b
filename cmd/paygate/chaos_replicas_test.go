package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/paygate/paygate/internal/chaos"
	"github.com/paygate/paygate/internal/cluster"
	"github.com/paygate/paygate/internal/launch"
	"github.com/paygate/paygate/internal/pgdb/pgtest"
)

var chaosReplicasDuration = flag.Duration("chaos.replicas-duration", 50*time.Second, "how long TestChaosReplicas makes payments and injects faults")

// TestChaosReplicas is the PostgreSQL profile of the randomized fault run: two gateway replicas
// on one PostgreSQL database and the banks on databases of their own, clients spread over the
// replicas (retries and concurrent duplicates at the other one; refunds of one payment sent at
// once to different replicas, which share its cap), and random SIGKILLs with
// restarts and SIGSTOP pauses of any process, replicas included, and network faults between
// the gateways and the banks. Then every invariant, and every replica's answer for every
// payment (its refunded_amount too) and every refund. It skips when no PostgreSQL server can be reached; replay a failure with
// -chaos.seed=<the seed it logged>.
func TestChaosReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real processes for a minute")
	}
	if err := pgtest.Reachable(); err != nil {
		t.Skipf("PostgreSQL not reachable at %s (set PAYGATE_TEST_DATABASE_URL): %v", pgtest.URL(), err)
	}
	var b [6]byte
	rand.Read(b[:])
	name := "paygate_chaos_" + hex.EncodeToString(b[:])
	url := pgtest.DatabaseURL(t, pgtest.URL(), name)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		names := []string{name}
		for _, bank := range []string{"bank1", "bank2", "bank3"} {
			names = append(names, name+"_"+bank)
		}
		if err := launch.DropDatabases(ctx, url, names...); err != nil {
			t.Errorf("drop the run's databases: %v", err)
		}
	})

	cfg := chaos.DefaultConfig()
	cfg.Duration = *chaosReplicasDuration
	cfg.DatabaseURL, cfg.Gateways = url, 2
	cfg.Seed = *chaosSeed
	if cfg.Seed == 0 {
		cfg.Seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay: go test ./cmd/paygate -run TestChaosReplicas -chaos.seed=%d)", cfg.Seed, cfg.Seed)
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
	replicaFaults := 0
	for kind, n := range rep.Faults {
		if strings.HasSuffix(kind, "_gateway") {
			replicaFaults += n
		}
	}
	if replicaFaults == 0 {
		t.Errorf("no gateway replica was killed or paused: %v", rep.Faults)
	}
}
