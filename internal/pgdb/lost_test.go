package pgdb_test

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/paygate/paygate/internal/faultproxy"
	"github.com/paygate/paygate/internal/pgdb"
	"github.com/paygate/paygate/internal/pgdb/pgtest"
)

// TestUnavailableLostConnection: a connection cut in the middle of a statement (FIN or RST),
// a backend terminated by the server, and a pool already closed are all unavailable.
func TestUnavailableLostConnection(t *testing.T) {
	dbURL := pgtest.NewDatabase(t, "pgdb_test_")
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []faultproxy.Mode{faultproxy.Drop, faultproxy.Reset} {
		t.Run(mode.String(), func(t *testing.T) {
			p, err := faultproxy.New(u.Host)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			pu := *u
			pu.Host = p.Addr()
			pool, err := pgxpool.New(context.Background(), pu.String())
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := pool.Exec(ctx, `SELECT 1`); err != nil {
				t.Fatal(err)
			}
			time.AfterFunc(200*time.Millisecond, func() { p.SetMode(mode, 0) })
			err = pgdb.Write(ctx, pool, func(ctx context.Context, tx pgx.Tx) error {
				_, err := tx.Exec(ctx, `SELECT pg_sleep(2)`)
				return err
			})
			if err == nil || !pgdb.Unavailable(err) {
				t.Fatalf("write cut by %v: %v (%T); want an unavailable error", mode, err, err)
			}
			if _, err := pool.Exec(ctx, `SELECT 1`); err == nil || !pgdb.Unavailable(err) {
				t.Fatalf("query while the proxy is in %v: %v (%T); want an unavailable error", mode, err, err)
			}
		})
	}
	t.Run("terminated", func(t *testing.T) {
		pool, err := pgxpool.New(context.Background(), dbURL)
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		ctx := context.Background()
		c, err := pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Release()
		var pid int
		if err := c.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
			t.Fatal(err)
		}
		time.AfterFunc(200*time.Millisecond, func() { pool.Exec(ctx, `SELECT pg_terminate_backend($1)`, pid) })
		if _, err := c.Exec(ctx, `SELECT pg_sleep(2)`); err == nil || !pgdb.Unavailable(err) {
			t.Fatalf("terminated backend: %v (%T); want an unavailable error", err, err)
		}
	})
	t.Run("closed pool", func(t *testing.T) {
		pool, err := pgxpool.New(context.Background(), dbURL)
		if err != nil {
			t.Fatal(err)
		}
		pool.Close()
		if _, err := pool.Exec(context.Background(), `SELECT 1`); err == nil || !pgdb.Unavailable(err) {
			t.Fatalf("closed pool: %v (%T); want an unavailable error", err, err)
		}
	})
}
