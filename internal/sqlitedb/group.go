package sqlitedb

import (
	"context"
	"errors"
	"fmt"

	"github.com/paygate/paygate/internal/crashpoint"
)

// ErrClosed is returned by Update after Close.
var ErrClosed = errors.New("sqlitedb: closed")

// maxBatch bounds how many updates share one transaction.
const maxBatch = 512

// update is one caller's unit of work waiting for the writer.
type update struct {
	ctx  context.Context
	fn   func(context.Context, *Tx) error
	ran  func(error) // if set, told fn's result before the transaction commits (UpdateEarly)
	done chan error
}

// Update runs fn in a write transaction and returns once its effects are durable, or with fn's
// error (and none of its effects), or with the commit's error.
//
// Updates from concurrent callers share transactions (group commit): the writer takes every
// update queued while the previous transaction was syncing, runs each inside its own SAVEPOINT
// (an update that fails is rolled back alone), and commits them with one sync. A lone update
// runs at once, so batching adds no latency at low load. fn runs at most once: an update is
// never retried, in a batch or alone. fn must use the tx and the ctx it is given: the ctx
// carries the caller's values but is never cancelled, because interrupting a statement would
// roll back the whole shared transaction. A caller whose ctx ends before its
// update starts gets ctx.Err() and nothing is written.
func (db *DB) Update(ctx context.Context, fn func(ctx context.Context, tx *Tx) error) error {
	return db.update(&update{ctx: ctx, fn: fn})
}

// UpdateEarly is Update that returns as soon as fn has run, before the transaction commits, so
// that the caller can start work that does not depend on the update being durable. It returns
// fn's error (and then none of fn's effects exist), or the error that kept fn from running (ctx
// ended first, the store closed); otherwise durable, which waits for the commit and returns its
// error. Until durable returns nil the caller must not rely on the update: what fn saw is what
// the transaction will commit unless the commit fails, and then none of fn's effects exist.
func (db *DB) UpdateEarly(ctx context.Context, fn func(ctx context.Context, tx *Tx) error) (durable func() error, err error) {
	ran := make(chan error, 1) // fn's result, sent by whoever ran it before the commit
	u := &update{ctx: ctx, fn: fn, ran: func(err error) { ran <- err }}
	if !db.group {
		select {
		case <-db.closing:
			return nil, ErrClosed
		default:
		}
		commitErr := db.runAlone(u)
		return early(ran, commitErr)
	}
	if err := db.enqueue(u); err != nil {
		return nil, err
	}
	select {
	case err := <-ran:
		if err != nil {
			return nil, err
		}
		return func() error { return db.wait(u) }, nil
	case err := <-u.done:
		// Done before ran was seen: fn did not run, or ran and committed while this goroutine
		// was not looking.
		return early(ran, err)
	case <-db.writerDone:
		return early(ran, db.wait(u))
	}
}

// early is UpdateEarly's answer once the update has ended with result: fn's error if fn ran
// and failed, durable returning result if it ran and succeeded, result if it never ran.
func early(ran <-chan error, result error) (func() error, error) {
	select {
	case err := <-ran:
		if err != nil {
			return nil, err
		}
		return func() error { return result }, nil
	default:
		return nil, result
	}
}

func (db *DB) update(u *update) error {
	if !db.group {
		select {
		case <-db.closing:
			return ErrClosed
		default:
		}
		return db.runAlone(u)
	}
	if err := db.enqueue(u); err != nil {
		return err
	}
	return db.wait(u)
}

// enqueue hands u to the writer, unless u's ctx ends or the store closes first.
func (db *DB) enqueue(u *update) error {
	u.done = make(chan error, 1)
	select {
	case db.updates <- u:
		return nil
	case <-u.ctx.Done():
		return u.ctx.Err()
	case <-db.closing:
		return ErrClosed
	}
}

// wait returns the outcome of an enqueued update. It waits even if the update's ctx ends: the
// update may already be committing, and the caller must not believe it failed when it is
// durable. The writer fills done for every update it took before it stops.
func (db *DB) wait(u *update) error {
	select {
	case err := <-u.done:
		return err
	case <-db.writerDone:
		select {
		case err := <-u.done:
			return err
		default:
			return ErrClosed
		}
	}
}

// runAlone is Update without group commit: one transaction, one sync, per update.
func (db *DB) runAlone(u *update) error {
	if err := u.ctx.Err(); err != nil {
		return err
	}
	ctx := context.WithoutCancel(u.ctx)
	stx, err := db.Write.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	tx := &Tx{tx: stx, db: db}
	err = u.fn(ctx, tx)
	if u.ran != nil {
		u.ran(err)
	}
	if err != nil {
		stx.Rollback()
	} else {
		if crashpoint.Enabled {
			crashpoint.Held(u.ctx) // a crash point that needs this write lost holds its commit
		}
		start := db.commits.commitStart()
		if err = stx.Commit(); err == nil {
			db.commits.observeCommit(1, start)
		}
	}
	db.learn(tx.missed)
	return err
}

// writer runs queued updates in shared transactions until Close.
func (db *DB) writer() {
	defer close(db.writerDone)
	batch := make([]*update, 0, maxBatch)
	for {
		select {
		case u := <-db.updates:
			batch = append(batch[:0], u)
		case <-db.closing:
			return
		}
	drain:
		for len(batch) < maxBatch {
			select {
			case u := <-db.updates:
				batch = append(batch, u)
			default:
				break drain
			}
		}
		db.runBatch(batch)
		for i := range batch {
			batch[i] = nil
		}
	}
}

func (db *DB) runBatch(batch []*update) {
	if len(batch) == 1 {
		u := batch[0]
		u.done <- db.runAlone(u)
		return
	}
	results := make([]error, len(batch))
	fail := func(err error) {
		for _, u := range batch {
			u.done <- err
		}
	}
	bg := context.Background()
	stx, err := db.Write.BeginTx(bg, nil)
	if err != nil {
		fail(err)
		return
	}
	tx := &Tx{tx: stx, db: db}
	defer func() { db.learn(tx.missed) }()
	for i, u := range batch {
		if err := u.ctx.Err(); err != nil {
			results[i] = err
			continue
		}
		if _, err := tx.ExecContext(bg, "SAVEPOINT u"); err != nil {
			stx.Rollback()
			fail(fmt.Errorf("sqlitedb: savepoint: %w", err))
			return
		}
		if results[i] = u.fn(context.WithoutCancel(u.ctx), tx); results[i] != nil {
			if _, err := tx.ExecContext(bg, "ROLLBACK TO u"); err != nil {
				stx.Rollback()
				fail(fmt.Errorf("sqlitedb: rollback to savepoint: %w (after %w)", err, results[i]))
				return
			}
		}
		if _, err := tx.ExecContext(bg, "RELEASE u"); err != nil {
			stx.Rollback()
			fail(fmt.Errorf("sqlitedb: release savepoint: %w", err))
			return
		}
		if u.ran != nil {
			u.ran(results[i])
		}
	}
	if crashpoint.Enabled {
		for _, u := range batch {
			crashpoint.Held(u.ctx) // a crash point that needs this write lost holds its commit
		}
	}
	start := db.commits.commitStart()
	commitErr := stx.Commit()
	if commitErr == nil {
		db.commits.observeCommit(len(batch), start)
	}
	for i, u := range batch {
		if results[i] == nil {
			results[i] = commitErr
		}
		u.done <- results[i]
	}
}
