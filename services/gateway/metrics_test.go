package gateway

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
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
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "paygate_payments_undecided", "paygate_payments_unacknowledged"); err != nil {
		t.Error(err)
	}
	var none *paymentMetrics
	none.setUnfinished(n)
}
