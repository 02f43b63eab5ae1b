package main

import (
	"bufio"
	"bytes"
	"io"
	"maps"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
	"github.com/paygate/paygate/internal/cluster"
)

// TestMetricsEndToEnd runs a gateway and a bank with --metrics-listen, makes payments of which
// some fail for insufficient funds, and checks that the scrapes moved by exactly what was
// done: payments by outcome and reason (a replayed request is no new payment), and requests of
// ExecutePayment. With promtool on PATH, the scrapes must also pass `promtool check metrics`.
func TestMetricsEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real processes")
	}
	gwMetrics, bankMetrics := cluster.FreePort(t), cluster.FreePort(t)
	c := cluster.New(t, cluster.Options{
		GatewayArgs: []string{"--metrics-listen", gwMetrics},
		Env:         map[string][]string{"bank1": {"PAYGATE_METRICS_LISTEN=" + bankMetrics}},
	})
	alice := login(t, c, "alice")

	before := scrape(t, gwMetrics)
	const n, k = 7, 3
	var lastOK string
	for i := range n {
		id := newID()
		from, to, amount := "bank1-1001", "bank2-2002", int64(100)
		if i < k {
			from, to, amount = "bank2-2001", "bank3-3001", 30001 // more than the payer has
		}
		resp, err := pay(ctxT(t, 10*time.Second), alice, id, from, to, amount)
		if err != nil {
			t.Fatalf("payment %d: %v", i, err)
		}
		want := gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED
		if i < k {
			want = gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED
		} else {
			lastOK = id
		}
		if got := resp.GetPayment().GetStatus(); got != want {
			t.Fatalf("payment %d: status %v (%v), want %v", i, got, resp.GetPayment().GetFailureReason(), want)
		}
	}
	// A retry of a decided payment gets the stored answer: one more request, no more payments.
	if _, err := pay(ctxT(t, 10*time.Second), alice, lastOK, "bank1-1001", "bank2-2002", 100); err != nil {
		t.Fatalf("replay: %v", err)
	}
	checkSettled(t, c, audit(t, c), 10*time.Second)
	after := scrape(t, gwMetrics)

	moved := func(series string) float64 { return after.value(series) - before.value(series) }
	execOK := `paygate_rpc_server_requests_total{code="ok",procedure="` + gatewayv1connect.PaymentServiceExecutePaymentProcedure + `"}`
	for _, tc := range []struct {
		series string
		want   float64
	}{
		{`paygate_payments_total{failure_reason="",outcome="succeeded"}`, n - k},
		{`paygate_payments_total{failure_reason="insufficient_funds",outcome="failed"}`, k},
		{`paygate_payments_total{failure_reason="timeout",outcome="failed"}`, 0},
		{execOK, n + 1},
		{`paygate_payment_phase_seconds_count{phase="prepare"}`, n},
		{`paygate_payment_phase_seconds_count{phase="decision"}`, n},
		{`paygate_rpc_server_duration_seconds_count{procedure="` + gatewayv1connect.PaymentServiceExecutePaymentProcedure + `"}`, n + 1},
	} {
		if got := moved(tc.series); got != tc.want {
			t.Errorf("%s moved by %v, want %v", tc.series, got, tc.want)
		}
	}
	for _, series := range []string{`paygate_bank_up{bank="bank1"}`, `paygate_bank_up{bank="bank2"}`, `paygate_bank_up{bank="bank3"}`} {
		if got := after.value(series); got != 1 {
			t.Errorf("%s = %v, want 1", series, got)
		}
	}
	after.mustHave(t, "paygate_build_info{", "go_goroutines", "process_cpu_seconds_total",
		"paygate_payments_undecided ", "paygate_payments_unacknowledged ")
	// Every payment is settled: the next recovery round (each second) finds none unfinished.
	for deadline := time.Now().Add(10 * time.Second); ; {
		s := scrape(t, gwMetrics)
		u, a := s.value("paygate_payments_undecided"), s.value("paygate_payments_unacknowledged")
		if u == 0 && a == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("settled, yet paygate_payments_undecided %v and paygate_payments_unacknowledged %v after 10s", u, a)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, line := range after.lines {
		if strings.Contains(line, "alice") || strings.Contains(line, lastOK) {
			t.Errorf("a label carries a user or payment id: %s", line)
		}
	}

	bank := scrape(t, bankMetrics)
	bank.mustHave(t, "paygate_build_info{", `paygate_rpc_server_requests_total{code="ok",procedure="/paygate.bank.v1.BankService/`)
	if bank.sum("paygate_rpc_server_requests_total{") == 0 {
		t.Error("bank1 counted no requests")
	}

	// The operations listener serves /metrics only.
	resp, err := http.Get("http://" + gwMetrics + gatewayv1connect.PaymentServiceExecutePaymentProcedure)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("metrics listener answered an API path with %s, want 404", resp.Status)
	}

	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Log("promtool not on PATH (scripts/tools.sh installs it): the scrapes are not linted")
		return
	}
	for name, s := range map[string]*scraped{"gateway": after, "bank1": bank} {
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = bytes.NewReader(s.raw)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics on the %s's scrape: %v\n%s", name, err, out)
		}
	}
}

// scraped is one scrape in the text format: its lines and each sample's value by series (the
// metric name with its labels as exposed, e.g. `x_total{a="1",b="2"}`).
type scraped struct {
	raw     []byte
	lines   []string
	samples map[string]float64
}

func scrape(t *testing.T, addr string) *scraped {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %s %v", addr, resp.Status, err)
	}
	s := &scraped{raw: raw, samples: map[string]float64{}}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		s.lines = append(s.lines, line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("scrape %s: bad line %q", addr, line)
		}
		s.samples[line[:i]] = v
	}
	return s
}

// value is the sample of series, 0 when absent.
func (s *scraped) value(series string) float64 { return s.samples[series] }

// sum adds the samples whose series starts with prefix.
func (s *scraped) sum(prefix string) float64 {
	var n float64
	for k, v := range s.samples {
		if strings.HasPrefix(k, prefix) {
			n += v
		}
	}
	return n
}

func (s *scraped) mustHave(t *testing.T, prefixes ...string) {
	t.Helper()
	for _, p := range prefixes {
		if !slices.ContainsFunc(s.lines, func(l string) bool { return strings.HasPrefix(l, p) }) {
			t.Errorf("scrape has no series %s...", p)
		}
	}
}

// TestDevServesMetrics checks that `paygate dev` serves every server's metrics, each on its own
// listener, and lists them in dev.json.
func TestDevServesMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts a real process")
	}
	t.Parallel()
	bin := cluster.Binary(t)
	work := t.TempDir()
	dir := filepath.Join(work, "state")
	d := startDevProcess(t, bin, work, dir, nil, "dev", "--dir", dir, "--listen", cluster.FreePort(t), "--web", cluster.FreePort(t))
	want := []string{"bank1", "bank2", "bank3", "gateway"}
	if got := slices.Sorted(maps.Keys(d.info.Metrics)); !slices.Equal(got, want) {
		t.Fatalf("dev.json metrics lists %v, want %v", got, want)
	}
	seen := map[string]bool{}
	for _, name := range want {
		addr := d.info.Metrics[name]
		if seen[addr] {
			t.Errorf("%s shares the metrics address %s", name, addr)
		}
		seen[addr] = true
		s := scrape(t, addr)
		s.mustHave(t, "paygate_build_info{", "paygate_rpc_server_requests_total{")
		if !strings.Contains(d.out.String(), "http://"+addr+"/metrics") {
			t.Errorf("the banner does not print %s's metrics address %s", name, addr)
		}
		if isGateway := name == "gateway"; isGateway != slices.ContainsFunc(s.lines, func(l string) bool { return strings.HasPrefix(l, "paygate_payments_total{") }) {
			t.Errorf("%s: paygate_payments_total exposed %v, want %v", name, !isGateway, isGateway)
		}
	}
	d.interrupt()
}
