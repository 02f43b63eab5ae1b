package bank

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/paygate/paygate/internal/sqlitedb"
)

// addTrigger installs a trigger that makes the ledger's writes fail, to test what a storage
// failure in the middle of a batch leaves behind.
func addTrigger(t *testing.T, l *Ledger, ddl string) {
	t.Helper()
	err := l.db.Update(context.Background(), func(ctx context.Context, tx *sqlitedb.Tx) error {
		_, err := tx.ExecContext(ctx, ddl)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func wantUnknown(t *testing.T, l testLedger, txn string) {
	t.Helper()
	if _, err := l.Transaction(context.Background(), txn); !errors.Is(err, ErrUnknownTransaction) {
		t.Fatalf("transaction %s: %v; want ErrUnknownTransaction", txn, err)
	}
}

// TestBatchPreparesEachAsPrepare: the prepares of a Batch get, item by item, what Prepare would
// answer called for each in turn, and the batch records what those calls would.
func TestBatchPreparesEachAsPrepare(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	forEachLedger(t, []Account{usd("bank1-1", 1000), usd("bank1-2", 0)}, func(t *testing.T, l testLedger, _ reopenFunc) {
		if v := mustPrepare(t, l, "old", debit("bank1-1", 100), credit("bank1-2", 100)); !v.Yes {
			t.Fatal(v)
		}

		items := []PrepareItem{
			{TxnID: "yes", Legs: []Leg{debit("bank1-1", 400), credit("bank1-2", 400)}, Deadline: deadline},
			{TxnID: "no", Legs: []Leg{debit("bank1-1", 501)}, Deadline: deadline}, // 1000 - 100 - 400 available
			{TxnID: "old", Legs: []Leg{credit("bank1-2", 100), debit("bank1-1", 100)}, Deadline: deadline},
			{TxnID: "bad", Legs: []Leg{debit("bank1-1", 0)}, Deadline: deadline},
			{TxnID: "yes", Legs: []Leg{debit("bank1-1", 400), credit("bank1-2", 400)}, Deadline: deadline}, // replay of item 0
			{TxnID: "old", Legs: []Leg{debit("bank1-1", 99)}, Deadline: deadline},
			{TxnID: "late", Legs: []Leg{debit("bank1-1", 1)}, Deadline: t0.Add(-time.Second)},
		}
		cerrs, votes, errs, err := l.Batch(ctx, nil, items, t0)
		if err != nil {
			t.Fatal(err)
		}
		if len(cerrs) != 0 || len(votes) != len(items) || len(errs) != len(items) {
			t.Fatalf("%d completion errors, %d votes, %d errors; want none and %d of each", len(cerrs), len(votes), len(errs), len(items))
		}
		want := []struct {
			yes    bool
			reason Reason
			err    error
		}{
			{yes: true},
			{reason: ReasonInsufficientFunds},
			{yes: true},
			{err: ErrInvalidArgument},
			{yes: true},
			{reason: ReasonConflict},
			{reason: ReasonDeadlineExceeded},
		}
		for i, w := range want {
			v, err := votes[i], errs[i]
			switch {
			case w.err != nil && !errors.Is(err, w.err):
				t.Errorf("item %d: err %v; want %v", i, err, w.err)
			case w.err == nil && err != nil:
				t.Errorf("item %d: err %v", i, err)
			case v.Yes != w.yes || v.Reason != w.reason || (!v.Yes && w.err == nil && v.Message == ""):
				t.Errorf("item %d: vote %+v; want yes=%v reason %q with a message when NO", i, v, w.yes, w.reason)
			}
		}
		wantAccount(t, l, "bank1-1", 1000, 500, 0)
		wantAccount(t, l, "bank1-2", 0, 0, 500)
		wantState(t, l, "yes", Prepared)
		wantState(t, l, "no", Aborted)
		wantState(t, l, "late", Aborted)
		wantUnknown(t, l, "bad")

		// The batch recorded what Prepare would have: a retry one by one gets the same answers.
		for i, it := range items {
			v, err := l.Prepare(ctx, it.TxnID, it.Legs, it.Deadline, t0)
			if v != votes[i] || (err == nil) != (errs[i] == nil) {
				t.Errorf("item %d again alone: %+v, %v; the batch said %+v, %v", i, v, err, votes[i], errs[i])
			}
		}
		wantAccount(t, l, "bank1-1", 1000, 500, 0)
	})
}

func TestBatchPreparesSeeEarlierHolds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	forEachLedger(t, []Account{usd("bank1-1", 1000), usd("bank1-2", 0)}, func(t *testing.T, l testLedger, _ reopenFunc) {
		_, votes, errs, err := l.Batch(ctx, nil, []PrepareItem{
			{TxnID: "first", Legs: []Leg{debit("bank1-1", 600), credit("bank1-2", 600)}, Deadline: deadline},
			{TxnID: "second", Legs: []Leg{debit("bank1-1", 600), credit("bank1-2", 600)}, Deadline: deadline},
		}, t0)
		if err != nil || errs[0] != nil || errs[1] != nil {
			t.Fatal(err, errs)
		}
		if !votes[0].Yes {
			t.Errorf("first: %+v; want YES", votes[0])
		}
		if votes[1].Yes || votes[1].Reason != ReasonInsufficientFunds {
			t.Errorf("second: %+v; want NO insufficient funds", votes[1])
		}
		wantAccount(t, l, "bank1-1", 1000, 600, 0)
		wantAccount(t, l, "bank1-2", 0, 0, 600)
		wantState(t, l, "second", Aborted)
	})
}

func TestBatchAllInvalidWritesNothing(t *testing.T) {
	t.Parallel()
	forEachLedger(t, []Account{usd("bank1-1", 1000)}, func(t *testing.T, l testLedger, _ reopenFunc) {
		cerrs, votes, errs, err := l.Batch(context.Background(), []Completion{{TxnID: "c", Outcome: Prepared}}, []PrepareItem{
			{TxnID: "", Legs: []Leg{debit("bank1-1", 1)}, Deadline: deadline},
			{TxnID: "t", Legs: []Leg{debit("bank1-1", 1)}},
		}, t0)
		if err != nil || len(votes) != 2 || !errors.Is(errs[0], ErrInvalidArgument) || !errors.Is(errs[1], ErrInvalidArgument) ||
			len(cerrs) != 1 || !errors.Is(cerrs[0], ErrInvalidArgument) {
			t.Fatalf("Batch = %v, %v, %v, %v; want three ErrInvalidArgument items", cerrs, votes, errs, err)
		}
		wantUnknown(t, l, "t")
		wantUnknown(t, l, "c")
		if cerrs, votes, errs, err := l.Batch(context.Background(), nil, nil, t0); err != nil || len(cerrs) != 0 || len(votes) != 0 || len(errs) != 0 {
			t.Fatalf("empty batch: %v, %v, %v, %v", cerrs, votes, errs, err)
		}
	})
}

func TestBatchPreparesStorageFailureRecordsNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l, _ := openTestLedger(t, usd("bank1-1", 1000), usd("bank1-2", 0))
	addTrigger(t, l, `CREATE TRIGGER boom BEFORE INSERT ON transactions WHEN NEW.id = 'boom'
		BEGIN SELECT RAISE(ABORT, 'boom'); END`)
	cerrs, votes, errs, err := l.Batch(ctx, nil, []PrepareItem{
		{TxnID: "ok", Legs: []Leg{debit("bank1-1", 10), credit("bank1-2", 10)}, Deadline: deadline},
		{TxnID: "bad", Legs: []Leg{debit("bank1-1", 0)}, Deadline: deadline},
		{TxnID: "boom", Legs: []Leg{debit("bank1-1", 20)}, Deadline: deadline},
		{TxnID: "after", Legs: []Leg{debit("bank1-1", 30)}, Deadline: deadline},
	}, t0)
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("Batch = %v, %v, %v, %v; want the batch's failure", cerrs, votes, errs, err)
	}
	if cerrs != nil || votes != nil || errs != nil {
		t.Errorf("a failed batch returned completion errors %v, votes %v, errors %v", cerrs, votes, errs)
	}
	// Nothing of the batch is recorded, not even what the items before the failure wrote.
	wantAccount(t, l, "bank1-1", 1000, 0, 0)
	wantAccount(t, l, "bank1-2", 0, 0, 0)
	for _, id := range []string{"ok", "boom", "after"} {
		wantUnknown(t, l, id)
	}
}

// TestBatchCompletionsEachAsCommitOrAbort: the completions of a Batch get, item by item, what
// Commit or Abort would return called for each in turn, and apply what those calls would.
func TestBatchCompletionsEachAsCommitOrAbort(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	forEachLedger(t, []Account{usd("bank1-1", 1000), usd("bank1-2", 0)}, func(t *testing.T, l testLedger, _ reopenFunc) {
		for _, id := range []string{"c1", "c2", "a1", "done"} {
			if v := mustPrepare(t, l, id, debit("bank1-1", 100), credit("bank1-2", 100)); !v.Yes {
				t.Fatal(id, v)
			}
		}
		if err := l.Commit(ctx, "done"); err != nil {
			t.Fatal(err)
		}
		if err := l.Abort(ctx, "aborted"); err != nil {
			t.Fatal(err)
		}

		items := []Completion{
			{TxnID: "c1", Outcome: Committed},
			{TxnID: "a1", Outcome: Aborted},
			{TxnID: "ghost", Outcome: Committed},
			{TxnID: "aborted", Outcome: Committed},
			{TxnID: "c2", Outcome: Committed},
			{TxnID: "done", Outcome: Aborted},
			{TxnID: "c1", Outcome: Committed}, // again: changes nothing
			{TxnID: "late", Outcome: Aborted}, // unknown: a tombstone
			{TxnID: "", Outcome: Aborted},
			{TxnID: "c2", Outcome: Prepared},
		}
		errs, votes, perrs, err := l.Batch(ctx, items, nil, t0)
		if err != nil {
			t.Fatal(err)
		}
		want := []error{nil, nil, ErrUnknownTransaction, ErrAlreadyAborted, nil, ErrAlreadyCommitted, nil, nil, ErrInvalidArgument, ErrInvalidArgument}
		if len(errs) != len(want) || len(votes) != 0 || len(perrs) != 0 {
			t.Fatalf("%d errors, %d votes, %d prepare errors; want %d errors and no prepare results", len(errs), len(votes), len(perrs), len(want))
		}
		for i, w := range want {
			if (w == nil && errs[i] != nil) || !errors.Is(errs[i], w) {
				t.Errorf("item %d (%+v): err %v; want %v", i, items[i], errs[i], w)
			}
		}
		wantState(t, l, "c1", Committed)
		wantState(t, l, "c2", Committed)
		wantState(t, l, "a1", Aborted)
		wantState(t, l, "done", Committed)
		wantState(t, l, "aborted", Aborted)
		wantState(t, l, "late", Aborted)
		wantUnknown(t, l, "ghost")
		wantAccount(t, l, "bank1-1", 700, 0, 0)
		wantAccount(t, l, "bank1-2", 300, 0, 0)
		if v := mustPrepare(t, l, "late", debit("bank1-1", 1)); v.Yes || v.Reason != ReasonAlreadyAborted {
			t.Fatalf("prepare after the batch's tombstone: %+v; want NO already aborted", v)
		}
	})
}

func TestBatchCompletionsStorageFailureAppliesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l, _ := openTestLedger(t, usd("bank1-1", 1000), usd("bank1-2", 0))
	for _, id := range []string{"ok", "boom", "after"} {
		if v := mustPrepare(t, l, id, debit("bank1-1", 100), credit("bank1-2", 100)); !v.Yes {
			t.Fatal(id, v)
		}
	}
	// The failure comes after the item has applied its legs to the accounts.
	addTrigger(t, l, `CREATE TRIGGER boom BEFORE UPDATE OF state ON transactions WHEN NEW.id = 'boom'
		BEGIN SELECT RAISE(ABORT, 'boom'); END`)
	errs, votes, perrs, err := l.Batch(ctx, []Completion{
		{TxnID: "ok", Outcome: Committed},
		{TxnID: "ghost", Outcome: Committed},
		{TxnID: "boom", Outcome: Committed},
		{TxnID: "after", Outcome: Aborted},
	}, nil, t0)
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("Batch = %v, %v, %v, %v; want the batch's failure", errs, votes, perrs, err)
	}
	if errs != nil || votes != nil || perrs != nil {
		t.Errorf("a failed batch returned errors %v, votes %v, prepare errors %v", errs, votes, perrs)
	}
	for _, id := range []string{"ok", "boom", "after"} {
		wantState(t, l, id, Prepared)
	}
	wantAccount(t, l, "bank1-1", 1000, 300, 0)
	wantAccount(t, l, "bank1-2", 0, 0, 300)
}

func TestBatchCancelledAppliesNothing(t *testing.T) {
	t.Parallel()
	forEachLedger(t, []Account{usd("bank1-1", 1000)}, func(t *testing.T, l testLedger, _ reopenFunc) {
		if v := mustPrepare(t, l, "t", debit("bank1-1", 100)); !v.Yes {
			t.Fatal(v)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, _, _, err := l.Batch(ctx, []Completion{{TxnID: "t", Outcome: Committed}}, nil, t0); !errors.Is(err, context.Canceled) {
			t.Fatalf("Batch of a commit with a cancelled context: %v; want context.Canceled", err)
		}
		if _, _, _, err := l.Batch(ctx, nil, []PrepareItem{{TxnID: "u", Legs: []Leg{debit("bank1-1", 1)}, Deadline: deadline}}, t0); !errors.Is(err, context.Canceled) {
			t.Fatalf("Batch of a prepare with a cancelled context: %v; want context.Canceled", err)
		}
		wantState(t, l, "t", Prepared)
		wantUnknown(t, l, "u")
		wantAccount(t, l, "bank1-1", 1000, 100, 0)
	})
}

// TestBatchCompletesBeforePreparing: a Batch applies its completions before its prepares, in one
// write: a hold released by an abort is available to a prepare of the same batch, and a failure
// of a prepare undoes the batch's completions too.
func TestBatchCompletesBeforePreparing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	forEachLedger(t, []Account{usd("bank1-1", 1000), usd("bank1-2", 0)}, func(t *testing.T, l testLedger, _ reopenFunc) {
		for _, id := range []string{"held", "paid"} {
			if v := mustPrepare(t, l, id, debit("bank1-1", 400), credit("bank1-2", 400)); !v.Yes {
				t.Fatal(id, v)
			}
		}
		completions := []Completion{{TxnID: "held", Outcome: Aborted}, {TxnID: "paid", Outcome: Committed}}

		failInsertOf(t, l, "boom")
		if _, _, _, err := l.Batch(ctx, completions, []PrepareItem{{TxnID: "boom", Legs: []Leg{debit("bank1-1", 1)}, Deadline: deadline}}, t0); err == nil || !strings.Contains(err.Error(), "boom") {
			t.Fatalf("Batch with a failing prepare: %v; want the batch's failure", err)
		}
		wantState(t, l, "held", Prepared)
		wantState(t, l, "paid", Prepared)
		wantAccount(t, l, "bank1-1", 1000, 800, 0)
		wantAccount(t, l, "bank1-2", 0, 0, 800)

		// 500 fits only once the abort has released its 400: 1000 - 400 paid leaves 600 available.
		cerrs, votes, perrs, err := l.Batch(ctx, completions, []PrepareItem{
			{TxnID: "next", Legs: []Leg{debit("bank1-1", 500)}, Deadline: deadline},
			{TxnID: "more", Legs: []Leg{debit("bank1-1", 200)}, Deadline: deadline},
		}, t0)
		if err != nil || cerrs[0] != nil || cerrs[1] != nil || perrs[0] != nil || perrs[1] != nil {
			t.Fatal(err, cerrs, perrs)
		}
		if !votes[0].Yes || votes[1].Yes || votes[1].Reason != ReasonInsufficientFunds {
			t.Errorf("votes %+v; want YES, then NO insufficient funds", votes)
		}
		wantState(t, l, "held", Aborted)
		wantState(t, l, "paid", Committed)
		wantAccount(t, l, "bank1-1", 600, 500, 0)
		wantAccount(t, l, "bank1-2", 400, 0, 0)
	})
}

func TestTransactionLegsKeepTheirOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	forEachLedger(t, []Account{usd("bank1-1", 1000), usd("bank1-2", 0)}, func(t *testing.T, l testLedger, _ reopenFunc) {
		legs := []Leg{credit("bank1-2", 7), debit("bank1-1", 7)}
		if v := mustPrepare(t, l, "t", legs...); !v.Yes {
			t.Fatal(v)
		}
		got, err := l.Transaction(ctx, "t")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got.Legs, legs) {
			t.Fatalf("legs %+v; want %+v", got.Legs, legs)
		}
		if err := l.Abort(ctx, "tomb"); err != nil {
			t.Fatal(err)
		}
		if tomb, err := l.Transaction(ctx, "tomb"); err != nil || tomb.Legs != nil {
			t.Fatalf("tombstone %+v, %v; want nil legs", tomb, err)
		}
	})
}

func TestPrepareRefusesLegsThatAreNotUTF8(t *testing.T) {
	t.Parallel()
	forEachLedger(t, []Account{usd("bank1-1", 1000)}, func(t *testing.T, l testLedger, _ reopenFunc) {
		for _, g := range []Leg{
			{Account: "bank1-\xff", Direction: Debit, Amount: 1, Currency: "USD"},
			{Account: "bank1-1", Direction: Debit, Amount: 1, Currency: "US\xff"},
		} {
			if _, err := l.Prepare(context.Background(), "t", []Leg{g}, deadline, t0); !errors.Is(err, ErrInvalidArgument) {
				t.Errorf("leg %q %q: err %v; want ErrInvalidArgument", g.Account, g.Currency, err)
			}
		}
	})
}
