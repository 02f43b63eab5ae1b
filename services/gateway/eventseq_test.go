package gateway

import (
	"context"
	"errors"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/paygate/paygate/internal/pgdb/pgtest"
)

// runSequencer runs a sequencer of s with the given floor until the test ends.
func runSequencer(t testing.TB, s Store, floor time.Duration) *eventSequencer {
	t.Helper()
	q := newEventSequencer(s, nil)
	q.floor = floor
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); q.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return q
}

// waitSeq waits (at most 10 s) for q to have numbered seq.
func waitSeq(t testing.TB, q *eventSequencer, seq int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := q.WaitFor(ctx, seq); err != nil {
		last, _ := q.Last()
		t.Fatalf("waiting for seq %d: %v (numbered up to %d)", seq, err, last)
	}
}

// TestEventSequencerWakes: the sequencer numbers this process's events as soon as they are
// appended (the floor is an hour: only the appends can wake it), and once WaitFor returns they
// are visible to readers.
func TestEventSequencerWakes(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		q := runSequencer(t, s, time.Hour)
		p := ctAdmit(t, s, ctPayment("alice", "bankA-1", "bankB-1", 1))
		waitSeq(t, q, 1)
		ctDecide(t, s, p.PaymentID, decisionCommit)
		waitSeq(t, q, 2)
		id := newPaymentID()
		ctDecide(t, s, id, decisionAbort) // no event
		if _, err := s.AdoptUnadmitted(ctx, ctPaymentWithID(id)); err != nil {
			t.Fatal(err)
		}
		waitSeq(t, q, 4)
		evs, err := s.EventsAfter(ctx, 0, 10)
		want := []string{"payment.created " + p.PaymentID, "payment.succeeded " + p.PaymentID,
			"payment.created " + id, "payment.failed " + id}
		if err != nil || !slices.Equal(evTypes(evs), want) {
			t.Fatalf("events once numbered: %v, %v; want %v", evTypes(evs), err, want)
		}
	})
}

// TestStorePGEventSequencerReplicas: a replica's sequencer learns that another replica
// numbered events (its announcement), without appending or polling itself.
func TestStorePGEventSequencerReplicas(t *testing.T) {
	t.Parallel()
	a, b, _ := ctReplicas(t, 10*time.Second, 10*time.Second)
	qa := runSequencer(t, a, time.Hour)
	qb := runSequencer(t, b, time.Hour)
	// b's LISTEN may not be in place yet when the first announcements go: try a few times.
	for i := int64(1); ; i++ {
		ctAdmit(t, a, ctPayment("alice", "bankA-1", "bankB-1", 1))
		waitSeq(t, qa, i)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := qb.WaitFor(ctx, i)
		cancel()
		if err == nil {
			break
		}
		if i == 10 {
			last, _ := qb.Last()
			t.Fatalf("replica b knows seqs up to %d; a numbered %d", last, i)
		}
	}
}

// TestStorePGEventSequencerFloor: events nobody was told of (appended by a replica that died
// before its sequencer ran) are numbered by another replica's periodic run.
func TestStorePGEventSequencerFloor(t *testing.T) {
	t.Parallel()
	s := ctOpenPG(t, pgtest.NewDatabase(t, "paygate_store_"), 10*time.Second)
	q := runSequencer(t, s, 20*time.Millisecond)
	// Once the loop has numbered an event of its own, it waits: for appends, or its floor.
	ctAdmit(t, s, ctPayment("alice", "bankA-1", "bankB-1", 1))
	waitSeq(t, q, 1)
	if _, err := s.pool.Exec(context.Background(), `INSERT INTO events (type, payment_id, payer, payee, created_at, snapshot)
		VALUES ('payment.created', 'x', 'alice', '', paygate_now_ns(), '{}')`); err != nil {
		t.Fatal(err)
	}
	waitSeq(t, q, 2)
}

// TestEventSequencerNotifier: Last's channel is closed when the numbered seq grows, and only
// then; WaitFor returns at once for a seq reached and with ctx's error otherwise.
func TestEventSequencerNotifier(t *testing.T) {
	t.Parallel()
	q := newEventSequencer(nil, nil)
	last, advanced := q.Last()
	if last != 0 {
		t.Fatalf("last %d", last)
	}
	q.advance(3)
	select {
	case <-advanced:
	default:
		t.Fatal("an advance did not close the channel")
	}
	last, advanced = q.Last()
	q.advance(2)
	q.advance(3)
	select {
	case <-advanced:
		t.Fatal("the channel was closed without an advance")
	default:
	}
	if last != 3 {
		t.Fatalf("last %d, want 3", last)
	}
	if err := q.WaitFor(context.Background(), 3); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := q.WaitFor(ctx, 4); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitFor beyond the last seq with an ended ctx: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- q.WaitFor(context.Background(), 5) }()
	q.advance(4)
	q.advance(5)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WaitFor did not return once the seq was reached")
	}
}

// BenchmarkStorePGEventSequencing measures how long after an admission is durable its event is
// numbered (visible to readers), with the gateway's sequencer loop running: one admission at a
// time, so that each waits for its own event.
func BenchmarkStorePGEventSequencing(b *testing.B) {
	if err := pgtest.Reachable(); err != nil {
		b.Skipf("PostgreSQL not reachable at %s: %v", pgtest.URL(), err)
	}
	s, err := OpenPGStore(context.Background(), pgtest.NewDatabase(b, "paygate_bench_")+os.Getenv("BENCH_PG_OPTS"), PGStoreOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	q := runSequencer(b, s, eventSequenceFloor)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		if _, _, err := admitPayment(context.Background(), s, ctPayment("alice", "bankA-1", "bankB-1", 1)); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		waitSeq(b, q, int64(i+1))
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
