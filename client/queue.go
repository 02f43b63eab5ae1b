package client

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/protobuf/proto"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/internal/payid"
	"github.com/paygate/paygate/internal/sqlitedb"
)

// QueueFile and LockFile are the names of the queue's files in its directory.
const (
	QueueFile = "queue.db"
	LockFile  = "sender.lock"
)

// keepDone is how many settled payments the queue keeps for `paygate queue` to show; older
// ones are deleted (the gateway keeps every payment: see History).
const keepDone = 1000

var queueMigrations = []string{`
CREATE TABLE payments (
	seq             INTEGER PRIMARY KEY AUTOINCREMENT,
	payment_id      TEXT NOT NULL UNIQUE,
	username        TEXT NOT NULL,
	from_account    TEXT NOT NULL,
	to_account      TEXT NOT NULL,
	amount          INTEGER NOT NULL,
	currency        TEXT NOT NULL,
	description     TEXT NOT NULL,
	status          TEXT NOT NULL,              -- queued | succeeded | failed
	attempts        INTEGER NOT NULL DEFAULT 0,
	next_attempt_ns INTEGER NOT NULL DEFAULT 0,
	last_error      TEXT NOT NULL DEFAULT '',
	reason          TEXT NOT NULL DEFAULT '',
	message         TEXT NOT NULL DEFAULT '',
	replayed        INTEGER NOT NULL DEFAULT 0,
	payment         BLOB,
	created_ns      INTEGER NOT NULL,
	done_ns         INTEGER NOT NULL DEFAULT 0,
	reported        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX payments_by_status ON payments(status, seq);
`}

// Queue is the durable offline queue: a write-ahead log of the user's payments. A payment is
// recorded before its first attempt and its outcome is recorded when it has one, so a payment
// survives the process being killed at any moment and is sent again, with the same id, by the
// next sender.
//
// The queue is one SQLite file (WAL, synchronous=FULL: a recorded payment is on disk before Pay
// goes on) that several processes may open at once; only the process holding the directory's
// lock file sends.
type Queue struct {
	db   *sqlitedb.DB
	dir  string
	lock *os.File
}

// QueuedPayment is a payment in the queue.
type QueuedPayment struct {
	Seq      int64
	Username string
	Request  PaymentRequest
	// Status is StatusQueued until the payment has an outcome.
	Status   Status
	Attempts int
	// NextAttempt is when the sender tries again, for a queued payment that failed ambiguously.
	NextAttempt time.Time
	// LastError is why the last attempt did not settle the payment.
	LastError string
	Created   time.Time
	// Result is the outcome of a settled payment.
	Result Result
	// Reported says whether the outcome was handed to the user (a Pay call, WithOutcomes, or
	// MarkReported).
	Reported bool
}

// OpenQueue opens (creating) the queue in dir. Client.New calls it for WithQueue; programs
// that only look at the queue may call it directly.
func OpenQueue(dir string) (*Queue, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("client: queue: %w", err)
	}
	db, err := sqlitedb.Open(context.Background(), filepath.Join(dir, QueueFile), queueMigrations)
	if err != nil {
		return nil, fmt.Errorf("client: queue: %w", err)
	}
	return &Queue{db: db, dir: dir}, nil
}

// Dir returns the queue's directory.
func (q *Queue) Dir() string { return q.dir }

// Close releases the sender lock if held and closes the database.
func (q *Queue) Close() error {
	q.releaseLock()
	return q.db.Close()
}

// tryLock takes the directory's sender lock if no other process holds it.
func (q *Queue) tryLock() (bool, error) {
	if q.lock != nil {
		return true, nil
	}
	f, err := os.OpenFile(filepath.Join(q.dir, LockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return false, err
	}
	ok, err := tryLock(f)
	if !ok || err != nil {
		f.Close()
		return false, err
	}
	q.lock = f
	return true, nil
}

func (q *Queue) releaseLock() {
	if q.lock != nil {
		unlock(q.lock)
		q.lock.Close()
		q.lock = nil
	}
}

// add records a new payment durably. A payment id already in the queue is refused.
func (q *Queue) add(ctx context.Context, username string, r PaymentRequest, now time.Time) error {
	_, err := q.db.Write.ExecContext(ctx, `INSERT INTO payments
		(payment_id, username, from_account, to_account, amount, currency, description, status, created_ns)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.ID, username, r.From, r.To, r.Amount, r.Currency, r.Description, string(StatusQueued), now.UnixNano())
	if err != nil {
		return fmt.Errorf("client: queue payment %s: %w", r.ID, err)
	}
	return nil
}

// noteAttempt records that attempt number n of id is about to be made.
func (q *Queue) noteAttempt(ctx context.Context, id string, n int) error {
	_, err := q.db.Write.ExecContext(ctx, `UPDATE payments SET attempts = ? WHERE payment_id = ? AND status = ?`, n, id, string(StatusQueued))
	return err
}

// retryLater records why id is still queued and when to try again.
func (q *Queue) retryLater(ctx context.Context, id string, at time.Time, why string) error {
	_, err := q.db.Write.ExecContext(ctx, `UPDATE payments SET next_attempt_ns = ?, last_error = ? WHERE payment_id = ? AND status = ?`,
		at.UnixNano(), why, id, string(StatusQueued))
	return err
}

// settle records the outcome of id. It reports false when id was settled already.
func (q *Queue) settle(ctx context.Context, r Result, reported bool, now time.Time) (bool, error) {
	var blob []byte
	if r.Payment != nil {
		var err error
		if blob, err = proto.Marshal(r.Payment); err != nil {
			return false, err
		}
	}
	res, err := q.db.Write.ExecContext(ctx, `UPDATE payments SET status = ?, reason = ?, message = ?, replayed = ?,
		payment = ?, attempts = ?, done_ns = ?, reported = ?, last_error = '' WHERE payment_id = ? AND status = ?`,
		string(r.Status), r.Reason, r.Message, r.Replayed, blob, r.Attempts, now.UnixNano(), reported, r.ID, string(StatusQueued))
	if err != nil {
		return false, fmt.Errorf("client: record outcome of %s: %w", r.ID, err)
	}
	n, _ := res.RowsAffected()
	if n == 1 {
		q.prune(ctx)
	}
	return n == 1, nil
}

func (q *Queue) prune(ctx context.Context) {
	q.db.Write.ExecContext(ctx, `DELETE FROM payments WHERE status != ? AND reported = 1 AND seq <= (
		SELECT seq FROM payments WHERE status != ? ORDER BY seq DESC LIMIT 1 OFFSET ?)`,
		string(StatusQueued), string(StatusQueued), keepDone)
}

const selectColumns = `seq, payment_id, username, from_account, to_account, amount, currency, description, status,
	attempts, next_attempt_ns, last_error, reason, message, replayed, payment, created_ns, done_ns, reported`

func scanQueued(rows *sql.Rows) (QueuedPayment, error) {
	var (
		p                        QueuedPayment
		status                   string
		next, created, done      int64
		replayed, reported       bool
		blob                     []byte
		reason, message, lastErr string
	)
	err := rows.Scan(&p.Seq, &p.Request.ID, &p.Username, &p.Request.From, &p.Request.To, &p.Request.Amount,
		&p.Request.Currency, &p.Request.Description, &status, &p.Attempts, &next, &lastErr, &reason, &message,
		&replayed, &blob, &created, &done, &reported)
	if err != nil {
		return p, err
	}
	p.Status = Status(status)
	p.LastError = lastErr
	p.Created = time.Unix(0, created)
	if next != 0 {
		p.NextAttempt = time.Unix(0, next)
	}
	p.Reported = reported
	p.Result = Result{ID: p.Request.ID, Request: p.Request, Status: p.Status, Reason: reason, Message: message,
		Replayed: replayed, Attempts: p.Attempts}
	if p.Status == StatusQueued {
		p.Result.Reason, p.Result.Message = "", lastErr
	}
	if len(blob) > 0 {
		pay := &gatewayv1.Payment{}
		if proto.Unmarshal(blob, pay) == nil {
			p.Result.Payment = pay
		}
	}
	return p, nil
}

func (q *Queue) query(ctx context.Context, query string, args ...any) ([]QueuedPayment, error) {
	rows, err := q.db.Read.QueryContext(ctx, `SELECT `+selectColumns+` FROM payments `+query, args...)
	if err != nil {
		return nil, fmt.Errorf("client: queue: %w", err)
	}
	defer rows.Close()
	var out []QueuedPayment
	for rows.Next() {
		p, err := scanQueued(rows)
		if err != nil {
			return nil, fmt.Errorf("client: queue: %w", err)
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// Pending returns the payments waiting to be sent, oldest first.
func (q *Queue) Pending(ctx context.Context) ([]QueuedPayment, error) {
	return q.query(ctx, `WHERE status = ? ORDER BY seq`, string(StatusQueued))
}

// Recent returns up to n settled payments, most recently queued first.
func (q *Queue) Recent(ctx context.Context, n int) ([]QueuedPayment, error) {
	return q.query(ctx, `WHERE status != ? ORDER BY seq DESC LIMIT ?`, string(StatusQueued), n)
}

// Unreported returns the settled payments whose outcome nobody has been told yet, oldest
// first.
func (q *Queue) Unreported(ctx context.Context) ([]QueuedPayment, error) {
	return q.query(ctx, `WHERE status != ? AND reported = 0 ORDER BY seq`, string(StatusQueued))
}

// Get returns the queued or settled payment id.
func (q *Queue) Get(ctx context.Context, id string) (QueuedPayment, error) {
	list, err := q.query(ctx, `WHERE payment_id = ?`, payid.Normalize(id))
	if err != nil {
		return QueuedPayment{}, err
	}
	if len(list) == 0 {
		return QueuedPayment{}, fmt.Errorf("client: queue: no payment %s: %w", id, sql.ErrNoRows)
	}
	return list[0], nil
}

// MarkReported records that the outcomes of ids were shown to the user.
func (q *Queue) MarkReported(ctx context.Context, ids ...string) error {
	tx, err := q.db.Write.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	for _, id := range ids {
		if _, err := tx.ExecContext(ctx, `UPDATE payments SET reported = 1 WHERE payment_id = ? AND status != ?`, id, string(StatusQueued)); err != nil {
			tx.Rollback()
			return err
		}
	}
	return tx.Commit()
}

// QueueStats counts the payments in the queue.
type QueueStats struct {
	Queued    int `json:"queued"`
	Succeeded int `json:"succeeded"`
	Failed    int `json:"failed"`
}

// Stats counts the queue's payments by status.
func (q *Queue) Stats(ctx context.Context) (QueueStats, error) {
	rows, err := q.db.Read.QueryContext(ctx, `SELECT status, count(*) FROM payments GROUP BY status`)
	if err != nil {
		return QueueStats{}, err
	}
	defer rows.Close()
	var s QueueStats
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return s, err
		}
		switch Status(st) {
		case StatusQueued:
			s.Queued = n
		case StatusSucceeded:
			s.Succeeded = n
		case StatusFailed:
			s.Failed = n
		}
	}
	return s, rows.Err()
}
