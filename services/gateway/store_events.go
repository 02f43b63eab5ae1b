package gateway

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/paygate/paygate/internal/pgdb"
	"github.com/paygate/paygate/internal/sqlitedb"
)

// The payments' event log (see eventLog): its records, and the parts of both stores that read,
// number and prune it. The appends are in the stores' writes of the changes themselves
// (store_sqlite.go, store_pg.go), in the same transaction or statement.

// eventType is what an event says happened to its payment: "payment.created",
// "payment.succeeded", "payment.failed" or "payment.refunded" (a refund of it succeeded); a
// refund's own are "refund.created", "refund.succeeded" and "refund.failed".
type eventType string

// The event types.
const (
	eventPaymentCreated   eventType = "payment.created"
	eventPaymentSucceeded eventType = "payment.succeeded"
	eventPaymentFailed    eventType = "payment.failed"
	eventPaymentRefunded  eventType = "payment.refunded"
	eventRefundCreated    eventType = "refund.created"
	eventRefundSucceeded  eventType = "refund.succeeded"
	eventRefundFailed     eventType = "refund.failed"
)

// of is t (a payment's created, succeeded or failed) as it is named for p: a refund's own type
// when p is a refund.
func (t eventType) of(p paymentRecord) eventType {
	if !p.isRefund() {
		return t
	}
	return refundEventType(t)
}

// refundEventType is a refund's name for a payment's event type t.
func refundEventType(t eventType) eventType {
	switch t {
	case eventPaymentCreated:
		return eventRefundCreated
	case eventPaymentSucceeded:
		return eventRefundSucceeded
	case eventPaymentFailed:
		return eventRefundFailed
	}
	return t
}

// pgEventType is the SQL expression of t's name for the payments row named alias (see of).
func pgEventType(t eventType, alias string) string {
	return `CASE WHEN ` + alias + `.refund_of = '' THEN '` + string(t) + `' ELSE '` + string(refundEventType(t)) + `' END`
}

// Payment statuses in an event's snapshot.
const (
	eventStatusProcessing = "processing"
	eventStatusSucceeded  = "succeeded"
	eventStatusFailed     = "failed"
)

// eventSequenceBatch is the most events one SequenceEvents numbers.
const eventSequenceBatch = 10000

// eventRecord is one event of the log.
type eventRecord struct {
	// Seq numbers the events: it only grows, and is never reused.
	Seq       int64
	Type      eventType
	PaymentID string
	// Payer is the payment's username; Payee the username the payment's to-account was
	// linked to when the event was written ("" if none).
	Payer, Payee string
	// CreatedAt is when the event was written, by the store's clock.
	CreatedAt time.Time
	// Payment is the payment as of the change.
	Payment eventSnapshot
}

// eventSnapshot is a payment as of one of its changes, stored with the event as JSON: what a
// consumer needs without reading the payment. For an adoption (created, then failed, in one
// write) both events hold the payment as adopted: failed.
type eventSnapshot struct {
	From        string `json:"from"`
	To          string `json:"to"`
	Amount      int64  `json:"amount"`
	Currency    string `json:"currency"`
	Description string `json:"description"`
	// CreatedAt is the payment's admission time in unix nanoseconds.
	CreatedAt int64 `json:"created_at"`
	// Status is eventStatusProcessing, eventStatusSucceeded or eventStatusFailed.
	Status         string `json:"status"`
	FailureReason  int32  `json:"failure_reason"`
	FailureMessage string `json:"failure_message"`
	Presumed       bool   `json:"presumed"`
	// DecidedAt is the decision's time in unix nanoseconds (0 while undecided).
	DecidedAt int64   `json:"decided_at"`
	DecidedBy decider `json:"decided_by"`
	// RefundedAmount is how much of Amount succeeded refunds gave back.
	RefundedAmount int64 `json:"refunded_amount"`
	// RefundOf is, on a refund, the payment_id of the payment it refunds.
	RefundOf string `json:"refund_of,omitempty"`
}

// Decided is the snapshot's decision time, zero while undecided.
func (s eventSnapshot) Decided() time.Time {
	if s.DecidedAt == 0 {
		return time.Time{}
	}
	return time.Unix(0, s.DecidedAt)
}

// eventColumns are the columns of events that scanEvent reads, in its order (both stores).
const eventColumns = `seq, type, payment_id, payer, payee, created_at, snapshot`

// scanEvent scans a row of eventColumns.
func scanEvent(row interface{ Scan(...any) error }) (eventRecord, error) {
	var e eventRecord
	var created int64
	var snapshot []byte
	if err := row.Scan(&e.Seq, &e.Type, &e.PaymentID, &e.Payer, &e.Payee, &created, &snapshot); err != nil {
		return e, err
	}
	e.CreatedAt = time.Unix(0, created)
	if err := json.Unmarshal(snapshot, &e.Payment); err != nil {
		return e, fmt.Errorf("event %d: snapshot: %w", e.Seq, err)
	}
	return e, nil
}

// ---- SQLite

// sqliteEventSnapshot is the snapshot (eventSnapshot's JSON) of the payments row p.
const sqliteEventSnapshot = `json_object('from', p.from_account, 'to', p.to_account, 'amount', p.amount,
	'currency', p.currency, 'description', p.description,
	'status', CASE p.decision WHEN 0 THEN '` + eventStatusProcessing + `' WHEN 1 THEN '` + eventStatusSucceeded + `' ELSE '` + eventStatusFailed + `' END,
	'failure_reason', p.failure_reason, 'failure_message', p.failure_message,
	'presumed', json(CASE WHEN p.presumed THEN 'true' ELSE 'false' END),
	'decided_at', coalesce(p.decided_at, 0), 'decided_by', p.decided_by, 'refunded_amount', p.refunded,
	'refund_of', p.refund_of, 'created_at', p.created_at)`

// sqliteAppendEvents appends an event of each of types (in order) for payment id, as its row
// is in tx now, with the payee read from the account links in the same transaction, and
// returns the last one's seq (for appendedUpTo once tx has committed).
func sqliteAppendEvents(ctx context.Context, tx *sqlitedb.Tx, id string, types ...eventType) (last int64, err error) {
	for _, typ := range types {
		// seq is one more than the largest (see the migration): never reused.
		res, err := tx.ExecContext(ctx,
			`INSERT INTO events (type, payment_id, payer, payee, created_at, snapshot)
			 SELECT ?1, p.payment_id, p.username,
				coalesce((SELECT a.username FROM user_accounts a WHERE a.account_id = p.to_account), ''),
				?2, `+sqliteEventSnapshot+`
			 FROM payments p WHERE p.payment_id = ?3`,
			string(typ), time.Now().UnixNano(), id)
		if err == nil {
			last, err = res.LastInsertId()
		}
		if err != nil {
			return 0, fmt.Errorf("append event %s: %w", typ, err)
		}
	}
	return last, nil
}

// appendedUpTo records that the events up to seq are durable (their transaction committed) and
// tells ListenEvents, without waiting. The store's one writer gives seqs in commit order, so
// the highest seq committed is how far the log is visible: SequenceEvents answers from it
// without a query.
func (s *SQLiteStore) appendedUpTo(seq int64) {
	for {
		last := s.lastSeq.Load()
		if seq <= last || s.lastSeq.CompareAndSwap(last, seq) {
			break
		}
	}
	select {
	case s.appended <- struct{}{}:
	default:
	}
}

// Events implements eventLog.
func (s *SQLiteStore) Events(ctx context.Context, username string, after int64, limit int) ([]eventRecord, error) {
	rows, err := s.db.Read.QueryContext(ctx,
		`SELECT `+eventColumns+` FROM events WHERE seq > ?1 AND (payer = ?2 OR payee = ?2) ORDER BY seq LIMIT ?3`,
		after, username, limit)
	out, err := sqliteEvents(rows, err)
	if err != nil {
		return nil, fmt.Errorf("gateway: list events of %s: %w", username, err)
	}
	return out, nil
}

// EventsAfter implements eventLog.
func (s *SQLiteStore) EventsAfter(ctx context.Context, after int64, limit int) ([]eventRecord, error) {
	rows, err := s.db.Read.QueryContext(ctx,
		`SELECT `+eventColumns+` FROM events WHERE seq > ? ORDER BY seq LIMIT ?`, after, limit)
	out, err := sqliteEvents(rows, err)
	if err != nil {
		return nil, fmt.Errorf("gateway: list events: %w", err)
	}
	return out, nil
}

// sqliteEvents scans rows of eventColumns, and closes them.
func sqliteEvents(rows *sql.Rows, err error) ([]eventRecord, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []eventRecord
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// LastEventSeq implements eventLog: the newest event's seq (PruneEvents keeps it).
func (s *SQLiteStore) LastEventSeq(ctx context.Context) (int64, error) {
	var last int64
	err := s.db.Read.QueryRowContext(ctx, `SELECT coalesce(max(seq), 0) FROM events`).Scan(&last)
	if err != nil {
		return 0, fmt.Errorf("gateway: last event seq: %w", err)
	}
	return last, nil
}

// PruneEvents implements eventLog. Keeping the newest event is what keeps its seq from being
// given again (see the migration).
func (s *SQLiteStore) PruneEvents(ctx context.Context, before time.Time, keepFrom int64) (int64, error) {
	var n int64
	err := s.db.Update(ctx, func(ctx context.Context, tx *sqlitedb.Tx) error {
		res, err := tx.ExecContext(ctx,
			`DELETE FROM events WHERE seq < min(?1, (SELECT max(seq) FROM events)) AND created_at < ?2`,
			keepFrom, before.UnixNano())
		if err == nil {
			n, err = res.RowsAffected()
		}
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("gateway: prune events: %w", err)
	}
	return n, nil
}

// SequenceEvents implements eventLog: the one writer numbers events as it writes them, in the
// order it commits them, so there is nothing to number; the last seq is the highest committed
// (appendedUpTo).
func (s *SQLiteStore) SequenceEvents(context.Context) (int, int64, error) {
	return 0, s.lastSeq.Load(), nil
}

// ListenEvents implements eventLog: no other process writes the store.
func (s *SQLiteStore) ListenEvents(ctx context.Context, appended func(), _ func(int64)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.appended:
			appended()
		}
	}
}

// ---- PostgreSQL

// pgEventsChannel is the channel SequenceEvents announces the last seq on.
const pgEventsChannel = "paygate_events"

// pgEventSeqLockClass is the first key of the transaction advisory lock SequenceEvents holds,
// so that replicas number events one run after the other.
const pgEventSeqLockClass int32 = 0x70676503

// pgEventSnapshot is the snapshot (eventSnapshot's JSON) of the payments row named alias.
func pgEventSnapshot(alias string) string {
	return `jsonb_build_object('from', ` + alias + `.from_account, 'to', ` + alias + `.to_account,
		'amount', ` + alias + `.amount, 'currency', ` + alias + `.currency, 'description', ` + alias + `.description,
		'status', CASE ` + alias + `.decision WHEN 0 THEN '` + eventStatusProcessing + `' WHEN 1 THEN '` + eventStatusSucceeded + `' ELSE '` + eventStatusFailed + `' END,
		'failure_reason', ` + alias + `.failure_reason, 'failure_message', ` + alias + `.failure_message,
		'presumed', ` + alias + `.presumed, 'decided_at', coalesce(` + alias + `.decided_at, 0),
		'decided_by', ` + alias + `.decided_by, 'refunded_amount', ` + alias + `.refunded,
		'refund_of', ` + alias + `.refund_of, 'created_at', ` + alias + `.created_at)`
}

// pgEventPayee is the username the to-account of the payments row named alias is linked to,
// or the empty string.
func pgEventPayee(alias string) string {
	return `coalesce((SELECT a.username FROM user_accounts a WHERE a.account_id = ` + alias + `.to_account), '')`
}

// pgSequenceEvents numbers up to $1 events without a seq, in the order of their insertion
// ids, from the counter, and returns how many it numbered and the last seq (announcing it
// when it numbered any). It runs after the advisory lock was taken, in a statement of its
// own: its snapshot is taken once the previous run has committed, so it never numbers a row
// again, and every row it sees is committed (an event's writer commits before its row is
// visible). When there is nothing to number it writes nothing.
const pgSequenceEvents = `WITH todo AS (
		SELECT id, row_number() OVER (ORDER BY id) AS n FROM events WHERE seq IS NULL ORDER BY id LIMIT $1
	), k AS (
		SELECT count(*) AS n FROM todo
	), c AS (
		UPDATE event_counter SET last = last + k.n FROM k WHERE k.n > 0 RETURNING last, k.n
	), u AS (
		UPDATE events e SET seq = c.last - c.n + todo.n FROM todo, c WHERE e.id = todo.id AND e.seq IS NULL
		RETURNING e.seq
	)
	SELECT (SELECT count(*) FROM u), coalesce((SELECT last FROM c), (SELECT last FROM event_counter)),
		(SELECT pg_notify('` + pgEventsChannel + `', last::text) FROM c) IS NULL`

// kickEvents tells ListenEvents that events this process appended have committed (without
// waiting).
func (s *PGStore) kickEvents() {
	select {
	case s.appended <- struct{}{}:
	default:
	}
}

// SequenceEvents implements eventLog. Events are inserted without a seq, with an insertion id
// (events.id) taken at insert, whose order is not the commit order: a reader paging by seq
// could otherwise see id 7 before id 6 commits and never look back. Here, one run at a time on
// all the replicas (a transaction advisory lock), the committed rows without a seq are given
// the next seqs, in id order, and committed at once: what a reader sees is always a prefix of
// the seqs, and a row that commits after a run's snapshot gets a seq from a later run, higher
// than any given before. The run is one round trip: BEGIN, the lock, the numbering and COMMIT
// go as one batch (each statement of it takes its own snapshot, READ COMMITTED, so the
// numbering's is taken after the lock).
func (s *PGStore) SequenceEvents(ctx context.Context) (int, int64, error) {
	b := &pgx.Batch{}
	b.Queue(`BEGIN`)
	b.Queue(`SELECT pg_advisory_xact_lock($1, 0)`, pgEventSeqLockClass)
	var assigned int
	var last int64
	b.Queue(pgSequenceEvents, eventSequenceBatch).QueryRow(func(row pgx.Row) error {
		var quiet bool
		return row.Scan(&assigned, &last, &quiet)
	})
	b.Queue(`COMMIT`)
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		// A failed batch leaves its connection in a transaction: the pool discards it.
		return 0, 0, fmt.Errorf("gateway: sequence events: %w", err)
	}
	return assigned, last, nil
}

// Events implements eventLog.
func (s *PGStore) Events(ctx context.Context, username string, after int64, limit int) ([]eventRecord, error) {
	if unstorable(username) {
		return nil, nil
	}
	out, err := pgEvents(s.pool.Query(ctx,
		`SELECT `+eventColumns+` FROM events WHERE seq > $1 AND (payer = $2 OR payee = $2) ORDER BY seq LIMIT $3`,
		after, username, pgLimit(limit)))
	if err != nil {
		return nil, fmt.Errorf("gateway: list events of %s: %w", username, err)
	}
	return out, nil
}

// EventsAfter implements eventLog.
func (s *PGStore) EventsAfter(ctx context.Context, after int64, limit int) ([]eventRecord, error) {
	out, err := pgEvents(s.pool.Query(ctx,
		`SELECT `+eventColumns+` FROM events WHERE seq > $1 ORDER BY seq LIMIT $2`, after, pgLimit(limit)))
	if err != nil {
		return nil, fmt.Errorf("gateway: list events: %w", err)
	}
	return out, nil
}

// pgEvents scans rows of eventColumns, and closes them.
func pgEvents(rows pgx.Rows, err error) ([]eventRecord, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []eventRecord
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// LastEventSeq implements eventLog: the counter SequenceEvents numbers from.
func (s *PGStore) LastEventSeq(ctx context.Context) (int64, error) {
	var last int64
	if err := s.pool.QueryRow(ctx, `SELECT last FROM event_counter`).Scan(&last); err != nil {
		return 0, fmt.Errorf("gateway: last event seq: %w", err)
	}
	return last, nil
}

// PruneEvents implements eventLog; before is compared with created_at, the database's clock.
// (The counter keeps seqs from being given twice; the newest event is kept as on SQLite.)
func (s *PGStore) PruneEvents(ctx context.Context, before time.Time, keepFrom int64) (int64, error) {
	var n int64
	err := pgdb.Statements(ctx, s.pool, func(ctx context.Context, q pgdb.Querier) error {
		tag, err := q.Exec(ctx, `DELETE FROM events WHERE seq < least($1, (SELECT max(seq) FROM events)) AND created_at < $2`,
			keepFrom, before.UnixNano())
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("gateway: prune events: %w", err)
	}
	return n, nil
}

// ListenEvents implements eventLog: appended after this process's appends commit (announce),
// sequenced with the seqs SequenceEvents announces on pgEventsChannel, heard on a connection
// of its own, reconnected with backoff when lost (announcements sent meanwhile are lost).
func (s *PGStore) ListenEvents(ctx context.Context, appended func(), sequenced func(last int64)) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.listenChannel(ctx, pgEventsChannel, func(payload string) {
			if last, err := strconv.ParseInt(payload, 10, 64); err == nil {
				sequenced(last)
			}
		})
	}()
	defer func() { <-done }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.appended:
			appended()
		}
	}
}

// listenChannel calls heard with every notification's payload on channel until ctx ends,
// reconnecting with backoff (as Listen does).
func (s *PGStore) listenChannel(ctx context.Context, channel string, heard func(payload string)) {
	cfg := s.pool.Config().ConnConfig
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := func() error {
			conn, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				return err
			}
			defer conn.Close(context.WithoutCancel(ctx))
			if _, err := conn.Exec(ctx, `LISTEN `+channel); err != nil {
				return err
			}
			backoff = 100 * time.Millisecond
			for {
				n, err := conn.WaitForNotification(ctx)
				if err != nil {
					return err
				}
				heard(n.Payload)
			}
		}()
		if ctx.Err() != nil || errors.Is(err, context.Canceled) {
			return
		}
		s.logger.LogAttrs(ctx, slog.LevelWarn, "store notifications: connection lost; reconnecting",
			slog.String("channel", channel), slog.String("error", err.Error()), slog.Duration("backoff", backoff))
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}
