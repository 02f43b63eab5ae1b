package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/paygate/paygate/gen/paygate/bank/v1/bankv1connect"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
	"github.com/paygate/paygate/internal/cluster"
	"github.com/paygate/paygate/internal/identity"
	"github.com/paygate/paygate/internal/pki"
	"github.com/paygate/paygate/internal/rpcerr"
)

// TestMetricsEndToEnd runs a gateway and a bank with --metrics-listen, makes payments of which
// some fail for insufficient funds, and checks that the scrapes moved by exactly what was
// done: payments by outcome and reason (a replayed request is no new payment), requests of
// ExecutePayment, the gateway's calls to the banks (by procedure, by bank and kind, messages per
// call), logins by result, live sessions, open payment streams and the stores' commits. Every
// paygate metric the alerting rules use must be in the scrapes. With promtool on PATH, the
// scrapes must also pass `promtool check metrics`.
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
	bankBefore := scrape(t, bankMetrics)
	// Logins: one that succeeds, then wrong passwords until the throttle refuses one (the
	// budget of failures per user and address is 5 by default).
	login(t, c, "bob")
	const loginBudget = 5
	for i := range loginBudget + 1 {
		_, err := c.Login("bob", "wrong-password")
		want := "invalid_credentials"
		if i == loginBudget {
			want = "login_throttled"
		}
		if got := rpcerr.Reason(err); got != want {
			t.Fatalf("wrong password %d: %v (reason %q), want %s", i, err, got, want)
		}
	}

	// Payments one at a time, each waited for until its phase two is done (phase two runs
	// after the answer), so that every message to a bank goes out alone.
	phaseTwoDone := func(want float64) {
		t.Helper()
		series := `paygate_payment_phase_seconds_count{phase="phase_two"}`
		for deadline := time.Now().Add(10 * time.Second); ; {
			if got := scrape(t, gwMetrics).value(series) - before.value(series); got >= want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s did not reach +%v within 10s", series, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
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
		phaseTwoDone(float64(i + 1))
	}
	// A retry of a decided payment gets the stored answer: one more request, no more payments.
	if _, err := pay(ctxT(t, 10*time.Second), alice, lastOK, "bank1-1001", "bank2-2002", 100); err != nil {
		t.Fatalf("replay: %v", err)
	}
	checkSettled(t, c, audit(t, c), 10*time.Second)
	after := scrape(t, gwMetrics)

	moved := func(series string) float64 { return after.value(series) - before.value(series) }
	execOK := `paygate_rpc_server_requests_total{code="ok",procedure="` + gatewayv1connect.PaymentServiceExecutePaymentProcedure + `"}`
	clientOK := func(proc string) string {
		return `paygate_rpc_client_requests_total{code="ok",procedure="` + proc + `"}`
	}
	bankCalls := func(bank, kind string) string {
		return `paygate_bank_call_duration_seconds_count{bank="` + bank + `",kind="` + kind + `"}`
	}
	// bank1 pays in the n-k payments that succeed, bank3 is paid in the k that fail, bank2 is
	// in all: each payment is a prepare and a completion (commit or abort) at each of its banks.
	for _, tc := range []struct {
		series string
		want   float64
	}{
		{clientOK(bankv1connect.BankServicePrepareTransactionProcedure), 2 * n},
		{clientOK(bankv1connect.BankServiceCommitTransactionProcedure), 2 * (n - k)},
		{clientOK(bankv1connect.BankServiceAbortTransactionProcedure), 2 * k},
		{clientOK(bankv1connect.BankServiceBatchProcedure), 0},
		{`paygate_rpc_client_duration_seconds_count{procedure="` + bankv1connect.BankServicePrepareTransactionProcedure + `"}`, 2 * n},
		{bankCalls("bank1", "prepare"), n - k},
		{bankCalls("bank1", "commit"), n - k},
		{bankCalls("bank1", "abort"), 0},
		{bankCalls("bank2", "prepare"), n},
		{bankCalls("bank2", "commit"), n - k},
		{bankCalls("bank2", "abort"), k},
		{bankCalls("bank3", "abort"), k},
		{bankCalls("bank3", "batch"), 0},
		{`paygate_bank_batch_size_count{bank="bank1"}`, 2 * (n - k)},
		{`paygate_bank_batch_size_sum{bank="bank2"}`, 2 * n},
		{`paygate_bank_batch_size_bucket{bank="bank3",le="1"}`, 2 * k},
		{`paygate_logins_total{result="succeeded"}`, 1},
		{`paygate_logins_total{result="failed"}`, loginBudget},
		{`paygate_logins_total{result="throttled"}`, 1},
		{`paygate_logins_total{result="error"}`, 0},
		{"paygate_sessions", 1},
		{"paygate_recovery_redrives_total", 0},
		{"paygate_presumed_aborts_total", 0},
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
		"paygate_payments_undecided ", "paygate_payments_unacknowledged ", "paygate_recovery_backlog ",
		`paygate_get_decision_total{result="abort"}`, `paygate_registrations_total{result="succeeded"}`)
	if got := moved(`paygate_store_commit_batch_size_count{store="gateway"}`); got < n {
		t.Errorf("the gateway's store committed %v transactions for %d payments, want at least one each", got, n)
	}
	if moved(`paygate_store_commit_batch_size_sum{store="gateway"}`) < moved(`paygate_store_commit_seconds_count{store="gateway"}`) {
		t.Error("the gateway's store committed fewer updates than transactions")
	}
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
	// bank1's prepares and commits each write its ledger.
	if got := bank.value(`paygate_store_commit_seconds_count{store="bank"}`) - bankBefore.value(`paygate_store_commit_seconds_count{store="bank"}`); got < 2*(n-k) {
		t.Errorf("bank1's ledger committed %v transactions for %d prepares and commits, want at least one each", got, 2*(n-k))
	}
	if n := bank.sum("paygate_payments_total"); n != 0 {
		t.Errorf("bank1 exposes gateway metrics: %v", n)
	}

	// An open WatchPayments stream is counted while it is open.
	watchCtx, stopWatch := context.WithCancel(context.Background())
	stream, err := alice.Payments.WatchPayments(watchCtx, connect.NewRequest(&gatewayv1.WatchPaymentsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	waitGauge(t, gwMetrics, "paygate_watch_streams", 1)
	stopWatch()
	stream.Close()
	waitGauge(t, gwMetrics, "paygate_watch_streams", 0)

	checkRuleMetrics(t, map[string]*scraped{"gateway": after, "bank1": bank})

	// The operations listener serves /metrics only.
	resp, err := http.Get("http://" + gwMetrics + gatewayv1connect.PaymentServiceExecutePaymentProcedure)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("metrics listener answered an API path with %s, want 404", resp.Status)
	}

	checkMetricsOverTLS(t, c)

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

// checkMetricsOverTLS restarts bank3 with its operations listener on HTTPS, with its own
// certificate, admitting only scrapers with a certificate of the cluster's CA: a scraper
// presenting one reads the metrics, one without is refused, and plain HTTP gets nothing.
func checkMetricsOverTLS(t *testing.T, c *cluster.Cluster) {
	t.Helper()
	addr := cluster.FreePort(t)
	bank3 := pki.LeafFiles(c.CertDir, identity.Identity{Role: identity.RoleBank, Name: "bank3"})
	ca := filepath.Join(c.CertDir, pki.CACertFile)
	c.Stop("bank3")
	c.StartBank("bank3", "PAYGATE_METRICS_LISTEN="+addr, "PAYGATE_METRICS_CERT="+bank3.Cert,
		"PAYGATE_METRICS_KEY="+bank3.Key, "PAYGATE_METRICS_CLIENT_CA="+ca)
	cli := c.ClientCert("cli")
	withCert, err := pki.ClientTLS(ca, cli.Cert, cli.Key)
	if err != nil {
		t.Fatal(err)
	}
	get := func(cfg *tls.Config, url string) (*http.Response, error) {
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
		return hc.Get(url)
	}
	resp, err := get(withCert, "https://"+addr+"/metrics")
	if err != nil {
		t.Fatalf("scrape of bank3 over TLS with a client certificate: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("paygate_build_info")) {
		t.Fatalf("scrape of bank3 over TLS: %s, %d bytes without paygate_build_info", resp.Status, len(body))
	}
	noCert := withCert.Clone()
	noCert.Certificates, noCert.GetClientCertificate = nil, nil
	if resp, err := get(noCert, "https://"+addr+"/metrics"); err == nil {
		resp.Body.Close()
		t.Errorf("scrape of bank3 without a client certificate: %s, want refused", resp.Status)
	}
	if resp, err := http.Get("http://" + addr + "/metrics"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("plain HTTP scrape of bank3's TLS listener: %s", resp.Status)
		}
	}
}

// waitGauge waits up to 10s for the gateway's series to be want.
func waitGauge(t *testing.T, addr, series string, want float64) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		got := scrape(t, addr).value(series)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v after 10s, want %v", series, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// rulesFile is the alerting rules file shipped for Prometheus.
const rulesFile = "../../deploy/prometheus/paygate-rules.yml"

// paygateMetricName matches the paygate metric names an expression uses.
var paygateMetricName = regexp.MustCompile(`\bpaygate_[a-z0-9_]+`)

// checkRuleMetrics checks that every paygate metric the alerting rules name (in expressions
// and annotations) is exposed by one of the scrapes, so that no rule watches a name that does
// not exist (and never fires).
func checkRuleMetrics(t *testing.T, scrapes map[string]*scraped) {
	t.Helper()
	raw, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	names := slices.Compact(slices.Sorted(slices.Values(paygateMetricName.FindAllString(string(raw), -1))))
	if len(names) == 0 {
		t.Fatalf("%s uses no paygate metric", rulesFile)
	}
	for _, name := range names {
		found := false
		for _, s := range scrapes {
			if s.has(name) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("%s uses %s, which no scrape exposes", rulesFile, name)
		}
	}
}

// has says whether the scrape has a sample of the metric name, or of the histogram name (its
// _count).
func (s *scraped) has(name string) bool {
	for series := range s.samples {
		for _, n := range []string{name, name + "_count"} {
			if series == n || strings.HasPrefix(series, n+"{") {
				return true
			}
		}
	}
	return false
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
