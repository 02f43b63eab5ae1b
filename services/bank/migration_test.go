package bank

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// A ledger written by a binary of schema version 1 (legs in their own table) opens with the
// legs moved into the transactions' rows, in their order, and carries on.
func TestMigrationMovesLegsIntoTransactions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "bank1.db")

	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	created := t0.Add(-time.Minute).UnixNano()
	for _, q := range []string{
		migrations[0],
		`PRAGMA user_version = 1`,
		`INSERT INTO meta (key, value) VALUES ('bank', 'bank1')`,
		// bank1-1 paid 100 to bank1-2 (committed) and has 300 held for bank1-2 (prepared).
		`INSERT INTO accounts (id, currency, balance, held, pending_credit) VALUES
			('bank1-1', 'USD', 900, 300, 0), ('bank1-2', 'USD', 100, 0, 300)`,
		`INSERT INTO transactions (id, state, deadline, created_at, updated_at) VALUES
			('prepared', 'PREPARED', ?1, ?2, ?2), ('committed', 'COMMITTED', ?1, ?2, ?2), ('tomb', 'ABORTED', NULL, ?2, ?2)`,
		// Legs inserted out of seq order: the order given at prepare is seq's.
		`INSERT INTO legs (txn_id, seq, account_id, direction, amount, currency) VALUES
			('prepared', 1, 'bank1-1', 'DEBIT', 300, 'USD'),
			('prepared', 0, 'bank1-2', 'CREDIT', 300, 'USD'),
			('committed', 0, 'bank1-1', 'DEBIT', 100, 'USD'),
			('committed', 1, 'bank1-2', 'CREDIT', 100, 'USD')`,
	} {
		if _, err := db.ExecContext(ctx, q, deadline.UnixNano(), created); err != nil {
			db.Close()
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	l, err := OpenLedger(ctx, path, "bank1")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	var version, legsTables int
	if err := l.db.Read.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&version); err != nil || version != len(migrations) {
		t.Fatalf("user_version %d, %v; want %d", version, err, len(migrations))
	}
	if err := l.db.Read.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_schema WHERE name = 'legs'`).Scan(&legsTables); err != nil || legsTables != 0 {
		t.Fatalf("%d legs tables, %v; want the table dropped", legsTables, err)
	}

	wantLegs := map[string][]Leg{
		"prepared":  {credit("bank1-2", 300), debit("bank1-1", 300)},
		"committed": {debit("bank1-1", 100), credit("bank1-2", 100)},
		"tomb":      nil,
	}
	for id, legs := range wantLegs {
		got, err := l.Transaction(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got.Legs, legs) || (legs == nil) != (got.Legs == nil) {
			t.Errorf("%s: legs %+v; want %+v", id, got.Legs, legs)
		}
		if !got.CreatedAt.Equal(time.Unix(0, created)) || (id != "tomb") != got.Deadline.Equal(deadline) {
			t.Errorf("%s: created %v deadline %v", id, got.CreatedAt, got.Deadline)
		}
	}
	inDoubt, err := l.PreparedBefore(ctx, deadline.Add(time.Second))
	if err != nil || len(inDoubt) != 1 || inDoubt[0].ID != "prepared" || !slices.Equal(inDoubt[0].Legs, wantLegs["prepared"]) {
		t.Fatalf("PreparedBefore = %+v, %v; want the prepared transaction with its legs", inDoubt, err)
	}

	// Replays compare with the migrated legs.
	if v := mustPrepare(t, l, "prepared", debit("bank1-1", 300), credit("bank1-2", 300)); !v.Yes {
		t.Fatalf("replayed prepare: %+v; want YES", v)
	}
	if v := mustPrepare(t, l, "committed", debit("bank1-1", 100)); v.Yes || v.Reason != ReasonConflict {
		t.Fatalf("prepare with other legs: %+v; want NO conflict", v)
	}
	if v := mustPrepare(t, l, "tomb", debit("bank1-1", 1)); v.Yes || v.Reason != ReasonAlreadyAborted {
		t.Fatalf("prepare of the tombstone: %+v; want NO already aborted", v)
	}

	// Phase two of the transaction prepared before the upgrade moves the held money.
	if err := l.Commit(ctx, "prepared"); err != nil {
		t.Fatal(err)
	}
	wantState(t, l, "prepared", Committed)
	wantAccount(t, l, "bank1-1", 600, 0, 0)
	wantAccount(t, l, "bank1-2", 400, 0, 0)
	if err := l.Commit(ctx, "tomb"); !errors.Is(err, ErrAlreadyAborted) {
		t.Fatalf("commit of the tombstone: %v; want ErrAlreadyAborted", err)
	}

	// And new transactions work as ever.
	if v := mustPrepare(t, l, "new", debit("bank1-2", 50), credit("bank1-1", 50)); !v.Yes {
		t.Fatal(v)
	}
	if err := l.Commit(ctx, "new"); err != nil {
		t.Fatal(err)
	}
	wantAccount(t, l, "bank1-1", 650, 0, 0)
	wantAccount(t, l, "bank1-2", 350, 0, 0)
}
