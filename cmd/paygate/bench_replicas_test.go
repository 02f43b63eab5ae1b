package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/paygate/paygate/internal/cluster"
	"github.com/paygate/paygate/internal/launch"
	"github.com/paygate/paygate/internal/pgdb/pgtest"
)

// TestBenchReplicasSmoke runs `paygate bench --database-url ... --gateways 2` briefly: both
// replicas take requests, bench.json counts them per replica, and the conservation check holds.
// It skips when no PostgreSQL server can be reached.
func TestBenchReplicasSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts five server processes")
	}
	t.Parallel()
	if err := pgtest.Reachable(); err != nil {
		t.Skipf("PostgreSQL not reachable at %s (set PAYGATE_TEST_DATABASE_URL): %v", pgtest.URL(), err)
	}
	var b [6]byte
	rand.Read(b[:])
	name := "paygate_bench_" + hex.EncodeToString(b[:])
	url := pgtest.DatabaseURL(t, pgtest.URL(), name)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := launch.DropDatabases(ctx, url, name, name+"_bank1", name+"_bank2", name+"_bank3"); err != nil {
			t.Errorf("drop the databases: %v", err)
		}
	})
	bin := cluster.Binary(t)
	out := t.TempDir()
	cmd := exec.Command(bin, "bench", "--duration", "2s", "--warmup", "500ms", "--concurrency", "8",
		"--ceiling-calls", "-1", "--users", "8", "--out", out, "--dir", t.TempDir(),
		"--database-url", url, "--gateways", "2")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("paygate bench: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	for _, want := range []string{"conservation: OK (total ", "gateway2 (pid ", "2 gateway replicas (postgres)"} {
		if !strings.Contains(stdout.String()+stderr.String(), want) {
			t.Errorf("output lacks %q:\nstdout:\n%s\nstderr:\n%s", want, stdout.String(), stderr.String())
		}
	}
	data, err := os.ReadFile(filepath.Join(out, "bench.json"))
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Config struct {
			Gateways int    `json:"gateways"`
			Backend  string `json:"backend"`
		} `json:"config"`
		Results struct {
			Requests  int `json:"requests"`
			ByReplica map[string]struct {
				Requests int `json:"requests"`
			} `json:"by_replica"`
		} `json:"results"`
	}
	if err := json.Unmarshal(data, &res); err != nil {
		t.Fatal(err)
	}
	if res.Config.Gateways != 2 || res.Config.Backend != "postgres" {
		t.Errorf("bench.json config: %+v", res.Config)
	}
	sum := 0
	for _, r := range []string{"gateway", "gateway2"} {
		n := res.Results.ByReplica[r].Requests
		if n == 0 {
			t.Errorf("%s took no request: %+v", r, res.Results.ByReplica)
		}
		sum += n
	}
	if sum != res.Results.Requests {
		t.Errorf("requests per replica add up to %d, of %d", sum, res.Results.Requests)
	}
}
