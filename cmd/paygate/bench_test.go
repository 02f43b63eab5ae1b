package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/paygate/paygate/internal/cluster"
)

// TestBenchSmoke runs `paygate bench` briefly against the system it starts (three banks and a
// gateway as processes of the built binary) and checks its results and the conservation line.
func TestBenchSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts four server processes")
	}
	t.Parallel()
	bin := cluster.Binary(t)
	out, sysDir := t.TempDir(), t.TempDir()
	cmd := exec.Command(bin, "bench", "--duration", "2s", "--warmup", "500ms", "--concurrency", "8",
		"--ceiling-duration", "500ms", "--users", "8", "--out", out, "--dir", sysDir,
		"--server-args", "--log-level info") // for the servers' startup lines
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("paygate bench: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	if !strings.Contains(stdout.String(), "conservation: OK (total ") {
		t.Errorf("no conservation line in\n%s", stdout.String())
	}
	for _, want := range []string{"payments ", "latency ", "p99 ", "ceiling ", "target ≥ 40%", "gateway (pid "} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, stdout.String())
		}
	}
	if !strings.Contains(stderr.String(), "rate ") {
		t.Errorf("no progress line on stderr:\n%s", stderr.String())
	}

	data, err := os.ReadFile(filepath.Join(out, "bench.json"))
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Command []string `json:"command"`
		Kind    string   `json:"kind"`
		Config  struct {
			Procs            int `json:"procs"`
			ClientGOMAXPROCS int `json:"client_gomaxprocs"`
		} `json:"config"`
		Machine struct {
			GoVersion  string `json:"go_version"`
			GOMAXPROCS int    `json:"gomaxprocs"`
		} `json:"machine"`
		Results struct {
			Requests  int            `json:"requests"`
			Succeeded int            `json:"succeeded"`
			Failed    int            `json:"failed"`
			PerSecond float64        `json:"per_second"`
			Errors    map[string]int `json:"errors_by_code"`
			Latency   struct {
				P50 float64 `json:"p50_ms"`
				P99 float64 `json:"p99_ms"`
				Max float64 `json:"max_ms"`
			} `json:"latency"`
			ByKind map[string]json.RawMessage `json:"by_kind"`
		} `json:"results"`
		RPCs    float64 `json:"rpcs_per_payment"`
		Ceiling *struct {
			CallsPerSecond float64 `json:"calls_per_second"`
		} `json:"ceiling"`
		Percent   float64 `json:"ceiling_percent"`
		Processes []struct {
			Name     string  `json:"name"`
			PeakMB   float64 `json:"peak_rss_mb"`
			RSSEndMB float64 `json:"rss_end_mb"`
		} `json:"processes"`
		Series []struct {
			CPU      map[string]float64 `json:"cpu_s"`
			Requests int64              `json:"requests"`
		} `json:"rss_series"`
		Conservation struct {
			OK          bool  `json:"ok"`
			TotalBefore int64 `json:"total_before"`
			TotalAfter  int64 `json:"total_after"`
		} `json:"conservation"`
	}
	if err := json.Unmarshal(data, &res); err != nil {
		t.Fatalf("bench.json: %v\n%s", err, data)
	}
	r := res.Results
	switch {
	case res.Kind != "payments" || len(res.Command) < 2 || res.Command[1] != "bench":
		t.Errorf("kind %q, command %q", res.Kind, res.Command)
	case res.Machine.GoVersion == "" || res.Machine.GOMAXPROCS < 1:
		t.Errorf("machine: %+v", res.Machine)
	case r.Requests == 0 || r.Succeeded == 0 || r.Failed == 0 || r.PerSecond <= 0:
		t.Errorf("results: %d payments, %d succeeded, %d failed, %.1f/s", r.Requests, r.Succeeded, r.Failed, r.PerSecond)
	case r.Latency.P50 <= 0 || r.Latency.P99 < r.Latency.P50 || r.Latency.Max < r.Latency.P99:
		t.Errorf("latency: %+v", r.Latency)
	case len(r.ByKind) != 3:
		t.Errorf("by kind: %v", r.ByKind)
	case res.RPCs < 3 || res.RPCs > 5:
		t.Errorf("RPCs per payment %v", res.RPCs)
	case res.Ceiling == nil || res.Ceiling.CallsPerSecond <= 0 || res.Percent <= 0:
		t.Errorf("ceiling %+v, %.1f%%", res.Ceiling, res.Percent)
	case len(res.Processes) != 5:
		t.Errorf("processes: %+v", res.Processes)
	case !res.Conservation.OK || res.Conservation.TotalBefore != res.Conservation.TotalAfter || res.Conservation.TotalBefore != 3*8*1_000_000_00:
		t.Errorf("conservation: %+v", res.Conservation)
	}
	if len(r.Errors) > 0 {
		t.Logf("errors by code: %v", r.Errors)
	}
	for _, p := range res.Processes {
		if p.PeakMB <= 0 || p.RSSEndMB <= 0 {
			t.Errorf("process %+v", p)
		}
	}
	if n := len(res.Series); n == 0 {
		t.Error("no rss_series samples")
	} else if last := res.Series[n-1]; last.Requests <= 0 || last.Requests > int64(r.Requests) || last.CPU["gateway"] <= 0 || last.CPU["bank1"] <= 0 {
		t.Errorf("last rss_series sample: %d requests (of %d), CPU %v", last.Requests, r.Requests, last.CPU)
	}
	// Each bank and the bench's workers run with their share of the CPUs, the gateway with
	// Go's default; the servers' startup lines say so.
	if os.Getenv("GOMAXPROCS") == "" {
		wantBank := max(1, runtime.NumCPU()/4)
		if res.Config.Procs != wantBank || res.Config.ClientGOMAXPROCS != wantBank {
			t.Errorf("bench.json config procs %d, client_gomaxprocs %d, want %d", res.Config.Procs, res.Config.ClientGOMAXPROCS, wantBank)
		}
		for name, want := range map[string]int{"bank1": wantBank, "bank3": wantBank, "gateway": runtime.NumCPU()} {
			log, err := os.ReadFile(filepath.Join(sysDir, "logs", name+".log"))
			if err != nil {
				t.Fatal(err)
			}
			if line := fmt.Sprintf("gomaxprocs=%d\n", want); !bytes.Contains(log, []byte(line)) {
				t.Errorf("%s's log has no %q:\n%s", name, line, log)
			}
		}
	}
	svg, err := os.ReadFile(filepath.Join(out, "latency.svg"))
	if err != nil || !bytes.Contains(svg, []byte("<svg")) {
		t.Errorf("latency.svg: %v", err)
	}
}
