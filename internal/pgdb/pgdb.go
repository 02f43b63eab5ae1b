// Package pgdb is what the PostgreSQL stores share: opening a pool and applying a store's
// migrations once under an advisory lock (Open, Migrate), running a write transaction with
// retries of serialization failures and deadlocks (Write), and telling errors apart: one that
// may be retried (Retryable), a database that cannot be reached or is out of resources for now
// (Unavailable), text PostgreSQL cannot store (HasNUL).
package pgdb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"path"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Retries of a transaction that PostgreSQL aborted for a serialization failure or a deadlock.
const (
	maxAttempts  = 10
	retryBackoff = 2 * time.Millisecond
	maxBackoff   = 200 * time.Millisecond
)

// DefaultMaxConns is the size of a store's connection pool when the URL does not set one
// (pool_max_conns=N). Connections are opened as needed, up to it.
const DefaultMaxConns = 16

// Open connects to the PostgreSQL database at url (a postgres:// URL or a key=value connection
// string, as pgxpool.ParseConfig reads it) and applies the migrations in dir of migrations (see
// Migrate) under the advisory lock lockKey.
func Open(ctx context.Context, url string, migrations fs.FS, dir string, lockKey int64) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	if !strings.Contains(url, "pool_max_conns") {
		// pgxpool's default, max(4, CPUs), makes a server with 64 requests in flight queue
		// them for 4 connections, each holding its connection through a commit's WAL flush.
		cfg.MaxConns = DefaultMaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := Migrate(ctx, pool, migrations, dir, lockKey); err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}

// Migrate applies the migrations not yet applied, each in its own transaction, while holding
// the advisory lock lockKey on one connection, so that processes opening one database at the
// same time apply each migration once. The migrations are the files of dir named
// <version>_<name>.sql, applied in version order; the table schema_migrations records those
// applied.
func Migrate(ctx context.Context, pool *pgxpool.Pool, migrations fs.FS, dir string, lockKey int64) error {
	type migration struct {
		version int
		name    string
	}
	entries, err := fs.ReadDir(migrations, dir)
	if err != nil {
		return err
	}
	var ms []migration
	for _, e := range entries {
		prefix, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(prefix)
		if !ok || err != nil || v <= 0 || !strings.HasSuffix(e.Name(), ".sql") {
			return fmt.Errorf("migration %s: want <version>_<name>.sql", e.Name())
		}
		ms = append(ms, migration{v, e.Name()})
	}
	slices.SortFunc(ms, func(a, b migration) int { return a.version - b.version })

	conn, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, lockKey); err != nil {
		return fmt.Errorf("migration lock: %w", err)
	}
	defer func() {
		if _, err := conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, lockKey); err != nil {
			// The lock goes with the session: a connection that cannot unlock is not reused.
			conn.Conn().Close(context.WithoutCancel(ctx))
		}
	}()
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    integer PRIMARY KEY,
	name       text NOT NULL,
	applied_at timestamptz NOT NULL DEFAULT now()
)`); err != nil {
		return fmt.Errorf("migrations table: %w", err)
	}
	for _, m := range ms {
		body, err := fs.ReadFile(migrations, path.Join(dir, m.name))
		if err != nil {
			return err
		}
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			var done bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)`, m.version).Scan(&done); err != nil || done {
				return err
			}
			if _, err := tx.Exec(ctx, string(body)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.version, m.name)
			return err
		})
		if err != nil {
			return fmt.Errorf("migration %s: %w", m.name, err)
		}
	}
	return nil
}

// Beginner is what Write runs transactions on: a *pgxpool.Pool, a *pgxpool.Conn or a *pgx.Conn.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Querier runs statements: a *pgxpool.Pool (each statement its own transaction) or a pgx.Tx.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Statements runs fn on pool, whose statements each commit on their own, for writes that are
// one statement, or several each correct alone: it saves the round trips of BEGIN and COMMIT.
// A serialization failure or a deadlock runs fn again, as Write does: fn must set its results
// afresh on every run, and a statement that committed before the failure must be harmless to
// run again.
func Statements(ctx context.Context, pool *pgxpool.Pool, fn func(ctx context.Context, q Querier) error) error {
	return retry(ctx, func() error { return fn(ctx, pool) })
}

// Write runs fn in a transaction (READ COMMITTED, the server's default) and commits it; an
// error undoes all of fn. A serialization failure or a deadlock runs fn again in a new
// transaction, after a jittered backoff, up to 10 times: fn must set its results afresh on
// every run.
func Write(ctx context.Context, db Beginner, fn func(ctx context.Context, tx pgx.Tx) error) error {
	return WriteObserved(ctx, db, nil, fn)
}

// Observer takes one measurement; a Prometheus histogram (prometheus.Observer) is one.
type Observer interface {
	Observe(float64)
}

// CommitMetrics observe a store's commits. PostgreSQL has no group commit here: each
// transaction carries one update.
type CommitMetrics struct {
	Updates Observer // 1 per committed transaction
	Seconds Observer // how long each Commit took, in seconds
}

// ObserveCommit records a commit that started at start; nil m observes nothing.
func (m *CommitMetrics) ObserveCommit(start time.Time) {
	if m == nil {
		return
	}
	m.Seconds.Observe(time.Since(start).Seconds())
	m.Updates.Observe(1)
}

// WriteObserved is Write that observes each successful commit with m (nil: none).
func WriteObserved(ctx context.Context, db Beginner, m *CommitMetrics, fn func(ctx context.Context, tx pgx.Tx) error) error {
	if m == nil {
		return retry(ctx, func() error {
			return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error { return fn(ctx, tx) })
		})
	}
	return retry(ctx, func() error {
		tx, err := db.Begin(ctx)
		if err != nil {
			return err
		}
		// As pgx.BeginFunc: rolled back when fn fails or panics; after Commit, a no-op.
		defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
		if err := fn(ctx, tx); err != nil {
			return err
		}
		start := time.Now()
		if err := tx.Commit(ctx); err != nil {
			return err
		}
		m.ObserveCommit(start)
		return nil
	})
}

// retry runs run again after a serialization failure or a deadlock, with jittered backoff.
func retry(ctx context.Context, run func() error) error {
	backoff := retryBackoff
	for attempt := 1; ; attempt++ {
		err := run()
		if err == nil || !Retryable(err) || attempt == maxAttempts {
			return err
		}
		t := time.NewTimer(backoff/2 + rand.N(backoff))
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(err, ctx.Err())
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// Retryable says whether err is a serialization failure or a deadlock (SQLSTATE 40001, 40P01),
// after which the whole transaction may be run again.
func Retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}

// Unavailable says whether err means the database cannot be reached or is out of resources for
// now, so that the caller may retry later: a failed connection (refused, unreachable,
// authentication timed out), a connection lost (reset, closed, cut off in the middle of a
// reply), a timeout, a server shutting down or starting (SQLSTATE 57P01, 57P02, 57P03),
// connection exceptions (class 08), insufficient resources such as too many connections or a
// full disk (class 53), a transaction still conflicting after its retries (40001, 40P01), or a
// pool already closed (the process is shutting down). Any other error the server reports (a
// constraint, a syntax error: a bug) is not.
func Unavailable(err error) bool {
	if err == nil {
		return false
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) || pgconn.Timeout(err) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case strings.HasPrefix(pe.Code, "08"), strings.HasPrefix(pe.Code, "53"),
			pe.Code == "57P01", pe.Code == "57P02", pe.Code == "57P03", pe.Code == "40001", pe.Code == "40P01":
			return true
		}
		return false
	}
	if pgconn.SafeToRetry(err) || errors.Is(err, pgconn.ErrConnClosed) {
		return true
	}
	// The connection went away in the middle of a statement: the server died or the network
	// cut it. (A statement's own context ending is the caller's error, not the database's.)
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed) {
		return true
	}
	// pgxpool reports a closed pool with its pool library's unexported-to-us error.
	return strings.Contains(err.Error(), "closed pool")
}

// HasNUL reports whether any of ss holds a NUL byte, which PostgreSQL text cannot store.
func HasNUL(ss ...string) bool {
	for _, s := range ss {
		if strings.IndexByte(s, 0) >= 0 {
			return true
		}
	}
	return false
}
