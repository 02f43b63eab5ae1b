package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/paygate/paygate/internal/faultproxy"
	"github.com/paygate/paygate/internal/pgdb"
	"github.com/paygate/paygate/internal/pgdb/pgtest"
)

// The store's contract tests: every test runs on a fresh SQLiteStore and a fresh PGStore (the
// latter skipped when no PostgreSQL server is reachable, see pgtest), and the PostgreSQL-only
// ones run two PGStores on one database as two gateway replicas.

// forEachStore runs fn as parallel subtests on a new SQLiteStore ("sqlite") and a new PGStore
// on a database of its own ("postgres").
func forEachStore(t *testing.T, fn func(t *testing.T, s Store)) {
	t.Helper()
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		s, err := OpenStore(context.Background(), filepath.Join(t.TempDir(), "gateway.db"), false)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		fn(t, s)
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		fn(t, ctOpenPG(t, pgtest.NewDatabase(t, "paygate_store_"), 10*time.Second))
	})
}

// openTestPGStore opens a PGStore on dbURL with lease ttl, closed when the test ends.
func ctOpenPG(t *testing.T, dbURL string, ttl time.Duration) *PGStore {
	t.Helper()
	s, err := OpenPGStore(context.Background(), dbURL, PGStoreOptions{LeaseTTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// pgReplicas opens two PGStores on one new database: two replicas, with leases of ttlA and ttlB.
func ctReplicas(t *testing.T, ttlA, ttlB time.Duration) (a, b *PGStore, dbURL string) {
	t.Helper()
	dbURL = pgtest.NewDatabase(t, "paygate_store_")
	return ctOpenPG(t, dbURL, ttlA), ctOpenPG(t, dbURL, ttlB), dbURL
}

// contractPayment is an undecided payment of user's with a deadline a minute after its creation.
func ctPayment(user, from, to string, amount int64) paymentRecord {
	p := paymentRecord{PaymentID: newPaymentID(), Username: user, From: from, To: to, Amount: amount,
		Currency: "USD", Description: "rent"}
	p.Fingerprint = paymentFingerprint(p.Username, p.From, p.To, p.Amount, p.Currency)
	p.CreatedAt = time.Now()
	p.Deadline = p.CreatedAt.Add(time.Minute)
	return p
}

// admit admits p and fails the test unless it was inserted.
func ctAdmit(t testing.TB, s Store, p paymentRecord) paymentRecord {
	t.Helper()
	out, inserted, err := admitPayment(context.Background(), s, p)
	if err != nil || !inserted {
		t.Fatalf("admit %s: inserted %v, %v", p.PaymentID, inserted, err)
	}
	return out
}

// decide decides id and fails the test on an error.
func ctDecide(t testing.TB, s Store, id string, d decision) paymentRecord {
	t.Helper()
	out, err := s.Decide(context.Background(), id, d, 7, "why", false, s.Now(), decidedByRequest)
	if err != nil {
		t.Fatalf("decide %s: %v", id, err)
	}
	return out
}

// sameParams fails the test unless got has want's parameters, and a deadline as far after its
// creation as want's.
func ctSameParams(t testing.TB, got, want paymentRecord) {
	t.Helper()
	if got.PaymentID != want.PaymentID || got.Username != want.Username || got.From != want.From || got.To != want.To ||
		got.Amount != want.Amount || got.Currency != want.Currency || got.Description != want.Description ||
		!bytes.Equal(got.Fingerprint, want.Fingerprint) {
		t.Fatalf("stored payment %+v\nwant the parameters of %+v", got, want)
	}
	if g, w := got.Deadline.Sub(got.CreatedAt), want.Deadline.Sub(want.CreatedAt); g != w {
		t.Fatalf("stored deadline is %s after creation, want %s", g, w)
	}
}

func ctIDs(ps []paymentRecord) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.PaymentID
	}
	return out
}

func TestStoreAdmitIdempotent(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		p := ctPayment("alice", "bankA-1", "bankB-1", 100)
		first := ctAdmit(t, s, p)
		ctSameParams(t, first, p)
		if first.Decision != decisionNone || first.Completed || first.Presumed || !first.DecidedAt.IsZero() {
			t.Fatalf("admitted payment %+v, want undecided", first)
		}
		if d := first.CreatedAt.Sub(s.Now()); d > time.Second || d < -time.Second {
			t.Fatalf("created at %s, %s from the store's clock", first.CreatedAt, d)
		}
		if got := stored(t, s, p.PaymentID); !got.CreatedAt.Equal(first.CreatedAt) || !got.Deadline.Equal(first.Deadline) {
			t.Fatalf("read back created %s deadline %s, admission returned %s %s", got.CreatedAt, got.Deadline, first.CreatedAt, first.Deadline)
		}

		// The same payment again: not inserted, the stored row returned.
		again, inserted, err := admitPayment(ctx, s, p)
		if err != nil || inserted {
			t.Fatalf("second admission: inserted %v, %v", inserted, err)
		}
		ctSameParams(t, again, p)
		if !again.CreatedAt.Equal(first.CreatedAt) {
			t.Fatalf("second admission returned created_at %s, want the first's %s", again.CreatedAt, first.CreatedAt)
		}

		// The same id with other parameters: not inserted, the first's row (and fingerprint).
		other := p
		other.Amount, other.To = 999, "bankB-9"
		other.Fingerprint = paymentFingerprint(other.Username, other.From, other.To, other.Amount, other.Currency)
		got, inserted, err := admitPayment(ctx, s, other)
		if err != nil || inserted {
			t.Fatalf("reuse: inserted %v, %v", inserted, err)
		}
		if !bytes.Equal(got.Fingerprint, p.Fingerprint) || got.Amount != 100 {
			t.Fatalf("reuse returned %+v, want the first payment", got)
		}
		if _, err := s.Payment(ctx, newPaymentID()); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown payment: %v, want ErrNotFound", err)
		}
	})
}

func TestStoreStartAdmitBeforeDurable(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		p := ctPayment("alice", "bankA-1", "bankB-1", 100)
		p.Deadline = p.CreatedAt.Add(7 * time.Second)
		st, inserted, durable, err := s.StartAdmitPayment(ctx, p)
		if err != nil || !inserted {
			t.Fatalf("start admission: inserted %v, %v", inserted, err)
		}
		ctSameParams(t, st, p)
		if err := durable(); err != nil {
			t.Fatal(err)
		}
		// What StartAdmitPayment returned is what the store holds once durable.
		got := stored(t, s, p.PaymentID)
		ctSameParams(t, got, p)
		if !got.CreatedAt.Equal(st.CreatedAt) || !got.Deadline.Equal(st.Deadline) {
			t.Fatalf("stored times %s, %s; StartAdmitPayment said %s, %s", got.CreatedAt, got.Deadline, st.CreatedAt, st.Deadline)
		}

		st2, inserted, durable, err := s.StartAdmitPayment(ctx, p)
		if err != nil || inserted {
			t.Fatalf("start admission again: inserted %v, %v", inserted, err)
		}
		if err := durable(); err != nil {
			t.Fatal(err)
		}
		if !st2.CreatedAt.Equal(st.CreatedAt) {
			t.Fatalf("second start returned created_at %s, want %s", st2.CreatedAt, st.CreatedAt)
		}

		// Concurrent admissions of one id on one store: one inserts, every one returns its row.
		q := ctPayment("alice", "bankA-1", "bankB-1", 5)
		var n atomic.Int32
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				out, inserted, durable, err := s.StartAdmitPayment(ctx, q)
				if err == nil {
					err = durable()
				}
				if err != nil {
					t.Error(err)
					return
				}
				if inserted {
					n.Add(1)
				}
				if !bytes.Equal(out.Fingerprint, q.Fingerprint) {
					t.Errorf("concurrent admission returned %+v", out)
				}
			})
		}
		wg.Wait()
		if n.Load() != 1 {
			t.Fatalf("%d concurrent admissions inserted, want 1", n.Load())
		}
	})
}

func TestStoreDecide(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		p := ctAdmit(t, s, ctPayment("alice", "bankA-1", "bankB-1", 100))
		got, err := s.Decide(ctx, p.PaymentID, decisionCommit, 0, "", false, s.Now(), decidedByRequest)
		if err != nil || got.Decision != decisionCommit || got.DecidedAt.IsZero() || got.Presumed {
			t.Fatalf("commit: %+v, %v", got, err)
		}
		// The compare-and-set: a later abort changes nothing and returns the commit.
		again, err := s.Decide(ctx, p.PaymentID, decisionAbort, 3, "too late", true, s.Now(), decidedByRequest)
		if err != nil || again.Decision != decisionCommit || again.FailureReason != 0 || again.FailureMessage != "" || again.Presumed {
			t.Fatalf("abort after commit: %+v, %v", again, err)
		}
		if got := stored(t, s, p.PaymentID); got.Decision != decisionCommit || !got.DecidedAt.Equal(again.DecidedAt) {
			t.Fatalf("stored %+v, want the first commit", got)
		}

		// An abort with its reason.
		q := ctAdmit(t, s, ctPayment("alice", "bankA-1", "bankB-1", 100))
		ab, err := s.Decide(ctx, q.PaymentID, decisionAbort, 4, "insufficient funds", false, s.Now(), decidedByRequest)
		if err != nil || ab.Decision != decisionAbort || ab.FailureReason != 4 || ab.FailureMessage != "insufficient funds" || ab.Completed {
			t.Fatalf("abort: %+v, %v", ab, err)
		}
		if c, err := s.Decide(ctx, q.PaymentID, decisionCommit, 0, "", false, s.Now(), decidedByRequest); err != nil || c.Decision != decisionAbort {
			t.Fatalf("commit after abort: %+v, %v", c, err)
		}

		// An unknown payment: an abort is recorded as a presumed abort, completed, without
		// parameters, and can never commit.
		id := newPaymentID()
		pa, err := s.Decide(ctx, id, decisionAbort, 2, "no decision", true, s.Now(), decidedByRequest)
		if err != nil || pa.Decision != decisionAbort || !pa.Presumed || !pa.Completed || len(pa.Fingerprint) != 0 ||
			pa.Username != "" || pa.FailureReason != 2 || pa.FailureMessage != "no decision" || !isUnadmittedAbort(pa) {
			t.Fatalf("presumed abort: %+v, %v", pa, err)
		}
		if c, err := s.Decide(ctx, id, decisionCommit, 0, "", false, s.Now(), decidedByRequest); err != nil || c.Decision != decisionAbort {
			t.Fatalf("commit of a presumed abort: %+v, %v", c, err)
		}
		if _, inserted, err := admitPayment(ctx, s, ctPaymentWithID(id)); err != nil || inserted {
			t.Fatalf("admission after a presumed abort: inserted %v, %v", inserted, err)
		}
		// A commit of an unknown payment records nothing.
		unknown := newPaymentID()
		if _, err := s.Decide(ctx, unknown, decisionCommit, 0, "", false, s.Now(), decidedByRequest); !errors.Is(err, ErrNotFound) {
			t.Fatalf("commit of an unknown payment: %v, want ErrNotFound", err)
		}
		if _, err := s.Payment(ctx, unknown); !errors.Is(err, ErrNotFound) {
			t.Fatalf("a commit of an unknown payment stored it: %v", err)
		}
	})
}

func ctPaymentWithID(id string) paymentRecord {
	p := ctPayment("alice", "bankA-1", "bankB-1", 100)
	p.PaymentID = id
	return p
}

func TestStoreAdoptUnadmitted(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		id := newPaymentID()
		ctDecide(t, s, id, decisionAbort)
		p := ctPaymentWithID(id)
		got, err := s.AdoptUnadmitted(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if got.Username != p.Username || got.From != p.From || got.To != p.To || got.Amount != p.Amount ||
			got.Currency != p.Currency || got.Description != p.Description || !bytes.Equal(got.Fingerprint, p.Fingerprint) ||
			got.Decision != decisionAbort || !got.Presumed {
			t.Fatalf("adopted %+v, want p's parameters on the presumed abort", got)
		}
		// A second adoption with other parameters changes nothing: it sees the first's.
		q := ctPaymentWithID(id)
		q.Username, q.Amount = "bob", 5
		q.Fingerprint = paymentFingerprint(q.Username, q.From, q.To, q.Amount, q.Currency)
		got, err = s.AdoptUnadmitted(ctx, q)
		if err != nil || !bytes.Equal(got.Fingerprint, p.Fingerprint) || got.Username != "alice" {
			t.Fatalf("second adoption: %+v, %v; want the first's parameters", got, err)
		}
		list, err := s.ListPayments(ctx, "alice", nil, nil, 10)
		if err != nil || len(list) != 1 || list[0].PaymentID != id {
			t.Fatalf("alice's payments after adoption: %v, %v", ctIDs(list), err)
		}
		// An admitted payment is not adopted.
		r := ctAdmit(t, s, ctPayment("alice", "bankA-1", "bankB-1", 100))
		ctDecide(t, s, r.PaymentID, decisionAbort)
		other := ctPaymentWithID(r.PaymentID)
		other.Amount = 1
		other.Fingerprint = paymentFingerprint(other.Username, other.From, other.To, other.Amount, other.Currency)
		if got, err := s.AdoptUnadmitted(ctx, other); err != nil || !bytes.Equal(got.Fingerprint, r.Fingerprint) {
			t.Fatalf("adoption of an admitted payment: %+v, %v", got, err)
		}
		if _, err := s.AdoptUnadmitted(ctx, ctPayment("alice", "a", "b", 1)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("adoption of an unknown payment: %v, want ErrNotFound", err)
		}
	})
}

func TestStoreMarkCompleted(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		a := ctAdmit(t, s, ctPayment("alice", "bankA-1", "bankB-1", 1))
		b := ctAdmit(t, s, ctPayment("alice", "bankA-1", "bankB-1", 2))
		c := ctAdmit(t, s, ctPayment("alice", "bankA-1", "bankB-1", 3))
		ctDecide(t, s, a.PaymentID, decisionCommit)
		ctDecide(t, s, b.PaymentID, decisionAbort)
		if err := s.MarkCompleted(ctx, nil, s.Now()); err != nil {
			t.Fatal(err)
		}
		if err := s.MarkCompleted(ctx, []string{a.PaymentID, b.PaymentID, c.PaymentID, newPaymentID()}, s.Now()); err != nil {
			t.Fatal(err)
		}
		for id, want := range map[string]bool{a.PaymentID: true, b.PaymentID: true, c.PaymentID: false} {
			if got := stored(t, s, id); got.Completed != want {
				t.Errorf("payment %s completed = %v, want %v (only decided payments complete)", id, got.Completed, want)
			}
		}
		list, err := s.Unfinished(ctx, nil, 10)
		if err != nil || !slices.Equal(ctIDs(list), []string{c.PaymentID}) {
			t.Fatalf("unfinished = %v, %v; want only the undecided one", ctIDs(list), err)
		}
	})
}

func TestStoreUnfinishedPaging(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		var want []paymentRecord
		for i, minutes := range []int{5, 3, 9, 1, 7, 3, 2} {
			p := ctPayment("alice", "bankA-1", "bankB-1", int64(i+1))
			p.Deadline = p.CreatedAt.Add(time.Duration(minutes) * time.Minute)
			want = append(want, ctAdmit(t, s, p))
		}
		// A decided payment is unfinished until completed; a completed one is not.
		ctDecide(t, s, want[0].PaymentID, decisionCommit)
		done := ctAdmit(t, s, ctPayment("alice", "bankA-1", "bankB-1", 99))
		ctDecide(t, s, done.PaymentID, decisionAbort)
		if err := s.MarkCompleted(ctx, []string{done.PaymentID}, s.Now()); err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(want, func(a, b paymentRecord) int {
			if c := a.Deadline.Compare(b.Deadline); c != 0 {
				return c
			}
			return strings.Compare(a.PaymentID, b.PaymentID)
		})
		var got []paymentRecord
		var after *unfinishedCursor
		for page := 0; ; page++ {
			list, err := s.Unfinished(ctx, after, 3)
			if err != nil {
				t.Fatal(err)
			}
			if len(list) > 3 {
				t.Fatalf("page of %d, limit 3", len(list))
			}
			got = append(got, list...)
			if len(list) < 3 {
				break
			}
			last := list[len(list)-1]
			after = &unfinishedCursor{Deadline: last.Deadline.UnixNano(), PaymentID: last.PaymentID}
			if page > 5 {
				t.Fatal("paging does not end")
			}
		}
		if !slices.Equal(ctIDs(got), ctIDs(want)) {
			t.Fatalf("unfinished in pages:\n%v\nwant (deadline, id) order:\n%v", ctIDs(got), ctIDs(want))
		}
	})
}

func TestStoreListPayments(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		var mine []paymentRecord
		for i := range 5 {
			mine = append(mine, ctAdmit(t, s, ctPayment("alice", "bankA-1", "bankB-1", int64(i+1))))
		}
		ctAdmit(t, s, ctPayment("bob", "bankA-2", "bankB-1", 1))
		ctDecide(t, s, newPaymentID(), decisionAbort) // a presumed abort is nobody's
		ctDecide(t, s, mine[1].PaymentID, decisionCommit)
		ctDecide(t, s, mine[3].PaymentID, decisionCommit)
		ctDecide(t, s, mine[4].PaymentID, decisionAbort)
		slices.SortFunc(mine, func(a, b paymentRecord) int {
			if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
				return c
			}
			return strings.Compare(b.PaymentID, a.PaymentID)
		})
		pages := func(filter *decisionFilter) []string {
			var out []string
			var after *pageCursor
			for range 10 {
				list, err := s.ListPayments(ctx, "alice", after, filter, 2)
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, ctIDs(list)...)
				if len(list) < 2 {
					return out
				}
				last := list[len(list)-1]
				after = &pageCursor{CreatedAt: last.CreatedAt.UnixNano(), PaymentID: last.PaymentID}
			}
			t.Fatal("paging does not end")
			return nil
		}
		if got := pages(nil); !slices.Equal(got, ctIDs(mine)) {
			t.Fatalf("alice's payments %v, want newest first %v", got, ctIDs(mine))
		}
		var commits []string
		for _, p := range mine {
			if got := stored(t, s, p.PaymentID); got.Decision == decisionCommit {
				commits = append(commits, p.PaymentID)
			}
		}
		if got := pages(&decisionFilter{decisionCommit}); !slices.Equal(got, commits) || len(got) != 2 {
			t.Fatalf("alice's commits %v, want %v", got, commits)
		}
		if list, err := s.ListPayments(ctx, "carol", nil, nil, 10); err != nil || len(list) != 0 {
			t.Fatalf("carol's payments: %v, %v", ctIDs(list), err)
		}
	})
}

// TestStoreListReceived: the payments others made to a user's accounts (refunds of the user's
// payments among them), newest first, across all its accounts, paged and filtered like
// ListPayments; never the user's own payments, nor others' to other accounts, nor presumed
// aborts of unknown ids; and by the links the user has now.
func TestStoreListReceived(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		ctUsers(t, s, "alice", "bob", "carol")
		for _, l := range [][2]string{{"alice", "bankA-1"}, {"alice", "bankA-2"}, {"bob", "bankB-1"}, {"carol", "bankC-1"}} {
			if err := s.LinkAccount(ctx, l[0], l[1]); err != nil {
				t.Fatal(err)
			}
		}
		var want []paymentRecord
		for i, from := range []string{"bankB-1", "bankC-1", "bankB-1", "bankC-1", "bankB-1"} {
			to := []string{"bankA-1", "bankA-2"}[i%2]
			user := map[string]string{"bankB-1": "bob", "bankC-1": "carol"}[from]
			want = append(want, ctAdmit(t, s, ctPayment(user, from, to, int64(i+1))))
		}
		ctAdmit(t, s, ctPayment("alice", "bankA-1", "bankA-2", 1)) // her own, to her own account
		ctAdmit(t, s, ctPayment("carol", "bankC-1", "bankB-1", 1)) // others', to another's
		ctAdmit(t, s, ctPayment("bob", "bankB-1", "bankZ-9", 1))   // to an account nobody has
		ctDecide(t, s, newPaymentID(), decisionAbort)              // a presumed abort is nobody's
		// A refund of alice's payment to bob is made by bob, to alice's account.
		paid := ctDecide(t, s, ctAdmit(t, s, ctPayment("alice", "bankA-1", "bankB-1", 50)).PaymentID, decisionCommit)
		want = append(want, ctAdmit(t, s, rfRefund(paid, "bob", 20)))
		ctDecide(t, s, want[1].PaymentID, decisionCommit)
		ctDecide(t, s, want[2].PaymentID, decisionAbort)
		ctDecide(t, s, want[5].PaymentID, decisionCommit)
		want = newestFirst(want, -1)
		pages := func(user string, filter *decisionFilter) []string {
			var out []string
			var after *pageCursor
			for range 10 {
				list, err := s.ListReceived(ctx, user, after, filter, 2)
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, ctIDs(list)...)
				if len(list) < 2 {
					return out
				}
				last := list[len(list)-1]
				after = &pageCursor{CreatedAt: last.CreatedAt.UnixNano(), PaymentID: last.PaymentID}
			}
			t.Fatal("paging does not end")
			return nil
		}
		if got := pages("alice", nil); !slices.Equal(got, ctIDs(want)) {
			t.Fatalf("alice received %v, want newest first %v", got, ctIDs(want))
		}
		commits := []string{}
		for _, p := range want {
			if got := stored(t, s, p.PaymentID); got.Decision == decisionCommit {
				commits = append(commits, p.PaymentID)
			}
		}
		if got := pages("alice", &decisionFilter{decisionCommit}); !slices.Equal(got, commits) || len(got) != 2 {
			t.Fatalf("alice received commits %v, want %v", got, commits)
		}
		// bob received alice's payment and carol's; the refund he made is not his to receive.
		if got := pages("bob", nil); len(got) != 2 {
			t.Fatalf("bob received %v, want alice's payment and carol's", got)
		}
		// An account unlinked takes its payments out of the listing.
		if err := s.UnlinkAccount(ctx, "alice", "bankA-2"); err != nil {
			t.Fatal(err)
		}
		var left []string
		for _, p := range want {
			if p.To == "bankA-1" {
				left = append(left, p.PaymentID)
			}
		}
		if got := pages("alice", nil); !slices.Equal(got, left) {
			t.Fatalf("alice received after unlinking bankA-2: %v, want %v", got, left)
		}
		if got := pages("nobody", nil); len(got) != 0 {
			t.Fatalf("an unknown user received %v", got)
		}
	})
}

func TestStoreUnsettled(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		commit := ctAdmit(t, s, ctPayment("alice", "bankA-1", "bankB-1", 1)) // credits B-1
		abort := ctAdmit(t, s, ctPayment("alice", "bankA-1", "bankB-2", 1))  // releases A-1's hold
		open := ctAdmit(t, s, ctPayment("alice", "bankA-1", "bankB-1", 1))   // undecided
		done := ctAdmit(t, s, ctPayment("alice", "bankA-1", "bankB-1", 1))   // completed
		ctDecide(t, s, commit.PaymentID, decisionCommit)
		ctDecide(t, s, abort.PaymentID, decisionAbort)
		ctDecide(t, s, done.PaymentID, decisionCommit)
		if err := s.MarkCompleted(ctx, []string{done.PaymentID}, s.Now()); err != nil {
			t.Fatal(err)
		}
		_ = open
		for _, tt := range []struct {
			accounts []string
			raising  bool
			want     []string
		}{
			{[]string{"bankB-1"}, true, []string{commit.PaymentID}},
			{[]string{"bankA-1"}, true, []string{abort.PaymentID}},
			{[]string{"bankA-1"}, false, []string{commit.PaymentID, abort.PaymentID}},
			{[]string{"bankB-2"}, true, nil},
			{[]string{"bankB-2"}, false, []string{abort.PaymentID}},
			{[]string{"bankB-1", "bankB-2"}, false, []string{commit.PaymentID, abort.PaymentID}},
			{[]string{"bankZ-1"}, false, nil},
			{nil, false, nil},
		} {
			got, err := s.Unsettled(ctx, tt.accounts, tt.raising)
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(got)
			want := slices.Sorted(slices.Values(tt.want))
			if !slices.Equal(got, want) {
				t.Errorf("Unsettled(%v, raising %v) = %v, want %v", tt.accounts, tt.raising, got, want)
			}
		}
	})
}

// createTestUsers creates users with no accounts, failing the test on an error.
func ctUsers(t testing.TB, s Store, names ...string) {
	t.Helper()
	var users []userRecord
	for _, n := range names {
		users = append(users, userRecord{Username: n, PasswordHash: "h", Role: "customer"})
	}
	if err := s.CreateUsers(context.Background(), users, time.Now()); err != nil {
		t.Fatal(err)
	}
}

func TestStoreSessions(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		if err := s.CreateUsers(ctx, []userRecord{{Username: "alice", PasswordHash: "h", Role: "admin"}}, time.Now()); err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		rec := sessionRecord{Username: "alice", CertFingerprint: "fp", ExpiresAt: now.Add(time.Hour)}
		for _, tok := range []string{"t1", "t2"} {
			if err := s.CreateSession(ctx, tok, rec, now, 2); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.CreateSession(ctx, "t3", rec, now, 2); !errors.Is(err, ErrTooManySessions) {
			t.Fatalf("third session with a cap of 2: %v, want ErrTooManySessions", err)
		}
		if _, err := s.Session(ctx, "t3"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("a refused session was stored: %v", err)
		}
		got, err := s.Session(ctx, "t1")
		if err != nil || got.Username != "alice" || got.CertFingerprint != "fp" || got.Role != "admin" ||
			got.Revoked || !got.ExpiresAt.Equal(rec.ExpiresAt) {
			t.Fatalf("session t1: %+v, %v", got, err)
		}
		// A revoked session does not count.
		if err := s.RevokeSession(ctx, "t1", now); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Session(ctx, "t1"); err != nil || !got.Revoked {
			t.Fatalf("revoked session: %+v, %v", got, err)
		}
		if err := s.CreateSession(ctx, "t3", rec, now, 2); err != nil {
			t.Fatalf("session after a revocation: %v", err)
		}
		// Nor does an expired one.
		later := now.Add(2 * time.Hour)
		if err := s.CreateSession(ctx, "t4", sessionRecord{Username: "alice", ExpiresAt: later.Add(time.Hour)}, later, 1); err != nil {
			t.Fatalf("session once the others expired: %v", err)
		}
		// No cap.
		for i := range 5 {
			if err := s.CreateSession(ctx, fmt.Sprint("u", i), rec, now, 0); err != nil {
				t.Fatal(err)
			}
		}
		n, err := s.DeleteExpiredSessions(ctx, now.Add(90*time.Minute))
		if err != nil || n != 8 {
			t.Fatalf("deleted %d expired sessions, %v; want 8", n, err)
		}
		if _, err := s.Session(ctx, "t2"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("expired session t2 still there: %v", err)
		}
		if _, err := s.Session(ctx, "t4"); err != nil {
			t.Fatalf("live session t4 deleted: %v", err)
		}
		if _, err := s.Session(ctx, "nope"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown session: %v", err)
		}
	})
}

func TestStoreUsers(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		if n, err := s.CountUsers(ctx); err != nil || n != 0 {
			t.Fatalf("%d users, %v", n, err)
		}
		err := s.CreateUsers(ctx, []userRecord{
			{Username: "alice", PasswordHash: "ha", Role: "customer", Accounts: []string{"bankB-2", "bankA-1"}},
			{Username: "bob", PasswordHash: "hb", Role: "admin"},
		}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if n, err := s.CountUsers(ctx); err != nil || n != 2 {
			t.Fatalf("%d users, %v; want 2", n, err)
		}
		u, err := s.User(ctx, "alice")
		if err != nil || u.PasswordHash != "ha" || u.Role != "customer" || !slices.Equal(u.Accounts, []string{"bankA-1", "bankB-2"}) {
			t.Fatalf("alice: %+v, %v", u, err)
		}
		if u, err := s.User(ctx, "bob"); err != nil || u.Role != "admin" || len(u.Accounts) != 0 {
			t.Fatalf("bob: %+v, %v", u, err)
		}
		if a, err := s.Accounts(ctx, "alice"); err != nil || !slices.Equal(a, []string{"bankA-1", "bankB-2"}) {
			t.Fatalf("alice's accounts: %v, %v", a, err)
		}
		if a, err := s.Accounts(ctx, "nobody"); err != nil || len(a) != 0 {
			t.Fatalf("nobody's accounts: %v, %v", a, err)
		}
		if o, err := s.AccountOwner(ctx, "bankB-2"); err != nil || o != "alice" {
			t.Fatalf("owner of bankB-2: %q, %v", o, err)
		}
		if _, err := s.AccountOwner(ctx, "bankZ-1"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("owner of an unlinked account: %v", err)
		}
		if _, err := s.User(ctx, "carol"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown user: %v", err)
		}
		// A conflict inserts nothing of the batch.
		err = s.CreateUsers(ctx, []userRecord{{Username: "carol", PasswordHash: "h", Accounts: []string{"bankC-1"}}, {Username: "alice", PasswordHash: "h"}}, time.Now())
		if !errors.Is(err, ErrUserExists) {
			t.Fatalf("batch with a taken username: %v, want ErrUserExists", err)
		}
		err = s.CreateUsers(ctx, []userRecord{{Username: "dave", PasswordHash: "h", Accounts: []string{"bankD-1", "bankA-1"}}}, time.Now())
		if !errors.Is(err, ErrAccountLinked) {
			t.Fatalf("user with a linked account: %v, want ErrAccountLinked", err)
		}
		for _, name := range []string{"carol", "dave"} {
			if _, err := s.User(ctx, name); !errors.Is(err, ErrNotFound) {
				t.Fatalf("%s of a refused batch was inserted: %v", name, err)
			}
		}
		for _, a := range []string{"bankC-1", "bankD-1"} {
			if _, err := s.AccountOwner(ctx, a); !errors.Is(err, ErrNotFound) {
				t.Fatalf("account %s of a refused batch was linked: %v", a, err)
			}
		}
		if n, err := s.CountUsers(ctx); err != nil || n != 2 {
			t.Fatalf("%d users after refused batches, %v; want 2", n, err)
		}
	})
}

func TestStoreSecret(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		k, err := s.Secret(ctx, "proof", 32)
		if err != nil || len(k) != 32 {
			t.Fatalf("secret: %x, %v", k, err)
		}
		again, err := s.Secret(ctx, "proof", 32)
		if err != nil || !bytes.Equal(again, k) {
			t.Fatalf("secret read again: %x, %v; want %x", again, err, k)
		}
		other, err := s.Secret(ctx, "other", 16)
		if err != nil || len(other) != 16 || bytes.Equal(other[:16], k[:16]) {
			t.Fatalf("other secret: %x, %v", other, err)
		}
	})
}

// TestStoreLeaseOwnPayments: a store's own payments are its own: claims of them hold, there are
// no orphans in a fresh store, and the lease renews.
func TestStoreLeaseOwnPayments(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		p := ctAdmit(t, s, ctPayment("alice", "bankA-1", "bankB-1", 1))
		got, held, err := s.Claim(ctx, p.PaymentID)
		if err != nil || !held || got.PaymentID != p.PaymentID {
			t.Fatalf("claim of an own payment: %+v, %v, %v", got, held, err)
		}
		if _, _, err := s.Claim(ctx, newPaymentID()); !errors.Is(err, ErrNotFound) {
			t.Fatalf("claim of an unknown payment: %v", err)
		}
		if n, err := s.ClaimOrphans(ctx, 10); err != nil || n != 0 {
			t.Fatalf("orphans in a fresh store: %d, %v", n, err)
		}
		if err := s.RenewLease(ctx); err != nil {
			t.Fatal(err)
		}
		if !s.Holding() {
			t.Fatal("not holding the lease just renewed")
		}
		if d := time.Until(s.Now()); d > time.Second || d < -time.Second {
			t.Fatalf("store clock %s off the local one (same host)", d)
		}
		// Listen returns when its context ends.
		lctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		if err := s.Listen(lctx, func(string) {}); err != nil {
			t.Fatalf("Listen: %v", err)
		}
	})
}

// TestStoreTextWithNUL: ids and names holding a NUL byte are not found.
func TestStoreTextWithNUL(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		ctUsers(t, s, "alice")
		bad := "ali\x00ce"
		if _, err := s.User(ctx, bad); !errors.Is(err, ErrNotFound) {
			t.Errorf("User: %v, want ErrNotFound", err)
		}
		if _, err := s.AccountOwner(ctx, bad); !errors.Is(err, ErrNotFound) {
			t.Errorf("AccountOwner: %v, want ErrNotFound", err)
		}
		if _, err := s.Payment(ctx, bad); !errors.Is(err, ErrNotFound) {
			t.Errorf("Payment: %v, want ErrNotFound", err)
		}
		if _, _, err := s.Claim(ctx, bad); !errors.Is(err, ErrNotFound) {
			t.Errorf("Claim: %v, want ErrNotFound", err)
		}
		if _, err := s.Decide(ctx, bad, decisionCommit, 0, "", false, s.Now(), decidedByRequest); !errors.Is(err, ErrNotFound) {
			t.Errorf("Decide commit: %v, want ErrNotFound", err)
		}
		if list, err := s.ListPayments(ctx, bad, nil, nil, 10); err != nil || len(list) != 0 {
			t.Errorf("ListPayments: %v, %v", list, err)
		}
		if a, err := s.Accounts(ctx, bad); err != nil || len(a) != 0 {
			t.Errorf("Accounts: %v, %v", a, err)
		}
		if list, err := s.Unsettled(ctx, []string{bad, "bankA-1"}, false); err != nil || len(list) != 0 {
			t.Errorf("Unsettled: %v, %v", list, err)
		}
		if err := s.MarkCompleted(ctx, []string{bad}, s.Now()); err != nil {
			t.Errorf("MarkCompleted: %v", err)
		}
		// Free text holding one is stored (PostgreSQL keeps a replacement character).
		p := ctPayment("alice", "bankA-1", "bankB-1", 1)
		p.Description = "a\x00b"
		got := ctAdmit(t, s, p)
		if got.Description != "a\x00b" && got.Description != "a\uFFFDb" {
			t.Errorf("description stored as %q", got.Description)
		}
		d, err := s.Decide(ctx, p.PaymentID, decisionAbort, 1, "bank said \x00", false, s.Now(), decidedByRequest)
		if err != nil || d.Decision != decisionAbort {
			t.Errorf("abort with a NUL in its message: %+v, %v", d, err)
		}
	})
}

// ---- PostgreSQL: two stores on one database are two replicas.

func TestStorePGRefusesNULText(t *testing.T) {
	t.Parallel()
	s := ctOpenPG(t, pgtest.NewDatabase(t, "paygate_store_"), 10*time.Second)
	ctx := context.Background()
	if err := s.CreateUsers(ctx, []userRecord{{Username: "a\x00b", PasswordHash: "h"}}, time.Now()); !errors.Is(err, errNULText) {
		t.Fatalf("CreateUsers: %v, want errNULText", err)
	}
	if _, err := s.Decide(ctx, "x\x00", decisionAbort, 0, "", true, s.Now(), decidedByRequest); !errors.Is(err, errNULText) {
		t.Fatalf("presumed abort: %v, want errNULText", err)
	}
	p := ctPayment("alice", "bankA-\x001", "bankB-1", 1)
	if _, _, err := admitPayment(ctx, s, p); !errors.Is(err, errNULText) {
		t.Fatalf("admission: %v, want errNULText", err)
	}
	if _, err := s.OpenStream(ctx, "a\x00", 1); !errors.Is(err, errNULText) {
		t.Fatalf("OpenStream: %v, want errNULText", err)
	}
}

// TestStorePGConcurrentDecide: two replicas deciding one payment at once, one commit and one
// abort, agree on one decision, whichever it is.
func TestStorePGConcurrentDecide(t *testing.T) {
	t.Parallel()
	a, b, _ := ctReplicas(t, 10*time.Second, 10*time.Second)
	ctx := context.Background()
	outcomes := map[decision]int{}
	for range 30 {
		p := ctAdmit(t, a, ctPayment("alice", "bankA-1", "bankB-1", 1))
		start := make(chan struct{})
		var ra, rb paymentRecord
		var ea, eb error
		var wg sync.WaitGroup
		wg.Go(func() {
			<-start
			ra, ea = a.Decide(ctx, p.PaymentID, decisionCommit, 0, "", false, a.Now(), decidedByRequest)
		})
		wg.Go(func() {
			<-start
			rb, eb = b.Decide(ctx, p.PaymentID, decisionAbort, 1, "timeout", false, b.Now(), decidedByRequest)
		})
		close(start)
		wg.Wait()
		if ea != nil || eb != nil {
			t.Fatal(ea, eb)
		}
		st := stored(t, a, p.PaymentID)
		if ra.Decision != st.Decision || rb.Decision != st.Decision || st.Decision == decisionNone ||
			!ra.DecidedAt.Equal(st.DecidedAt) || !rb.DecidedAt.Equal(st.DecidedAt) {
			t.Fatalf("replicas were told %v and %v, the store holds %v", ra.Decision, rb.Decision, st.Decision)
		}
		outcomes[st.Decision]++
	}
	t.Logf("outcomes: %v", outcomes)
}

// TestStorePGConcurrentAdmit: two replicas admitting one id at once: one inserts it, and both
// return the row it inserted.
func TestStorePGConcurrentAdmit(t *testing.T) {
	t.Parallel()
	a, b, _ := ctReplicas(t, 10*time.Second, 10*time.Second)
	ctx := context.Background()
	wins := map[string]int{}
	for range 30 {
		p := ctPayment("alice", "bankA-1", "bankB-1", 1)
		start := make(chan struct{})
		var out [2]paymentRecord
		var ins [2]bool
		var errs [2]error
		var wg sync.WaitGroup
		for i, s := range []*PGStore{a, b} {
			wg.Go(func() {
				<-start
				var durable func() error
				out[i], ins[i], durable, errs[i] = s.StartAdmitPayment(ctx, p)
				if errs[i] == nil {
					errs[i] = durable()
				}
			})
		}
		close(start)
		wg.Wait()
		if err := errors.Join(errs[:]...); err != nil {
			t.Fatal(err)
		}
		if ins[0] == ins[1] {
			t.Fatalf("inserted by a: %v, by b: %v; want exactly one", ins[0], ins[1])
		}
		if !out[0].CreatedAt.Equal(out[1].CreatedAt) || !bytes.Equal(out[0].Fingerprint, out[1].Fingerprint) {
			t.Fatalf("the replicas returned different rows: %+v, %+v", out[0], out[1])
		}
		winner := a
		if ins[1] {
			winner = b
		}
		// The payment is the inserter's.
		if _, held, err := winner.Claim(ctx, p.PaymentID); err != nil || !held {
			t.Fatalf("the inserter does not hold its payment: %v, %v", held, err)
		}
		wins[winner.Owner()]++
	}
	t.Logf("inserts per replica: %v", wins)
}

// TestStorePGPresumedAbortRacesAdmission: a presumed abort recorded while the payment is being
// admitted on another replica is a decision either way: Decide never returns an undecided row.
func TestStorePGPresumedAbortRacesAdmission(t *testing.T) {
	t.Parallel()
	a, b, _ := ctReplicas(t, 10*time.Second, 10*time.Second)
	ctx := context.Background()
	for range 40 {
		p := ctPayment("alice", "bankA-1", "bankB-1", 1)
		start := make(chan struct{})
		var d paymentRecord
		var errA, errB error
		var wg sync.WaitGroup
		wg.Go(func() { <-start; _, _, errA = admitPayment(ctx, a, p) })
		wg.Go(func() {
			<-start
			d, errB = b.Decide(ctx, p.PaymentID, decisionAbort, 1, "asked", true, b.Now(), decidedByRequest)
		})
		close(start)
		wg.Wait()
		if errA != nil || errB != nil {
			t.Fatal(errA, errB)
		}
		if d.Decision != decisionAbort {
			t.Fatalf("Decide(abort) racing an admission returned %+v", d)
		}
		if st := stored(t, a, p.PaymentID); st.Decision != decisionAbort {
			t.Fatalf("stored %+v", st)
		}
	}
}

// keepRenewing renews s's lease every interval until the returned stop is called.
func ctKeepRenewing(t *testing.T, s *PGStore, interval time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tk := time.NewTicker(interval)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
			}
			if err := s.RenewLease(ctx); err != nil && ctx.Err() == nil {
				t.Errorf("renew: %v", err)
			}
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

// TestStorePGClaim: a replica cannot claim a payment of another's live lease; once that lease
// expires it can, and then holds it; the old owner, renewing too late, has lost the lease and
// holds none of its payments.
func TestStorePGClaim(t *testing.T) {
	t.Parallel()
	const ttl = time.Second
	a, b, _ := ctReplicas(t, ttl, 10*time.Second)
	ctx := context.Background()
	stop := ctKeepRenewing(t, a, ttl/6)
	p := ctAdmit(t, a, ctPayment("alice", "bankA-1", "bankB-1", 1))
	deadline := time.Now().Add(3 * ttl)
	for time.Now().Before(deadline) { // over several lease lifetimes, renewed
		got, held, err := b.Claim(ctx, p.PaymentID)
		n, oerr := b.ClaimOrphans(ctx, 10)
		// a's lease was certainly live during both calls if a still holds it after them (Holding
		// is judged from the start of its last renewal, with a margin). On a loaded machine a
		// renewal can come late enough for the lease to lapse, and a claim is then right.
		if !a.Holding() {
			t.Skipf("a's renewals stalled for most of a lease lifetime (%s): the machine is too loaded for this test", ttl)
		}
		if err != nil || held || got.PaymentID != p.PaymentID {
			t.Fatalf("claim of a live replica's payment: held %v, %v", held, err)
		}
		if oerr != nil || n != 0 {
			t.Fatalf("claimed %d orphans while their owner lives, %v", n, oerr)
		}
		time.Sleep(ttl / 10)
	}
	if !a.Holding() {
		t.Fatal("a renewing replica is not holding its lease")
	}
	if list, err := a.Unfinished(ctx, nil, 10); err != nil || !slices.Equal(ctIDs(list), []string{p.PaymentID}) {
		t.Fatalf("a's unfinished: %v, %v", ctIDs(list), err)
	}
	if list, err := b.Unfinished(ctx, nil, 10); err != nil || len(list) != 0 {
		t.Fatalf("b's unfinished lists a's payment: %v, %v", ctIDs(list), err)
	}

	stop()
	time.Sleep(ttl - ttl/5)
	if a.Holding() {
		t.Fatal("a still says it holds its lease a lifetime after its last renewal")
	}
	waitFor(t, 5*time.Second, "a's lease to expire and b to claim its payment", func() bool {
		_, held, err := b.Claim(ctx, p.PaymentID)
		if err != nil {
			t.Fatal(err)
		}
		return held
	})
	if list, err := b.Unfinished(ctx, nil, 10); err != nil || !slices.Equal(ctIDs(list), []string{p.PaymentID}) {
		t.Fatalf("b's unfinished after the claim: %v, %v", ctIDs(list), err)
	}
	old := a.Owner()
	if err := a.RenewLease(ctx); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("renewal after expiry: %v, want ErrLeaseLost", err)
	}
	if a.Owner() == old || a.Owner() == "" || !a.Holding() {
		t.Fatalf("after a lost lease: owner %q (was %q), holding %v; want a new lease", a.Owner(), old, a.Holding())
	}
	if _, held, err := a.Claim(ctx, p.PaymentID); err != nil || held {
		t.Fatalf("a claims back b's payment: %v, %v", held, err)
	}
	if list, err := a.Unfinished(ctx, nil, 10); err != nil || len(list) != 0 {
		t.Fatalf("a's new lease holds %v, %v", ctIDs(list), err)
	}
	// A completed payment needs nobody: a claim of it holds and changes nothing.
	ctDecide(t, b, p.PaymentID, decisionCommit)
	if err := b.MarkCompleted(ctx, []string{p.PaymentID}, b.Now()); err != nil {
		t.Fatal(err)
	}
	if got, held, err := a.Claim(ctx, p.PaymentID); err != nil || !held || !got.Completed {
		t.Fatalf("claim of a completed payment: %+v, %v, %v", got, held, err)
	}
}

// TestStorePGRenewAfterExpiry: a lease that expired is lost at its next renewal; the payments
// it had are orphans that the process may claim back under its new lease.
func TestStorePGRenewAfterExpiry(t *testing.T) {
	t.Parallel()
	const ttl = 200 * time.Millisecond
	a, other, _ := ctReplicas(t, ttl, ttl)
	ctx := context.Background()
	for range 3 {
		ctAdmit(t, a, ctPayment("alice", "bankA-1", "bankB-1", 1))
	}
	theirs := ctAdmit(t, other, ctPayment("alice", "bankA-1", "bankB-1", 1))
	old := a.Owner()
	time.Sleep(ttl + 100*time.Millisecond)
	if a.Holding() {
		t.Fatal("holding an expired lease")
	}
	// An expired lease takes nothing over, not even another dead lease's payments.
	if n, err := a.ClaimOrphans(ctx, 10); err != nil || n != 0 {
		t.Fatalf("an expired lease claimed %d orphans, %v", n, err)
	}
	if _, held, err := a.Claim(ctx, theirs.PaymentID); err != nil || held {
		t.Fatalf("an expired lease claimed a payment: %v, %v", held, err)
	}
	if err := a.RenewLease(ctx); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("renewal after expiry: %v, want ErrLeaseLost", err)
	}
	if a.Owner() == old || !a.Holding() {
		t.Fatalf("owner %q (was %q), holding %v", a.Owner(), old, a.Holding())
	}
	if list, err := a.Unfinished(ctx, nil, 10); err != nil || len(list) != 0 {
		t.Fatalf("the new lease holds %v, %v", ctIDs(list), err)
	}
	if n, err := a.ClaimOrphans(ctx, 10); err != nil || n != 4 {
		t.Fatalf("claimed back %d orphans, %v; want 4 (its 3 and the other dead lease's)", n, err)
	}
	list, err := a.Unfinished(ctx, nil, 10)
	if err != nil || len(list) != 4 {
		t.Fatalf("unfinished after claiming back: %v, %v", ctIDs(list), err)
	}
	if err := a.RenewLease(ctx); err != nil {
		t.Fatalf("renewal of the new lease: %v", err)
	}
}

// TestStorePGClaimOrphansOnce: two replicas claiming a dead replica's orphans at the same time,
// a page at a time, claim each exactly once.
func TestStorePGClaimOrphansOnce(t *testing.T) {
	t.Parallel()
	const ttl = 200 * time.Millisecond
	dead, b, dbURL := ctReplicas(t, ttl, 10*time.Second)
	c := ctOpenPG(t, dbURL, 10*time.Second)
	ctx := context.Background()
	const n = 120
	var all []string
	for range n {
		all = append(all, ctAdmit(t, dead, ctPayment("alice", "bankA-1", "bankB-1", 1)).PaymentID)
	}
	done := ctAdmit(t, dead, ctPayment("alice", "bankA-1", "bankB-1", 1))
	ctDecide(t, dead, done.PaymentID, decisionCommit)
	if err := dead.MarkCompleted(ctx, []string{done.PaymentID}, dead.Now()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(ttl + 100*time.Millisecond)
	var claimed [2]int
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, s := range []*PGStore{b, c} {
		wg.Go(func() {
			<-start
			for {
				k, err := s.ClaimOrphans(ctx, 7)
				if err != nil {
					t.Error(err)
					return
				}
				claimed[i] += k
				if k == 0 {
					return
				}
			}
		})
	}
	close(start)
	wg.Wait()
	if claimed[0]+claimed[1] != n {
		t.Fatalf("claimed %d + %d orphans, want %d in all", claimed[0], claimed[1], n)
	}
	lb, err := b.Unfinished(ctx, nil, -1)
	if err != nil {
		t.Fatal(err)
	}
	lc, err := c.Unfinished(ctx, nil, -1)
	if err != nil {
		t.Fatal(err)
	}
	if len(lb) != claimed[0] || len(lc) != claimed[1] {
		t.Fatalf("b holds %d (claimed %d), c holds %d (claimed %d)", len(lb), claimed[0], len(lc), claimed[1])
	}
	got := append(ctIDs(lb), ctIDs(lc)...)
	slices.Sort(got)
	slices.Sort(all)
	if !slices.Equal(got, all) {
		t.Fatal("the orphans claimed are not the dead replica's unfinished payments, each once")
	}
	t.Logf("claimed: b %d, c %d", claimed[0], claimed[1])
}

// TestStorePGReleaseLease: payments handed back are orphans at once, and the released store no
// longer holds a lease.
func TestStorePGReleaseLease(t *testing.T) {
	t.Parallel()
	a, b, dbURL := ctReplicas(t, time.Minute, time.Minute)
	ctx := context.Background()
	p := ctAdmit(t, a, ctPayment("alice", "bankA-1", "bankB-1", 1))
	q := ctAdmit(t, a, ctPayment("alice", "bankA-1", "bankB-1", 1))
	ctDecide(t, a, q.PaymentID, decisionAbort)
	r := ctAdmit(t, a, ctPayment("alice", "bankA-1", "bankB-1", 1))
	ctDecide(t, a, r.PaymentID, decisionCommit)
	if err := a.MarkCompleted(ctx, []string{r.PaymentID}, a.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := a.OpenStream(ctx, "alice", 1); err != nil {
		t.Fatal(err)
	}
	if _, held, _ := b.Claim(ctx, p.PaymentID); held {
		t.Fatal("b claims a payment of a's live lease")
	}
	if err := a.ReleaseLease(ctx); err != nil {
		t.Fatal(err)
	}
	if a.Holding() {
		t.Fatal("holding a released lease")
	}
	if err := a.RenewLease(ctx); !errors.Is(err, errLeaseReleased) {
		t.Fatalf("renewal of a released lease: %v, want errLeaseReleased", err)
	}
	if list, err := a.Unfinished(ctx, nil, 10); err != nil || len(list) != 0 {
		t.Fatalf("a still lists %v after handing them back, %v", ctIDs(list), err)
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var leases, streams int
	if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM leases WHERE owner = $1), (SELECT count(*) FROM streams)`, a.Owner()).Scan(&leases, &streams); err != nil || leases != 0 || streams != 0 {
		t.Fatalf("after the release: %d lease rows of a's, %d streams, %v; want none", leases, streams, err)
	}
	if n, err := b.ClaimOrphans(ctx, 10); err != nil || n != 2 {
		t.Fatalf("claimed %d handed-back payments, %v; want 2 (not the completed one)", n, err)
	}
	if _, held, err := b.Claim(ctx, p.PaymentID); err != nil || !held {
		t.Fatalf("claim after the hand-back: %v, %v", held, err)
	}
	// The released store's stream is gone.
	if _, err := b.OpenStream(ctx, "alice", 1); err != nil {
		t.Fatalf("a stream of a released lease still counts: %v", err)
	}
}

// TestStorePGListen: a store hears of the payments other replicas admit, decide and adopt, and
// not of its own.
func TestStorePGListen(t *testing.T) {
	t.Parallel()
	a, b, _ := ctReplicas(t, 10*time.Second, 10*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	heard := make(chan string, 100)
	listened := make(chan error, 1)
	go func() { listened <- a.Listen(ctx, func(id string) { heard <- id }) }()
	// Wait until the listener is in place: b admits payments until a hears one.
	waitFor(t, 10*time.Second, "a to hear b's admissions", func() bool {
		ctAdmit(t, b, ctPayment("bob", "bankA-1", "bankB-1", 1))
		select {
		case <-heard:
			return true
		case <-time.After(50 * time.Millisecond):
			return false
		}
	})
	for len(heard) > 0 {
		<-heard
	}
	own := ctAdmit(t, a, ctPayment("alice", "bankA-1", "bankB-1", 1))
	ctDecide(t, a, own.PaymentID, decisionCommit)
	ownPresumed := newPaymentID()
	ctDecide(t, a, ownPresumed, decisionAbort)
	// A decision that changes nothing is not announced.
	ctDecide(t, b, own.PaymentID, decisionAbort)
	ctDecide(t, b, ownPresumed, decisionAbort)

	admitted := ctAdmit(t, b, ctPayment("bob", "bankA-1", "bankB-1", 1))
	decided := ctAdmit(t, a, ctPayment("alice", "bankA-1", "bankB-1", 1))
	ctDecide(t, b, decided.PaymentID, decisionAbort)
	presumed := newPaymentID()
	ctDecide(t, b, presumed, decisionAbort)
	adopted := newPaymentID()
	ctDecide(t, a, adopted, decisionAbort)
	if _, err := b.AdoptUnadmitted(context.Background(), ctPaymentWithID(adopted)); err != nil {
		t.Fatal(err)
	}

	// Changes of one payment announced together may be heard once.
	want := []string{admitted.PaymentID, decided.PaymentID, presumed, adopted}
	got := map[string]bool{}
	timeout := time.After(10 * time.Second)
	for len(got) < len(want) {
		select {
		case id := <-heard:
			got[id] = true
		case <-timeout:
			t.Fatalf("heard %v, want %v", got, want)
		}
	}
	for range 2 {
		select {
		case id := <-heard:
			got[id] = true
		case <-time.After(300 * time.Millisecond):
		}
	}
	for _, id := range want {
		if !got[id] {
			t.Errorf("did not hear of %s", id)
		}
	}
	if len(got) != len(want) {
		t.Errorf("heard %d payments (%v), want only b's changes %v", len(got), got, want)
	}
	cancel()
	if err := <-listened; err != nil {
		t.Fatalf("Listen returned %v at the end of its context", err)
	}
}

// TestStorePGListenReconnects: a listener whose connection is cut reconnects and hears later
// changes.
func TestStorePGListenReconnects(t *testing.T) {
	t.Parallel()
	a, b, dbURL := ctReplicas(t, 10*time.Second, 10*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	heard := make(chan string, 100)
	go a.Listen(ctx, func(id string) { heard <- id })
	hear := func(what string) {
		t.Helper()
		waitFor(t, 15*time.Second, what, func() bool {
			ctAdmit(t, b, ctPayment("bob", "bankA-1", "bankB-1", 1))
			select {
			case <-heard:
				return true
			case <-time.After(50 * time.Millisecond):
				return false
			}
		})
	}
	hear("a to hear b")
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE 'LISTEN%'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("terminated %d listening connections, %v; want 1", n, err)
	}
	hear("a to hear b after its listening connection was terminated")
}

// TestStorePGThrottleShared: replicas spend attempts from the same budgets.
func TestStorePGThrottleShared(t *testing.T) {
	t.Parallel()
	a, b, _ := ctReplicas(t, 10*time.Second, 10*time.Second)
	ctx := context.Background()
	keys := []string{"user:alice", "ip:10.0.0.1"}
	for i, s := range []*PGStore{a, b, a} {
		if wait, err := s.ReserveAttempt(ctx, "login", keys, 3, time.Hour); err != nil || wait != 0 {
			t.Fatalf("attempt %d: wait %s, %v", i, wait, err)
		}
	}
	wait, err := b.ReserveAttempt(ctx, "login", keys, 3, time.Hour)
	if err != nil || wait < 59*time.Minute || wait > time.Hour {
		t.Fatalf("fourth attempt: wait %s, %v; want about an hour", wait, err)
	}
	// One key without budget refuses the attempt and takes nothing from the others.
	if wait, err := a.ReserveAttempt(ctx, "login", []string{"user:bob", "ip:10.0.0.1"}, 3, time.Hour); err != nil || wait == 0 {
		t.Fatalf("attempt with one exhausted key: wait %s, %v", wait, err)
	}
	for range 3 {
		if wait, err := b.ReserveAttempt(ctx, "login", []string{"user:bob"}, 3, time.Hour); err != nil || wait != 0 {
			t.Fatalf("user:bob lost budget to a refused attempt: wait %s, %v", wait, err)
		}
	}
	// Another scope has its own budgets.
	if wait, err := b.ReserveAttempt(ctx, "register", keys, 3, time.Hour); err != nil || wait != 0 {
		t.Fatalf("other scope: wait %s, %v", wait, err)
	}
	// A refund on one replica gives the attempt back to the other.
	if err := a.RefundAttempt(ctx, "login", keys, 3); err != nil {
		t.Fatal(err)
	}
	if wait, err := b.ReserveAttempt(ctx, "login", keys, 3, time.Hour); err != nil || wait != 0 {
		t.Fatalf("attempt after a refund: wait %s, %v", wait, err)
	}
	// Refunds stop at the burst.
	for range 5 {
		if err := a.RefundAttempt(ctx, "login", keys, 3); err != nil {
			t.Fatal(err)
		}
	}
	ok := 0
	for range 5 {
		if wait, err := b.ReserveAttempt(ctx, "login", keys, 3, time.Hour); err != nil {
			t.Fatal(err)
		} else if wait == 0 {
			ok++
		}
	}
	if ok != 3 {
		t.Fatalf("%d attempts after refunds beyond the burst, want 3", ok)
	}
	// Budgets refill by the store's clock, and a refusal asks for at least a second.
	for range 2 {
		if wait, err := a.ReserveAttempt(ctx, "fast", []string{"k"}, 2, 100*time.Millisecond); err != nil || wait != 0 {
			t.Fatalf("fast: wait %s, %v", wait, err)
		}
	}
	if wait, err := b.ReserveAttempt(ctx, "fast", []string{"k"}, 2, 100*time.Millisecond); err != nil || wait != time.Second {
		t.Fatalf("fast, exhausted: wait %s, %v; want 1s", wait, err)
	}
	time.Sleep(250 * time.Millisecond)
	if wait, err := b.ReserveAttempt(ctx, "fast", []string{"k"}, 2, 100*time.Millisecond); err != nil || wait != 0 {
		t.Fatalf("fast, refilled: wait %s, %v", wait, err)
	}

	// Concurrent attempts on both replicas spend the budget exactly.
	for round := range 5 {
		var granted atomic.Int32
		var wg sync.WaitGroup
		start := make(chan struct{})
		keys := []string{fmt.Sprint("k1-", round), fmt.Sprint("k2-", round)}
		for i := range 20 {
			s := []*PGStore{a, b}[i%2]
			wg.Go(func() {
				<-start
				wait, err := s.ReserveAttempt(ctx, "burst", keys, 5, time.Hour)
				if err != nil {
					t.Error(err)
				} else if wait == 0 {
					granted.Add(1)
				}
			})
		}
		close(start)
		wg.Wait()
		if granted.Load() != 5 {
			t.Fatalf("round %d: %d of 20 concurrent attempts granted on a budget of 5", round, granted.Load())
		}
	}
}

// TestStorePGStreams: the streams a user has open on every replica count against one limit;
// released streams and those of dead replicas free their slots.
func TestStorePGStreams(t *testing.T) {
	t.Parallel()
	// The dying replica's lease is never renewed: it must outlive the few writes from its
	// opening to the check that its streams count, however loaded the machine.
	const ttl = 1500 * time.Millisecond
	a, b, dbURL := ctReplicas(t, 10*time.Second, 10*time.Second)
	ctx := context.Background()
	r1, err := a.OpenStream(ctx, "alice", 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.OpenStream(ctx, "alice", 2); err != nil {
		t.Fatal(err)
	}
	if _, err := a.OpenStream(ctx, "alice", 2); !errors.Is(err, ErrTooManyStreams) {
		t.Fatalf("third stream with a limit of 2: %v, want ErrTooManyStreams", err)
	}
	if _, err := b.OpenStream(ctx, "bob", 2); err != nil {
		t.Fatalf("bob's streams are not alice's: %v", err)
	}
	r1()
	r1() // a second release does nothing
	r3, err := b.OpenStream(ctx, "alice", 2)
	if err != nil {
		t.Fatalf("stream after a release: %v", err)
	}
	if _, err := a.OpenStream(ctx, "alice", 2); !errors.Is(err, ErrTooManyStreams) {
		t.Fatalf("after one release and one open: %v, want ErrTooManyStreams", err)
	}
	r3()
	if _, err := a.OpenStream(ctx, "alice", 0); err != nil {
		t.Fatalf("no limit: %v", err)
	}

	// A dead replica's streams stop counting when its lease expires.
	dying := ctOpenPG(t, dbURL, ttl)
	for range 2 {
		if _, err := dying.OpenStream(ctx, "carol", 2); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.OpenStream(ctx, "carol", 2); !errors.Is(err, ErrTooManyStreams) {
		t.Fatalf("carol's streams on a live replica: %v, want ErrTooManyStreams", err)
	}
	time.Sleep(ttl + 100*time.Millisecond)
	for range 2 {
		if _, err := a.OpenStream(ctx, "carol", 2); err != nil {
			t.Fatalf("streams of a dead replica still count: %v", err)
		}
	}

	// Concurrent opens on both replicas stop at the limit.
	var opened atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 20 {
		s := []*PGStore{a, b}[i%2]
		wg.Go(func() {
			<-start
			_, err := s.OpenStream(ctx, "dave", 3)
			switch {
			case err == nil:
				opened.Add(1)
			case !errors.Is(err, ErrTooManyStreams):
				t.Error(err)
			}
		})
	}
	close(start)
	wg.Wait()
	if opened.Load() != 3 {
		t.Fatalf("%d of 20 concurrent streams opened with a limit of 3", opened.Load())
	}
}

// TestStorePGSessionCapConcurrent: concurrent logins on both replicas never exceed the cap.
func TestStorePGSessionCapConcurrent(t *testing.T) {
	t.Parallel()
	a, b, _ := ctReplicas(t, 10*time.Second, 10*time.Second)
	ctx := context.Background()
	now := time.Now()
	for round := range 5 {
		user := fmt.Sprint("user", round)
		ctUsers(t, a, user)
		var created atomic.Int32
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range 24 {
			s := []*PGStore{a, b}[i%2]
			wg.Go(func() {
				<-start
				err := s.CreateSession(ctx, fmt.Sprint(user, "-tok", i), sessionRecord{Username: user, ExpiresAt: now.Add(time.Hour)}, now, 5)
				switch {
				case err == nil:
					created.Add(1)
				case !errors.Is(err, ErrTooManySessions):
					t.Error(err)
				}
			})
		}
		close(start)
		wg.Wait()
		if created.Load() != 5 {
			t.Fatalf("round %d: %d of 24 concurrent sessions created with a cap of 5", round, created.Load())
		}
	}
}

// TestStorePGCreateUsersConcurrent: two replicas importing the same users at once (in either
// order): one import succeeds, the other fails with ErrUserExists, and every user is there once.
func TestStorePGCreateUsersConcurrent(t *testing.T) {
	t.Parallel()
	a, b, _ := ctReplicas(t, 10*time.Second, 10*time.Second)
	ctx := context.Background()
	for round := range 4 {
		var users []userRecord
		for i := range 8 {
			users = append(users, userRecord{Username: fmt.Sprintf("u%d-%d", round, i), PasswordHash: "h",
				Accounts: []string{fmt.Sprintf("bankA-%d%d", round, i)}})
		}
		reversed := slices.Clone(users)
		if round%2 == 1 {
			slices.Reverse(reversed)
		}
		start := make(chan struct{})
		var errs [2]error
		var wg sync.WaitGroup
		wg.Go(func() { <-start; errs[0] = a.CreateUsers(ctx, users, time.Now()) })
		wg.Go(func() { <-start; errs[1] = b.CreateUsers(ctx, reversed, time.Now()) })
		close(start)
		wg.Wait()
		ok := 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case !errors.Is(err, ErrUserExists):
				t.Fatalf("round %d: %v, want nil or ErrUserExists", round, err)
			}
		}
		if ok != 1 {
			t.Fatalf("round %d: %d imports succeeded (%v), want 1", round, ok, errs)
		}
	}
	if n, err := a.CountUsers(ctx); err != nil || n != 32 {
		t.Fatalf("%d users, %v; want 32", n, err)
	}
}

// TestStorePGSecretConcurrent: replicas creating one secret at once agree on it.
func TestStorePGSecretConcurrent(t *testing.T) {
	t.Parallel()
	a, b, _ := ctReplicas(t, 10*time.Second, 10*time.Second)
	ctx := context.Background()
	start := make(chan struct{})
	var got [2][]byte
	var errs [2]error
	var wg sync.WaitGroup
	for i, s := range []*PGStore{a, b} {
		wg.Go(func() { <-start; got[i], errs[i] = s.Secret(ctx, "proof", 32) })
	}
	close(start)
	wg.Wait()
	if errs[0] != nil || errs[1] != nil || !bytes.Equal(got[0], got[1]) || len(got[0]) != 32 {
		t.Fatalf("secrets %x and %x, %v %v", got[0], got[1], errs[0], errs[1])
	}
}

// TestStorePGOwnersAndClock: every store is its own lease; the store's clock is the database's.
func TestStorePGOwnersAndClock(t *testing.T) {
	t.Parallel()
	a, b, dbURL := ctReplicas(t, 2*time.Second, 10*time.Second)
	if a.Owner() == b.Owner() || a.Owner() == "" || strings.Contains(a.Owner(), ":") {
		t.Fatalf("owners %q and %q", a.Owner(), b.Owner())
	}
	if a.LeaseTTL() != 2*time.Second || b.LeaseTTL() != 10*time.Second || !a.Shared() {
		t.Fatal("lease TTLs or Shared are wrong")
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var db int64
	t0 := time.Now()
	if err := conn.QueryRow(ctx, `SELECT paygate_now_ns()`).Scan(&db); err != nil {
		t.Fatal(err)
	}
	local := a.Now()
	if d := time.Duration(db - local.UnixNano()); d > time.Since(t0)+50*time.Millisecond || d < -50*time.Millisecond-time.Since(t0) {
		t.Fatalf("store clock %s off the database's", d)
	}
	var leases int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM leases WHERE expires_at > paygate_now_ns()`).Scan(&leases); err != nil || leases != 2 {
		t.Fatalf("%d live leases, %v; want 2", leases, err)
	}
	// Several stores opening one fresh database at once all open (the schema is applied once).
	fresh := pgtest.NewDatabase(t, "paygate_store_")
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			s, err := OpenPGStore(ctx, fresh, PGStoreOptions{})
			if err == nil {
				if s.LeaseTTL() != 10*time.Second {
					err = fmt.Errorf("default lease TTL %s", s.LeaseTTL())
				}
				s.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

// TestStorePGUnavailable: a database that cannot be reached, or whose connections are cut, is
// reported as unavailable (pgdb.Unavailable), which the RPC boundary answers UNAVAILABLE.
func TestStorePGUnavailable(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := OpenPGStore(ctx, "postgres://postgres@127.0.0.1:1/none?sslmode=disable&connect_timeout=2", PGStoreOptions{})
	if err == nil || !pgdb.Unavailable(err) {
		t.Fatalf("open on a closed port: %v; want an unavailable error", err)
	}

	dbURL := pgtest.NewDatabase(t, "paygate_store_")
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy, err := faultproxy.New(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	u.Host = proxy.Addr()
	s := ctOpenPG(t, u.String(), 10*time.Second)
	p := ctAdmit(t, s, ctPayment("alice", "bankA-1", "bankB-1", 1))
	proxy.SetMode(faultproxy.Reset, 0)
	calls := map[string]func() error{
		"Payment": func() error { _, err := s.Payment(ctx, p.PaymentID); return err },
		"Decide": func() error {
			_, err := s.Decide(ctx, p.PaymentID, decisionCommit, 0, "", false, s.Now(), decidedByRequest)
			return err
		},
		"Admit": func() error {
			_, _, err := admitPayment(ctx, s, ctPayment("alice", "bankA-1", "bankB-1", 1))
			return err
		},
		"RenewLease": func() error { return s.RenewLease(ctx) },
		"Session":    func() error { _, err := s.Session(ctx, "t"); return err },
	}
	for name, call := range calls {
		if err := call(); err == nil || !pgdb.Unavailable(err) {
			t.Errorf("%s with the database cut off: %v; want an unavailable error", name, err)
		}
	}
	proxy.SetMode(faultproxy.Pass, 0)
	waitFor(t, 10*time.Second, "the store to reconnect", func() bool {
		_, err := s.Payment(ctx, p.PaymentID)
		return err == nil
	})
	s.Close()
	if _, err := s.Payment(ctx, p.PaymentID); err == nil || !pgdb.Unavailable(err) {
		t.Fatalf("read from a closed store: %v; want an unavailable error", err)
	}
}

// BenchmarkStorePGAdmitDecide is a payment's hot path on PostgreSQL from 32 × GOMAXPROCS
// callers: admit (the commit running while the caller goes on, as the coordinator's prepares
// do), wait for it, decide.
func BenchmarkStorePGAdmitDecide(b *testing.B) {
	if err := pgtest.Reachable(); err != nil {
		b.Skipf("PostgreSQL not reachable at %s: %v", pgtest.URL(), err)
	}
	s, err := OpenPGStore(context.Background(), pgtest.NewDatabase(b, "paygate_bench_")+os.Getenv("BENCH_PG_OPTS"), PGStoreOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ids := benchIDs(fmt.Sprintf("%08x", b.N), b.N)
	var seq atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			id := ids[seq.Add(1)-1]
			_, inserted, durable, err := s.StartAdmitPayment(ctx, benchPayment(id))
			if err == nil {
				err = durable()
			}
			if err == nil && inserted {
				_, err = s.Decide(ctx, id, decisionCommit, 0, "", false, s.Now(), decidedByRequest)
			}
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "payments/s")
}
