package sqlitedb

import (
	"context"
	"path/filepath"
	"testing"
)

func TestOpenMigratesOnceAndPersists(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "x.db")
	migrations := []string{
		`CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)`,
		`INSERT INTO t VALUES ('a', 1)`,
	}
	db, err := Open(ctx, path, migrations)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Write.ExecContext(ctx, `UPDATE t SET v = 2`); err != nil {
		t.Fatal(err)
	}
	var mode string
	if err := db.Read.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q, %v; want wal", mode, err)
	}
	if _, err := db.Read.ExecContext(ctx, `UPDATE t SET v = 3`); err == nil {
		t.Fatal("write through the read pool succeeded; want query_only refusal")
	}
	db.Close()

	// Reopening runs no migration again: the insert of migration 2 is not repeated.
	db, err = Open(ctx, path, migrations)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n, v int
	if err := db.Read.QueryRowContext(ctx, `SELECT count(*), max(v) FROM t`).Scan(&n, &v); err != nil {
		t.Fatal(err)
	}
	if n != 1 || v != 2 {
		t.Fatalf("rows = %d, v = %d; want 1 row with v = 2", n, v)
	}
	if _, err := Open(ctx, path, migrations[:1]); err == nil {
		t.Fatal("opening with fewer migrations than applied succeeded; want an error")
	}
}
