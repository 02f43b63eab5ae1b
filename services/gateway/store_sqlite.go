package gateway

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/paygate/paygate/internal/sqlitedb"
)

// The gateway's store: users and their linked accounts, sessions, and payments with the
// coordinator's decision log. One SQLite file, WAL, synchronous=FULL (see sqlitedb).
//
// A payment row is the coordinator's durable record of one two-phase commit:
//
//	decision = 0 (none)    admitted, prepares in flight: the user sees PROCESSING
//	decision = 1 (commit)  the commit point has passed: SUCCEEDED
//	decision = 2 (abort)   FAILED, with failure_reason and failure_message
//	completed = 1          every participant acknowledged phase two
//
// The decision is written with a compare-and-set (WHERE decision = 0), so exactly one of the
// handler, the timeout monitor and a bank's GetDecision ever decides a payment.
var migrations = []string{
	`CREATE TABLE users (
		username      TEXT PRIMARY KEY,
		password_hash TEXT NOT NULL,
		role          TEXT NOT NULL DEFAULT 'customer',
		created_at    INTEGER NOT NULL
	);
	CREATE TABLE user_accounts (
		account_id TEXT PRIMARY KEY,
		username   TEXT NOT NULL REFERENCES users(username)
	);
	CREATE INDEX user_accounts_by_user ON user_accounts(username, account_id);
	CREATE TABLE sessions (
		token_hash       BLOB PRIMARY KEY,
		username         TEXT NOT NULL REFERENCES users(username),
		cert_fingerprint TEXT NOT NULL,
		created_at       INTEGER NOT NULL,
		expires_at       INTEGER NOT NULL,
		revoked_at       INTEGER
	);
	CREATE TABLE payments (
		payment_id      TEXT PRIMARY KEY,
		username        TEXT NOT NULL,
		from_account    TEXT NOT NULL,
		to_account      TEXT NOT NULL,
		amount          INTEGER NOT NULL CHECK (amount >= 0),
		currency        TEXT NOT NULL,
		description     TEXT NOT NULL DEFAULT '',
		fingerprint     BLOB NOT NULL,
		decision        INTEGER NOT NULL DEFAULT 0 CHECK (decision IN (0, 1, 2)),
		failure_reason  INTEGER NOT NULL DEFAULT 0,
		failure_message TEXT NOT NULL DEFAULT '',
		presumed        INTEGER NOT NULL DEFAULT 0,
		completed       INTEGER NOT NULL DEFAULT 0,
		created_at      INTEGER NOT NULL,
		deadline        INTEGER NOT NULL,
		decided_at      INTEGER,
		completed_at    INTEGER
	);
	CREATE INDEX payments_by_user ON payments(username, created_at DESC, payment_id DESC);
	CREATE INDEX payments_unfinished ON payments(deadline, payment_id) WHERE completed = 0;`,
	// Secrets the gateway keys things with (the decision proofs' HMAC key), shared by every
	// process on the store; an index to count a user's live sessions (CreateSession's cap);
	// and payment ids in their one canonical spelling (see package
	// payid): a UUID in lower case, a ULID in upper case. Rows written before ids were
	// canonical are rewritten when that cannot clash with another row and their phase two is
	// done (an unfinished one keeps the spelling its banks know).
	`CREATE TABLE secrets (
		name       TEXT PRIMARY KEY,
		value      BLOB NOT NULL,
		created_at INTEGER NOT NULL
	);
	CREATE INDEX sessions_by_user ON sessions(username, expires_at);
	UPDATE payments SET payment_id = lower(payment_id)
		WHERE length(payment_id) = 36 AND payment_id != lower(payment_id) AND completed = 1
		AND NOT EXISTS (SELECT 1 FROM payments q WHERE q.payment_id = lower(payments.payment_id));
	UPDATE payments SET payment_id = upper(payment_id)
		WHERE length(payment_id) = 26 AND payment_id != upper(payment_id) AND completed = 1
		AND NOT EXISTS (SELECT 1 FROM payments q WHERE q.payment_id = upper(payments.payment_id));`,
	// The admin interface: users that can be disabled, with an initial password to change and
	// an admin's TOTP second factor; sessions that passed it; who decided each payment
	// (gatewayv1.DecidedBy; 0 for decisions recorded before it was kept); the hash-chained
	// audit log of admin actions (see auditlog.go); each payment's two-phase trail, in the
	// order recorded; and an index to page through every user's payments, newest first.
	`ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE users ADD COLUMN must_change_password INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE users ADD COLUMN totp_secret TEXT NOT NULL DEFAULT '';
	ALTER TABLE users ADD COLUMN totp_last_step INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE sessions ADD COLUMN second_factor INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE payments ADD COLUMN decided_by INTEGER NOT NULL DEFAULT 0;
	CREATE INDEX payments_by_created ON payments(created_at DESC, payment_id DESC);
	CREATE TABLE audit_log (
		seq        INTEGER PRIMARY KEY,
		at         INTEGER NOT NULL,
		actor      TEXT NOT NULL,
		actor_cert TEXT NOT NULL,
		peer       TEXT NOT NULL,
		action     TEXT NOT NULL,
		target     TEXT NOT NULL,
		outcome    TEXT NOT NULL,
		reason     TEXT NOT NULL,
		request_id TEXT NOT NULL,
		before     TEXT NOT NULL,
		after      TEXT NOT NULL,
		prev_hash  BLOB NOT NULL,
		hash       BLOB NOT NULL
	);
	CREATE INDEX audit_log_by_actor ON audit_log(actor, seq);
	CREATE TABLE payment_trail (
		id         INTEGER PRIMARY KEY,
		payment_id TEXT NOT NULL,
		events     TEXT NOT NULL
	);
	CREATE INDEX payment_trail_by_payment ON payment_trail(payment_id, id);`,
	// The payments' event log (see eventLog and store_events.go): one row per change of a
	// payment, numbered by seq, with the payment as of the change (snapshot, JSON), by payer and
	// payee. A new row's seq is one more than the largest in the table, and PruneEvents always
	// keeps the newest row, so a seq is never given twice (without AUTOINCREMENT's extra write
	// of sqlite_sequence on every insert). A store from before gets the table empty: payments
	// stored before it have no events.
	`CREATE TABLE events (
		seq        INTEGER PRIMARY KEY,
		type       TEXT NOT NULL,
		payment_id TEXT NOT NULL,
		payer      TEXT NOT NULL,
		payee      TEXT NOT NULL,
		created_at INTEGER NOT NULL,
		snapshot   TEXT NOT NULL
	);
	CREATE INDEX events_by_payer ON events(payer, seq);
	CREATE INDEX events_by_payee ON events(payee, seq);`,
	// Refunds (see refunds.go): a refund is a payment row with refund_of, the payment_id of the
	// payment it gives money back for ('' on a payment). On the refunded payment, refunded is
	// the sum of its succeeded refunds and refund_reserved that of its refunds admitted and not
	// failed: a refund is admitted only if it fits (refund_reserved + amount <= amount), in the
	// admission's transaction, and its decision moves the reservation to refunded or gives it
	// back, in the decision's.
	`ALTER TABLE payments ADD COLUMN refund_of TEXT NOT NULL DEFAULT '';
	ALTER TABLE payments ADD COLUMN refunded INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE payments ADD COLUMN refund_reserved INTEGER NOT NULL DEFAULT 0;`,
	// Webhooks (see webhookStore and store_webhooks.go): users' endpoints, with the lease of
	// the worker sending to one (lease_owner, lease_until: one delivery at a time per
	// endpoint); one delivery per endpoint and event, its body built once at fan-out; every
	// attempt; and the fan-out cursor, the last event seq fanned out, starting at the log's
	// end (there are no endpoints before). Times are unix nanoseconds, 0 for none.
	`CREATE TABLE webhook_endpoints (
		id                   TEXT PRIMARY KEY,
		username             TEXT NOT NULL,
		url                  TEXT NOT NULL,
		event_types          TEXT NOT NULL,
		secret               TEXT NOT NULL,
		previous_secret      TEXT NOT NULL DEFAULT '',
		previous_expires_at  INTEGER NOT NULL DEFAULT 0,
		status               INTEGER NOT NULL DEFAULT 1,
		disabled_reason      TEXT NOT NULL DEFAULT '',
		created_at           INTEGER NOT NULL,
		consecutive_failures INTEGER NOT NULL DEFAULT 0,
		failing_since        INTEGER NOT NULL DEFAULT 0,
		start_seq            INTEGER NOT NULL,
		lease_owner          TEXT NOT NULL DEFAULT '',
		lease_until          INTEGER NOT NULL DEFAULT 0
	);
	CREATE INDEX webhook_endpoints_by_user ON webhook_endpoints(username, created_at, id);
	CREATE TABLE webhook_deliveries (
		id               TEXT PRIMARY KEY,
		endpoint_id      TEXT NOT NULL,
		event_seq        INTEGER NOT NULL,
		event_type       TEXT NOT NULL,
		payment_id       TEXT NOT NULL,
		body             BLOB NOT NULL,
		status           INTEGER NOT NULL DEFAULT 1,
		next_attempt_at  INTEGER NOT NULL,
		created_at       INTEGER NOT NULL,
		first_attempt_at INTEGER NOT NULL DEFAULT 0,
		attempts         INTEGER NOT NULL DEFAULT 0,
		redeliver        INTEGER NOT NULL DEFAULT 0,
		finished_at      INTEGER NOT NULL DEFAULT 0,
		UNIQUE (endpoint_id, event_seq)
	);
	CREATE INDEX webhook_deliveries_pending ON webhook_deliveries(endpoint_id, payment_id, event_seq) WHERE status = 1;
	CREATE INDEX webhook_deliveries_redeliver ON webhook_deliveries(endpoint_id) WHERE redeliver > 0;
	CREATE INDEX webhook_deliveries_finished ON webhook_deliveries(finished_at) WHERE status != 1;
	CREATE TABLE webhook_attempts (
		id          INTEGER PRIMARY KEY,
		delivery_id TEXT NOT NULL,
		at          INTEGER NOT NULL,
		http_status INTEGER NOT NULL,
		error       TEXT NOT NULL,
		latency     INTEGER NOT NULL,
		manual      INTEGER NOT NULL
	);
	CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts(delivery_id, id);
	CREATE TABLE webhook_cursor (
		one INTEGER PRIMARY KEY CHECK (one = 1),
		seq INTEGER NOT NULL
	);
	INSERT INTO webhook_cursor (one, seq) VALUES (1, coalesce((SELECT max(seq) FROM events), 0));`,
	// ListReceived's order: the payments made to an account, newest first.
	`CREATE INDEX payments_by_payee ON payments(to_account, created_at DESC, payment_id DESC);`,
}

// SQLiteStore is the gateway's store in one SQLite file: the embedded default, for one gateway
// process (it holds the file's only writer, so every lease is its own).
type SQLiteStore struct {
	db *sqlitedb.DB
	// appended is signalled (without waiting) when events were appended and committed, for
	// ListenEvents; lastSeq is the highest seq committed (see appendedUpTo).
	appended chan struct{}
	lastSeq  atomic.Int64
}

// OpenStore opens or creates the gateway store at path. noGroupCommit gives every write its
// own transaction (see sqlitedb.Options).
func OpenStore(ctx context.Context, path string, noGroupCommit bool) (*SQLiteStore, error) {
	db, err := sqlitedb.OpenWith(ctx, path, migrations, sqlitedb.Options{NoGroupCommit: noGroupCommit})
	if err != nil {
		return nil, fmt.Errorf("gateway: open store: %w", err)
	}
	s := &SQLiteStore{db: db, appended: make(chan struct{}, 1)}
	last, err := s.LastEventSeq(ctx)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("gateway: open store: %w", err)
	}
	s.lastSeq.Store(last)
	return s, nil
}

// Close closes the store.
func (s *SQLiteStore) Close() error { return s.db.Close() }

var _ Store = (*SQLiteStore)(nil)

// Shared is false: one gateway process owns a SQLite store.
func (s *SQLiteStore) Shared() bool { return false }

// ---- users

// CountUsers returns how many users exist.
func (s *SQLiteStore) CountUsers(ctx context.Context) (int, error) {
	var n int
	err := s.db.Read.QueryRowContext(ctx, `SELECT count(*) FROM users`).Scan(&n)
	return n, err
}

// CreateUsers inserts users and links their accounts in one transaction. It fails with
// ErrUserExists or ErrAccountLinked and inserts nothing when any user or account is taken.
func (s *SQLiteStore) CreateUsers(ctx context.Context, users []userRecord, now time.Time) error {
	return s.db.Update(ctx, func(ctx context.Context, tx *sqlitedb.Tx) error {
		return createUsers(ctx, tx, users, now)
	})
}

func createUsers(ctx context.Context, tx *sqlitedb.Tx, users []userRecord, now time.Time) error {
	for _, u := range users {
		res, err := tx.ExecContext(ctx,
			`INSERT INTO users (username, password_hash, role, created_at, disabled, must_change_password,
				totp_secret, totp_last_step) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
			 ON CONFLICT (username) DO NOTHING`,
			u.Username, u.PasswordHash, u.Role, now.UnixNano(), u.Disabled, u.MustChangePassword,
			u.TOTPSecret, u.TOTPLastStep)
		if err != nil {
			return fmt.Errorf("gateway: create user %s: %w", u.Username, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("%w: %s", ErrUserExists, u.Username)
		}
		for _, a := range u.Accounts {
			res, err := tx.ExecContext(ctx,
				`INSERT INTO user_accounts (account_id, username) VALUES (?, ?) ON CONFLICT (account_id) DO NOTHING`,
				a, u.Username)
			if err != nil {
				return fmt.Errorf("gateway: link account %s: %w", a, err)
			}
			if n, _ := res.RowsAffected(); n == 0 {
				return fmt.Errorf("%w: %s", ErrAccountLinked, a)
			}
		}
	}
	return nil
}

// userColumns are the columns of users that scanUser reads, in its order.
const userColumns = `username, password_hash, role, disabled, must_change_password, totp_secret, totp_last_step, created_at`

// scanUser scans a row of userColumns, followed by extra.
func scanUser(row interface{ Scan(...any) error }, extra ...any) (userRecord, error) {
	var u userRecord
	var created int64
	err := row.Scan(append([]any{&u.Username, &u.PasswordHash, &u.Role, &u.Disabled, &u.MustChangePassword,
		&u.TOTPSecret, &u.TOTPLastStep, &created}, extra...)...)
	u.CreatedAt = time.Unix(0, created)
	return u, err
}

// User returns a user with its accounts, or ErrNotFound.
func (s *SQLiteStore) User(ctx context.Context, username string) (userRecord, error) {
	u, err := scanUser(s.db.Read.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE username = ?`, username))
	if errors.Is(err, sql.ErrNoRows) {
		return userRecord{Username: username}, ErrNotFound
	}
	if err != nil {
		return userRecord{Username: username}, fmt.Errorf("gateway: read user: %w", err)
	}
	u.Accounts, err = s.Accounts(ctx, username)
	return u, err
}

// Accounts returns the accounts linked to username, in order.
func (s *SQLiteStore) Accounts(ctx context.Context, username string) ([]string, error) {
	rows, err := s.db.Read.QueryContext(ctx,
		`SELECT account_id FROM user_accounts WHERE username = ? ORDER BY account_id`, username)
	if err != nil {
		return nil, fmt.Errorf("gateway: read accounts: %w", err)
	}
	return scanStrings(rows)
}

// AccountOwner returns the username an account is linked to, or ErrNotFound.
func (s *SQLiteStore) AccountOwner(ctx context.Context, account string) (string, error) {
	var u string
	err := s.db.Read.QueryRowContext(ctx,
		`SELECT username FROM user_accounts WHERE account_id = ?`, account).Scan(&u)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	return u, err
}

// ---- sessions

// CreateSession stores a session under the hash of token, unless rec.Username has max live
// sessions (not expired at now, not revoked) already: then it returns ErrTooManySessions and
// stores nothing. max <= 0 means no limit. The count and the insert are one write
// transaction, so concurrent logins cannot overshoot the limit.
func (s *SQLiteStore) CreateSession(ctx context.Context, token string, rec sessionRecord, now time.Time, max int) error {
	err := s.db.Update(ctx, func(ctx context.Context, tx *sqlitedb.Tx) error {
		if max > 0 {
			var live int
			if err := tx.QueryRowContext(ctx,
				`SELECT count(*) FROM sessions WHERE username = ? AND revoked_at IS NULL AND expires_at > ?`,
				rec.Username, now.UnixNano()).Scan(&live); err != nil {
				return err
			}
			if live >= max {
				return ErrTooManySessions
			}
		}
		_, err := tx.ExecContext(ctx,
			`INSERT INTO sessions (token_hash, username, cert_fingerprint, created_at, expires_at, second_factor)
			 VALUES (?, ?, ?, ?, ?, ?)`,
			tokenHash(token), rec.Username, rec.CertFingerprint, now.UnixNano(), rec.ExpiresAt.UnixNano(), rec.SecondFactor)
		return err
	})
	if errors.Is(err, ErrTooManySessions) {
		return err
	}
	if err != nil {
		return fmt.Errorf("gateway: create session: %w", err)
	}
	return nil
}

// Session returns the session of token with its user's role, whether the user is disabled and
// whether it must change its password, or ErrNotFound.
func (s *SQLiteStore) Session(ctx context.Context, token string) (sessionRecord, error) {
	var rec sessionRecord
	var expires int64
	var revoked sql.NullInt64
	err := s.db.Read.QueryRowContext(ctx,
		`SELECT s.username, s.cert_fingerprint, s.expires_at, s.revoked_at, s.second_factor,
			u.role, u.disabled, u.must_change_password
		 FROM sessions s JOIN users u ON u.username = s.username WHERE s.token_hash = ?`,
		tokenHash(token)).Scan(&rec.Username, &rec.CertFingerprint, &expires, &revoked, &rec.SecondFactor,
		&rec.Role, &rec.UserDisabled, &rec.MustChangePassword)
	if errors.Is(err, sql.ErrNoRows) {
		return rec, ErrNotFound
	}
	if err != nil {
		return rec, fmt.Errorf("gateway: read session: %w", err)
	}
	rec.ExpiresAt = time.Unix(0, expires)
	rec.Revoked = revoked.Valid
	return rec, nil
}

// RevokeSession marks the session of token revoked.
func (s *SQLiteStore) RevokeSession(ctx context.Context, token string, now time.Time) error {
	err := s.exec(ctx,
		`UPDATE sessions SET revoked_at = ? WHERE token_hash = ? AND revoked_at IS NULL`, now.UnixNano(), tokenHash(token))
	if err != nil {
		return fmt.Errorf("gateway: revoke session: %w", err)
	}
	return nil
}

// DeleteExpiredSessions removes sessions that expired before t.
func (s *SQLiteStore) DeleteExpiredSessions(ctx context.Context, t time.Time) (int64, error) {
	var n int64
	err := s.db.Update(ctx, func(ctx context.Context, tx *sqlitedb.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE expires_at < ?`, t.UnixNano())
		if err == nil {
			n, err = res.RowsAffected()
		}
		return err
	})
	return n, err
}

// exec runs one statement as a durable update.
func (s *SQLiteStore) exec(ctx context.Context, query string, args ...any) error {
	return s.db.Update(ctx, func(ctx context.Context, tx *sqlitedb.Tx) error {
		_, err := tx.ExecContext(ctx, query, args...)
		return err
	})
}

// ---- payments

// paymentColumns are the columns of payments that scanPayment reads, in its order (see
// pgPaymentColumns for PostgreSQL's).
const paymentColumns = `payment_id, username, from_account, to_account, amount, currency, description,
	fingerprint, decision, failure_reason, failure_message, presumed, completed, created_at, deadline, decided_at,
	decided_by, completed_at, refund_of, refunded`

func scanPayment(row interface{ Scan(...any) error }) (paymentRecord, error) {
	var p paymentRecord
	// The columns read into locals, in one variable: they escape together, one allocation.
	var v struct {
		created, deadline  int64
		decided, completed sql.NullInt64
	}
	err := row.Scan(&p.PaymentID, &p.Username, &p.From, &p.To, &p.Amount, &p.Currency, &p.Description,
		&p.Fingerprint, &p.Decision, &p.FailureReason, &p.FailureMessage, &p.Presumed, &p.Completed,
		&v.created, &v.deadline, &v.decided, &p.DecidedBy, &v.completed, &p.RefundOf, &p.Refunded)
	if err != nil {
		return p, err
	}
	p.CreatedAt = time.Unix(0, v.created)
	p.Deadline = time.Unix(0, v.deadline)
	if v.decided.Valid {
		p.DecidedAt = time.Unix(0, v.decided.Int64)
	}
	if v.completed.Valid {
		p.CompletedAt = time.Unix(0, v.completed.Int64)
	}
	return p, nil
}

// StartAdmitPayment implements paymentLog: it returns as soon as the insert has run, before it
// is durable: the stored row and whether it was inserted are what the store will hold once
// durable returns nil. If durable returns an error, nothing was written.
func (s *SQLiteStore) StartAdmitPayment(ctx context.Context, p paymentRecord) (stored paymentRecord, inserted bool, durable func() error, err error) {
	wrap := func(err error) error {
		if err != nil {
			return fmt.Errorf("gateway: admit payment %s: %w", p.PaymentID, err)
		}
		return nil
	}
	var seq int64
	synced, err := s.db.UpdateEarly(ctx, s.admit(p, &stored, &inserted, &seq))
	if err != nil {
		return p, false, nil, wrap(err)
	}
	return stored, inserted, func() error {
		err := synced()
		if err == nil && inserted {
			s.appendedUpTo(seq)
		}
		return wrap(err)
	}, nil
}

// admit is the write of AdmitPayment, with its payment.created (or refund.created) event; it
// sets *stored, *inserted and the event's *seq. A refund's write also takes its amount from
// what is left of the refunded payment (refund_reserved), or refuses it (refundReservation)
// and writes nothing; an amount of 0 is stored as what was left. The store's one writer runs
// it alone, so what it reads stays true until it commits.
func (s *SQLiteStore) admit(p paymentRecord, stored *paymentRecord, inserted *bool, seq *int64) func(context.Context, *sqlitedb.Tx) error {
	return func(ctx context.Context, tx *sqlitedb.Tx) error {
		p := p // a run rolled back and run again starts from the amount asked for
		*stored, *inserted = p, false
		if p.isRefund() {
			existing, err := s.payment(ctx, tx, p.PaymentID)
			if err == nil {
				*stored = existing // a retry, or a reuse of the id: the caller compares
				return nil
			}
			if !errors.Is(err, ErrNotFound) {
				return err
			}
			var amount, reserved int64
			var d decision
			var refundOf string
			err = tx.QueryRowContext(ctx,
				`SELECT amount, refund_reserved, decision, refund_of FROM payments WHERE payment_id = ?`,
				p.RefundOf).Scan(&amount, &reserved, &d, &refundOf)
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("refunded payment %s: %w", p.RefundOf, ErrNotFound)
			}
			if err != nil {
				return err
			}
			if p.Amount, err = refundReservation(p, amount, reserved, d, refundOf); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx,
				`UPDATE payments SET refund_reserved = refund_reserved + ? WHERE payment_id = ?`,
				p.Amount, p.RefundOf); err != nil {
				return err
			}
			*stored = p
		}
		res, err := tx.ExecContext(ctx,
			`INSERT INTO payments (payment_id, username, from_account, to_account, amount, currency, description,
				fingerprint, created_at, deadline, refund_of) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			 ON CONFLICT (payment_id) DO NOTHING`,
			p.PaymentID, p.Username, p.From, p.To, p.Amount, p.Currency, p.Description, p.Fingerprint,
			p.CreatedAt.UnixNano(), p.Deadline.UnixNano(), p.RefundOf)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 1 {
			*inserted = true
			*seq, err = sqliteAppendEvents(ctx, tx, p.PaymentID, eventPaymentCreated.of(p))
			return err
		}
		if p.isRefund() {
			// Cannot happen (the id was free just above, and this is the one writer); should it,
			// roll the reservation back with the rest.
			return fmt.Errorf("refund id %s taken during its admission", p.PaymentID)
		}
		*stored, err = s.payment(ctx, tx, p.PaymentID)
		return err
	}
}

type queryRower interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func (s *SQLiteStore) payment(ctx context.Context, q queryRower, id string) (paymentRecord, error) {
	p, err := scanPayment(q.QueryRowContext(ctx, `SELECT `+paymentColumns+` FROM payments WHERE payment_id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return p, ErrNotFound
	}
	if err != nil {
		return p, fmt.Errorf("gateway: read payment %s: %w", id, err)
	}
	return p, nil
}

// Payment returns a payment by id, or ErrNotFound.
func (s *SQLiteStore) Payment(ctx context.Context, id string) (paymentRecord, error) {
	return s.payment(ctx, s.db.Read, id)
}

// Decide records d for an undecided payment (the compare-and-set that is the commit point) and
// returns the payment as stored afterwards: with d when this call decided it, with the earlier
// decision otherwise. A payment that does not exist is created as a presumed abort when d is
// an abort (a bank asking about a transaction the gateway never admitted), so that it can
// never commit later. A decision of this call is appended to the event log in its transaction
// (a presumed abort of an unknown payment is no payment: it has no event).
func (s *SQLiteStore) Decide(ctx context.Context, id string, d decision, reason int32, message string, presumed bool, now time.Time, by decider) (paymentRecord, error) {
	var p paymentRecord
	var decided bool
	var seq int64
	err := s.db.Update(ctx, func(ctx context.Context, tx *sqlitedb.Tx) error {
		// The usual case, an undecided payment, is one statement that returns the row.
		var err error
		decided = false
		p, err = scanPayment(tx.QueryRowContext(ctx,
			`UPDATE payments SET decision = ?, failure_reason = ?, failure_message = ?, presumed = ?, decided_at = ?,
				decided_by = ?
			 WHERE payment_id = ? AND decision = 0 RETURNING `+paymentColumns,
			d, reason, message, presumed, now.UnixNano(), by, id))
		if err == nil {
			decided = true
			typ := eventPaymentSucceeded
			if d != decisionCommit {
				typ = eventPaymentFailed
			}
			if seq, err = sqliteAppendEvents(ctx, tx, id, typ.of(p)); err != nil || !p.isRefund() {
				return err
			}
			return sqliteSettleRefund(ctx, tx, p, &seq)
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if d == decisionAbort {
			// Unknown payment: record the presumed abort. ON CONFLICT keeps an existing decision.
			_, err = tx.ExecContext(ctx,
				`INSERT INTO payments (payment_id, username, from_account, to_account, amount, currency, fingerprint,
					decision, failure_reason, failure_message, presumed, completed, created_at, deadline, decided_at,
					decided_by, completed_at)
				 VALUES (?1, '', '', '', 0, '', X'', ?2, ?3, ?4, 1, 1, ?5, ?5, ?5, ?6, ?5) ON CONFLICT (payment_id) DO NOTHING`,
				id, d, reason, message, now.UnixNano(), by)
			if err != nil {
				return err
			}
		}
		p, err = s.payment(ctx, tx, id)
		return err
	})
	if err != nil {
		return p, fmt.Errorf("gateway: decide %s: %w", id, err)
	}
	if decided {
		s.appendedUpTo(seq)
	}
	return p, nil
}

// sqliteSettleRefund applies the decision of refund to the payment it refunds, in the
// decision's transaction: a commit moves its amount from the reservation to refunded and
// appends payment.refunded for the payment (its snapshot shows the new refunded amount); an
// abort gives the reservation back. Only a refund admitted (which reserved its amount) is ever
// decided here: a presumed abort of an unknown id and an adoption reserved nothing and
// never get here.
func sqliteSettleRefund(ctx context.Context, tx *sqlitedb.Tx, refund paymentRecord, seq *int64) error {
	if refund.Decision != decisionCommit {
		_, err := tx.ExecContext(ctx,
			`UPDATE payments SET refund_reserved = refund_reserved - ? WHERE payment_id = ?`, refund.Amount, refund.RefundOf)
		return err
	}
	if _, err := tx.ExecContext(ctx,
		`UPDATE payments SET refunded = refunded + ? WHERE payment_id = ?`, refund.Amount, refund.RefundOf); err != nil {
		return err
	}
	var err error
	*seq, err = sqliteAppendEvents(ctx, tx, refund.RefundOf, eventPaymentRefunded)
	return err
}

// Secret returns the store's secret name, creating it with size random bytes on first use.
// Processes sharing the store agree on it: the first to create it wins.
func (s *SQLiteStore) Secret(ctx context.Context, name string, size int) ([]byte, error) {
	var v []byte
	err := s.db.Read.QueryRowContext(ctx, `SELECT value FROM secrets WHERE name = ?`, name).Scan(&v)
	if err == nil {
		return v, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("gateway: read secret %s: %w", name, err)
	}
	fresh := make([]byte, size)
	if _, err := rand.Read(fresh); err != nil {
		return nil, fmt.Errorf("gateway: make secret %s: %w", name, err)
	}
	err = s.db.Update(ctx, func(ctx context.Context, tx *sqlitedb.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO secrets (name, value, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING`,
			name, fresh, time.Now().UnixNano()); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, `SELECT value FROM secrets WHERE name = ?`, name).Scan(&v)
	})
	if err != nil {
		return nil, fmt.Errorf("gateway: store secret %s: %w", name, err)
	}
	return v, nil
}

// AdoptUnadmitted gives p's parameters to the presumed abort recorded for its id when the
// payment itself was never stored (see Decide), so that the payment is the sender's from then
// on: GetPayment, ListPayments and WatchPayments show it, failed, with its parameters. It
// returns the row as stored afterwards: with p's parameters when this call adopted it, with
// those of an earlier adoption otherwise (compare fingerprints). An adoption appends
// payment.created and payment.failed to the event log, in its transaction.
func (s *SQLiteStore) AdoptUnadmitted(ctx context.Context, p paymentRecord) (paymentRecord, error) {
	var out paymentRecord
	var adopted bool
	var seq int64
	err := s.db.Update(ctx, func(ctx context.Context, tx *sqlitedb.Tx) error {
		adopted = false
		res, err := tx.ExecContext(ctx,
			`UPDATE payments SET username = ?, from_account = ?, to_account = ?, amount = ?, currency = ?,
				description = ?, fingerprint = ?, refund_of = ?
			 WHERE payment_id = ? AND presumed = 1 AND length(fingerprint) = 0`,
			p.Username, p.From, p.To, p.Amount, p.Currency, p.Description, p.Fingerprint, p.RefundOf, p.PaymentID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 1 {
			adopted = true
			if seq, err = sqliteAppendEvents(ctx, tx, p.PaymentID, eventPaymentCreated.of(p), eventPaymentFailed.of(p)); err != nil {
				return err
			}
		}
		out, err = s.payment(ctx, tx, p.PaymentID)
		return err
	})
	if err != nil {
		return out, fmt.Errorf("gateway: adopt payment %s: %w", p.PaymentID, err)
	}
	if adopted {
		s.appendedUpTo(seq)
	}
	return out, nil
}

// MarkCompleted records that every participant acknowledged phase two of the payments ids.
func (s *SQLiteStore) MarkCompleted(ctx context.Context, ids []string, now time.Time) error {
	if len(ids) == 0 {
		return nil
	}
	// One statement text whatever the number of ids (a JSON array of them), so that the writer
	// prepares it once instead of once per batch size.
	list, err := json.Marshal(ids)
	if err != nil {
		return fmt.Errorf("gateway: record completion of %d payments: %w", len(ids), err)
	}
	const q = `UPDATE payments SET completed = 1, completed_at = ?
		WHERE decision != 0 AND payment_id IN (SELECT value FROM json_each(?))`
	if err := s.exec(ctx, q, now.UnixNano(), string(list)); err != nil {
		return fmt.Errorf("gateway: record completion of %d payments: %w", len(ids), err)
	}
	return nil
}

// Unfinished returns payments that are undecided or whose phase two is not acknowledged, oldest
// deadline first, after the cursor when it is set, at most limit.
func (s *SQLiteStore) Unfinished(ctx context.Context, after *unfinishedCursor, limit int) ([]paymentRecord, error) {
	q := `SELECT ` + paymentColumns + ` FROM payments WHERE completed = 0`
	args := []any{}
	if after != nil {
		q += ` AND (deadline > ? OR (deadline = ? AND payment_id > ?))`
		args = append(args, after.Deadline, after.Deadline, after.PaymentID)
	}
	q += ` ORDER BY deadline, payment_id LIMIT ?`
	rows, err := s.db.Read.QueryContext(ctx, q, append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("gateway: list unfinished payments: %w", err)
	}
	defer rows.Close()
	var out []paymentRecord
	for rows.Next() {
		p, err := scanPayment(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// ListPayments returns username's payments, newest first, starting after the cursor (created_at,
// payment_id) when it is set, filtered by decision when filter is set.
func (s *SQLiteStore) ListPayments(ctx context.Context, username string, after *pageCursor, filter *decisionFilter, limit int) ([]paymentRecord, error) {
	q := `SELECT ` + paymentColumns + ` FROM payments WHERE username = ?`
	args := []any{username}
	if after != nil {
		q += ` AND (created_at < ? OR (created_at = ? AND payment_id < ?))`
		args = append(args, after.CreatedAt, after.CreatedAt, after.PaymentID)
	}
	if filter != nil {
		q += ` AND decision = ?`
		args = append(args, filter.decision)
	}
	q += ` ORDER BY created_at DESC, payment_id DESC LIMIT ?`
	args = append(args, limit)
	rows, err := s.db.Read.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("gateway: list payments: %w", err)
	}
	defer rows.Close()
	var out []paymentRecord
	for rows.Next() {
		p, err := scanPayment(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// ListReceived implements paymentLog. SQLite would sort every payment received by all of a
// user's accounts to find the newest few, so each account's newest are read instead (the
// payments_by_payee index, in its order, limit rows at most) and the lists merged. The reads
// are not one snapshot (the read pool's transactions would take the write lock): a payment
// stored meanwhile is newer than those listed before it, so it may miss this page and shows
// at the top of the next listing, as with ListPayments.
func (s *SQLiteStore) ListReceived(ctx context.Context, username string, after *pageCursor, filter *decisionFilter, limit int) ([]paymentRecord, error) {
	accounts, err := s.Accounts(ctx, username)
	if err != nil {
		return nil, fmt.Errorf("gateway: list received payments: %w", err)
	}
	q := `SELECT ` + paymentColumns + ` FROM payments WHERE to_account = ? AND username != ?`
	args := []any{nil, username}
	if after != nil {
		q += ` AND (created_at < ? OR (created_at = ? AND payment_id < ?))`
		args = append(args, after.CreatedAt, after.CreatedAt, after.PaymentID)
	}
	if filter != nil {
		q += ` AND decision = ?`
		args = append(args, filter.decision)
	}
	q += ` ORDER BY created_at DESC, payment_id DESC LIMIT ?`
	args = append(args, limit)
	var out []paymentRecord
	for _, account := range accounts {
		if account == "" {
			continue
		}
		args[0] = account
		rows, err := s.db.Read.QueryContext(ctx, q, args...)
		if err != nil {
			return nil, fmt.Errorf("gateway: list received payments: %w", err)
		}
		for rows.Next() {
			p, err := scanPayment(rows)
			if err != nil {
				rows.Close()
				return nil, err
			}
			out = append(out, p)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("gateway: list received payments: %w", err)
		}
	}
	return newestFirst(out, limit), nil
}

// Unsettled implements paymentLog.
func (s *SQLiteStore) Unsettled(ctx context.Context, accounts []string, raising bool) ([]string, error) {
	list, err := json.Marshal(accounts)
	if err != nil {
		return nil, err
	}
	q := `SELECT payment_id FROM payments WHERE completed = 0 AND decision != 0 AND (
		(decision = 1 AND to_account IN (SELECT value FROM json_each(?1))) OR
		(decision = 2 AND from_account IN (SELECT value FROM json_each(?1)))`
	if !raising {
		q += ` OR from_account IN (SELECT value FROM json_each(?1)) OR to_account IN (SELECT value FROM json_each(?1))`
	}
	q += `)`
	rows, err := s.db.Read.QueryContext(ctx, q, string(list))
	if err != nil {
		return nil, fmt.Errorf("gateway: list unsettled payments: %w", err)
	}
	return scanStrings(rows)
}

// scanStrings returns the one text column of rows, and closes them.
func scanStrings(rows *sql.Rows) ([]string, error) {
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// ---- leases: the one process that opened the file drives every payment.

// Owner implements leaseStore: the process's one lease has no name.
func (s *SQLiteStore) Owner() string { return "" }

// Claim implements leaseStore: every payment is this process's.
func (s *SQLiteStore) Claim(ctx context.Context, id string) (paymentRecord, bool, error) {
	p, err := s.Payment(ctx, id)
	return p, err == nil, err
}

// ClaimOrphans implements leaseStore: there are none.
func (s *SQLiteStore) ClaimOrphans(context.Context, int) (int, error) { return 0, nil }

// RenewLease implements leaseStore: the lease lasts as long as the process.
func (s *SQLiteStore) RenewLease(context.Context) error { return nil }

// Holding implements leaseStore.
func (s *SQLiteStore) Holding() bool { return true }

// ReleaseLease implements leaseStore.
func (s *SQLiteStore) ReleaseLease(context.Context) error { return nil }

// LeaseTTL implements leaseStore: the lease never expires.
func (s *SQLiteStore) LeaseTTL() time.Duration { return 0 }

// Now implements leaseStore: the process's clock is the store's.
func (s *SQLiteStore) Now() time.Time { return time.Now() }

// Listen implements leaseStore: nobody else changes the store.
func (s *SQLiteStore) Listen(ctx context.Context, _ func(string)) error {
	<-ctx.Done()
	return nil
}
