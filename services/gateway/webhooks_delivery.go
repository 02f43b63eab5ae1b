package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/paygate/paygate/internal/metrics"
	"github.com/paygate/paygate/internal/webhook"
)

// Webhook delivery: three loops of every gateway process, on the store that its replicas
// share.
//
//   - Fan-out reads the event log after the store's cursor and creates the deliveries
//     (webhookStore.FanOutWebhooks), woken by the event sequencer and every second.
//   - Delivery claims endpoints with a delivery due (a lease in the endpoint's row, so that
//     each endpoint gets one request at a time from all the replicas together, and the events
//     of a payment arrive in order), POSTs each claimed delivery with internal/webhook, and
//     records the attempt, ending the lease. A process that dies mid-attempt leaves its lease
//     to expire (timeout + webhookLeaseMargin); the delivery is then sent again: at least once.
//   - Retention prunes the event log (never past the fan-out cursor) and the deliveries that
//     ended longer ago than Config.EventRetention.

// Tuning of the delivery loops.
const (
	webhookPoll        = time.Second      // how often the loops look when nothing woke them
	webhookFanOutBatch = 500              // events per fan-out transaction
	webhookWorkers     = 16               // attempts in flight per process
	webhookLeaseMargin = 5 * time.Second  // a lease outlasts the attempt's timeout by this much
	retentionEvery     = 10 * time.Minute // how often retention runs
)

// Outcomes of an attempt, the outcome label of paygate_webhook_attempts_total.
const (
	webhookOutcomeSucceeded = "succeeded" // a 2xx answer
	webhookOutcomeRetry     = "retry"     // failed; another attempt is scheduled
	webhookOutcomeFailed    = "failed"    // failed for good (given up, 410, or a refused URL)
	webhookOutcomeManual    = "manual"    // a failed redelivery; the delivery's state is kept
)

// webhookMetrics are the delivery metrics; nil counts nothing.
type webhookMetrics struct {
	attempts map[string]prometheus.Counter
	latency  prometheus.Observer
}

// newWebhookMetrics registers paygate_webhook_attempts_total{outcome},
// paygate_webhook_attempt_duration_seconds, and the gauges paygate_webhook_deliveries_pending
// and paygate_webhook_endpoints_disabled (counted in the store on each scrape).
func newWebhookMetrics(reg prometheus.Registerer, store webhookStore, logger *slog.Logger) *webhookMetrics {
	attempts := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metrics.Namespace, Name: "webhook_attempts_total",
		Help: "Webhook delivery attempts made by this process, by outcome: succeeded (2xx), retry (failed, to be retried), failed (given up: retry period over, 410 Gone, or a refused URL), manual (a failed redelivery).",
	}, []string{"outcome"})
	latency := prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: metrics.Namespace, Name: "webhook_attempt_duration_seconds",
		Help:    "Time of a webhook attempt, from sending the request to having read the answer (or failed).",
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	})
	reg.MustRegister(attempts, latency, &webhookCollector{store: store, log: logger,
		pending: prometheus.NewDesc(metrics.Namespace+"_webhook_deliveries_pending",
			"Webhook deliveries not delivered yet (of every replica): counted in the store on each scrape (bounded by 2s).", nil, nil),
		disabled: prometheus.NewDesc(metrics.Namespace+"_webhook_endpoints_disabled",
			"Webhook endpoints disabled, by their users or for failing: counted in the store on each scrape.", nil, nil),
	})
	m := &webhookMetrics{attempts: map[string]prometheus.Counter{}, latency: latency}
	for _, o := range []string{webhookOutcomeSucceeded, webhookOutcomeRetry, webhookOutcomeFailed, webhookOutcomeManual} {
		m.attempts[o] = attempts.WithLabelValues(o)
	}
	return m
}

// observe counts an attempt with its outcome and latency.
func (m *webhookMetrics) observe(outcome string, latency time.Duration) {
	if m == nil {
		return
	}
	m.attempts[outcome].Inc()
	m.latency.Observe(latency.Seconds())
}

// webhookCollector reads the webhook gauges from the store on each scrape.
type webhookCollector struct {
	store             webhookStore
	log               *slog.Logger
	pending, disabled *prometheus.Desc
}

// Describe implements prometheus.Collector.
func (c *webhookCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.pending; ch <- c.disabled }

// Collect implements prometheus.Collector: one query of the store, bounded by 2s; no sample
// when it fails.
func (c *webhookCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	pending, disabled, err := c.store.WebhookCounts(ctx)
	if err != nil {
		c.log.Warn("metrics: count webhooks", "error", err)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(pending))
	ch <- prometheus.MustNewConstMetric(c.disabled, prometheus.GaugeValue, float64(disabled))
}

// webhookEngine runs a gateway's webhook loops.
type webhookEngine struct {
	store    Store
	seq      *eventSequencer
	logger   *slog.Logger
	client   *http.Client
	schedule webhook.Schedule
	timeout  time.Duration
	// retention is Config.EventRetention (0: keep forever).
	retention time.Duration
	// owner names this process's endpoint leases.
	owner   string
	metrics *webhookMetrics
	// kickCh wakes the delivery loop (capacity 1).
	kickCh chan struct{}
}

// newWebhookEngine returns the engine of cfg's webhooks on store.
func newWebhookEngine(cfg Config, store Store, seq *eventSequencer, logger *slog.Logger) *webhookEngine {
	var b [8]byte
	rand.Read(b[:])
	policy := cfg.webhookPolicy()
	return &webhookEngine{
		store: store, seq: seq, logger: logger,
		client: webhook.NewClient(webhook.Options{Policy: policy, AllowHTTP: cfg.WebhookAllowHTTP,
			Timeout: cfg.WebhookTimeout, MaxRedirects: webhook.DefaultMaxRedirects, RootCAs: cfg.WebhookRootCAs}),
		schedule:  webhook.Schedule{Base: cfg.WebhookBackoffMin, Max: cfg.WebhookBackoffMax, Horizon: cfg.WebhookRetryFor},
		timeout:   cfg.WebhookTimeout,
		retention: cfg.EventRetention,
		owner:     "wh-" + hex.EncodeToString(b[:]),
		kickCh:    make(chan struct{}, 1),
	}
}

// webhookPolicy is the address policy of endpoint URLs, at registration and on every
// connection.
func (c *Config) webhookPolicy() webhook.AddressPolicy {
	switch {
	case c.testWebhookPolicy != nil:
		return c.testWebhookPolicy
	case c.WebhookAllowPrivate:
		return webhook.AllowAll
	}
	return webhook.DefaultPolicy
}

// webhookPolicy is the gateway's policy of endpoint addresses.
func (g *Gateway) webhookPolicy() webhook.AddressPolicy { return g.cfg.webhookPolicy() }

// kick wakes the delivery loop (a redelivery was asked for, an endpoint enabled).
func (w *webhookEngine) kick() {
	if w == nil {
		return
	}
	select {
	case w.kickCh <- struct{}{}:
	default:
	}
}

// run runs the loops until ctx ends; then this process's leases are ended (an attempt cut
// short is sent again by whoever claims the endpoint next).
func (w *webhookEngine) run(ctx context.Context) {
	if !w.store.Shared() {
		// One process uses the store: the leases in it are a previous run's, which died.
		if err := w.store.ReleaseWebhookLeases(ctx, ""); err != nil {
			w.logger.Warn("webhooks: release leases", "error", err)
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() { w.fanOutLoop(ctx) })
	wg.Go(func() { w.deliverLoop(ctx) })
	wg.Go(func() { w.retentionLoop(ctx) })
	wg.Wait()
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := w.store.ReleaseWebhookLeases(rctx, w.owner); err != nil {
		w.logger.Warn("webhooks: release leases", "error", err)
	}
}

// sleepOrWake waits for d, or until one of chs (at most two) is ready, or ctx ends; it
// returns false when ctx ended.
func sleepOrWake(ctx context.Context, d time.Duration, chs ...<-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	var a, b <-chan struct{}
	if len(chs) > 0 {
		a = chs[0]
	}
	if len(chs) > 1 {
		b = chs[1]
	}
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	case <-a:
	case <-b:
	}
	return true
}

// fanOutLoop creates deliveries from the event log until ctx ends.
func (w *webhookEngine) fanOutLoop(ctx context.Context) {
	var lastWarned time.Time
	cursor := int64(-1)
	for ctx.Err() == nil {
		last, advanced := w.seq.Last()
		if last > 0 && last <= cursor {
			// Nothing new: no transaction (the store's writer has better things to do).
			if !sleepOrWake(ctx, webhookPoll, advanced) {
				return
			}
			continue
		}
		n, created, c, err := w.store.FanOutWebhooks(ctx, webhookFanOutBatch, w.store.Now())
		if err == nil {
			cursor = c
		}
		if err != nil {
			if ctx.Err() == nil && time.Since(lastWarned) > 10*time.Second {
				lastWarned = time.Now()
				w.logger.Warn("webhooks: fan out", "error", err)
			}
		}
		if created > 0 {
			w.kick()
		}
		if n == webhookFanOutBatch {
			continue
		}
		if !sleepOrWake(ctx, webhookPoll, advanced) {
			return
		}
	}
}

// deliverLoop claims due deliveries and attempts them, at most webhookWorkers at a time,
// until ctx ends.
func (w *webhookEngine) deliverLoop(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	done := make(chan struct{}, webhookWorkers)
	inflight := 0
	var lastWarned time.Time
	for ctx.Err() == nil {
		for drained := false; !drained; {
			select {
			case <-done:
				inflight--
			default:
				drained = true
			}
		}
		var jobs []webhookJob
		if free := webhookWorkers - inflight; free > 0 {
			now := w.store.Now()
			var err error
			jobs, err = w.store.ClaimWebhookDeliveries(ctx, w.owner, now, now.Add(w.timeout+webhookLeaseMargin), free)
			if err != nil && ctx.Err() == nil && time.Since(lastWarned) > 10*time.Second {
				lastWarned = time.Now()
				w.logger.Warn("webhooks: claim deliveries", "error", err)
			}
		}
		for _, job := range jobs {
			inflight++
			wg.Go(func() {
				defer func() { done <- struct{}{} }()
				w.attempt(ctx, job)
			})
		}
		if len(jobs) > 0 {
			continue // claim more at once: other endpoints may be due
		}
		// Wait for a slot to free (an endpoint may have more due), a kick, or the poll.
		t := time.NewTimer(webhookPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-done:
			inflight--
		case <-w.kickCh:
		case <-t.C:
		}
		t.Stop()
	}
}

// attempt POSTs job's delivery and records the outcome. An attempt cut short by ctx (the
// gateway shutting down) is not recorded: its lease is released and it is sent again.
func (w *webhookEngine) attempt(ctx context.Context, job webhookJob) {
	d, ep := job.Delivery, job.Endpoint
	manual := d.Redeliver > 0
	start := w.store.Now()
	a := webhook.Deliver(ctx, w.client, webhook.Request{
		URL:       ep.URL,
		Body:      d.Body,
		Secrets:   ep.secrets(start),
		EventID:   "evt_" + strconv.FormatInt(d.EventSeq, 10),
		EventType: d.EventType,
	})
	if ctx.Err() != nil {
		return
	}
	now := w.store.Now()
	res := webhookResult{
		Attempt:        webhookAttempt{At: start, HTTPStatus: a.StatusCode, Latency: a.Latency, Manual: manual},
		Status:         d.Status,
		NextAttemptAt:  d.NextAttemptAt,
		FirstAttemptAt: d.FirstAttemptAt,
		Attempts:       d.Attempts,
		FinishedAt:     d.FinishedAt,
		Success:        a.Success,
		Gone:           a.Gone,
		Disable:        w.shouldDisable(now),
	}
	if manual {
		res.RedeliverTaken = d.Redeliver
	}
	if a.Err != nil {
		res.Attempt.Error = truncateText(a.Err.Error(), 300)
	}
	outcome := webhookOutcomeManual
	switch {
	case a.Success:
		outcome = webhookOutcomeSucceeded
		res.Status, res.FinishedAt = deliverySucceeded, now
	case manual && d.Status != deliveryPending:
		// A failed redelivery of a delivery that ended: it stays as it was.
	case !manual:
		res.Attempts++
		if res.FirstAttemptAt.IsZero() {
			res.FirstAttemptAt = start
		}
		next := now.Add(w.schedule.Next(res.Attempts, nil))
		if !a.Retryable || w.schedule.GiveUp(res.FirstAttemptAt, next) {
			outcome = webhookOutcomeFailed
			res.Status, res.FinishedAt = deliveryFailed, now
		} else {
			outcome = webhookOutcomeRetry
			res.NextAttemptAt = next
			if wait := next.Sub(now); wait < webhookPoll {
				// Wake the loop when it is due, rather than at the next poll.
				time.AfterFunc(wait, w.kick)
			}
		}
	}
	w.metrics.observe(outcome, a.Latency)
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := w.store.RecordWebhookAttempt(rctx, w.owner, job, res); err != nil {
		w.logger.Warn("webhooks: record attempt", "delivery_id", d.ID, "error", err)
		return
	}
	if a.Err != nil {
		w.logger.Debug("webhooks: attempt failed", "delivery_id", d.ID, "endpoint_id", ep.ID,
			"status", a.StatusCode, "outcome", outcome, "error", a.Err.Error())
	}
}

// shouldDisable is RecordWebhookAttempt's test of an endpoint's failures at now: as
// webhook.ShouldDisable, over the configured retry period.
func (w *webhookEngine) shouldDisable(now time.Time) func(int, time.Time) bool {
	horizon := w.schedule.Horizon
	if horizon <= 0 {
		horizon = webhook.DefaultHorizon
	}
	return func(failures int, since time.Time) bool {
		return failures >= webhook.DisableAfterFailures && !since.IsZero() && now.Sub(since) >= horizon
	}
}

// truncateText returns s cut to at most n bytes, on a character boundary.
func truncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xc0 == 0x80 {
		n--
	}
	return s[:n]
}

// retentionLoop prunes the event log and the ended deliveries older than the retention, until
// ctx ends; a retention of 0 keeps everything.
func (w *webhookEngine) retentionLoop(ctx context.Context) {
	if w.retention <= 0 {
		return
	}
	for sleepOrWake(ctx, retentionEvery) {
		w.prune(ctx)
	}
}

// prune runs retention once.
func (w *webhookEngine) prune(ctx context.Context) {
	before := w.store.Now().Add(-w.retention)
	cursor, err := w.store.WebhookCursor(ctx)
	if err != nil {
		w.logger.Warn("retention: read the webhook cursor", "error", err)
		return
	}
	// Events not fanned out yet are kept: their deliveries do not exist yet.
	events, err := w.store.PruneEvents(ctx, before, cursor+1)
	if err != nil {
		w.logger.Warn("retention: prune events", "error", err)
	}
	deliveries, err := w.store.PruneWebhookDeliveries(ctx, before)
	if err != nil {
		w.logger.Warn("retention: prune webhook deliveries", "error", err)
	}
	if events > 0 || deliveries > 0 {
		w.logger.Info("retention: pruned", "events", events, "webhook_deliveries", deliveries)
	}
}
