package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
)

// fakeTrailStore is a trail store for the recorder's tests: it keeps what it is given and can
// be held (every write blocks until release is closed) or made to fail.
type fakeTrailStore struct {
	release chan struct{}
	fail    bool

	mu      sync.Mutex
	events  []trailEvent
	batches []int
}

func (s *fakeTrailStore) AppendTrail(ctx context.Context, events []trailEvent) error {
	if s.release != nil {
		select {
		case <-s.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if s.fail {
		return errors.New("disk full")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, events...)
	s.batches = append(s.batches, len(events))
	return nil
}

func (s *fakeTrailStore) written() ([]trailEvent, []int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.events), slices.Clone(s.batches)
}

func newTestRecorder(s *fakeTrailStore, logs *syncBuffer) *trailRecorder {
	return &trailRecorder{store: s, logger: slog.New(slog.NewTextHandler(logs, nil)), queue: make(chan trailEvent, trailQueueSize),
		stop: make(chan struct{}), done: make(chan struct{})}
}

// TestTrailRecorderNeverBlocks: with the store stuck, recording goes on at once; what does not
// fit in the queue is dropped and counted (and logged), and what fits is written, in batches
// of at most trailBatchSize, once the store answers and the recorder is closed.
func TestTrailRecorderNeverBlocks(t *testing.T) {
	t.Parallel()
	s := &fakeTrailStore{release: make(chan struct{})}
	logs := &syncBuffer{}
	r := newTestRecorder(s, logs)
	r.start()
	const n = trailQueueSize + 3*trailBatchSize
	start := time.Now()
	for i := range n {
		r.add(trailEvent{PaymentID: "p", Attempt: int32(i)})
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("recording %d events with the store stuck took %s", n, d)
	}
	// The writer took one batch out of the queue before it got stuck: the rest stayed queued.
	dropped := r.Dropped()
	if dropped < n-trailQueueSize-trailBatchSize || dropped > n-trailQueueSize {
		t.Fatalf("dropped %d of %d events, want about %d", dropped, n, n-trailQueueSize)
	}
	close(s.release)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.close(ctx); err != nil {
		t.Fatal(err)
	}
	events, batches := s.written()
	if int64(len(events))+dropped != n {
		t.Fatalf("written %d + dropped %d, want %d", len(events), dropped, n)
	}
	for _, b := range batches {
		if b > trailBatchSize {
			t.Fatalf("a write of %d events, want at most %d", b, trailBatchSize)
		}
	}
	if !strings.Contains(logs.String(), "payment trail events dropped") {
		t.Errorf("no warning about dropped events; logs:\n%s", logs.String())
	}
	// Events stay in the order recorded.
	for i := 1; i < len(events); i++ {
		if events[i].Attempt <= events[i-1].Attempt {
			t.Fatalf("event %d written after %d", events[i].Attempt, events[i-1].Attempt)
		}
	}
}

// TestTrailRecorderBatchesAndFlushes: events recorded at a light pace are written in a few
// batches, not one write each, and close writes those still queued.
func TestTrailRecorderBatchesAndFlushes(t *testing.T) {
	t.Parallel()
	s := &fakeTrailStore{}
	r := newTestRecorder(s, &syncBuffer{})
	r.start()
	for i := range 100 {
		r.add(trailEvent{PaymentID: "p", Attempt: int32(i)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.close(ctx); err != nil {
		t.Fatal(err)
	}
	events, batches := s.written()
	if len(events) != 100 || r.Dropped() != 0 {
		t.Fatalf("written %d, dropped %d; want 100 and 0", len(events), r.Dropped())
	}
	if len(batches) > 5 {
		t.Errorf("100 events recorded at once took %d writes: %v", len(batches), batches)
	}
	// A recorder never started writes nothing and closes at once.
	idle := newTestRecorder(&fakeTrailStore{}, &syncBuffer{})
	idle.add(trailEvent{PaymentID: "p"})
	if err := idle.close(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestTrailRecorderWriteFailure: events whose write fails are counted as dropped.
func TestTrailRecorderWriteFailure(t *testing.T) {
	t.Parallel()
	s := &fakeTrailStore{fail: true}
	logs := &syncBuffer{}
	r := newTestRecorder(s, logs)
	r.start()
	for range 10 {
		r.add(trailEvent{PaymentID: "p"})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.close(ctx); err != nil {
		t.Fatal(err)
	}
	if r.Dropped() != 10 {
		t.Fatalf("dropped %d, want 10", r.Dropped())
	}
	if !strings.Contains(logs.String(), "dropped_total=10") {
		t.Errorf("the final report does not count the failed events; logs:\n%s", logs.String())
	}
}

// trailOf returns payment id's trail through AdminService once done holds for it (events are
// written a moment after they happen), failing the test after 10 s.
func trailOf(t testing.TB, s *session, id string, done func(*gatewayv1.GetPaymentTrailResponse) bool) *gatewayv1.GetPaymentTrailResponse {
	t.Helper()
	var last *gatewayv1.GetPaymentTrailResponse
	var lastErr error
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := s.admin.GetPaymentTrail(ctx, connect.NewRequest(&gatewayv1.GetPaymentTrailRequest{PaymentId: id}))
		cancel()
		if err == nil {
			last = resp.Msg
			if done(last) {
				return last
			}
		}
		lastErr = err
		if time.Now().After(deadline) {
			t.Fatalf("trail of %s not as expected after 10s (err %v):\n%s", id, lastErr, trailText(last.GetEvents()))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// trailText is a trail, one event a line, for failure messages.
func trailText(events []*gatewayv1.TrailEvent) string {
	var b strings.Builder
	for _, e := range events {
		b.WriteString(strings.TrimPrefix(e.GetKind().String(), "TRAIL_EVENT_KIND_"))
		for _, f := range []string{e.GetBank(), e.GetVote(), e.GetDecision(), e.GetDetail()} {
			if f != "" {
				b.WriteString(" " + f)
			}
		}
		if e.GetDecidedBy() != gatewayv1.DecidedBy_DECIDED_BY_UNSPECIFIED {
			b.WriteString(" " + e.GetDecidedBy().String())
		}
		if e.GetAttempt() > 0 {
			fmt.Fprintf(&b, " attempt %d", e.GetAttempt())
		}
		b.WriteString("\n")
	}
	return b.String()
}

// kindAt returns the index of the first event of kind (for bank, when bank is set), or -1.
func kindAt(events []*gatewayv1.TrailEvent, kind gatewayv1.TrailEventKind, bank string) int {
	return slices.IndexFunc(events, func(e *gatewayv1.TrailEvent) bool {
		return e.GetKind() == kind && (bank == "" || e.GetBank() == bank)
	})
}

func countKind(events []*gatewayv1.TrailEvent, kind gatewayv1.TrailEventKind) int {
	n := 0
	for _, e := range events {
		if e.GetKind() == kind {
			n++
		}
	}
	return n
}

const (
	evAdmitted  = gatewayv1.TrailEventKind_TRAIL_EVENT_KIND_ADMITTED
	evPrepare   = gatewayv1.TrailEventKind_TRAIL_EVENT_KIND_PREPARE_SENT
	evVote      = gatewayv1.TrailEventKind_TRAIL_EVENT_KIND_VOTE
	evBankError = gatewayv1.TrailEventKind_TRAIL_EVENT_KIND_BANK_ERROR
	evDecided   = gatewayv1.TrailEventKind_TRAIL_EVENT_KIND_DECIDED
	evAck       = gatewayv1.TrailEventKind_TRAIL_EVENT_KIND_ACKNOWLEDGED
	evRetry     = gatewayv1.TrailEventKind_TRAIL_EVENT_KIND_RETRY
	evClaimed   = gatewayv1.TrailEventKind_TRAIL_EVENT_KIND_CLAIMED
	evRedrive   = gatewayv1.TrailEventKind_TRAIL_EVENT_KIND_REDRIVE_REQUESTED
	evCompleted = gatewayv1.TrailEventKind_TRAIL_EVENT_KIND_COMPLETED
)

// TestTrailCommittedPayment: a payment between two banks shows, per bank, its prepare sent, a
// YES vote, the decision (commit, by the request) after both votes, and each bank's
// acknowledgement, then completion; both banks hold the transaction committed.
func TestTrailCommittedPayment(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, envOptions{})
	alice, root := e.customer(t, "alice"), e.admin(t, "root")
	p := alice.pay(t, newPaymentID(), "bank1-1001", "bank2-2002", 500)
	if p.GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
		t.Fatalf("payment %v", p.GetStatus())
	}
	tr := trailOf(t, root, p.GetPaymentId(), func(r *gatewayv1.GetPaymentTrailResponse) bool {
		return r.GetCompleted() && kindAt(r.GetEvents(), evAck, "bank1") >= 0 && kindAt(r.GetEvents(), evAck, "bank2") >= 0
	})
	ev := tr.GetEvents()
	if ev[0].GetKind() != evAdmitted || ev[len(ev)-1].GetKind() != evCompleted {
		t.Fatalf("trail does not start with ADMITTED and end with COMPLETED:\n%s", trailText(ev))
	}
	decided := kindAt(ev, evDecided, "")
	if d := ev[decided]; d.GetDecision() != "commit" || d.GetDecidedBy() != gatewayv1.DecidedBy_DECIDED_BY_REQUEST {
		t.Fatalf("DECIDED %q by %v, want commit by the request:\n%s", d.GetDecision(), d.GetDecidedBy(), trailText(ev))
	}
	for _, bank := range []string{"bank1", "bank2"} {
		sent, vote, ack := kindAt(ev, evPrepare, bank), kindAt(ev, evVote, bank), kindAt(ev, evAck, bank)
		if !(0 < sent && sent < vote && vote < decided && decided < ack) {
			t.Fatalf("%s: PREPARE_SENT at %d, VOTE at %d, DECIDED at %d, ACKNOWLEDGED at %d: not in that order:\n%s", bank, sent, vote, decided, ack, trailText(ev))
		}
		if ev[vote].GetVote() != "yes" {
			t.Fatalf("%s voted %q:\n%s", bank, ev[vote].GetVote(), trailText(ev))
		}
	}
	for _, k := range []gatewayv1.TrailEventKind{evBankError, evRetry, evClaimed, evRedrive} {
		if n := countKind(ev, k); n != 0 {
			t.Fatalf("%d %v events in the trail of a payment that went smoothly:\n%s", n, k, trailText(ev))
		}
	}
	for i := 1; i < len(ev); i++ {
		if ev[i].GetTime().AsTime().Before(ev[i-1].GetTime().AsTime()) {
			t.Fatalf("event %d is older than event %d:\n%s", i, i-1, trailText(ev))
		}
	}
	if len(tr.GetBanks()) != 2 {
		t.Fatalf("banks %v", tr.GetBanks())
	}
	for _, b := range tr.GetBanks() {
		if b.GetState() != "committed" {
			t.Errorf("bank %s holds the transaction %s (%s), want committed", b.GetBank(), b.GetState(), b.GetDetail())
		}
	}
	if tr.GetPayment().GetUsername() != "alice" || tr.GetPayment().GetAmount() != 500 {
		t.Errorf("payment %v", tr.GetPayment())
	}
	e.assertSettled(t)
}

// TestTrailNoVote: a payment above the payer's balance shows the payer bank's NO vote with its
// reason, and the abort the request decided; the bank's own record says why.
func TestTrailNoVote(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, envOptions{})
	alice, root := e.customer(t, "alice"), e.admin(t, "root")
	p := alice.pay(t, newPaymentID(), "bank1-1001", "bank2-2002", 100_000_000)
	if p.GetFailureReason() != gatewayv1.FailureReason_FAILURE_REASON_INSUFFICIENT_FUNDS {
		t.Fatalf("payment %v %v", p.GetStatus(), p.GetFailureReason())
	}
	tr := trailOf(t, root, p.GetPaymentId(), func(r *gatewayv1.GetPaymentTrailResponse) bool {
		return r.GetCompleted() && kindAt(r.GetEvents(), evVote, "bank1") >= 0
	})
	ev := tr.GetEvents()
	no := ev[kindAt(ev, evVote, "bank1")]
	if no.GetVote() != "no" || !strings.HasPrefix(no.GetDetail(), "insufficient_funds: account bank1-1001 ") {
		t.Fatalf("bank1's vote %q (%q), want no for insufficient funds:\n%s", no.GetVote(), no.GetDetail(), trailText(ev))
	}
	d := ev[kindAt(ev, evDecided, "")]
	if d.GetDecision() != "abort" || d.GetDecidedBy() != gatewayv1.DecidedBy_DECIDED_BY_REQUEST || d.GetDetail() == "" {
		t.Fatalf("DECIDED %q by %v (%q), want an abort by the request with its reason:\n%s", d.GetDecision(), d.GetDecidedBy(), d.GetDetail(), trailText(ev))
	}
	b1 := tr.GetBanks()[0]
	if b1.GetBank() != "bank1" || b1.GetState() != "aborted" || b1.GetDetail() != "insufficient_funds" {
		t.Errorf("bank1's record: %v, want aborted for insufficient_funds", b1)
	}
	e.assertSettled(t)
}

// TestTrailTimeoutMonitor: a payment admitted by a gateway that stopped before preparing it
// (its row is stored directly here) is aborted by the timeout monitor once past its deadline;
// the trail says so, and both banks acknowledge the abort.
func TestTrailTimeoutMonitor(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, envOptions{})
	root := e.admin(t, "root")
	ctx := context.Background()
	p := paymentRecord{PaymentID: newPaymentID(), Username: "alice", From: "bank1-1001", To: "bank2-2002", Amount: 100, Currency: "USD"}
	p.Fingerprint = paymentFingerprint(p.Username, p.From, p.To, p.Amount, p.Currency)
	p.CreatedAt = time.Now().Add(-2 * time.Second)
	p.Deadline = p.CreatedAt.Add(time.Second)
	if _, inserted, err := admitPayment(ctx, e.gw.store, p); err != nil || !inserted {
		t.Fatalf("admit: inserted %v, %v", inserted, err)
	}
	e.gw.coord.Kick()
	tr := trailOf(t, root, p.PaymentID, func(r *gatewayv1.GetPaymentTrailResponse) bool {
		return r.GetCompleted() && countKind(r.GetEvents(), evAck) == 2
	})
	ev := tr.GetEvents()
	d := ev[kindAt(ev, evDecided, "")]
	if d.GetDecision() != "abort" || d.GetDecidedBy() != gatewayv1.DecidedBy_DECIDED_BY_TIMEOUT_MONITOR {
		t.Fatalf("DECIDED %q by %v, want abort by the timeout monitor:\n%s", d.GetDecision(), d.GetDecidedBy(), trailText(ev))
	}
	if n := countKind(ev, evPrepare); n != 0 {
		t.Fatalf("%d prepares sent for a payment past its deadline:\n%s", n, trailText(ev))
	}
	if tr.GetPayment().GetFailureReason() != gatewayv1.FailureReason_FAILURE_REASON_TIMEOUT {
		t.Errorf("payment %v", tr.GetPayment())
	}
	for _, b := range tr.GetBanks() {
		if b.GetState() != "aborted" {
			t.Errorf("bank %s: %s, want aborted (the abort's tombstone)", b.GetBank(), b.GetState())
		}
	}
	e.assertSettled(t)
}

// TestTrailPaymentNotFound: an unknown payment id is NOT_FOUND payment_not_found, and the call
// is audited as refused.
func TestTrailPaymentNotFound(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, envOptions{})
	root := e.admin(t, "root")
	id := newPaymentID()
	_, err := root.admin.GetPaymentTrail(context.Background(), connect.NewRequest(&gatewayv1.GetPaymentTrailRequest{PaymentId: id}))
	wantErr(t, err, connect.CodeNotFound, "payment_not_found")
	log := e.auditLog(t)
	last := log[len(log)-1]
	if last.Action != "GetPaymentTrail" || last.Target != "payment:"+id || last.Outcome != "not_found" || last.Reason != "payment_not_found" || last.Actor != "root" {
		t.Errorf("audit entry %+v", last)
	}
}

// gatedTrailStore holds every trail write until gate is closed (or for a minute).
type gatedTrailStore struct {
	next interface {
		AppendTrail(ctx context.Context, events []trailEvent) error
	}
	gate <-chan struct{}
}

func (s *gatedTrailStore) AppendTrail(ctx context.Context, events []trailEvent) error {
	select {
	case <-s.gate:
	case <-time.After(time.Minute):
	}
	return s.next.AppendTrail(context.Background(), events)
}

// TestTrailWrittenAtShutdown: trail events not yet written when the gateway shuts down are
// written before its store closes. The trail's writes are held until Shutdown tells the trail
// to stop.
func TestTrailWrittenAtShutdown(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, envOptions{beforeStart: func(g *Gateway) {
		g.coord.trail.store = &gatedTrailStore{next: g.coord.trail.store, gate: g.coord.trail.stop}
	}})
	alice := e.customer(t, "alice")
	p := alice.pay(t, newPaymentID(), "bank1-1001", "bank2-2002", 500)
	e.assertSettled(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.gw.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	s, err := OpenStore(ctx, filepath.Join(e.dir, "gateway", "gateway.db"), false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	trail, err := s.Trail(ctx, p.GetPaymentId())
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[gatewayv1.TrailEventKind]int{}
	for _, ev := range trail {
		kinds[gatewayv1.TrailEventKind(ev.Kind)]++
	}
	if kinds[evPrepare] != 2 || kinds[evVote] != 2 || kinds[evAck] != 2 {
		t.Fatalf("trail after shutdown: %v, want 2 prepares sent, 2 votes, 2 acknowledgements", kinds)
	}
}

// TestTrailReplicaTakeover: a replica admits a payment and dies; the replica whose recovery
// claims it once the lease expired records the claim, its re-sent prepare and the banks'
// answers under its own lease id, and the decision is recovery's.
func TestTrailReplicaTakeover(t *testing.T) {
	a, b := newSharedBank(), newSharedBank()
	const ttl = 400 * time.Millisecond
	rs := newReplicas(t, 2, ttl, 30*time.Second, false, a, b)
	dead, survivor := rs[0], rs[1]
	survivor.trail.start()
	t.Cleanup(func() { survivor.trail.close(context.Background()) })
	ctx := context.Background()
	p := testPayment("bankA-1", "bankB-1", 100)
	p.CreatedAt = time.Now()
	p.Deadline = p.CreatedAt.Add(30 * time.Second)
	if _, inserted, err := admitPayment(ctx, dead.store, p); err != nil || !inserted {
		t.Fatalf("admit: inserted %v, %v", inserted, err)
	}
	go survivor.keepLease(t.Context())
	waitFor(t, 10*time.Second, "the survivor to finish the dead replica's payment", func() bool {
		survivor.recoverOnce(ctx)
		waitIdle(t, survivor)
		got, err := survivor.store.Payment(ctx, p.PaymentID)
		return err == nil && got.Completed
	})
	got := stored(t, survivor.store, p.PaymentID)
	if got.Decision != decisionCommit || got.DecidedBy != decidedByRecovery {
		t.Fatalf("decision %v by %v, want commit by recovery", got.Decision, got.DecidedBy)
	}
	var events []*gatewayv1.TrailEvent
	waitFor(t, 10*time.Second, "the survivor's trail events", func() bool {
		recorded, err := survivor.store.Trail(ctx, p.PaymentID)
		if err != nil {
			t.Fatal(err)
		}
		events = paymentTrail(got, recorded)
		return countKind(events, evAck) == 2
	})
	claimed, retry := kindAt(events, evClaimed, ""), kindAt(events, evRetry, "")
	if claimed < 0 || retry < claimed || kindAt(events, evPrepare, "bankA") < retry || kindAt(events, evDecided, "") < kindAt(events, evVote, "bankB") {
		t.Fatalf("trail of a payment taken over:\n%s", trailText(events))
	}
	if ev := events[retry]; ev.GetAttempt() != 1 || ev.GetDetail() != "prepare" {
		t.Fatalf("RETRY attempt %d %q, want attempt 1 of the prepare:\n%s", ev.GetAttempt(), ev.GetDetail(), trailText(events))
	}
	for _, ev := range events {
		switch ev.GetKind() {
		case evAdmitted, evDecided, evCompleted: // from the row
		default:
			if ev.GetReplica() != survivor.store.Owner() {
				t.Fatalf("%v recorded by %q, want the survivor %q:\n%s", ev.GetKind(), ev.GetReplica(), survivor.store.Owner(), trailText(events))
			}
		}
	}
}
