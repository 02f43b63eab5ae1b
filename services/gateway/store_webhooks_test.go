package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paygate/paygate/internal/pgdb/pgtest"
)

// The webhook store's contract tests (see webhookStore), on both stores, and on two PostgreSQL
// replicas.

// whEndpointOf is an enabled endpoint of user's for types.
func whEndpointOf(user string, types ...string) webhookEndpoint {
	return webhookEndpoint{ID: newWebhookID("we_"), Username: user, URL: "https://example.com/hook",
		EventTypes: types, Secret: "whsec_test", Status: endpointEnabled, CreatedAt: time.Now()}
}

// whCreate creates ep in s, failing the test on an error.
func whCreate(t testing.TB, s Store, ep webhookEndpoint) webhookEndpoint {
	t.Helper()
	out, err := s.CreateWebhookEndpoint(context.Background(), ep, maxWebhookEndpoints)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// whPaid admits a payment from alice's account to bob's and decides it, and numbers the events.
func whPaid(t testing.TB, s Store, d decision) string {
	t.Helper()
	p := ctAdmit(t, s, ctPayment("alice", "bank1-1001", "bank2-2002", 10))
	ctDecide(t, s, p.PaymentID, d)
	evSequence(t, s)
	return p.PaymentID
}

// whFanOut fans out everything and returns how many deliveries it created.
func whFanOutAll(t testing.TB, s Store) int {
	t.Helper()
	total := 0
	for {
		n, created, _, err := s.FanOutWebhooks(context.Background(), 2, s.Now())
		if err != nil {
			t.Fatal(err)
		}
		total += created
		if n == 0 {
			return total
		}
	}
}

// summary describes jobs for a failure message.
func summary(jobs []webhookJob) string {
	var b strings.Builder
	for _, j := range jobs {
		fmt.Fprintf(&b, "[%s: %s seq %d of %s] ", j.Endpoint.ID, j.Delivery.EventType, j.Delivery.EventSeq, j.Delivery.PaymentID)
	}
	return b.String()
}

// jobsByEndpoint indexes jobs by endpoint id.
func jobsByEndpoint(jobs []webhookJob) map[string]webhookJob {
	out := map[string]webhookJob{}
	for _, j := range jobs {
		out[j.Endpoint.ID] = j
	}
	return out
}

func TestStoreWebhooks(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		evUsers(t, s, "alice:bank1-1001", "bob:bank2-2002", "carol:bank3-3001")
		whPaid(t, s, decisionCommit) // before the endpoints: not delivered

		succ := whCreate(t, s, whEndpointOf("bob", "payment.succeeded"))
		all := whCreate(t, s, whEndpointOf("bob", "*"))
		payer := whCreate(t, s, whEndpointOf("alice", "payment.failed"))
		whCreate(t, s, whEndpointOf("carol", "*")) // neither payer nor payee
		if succ.StartSeq == 0 || all.StartSeq != succ.StartSeq {
			t.Fatalf("start seqs %d, %d; want the last event's", succ.StartSeq, all.StartSeq)
		}
		if eps, err := s.WebhookEndpoints(ctx, "bob"); err != nil || len(eps) != 2 || eps[0].ID != succ.ID || eps[1].ID != all.ID {
			t.Fatalf("bob's endpoints: %v, %v", eps, err)
		}
		if _, err := s.WebhookEndpoint(ctx, "alice", succ.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("alice reads bob's endpoint: %v; want ErrNotFound", err)
		}
		if err := s.DeleteWebhookEndpoint(ctx, "alice", succ.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("alice deletes bob's endpoint: %v; want ErrNotFound", err)
		}
		if _, err := s.CreateWebhookEndpoint(ctx, whEndpointOf("bob", "*"), 2); !errors.Is(err, ErrTooManyEndpoints) {
			t.Fatalf("bob's third endpoint with a limit of 2: %v; want ErrTooManyEndpoints", err)
		}

		p1 := whPaid(t, s, decisionCommit)
		p2 := whPaid(t, s, decisionAbort)
		// succ: p1 succeeded; all: p1 and p2 created and decided (4); payer: p2 failed.
		if n := whFanOutAll(t, s); n != 6 {
			t.Fatalf("fan-out created %d deliveries; want 6", n)
		}
		// Idempotent: the cursor moved; and fanned out again from the start, nothing is twice.
		if n := whFanOutAll(t, s); n != 0 {
			t.Fatalf("second fan-out created %d", n)
		}
		rewind(t, s)
		if n := whFanOutAll(t, s); n != 0 {
			t.Fatalf("fan-out from the start again created %d deliveries; want none twice", n)
		}
		cursor, err := s.WebhookCursor(ctx)
		if last, _ := s.LastEventSeq(ctx); err != nil || cursor != last {
			t.Fatalf("cursor %d (%v); want the last seq %d", cursor, err, last)
		}

		now := s.Now()
		jobs, err := s.ClaimWebhookDeliveries(ctx, "A", now, now.Add(time.Minute), 10)
		if err != nil {
			t.Fatal(err)
		}
		by := jobsByEndpoint(jobs)
		if len(jobs) != 3 || by[succ.ID].Delivery.PaymentID != p1 || by[all.ID].Delivery.EventType != "payment.created" ||
			by[all.ID].Delivery.PaymentID != p1 || by[payer.ID].Delivery.PaymentID != p2 {
			t.Fatalf("claimed %s; want one per endpoint, the oldest first", summary(jobs))
		}
		// Leased: nobody else gets them.
		if more, err := s.ClaimWebhookDeliveries(ctx, "B", now, now.Add(time.Minute), 10); err != nil || len(more) != 0 {
			t.Fatalf("B claims leased endpoints: %s, %v", summary(more), err)
		}
		// all's p1 created fails (retry later): its p1 succeeded is behind it, and p2's events
		// are due; they are claimed next, in order.
		j := by[all.ID]
		if err := s.RecordWebhookAttempt(ctx, "A", j, webhookResult{
			Attempt: webhookAttempt{At: now, HTTPStatus: 500, Error: "HTTP 500", Latency: time.Millisecond},
			Status:  deliveryPending, NextAttemptAt: now.Add(time.Hour), FirstAttemptAt: now, Attempts: 1,
		}); err != nil {
			t.Fatal(err)
		}
		jobs, err = s.ClaimWebhookDeliveries(ctx, "B", now, now.Add(time.Minute), 10)
		if err != nil || len(jobs) != 1 || jobs[0].Endpoint.ID != all.ID || jobs[0].Delivery.PaymentID != p2 || jobs[0].Delivery.EventType != "payment.created" {
			t.Fatalf("B claims %s (%v); want all's delivery of p2 created (p1 succeeded waits behind p1 created)", summary(jobs), err)
		}
		ep, err := s.WebhookEndpoint(ctx, "bob", all.ID)
		if err != nil || ep.ConsecutiveFailures != 1 || ep.FailingSince.IsZero() {
			t.Fatalf("endpoint after a failure: %+v, %v", ep, err)
		}
		// B succeeds; then the lease is free again but nothing of p1 is due before next.
		if err := s.RecordWebhookAttempt(ctx, "B", jobs[0], webhookResult{
			Attempt: webhookAttempt{At: now, HTTPStatus: 200}, Status: deliverySucceeded, FinishedAt: now, Success: true,
		}); err != nil {
			t.Fatal(err)
		}
		// An expired lease (A's on succ and payer) is claimed again: at least once.
		later := now.Add(2 * time.Minute)
		jobs, err = s.ClaimWebhookDeliveries(ctx, "B", later, later.Add(time.Minute), 10)
		by = jobsByEndpoint(jobs)
		if err != nil || by[succ.ID].Delivery.ID == "" || by[payer.ID].Delivery.ID == "" || by[all.ID].Delivery.EventType != "payment.failed" {
			t.Fatalf("after the leases expired, B claims %s (%v)", summary(jobs), err)
		}

		// The deliveries as bob sees them, with their attempts; alice cannot see them.
		ds, err := s.WebhookDeliveries(ctx, "bob", all.ID, 0, 0, 10)
		if err != nil || len(ds) != 4 {
			t.Fatalf("all's deliveries: %d, %v", len(ds), err)
		}
		for i := 1; i < len(ds); i++ {
			if ds[i].EventSeq >= ds[i-1].EventSeq {
				t.Fatal("deliveries not newest first")
			}
		}
		oldest := ds[len(ds)-1]
		if len(oldest.Log) != 1 || oldest.Log[0].HTTPStatus != 500 || oldest.Log[0].Error != "HTTP 500" {
			t.Fatalf("oldest delivery's attempts: %+v", oldest.Log)
		}
		if page, err := s.WebhookDeliveries(ctx, "bob", all.ID, ds[1].EventSeq, 0, 10); err != nil || len(page) != 2 || page[0].ID != ds[2].ID {
			t.Fatalf("the page before %d: %d, %v", ds[1].EventSeq, len(page), err)
		}
		if ok, err := s.WebhookDeliveries(ctx, "bob", all.ID, 0, deliverySucceeded, 10); err != nil || len(ok) != 1 {
			t.Fatalf("succeeded deliveries: %d, %v; want 1", len(ok), err)
		}
		if _, err := s.WebhookDeliveries(ctx, "alice", all.ID, 0, 0, 10); !errors.Is(err, ErrNotFound) {
			t.Fatalf("alice lists bob's deliveries: %v", err)
		}
		if _, err := s.WebhookDelivery(ctx, "alice", oldest.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("alice reads bob's delivery: %v", err)
		}
		if _, err := s.RequestRedelivery(ctx, "alice", oldest.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("alice redelivers bob's delivery: %v", err)
		}

		// Disabled: nothing is claimed; enabled: pending deliveries are due at once again.
		if err := s.ReleaseWebhookLeases(ctx, "B"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.UpdateWebhookEndpoint(ctx, "bob", all.ID, now, func(ep *webhookEndpoint) error {
			ep.Status, ep.DisabledReason = endpointDisabled, disabledByUser
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		jobs, _ = s.ClaimWebhookDeliveries(ctx, "C", later, later.Add(time.Minute), 10)
		if _, ok := jobsByEndpoint(jobs)[all.ID]; ok {
			t.Fatal("a disabled endpoint was claimed")
		}
		if err := s.ReleaseWebhookLeases(ctx, ""); err != nil {
			t.Fatal(err)
		}
		ep, err = s.UpdateWebhookEndpoint(ctx, "bob", all.ID, now, func(ep *webhookEndpoint) error {
			ep.Status, ep.DisabledReason = endpointEnabled, ""
			return nil
		})
		if err != nil || ep.ConsecutiveFailures != 0 {
			t.Fatalf("enabled: %+v, %v", ep, err)
		}
		jobs, _ = s.ClaimWebhookDeliveries(ctx, "C", now, now.Add(time.Minute), 10)
		if j := jobsByEndpoint(jobs)[all.ID]; j.Delivery.ID != oldest.ID || j.Delivery.Attempts != 0 || !j.Delivery.FirstAttemptAt.IsZero() {
			t.Fatalf("after enabling, claimed %s; want the oldest due now with a fresh retry period", summary([]webhookJob{j}))
		}

		// A redelivery makes a delivery that ended due, ahead of the others.
		if _, err := s.RequestRedelivery(ctx, "bob", ds[1].ID); err != nil {
			t.Fatal(err)
		}
		if err := s.ReleaseWebhookLeases(ctx, ""); err != nil {
			t.Fatal(err)
		}
		jobs, _ = s.ClaimWebhookDeliveries(ctx, "C", now, now.Add(time.Minute), 10)
		if j := jobsByEndpoint(jobs)[all.ID]; j.Delivery.ID != ds[1].ID || j.Delivery.Redeliver != 1 {
			t.Fatalf("after a redelivery request, claimed %s; want it", summary([]webhookJob{j}))
		}

		// Counts, retention and deletion.
		pending, disabled, err := s.WebhookCounts(ctx)
		if err != nil || pending == 0 || disabled != 0 {
			t.Fatalf("counts: %d pending, %d disabled, %v", pending, disabled, err)
		}
		if n, err := s.PruneWebhookDeliveries(ctx, now.Add(time.Hour)); err != nil || n != 1 {
			t.Fatalf("pruned %d (%v); want the one that ended", n, err)
		}
		if err := s.DeleteWebhookEndpoint(ctx, "bob", all.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := s.WebhookDelivery(ctx, "bob", oldest.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("a deleted endpoint's delivery: %v", err)
		}
		_ = p2
	})
}

// rewind sets the fan-out cursor back to 0.
func rewind(t testing.TB, s Store) {
	t.Helper()
	b := s.(whBackend)
	if err := b.whWrite(context.Background(), func(ctx context.Context, q whQuerier) error {
		_, err := q.exec(ctx, `UPDATE webhook_cursor SET seq = 0`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// TestStorePGWebhookLeases runs two replicas' claims concurrently: each endpoint is leased by
// one of them at a time, and every delivery is claimed.
func TestStorePGWebhookLeases(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewDatabase(t, "paygate_store_")
	a, b := ctOpenPG(t, dbURL, 10*time.Second), ctOpenPG(t, dbURL, 10*time.Second)
	ctx := context.Background()
	evUsers(t, a, "alice:bank1-1001", "bob:bank2-2002")
	var eps []webhookEndpoint
	for range 4 {
		eps = append(eps, whCreate(t, a, whEndpointOf("bob", "*")))
	}
	for range 5 {
		whPaid(t, a, decisionCommit)
	}
	if n := whFanOutAll(t, b); n != 4*10 {
		t.Fatalf("fan-out created %d; want 40", n)
	}
	var busy sync.Map // endpoint id -> owner
	var delivered atomic.Int64
	var overlap atomic.Int64
	var wg sync.WaitGroup
	for _, s := range []*PGStore{a, b, a, b} {
		owner := newWebhookID("o_")
		wg.Go(func() {
			for range 200 {
				now := s.Now()
				jobs, err := s.ClaimWebhookDeliveries(ctx, owner, now, now.Add(time.Minute), 2)
				if err != nil {
					t.Error(err)
					return
				}
				if len(jobs) == 0 && delivered.Load() == 40 {
					return
				}
				for _, j := range jobs {
					if _, loaded := busy.LoadOrStore(j.Endpoint.ID, owner); loaded {
						overlap.Add(1)
					}
					time.Sleep(time.Millisecond)
					busy.Delete(j.Endpoint.ID)
					if err := s.RecordWebhookAttempt(ctx, owner, j, webhookResult{Attempt: webhookAttempt{At: now, HTTPStatus: 200},
						Status: deliverySucceeded, FinishedAt: now, Success: true}); err != nil {
						t.Error(err)
						return
					}
					delivered.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if overlap.Load() != 0 || delivered.Load() != 40 {
		t.Fatalf("%d overlapping leases; %d of 40 delivered", overlap.Load(), delivered.Load())
	}
	_ = eps
}

// TestWebhookRetention: retention prunes the events that were fanned out and the deliveries
// that ended, never an event the fan-out has not read (its deliveries do not exist yet), nor
// a pending delivery.
func TestWebhookRetention(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		evUsers(t, s, "alice:bank1-1001", "bob:bank2-2002")
		ep := whCreate(t, s, whEndpointOf("bob", "*"))
		for range 3 {
			whPaid(t, s, decisionCommit) // 6 events
		}
		// Fan out the first 4 events only.
		if _, _, _, err := s.FanOutWebhooks(ctx, 4, s.Now()); err != nil {
			t.Fatal(err)
		}
		now := s.Now()
		jobs, err := s.ClaimWebhookDeliveries(ctx, "A", now, now.Add(time.Minute), 1)
		if err != nil || len(jobs) != 1 {
			t.Fatalf("claim: %d, %v", len(jobs), err)
		}
		if err := s.RecordWebhookAttempt(ctx, "A", jobs[0], webhookResult{Attempt: webhookAttempt{At: now, HTTPStatus: 200},
			Status: deliverySucceeded, FinishedAt: now, Success: true}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
		w := &webhookEngine{store: s, retention: time.Nanosecond, logger: slog.New(slog.DiscardHandler)}
		w.prune(ctx)
		evs, err := s.EventsAfter(ctx, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		cursor, _ := s.WebhookCursor(ctx)
		if len(evs) != 2 || evs[0].Seq != cursor+1 {
			t.Fatalf("after pruning, events %v (cursor %d); want the 2 not fanned out", summaryEvents(evs), cursor)
		}
		ds, err := s.WebhookDeliveries(ctx, "bob", ep.ID, 0, 0, 100)
		if err != nil || len(ds) != 3 {
			t.Fatalf("after pruning, %d deliveries (%v); want the 3 pending", len(ds), err)
		}
		for _, d := range ds {
			if d.Status != deliveryPending {
				t.Fatalf("delivery %s is %d after pruning", d.ID, d.Status)
			}
		}
	})
}

func summaryEvents(evs []eventRecord) []int64 {
	var out []int64
	for _, e := range evs {
		out = append(out, e.Seq)
	}
	return out
}

// TestStorePGWebhookCreateDuringFanOut: an endpoint created while another replica's fan-out
// is running misses none of the events after its start. The fan-out is played by a
// transaction that holds the cursor's row (as FanOutWebhooks does) while a new event is
// numbered, then moves the cursor past it, as a fan-out that read the event before the
// endpoint was visible would. The endpoint must start after that event (so a later fan-out
// is not needed for it) or the event is lost to it.
func TestStorePGWebhookCreateDuringFanOut(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewDatabase(t, "paygate_store_")
	a := ctOpenPG(t, dbURL, 10*time.Second)
	ctx := context.Background()
	evUsers(t, a, "alice:bank1-1001", "bob:bank2-2002")
	whPaid(t, a, decisionCommit)

	fanOut, err := a.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer fanOut.Rollback(ctx)
	if _, err := fanOut.Exec(ctx, `SELECT seq FROM webhook_cursor WHERE one = 1 FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	created := make(chan webhookEndpoint, 1)
	go func() {
		ep, err := a.CreateWebhookEndpoint(ctx, whEndpointOf("bob", "*"), maxWebhookEndpoints)
		if err != nil {
			t.Error(err)
		}
		created <- ep
	}()
	time.Sleep(300 * time.Millisecond) // the creation runs (or waits for the cursor)
	whPaid(t, a, decisionCommit)
	last, err := a.LastEventSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fanOut.Exec(ctx, `UPDATE webhook_cursor SET seq = $1 WHERE one = 1`, last); err != nil {
		t.Fatal(err)
	}
	if err := fanOut.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	ep := <-created
	if ep.StartSeq < last {
		t.Fatalf("an endpoint created during a fan-out that moved the cursor to %d starts after %d: events %d..%d are never delivered to it",
			last, ep.StartSeq, ep.StartSeq+1, last)
	}
}

// TestStoreWebhookClaimsPerUser: one user's many endpoints cannot take every sender. alice has
// eight endpoints with a delivery due and bob one; a claim of up to 16 leases at most
// maxWebhookAttemptsPerUser of alice's and bob's too, and while those leases live another
// claim takes none of alice's others.
func TestStoreWebhookClaimsPerUser(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		evUsers(t, s, "alice:bank1-1001", "bob:bank2-2002")
		for range 8 {
			whCreate(t, s, whEndpointOf("alice", "*"))
		}
		bob := whCreate(t, s, whEndpointOf("bob", "*"))
		whPaid(t, s, decisionCommit)
		whFanOutAll(t, s)
		perUser := func(jobs []webhookJob) map[string]int {
			n := map[string]int{}
			for _, j := range jobs {
				n[j.Endpoint.Username]++
			}
			return n
		}
		now := s.Now()
		jobs, err := s.ClaimWebhookDeliveries(ctx, "o_one", now, now.Add(time.Minute), 16)
		if err != nil {
			t.Fatal(err)
		}
		if n := perUser(jobs); n["alice"] != maxWebhookAttemptsPerUser || n["bob"] != 1 {
			t.Fatalf("one claim leased %v (%s); want %d of alice's endpoints and bob's %s", n, summary(jobs), maxWebhookAttemptsPerUser, bob.ID)
		}
		more, err := s.ClaimWebhookDeliveries(ctx, "o_two", now, now.Add(time.Minute), 16)
		if err != nil {
			t.Fatal(err)
		}
		if len(more) != 0 {
			t.Fatalf("a second claim while alice holds %d leases took %s; want none", maxWebhookAttemptsPerUser, summary(more))
		}
	})
}

// TestStoreWebhookClaimsSkipDisabledUsers: nothing is sent for a user an admin disabled; the
// delivery waits and is claimed once the user is enabled again.
func TestStoreWebhookClaimsSkipDisabledUsers(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		evUsers(t, s, "alice:bank1-1001", "bob:bank2-2002")
		whCreate(t, s, whEndpointOf("bob", "payment.succeeded"))
		whPaid(t, s, decisionCommit)
		whFanOutAll(t, s)
		setDisabled := func(disabled bool) {
			t.Helper()
			if _, _, _, err := s.UpdateUser(ctx, "bob", func(u *userRecord) error { u.Disabled = disabled; return nil }, disabled, s.Now()); err != nil {
				t.Fatal(err)
			}
		}
		setDisabled(true)
		now := s.Now()
		jobs, err := s.ClaimWebhookDeliveries(ctx, "o_one", now, now.Add(time.Minute), 16)
		if err != nil {
			t.Fatal(err)
		}
		if len(jobs) != 0 {
			t.Fatalf("claimed %s for a disabled user; want nothing", summary(jobs))
		}
		setDisabled(false)
		jobs, err = s.ClaimWebhookDeliveries(ctx, "o_one", now, now.Add(time.Minute), 16)
		if err != nil {
			t.Fatal(err)
		}
		if len(jobs) != 1 || jobs[0].Endpoint.Username != "bob" {
			t.Fatalf("claimed %s once bob is enabled again; want his one delivery", summary(jobs))
		}
	})
}
