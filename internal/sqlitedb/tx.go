package sqlitedb

import (
	"context"
	"database/sql"
	"sync"
)

// maxCachedStatements bounds the prepared-statement cache of the writer.
const maxCachedStatements = 256

// Tx is what an Update's fn may do in the write transaction it runs in: run statements. With
// group commit the transaction is shared by every update of the batch, so it is the writer's to
// end: Tx has no Commit or Rollback (and no other way to reach the *sql.Tx), and an update that
// must undo its work returns an error: its own effects are undone, and only those.
//
// ExecContext, QueryContext and QueryRowContext run statements the writer has prepared before,
// so that the statements a store repeats on every write are parsed once, not on every call. A
// statement seen for the first time runs as usual and is prepared for next time once the
// transaction has ended.
type Tx struct {
	tx     *sql.Tx
	db     *DB
	missed []string
}

// stmtCache holds the writer connection's prepared statements, by query text.
type stmtCache struct {
	mu sync.RWMutex
	m  map[string]*sql.Stmt
}

func (t *Tx) stmt(ctx context.Context, query string) *sql.Stmt {
	t.db.stmts.mu.RLock()
	st := t.db.stmts.m[query]
	t.db.stmts.mu.RUnlock()
	if st == nil {
		t.missed = append(t.missed, query)
		return nil
	}
	return t.tx.StmtContext(ctx, st)
}

// ExecContext runs query in the transaction.
func (t *Tx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := t.stmt(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return t.tx.ExecContext(ctx, query, args...)
}

// QueryContext runs query in the transaction.
func (t *Tx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := t.stmt(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return t.tx.QueryContext(ctx, query, args...)
}

// QueryRowContext runs query in the transaction.
func (t *Tx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := t.stmt(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return t.tx.QueryRowContext(ctx, query, args...)
}

// PrepareContext prepares query for repeated use within the transaction, e.g. an INSERT run
// once per row of an import. The statement belongs to the transaction: it is closed when the
// transaction ends, or earlier by its Close.
func (t *Tx) PrepareContext(ctx context.Context, query string) (*sql.Stmt, error) {
	return t.tx.PrepareContext(ctx, query)
}

// learn prepares on the writer the statements transactions ran unprepared. It runs when no
// transaction holds the writer connection.
func (db *DB) learn(queries []string) {
	for _, q := range queries {
		db.stmts.mu.RLock()
		_, known := db.stmts.m[q]
		full := len(db.stmts.m) >= maxCachedStatements
		db.stmts.mu.RUnlock()
		if known || full {
			continue
		}
		st, err := db.Write.PrepareContext(context.Background(), q)
		if err != nil {
			continue // it will run unprepared
		}
		db.stmts.mu.Lock()
		if db.stmts.m == nil {
			db.stmts.m = make(map[string]*sql.Stmt)
		}
		if _, known := db.stmts.m[q]; known {
			st.Close()
		} else {
			db.stmts.m[q] = st
		}
		db.stmts.mu.Unlock()
	}
}

// PreparedStatements is the number of statements the writer has prepared (at most
// maxCachedStatements): a store whose statement texts vary with their arguments fills it with
// one-off texts, and statements it meets later run unprepared.
func (db *DB) PreparedStatements() int {
	db.stmts.mu.RLock()
	defer db.stmts.mu.RUnlock()
	return len(db.stmts.m)
}
