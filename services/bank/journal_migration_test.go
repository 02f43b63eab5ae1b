package bank

import (
	"context"
	"database/sql"
	"io/fs"
	"path/filepath"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/paygate/paygate/internal/pgdb"
)

// A ledger that had accounts, and a payment under way, before the journal existed gets the sum
// of its balances as its initial total, no entries, and works on.
func TestMigrationRecordsInitialTotal(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// bank1-1 paid 100 to bank1-2 and has 300 held for it.
	const accounts = `INSERT INTO accounts (id, currency, balance, held, pending_credit) VALUES
		('bank1-1', 'USD', 900, 300, 0), ('bank1-2', 'USD', 100, 0, 300), ('bank1-7', 'USD', 0, 0, 0)`
	check := func(t *testing.T, l testLedger) {
		t.Helper()
		s := summary(t, l)
		if want := (Summary{Accounts: 3, Balance: 1000, Held: 300, PendingCredit: 300, Initial: 1000}); s != want {
			t.Fatalf("summary after the migration %+v; want %+v", s, want)
		}
		mustPost(t, l, deposit("d", "bank1-2", 5))
		a, _, err := l.OpenAccount(ctx, "r", "carol", "USD", t0)
		if err != nil || a.ID != "bank1-8" {
			t.Fatalf("open = %+v, %v; want bank1-8", a, err)
		}
		if s := summary(t, l); s.Initial != 1000 || s.Deposited != 5 || s.Balance != 1005 || s.Accounts != 4 {
			t.Fatalf("summary %+v", s)
		}
	}

	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "bank1.db")
		db, err := sql.Open("sqlite", "file:"+path)
		if err != nil {
			t.Fatal(err)
		}
		const before = 3 // the migrations of a ledger without the journal
		for _, q := range append(migrations[:before:before], `PRAGMA user_version = 3`,
			`INSERT INTO meta (key, value) VALUES ('bank', 'bank1')`, accounts) {
			if _, err := db.ExecContext(ctx, q); err != nil {
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
		check(t, l)
	})

	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		url := pgDatabase(t)
		first, err := fs.ReadFile(pgMigrations, "pgmigrations/0001_ledger.sql")
		if err != nil {
			t.Fatal(err)
		}
		pool, err := pgxpool.New(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		old := fstest.MapFS{"m/0001_ledger.sql": {Data: first}}
		err = pgdb.Migrate(ctx, pool, old, "m", pgMigrationLockKey)
		if err == nil {
			_, err = pool.Exec(ctx, `INSERT INTO meta (key, value) VALUES ('bank', 'bank1')`)
		}
		if err == nil {
			_, err = pool.Exec(ctx, accounts)
		}
		pool.Close()
		if err != nil {
			t.Fatal(err)
		}
		l, err := OpenPGLedger(ctx, url, "bank1")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		check(t, l)
	})
}
