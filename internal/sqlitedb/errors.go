package sqlitedb

import (
	"database/sql"
	"errors"
	"strings"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Unavailable says whether err is a failure of the store that is not a bug and may pass: the
// disk is full, the file cannot be read or written, the database is busy or locked, or the store
// is closed (the process is shutting down). An RPC that meets one answers UNAVAILABLE, for the
// caller to retry later; any other storage error is INTERNAL.
func Unavailable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrClosed) || errors.Is(err, sql.ErrConnDone) || errors.Is(err, sql.ErrTxDone) {
		return true
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff { // the primary result code of an extended one
		case sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED,
			sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PROTOCOL:
			return true
		}
		return false
	}
	// database/sql reports a closed *sql.DB with an unexported error.
	return strings.Contains(err.Error(), "sql: database is closed")
}
