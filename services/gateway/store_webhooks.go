package gateway

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/paygate/paygate/internal/sqlitedb"
)

// The webhooks' part of both stores (see webhookStore): endpoints, deliveries and their
// attempts, and the fan-out cursor. The logic is written once, over a small querier that both
// stores provide (whQuerier); the statements are PostgreSQL's ($1 placeholders), which SQLite
// runs as ?1 (its numbered placeholders), with the few differences chosen by whBackend.PG.

// maxWebhookEndpoints is how many endpoints one user may have.
const maxWebhookEndpoints = 16

// Statuses of a webhook delivery, stored as the values of gatewayv1.WebhookDeliveryStatus.
const (
	deliveryPending   int32 = 1
	deliverySucceeded int32 = 2
	deliveryFailed    int32 = 3
)

// Statuses of a webhook endpoint, stored as the values of gatewayv1.WebhookEndpointStatus.
const (
	endpointEnabled  int32 = 1
	endpointDisabled int32 = 2
)

// Reasons an endpoint is disabled (WebhookEndpoint.disabled_reason).
const (
	disabledByUser    = "disabled_by_user"
	disabledByFailing = "failing"
)

// ErrTooManyEndpoints is CreateWebhookEndpoint's refusal of a user's endpoint beyond the limit.
var ErrTooManyEndpoints = errors.New("gateway: too many webhook endpoints for the user")

// webhookStore keeps the webhook endpoints of users, the deliveries of their events to them
// and every attempt. Deliveries are made by fan-out (FanOutWebhooks), which reads the event log
// after a durable cursor and creates, in the same transaction as it advances the cursor, one
// delivery per event and matching endpoint (unique by endpoint and event seq, so that running
// it again creates nothing twice). The deliveries of an endpoint are sent one at a time: a
// worker leases the endpoint (ClaimWebhookDeliveries, an owner and an expiry in the endpoint's
// row) and ends the lease when it records the attempt (RecordWebhookAttempt); a lease whose
// worker died expires, and the delivery is sent again by whoever claims it next. Every read
// and change of one user's endpoint or delivery names the user: another user's is not found.
type webhookStore interface {
	// CreateWebhookEndpoint stores ep, with StartSeq the last event seq now (it receives the
	// events after it), unless ep.Username has max endpoints already (ErrTooManyEndpoints).
	CreateWebhookEndpoint(ctx context.Context, ep webhookEndpoint, max int) (webhookEndpoint, error)
	// WebhookEndpoints returns username's endpoints, oldest first.
	WebhookEndpoints(ctx context.Context, username string) ([]webhookEndpoint, error)
	// WebhookEndpoint returns one of username's endpoints, or ErrNotFound.
	WebhookEndpoint(ctx context.Context, username, id string) (webhookEndpoint, error)
	// UpdateWebhookEndpoint changes one of username's endpoints with fn (its secrets, status
	// and disabled reason) and returns it as stored, or ErrNotFound. An endpoint enabled by fn
	// that was disabled has its pending deliveries made due at now, with a fresh retry
	// period, and its failure count reset.
	UpdateWebhookEndpoint(ctx context.Context, username, id string, now time.Time, fn func(ep *webhookEndpoint) error) (webhookEndpoint, error)
	// DeleteWebhookEndpoint deletes one of username's endpoints with its deliveries and their
	// attempts, or returns ErrNotFound.
	DeleteWebhookEndpoint(ctx context.Context, username, id string) error
	// FanOutWebhooks reads up to limit events after the fan-out cursor, creates a delivery of
	// each for every endpoint of its payer and payee that takes its type and was created
	// before it, due at now, and moves the cursor past them, in one transaction. It returns
	// how many events it read, deliveries it created, and the cursor after. Processes sharing
	// the store take turns.
	FanOutWebhooks(ctx context.Context, limit int, now time.Time) (events, deliveries int, cursor int64, err error)
	// WebhookCursor returns the seq of the last event fanned out.
	WebhookCursor(ctx context.Context) (int64, error)
	// ClaimWebhookDeliveries leases up to limit enabled endpoints that have a delivery due at
	// now and no live lease, to owner until until, and returns each with its delivery due
	// first: a redelivery asked for, or else the pending one of lowest event seq due by
	// next_attempt_time that no older pending delivery of the same endpoint and payment
	// precedes. A user holds at most maxWebhookAttemptsPerUser leases at once: endpoints of a
	// user at that count are passed over, and so are those of a disabled user.
	ClaimWebhookDeliveries(ctx context.Context, owner string, now, until time.Time, limit int) ([]webhookJob, error)
	// RecordWebhookAttempt records the attempt of job's delivery and its outcome, updates
	// the endpoint's failure count (and disables it when res says so) and ends owner's lease
	// of the endpoint. A delivery deleted meanwhile is left deleted.
	RecordWebhookAttempt(ctx context.Context, owner string, job webhookJob, res webhookResult) error
	// ReleaseWebhookLeases ends owner's endpoint leases ("" ends every lease: for a store that
	// one process uses, at its start).
	ReleaseWebhookLeases(ctx context.Context, owner string) error
	// WebhookDeliveries returns deliveries of one of username's endpoints with event seq below
	// before (0: any), newest first, with status when it is not 0, at most limit, each with
	// its attempts; ErrNotFound when the endpoint is not username's.
	WebhookDeliveries(ctx context.Context, username, endpointID string, before int64, status int32, limit int) ([]webhookDelivery, error)
	// WebhookDelivery returns one of username's deliveries with its attempts, or ErrNotFound.
	WebhookDelivery(ctx context.Context, username, id string) (webhookDelivery, error)
	// RequestRedelivery asks for an attempt of one of username's deliveries now, whatever its
	// status, and returns it as stored before, or ErrNotFound.
	RequestRedelivery(ctx context.Context, username, id string) (webhookDelivery, error)
	// WebhookCounts returns how many deliveries are pending and endpoints disabled.
	WebhookCounts(ctx context.Context) (pending, disabled int64, err error)
	// PruneWebhookDeliveries deletes the deliveries that ended (succeeded or failed) before
	// before, with their attempts, and returns how many.
	PruneWebhookDeliveries(ctx context.Context, before time.Time) (int64, error)
}

// webhookEndpoint is an endpoint's row.
type webhookEndpoint struct {
	ID         string
	Username   string
	URL        string
	EventTypes []string
	// Secret signs every request; PreviousSecret too, until PreviousExpiresAt (zero: none).
	Secret            string
	PreviousSecret    string
	PreviousExpiresAt time.Time
	Status            int32
	DisabledReason    string
	CreatedAt         time.Time
	// ConsecutiveFailures counts the failed attempts since the last success, the first of
	// them at FailingSince (zero when none).
	ConsecutiveFailures int
	FailingSince        time.Time
	// StartSeq is the last event seq when the endpoint was created: it receives later ones.
	StartSeq int64
}

// LogValue keeps the secrets out of logs: an endpoint logs as its id, user and URL.
func (ep webhookEndpoint) LogValue() slog.Value {
	return slog.GroupValue(slog.String("id", ep.ID), slog.String("username", ep.Username), slog.String("url", ep.URL))
}

// takes says whether the endpoint receives events of type typ.
func (ep webhookEndpoint) takes(typ string) bool {
	for _, t := range ep.EventTypes {
		if t == "*" || t == typ {
			return true
		}
	}
	return false
}

// secrets returns the secrets to sign with at now: the current one, and the previous one while
// it is valid.
func (ep webhookEndpoint) secrets(now time.Time) []string {
	if ep.PreviousSecret != "" && now.Before(ep.PreviousExpiresAt) {
		return []string{ep.Secret, ep.PreviousSecret}
	}
	return []string{ep.Secret}
}

// webhookDelivery is one event for one endpoint.
type webhookDelivery struct {
	ID         string
	EndpointID string
	EventSeq   int64
	EventType  string
	PaymentID  string
	// Body is the event as the endpoint's user sees it, protojson, built at fan-out.
	Body          []byte
	Status        int32
	NextAttemptAt time.Time
	CreatedAt     time.Time
	// FirstAttemptAt is when the retry period started (zero before the first attempt).
	FirstAttemptAt time.Time
	// Attempts counts the automatic attempts (the retry schedule's); Redeliver the
	// redeliveries asked for and not yet attempted.
	Attempts   int
	Redeliver  int
	FinishedAt time.Time
	// Log is the delivery's attempts, oldest first (read by WebhookDeliveries and
	// WebhookDelivery only).
	Log []webhookAttempt
}

// webhookAttempt is one POST of a delivery.
type webhookAttempt struct {
	At         time.Time
	HTTPStatus int
	Error      string
	Latency    time.Duration
	Manual     bool
}

// webhookJob is a delivery to attempt, with its endpoint as claimed.
type webhookJob struct {
	Endpoint webhookEndpoint
	Delivery webhookDelivery
}

// webhookResult is what RecordWebhookAttempt stores: the attempt and the delivery's state after
// it.
type webhookResult struct {
	Attempt webhookAttempt
	// Status, NextAttemptAt, FirstAttemptAt, Attempts and FinishedAt are the delivery's new
	// values; RedeliverTaken is how many redeliveries the attempt answers (subtracted).
	Status         int32
	NextAttemptAt  time.Time
	FirstAttemptAt time.Time
	Attempts       int
	FinishedAt     time.Time
	RedeliverTaken int
	// Success resets the endpoint's failure count; otherwise it grows. Gone disables the
	// endpoint; so does a failure count that disable approves.
	Success bool
	Gone    bool
	// Disable decides, from the endpoint's failure count and failing-since after this attempt,
	// whether to disable it.
	Disable func(failures int, since time.Time) bool
}

// newWebhookID returns prefix and 26 characters of Crockford base32: 48 bits of milliseconds
// (so that ids sort by creation) and 80 random bits (so that they cannot be guessed).
func newWebhookID(prefix string) string {
	const alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
	var b [26]byte
	ms := uint64(time.Now().UnixMilli())
	for i := 9; i >= 0; i-- {
		b[i] = alphabet[ms&31]
		ms >>= 5
	}
	var r [16]byte
	if _, err := rand.Read(r[:]); err != nil {
		panic(err) // crypto/rand does not fail
	}
	for i := range 16 {
		b[10+i] = alphabet[r[i]&31]
	}
	return prefix + string(b[:])
}

// webhookBody is the body of e's delivery to an endpoint of viewer: the Event as viewer sees
// it (ListEvents'), in protojson.
func webhookBody(e eventRecord, viewer string) ([]byte, error) {
	return protojson.Marshal(eventProto(e, viewer))
}

// nanos is t in unix nanoseconds, 0 for the zero time.
func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// fromNanos is the inverse of nanos.
func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// ---- the querier both stores provide

// whQuerier runs statements, in a transaction or on their own.
type whQuerier interface {
	exec(ctx context.Context, q string, args ...any) (int64, error)
	query(ctx context.Context, q string, args ...any) (whRows, error)
}

// whRows are the rows of a query.
type whRows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close()
}

// whBackend is a store as the webhook code uses it.
type whBackend interface {
	// whWrite runs fn in a write transaction.
	whWrite(ctx context.Context, fn func(ctx context.Context, q whQuerier) error) error
	// whRead is a querier for reads outside transactions.
	whRead() whQuerier
	// whPG says whether the store is PostgreSQL (row locks, the event counter).
	whPG() bool
}

// sqliteQ is a whQuerier of SQLite, in the writer's transaction (tx) or on the read pool.
type sqliteQ struct {
	tx *sqlitedb.Tx
	db *sql.DB
}

// sqliteQuery turns the statements' $N placeholders into SQLite's ?N.
func sqliteQuery(q string) string { return strings.ReplaceAll(q, "$", "?") }

// exec implements whQuerier.
func (s sqliteQ) exec(ctx context.Context, q string, args ...any) (int64, error) {
	var res sql.Result
	var err error
	if s.tx != nil {
		res, err = s.tx.ExecContext(ctx, sqliteQuery(q), args...)
	} else {
		res, err = s.db.ExecContext(ctx, sqliteQuery(q), args...)
	}
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// query implements whQuerier.
func (s sqliteQ) query(ctx context.Context, q string, args ...any) (whRows, error) {
	var rows *sql.Rows
	var err error
	if s.tx != nil {
		rows, err = s.tx.QueryContext(ctx, sqliteQuery(q), args...)
	} else {
		rows, err = s.db.QueryContext(ctx, sqliteQuery(q), args...)
	}
	if err != nil {
		return nil, err
	}
	return sqlRows{rows}, nil
}

// sqlRows are database/sql rows as whRows.
type sqlRows struct{ *sql.Rows }

// Close closes the rows (their error is the one Err reports).
func (r sqlRows) Close() { r.Rows.Close() }

// whWrite implements whBackend: fn runs in the writer's transaction (sqlitedb.Update).
func (s *SQLiteStore) whWrite(ctx context.Context, fn func(ctx context.Context, q whQuerier) error) error {
	return s.db.Update(ctx, func(ctx context.Context, tx *sqlitedb.Tx) error { return fn(ctx, sqliteQ{tx: tx}) })
}

// whRead implements whBackend: the read pool.
func (s *SQLiteStore) whRead() whQuerier { return sqliteQ{db: s.db.Read} }

// whPG implements whBackend.
func (s *SQLiteStore) whPG() bool { return false }

// pgQ is a whQuerier of PostgreSQL, in a transaction (tx) or on the pool.
type pgQ struct {
	tx   pgx.Tx
	pool *pgxpool.Pool
}

// exec implements whQuerier.
func (p pgQ) exec(ctx context.Context, q string, args ...any) (int64, error) {
	if p.tx != nil {
		tag, err := p.tx.Exec(ctx, q, args...)
		return tag.RowsAffected(), err
	}
	tag, err := p.pool.Exec(ctx, q, args...)
	return tag.RowsAffected(), err
}

// query implements whQuerier.
func (p pgQ) query(ctx context.Context, q string, args ...any) (whRows, error) {
	if p.tx != nil {
		return p.tx.Query(ctx, q, args...)
	}
	return p.pool.Query(ctx, q, args...)
}

// whWrite implements whBackend: fn runs in a transaction, retried on serialization failures
// and deadlocks (pgdb.Write).
func (s *PGStore) whWrite(ctx context.Context, fn func(ctx context.Context, q whQuerier) error) error {
	return s.write(ctx, func(ctx context.Context, tx pgx.Tx) error { return fn(ctx, pgQ{tx: tx}) })
}

// whRead implements whBackend: the pool, each statement on its own.
func (s *PGStore) whRead() whQuerier { return pgQ{pool: s.pool} }

// whPG implements whBackend.
func (s *PGStore) whPG() bool { return true }

// ---- statements and scans

// endpointColumns are the columns of webhook_endpoints that scanEndpoint reads, in its order.
const endpointColumns = `id, username, url, event_types, secret, previous_secret, previous_expires_at,
	status, disabled_reason, created_at, consecutive_failures, failing_since, start_seq`

// scanEndpoint scans a row of endpointColumns.
func scanEndpoint(r whRows) (webhookEndpoint, error) {
	var ep webhookEndpoint
	var types string
	var prevExp, created, since int64
	err := r.Scan(&ep.ID, &ep.Username, &ep.URL, &types, &ep.Secret, &ep.PreviousSecret, &prevExp,
		&ep.Status, &ep.DisabledReason, &created, &ep.ConsecutiveFailures, &since, &ep.StartSeq)
	if types != "" {
		ep.EventTypes = strings.Split(types, ",")
	}
	ep.PreviousExpiresAt, ep.CreatedAt, ep.FailingSince = fromNanos(prevExp), fromNanos(created), fromNanos(since)
	return ep, err
}

// queryEndpoints runs a query of endpointColumns.
func queryEndpoints(ctx context.Context, q whQuerier, stmt string, args ...any) ([]webhookEndpoint, error) {
	rows, err := q.query(ctx, stmt, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []webhookEndpoint
	for rows.Next() {
		ep, err := scanEndpoint(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, ep)
	}
	return out, rows.Err()
}

// deliveryColumns are the columns of webhook_deliveries (as d) that queryDeliveries reads.
const deliveryColumns = `d.id, d.endpoint_id, d.event_seq, d.event_type, d.payment_id, d.body, d.status,
	d.next_attempt_at, d.created_at, d.first_attempt_at, d.attempts, d.redeliver, d.finished_at`

// queryDeliveries runs a query of deliveryColumns, without the attempts.
func queryDeliveries(ctx context.Context, q whQuerier, stmt string, args ...any) ([]webhookDelivery, error) {
	rows, err := q.query(ctx, stmt, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []webhookDelivery
	for rows.Next() {
		var d webhookDelivery
		var next, created, first, finished int64
		if err := rows.Scan(&d.ID, &d.EndpointID, &d.EventSeq, &d.EventType, &d.PaymentID, &d.Body, &d.Status,
			&next, &created, &first, &d.Attempts, &d.Redeliver, &finished); err != nil {
			return nil, err
		}
		d.NextAttemptAt, d.CreatedAt, d.FirstAttemptAt, d.FinishedAt = fromNanos(next), fromNanos(created), fromNanos(first), fromNanos(finished)
		out = append(out, d)
	}
	return out, rows.Err()
}

// withAttempts reads the attempts of ds.
func withAttempts(ctx context.Context, q whQuerier, ds []webhookDelivery) error {
	for i := range ds {
		rows, err := q.query(ctx, `SELECT at, http_status, error, latency, manual FROM webhook_attempts
			WHERE delivery_id = $1 ORDER BY id`, ds[i].ID)
		if err != nil {
			return err
		}
		for rows.Next() {
			var a webhookAttempt
			var at, lat int64
			var manual int
			if err := rows.Scan(&at, &a.HTTPStatus, &a.Error, &lat, &manual); err != nil {
				rows.Close()
				return err
			}
			a.At, a.Latency, a.Manual = fromNanos(at), time.Duration(lat), manual != 0
			ds[i].Log = append(ds[i].Log, a)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// scalar runs a query of one int64 value.
func scalar(ctx context.Context, q whQuerier, stmt string, args ...any) (int64, error) {
	rows, err := q.query(ctx, stmt, args...)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	var v int64
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return 0, err
		}
		return 0, ErrNotFound
	}
	if err := rows.Scan(&v); err != nil {
		return 0, err
	}
	return v, rows.Err()
}

// ---- the operations, on either store

// whCreateEndpoint is CreateWebhookEndpoint. On PostgreSQL the user's row is locked first, so
// that concurrent creations of one user's endpoints count one after the other.
func whCreateEndpoint(ctx context.Context, b whBackend, ep webhookEndpoint, max int) (webhookEndpoint, error) {
	err := b.whWrite(ctx, func(ctx context.Context, q whQuerier) error {
		if b.whPG() {
			// Concurrent creations of one user's endpoints count one after the other.
			if _, err := q.exec(ctx, `SELECT 1 FROM users WHERE username = $1 FOR NO KEY UPDATE`, ep.Username); err != nil {
				return err
			}
		}
		n, err := scalar(ctx, q, `SELECT count(*) FROM webhook_endpoints WHERE username = $1`, ep.Username)
		if err != nil {
			return err
		}
		if max > 0 && n >= int64(max) {
			return ErrTooManyEndpoints
		}
		// The endpoint receives the events after the log's last seq now. A fan-out running at
		// this moment could already have read some of those without seeing the endpoint, and
		// moved the cursor past them: on PostgreSQL the cursor's row is locked first (the
		// fan-out holds it until it commits), so that the last seq is read after any fan-out
		// in flight, and the next one sees the endpoint. On SQLite the writes take turns.
		last := `SELECT coalesce(max(seq), 0) FROM events`
		if b.whPG() {
			if _, err := q.exec(ctx, `SELECT 1 FROM webhook_cursor WHERE one = 1 FOR SHARE`); err != nil {
				return err
			}
			last = `SELECT last FROM event_counter`
		}
		if ep.StartSeq, err = scalar(ctx, q, last); err != nil {
			return err
		}
		_, err = q.exec(ctx, `INSERT INTO webhook_endpoints (`+endpointColumns+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
			ep.ID, ep.Username, ep.URL, strings.Join(ep.EventTypes, ","), ep.Secret, ep.PreviousSecret,
			nanos(ep.PreviousExpiresAt), ep.Status, ep.DisabledReason, nanos(ep.CreatedAt),
			ep.ConsecutiveFailures, nanos(ep.FailingSince), ep.StartSeq)
		return err
	})
	if err != nil {
		if errors.Is(err, ErrTooManyEndpoints) {
			return ep, err
		}
		return ep, fmt.Errorf("gateway: create webhook endpoint: %w", err)
	}
	return ep, nil
}

// whEndpoints is WebhookEndpoints.
func whEndpoints(ctx context.Context, b whBackend, username string) ([]webhookEndpoint, error) {
	out, err := queryEndpoints(ctx, b.whRead(), `SELECT `+endpointColumns+` FROM webhook_endpoints
		WHERE username = $1 ORDER BY created_at, id`, username)
	if err != nil {
		return nil, fmt.Errorf("gateway: list webhook endpoints: %w", err)
	}
	return out, nil
}

// whEndpoint reads one of username's endpoints with q, locking its row when lock is set.
func whEndpoint(ctx context.Context, q whQuerier, username, id string, lock bool) (webhookEndpoint, error) {
	stmt := `SELECT ` + endpointColumns + ` FROM webhook_endpoints WHERE id = $1 AND username = $2`
	if lock {
		stmt += ` FOR UPDATE`
	}
	eps, err := queryEndpoints(ctx, q, stmt, id, username)
	if err != nil {
		return webhookEndpoint{}, fmt.Errorf("gateway: read webhook endpoint: %w", err)
	}
	if len(eps) == 0 {
		return webhookEndpoint{}, ErrNotFound
	}
	return eps[0], nil
}

// whUpdateEndpoint is UpdateWebhookEndpoint: read (locked on PostgreSQL), changed by fn,
// written back, in one transaction.
func whUpdateEndpoint(ctx context.Context, b whBackend, username, id string, now time.Time, fn func(*webhookEndpoint) error) (webhookEndpoint, error) {
	var out webhookEndpoint
	err := b.whWrite(ctx, func(ctx context.Context, q whQuerier) error {
		before, err := whEndpoint(ctx, q, username, id, b.whPG())
		if err != nil {
			return err
		}
		ep := before
		if err := fn(&ep); err != nil {
			return err
		}
		if before.Status == endpointDisabled && ep.Status == endpointEnabled {
			ep.ConsecutiveFailures, ep.FailingSince = 0, time.Time{}
			if _, err := q.exec(ctx, `UPDATE webhook_deliveries SET next_attempt_at = CASE WHEN next_attempt_at > $2 THEN $2 ELSE next_attempt_at END,
				first_attempt_at = 0, attempts = 0 WHERE endpoint_id = $1 AND status = 1`, id, nanos(now)); err != nil {
				return err
			}
		}
		if _, err := q.exec(ctx, `UPDATE webhook_endpoints SET secret = $2, previous_secret = $3,
			previous_expires_at = $4, status = $5, disabled_reason = $6, consecutive_failures = $7,
			failing_since = $8 WHERE id = $1`, id, ep.Secret, ep.PreviousSecret, nanos(ep.PreviousExpiresAt),
			ep.Status, ep.DisabledReason, ep.ConsecutiveFailures, nanos(ep.FailingSince)); err != nil {
			return err
		}
		out = ep
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return out, err
		}
		return out, fmt.Errorf("gateway: update webhook endpoint: %w", err)
	}
	return out, nil
}

// whDeleteEndpoint is DeleteWebhookEndpoint.
func whDeleteEndpoint(ctx context.Context, b whBackend, username, id string) error {
	err := b.whWrite(ctx, func(ctx context.Context, q whQuerier) error {
		n, err := q.exec(ctx, `DELETE FROM webhook_endpoints WHERE id = $1 AND username = $2`, id, username)
		if err != nil {
			return err
		}
		if n == 0 {
			return ErrNotFound
		}
		if _, err := q.exec(ctx, `DELETE FROM webhook_attempts WHERE delivery_id IN
			(SELECT id FROM webhook_deliveries WHERE endpoint_id = $1)`, id); err != nil {
			return err
		}
		_, err = q.exec(ctx, `DELETE FROM webhook_deliveries WHERE endpoint_id = $1`, id)
		return err
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("gateway: delete webhook endpoint: %w", err)
	}
	return err
}

// whFanOut is FanOutWebhooks. On PostgreSQL the cursor's row is locked first: replicas fan out
// one after the other, each from where the one before left the cursor.
func whFanOut(ctx context.Context, b whBackend, limit int, now time.Time) (events, deliveries int, cursor int64, err error) {
	err = b.whWrite(ctx, func(ctx context.Context, q whQuerier) error {
		events, deliveries = 0, 0
		stmt := `SELECT seq FROM webhook_cursor WHERE one = 1`
		if b.whPG() {
			stmt += ` FOR UPDATE` // replicas take turns
		}
		var err error
		cursor, err = scalar(ctx, q, stmt)
		if err != nil {
			return err
		}
		rows, err := q.query(ctx, `SELECT `+eventColumns+` FROM events WHERE seq > $1 ORDER BY seq LIMIT $2`, cursor, limit)
		if err != nil {
			return err
		}
		var evs []eventRecord
		for rows.Next() {
			e, err := scanEvent(rows)
			if err != nil {
				rows.Close()
				return err
			}
			evs = append(evs, e)
		}
		err = rows.Err()
		rows.Close()
		if err != nil || len(evs) == 0 {
			return err
		}
		last := evs[len(evs)-1].Seq
		eps, err := queryEndpoints(ctx, q, `SELECT `+endpointColumns+` FROM webhook_endpoints WHERE username IN
			(SELECT payer FROM events WHERE seq > $1 AND seq <= $2 UNION SELECT payee FROM events WHERE seq > $1 AND seq <= $2)
			ORDER BY id`, cursor, last)
		if err != nil {
			return err
		}
		if len(eps) > 0 {
			for _, e := range evs {
				for _, ep := range eps {
					if (ep.Username != e.Payer && ep.Username != e.Payee) || e.Seq <= ep.StartSeq || !ep.takes(string(e.Type)) {
						continue
					}
					body, err := webhookBody(e, ep.Username)
					if err != nil {
						return err
					}
					n, err := q.exec(ctx, `INSERT INTO webhook_deliveries (id, endpoint_id, event_seq, event_type,
						payment_id, body, status, next_attempt_at, created_at)
						VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7) ON CONFLICT (endpoint_id, event_seq) DO NOTHING`,
						newWebhookID("wd_"), ep.ID, e.Seq, string(e.Type), e.PaymentID, body, nanos(now))
					if err != nil {
						return err
					}
					deliveries += int(n)
				}
			}
		}
		events, cursor = len(evs), last
		_, err = q.exec(ctx, `UPDATE webhook_cursor SET seq = $1 WHERE one = 1`, last)
		return err
	})
	if err != nil {
		return 0, 0, 0, fmt.Errorf("gateway: fan out webhooks: %w", err)
	}
	return events, deliveries, cursor, nil
}

// whDue is the condition of a delivery d that is due at $1 (see ClaimWebhookDeliveries).
const whDue = `(d.redeliver > 0 OR (d.status = 1 AND d.next_attempt_at <= $1 AND NOT EXISTS (
	SELECT 1 FROM webhook_deliveries o WHERE o.endpoint_id = d.endpoint_id AND o.payment_id = d.payment_id
	AND o.status = 1 AND o.event_seq < d.event_seq)))`

// maxWebhookAttemptsPerUser is how many of a user's endpoints may be leased (have an attempt
// in flight) at once, over every replica; a claim running at the same moment on another
// replica may add one or two more.
const maxWebhookAttemptsPerUser = 4

// whClaim is ClaimWebhookDeliveries. On PostgreSQL the candidate endpoints are locked FOR
// UPDATE SKIP LOCKED: of replicas claiming at once, each takes other endpoints, and an endpoint
// whose lease another replica has just taken is re-checked against its new lease_until.
func whClaim(ctx context.Context, b whBackend, owner string, now, until time.Time, limit int) ([]webhookJob, error) {
	// Endpoints of users who hold maxWebhookAttemptsPerUser leases already are left out: one
	// user's many slow endpoints cannot take every sender of every replica from the others.
	// Nor is anything sent for a user an admin disabled: the deliveries wait, as those of a
	// disabled endpoint do, until the user is enabled again.
	candidates := `FROM webhook_endpoints e WHERE e.status = 1 AND e.lease_until < $1
		AND NOT EXISTS (SELECT 1 FROM users u WHERE u.username = e.username AND u.disabled)
		AND EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.endpoint_id = e.id AND ` + whDue + `)
		AND (SELECT count(*) FROM webhook_endpoints x WHERE x.username = e.username AND x.lease_until >= $1) < ` +
		strconv.Itoa(maxWebhookAttemptsPerUser)
	// A read first, so that an idle store is not written to on every poll.
	if _, err := scalar(ctx, b.whRead(), `SELECT 1 `+candidates+` LIMIT 1`, nanos(now)); errors.Is(err, ErrNotFound) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("gateway: claim webhook deliveries: %w", err)
	}
	var jobs []webhookJob
	err := b.whWrite(ctx, func(ctx context.Context, q whQuerier) error {
		jobs = nil
		stmt := `SELECT ` + endpointColumns + ` ` + candidates + ` ORDER BY e.lease_until, e.id LIMIT $2`
		if b.whPG() {
			stmt += ` FOR UPDATE SKIP LOCKED` // another replica claiming one skips it
		}
		eps, err := queryEndpoints(ctx, q, stmt, nanos(now), limit)
		if err != nil {
			return err
		}
		perUser := map[string]int{} // leases taken in this claim, by user
		for _, ep := range eps {
			if perUser[ep.Username] >= maxWebhookAttemptsPerUser {
				continue // the user's others were leased before: the count above cannot see these
			}
			ds, err := queryDeliveries(ctx, q, `SELECT `+deliveryColumns+` FROM webhook_deliveries d
				WHERE d.endpoint_id = $2 AND `+whDue+` ORDER BY d.redeliver DESC, d.event_seq LIMIT 1`, nanos(now), ep.ID)
			if err != nil {
				return err
			}
			if len(ds) == 0 {
				continue
			}
			if _, err := q.exec(ctx, `UPDATE webhook_endpoints SET lease_owner = $2, lease_until = $3 WHERE id = $1`,
				ep.ID, owner, nanos(until)); err != nil {
				return err
			}
			jobs = append(jobs, webhookJob{Endpoint: ep, Delivery: ds[0]})
			perUser[ep.Username]++
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("gateway: claim webhook deliveries: %w", err)
	}
	return jobs, nil
}

// whRecord is RecordWebhookAttempt.
func whRecord(ctx context.Context, b whBackend, owner string, job webhookJob, res webhookResult) error {
	err := b.whWrite(ctx, func(ctx context.Context, q whQuerier) error {
		d := job.Delivery
		n, err := q.exec(ctx, `UPDATE webhook_deliveries SET status = $2, next_attempt_at = $3, first_attempt_at = $4,
			attempts = $5, finished_at = $6, redeliver = CASE WHEN redeliver > $7 THEN redeliver - $7 ELSE 0 END
			WHERE id = $1`, d.ID, res.Status, nanos(res.NextAttemptAt), nanos(res.FirstAttemptAt), res.Attempts,
			nanos(res.FinishedAt), res.RedeliverTaken)
		if err != nil {
			return err
		}
		if n > 0 {
			a := res.Attempt
			manual := 0
			if a.Manual {
				manual = 1
			}
			if _, err := q.exec(ctx, `INSERT INTO webhook_attempts (delivery_id, at, http_status, error, latency, manual)
				VALUES ($1, $2, $3, $4, $5, $6)`, d.ID, nanos(a.At), a.HTTPStatus, pgText(a.Error), int64(a.Latency), manual); err != nil {
				return err
			}
		}
		release := `lease_owner = CASE WHEN lease_owner = $2 THEN '' ELSE lease_owner END,
			lease_until = CASE WHEN lease_owner = $2 THEN 0 ELSE lease_until END`
		if res.Success {
			_, err := q.exec(ctx, `UPDATE webhook_endpoints SET consecutive_failures = 0, failing_since = 0, `+release+`
				WHERE id = $1`, job.Endpoint.ID, owner)
			return err
		}
		eps, err := queryEndpoints(ctx, q, `UPDATE webhook_endpoints SET consecutive_failures = consecutive_failures + 1,
			failing_since = CASE WHEN failing_since = 0 THEN $3 ELSE failing_since END, `+release+`
			WHERE id = $1 RETURNING `+endpointColumns, job.Endpoint.ID, owner, nanos(res.Attempt.At))
		if err != nil || len(eps) == 0 {
			return err
		}
		ep := eps[0]
		if ep.Status == endpointEnabled && (res.Gone || (res.Disable != nil && res.Disable(ep.ConsecutiveFailures, ep.FailingSince))) {
			_, err = q.exec(ctx, `UPDATE webhook_endpoints SET status = 2, disabled_reason = $2 WHERE id = $1`, ep.ID, disabledByFailing)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("gateway: record webhook attempt: %w", err)
	}
	return nil
}

// whRelease is ReleaseWebhookLeases.
func whRelease(ctx context.Context, b whBackend, owner string) error {
	err := b.whWrite(ctx, func(ctx context.Context, q whQuerier) error {
		var err error
		if owner == "" {
			_, err = q.exec(ctx, `UPDATE webhook_endpoints SET lease_owner = '', lease_until = 0 WHERE lease_until != 0`)
		} else {
			_, err = q.exec(ctx, `UPDATE webhook_endpoints SET lease_owner = '', lease_until = 0 WHERE lease_owner = $1`, owner)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("gateway: release webhook leases: %w", err)
	}
	return nil
}

// whDeliveries is WebhookDeliveries.
func whDeliveries(ctx context.Context, b whBackend, username, endpointID string, before int64, status int32, limit int) ([]webhookDelivery, error) {
	q := b.whRead()
	if _, err := whEndpoint(ctx, q, username, endpointID, false); err != nil {
		return nil, err
	}
	if before <= 0 {
		before = 1<<63 - 1
	}
	ds, err := queryDeliveries(ctx, q, `SELECT `+deliveryColumns+` FROM webhook_deliveries d
		WHERE d.endpoint_id = $1 AND d.event_seq < $2 AND ($3 = 0 OR d.status = $3) ORDER BY d.event_seq DESC LIMIT $4`,
		endpointID, before, status, limit)
	if err == nil {
		err = withAttempts(ctx, q, ds)
	}
	if err != nil {
		return nil, fmt.Errorf("gateway: list webhook deliveries: %w", err)
	}
	return ds, nil
}

// whDelivery reads one of username's deliveries with its attempts.
func whDelivery(ctx context.Context, q whQuerier, username, id string) (webhookDelivery, error) {
	ds, err := queryDeliveries(ctx, q, `SELECT `+deliveryColumns+` FROM webhook_deliveries d
		JOIN webhook_endpoints e ON e.id = d.endpoint_id WHERE d.id = $1 AND e.username = $2`, id, username)
	if err == nil {
		err = withAttempts(ctx, q, ds)
	}
	if err != nil {
		return webhookDelivery{}, fmt.Errorf("gateway: read webhook delivery: %w", err)
	}
	if len(ds) == 0 {
		return webhookDelivery{}, ErrNotFound
	}
	return ds[0], nil
}

// whRedeliver is RequestRedelivery: the delivery's count of redeliveries asked for grows by
// one (the worker that attempts it subtracts what it answered).
func whRedeliver(ctx context.Context, b whBackend, username, id string) (webhookDelivery, error) {
	var out webhookDelivery
	err := b.whWrite(ctx, func(ctx context.Context, q whQuerier) error {
		d, err := whDelivery(ctx, q, username, id)
		if err != nil {
			return err
		}
		out = d
		_, err = q.exec(ctx, `UPDATE webhook_deliveries SET redeliver = redeliver + 1 WHERE id = $1`, id)
		return err
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		return out, fmt.Errorf("gateway: redeliver webhook: %w", err)
	}
	return out, err
}

// whCounts is WebhookCounts.
func whCounts(ctx context.Context, b whBackend) (pending, disabled int64, err error) {
	q := b.whRead()
	if pending, err = scalar(ctx, q, `SELECT count(*) FROM webhook_deliveries WHERE status = 1`); err != nil {
		return 0, 0, fmt.Errorf("gateway: count webhook deliveries: %w", err)
	}
	if disabled, err = scalar(ctx, q, `SELECT count(*) FROM webhook_endpoints WHERE status = 2`); err != nil {
		return 0, 0, fmt.Errorf("gateway: count webhook endpoints: %w", err)
	}
	return pending, disabled, nil
}

// whPrune is PruneWebhookDeliveries.
func whPrune(ctx context.Context, b whBackend, before time.Time) (int64, error) {
	var n int64
	err := b.whWrite(ctx, func(ctx context.Context, q whQuerier) error {
		if _, err := q.exec(ctx, `DELETE FROM webhook_attempts WHERE delivery_id IN
			(SELECT id FROM webhook_deliveries WHERE status != 1 AND finished_at < $1)`, nanos(before)); err != nil {
			return err
		}
		var err error
		n, err = q.exec(ctx, `DELETE FROM webhook_deliveries WHERE status != 1 AND finished_at < $1`, nanos(before))
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("gateway: prune webhook deliveries: %w", err)
	}
	return n, nil
}

// ---- SQLiteStore and PGStore

// CreateWebhookEndpoint implements webhookStore.
func (s *SQLiteStore) CreateWebhookEndpoint(ctx context.Context, ep webhookEndpoint, max int) (webhookEndpoint, error) {
	return whCreateEndpoint(ctx, s, ep, max)
}

// WebhookEndpoints implements webhookStore.
func (s *SQLiteStore) WebhookEndpoints(ctx context.Context, username string) ([]webhookEndpoint, error) {
	return whEndpoints(ctx, s, username)
}

// WebhookEndpoint implements webhookStore.
func (s *SQLiteStore) WebhookEndpoint(ctx context.Context, username, id string) (webhookEndpoint, error) {
	return whEndpoint(ctx, s.whRead(), username, id, false)
}

// UpdateWebhookEndpoint implements webhookStore.
func (s *SQLiteStore) UpdateWebhookEndpoint(ctx context.Context, username, id string, now time.Time, fn func(*webhookEndpoint) error) (webhookEndpoint, error) {
	return whUpdateEndpoint(ctx, s, username, id, now, fn)
}

// DeleteWebhookEndpoint implements webhookStore.
func (s *SQLiteStore) DeleteWebhookEndpoint(ctx context.Context, username, id string) error {
	return whDeleteEndpoint(ctx, s, username, id)
}

// FanOutWebhooks implements webhookStore.
func (s *SQLiteStore) FanOutWebhooks(ctx context.Context, limit int, now time.Time) (int, int, int64, error) {
	return whFanOut(ctx, s, limit, now)
}

// WebhookCursor implements webhookStore.
func (s *SQLiteStore) WebhookCursor(ctx context.Context) (int64, error) {
	return scalar(ctx, s.whRead(), `SELECT seq FROM webhook_cursor WHERE one = 1`)
}

// ClaimWebhookDeliveries implements webhookStore.
func (s *SQLiteStore) ClaimWebhookDeliveries(ctx context.Context, owner string, now, until time.Time, limit int) ([]webhookJob, error) {
	return whClaim(ctx, s, owner, now, until, limit)
}

// RecordWebhookAttempt implements webhookStore.
func (s *SQLiteStore) RecordWebhookAttempt(ctx context.Context, owner string, job webhookJob, res webhookResult) error {
	return whRecord(ctx, s, owner, job, res)
}

// ReleaseWebhookLeases implements webhookStore.
func (s *SQLiteStore) ReleaseWebhookLeases(ctx context.Context, owner string) error {
	return whRelease(ctx, s, owner)
}

// WebhookDeliveries implements webhookStore.
func (s *SQLiteStore) WebhookDeliveries(ctx context.Context, username, endpointID string, before int64, status int32, limit int) ([]webhookDelivery, error) {
	return whDeliveries(ctx, s, username, endpointID, before, status, limit)
}

// WebhookDelivery implements webhookStore.
func (s *SQLiteStore) WebhookDelivery(ctx context.Context, username, id string) (webhookDelivery, error) {
	return whDelivery(ctx, s.whRead(), username, id)
}

// RequestRedelivery implements webhookStore.
func (s *SQLiteStore) RequestRedelivery(ctx context.Context, username, id string) (webhookDelivery, error) {
	return whRedeliver(ctx, s, username, id)
}

// WebhookCounts implements webhookStore.
func (s *SQLiteStore) WebhookCounts(ctx context.Context) (int64, int64, error) {
	return whCounts(ctx, s)
}

// PruneWebhookDeliveries implements webhookStore.
func (s *SQLiteStore) PruneWebhookDeliveries(ctx context.Context, before time.Time) (int64, error) {
	return whPrune(ctx, s, before)
}

// CreateWebhookEndpoint implements webhookStore.
func (s *PGStore) CreateWebhookEndpoint(ctx context.Context, ep webhookEndpoint, max int) (webhookEndpoint, error) {
	if unstorable(ep.Username, ep.URL) {
		return ep, errNULText
	}
	return whCreateEndpoint(ctx, s, ep, max)
}

// WebhookEndpoints implements webhookStore.
func (s *PGStore) WebhookEndpoints(ctx context.Context, username string) ([]webhookEndpoint, error) {
	if unstorable(username) {
		return nil, nil
	}
	return whEndpoints(ctx, s, username)
}

// WebhookEndpoint implements webhookStore.
func (s *PGStore) WebhookEndpoint(ctx context.Context, username, id string) (webhookEndpoint, error) {
	if unstorable(username, id) {
		return webhookEndpoint{}, ErrNotFound
	}
	return whEndpoint(ctx, s.whRead(), username, id, false)
}

// UpdateWebhookEndpoint implements webhookStore.
func (s *PGStore) UpdateWebhookEndpoint(ctx context.Context, username, id string, now time.Time, fn func(*webhookEndpoint) error) (webhookEndpoint, error) {
	if unstorable(username, id) {
		return webhookEndpoint{}, ErrNotFound
	}
	return whUpdateEndpoint(ctx, s, username, id, now, fn)
}

// DeleteWebhookEndpoint implements webhookStore.
func (s *PGStore) DeleteWebhookEndpoint(ctx context.Context, username, id string) error {
	if unstorable(username, id) {
		return ErrNotFound
	}
	return whDeleteEndpoint(ctx, s, username, id)
}

// FanOutWebhooks implements webhookStore.
func (s *PGStore) FanOutWebhooks(ctx context.Context, limit int, now time.Time) (int, int, int64, error) {
	return whFanOut(ctx, s, limit, now)
}

// WebhookCursor implements webhookStore.
func (s *PGStore) WebhookCursor(ctx context.Context) (int64, error) {
	return scalar(ctx, s.whRead(), `SELECT seq FROM webhook_cursor WHERE one = 1`)
}

// ClaimWebhookDeliveries implements webhookStore.
func (s *PGStore) ClaimWebhookDeliveries(ctx context.Context, owner string, now, until time.Time, limit int) ([]webhookJob, error) {
	return whClaim(ctx, s, owner, now, until, limit)
}

// RecordWebhookAttempt implements webhookStore.
func (s *PGStore) RecordWebhookAttempt(ctx context.Context, owner string, job webhookJob, res webhookResult) error {
	return whRecord(ctx, s, owner, job, res)
}

// ReleaseWebhookLeases implements webhookStore.
func (s *PGStore) ReleaseWebhookLeases(ctx context.Context, owner string) error {
	return whRelease(ctx, s, owner)
}

// WebhookDeliveries implements webhookStore.
func (s *PGStore) WebhookDeliveries(ctx context.Context, username, endpointID string, before int64, status int32, limit int) ([]webhookDelivery, error) {
	if unstorable(username, endpointID) {
		return nil, ErrNotFound
	}
	return whDeliveries(ctx, s, username, endpointID, before, status, limit)
}

// WebhookDelivery implements webhookStore.
func (s *PGStore) WebhookDelivery(ctx context.Context, username, id string) (webhookDelivery, error) {
	if unstorable(username, id) {
		return webhookDelivery{}, ErrNotFound
	}
	return whDelivery(ctx, s.whRead(), username, id)
}

// RequestRedelivery implements webhookStore.
func (s *PGStore) RequestRedelivery(ctx context.Context, username, id string) (webhookDelivery, error) {
	if unstorable(username, id) {
		return webhookDelivery{}, ErrNotFound
	}
	return whRedeliver(ctx, s, username, id)
}

// WebhookCounts implements webhookStore.
func (s *PGStore) WebhookCounts(ctx context.Context) (int64, int64, error) { return whCounts(ctx, s) }

// PruneWebhookDeliveries implements webhookStore.
func (s *PGStore) PruneWebhookDeliveries(ctx context.Context, before time.Time) (int64, error) {
	return whPrune(ctx, s, before)
}
