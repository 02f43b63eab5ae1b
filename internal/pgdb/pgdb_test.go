package pgdb_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/paygate/paygate/internal/pgdb"
	"github.com/paygate/paygate/internal/pgdb/pgtest"
)

var testMigrations = fstest.MapFS{
	"m/0001_first.sql":  {Data: []byte(`CREATE TABLE counters (name text PRIMARY KEY, n bigint NOT NULL);`)},
	"m/0002_second.sql": {Data: []byte(`INSERT INTO counters (name, n) VALUES ('a', 0), ('b', 0);`)},
}

const testLockKey = 0x7061796761746599

func open(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgdb.Open(context.Background(), url, testMigrations, "m", testLockKey)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// TestMigrateOnce: pools opened at once on one fresh database apply every migration once, in
// version order, and a later open applies none again.
func TestMigrateOnce(t *testing.T) {
	url := pgtest.NewDatabase(t, "pgdb_test_")
	var wg sync.WaitGroup
	errs := make([]error, 5)
	for i := range errs {
		wg.Go(func() {
			pool, err := pgdb.Open(context.Background(), url, testMigrations, "m", testLockKey)
			if err == nil {
				pool.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	pool := open(t, url)
	var versions []int32
	rows, _ := pool.Query(context.Background(), `SELECT version FROM schema_migrations ORDER BY version`)
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil || len(versions) != 2 || versions[0] != 1 || versions[1] != 2 {
		t.Fatalf("schema_migrations = %v, %v; want [1 2]", versions, err)
	}
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM counters`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("%d counters, %v; want 2 (the second migration ran once)", n, err)
	}
}

// TestMigrateBadName: a file not named <version>_<name>.sql is refused.
func TestMigrateBadName(t *testing.T) {
	url := pgtest.NewDatabase(t, "pgdb_test_")
	bad := fstest.MapFS{"m/first.sql": {Data: []byte(`SELECT 1`)}}
	if pool, err := pgdb.Open(context.Background(), url, bad, "m", testLockKey); err == nil {
		pool.Close()
		t.Fatal("opened with a migration named first.sql")
	}
}

// TestWriteRetriesDeadlocks: two transactions that lock two rows in opposite orders deadlock;
// Write runs the loser again, so both commit, each once.
func TestWriteRetriesDeadlocks(t *testing.T) {
	url := pgtest.NewDatabase(t, "pgdb_test_")
	pool := open(t, url)
	ctx := context.Background()
	var runs atomic.Int64
	var wg sync.WaitGroup
	const n = 2 // one deadlock: the server takes deadlock_timeout (1s by default) to find it
	errs := make([]error, n)
	// Each first run holds its first row before either asks for its second, so the two always
	// deadlock (a sleep instead let one finish first on a loaded machine).
	var holding sync.WaitGroup
	holding.Add(n)
	for i := range n {
		first, second := "a", "b"
		if i%2 == 1 {
			first, second = second, first
		}
		wg.Go(func() {
			attempt := 0
			errs[i] = pgdb.Write(ctx, pool, func(ctx context.Context, tx pgx.Tx) error {
				runs.Add(1)
				attempt++
				if _, err := tx.Exec(ctx, `UPDATE counters SET n = n + 1 WHERE name = $1`, first); err != nil {
					return err
				}
				if attempt == 1 {
					holding.Done()
					holding.Wait()
				}
				_, err := tx.Exec(ctx, `UPDATE counters SET n = n + 1 WHERE name = $1`, second)
				return err
			})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	var a, b int
	if err := pool.QueryRow(ctx, `SELECT (SELECT n FROM counters WHERE name = 'a'), (SELECT n FROM counters WHERE name = 'b')`).Scan(&a, &b); err != nil {
		t.Fatal(err)
	}
	if a != n || b != n {
		t.Fatalf("counters a=%d b=%d, want %d each", a, b, n)
	}
	if runs.Load() == n {
		t.Fatalf("%d runs of %d transactions: no deadlock was retried", runs.Load(), n)
	}
}

// TestWriteUndoesOnError: an error from fn rolls everything back and is returned as is; it is
// not retried.
func TestWriteUndoesOnError(t *testing.T) {
	pool := open(t, pgtest.NewDatabase(t, "pgdb_test_"))
	ctx := context.Background()
	boom := errors.New("boom")
	runs := 0
	err := pgdb.Write(ctx, pool, func(ctx context.Context, tx pgx.Tx) error {
		runs++
		if _, err := tx.Exec(ctx, `UPDATE counters SET n = 7`); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) || runs != 1 {
		t.Fatalf("err = %v after %d runs, want boom after 1", err, runs)
	}
	var sum int
	if err := pool.QueryRow(ctx, `SELECT sum(n) FROM counters`).Scan(&sum); err != nil || sum != 0 {
		t.Fatalf("sum = %d, %v; want 0", sum, err)
	}
}

func TestRetryable(t *testing.T) {
	for code, want := range map[string]bool{"40001": true, "40P01": true, "23505": false, "08006": false} {
		if got := pgdb.Retryable(&pgconn.PgError{Code: code}); got != want {
			t.Errorf("Retryable(%s) = %v, want %v", code, got, want)
		}
	}
	if pgdb.Retryable(errors.New("other")) {
		t.Error("Retryable(plain error) = true")
	}
}

func TestHasNUL(t *testing.T) {
	if !pgdb.HasNUL("a", "b\x00c") || pgdb.HasNUL("a", "") || pgdb.HasNUL() {
		t.Fatal("HasNUL is wrong")
	}
}

// TestUnavailable: a refused connection is unavailable, as are the server's codes for
// connection trouble and lack of resources; the server's other errors are not.
func TestUnavailable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := pgdb.Open(ctx, "postgres://postgres@127.0.0.1:1/none?sslmode=disable&connect_timeout=2", testMigrations, "m", testLockKey)
	if err == nil || !pgdb.Unavailable(err) {
		t.Fatalf("open on a closed port: %v; want an unavailable error", err)
	}
	for code, want := range map[string]bool{
		"08006": true, "53300": true, "53100": true, "57P01": true, "57P03": true, "40001": true,
		"23505": false, "42601": false, "22021": false,
	} {
		if got := pgdb.Unavailable(&pgconn.PgError{Code: code}); got != want {
			t.Errorf("Unavailable(SQLSTATE %s) = %v, want %v", code, got, want)
		}
	}
	if pgdb.Unavailable(nil) || pgdb.Unavailable(errors.New("other")) {
		t.Error("Unavailable(nil or a plain error) = true")
	}
	lost := []error{io.ErrUnexpectedEOF, fmt.Errorf("read: %w", syscall.ECONNRESET),
		&net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}, pgconn.ErrConnClosed}
	for _, err := range lost {
		if !pgdb.Unavailable(fmt.Errorf("query: %w", err)) {
			t.Errorf("Unavailable(%v) = false, want true (a lost connection)", err)
		}
	}
	if pgdb.Unavailable(fmt.Errorf("query: %w", context.Canceled)) {
		t.Error("Unavailable(context.Canceled) = true: the caller's cancellation is not the database's")
	}
}
