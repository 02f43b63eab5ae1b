package gateway

import (
	"context"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/internal/metrics"
)

// Phases of a payment timed by paygate_payment_phase_seconds.
const (
	phaseAdmission = "admission" // admitting the payment until its row is durable
	phasePrepare   = "prepare"   // phase one: every bank's vote
	phaseDecision  = "decision"  // recording the decision (the commit point)
	phaseTwo       = "phase_two" // commits or aborts until every bank acknowledged, or gave up for now
)

// paymentMetrics are the gateway's payment metrics. A nil *paymentMetrics counts nothing, so
// that a gateway without Config.Metrics, and tests, pay nothing for them.
type paymentMetrics struct {
	succeeded prometheus.Counter
	failed    map[int32]prometheus.Counter // by FailureReason
	phases    map[string]prometheus.Observer

	banks map[string]prometheus.Gauge // by configured bank; never changed after construction

	undecided, unacknowledged prometheus.Gauge
}

// newPaymentMetrics registers paygate_payments_total{outcome,failure_reason},
// paygate_payment_phase_seconds{phase} and paygate_bank_up{bank} in reg, with a series for
// every outcome, reason, phase and bank, so that they exist at zero before the first payment.
func newPaymentMetrics(reg prometheus.Registerer, banks []string) *paymentMetrics {
	total := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metrics.Namespace, Name: "payments_total",
		Help: "Payments decided by this gateway process, by outcome (succeeded, failed) and failure reason (empty when it succeeded).",
	}, []string{"outcome", "failure_reason"})
	phase := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: metrics.Namespace, Name: "payment_phase_seconds",
		Help:    "Time a payment spends in each phase: admission, prepare, decision, phase_two.",
		Buckets: metrics.DefBuckets,
	}, []string{"phase"})
	up := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: metrics.Namespace, Name: "bank_up",
		Help: "1 when the gateway's health probes find the bank serving, 0 when not.",
	}, []string{"bank"})
	undecided := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: metrics.Namespace, Name: "payments_undecided",
		Help: "Payments this process holds that are admitted and not decided, as of its last recovery round (every second by default).",
	})
	unacked := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: metrics.Namespace, Name: "payments_unacknowledged",
		Help: "Payments this process holds that are decided but whose phase two not every bank has acknowledged, as of its last recovery round.",
	})
	reg.MustRegister(total, phase, up, undecided, unacked)

	m := &paymentMetrics{
		succeeded: total.WithLabelValues("succeeded", ""),
		failed:    make(map[int32]prometheus.Counter, len(gatewayv1.FailureReason_name)),
		phases:    make(map[string]prometheus.Observer, 4),
		banks:     make(map[string]prometheus.Gauge, len(banks)),

		undecided:      undecided,
		unacknowledged: unacked,
	}
	for v := range gatewayv1.FailureReason_name {
		m.failed[v] = total.WithLabelValues("failed", failureReasonLabel(v))
	}
	for _, p := range []string{phaseAdmission, phasePrepare, phaseDecision, phaseTwo} {
		m.phases[p] = phase.WithLabelValues(p)
	}
	for _, b := range banks {
		m.banks[b] = up.WithLabelValues(b)
	}
	return m
}

// failureReasonLabel is a FailureReason's name in lower case without its prefix, e.g.
// "insufficient_funds"; "" for FAILURE_REASON_UNSPECIFIED.
func failureReasonLabel(v int32) string {
	if v == int32(gatewayv1.FailureReason_FAILURE_REASON_UNSPECIFIED) {
		return ""
	}
	name, ok := gatewayv1.FailureReason_name[v]
	if !ok {
		return ""
	}
	return strings.ToLower(strings.TrimPrefix(name, "FAILURE_REASON_"))
}

// decided counts a payment whose decision this process has just recorded.
func (m *paymentMetrics) decided(p paymentRecord) {
	if m == nil {
		return
	}
	switch p.Decision {
	case decisionCommit:
		m.succeeded.Inc()
	case decisionAbort:
		c, ok := m.failed[p.FailureReason]
		if !ok {
			c = m.failed[int32(gatewayv1.FailureReason_FAILURE_REASON_UNSPECIFIED)]
		}
		c.Inc()
	}
}

// since observes the time from start in phase.
func (m *paymentMetrics) since(phase string, start time.Time) {
	if m == nil {
		return
	}
	m.phases[phase].Observe(time.Since(start).Seconds())
}

// setBankUp records a health probe's finding about bank.
func (m *paymentMetrics) setBankUp(bank string, up bool) {
	if m == nil {
		return
	}
	g, ok := m.banks[bank]
	if !ok {
		return // only configured banks become labels
	}
	v := 0.0
	if up {
		v = 1
	}
	g.Set(v)
}

// countDecided counts decided, the payment as Store.Decide returned it, when the call that
// asked for d by by is the one that recorded the decision (not an earlier one, by another
// replica or another part of this one).
func (c *Coordinator) countDecided(decided paymentRecord, d decision, by decider) {
	if c.metrics == nil || decided.Decision != d || decided.DecidedBy != by {
		return
	}
	if decided.Presumed && isUnadmittedAbort(decided) {
		return // a bank asking about a transaction the gateway never admitted: no payment
	}
	c.metrics.decided(decided)
}

// timedPrepare is prepare, timed as the prepare phase.
func (c *Coordinator) timedPrepare(ctx context.Context, p paymentRecord) ([]vote, error) {
	start := time.Now()
	votes, err := c.prepare(ctx, p)
	c.metrics.since(phasePrepare, start)
	return votes, err
}

// timedComplete is complete, timed as phase two.
func (c *Coordinator) timedComplete(ctx context.Context, p paymentRecord) bool {
	start := time.Now()
	done := c.complete(ctx, p)
	c.metrics.since(phaseTwo, start)
	return done
}

// unfinishedCounts are the unfinished payments one recovery round listed.
type unfinishedCounts struct {
	undecided, unacknowledged int
}

// countUnfinished adds a page of the recovery round's unfinished payments to n. The list is
// read by the round anyway: the gauges cost no query of their own. Payments whose phase two
// every bank acknowledged, waiting to be recorded as completed, are not counted.
func (c *Coordinator) countUnfinished(n *unfinishedCounts, list []paymentRecord) {
	if c.metrics == nil {
		return
	}
	for _, p := range list {
		switch {
		case p.Completed:
		case p.Decision == decisionNone:
			n.undecided++
		case !c.isCompleting(p.PaymentID):
			n.unacknowledged++
		}
	}
}

// setUnfinished publishes a complete recovery round's counts.
func (m *paymentMetrics) setUnfinished(n unfinishedCounts) {
	if m == nil {
		return
	}
	m.undecided.Set(float64(n.undecided))
	m.unacknowledged.Set(float64(n.unacknowledged))
}
