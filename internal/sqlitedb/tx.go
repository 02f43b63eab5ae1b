package sqlitedb

import (
	"context"
	"database/sql"
	"sync"
)

// maxCachedStatements bounds the prepared-statement cache of the writer.
const maxCachedStatements = 256

// Tx is a write transaction run by Update. Its ExecContext, QueryContext and QueryRowContext
// run statements the writer has prepared before, so that the statements a store repeats on
// every write are parsed once, not on every call. A statement seen for the first time runs as
// usual and is prepared for next time once the transaction has ended.
type Tx struct {
	*sql.Tx
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
	return t.Tx.StmtContext(ctx, st)
}

// ExecContext runs query in the transaction.
func (t *Tx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := t.stmt(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return t.Tx.ExecContext(ctx, query, args...)
}

// QueryContext runs query in the transaction.
func (t *Tx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := t.stmt(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return t.Tx.QueryContext(ctx, query, args...)
}

// QueryRowContext runs query in the transaction.
func (t *Tx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := t.stmt(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return t.Tx.QueryRowContext(ctx, query, args...)
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
