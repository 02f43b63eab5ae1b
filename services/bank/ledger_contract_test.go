package bank

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/paygate/paygate/internal/pgdb/pgtest"
)

// testLedger is what the contract tests use of a ledger: the service's port and the tools'
// methods. *Ledger (SQLite) and *PGLedger (PostgreSQL) provide it.
type testLedger interface {
	LedgerStore
	Prepare(ctx context.Context, txnID string, legs []Leg, deadline, now time.Time) (Vote, error)
}

var (
	_ testLedger = (*Ledger)(nil)
	_ testLedger = (*PGLedger)(nil)
)

// reopenFunc opens the store of a test's ledger again, as the ledger of bank; the test closes
// what it opens (and the cleanup closes it again, harmlessly).
type reopenFunc func(bank string) (testLedger, error)

// pgDatabase creates a fresh database for one test on the test server, dropped when the test
// ends, and returns its URL; it skips the test when no server can be reached (pgtest).
func pgDatabase(t testing.TB) string {
	t.Helper()
	return pgtest.NewDatabase(t, "paygate_test_")
}

// openTestPGLedger opens a PostgreSQL ledger of bank1 in a fresh database with the given
// accounts, and returns its URL.
func openTestPGLedger(t testing.TB, accounts ...Account) (*PGLedger, string) {
	t.Helper()
	dbURL := pgDatabase(t)
	l, err := OpenPGLedger(context.Background(), dbURL, "bank1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	if len(accounts) > 0 {
		if err := l.ImportAccounts(context.Background(), accounts); err != nil {
			t.Fatal(err)
		}
	}
	return l, dbURL
}

// forEachLedger runs fn as a subtest on a new ledger of bank1 holding accounts on each backend:
// "sqlite" and "postgres" (skipped when no server is reachable). The subtests run in parallel.
func forEachLedger(t *testing.T, accounts []Account, fn func(t *testing.T, l testLedger, reopen reopenFunc)) {
	t.Helper()
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		l, path := openTestLedger(t, accounts...)
		fn(t, l, func(bank string) (testLedger, error) {
			l, err := OpenLedger(context.Background(), path, bank)
			if err != nil {
				return nil, err
			}
			t.Cleanup(func() { l.Close() })
			return l, nil
		})
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		l, dbURL := openTestPGLedger(t, accounts...)
		fn(t, l, func(bank string) (testLedger, error) {
			l, err := OpenPGLedger(context.Background(), dbURL, bank)
			if err != nil {
				return nil, err
			}
			t.Cleanup(func() { l.Close() })
			return l, nil
		})
	})
}

// TestPGLedgerMigratesOnce: ledgers opened at once on one fresh database apply the schema once
// (under the advisory lock), and all of them open.
func TestPGLedgerMigratesOnce(t *testing.T) {
	t.Parallel()
	dbURL := pgDatabase(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			l, err := OpenPGLedger(ctx, dbURL, "bank1")
			if err == nil {
				err = l.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	files, err := fs.Glob(pgMigrations, "pgmigrations/*.sql")
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM schema_migrations`).Scan(&n); err != nil || n != len(files) {
		t.Fatalf("%d migrations recorded, %v; want %d", n, err, len(files))
	}
}

// TestPGLedgerUnavailable: a server that cannot be reached is an unavailable ledger, which the
// service answers UNAVAILABLE.
func TestPGLedgerUnavailable(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := OpenPGLedger(ctx, "postgres://postgres@127.0.0.1:1/none?sslmode=disable&connect_timeout=2", "bank1")
	if err == nil || !pgUnavailable(err) {
		t.Fatalf("open on a closed port: %v; want an unavailable error", err)
	}
}

// Concurrent prepares and aborts of one id on two accounts in both orders, with commits mixed
// in: nothing deadlocks for good, every transaction ends in one state, holds match the prepared
// transactions and money is conserved.
func TestConcurrentCrossingTransfers(t *testing.T) {
	t.Parallel()
	forEachLedger(t, []Account{usd("bank1-a", 5000), usd("bank1-b", 5000)}, func(t *testing.T, l testLedger, _ reopenFunc) {
		ctx := context.Background()
		var wg sync.WaitGroup
		var mu sync.Mutex
		var errs []error
		for i := range 40 {
			wg.Go(func() {
				txn := fmt.Sprintf("x%d", i)
				legs := []Leg{debit("bank1-a", 100), credit("bank1-b", 100)}
				if i%2 == 1 {
					legs = []Leg{debit("bank1-b", 100), credit("bank1-a", 100)}
				}
				v, err := l.Prepare(ctx, txn, legs, deadline, t0)
				if err == nil && v.Yes && i%3 != 0 {
					err = l.Commit(ctx, txn)
				}
				if err == nil {
					// A racing abort of a committed transaction is refused; of any other, applied.
					if aerr := l.Abort(ctx, txn); aerr != nil && !errors.Is(aerr, ErrAlreadyCommitted) {
						err = aerr
					}
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		all, _, err := l.ListAccounts(ctx, 10, "")
		if err != nil {
			t.Fatal(err)
		}
		var sum int64
		for _, a := range all {
			if a.Held != 0 || a.PendingCredit != 0 || a.Balance < 0 {
				t.Fatalf("account %+v", a)
			}
			sum += a.Balance
		}
		if sum != 10000 {
			t.Fatalf("sum of balances %d; want 10000", sum)
		}
	})
}

// failInsertOf makes the recording of transaction id fail with an error mentioning id, on
// either backend, to test what a storage failure in the middle of a write leaves behind.
func failInsertOf(t *testing.T, l testLedger, id string) {
	t.Helper()
	switch l := l.(type) {
	case *Ledger:
		addTrigger(t, l, fmt.Sprintf(`CREATE TRIGGER fail_%[1]s BEFORE INSERT ON transactions WHEN NEW.id = '%[1]s'
		BEGIN SELECT RAISE(ABORT, '%[1]s'); END`, id))
	case *PGLedger:
		ctx := context.Background()
		_, err := l.pool.Exec(ctx, fmt.Sprintf(`
CREATE FUNCTION fail_%[1]s() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION '%[1]s'; END $$;
CREATE TRIGGER fail_%[1]s BEFORE INSERT ON transactions FOR EACH ROW WHEN (NEW.id = '%[1]s') EXECUTE FUNCTION fail_%[1]s();`, id))
		if err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("no way to make %T fail", l)
	}
}

// Concurrent batches, each preparing debits of both accounts in its own order and completing the
// previous batch's transactions: a batch that deadlocks with another is retried, no hold is left
// behind, and the accounts are never overdrawn.
func TestConcurrentBatches(t *testing.T) {
	t.Parallel()
	forEachLedger(t, []Account{usd("bank1-a", 3000), usd("bank1-b", 3000)}, func(t *testing.T, l testLedger, _ reopenFunc) {
		ctx := context.Background()
		var wg sync.WaitGroup
		errs := make([]error, 8)
		for w := range errs {
			wg.Go(func() {
				var prev []Completion
				for round := range 10 {
					a, b := "bank1-a", "bank1-b"
					if (w+round)%2 == 1 {
						a, b = b, a
					}
					items := []PrepareItem{
						{TxnID: fmt.Sprintf("w%d-r%d-1", w, round), Legs: []Leg{debit(a, 50), credit(b, 50)}, Deadline: deadline},
						{TxnID: fmt.Sprintf("w%d-r%d-2", w, round), Legs: []Leg{debit(b, 70)}, Deadline: deadline},
					}
					cerrs, votes, perrs, err := l.Batch(ctx, prev, items, t0)
					if err == nil {
						err = errors.Join(append(cerrs, perrs...)...)
					}
					if err != nil {
						errs[w] = err
						return
					}
					prev = prev[:0]
					for i, v := range votes {
						outcome := Aborted
						if v.Yes && i == 0 {
							outcome = Committed
						}
						prev = append(prev, Completion{TxnID: items[i].TxnID, Outcome: outcome})
					}
				}
				_, _, _, err := l.Batch(ctx, prev, nil, t0)
				errs[w] = err
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		all, _, err := l.ListAccounts(ctx, 10, "")
		if err != nil {
			t.Fatal(err)
		}
		var sum int64
		for _, a := range all {
			if a.Held != 0 || a.PendingCredit != 0 || a.Balance < 0 {
				t.Fatalf("account %+v", a)
			}
			sum += a.Balance
		}
		if sum != 6000 {
			t.Fatalf("sum of balances %d; want 6000", sum)
		}
	})
}
