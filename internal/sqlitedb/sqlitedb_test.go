package sqlitedb

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
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

func TestUpdateGroupCommit(t *testing.T) {
	t.Parallel()
	for _, opts := range []Options{{}, {NoGroupCommit: true}} {
		t.Run(fmt.Sprintf("NoGroupCommit=%v", opts.NoGroupCommit), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db, err := OpenWith(ctx, filepath.Join(t.TempDir(), "x.db"), []string{
				`CREATE TABLE t (k INTEGER PRIMARY KEY, v INTEGER NOT NULL CHECK (v >= 0))`,
			}, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			// 200 concurrent updates; every third one fails after writing, and must leave
			// nothing behind while the others in its batch commit.
			const n = 200
			errBoom := errors.New("boom")
			var wg sync.WaitGroup
			errs := make([]error, n)
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs[i] = db.Update(ctx, func(ctx context.Context, tx *Tx) error {
						if _, err := tx.ExecContext(ctx, `INSERT INTO t VALUES (?, ?)`, i, i); err != nil {
							return err
						}
						if i%3 == 0 {
							return errBoom
						}
						return nil
					})
				}()
			}
			wg.Wait()
			want := 0
			for i, err := range errs {
				switch {
				case i%3 == 0 && !errors.Is(err, errBoom):
					t.Errorf("update %d: %v, want boom", i, err)
				case i%3 != 0 && err != nil:
					t.Errorf("update %d: %v", i, err)
				case i%3 != 0:
					want++
				}
			}
			var got int
			var bad int
			db.Read.QueryRowContext(ctx, `SELECT count(*), count(*) FILTER (WHERE k % 3 = 0) FROM t`).Scan(&got, &bad)
			if got != want || bad != 0 {
				t.Errorf("rows %d (of failed updates %d), want %d and 0", got, bad, want)
			}
			// A constraint failure inside a batch is that update's error alone.
			err = db.Update(ctx, func(ctx context.Context, tx *Tx) error {
				_, err := tx.ExecContext(ctx, `INSERT INTO t VALUES (1000, -1)`)
				return err
			})
			if err == nil {
				t.Error("CHECK violation committed")
			}
			// A cancelled caller writes nothing.
			cctx, cancel := context.WithCancel(ctx)
			cancel()
			if err := db.Update(cctx, func(ctx context.Context, tx *Tx) error {
				_, err := tx.ExecContext(ctx, `INSERT INTO t VALUES (2000, 1)`)
				return err
			}); !errors.Is(err, context.Canceled) {
				t.Errorf("cancelled update: %v", err)
			}
			db.Close()
			if err := db.Update(ctx, func(context.Context, *Tx) error { return nil }); !errors.Is(err, ErrClosed) {
				t.Errorf("update after close: %v, want ErrClosed", err)
			}
		})
	}
}

// TestUpdateEarly: UpdateEarly returns fn's result before the update is durable, and durable
// then says whether it committed.
func TestUpdateEarly(t *testing.T) {
	t.Parallel()
	for _, opts := range []Options{{}, {NoGroupCommit: true}} {
		t.Run(fmt.Sprintf("NoGroupCommit=%v", opts.NoGroupCommit), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db, err := OpenWith(ctx, filepath.Join(t.TempDir(), "x.db"), []string{
				`CREATE TABLE t (k INTEGER PRIMARY KEY, v INTEGER NOT NULL)`,
			}, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			const n = 50
			errBoom := errors.New("boom")
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					calls := 0
					durable, err := db.UpdateEarly(ctx, func(ctx context.Context, tx *Tx) error {
						calls++
						if _, err := tx.ExecContext(ctx, `INSERT INTO t VALUES (?, ?)`, i, i); err != nil {
							return err
						}
						if i%5 == 0 {
							return errBoom
						}
						return nil
					})
					if calls != 1 {
						t.Errorf("update %d: fn ran %d times", i, calls)
					}
					if i%5 == 0 {
						if !errors.Is(err, errBoom) || durable != nil {
							t.Errorf("update %d: %v (durable %v); want boom and no durable", i, err, durable != nil)
						}
						return
					}
					if err != nil {
						t.Errorf("update %d: %v", i, err)
						return
					}
					if err := durable(); err != nil {
						t.Errorf("update %d: durable: %v", i, err)
					}
					// Once durable has returned, another connection sees the row.
					var k int
					if err := db.Read.QueryRowContext(ctx, `SELECT k FROM t WHERE k = ?`, i).Scan(&k); err != nil {
						t.Errorf("update %d: row not visible after durable: %v", i, err)
					}
				})
			}
			wg.Wait()
			var got int
			db.Read.QueryRowContext(ctx, `SELECT count(*) FROM t`).Scan(&got)
			if got != n-n/5 {
				t.Errorf("%d rows, want %d", got, n-n/5)
			}

			// fn does not run for a caller already gone.
			cctx, cancel := context.WithCancel(ctx)
			cancel()
			ranFn := false
			durable, err := db.UpdateEarly(cctx, func(context.Context, *Tx) error { ranFn = true; return nil })
			if !errors.Is(err, context.Canceled) || ranFn || durable != nil {
				t.Errorf("cancelled: %v, fn ran %v, durable %v", err, ranFn, durable != nil)
			}
			db.Close()
			if _, err := db.UpdateEarly(ctx, func(context.Context, *Tx) error { return nil }); !errors.Is(err, ErrClosed) {
				t.Errorf("after close: %v, want ErrClosed", err)
			}
		})
	}
}

// TestUpdateEarlyReturnsBeforeCommit holds a shared transaction open behind an UpdateEarly
// and checks that UpdateEarly has returned while its row is not yet committed, and that durable
// waits for the commit.
func TestUpdateEarlyReturnsBeforeCommit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, err := Open(ctx, filepath.Join(t.TempDir(), "x.db"), []string{`CREATE TABLE t (k INTEGER PRIMARY KEY)`})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	queued := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); len(db.updates) != n; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d updates queued, want %d", len(db.updates), n)
			}
		}
	}
	// The writer is busy with first until releaseFirst; meanwhile early and then hold queue up,
	// so that they share the next transaction, early's fn first.
	releaseFirst, releaseHold := make(chan struct{}), make(chan struct{})
	firstRunning := make(chan struct{})
	go db.Update(ctx, func(context.Context, *Tx) error { close(firstRunning); <-releaseFirst; return nil })
	<-firstRunning
	type result struct {
		durable func() error
		err     error
	}
	early := make(chan result, 1)
	go func() {
		d, err := db.UpdateEarly(ctx, func(ctx context.Context, tx *Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO t VALUES (1)`)
			return err
		})
		early <- result{d, err}
	}()
	queued(1)
	held := make(chan error, 1)
	go func() { held <- db.Update(ctx, func(context.Context, *Tx) error { <-releaseHold; return nil }) }()
	queued(2)
	close(releaseFirst)

	var r result
	select {
	case r = <-early:
	case <-time.After(5 * time.Second):
		close(releaseHold)
		t.Fatal("UpdateEarly did not return while the transaction it shares could not commit")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	var n int
	if err := db.Read.QueryRowContext(ctx, `SELECT count(*) FROM t`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("when UpdateEarly returned: %d rows visible (%v), want 0: it waited for the commit", n, err)
	}
	synced := make(chan error, 1)
	go func() { synced <- r.durable() }()
	select {
	case err := <-synced:
		t.Fatalf("durable returned %v before the transaction could commit", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(releaseHold)
	if err := <-synced; err != nil {
		t.Fatal(err)
	}
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	if err := db.Read.QueryRowContext(ctx, `SELECT count(*) FROM t`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("after durable: %d rows (%v), want 1", n, err)
	}
}

func BenchmarkUpdate(b *testing.B) {
	for _, opts := range []Options{{}, {NoGroupCommit: true}} {
		b.Run(fmt.Sprintf("group=%v", !opts.NoGroupCommit), func(b *testing.B) {
			ctx := context.Background()
			db, err := OpenWith(ctx, filepath.Join(b.TempDir(), "x.db"), []string{
				`CREATE TABLE t (k INTEGER PRIMARY KEY AUTOINCREMENT, v INTEGER NOT NULL)`,
			}, opts)
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			b.ReportAllocs()
			b.SetParallelism(32)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := db.Update(ctx, func(ctx context.Context, tx *Tx) error {
						_, err := tx.ExecContext(ctx, `INSERT INTO t (v) VALUES (1)`)
						return err
					}); err != nil {
						b.Error(err)
					}
				}
			})
		})
	}
}

// TestFileModes checks that a store is readable by its owner only whatever the umask and the
// mode of its directory: a new file is created 0600 (and its -wal and -shm files follow it), an
// existing world-readable one is tightened, and a missing directory is created 0700. It changes
// the process's umask, so it does not run in parallel.
func TestFileModes(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	ctx := context.Background()
	migrations := []string{`CREATE TABLE t (k INTEGER PRIMARY KEY)`}
	wantMode := func(t *testing.T, path string, want os.FileMode) {
		t.Helper()
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s has mode %v, want %v", filepath.Base(path), got, want)
		}
	}
	write := func(t *testing.T, db *DB) {
		t.Helper()
		if err := db.Update(ctx, func(ctx context.Context, tx *Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO t DEFAULT VALUES`)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("new file in a 0755 directory", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "x.db")
		db, err := Open(ctx, path, migrations)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		write(t, db)
		for _, p := range []string{path, path + "-wal", path + "-shm"} {
			wantMode(t, p, 0o600)
		}
	})

	t.Run("existing world-readable files", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "x.db")
		db, err := Open(ctx, path, migrations)
		if err != nil {
			t.Fatal(err)
		}
		write(t, db)
		db.Close()
		// As an older paygate (or a copy with cp) would have left them.
		if err := os.Chmod(path, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, suffix := range []string{"-wal", "-shm"} {
			if err := os.WriteFile(path+suffix, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path+suffix, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		db, err = Open(ctx, path, migrations)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		write(t, db)
		var n int
		if err := db.Read.QueryRowContext(ctx, `SELECT count(*) FROM t`).Scan(&n); err != nil || n != 2 {
			t.Fatalf("rows = %d, %v; want the 2 written", n, err)
		}
		for _, p := range []string{path, path + "-wal", path + "-shm"} {
			wantMode(t, p, 0o600)
		}
	})

	t.Run("missing directory", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "data")
		path := filepath.Join(dir, "x.db")
		db, err := Open(ctx, path, migrations)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		wantMode(t, dir, 0o700)
		wantMode(t, path, 0o600)
	})
}
