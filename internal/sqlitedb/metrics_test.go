package sqlitedb

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
)

// recorder is an Observer that keeps what it was given.
type recorder struct {
	mu  sync.Mutex
	obs []float64
}

func (r *recorder) Observe(v float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.obs = append(r.obs, v)
}

func (r *recorder) values() []float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]float64(nil), r.obs...)
}

// TestCommitMetrics checks that every committed transaction is observed once, with the number
// of updates it carried, and that an update that failed alone (rolled back, no commit) is not.
func TestCommitMetrics(t *testing.T) {
	t.Parallel()
	for _, opts := range []Options{{}, {NoGroupCommit: true}} {
		t.Run(fmt.Sprintf("NoGroupCommit=%v", opts.NoGroupCommit), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db, err := OpenWith(ctx, filepath.Join(t.TempDir(), "m.db"), []string{`CREATE TABLE t (k INTEGER PRIMARY KEY)`}, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			// Before metrics are set nothing is observed, and nothing breaks.
			if err := db.Update(ctx, func(ctx context.Context, tx *Tx) error {
				_, err := tx.ExecContext(ctx, `INSERT INTO t VALUES (0)`)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			updates, seconds := &recorder{}, &recorder{}
			db.SetCommitMetrics(&CommitMetrics{Updates: updates, Seconds: seconds})

			errFail := errors.New("fail")
			if err := db.Update(ctx, func(context.Context, *Tx) error { return errFail }); !errors.Is(err, errFail) {
				t.Fatalf("failing update: %v", err)
			}
			if got := updates.values(); len(got) != 0 {
				t.Fatalf("a lone failed update was observed as a commit: %v", got)
			}
			const n = 64
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					if err := db.Update(ctx, func(ctx context.Context, tx *Tx) error {
						_, err := tx.ExecContext(ctx, `INSERT INTO t VALUES (?)`, i+1)
						return err
					}); err != nil {
						t.Errorf("update %d: %v", i, err)
					}
				})
			}
			wg.Wait()
			ups, secs := updates.values(), seconds.values()
			var total float64
			for _, v := range ups {
				if v < 1 {
					t.Errorf("a commit observed with %v updates", v)
				}
				total += v
			}
			if total != n {
				t.Errorf("observed commits carried %v updates, want %d", total, n)
			}
			if len(secs) != len(ups) {
				t.Errorf("%d commit latencies for %d commits", len(secs), len(ups))
			}
			for _, s := range secs {
				if s < 0 {
					t.Errorf("negative commit latency %v", s)
				}
			}
			if opts.NoGroupCommit && len(ups) != n {
				t.Errorf("without group commit: %d commits observed, want %d", len(ups), n)
			}
		})
	}
}

// BenchmarkObserveCommit is what observing a commit adds to it, with and without metrics.
func BenchmarkObserveCommit(b *testing.B) {
	var h commitHook
	b.Run("none", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			h.observeCommit(1, h.commitStart())
		}
	})
	h.m.Store(&CommitMetrics{Updates: nopObserver{}, Seconds: nopObserver{}})
	b.Run("observed", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			h.observeCommit(8, h.commitStart())
		}
	})
}

// nopObserver observes nothing.
type nopObserver struct{}

func (nopObserver) Observe(float64) {}
