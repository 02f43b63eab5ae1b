package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	"github.com/paygate/paygate/internal/pgdb/pgtest"
	"github.com/paygate/paygate/internal/rpcerr"
)

func TestPaymentMetricsCountDecided(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	c := &Coordinator{metrics: newPaymentMetrics(reg, []string{"bank1", "bank2"})}
	commit := paymentRecord{PaymentID: "p1", Fingerprint: []byte{1}, Decision: decisionCommit, DecidedBy: decidedByRequest}
	funds := paymentRecord{PaymentID: "p2", Fingerprint: []byte{1}, Decision: decisionAbort, FailureReason: 1, DecidedBy: decidedByRequest}
	c.countDecided(commit, decisionCommit, decidedByRequest)
	c.countDecided(funds, decisionAbort, decidedByRequest)
	// Decided earlier by someone else: Decide returned their decision, not this call's.
	c.countDecided(funds, decisionAbort, decidedByTimeoutMonitor)
	c.countDecided(commit, decisionAbort, decidedByRequest)
	// A presumed abort of a transaction the gateway never admitted is no payment.
	c.countDecided(paymentRecord{PaymentID: "p3", Presumed: true, Decision: decisionAbort, FailureReason: 5, DecidedBy: decidedByGetDecision},
		decisionAbort, decidedByGetDecision)
	c.metrics.setBankUp("bank2", false)
	c.metrics.setBankUp("bank1", true)
	c.metrics.setBankUp("not-a-bank", true)

	want := `
# HELP paygate_bank_up 1 when the gateway's health probes find the bank serving, 0 when not.
# TYPE paygate_bank_up gauge
paygate_bank_up{bank="bank1"} 1
paygate_bank_up{bank="bank2"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "paygate_bank_up"); err != nil {
		t.Error(err)
	}
	total := func(outcome, reason string) float64 {
		return testutil.ToFloat64(c.metrics.counter(outcome, reason))
	}
	for _, tc := range []struct {
		outcome, reason string
		want            float64
	}{
		{"succeeded", "", 1},
		{"failed", "insufficient_funds", 1},
		{"failed", "timeout", 0},
		{"failed", "", 0},
	} {
		if got := total(tc.outcome, tc.reason); got != tc.want {
			t.Errorf("payments_total{outcome=%q,failure_reason=%q} = %v, want %v", tc.outcome, tc.reason, got, tc.want)
		}
	}
	// A nil *paymentMetrics counts nothing and does not panic.
	var none *paymentMetrics
	none.decided(commit)
	none.setBankUp("bank1", true)
	(&Coordinator{}).countDecided(commit, decisionCommit, decidedByRequest)
}

func TestFailureReasonLabel(t *testing.T) {
	t.Parallel()
	for v, want := range map[int32]string{0: "", 1: "insufficient_funds", 5: "timeout", 6: "bank_unavailable", 99: ""} {
		if got := failureReasonLabel(v); got != want {
			t.Errorf("failureReasonLabel(%d) = %q, want %q", v, got, want)
		}
	}
}

// counter returns the paygate_payments_total child of outcome and reason (a label value), or
// nil.
func (m *paymentMetrics) counter(outcome, reason string) prometheus.Counter {
	if outcome == "succeeded" {
		return m.succeeded
	}
	for v, c := range m.failed {
		if failureReasonLabel(v) == reason && (reason != "" || v == 0) {
			return c
		}
	}
	return nil
}

func TestPaymentMetricsUnfinished(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	c := &Coordinator{metrics: newPaymentMetrics(reg, nil), completing: map[string]struct{}{"acked": {}}}
	var n unfinishedCounts
	c.countUnfinished(&n, []paymentRecord{
		{PaymentID: "u1"}, {PaymentID: "u2"},
		{PaymentID: "d1", Decision: decisionCommit},
		{PaymentID: "d2", Decision: decisionAbort},
		{PaymentID: "d3", Decision: decisionAbort},
		{PaymentID: "acked", Decision: decisionCommit},
		{PaymentID: "done", Decision: decisionCommit, Completed: true},
	})
	c.countUnfinished(&n, []paymentRecord{{PaymentID: "u3"}})
	c.metrics.setUnfinished(n)
	want := `
# HELP paygate_payments_unacknowledged Payments this process holds that are decided but whose phase two not every bank has acknowledged, as of its last recovery round.
# TYPE paygate_payments_unacknowledged gauge
paygate_payments_unacknowledged 3
# HELP paygate_payments_undecided Payments this process holds that are admitted and not decided, as of its last recovery round (every second by default).
# TYPE paygate_payments_undecided gauge
paygate_payments_undecided 3
# HELP paygate_recovery_backlog Payments this process's last recovery round found unfinished: paygate_payments_undecided + paygate_payments_unacknowledged.
# TYPE paygate_recovery_backlog gauge
paygate_recovery_backlog 6
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "paygate_payments_undecided", "paygate_payments_unacknowledged", "paygate_recovery_backlog"); err != nil {
		t.Error(err)
	}
	var none *paymentMetrics
	none.setUnfinished(n)
}

// TestBankCallMetrics: a batching participant times each call under its bank and kind, and
// counts the messages each call carried.
func TestBankCallMetrics(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg := prometheus.NewRegistry()
	m := newPaymentMetrics(reg, []string{"bank1", "bank2"})
	bp := newBatchingParticipant(ctx, new(sync.WaitGroup), &countingBank{})
	bp.metrics = m.bankCallsOf("bank1")
	if _, err := bp.PrepareTransaction(ctx, connect.NewRequest(&bankv1.PrepareTransactionRequest{TransactionId: "p1"})); err != nil {
		t.Fatal(err)
	}
	if _, err := bp.CommitTransaction(ctx, connect.NewRequest(&bankv1.CommitTransactionRequest{TransactionId: "committed-1"})); err != nil {
		t.Fatal(err)
	}
	if _, _, err := bp.multiple(ctx, []bankMsg{
		{prepare: &bankv1.PrepareTransactionRequest{TransactionId: "p2"}},
		{prepare: &bankv1.PrepareTransactionRequest{TransactionId: "p3"}},
		{completion: &bankv1.Completion{TransactionId: "committed-2", Outcome: bankv1.Outcome_OUTCOME_COMMIT}},
	}); err != nil {
		t.Fatal(err)
	}
	counts := histogramCounts(t, reg, "paygate_bank_call_duration_seconds")
	for series, want := range map[string]uint64{
		"bank=bank1,kind=prepare": 1, "bank=bank1,kind=commit": 1, "bank=bank1,kind=abort": 0, "bank=bank1,kind=batch": 1,
		"bank=bank2,kind=prepare": 0, "bank=bank2,kind=batch": 0,
	} {
		if got := counts[series]; got != want {
			t.Errorf("paygate_bank_call_duration_seconds{%s} count %d, want %d", series, got, want)
		}
	}
	want := `
# HELP paygate_bank_batch_size Two-phase-commit messages per call the gateway made to a bank (1 for a message sent alone); not observed with --no-batching.
# TYPE paygate_bank_batch_size histogram
paygate_bank_batch_size_bucket{bank="bank1",le="1"} 2
paygate_bank_batch_size_bucket{bank="bank1",le="2"} 2
paygate_bank_batch_size_bucket{bank="bank1",le="4"} 3
paygate_bank_batch_size_bucket{bank="bank1",le="8"} 3
paygate_bank_batch_size_bucket{bank="bank1",le="16"} 3
paygate_bank_batch_size_bucket{bank="bank1",le="32"} 3
paygate_bank_batch_size_bucket{bank="bank1",le="64"} 3
paygate_bank_batch_size_bucket{bank="bank1",le="128"} 3
paygate_bank_batch_size_bucket{bank="bank1",le="256"} 3
paygate_bank_batch_size_bucket{bank="bank1",le="512"} 3
paygate_bank_batch_size_bucket{bank="bank1",le="+Inf"} 3
paygate_bank_batch_size_sum{bank="bank1"} 5
paygate_bank_batch_size_count{bank="bank1"} 3
paygate_bank_batch_size_bucket{bank="bank2",le="1"} 0
paygate_bank_batch_size_bucket{bank="bank2",le="2"} 0
paygate_bank_batch_size_bucket{bank="bank2",le="4"} 0
paygate_bank_batch_size_bucket{bank="bank2",le="8"} 0
paygate_bank_batch_size_bucket{bank="bank2",le="16"} 0
paygate_bank_batch_size_bucket{bank="bank2",le="32"} 0
paygate_bank_batch_size_bucket{bank="bank2",le="64"} 0
paygate_bank_batch_size_bucket{bank="bank2",le="128"} 0
paygate_bank_batch_size_bucket{bank="bank2",le="256"} 0
paygate_bank_batch_size_bucket{bank="bank2",le="512"} 0
paygate_bank_batch_size_bucket{bank="bank2",le="+Inf"} 0
paygate_bank_batch_size_sum{bank="bank2"} 0
paygate_bank_batch_size_count{bank="bank2"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "paygate_bank_batch_size"); err != nil {
		t.Error(err)
	}
	if m.bankCallsOf("not-a-bank") != nil || (*paymentMetrics)(nil).bankCallsOf("bank1") != nil {
		t.Error("call metrics for a bank not configured, or from nil metrics")
	}
	var none *bankCallMetrics
	none.single(bankMsg{prepare: &bankv1.PrepareTransactionRequest{}}, time.Now())
	none.multiple(2, time.Now())
}

// histogramCounts gathers the histogram name from reg: each series' sample count, by its
// labels as "k=v,k=v" in label order.
func histogramCounts(t *testing.T, reg *prometheus.Registry, name string) map[string]uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var parts []string
			for _, l := range m.GetLabel() {
				parts = append(parts, l.GetName()+"="+l.GetValue())
			}
			out[strings.Join(parts, ",")] = m.GetHistogram().GetSampleCount()
		}
	}
	return out
}

// TestDecisionMetrics: GetDecision answers by result, and presumed aborts only when the call
// recorded one.
func TestDecisionMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := newPaymentMetrics(reg, nil)
	presumed := paymentRecord{Decision: decisionAbort, Presumed: true, DecidedBy: decidedByGetDecision}
	m.answeredGetDecision(paymentRecord{Decision: decisionCommit}, nil)
	m.answeredGetDecision(paymentRecord{Decision: decisionAbort, DecidedBy: decidedByRequest}, nil)
	m.answeredGetDecision(presumed, nil)
	m.answeredGetDecision(paymentRecord{}, ErrNotParticipant)
	m.answeredGetDecision(paymentRecord{}, errors.New("store: disk I/O error"))
	m.presumedAbort(presumed)
	m.presumedAbort(paymentRecord{Decision: decisionAbort, DecidedBy: decidedByTimeoutMonitor}) // decided earlier, by the monitor
	m.presumedAbort(paymentRecord{Decision: decisionCommit, DecidedBy: decidedByRequest})       // committed before the bank asked
	m.recoveryRedrive()
	m.recoveryRedrive()
	m.adminRedrive()
	want := `
# HELP paygate_admin_redrives_total Payments an admin had this process re-drive (AdminService.RedrivePayment) that it held and ran recovery for.
# TYPE paygate_admin_redrives_total counter
paygate_admin_redrives_total 1
# HELP paygate_get_decision_total Banks' GetDecision calls this process answered, by result: commit, abort, refused (not a participant), error.
# TYPE paygate_get_decision_total counter
paygate_get_decision_total{result="abort"} 2
paygate_get_decision_total{result="commit"} 1
paygate_get_decision_total{result="error"} 1
paygate_get_decision_total{result="refused"} 1
# HELP paygate_presumed_aborts_total Decisions this process recorded as presumed aborts: a bank asked (GetDecision) about a transaction that had no decision.
# TYPE paygate_presumed_aborts_total counter
paygate_presumed_aborts_total 1
# HELP paygate_recovery_redrives_total Times this process's recovery loop sent a decided payment's phase two again (a bank had not acknowledged it).
# TYPE paygate_recovery_redrives_total counter
paygate_recovery_redrives_total 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "paygate_get_decision_total", "paygate_presumed_aborts_total",
		"paygate_recovery_redrives_total", "paygate_admin_redrives_total"); err != nil {
		t.Error(err)
	}
	var none *paymentMetrics
	none.answeredGetDecision(presumed, nil)
	none.presumedAbort(presumed)
	none.recoveryRedrive()
	none.adminRedrive()
	none.login(nil)
	none.registered(nil)
}

func TestLoginResult(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, resultSucceeded},
		{errInvalidCredentials, resultFailed},
		{rpcerr.New(connect.CodePermissionDenied, reasonUserDisabled, "disabled"), resultFailed},
		{throttled("login_throttled", "failed logins", time.Second), resultThrottled},
		{throttled("register_throttled", "refused registrations", time.Second), resultFailed}, // not this throttle's
		{connect.NewError(connect.CodeUnavailable, errors.New("store down")), resultError},
		{context.DeadlineExceeded, resultError},
	} {
		if got := loginResult(tc.err, "login_throttled"); got != tc.want {
			t.Errorf("loginResult(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

// TestRegisterMetrics: the metrics read on scrape (open streams, live sessions) and the store's
// commit histograms, on real SQLite and PostgreSQL stores.
func TestRegisterMetrics(t *testing.T) {
	t.Parallel()
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		store, err := OpenStore(context.Background(), filepath.Join(t.TempDir(), "gateway.db"), false)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { store.Close() })
		testRegisterMetrics(t, store)
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		testRegisterMetrics(t, ctOpenPG(t, pgtest.NewDatabase(t, "paygate_metrics_"), 10*time.Second))
	})
}

func testRegisterMetrics(t *testing.T, store Store) {
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	g := &Gateway{store: store, events: newBroker(), now: store.Now, logger: slog.New(slog.DiscardHandler)}
	g.registerMetrics(reg)

	gauge := func(name string) float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == name {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		t.Fatalf("no %s", name)
		return 0
	}
	_, cancel1, err := g.events.watch("alice", 0)
	if err != nil {
		t.Fatal(err)
	}
	_, cancel2, _ := g.events.watch("alice", 0)
	_, cancel3, _ := g.events.watch("bob", 0)
	if got := gauge("paygate_watch_streams"); got != 3 {
		t.Errorf("paygate_watch_streams = %v with 3 open, want 3", got)
	}
	cancel1()
	cancel1() // again: no effect
	cancel3()
	if got := gauge("paygate_watch_streams"); got != 1 {
		t.Errorf("paygate_watch_streams = %v with 1 open, want 1", got)
	}
	cancel2()

	if got := gauge("paygate_sessions"); got != 0 {
		t.Errorf("paygate_sessions = %v in an empty store", got)
	}
	if err := store.CreateUsers(ctx, []userRecord{{Username: "alice", Role: "user", PasswordHash: "x"}}, store.Now()); err != nil {
		t.Fatal(err)
	}
	now := store.Now()
	for i, exp := range []time.Duration{time.Hour, time.Hour, -time.Minute} {
		if err := store.CreateSession(ctx, fmt.Sprintf("tok-%d", i), sessionRecord{Username: "alice", ExpiresAt: now.Add(exp)}, now, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := store.RevokeSession(ctx, "tok-1", now); err != nil {
		t.Fatal(err)
	}
	if got := gauge("paygate_sessions"); got != 1 {
		t.Errorf("paygate_sessions = %v with 1 live of 3 (one revoked, one expired), want 1", got)
	}
	counts := histogramCounts(t, reg, "paygate_store_commit_seconds")
	if counts["store=gateway"] == 0 {
		t.Errorf("paygate_store_commit_seconds{store=gateway} observed no commit after 5 writes: %v", counts)
	}
	if sizes := histogramCounts(t, reg, "paygate_store_commit_batch_size"); sizes["store=gateway"] != counts["store=gateway"] {
		t.Errorf("%d commit sizes for %d commits", sizes["store=gateway"], counts["store=gateway"])
	}
}

// BenchmarkBankCallMetrics is what timing a bank call adds to it: a message sent alone, and a
// batch.
func BenchmarkBankCallMetrics(b *testing.B) {
	m := newPaymentMetrics(prometheus.NewRegistry(), []string{"bank1"}).bankCallsOf("bank1")
	msg := bankMsg{completion: &bankv1.Completion{Outcome: bankv1.Outcome_OUTCOME_COMMIT}}
	b.Run("single", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m.single(msg, time.Now())
		}
	})
	b.Run("batch", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m.multiple(16, time.Now())
		}
	})
}
