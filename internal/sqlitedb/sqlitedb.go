// Package sqlitedb opens the embedded SQLite stores of paygate's services.
//
// Every store is one file in WAL mode with synchronous=FULL: a transaction that has committed is
// on stable storage, so a prepare record or a commit decision survives a crash of the process or
// of the machine. The file is readable by its owner only (mode 0600, whatever the umask and the
// directory's mode), and so are the -wal and -shm files, which SQLite creates with the main
// file's mode. Writes go through a single connection (SQLite allows one writer at a time, and
// queueing in Go is cheaper than retrying on SQLITE_BUSY); reads use a pool and run beside it.
package sqlitedb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// DB is a SQLite store: one writer connection and a pool of readers.
type DB struct {
	// Write has one connection; its transactions start with BEGIN IMMEDIATE. Prefer Update,
	// which shares transactions between concurrent callers.
	Write *sql.DB
	// Read is for queries only.
	Read *sql.DB
	Path string

	stmts      stmtCache
	group      bool
	updates    chan *update
	closing    chan struct{}
	writerDone chan struct{}
	commits    commitHook // SetCommitMetrics
}

// Options tune a DB.
type Options struct {
	// NoGroupCommit makes every Update its own transaction with its own sync. Group commit is
	// on by default; turning it off is for measuring what it buys.
	NoGroupCommit bool
}

// Open opens (creating if needed) the database file at path and applies migrations: each entry of
// migrations is run once, in order, and PRAGMA user_version records how many have run. A missing
// directory is created with mode 0700; the file is created with mode 0600, and an existing one
// (with its -wal and -shm files) is set to 0600.
func Open(ctx context.Context, path string, migrations []string) (*DB, error) {
	return OpenWith(ctx, path, migrations, Options{})
}

// OpenWith is Open with options.
func OpenWith(ctx context.Context, path string, migrations []string, opts Options) (*DB, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("sqlitedb: %w", err)
	}
	if err := ownerOnly(path); err != nil {
		return nil, fmt.Errorf("sqlitedb: %w", err)
	}
	dsn := func(extra string) string {
		q := url.Values{}
		q.Add("_pragma", "journal_mode(WAL)")
		q.Add("_pragma", "synchronous(FULL)")
		q.Add("_pragma", "busy_timeout(10000)")
		q.Add("_pragma", "foreign_keys(ON)")
		q.Set("_txlock", "immediate")
		if extra != "" {
			q.Add("_pragma", extra)
		}
		return "file:" + path + "?" + q.Encode()
	}
	w, err := sql.Open("sqlite", dsn(""))
	if err != nil {
		return nil, fmt.Errorf("sqlitedb: open %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	if err := migrate(ctx, w, migrations); err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlitedb: migrate %s: %w", path, err)
	}
	r, err := sql.Open("sqlite", dsn("query_only(ON)"))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlitedb: open %s: %w", path, err)
	}
	r.SetMaxOpenConns(8)
	db := &DB{Write: w, Read: r, Path: path, group: !opts.NoGroupCommit,
		updates: make(chan *update, maxBatch), closing: make(chan struct{}), writerDone: make(chan struct{})}
	if db.group {
		go db.writer()
	} else {
		close(db.writerDone)
	}
	return db, nil
}

// fileMode is the mode of a database file and of its -wal and -shm files.
const fileMode os.FileMode = 0o600

// ownerOnly makes the database file at path, creating it empty if it is missing, and its -wal
// and -shm files if they exist, readable and writable by their owner only. SQLite creates the
// -wal and -shm files with the mode of the main file, so they are 0600 from then on.
func ownerOnly(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, fileMode)
	if err != nil {
		return err
	}
	err = f.Chmod(fileMode) // an existing file keeps its mode through OpenFile
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		if err := os.Chmod(path+suffix, fileMode); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// Close stops the writer (updates not yet started fail with ErrClosed) and closes both pools.
func (db *DB) Close() error {
	select {
	case <-db.closing:
	default:
		close(db.closing)
	}
	<-db.writerDone
	db.stmts.mu.Lock()
	for _, st := range db.stmts.m {
		st.Close()
	}
	db.stmts.m = nil
	db.stmts.mu.Unlock()
	err := db.Read.Close()
	if werr := db.Write.Close(); err == nil {
		err = werr
	}
	return err
}

func migrate(ctx context.Context, db *sql.DB, migrations []string) error {
	var version int
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return err
	}
	if version > len(migrations) {
		return fmt.Errorf("database schema version %d is newer than this binary's %d", version, len(migrations))
	}
	for i := version; i < len(migrations); i++ {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", i+1)); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}
