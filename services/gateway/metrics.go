package gateway

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	"github.com/paygate/paygate/gen/paygate/bank/v1/bankv1connect"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/internal/metrics"
	"github.com/paygate/paygate/internal/pgdb"
	"github.com/paygate/paygate/internal/rpcerr"
	"github.com/paygate/paygate/internal/sqlitedb"
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

	banks     map[string]prometheus.Gauge // by configured bank; never changed after construction
	bankCalls map[string]*bankCallMetrics // by configured bank; never changed after construction

	undecided, unacknowledged, backlog prometheus.Gauge

	recoveryRedrives, adminRedrives, presumedAborts prometheus.Counter
	getDecision                                     map[string]prometheus.Counter // by getDecision* result
	logins, registrations                           map[string]prometheus.Counter // by login*/register* result
}

// Results of a bank's GetDecision call, the result label of paygate_get_decision_total.
const (
	getDecisionCommit  = "commit"  // answered: commit
	getDecisionAbort   = "abort"   // answered: abort (recorded earlier, or presumed now)
	getDecisionRefused = "refused" // the bank could not show it takes part (not_a_participant)
	getDecisionError   = "error"   // the gateway could not answer (its store failed)
)

// Results of a login or a registration, the result label of paygate_logins_total and
// paygate_registrations_total.
const (
	resultSucceeded = "succeeded"
	resultFailed    = "failed"    // refused: bad credentials, a disabled user, a name taken...
	resultThrottled = "throttled" // refused by the throttle before any check
	resultError     = "error"     // the gateway failed (its store), not the caller
)

// Kinds of the gateway's calls to a bank, the kind label of paygate_bank_call_duration_seconds.
const (
	bankCallPrepare = "prepare"
	bankCallCommit  = "commit"
	bankCallAbort   = "abort"
	bankCallBatch   = "batch" // several messages (prepares, commits, aborts) in one Batch call
)

// bankCallMetrics are one bank's pre-resolved children of paygate_bank_call_duration_seconds and
// paygate_bank_batch_size. A nil *bankCallMetrics observes nothing.
type bankCallMetrics struct {
	prepare, commit, abort, batch prometheus.Observer
	size                          prometheus.Observer
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
	backlog := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: metrics.Namespace, Name: "recovery_backlog",
		Help: "Payments this process's last recovery round found unfinished: paygate_payments_undecided + paygate_payments_unacknowledged.",
	})
	callDuration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: metrics.Namespace, Name: "bank_call_duration_seconds",
		Help:    "Time of the gateway's two-phase-commit calls to a bank, by bank and kind (prepare, commit, abort alone; batch for several messages in one call); not observed with --no-batching.",
		Buckets: metrics.DefBuckets,
	}, []string{"bank", "kind"})
	batchSize := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: metrics.Namespace, Name: "bank_batch_size",
		Help:    "Two-phase-commit messages per call the gateway made to a bank (1 for a message sent alone); not observed with --no-batching.",
		Buckets: metrics.BatchBuckets,
	}, []string{"bank"})
	redrives := prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: metrics.Namespace, Name: "recovery_redrives_total",
		Help: "Times this process's recovery loop sent a decided payment's phase two again (a bank had not acknowledged it).",
	})
	adminRedrives := prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: metrics.Namespace, Name: "admin_redrives_total",
		Help: "Payments an admin had this process re-drive (AdminService.RedrivePayment) that it held and ran recovery for.",
	})
	presumed := prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: metrics.Namespace, Name: "presumed_aborts_total",
		Help: "Decisions this process recorded as presumed aborts: a bank asked (GetDecision) about a transaction that had no decision.",
	})
	getDecision := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metrics.Namespace, Name: "get_decision_total",
		Help: "Banks' GetDecision calls this process answered, by result: commit, abort, refused (not a participant), error.",
	}, []string{"result"})
	logins := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metrics.Namespace, Name: "logins_total",
		Help: "Logins, by result: succeeded, failed (bad credentials, disabled user, too many sessions), throttled, error (the gateway failed).",
	}, []string{"result"})
	registrations := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metrics.Namespace, Name: "registrations_total",
		Help: "Registrations, by result: succeeded, failed (name taken, enrollment refused, bad input), throttled, error (the gateway failed).",
	}, []string{"result"})
	reg.MustRegister(total, phase, up, undecided, unacked, backlog, callDuration, batchSize, redrives, adminRedrives, presumed, getDecision, logins, registrations)

	m := &paymentMetrics{
		succeeded: total.WithLabelValues("succeeded", ""),
		failed:    make(map[int32]prometheus.Counter, len(gatewayv1.FailureReason_name)),
		phases:    make(map[string]prometheus.Observer, 4),
		banks:     make(map[string]prometheus.Gauge, len(banks)),
		bankCalls: make(map[string]*bankCallMetrics, len(banks)),

		undecided:      undecided,
		unacknowledged: unacked,
		backlog:        backlog,

		recoveryRedrives: redrives,
		adminRedrives:    adminRedrives,
		presumedAborts:   presumed,
		getDecision:      make(map[string]prometheus.Counter, 4),
		logins:           make(map[string]prometheus.Counter, 4),
		registrations:    make(map[string]prometheus.Counter, 4),
	}
	for _, r := range []string{getDecisionCommit, getDecisionAbort, getDecisionRefused, getDecisionError} {
		m.getDecision[r] = getDecision.WithLabelValues(r)
	}
	for _, r := range []string{resultSucceeded, resultFailed, resultThrottled, resultError} {
		m.logins[r] = logins.WithLabelValues(r)
		m.registrations[r] = registrations.WithLabelValues(r)
	}
	for v := range gatewayv1.FailureReason_name {
		m.failed[v] = total.WithLabelValues("failed", failureReasonLabel(v))
	}
	for _, p := range []string{phaseAdmission, phasePrepare, phaseDecision, phaseTwo} {
		m.phases[p] = phase.WithLabelValues(p)
	}
	for _, b := range banks {
		m.banks[b] = up.WithLabelValues(b)
		m.bankCalls[b] = &bankCallMetrics{
			prepare: callDuration.WithLabelValues(b, bankCallPrepare),
			commit:  callDuration.WithLabelValues(b, bankCallCommit),
			abort:   callDuration.WithLabelValues(b, bankCallAbort),
			batch:   callDuration.WithLabelValues(b, bankCallBatch),
			size:    batchSize.WithLabelValues(b),
		}
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
	m.backlog.Set(float64(n.undecided + n.unacknowledged))
}

// bankCalls returns bank's call metrics; nil for a nil m or a bank not configured.
func (m *paymentMetrics) bankCallsOf(bank string) *bankCallMetrics {
	if m == nil {
		return nil
	}
	return m.bankCalls[bank]
}

// single observes a message sent alone, started at start: its kind's duration and a batch of 1.
func (b *bankCallMetrics) single(msg bankMsg, start time.Time) {
	if b == nil {
		return
	}
	o := b.abort
	switch {
	case msg.prepare != nil:
		o = b.prepare
	case msg.completion.GetOutcome() == bankv1.Outcome_OUTCOME_COMMIT:
		o = b.commit
	}
	o.Observe(time.Since(start).Seconds())
	b.size.Observe(1)
}

// multiple observes a Batch call of n messages, started at start.
func (b *bankCallMetrics) multiple(n int, start time.Time) {
	if b == nil {
		return
	}
	b.batch.Observe(time.Since(start).Seconds())
	b.size.Observe(float64(n))
}

// recoveryRedrive counts a phase two the recovery loop sends again.
func (m *paymentMetrics) recoveryRedrive() {
	if m == nil {
		return
	}
	m.recoveryRedrives.Inc()
}

// adminRedrive counts a payment re-driven for an admin.
func (m *paymentMetrics) adminRedrive() {
	if m == nil {
		return
	}
	m.adminRedrives.Inc()
}

// answeredGetDecision counts DecisionFor's answer p, err to a bank, and the presumed abort it
// recorded when it did (p decided by this call, as countDecided tells).
func (m *paymentMetrics) answeredGetDecision(p paymentRecord, err error) {
	if m == nil {
		return
	}
	switch {
	case errors.Is(err, ErrNotParticipant):
		m.getDecision[getDecisionRefused].Inc()
	case err != nil:
		m.getDecision[getDecisionError].Inc()
	case p.Decision == decisionCommit:
		m.getDecision[getDecisionCommit].Inc()
	default:
		m.getDecision[getDecisionAbort].Inc()
	}
}

// presumedAbort counts decided, as Store.Decide returned it to DecisionFor, when that call
// recorded it (and not an earlier decision by anyone else).
func (m *paymentMetrics) presumedAbort(decided paymentRecord) {
	if m == nil || decided.Decision != decisionAbort || decided.DecidedBy != decidedByGetDecision || !decided.Presumed {
		return
	}
	m.presumedAborts.Inc()
}

// loginResult is the result label of a Login or ChangePassword-free login attempt that ended
// with err; throttledReason is the ErrorInfo reason of the throttle's refusal.
func loginResult(err error, throttledReason string) string {
	if err == nil {
		return resultSucceeded
	}
	if rpcerr.Reason(err) == throttledReason {
		return resultThrottled
	}
	switch connect.CodeOf(err) {
	case connect.CodeInternal, connect.CodeUnavailable, connect.CodeUnknown, connect.CodeDataLoss,
		connect.CodeDeadlineExceeded, connect.CodeCanceled:
		return resultError
	}
	return resultFailed
}

// login counts a Login that ended with err.
func (m *paymentMetrics) login(err error) {
	if m == nil {
		return
	}
	m.logins[loginResult(err, "login_throttled")].Inc()
}

// registered counts a Register that ended with err.
func (m *paymentMetrics) registered(err error) {
	if m == nil {
		return
	}
	m.registrations[loginResult(err, "register_throttled")].Inc()
}

// openStreams is the number of WatchPayments streams open on this process (taken and not yet
// cancelled).
func (b *broker) openStreams() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, c := range b.streams {
		n += c
	}
	return n
}

// sessionCountTimeout bounds the query paygate_sessions costs a scrape.
const sessionCountTimeout = 2 * time.Second

// liveSessionCounter is a store that counts the live sessions of every user.
type liveSessionCounter interface {
	liveSessions(ctx context.Context, now time.Time) (int64, error)
}

// liveSessions counts the sessions not revoked and not expired at now.
func (s *SQLiteStore) liveSessions(ctx context.Context, now time.Time) (int64, error) {
	var n int64
	err := s.db.Read.QueryRowContext(ctx, `SELECT count(*) FROM sessions WHERE revoked_at IS NULL AND expires_at > ?`, now.UnixNano()).Scan(&n)
	return n, err
}

// liveSessions counts the sessions not revoked and not expired at now.
func (s *PGStore) liveSessions(ctx context.Context, now time.Time) (int64, error) {
	var n int64
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM sessions WHERE revoked_at IS NULL AND expires_at > $1`, now.UnixNano()).Scan(&n)
	return n, err
}

// sessionsCollector is paygate_sessions: it counts the store's live sessions on each scrape,
// with a query bounded by sessionCountTimeout. When the query fails the scrape has no sample.
type sessionsCollector struct {
	desc  *prometheus.Desc
	store liveSessionCounter
	now   func() time.Time
	log   *slog.Logger
}

// Describe implements prometheus.Collector.
func (c *sessionsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *sessionsCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), sessionCountTimeout)
	defer cancel()
	n, err := c.store.liveSessions(ctx, c.now())
	if err != nil {
		c.log.LogAttrs(ctx, slog.LevelWarn, "metrics: count live sessions", slog.String("error", err.Error()))
		return
	}
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n))
}

// registerMetrics registers in reg the gateway's metrics that are read from its parts on
// scrape (paygate_watch_streams, paygate_sessions) and hands its store the commit histograms
// (paygate_store_commit_*{store="gateway"}).
func (g *Gateway) registerMetrics(reg prometheus.Registerer) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: metrics.Namespace, Name: "watch_streams",
		Help: "WatchPayments streams open on this process, read from memory on scrape.",
	}, func() float64 { return float64(g.events.openStreams()) }))
	if sc, ok := g.store.(liveSessionCounter); ok {
		reg.MustRegister(&sessionsCollector{
			desc: prometheus.NewDesc(metrics.Namespace+"_sessions",
				"Live sessions (not revoked, not expired) in the gateway's store, of every replica: counted by a query on each scrape (bounded by 2s; no sample when it fails).", nil, nil),
			store: sc, now: g.now, log: g.logger,
		})
	}
	updates, seconds := metrics.StoreCommitMetrics(reg, "gateway")
	switch s := g.store.(type) {
	case *SQLiteStore:
		s.db.SetCommitMetrics(&sqlitedb.CommitMetrics{Updates: updates, Seconds: seconds})
	case *PGStore:
		s.commits.Store(&pgdb.CommitMetrics{Updates: updates, Seconds: seconds})
	}
}

// bankProcedures are the procedures of the bank service: the labels of the gateway's client
// RPC metrics.
func bankProcedures() []string {
	methods := bankv1.File_paygate_bank_v1_bank_proto.Services().ByName("BankService").Methods()
	out := make([]string, 0, methods.Len())
	for i := range methods.Len() {
		out = append(out, "/"+bankv1connect.BankServiceName+"/"+string(methods.Get(i).Name()))
	}
	return out
}

// paymentMetrics returns the gateway's metrics, nil when it has none.
func (g *Gateway) paymentMetrics() *paymentMetrics {
	if g.coord == nil {
		return nil
	}
	return g.coord.metrics
}
