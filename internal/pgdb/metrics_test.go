package pgdb_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/paygate/paygate/internal/pgdb"
	"github.com/paygate/paygate/internal/pgdb/pgtest"
)

// recorder is a pgdb.Observer that keeps what it was given.
type recorder struct {
	mu  sync.Mutex
	obs []float64
}

func (r *recorder) Observe(v float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.obs = append(r.obs, v)
}

// TestWriteObservedCommits: each committed write is observed once, as one update; a write
// that fails is rolled back and not observed.
func TestWriteObservedCommits(t *testing.T) {
	pool := open(t, pgtest.NewDatabase(t, "pgdb_test_"))
	ctx := context.Background()
	updates, seconds := &recorder{}, &recorder{}
	m := &pgdb.CommitMetrics{Updates: updates, Seconds: seconds}
	for range 3 {
		if err := pgdb.WriteObserved(ctx, pool, m, func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `UPDATE counters SET n = n + 1 WHERE name = 'a'`)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	boom := errors.New("boom")
	if err := pgdb.WriteObserved(ctx, pool, m, func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE counters SET n = 100`); err != nil {
			return err
		}
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	var a int
	if err := pool.QueryRow(ctx, `SELECT n FROM counters WHERE name = 'a'`).Scan(&a); err != nil || a != 3 {
		t.Fatalf("a = %d, %v; want 3 (the failed write undone)", a, err)
	}
	if len(updates.obs) != 3 || len(seconds.obs) != 3 {
		t.Fatalf("observed %v updates and %v latencies, want 3 of each", updates.obs, seconds.obs)
	}
	for _, v := range updates.obs {
		if v != 1 {
			t.Errorf("a commit observed with %v updates, want 1", v)
		}
	}
	// A nil CommitMetrics observes nothing and writes as Write does.
	if err := pgdb.WriteObserved(ctx, pool, nil, func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `UPDATE counters SET n = n + 1 WHERE name = 'a'`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(updates.obs) != 3 {
		t.Errorf("a write without metrics was observed")
	}
}
