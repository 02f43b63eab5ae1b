package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/paygate/paygate/internal/pgdb/pgtest"
)

// The event log's contract tests (see eventLog), on both stores as store_contract_test.go runs
// them, and the PostgreSQL-only ones on two replicas.

// evUsers creates users with the accounts given as "user:account,account".
func evUsers(t testing.TB, s Store, specs ...string) {
	t.Helper()
	var users []userRecord
	for _, spec := range specs {
		name, accounts, _ := strings.Cut(spec, ":")
		users = append(users, userRecord{Username: name, PasswordHash: "h", Role: "customer",
			Accounts: strings.Split(accounts, ",")})
	}
	if err := s.CreateUsers(context.Background(), users, time.Now()); err != nil {
		t.Fatal(err)
	}
}

// evSequence numbers every committed event of s and returns the last seq.
func evSequence(t testing.TB, s Store) int64 {
	t.Helper()
	for {
		n, last, err := s.SequenceEvents(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return last
		}
	}
}

// evAll numbers and returns every event of s.
func evAll(t testing.TB, s Store) []eventRecord {
	t.Helper()
	evSequence(t, s)
	evs, err := s.EventsAfter(context.Background(), 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// evTypes returns "type payment_id" of each event.
func evTypes(evs []eventRecord) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = string(e.Type) + " " + e.PaymentID
	}
	return out
}

// evCheckSnapshot fails the test unless e holds p as stored (its parameters and decision).
func evCheckSnapshot(t testing.TB, e eventRecord, p paymentRecord, status string) {
	t.Helper()
	want := eventSnapshot{From: p.From, To: p.To, Amount: p.Amount, Currency: p.Currency, Description: p.Description,
		Status: status, FailureReason: p.FailureReason, FailureMessage: p.FailureMessage, Presumed: p.Presumed,
		DecidedBy: p.DecidedBy, CreatedAt: p.CreatedAt.UnixNano(), RefundedAmount: p.Refunded, RefundOf: p.RefundOf}
	if !p.DecidedAt.IsZero() {
		want.DecidedAt = p.DecidedAt.UnixNano()
	}
	if e.Payment != want || e.PaymentID != p.PaymentID || e.Payer != p.Username {
		t.Fatalf("event %d %s of %s (payer %q): snapshot %+v\nwant %+v of %+v", e.Seq, e.Type, e.PaymentID, e.Payer, e.Payment, want, p)
	}
}

// TestStoreEventsAppended: admission, decisions and adoption each append their events once,
// with the payment as stored by the change; what changes nothing appends nothing.
func TestStoreEventsAppended(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		evUsers(t, s, "alice:bankA-1", "bob:bankB-1")
		if last := evSequence(t, s); last != 0 {
			t.Fatalf("last seq of an empty log: %d", last)
		}
		before := s.Now().Add(-time.Second)

		// Created, then succeeded; a later decision and a second admission append nothing.
		p := ctAdmit(t, s, ctPayment("alice", "bankA-1", "bankB-1", 100))
		if _, _, err := admitPayment(ctx, s, p); err != nil {
			t.Fatal(err)
		}
		evs := evAll(t, s)
		if len(evs) != 1 || evs[0].Type != eventPaymentCreated || evs[0].Payee != "bob" || evs[0].Seq <= 0 {
			t.Fatalf("after an admission: %v (%+v)", evTypes(evs), evs)
		}
		evCheckSnapshot(t, evs[0], p, eventStatusProcessing)
		if at := evs[0].CreatedAt; at.Before(before) || at.After(s.Now().Add(time.Second)) {
			t.Fatalf("event created at %s, not by the store's clock (%s)", at, s.Now())
		}
		committed := ctDecide(t, s, p.PaymentID, decisionCommit)
		ctDecide(t, s, p.PaymentID, decisionAbort)
		// Failed, with its reason.
		q := ctAdmit(t, s, ctPayment("alice", "bankA-1", "elsewhere-9", 5))
		aborted, err := s.Decide(ctx, q.PaymentID, decisionAbort, 4, "insufficient funds", false, s.Now(), decidedByTimeoutMonitor)
		if err != nil {
			t.Fatal(err)
		}
		// A presumed abort of a payment never admitted is no payment: no event. Its adoption
		// is: created, then failed. A second adoption appends nothing.
		id := newPaymentID()
		ctDecide(t, s, id, decisionAbort)
		if _, err := s.Decide(ctx, newPaymentID(), decisionCommit, 0, "", false, s.Now(), decidedByRequest); !errors.Is(err, ErrNotFound) {
			t.Fatalf("commit of an unknown payment: %v", err)
		}
		noEvents := len(evAll(t, s))
		r := ctPaymentWithID(id)
		r.To = "bankB-1"
		r.Fingerprint = paymentFingerprint(r.Username, r.From, r.To, r.Amount, r.Currency)
		adopted, err := s.AdoptUnadmitted(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.AdoptUnadmitted(ctx, r); err != nil {
			t.Fatal(err)
		}

		evs = evAll(t, s)
		want := []string{
			"payment.created " + p.PaymentID, "payment.succeeded " + p.PaymentID,
			"payment.created " + q.PaymentID, "payment.failed " + q.PaymentID,
			"payment.created " + id, "payment.failed " + id,
		}
		if got := evTypes(evs); !slices.Equal(got, want) || noEvents != 4 {
			t.Fatalf("events:\n%s\nwant\n%s\n(%d before the adoption, want 4)", strings.Join(got, "\n"), strings.Join(want, "\n"), noEvents)
		}
		for i := 1; i < len(evs); i++ {
			if evs[i].Seq <= evs[i-1].Seq {
				t.Fatalf("seqs not increasing: %d then %d", evs[i-1].Seq, evs[i].Seq)
			}
		}
		evCheckSnapshot(t, evs[1], committed, eventStatusSucceeded)
		evCheckSnapshot(t, evs[3], aborted, eventStatusFailed)
		evCheckSnapshot(t, evs[4], adopted, eventStatusFailed)
		evCheckSnapshot(t, evs[5], adopted, eventStatusFailed)
		if evs[1].Payment.Decided().IsZero() || !evs[1].Payment.Decided().Equal(committed.DecidedAt) {
			t.Fatalf("decided at %s, want %s", evs[1].Payment.Decided(), committed.DecidedAt)
		}
		for i, payee := range []string{"bob", "bob", "", "", "bob", "bob"} {
			if evs[i].Payee != payee {
				t.Fatalf("event %d (%s) payee %q, want %q", i, evs[i].Type, evs[i].Payee, payee)
			}
		}
		if last, err := s.LastEventSeq(ctx); err != nil || last != evs[5].Seq {
			t.Fatalf("last seq %d, %v; want %d", last, err, evs[5].Seq)
		}
	})
}

// TestStoreEventsByUser: a user's events are those of the payments it makes or receives (its
// accounts when the event was written), in seq order, in pages.
func TestStoreEventsByUser(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		evUsers(t, s, "alice:bankA-1", "bob:bankB-1", "carol:bankC-1", "dave:bankD-1")
		ab := ctAdmit(t, s, ctPayment("alice", "bankA-1", "bankB-1", 1))
		ca := ctAdmit(t, s, ctPayment("carol", "bankC-1", "bankA-1", 2))
		dd := ctAdmit(t, s, ctPayment("dave", "bankD-1", "bankD-1", 3)) // to oneself: one event, not two
		ctDecide(t, s, ab.PaymentID, decisionCommit)
		ctDecide(t, s, ca.PaymentID, decisionAbort)
		evSequence(t, s)
		want := map[string][]string{
			"alice": {"payment.created " + ab.PaymentID, "payment.created " + ca.PaymentID,
				"payment.succeeded " + ab.PaymentID, "payment.failed " + ca.PaymentID},
			"bob":   {"payment.created " + ab.PaymentID, "payment.succeeded " + ab.PaymentID},
			"carol": {"payment.created " + ca.PaymentID, "payment.failed " + ca.PaymentID},
			"dave":  {"payment.created " + dd.PaymentID},
			"eve":   nil,
		}
		for user, w := range want {
			evs, err := s.Events(ctx, user, 0, 100)
			if err != nil {
				t.Fatal(err)
			}
			if got := evTypes(evs); !slices.Equal(got, w) {
				t.Fatalf("%s's events %v, want %v", user, got, w)
			}
			// The same, a page of one at a time.
			var paged []eventRecord
			after := int64(0)
			for range 10 {
				page, err := s.Events(ctx, user, after, 1)
				if err != nil {
					t.Fatal(err)
				}
				if len(page) == 0 {
					break
				}
				if len(page) != 1 {
					t.Fatalf("a page of %d events, limit 1", len(page))
				}
				paged = append(paged, page...)
				after = page[0].Seq
			}
			if got := evTypes(paged); !slices.Equal(got, w) {
				t.Fatalf("%s's events paged %v, want %v", user, got, w)
			}
		}
		all, err := s.EventsAfter(ctx, 0, 100)
		if err != nil || len(all) != 5 {
			t.Fatalf("every event: %v, %v", evTypes(all), err)
		}
		rest, err := s.EventsAfter(ctx, all[2].Seq, 100)
		if err != nil || !slices.Equal(evTypes(rest), evTypes(all[3:])) {
			t.Fatalf("events after %d: %v, %v; want %v", all[2].Seq, evTypes(rest), err, evTypes(all[3:]))
		}
		if page, err := s.EventsAfter(ctx, 0, 2); err != nil || !slices.Equal(evTypes(page), evTypes(all[:2])) {
			t.Fatalf("first two events: %v, %v", evTypes(page), err)
		}
	})
}

// TestStoreEventsDecideRace: many deciders of one payment at once (commits and aborts) append
// exactly one decision event, the stored decision's.
func TestStoreEventsDecideRace(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		evRaceDecide(t, []Store{s}, 10, 8)
	})
}

// TestStorePGEventsDecideRaceReplicas: the same on two replicas.
func TestStorePGEventsDecideRaceReplicas(t *testing.T) {
	t.Parallel()
	a, b, _ := ctReplicas(t, 10*time.Second, 10*time.Second)
	evRaceDecide(t, []Store{a, b}, 20, 8)
}

// evRaceDecide admits payments payments, has deciders goroutines (spread over stores) decide
// each at once, and checks the events.
func evRaceDecide(t *testing.T, stores []Store, payments, deciders int) {
	ctx := context.Background()
	s := stores[0]
	var ids []string
	for range payments {
		ids = append(ids, ctAdmit(t, s, ctPayment("alice", "bankA-1", "bankB-1", 1)).PaymentID)
	}
	for _, id := range ids {
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range deciders {
			st := stores[i%len(stores)]
			d := []decision{decisionCommit, decisionAbort}[i%2]
			wg.Go(func() {
				<-start
				if _, err := st.Decide(ctx, id, d, 1, "race", false, st.Now(), decidedByRequest); err != nil {
					t.Error(err)
				}
			})
		}
		close(start)
		wg.Wait()
	}
	evs := evAll(t, s)
	decisions := map[string][]eventType{}
	for _, e := range evs {
		if e.Type != eventPaymentCreated {
			decisions[e.PaymentID] = append(decisions[e.PaymentID], e.Type)
		}
	}
	for _, id := range ids {
		p := stored(t, s, id)
		want := eventPaymentSucceeded
		if p.Decision == decisionAbort {
			want = eventPaymentFailed
		}
		if got := decisions[id]; len(got) != 1 || got[0] != want {
			t.Fatalf("payment %s decided %v: decision events %v, want one %s", id, p.Decision, got, want)
		}
	}
	if len(evs) != 2*payments {
		t.Fatalf("%d events for %d payments, want %d", len(evs), payments, 2*payments)
	}
}

// TestStorePruneEvents: PruneEvents deletes the events older than its time and below keepFrom,
// never one at or after keepFrom nor the newest, and a seq is never given again once pruned.
func TestStorePruneEvents(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		for range 5 {
			ctDecide(t, s, ctAdmit(t, s, ctPayment("alice", "bankA-1", "bankB-1", 1)).PaymentID, decisionCommit)
		}
		evs := evAll(t, s)
		if len(evs) != 10 {
			t.Fatalf("%d events, want 10", len(evs))
		}
		// Nothing created before an hour ago.
		if n, err := s.PruneEvents(ctx, s.Now().Add(-time.Hour), evs[9].Seq+1); err != nil || n != 0 {
			t.Fatalf("pruned %d, %v; want none (all are newer)", n, err)
		}
		keep := evs[4].Seq
		n, err := s.PruneEvents(ctx, s.Now().Add(time.Hour), keep)
		if err != nil || n != 4 {
			t.Fatalf("pruned %d, %v; want 4", n, err)
		}
		left := evAll(t, s)
		if !slices.Equal(evTypes(left), evTypes(evs[4:])) {
			t.Fatalf("left %v, want %v", evTypes(left), evTypes(evs[4:]))
		}
		// Everything delivered: all but the newest go, and the next event still gets a
		// higher seq than any before.
		if n, err := s.PruneEvents(ctx, s.Now().Add(time.Hour), evs[9].Seq+1); err != nil || n != 5 {
			t.Fatalf("pruned %d, %v; want 5", n, err)
		}
		if last, err := s.LastEventSeq(ctx); err != nil || last != evs[9].Seq {
			t.Fatalf("last seq after pruning all %d, %v; want %d", last, err, evs[9].Seq)
		}
		ctAdmit(t, s, ctPayment("alice", "bankA-1", "bankB-1", 1))
		again := evAll(t, s)
		if len(again) != 2 || again[0].Seq != evs[9].Seq || again[1].Seq <= evs[9].Seq {
			t.Fatalf("after pruning everything, a new event: %v; want the newest kept and a seq > %d", evTypes(again), evs[9].Seq)
		}
	})
}

// TestStoreEventsAtomic: a change and its event are stored together or not at all: when the
// event cannot be written, the admission, the decision and the adoption fail and change
// nothing.
func TestStoreEventsAtomic(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		p := ctAdmit(t, s, ctPayment("alice", "bankA-1", "bankB-1", 1))
		unadmitted := newPaymentID()
		ctDecide(t, s, unadmitted, decisionAbort)
		refuse, allow := evRefuseEvents(t, s)
		refuse()
		if _, err := s.Decide(ctx, p.PaymentID, decisionCommit, 0, "", false, s.Now(), decidedByRequest); err == nil {
			t.Fatal("a decision whose event cannot be written succeeded")
		}
		if got := stored(t, s, p.PaymentID); got.Decision != decisionNone {
			t.Fatalf("a decision whose event failed was stored: %+v", got)
		}
		q := ctPayment("alice", "bankA-1", "bankB-1", 1)
		if _, _, err := admitPayment(ctx, s, q); err == nil {
			t.Fatal("an admission whose event cannot be written succeeded")
		}
		if _, err := s.Payment(ctx, q.PaymentID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("an admission whose event failed was stored: %v", err)
		}
		if _, err := s.AdoptUnadmitted(ctx, ctPaymentWithID(unadmitted)); err == nil {
			t.Fatal("an adoption whose events cannot be written succeeded")
		}
		if got := stored(t, s, unadmitted); !isUnadmittedAbort(got) {
			t.Fatalf("an adoption whose events failed was stored: %+v", got)
		}
		allow()
		ctDecide(t, s, p.PaymentID, decisionCommit)
		if _, err := s.AdoptUnadmitted(ctx, ctPaymentWithID(unadmitted)); err != nil {
			t.Fatal(err)
		}
		want := []string{"payment.created " + p.PaymentID, "payment.succeeded " + p.PaymentID,
			"payment.created " + unadmitted, "payment.failed " + unadmitted}
		if got := evTypes(evAll(t, s)); !slices.Equal(got, want) {
			t.Fatalf("events %v, want %v", got, want)
		}
	})
}

// evRefuseEvents returns functions that make every insert into s's events table fail (a
// trigger) and that allow them again.
func evRefuseEvents(t *testing.T, s Store) (refuse, allow func()) {
	t.Helper()
	run := func(stmts ...string) {
		t.Helper()
		for _, q := range stmts {
			var err error
			switch s := s.(type) {
			case *SQLiteStore:
				_, err = s.db.Write.Exec(q)
			case *PGStore:
				_, err = s.pool.Exec(context.Background(), q)
			default:
				t.Fatalf("store %T", s)
			}
			if err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
	}
	if _, ok := s.(*SQLiteStore); ok {
		return func() {
				run(`CREATE TRIGGER refuse_events BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'events refused'); END`)
			}, func() {
				run(`DROP TRIGGER refuse_events`)
			}
	}
	run(`CREATE FUNCTION refuse_events() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'events refused'; END $$`)
	return func() {
			run(`CREATE TRIGGER refuse_events BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION refuse_events()`)
		}, func() {
			run(`DROP TRIGGER refuse_events ON events`)
		}
}

// TestStorePGEventsCrashAtCommit: the decision's backend is killed (pg_terminate_backend) while
// it is committing, after the decision and its event were written: neither is stored. A
// deferred constraint trigger on events holds the commit (it runs at commit) until the test has
// killed it; the decision is undone only because it is in the event's transaction.
func TestStorePGEventsCrashAtCommit(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewDatabase(t, "paygate_store_")
	s := ctOpenPG(t, dbURL, 10*time.Second)
	ctx := context.Background()
	p := ctAdmit(t, s, ctPayment("alice", "bankA-1", "bankB-1", 1))
	for _, q := range []string{
		`CREATE FUNCTION hold_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(60); RETURN NULL; END $$`,
		`CREATE CONSTRAINT TRIGGER hold_commit AFTER INSERT ON events DEFERRABLE INITIALLY DEFERRED
			FOR EACH ROW EXECUTE FUNCTION hold_commit()`,
	} {
		if _, err := s.pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.Decide(ctx, p.PaymentID, decisionCommit, 0, "", false, s.Now(), decidedByRequest)
		done <- err
	}()
	// The decider waits in the trigger, at its commit: kill it there.
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	waitFor(t, 10*time.Second, "the decision's commit to be held", func() bool {
		var killed bool
		err := conn.QueryRow(ctx, `SELECT coalesce(bool_or(pg_terminate_backend(pid)), false) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event = 'PgSleep' AND pid <> pg_backend_pid()`).Scan(&killed)
		return err == nil && killed
	})
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Decide succeeded although its commit was killed")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Decide did not return after its backend was killed")
	}
	if _, err := s.pool.Exec(ctx, `DROP TRIGGER hold_commit ON events`); err != nil {
		t.Fatal(err)
	}
	if got := stored(t, s, p.PaymentID); got.Decision != decisionNone {
		t.Fatalf("the decision survived the crash at its commit: %+v", got)
	}
	if got := evTypes(evAll(t, s)); !slices.Equal(got, []string{"payment.created " + p.PaymentID}) {
		t.Fatalf("events after the crash: %v; want only the creation", got)
	}
	// Decided again, now for good: the decision and its event.
	ctDecide(t, s, p.PaymentID, decisionCommit)
	if got := evTypes(evAll(t, s)); len(got) != 2 || got[1] != "payment.succeeded "+p.PaymentID {
		t.Fatalf("events after deciding again: %v", got)
	}
}

// evCrashChildEnv names the store a child process of TestStoreSQLiteEventsCrash decides in.
const evCrashChildEnv = "PAYGATE_TEST_EVENTS_CRASH_STORE"

// TestStoreSQLiteEventsCrash: a process deciding payments from many goroutines (group commit)
// is killed (SIGKILL) in the middle; in the store reopened, every payment is decided with
// exactly one decision event or undecided with none.
func TestStoreSQLiteEventsCrash(t *testing.T) {
	if path := os.Getenv(evCrashChildEnv); path != "" {
		evCrashChild(path)
		return
	}
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "gateway.db")
	s, err := OpenStore(ctx, path, false)
	if err != nil {
		t.Fatal(err)
	}
	const payments = 1000
	var ids []string
	for range payments {
		ids = append(ids, newPaymentID())
	}
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			for j := i; j < payments; j += 16 {
				if _, _, err := admitPayment(ctx, s, ctPaymentWithID(ids[j])); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	s.Close()
	if t.Failed() {
		return
	}

	cmd := exec.Command(os.Args[0], "-test.run=^TestStoreSQLiteEventsCrash$")
	cmd.Env = append(os.Environ(), evCrashChildEnv+"="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill it once it has decided a few hundred payments (it prints a line every 100).
	lines := bufio.NewScanner(out)
	for n := 0; n < 2 && lines.Scan(); {
		if strings.HasPrefix(lines.Text(), "decided") {
			n++
		}
	}
	cmd.Process.Kill()
	cmd.Wait()

	s, err = OpenStore(ctx, path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	decisions := map[string]int{}
	evs := evAll(t, s)
	// The reopened store knows how far its log goes before anything new is appended.
	if _, last, err := s.SequenceEvents(ctx); err != nil || len(evs) == 0 || last != evs[len(evs)-1].Seq {
		t.Errorf("reopened store: SequenceEvents last = %d (%v), want the last event's seq, of %d events", last, err, len(evs))
	}
	for _, e := range evs {
		if e.Type != eventPaymentCreated {
			decisions[e.PaymentID]++
		}
	}
	var decided int
	for _, id := range ids {
		p := stored(t, s, id)
		want := 0
		if p.Decision != decisionNone {
			want = 1
			decided++
		}
		if decisions[id] != want {
			t.Fatalf("payment %s: decision %v with %d decision events", id, p.Decision, decisions[id])
		}
	}
	t.Logf("%d of %d payments decided before the crash", decided, payments)
	if decided == 0 || decided == payments {
		t.Fatalf("%d of %d decided: the crash did not come in the middle", decided, payments)
	}
}

// evCrashChild decides every undecided payment in the store at path from 32 goroutines,
// printing a line every 100 decisions, until it is killed.
func evCrashChild(path string) {
	ctx := context.Background()
	s, err := OpenStore(ctx, path, false)
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	ps, err := s.Unfinished(ctx, nil, -1)
	if err != nil {
		fmt.Println("list:", err)
		os.Exit(2)
	}
	var n atomic.Int64
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Go(func() {
			for j := i; j < len(ps); j += 32 {
				if _, err := s.Decide(ctx, ps[j].PaymentID, decisionCommit, 0, "", false, time.Now(), decidedByRequest); err != nil {
					fmt.Println("decide:", err)
					os.Exit(2)
				}
				if n.Add(1)%100 == 0 {
					fmt.Println("decided", n.Load())
				}
			}
		})
	}
	wg.Wait()
	fmt.Println("all decided")
	select {} // wait for the kill
}

// TestStorePGEventsOutOfOrderCommit: an event inserted first but committed last is seen by a
// reader paging with after, with a seq above every seq it saw before, and never before it
// commits. (Were seqs the insertion order, it would get a seq below the later event's, which
// the reader has passed already.)
func TestStorePGEventsOutOfOrderCommit(t *testing.T) {
	t.Parallel()
	a, b, dbURL := ctReplicas(t, 10*time.Second, 10*time.Second)
	ctx := context.Background()
	// The first event's transaction, held open: inserted the way the store inserts events.
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	held := newPaymentID()
	if _, err := tx.Exec(ctx, `INSERT INTO events (type, payment_id, payer, payee, created_at, snapshot)
		VALUES ('payment.created', $1, 'alice', '', paygate_now_ns(), '{"status": "processing"}')`, held); err != nil {
		t.Fatal(err)
	}
	// A later event, on the other replica, committed.
	later := ctAdmit(t, b, ctPayment("alice", "bankA-1", "bankB-1", 1))
	evSequence(t, a)
	seen, err := a.EventsAfter(ctx, 0, 10)
	if err != nil || !slices.Equal(evTypes(seen), []string{"payment.created " + later.PaymentID}) {
		t.Fatalf("events while the first is uncommitted: %v, %v", evTypes(seen), err)
	}
	after := seen[0].Seq
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// Not numbered yet: invisible.
	if evs, err := a.EventsAfter(ctx, 0, 10); err != nil || len(evs) != 1 {
		t.Fatalf("events before the held one was numbered: %v, %v", evTypes(evs), err)
	}
	if n, last, err := b.SequenceEvents(ctx); err != nil || n != 1 || last != after+1 {
		t.Fatalf("SequenceEvents: %d, %d, %v; want 1 numbered, last %d", n, last, err, after+1)
	}
	next, err := a.EventsAfter(ctx, after, 10)
	if err != nil || !slices.Equal(evTypes(next), []string{"payment.created " + held}) || next[0].Seq <= after {
		t.Fatalf("events after %d once the held one committed: %v (%+v), %v", after, evTypes(next), next, err)
	}
}

// TestStorePGEventsConcurrentPaging: writers on two replicas, both replicas sequencing all
// the time, and a reader paging with after all along: the reader sees every event exactly once,
// in seq order, each payment's creation before its decision.
func TestStorePGEventsConcurrentPaging(t *testing.T) {
	t.Parallel()
	a, b, _ := ctReplicas(t, 10*time.Second, 10*time.Second)
	evConcurrentPaging(t, []Store{a, b}, 8, 40)
}

// TestStoreSQLiteEventsConcurrentPaging: the same with one SQLite store.
func TestStoreSQLiteEventsConcurrentPaging(t *testing.T) {
	t.Parallel()
	s, err := OpenStore(context.Background(), filepath.Join(t.TempDir(), "gateway.db"), false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	evConcurrentPaging(t, []Store{s}, 8, 40)
}

func evConcurrentPaging(t *testing.T, stores []Store, writers, perWriter int) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var bg sync.WaitGroup
	for _, s := range stores {
		bg.Go(func() {
			for ctx.Err() == nil {
				if _, _, err := s.SequenceEvents(ctx); err != nil && ctx.Err() == nil {
					t.Error(err)
					return
				}
			}
		})
	}
	// The reader.
	var seen []eventRecord
	readerDone := make(chan struct{})
	stopReading := make(chan struct{})
	go func() {
		defer close(readerDone)
		var after int64
		draining := false // stopReading was seen: the next empty page is the end
		for i := 0; ; i++ {
			page, err := stores[i%len(stores)].EventsAfter(context.Background(), after, 7)
			if err != nil {
				t.Error(err)
				return
			}
			seen = append(seen, page...)
			if len(page) > 0 {
				after = page[len(page)-1].Seq
				continue
			}
			select {
			case <-stopReading:
				if draining {
					return
				}
				draining = true
			default:
			}
		}
	}()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				s := stores[(w+i)%len(stores)]
				p, _, err := admitPayment(context.Background(), s, ctPayment("alice", "bankA-1", "bankB-1", 1))
				if err == nil {
					d := stores[(w+i+1)%len(stores)]
					_, err = d.Decide(context.Background(), p.PaymentID, decisionCommit, 0, "", false, d.Now(), decidedByRequest)
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	evSequence(t, stores[0])
	close(stopReading)
	<-readerDone
	cancel()
	bg.Wait()
	want := 2 * writers * perWriter
	state := map[string]eventType{}
	for i, e := range seen {
		if i > 0 && e.Seq <= seen[i-1].Seq {
			t.Fatalf("seq %d after %d", e.Seq, seen[i-1].Seq)
		}
		switch prev, ok := state[e.PaymentID]; {
		case e.Type == eventPaymentCreated && !ok, e.Type == eventPaymentSucceeded && prev == eventPaymentCreated:
			state[e.PaymentID] = e.Type
		default:
			t.Fatalf("event %d %s of %s after %q", e.Seq, e.Type, e.PaymentID, prev)
		}
	}
	if len(seen) != want {
		t.Fatalf("the reader saw %d events, want %d", len(seen), want)
	}
	all := evAll(t, stores[0])
	if len(all) != want || all[len(all)-1].Seq != seen[len(seen)-1].Seq {
		t.Fatalf("%d events stored, last %d; the reader saw %d, last %d", len(all), all[len(all)-1].Seq, len(seen), seen[len(seen)-1].Seq)
	}
}

// TestStorePGEventsPresumedAbortRacesAdmission: a presumed abort racing the payment's admission
// on another replica: either the admission won (created, then failed) or the presumed abort
// did (no payment, no event; the admission inserted nothing).
func TestStorePGEventsPresumedAbortRacesAdmission(t *testing.T) {
	t.Parallel()
	a, b, _ := ctReplicas(t, 10*time.Second, 10*time.Second)
	ctx := context.Background()
	outcomes := map[string]int{}
	for range 30 {
		p := ctPayment("alice", "bankA-1", "bankB-1", 1)
		start := make(chan struct{})
		var inserted bool
		var errA, errB error
		var wg sync.WaitGroup
		wg.Go(func() { <-start; _, inserted, errA = admitPayment(ctx, a, p) })
		wg.Go(func() {
			<-start
			_, errB = b.Decide(ctx, p.PaymentID, decisionAbort, 1, "asked", true, b.Now(), decidedByGetDecision)
		})
		close(start)
		wg.Wait()
		if errA != nil || errB != nil {
			t.Fatal(errA, errB)
		}
		evSequence(t, a)
		evs, err := a.EventsAfter(ctx, 0, -1)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range evs {
			if e.PaymentID == p.PaymentID {
				got = append(got, string(e.Type))
			}
		}
		want := []string(nil)
		if inserted {
			want = []string{string(eventPaymentCreated), string(eventPaymentFailed)}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("admission inserted %v: events %v, want %v", inserted, got, want)
		}
		outcomes[fmt.Sprint("inserted=", inserted)]++
	}
	t.Logf("outcomes: %v", outcomes)
}
