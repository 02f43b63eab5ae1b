package gateway

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/paygate/paygate/internal/crashpoint"
	"github.com/paygate/paygate/internal/pgdb"
)

// DefaultLeaseTTL is how long a replica's lease lasts without renewal unless configured.
const DefaultLeaseTTL = 10 * time.Second

// PGStore is the gateway's store on PostgreSQL, shared by any number of gateway replicas (see
// Store for the contracts, which it keeps as SQLiteStore does).
//
// # Isolation
//
// Every transaction runs at READ COMMITTED, PostgreSQL's default, where each statement sees the
// rows committed before it started, and an UPDATE or a locking SELECT that meets a row changed
// by a transaction in progress waits for it and then re-checks its WHERE against the row as
// committed. Each write is correct under it because:
//
//   - Admission is INSERT ... ON CONFLICT (payment_id) DO NOTHING: of two concurrent inserts of
//     one id, the second waits for the first to end and then does nothing (or inserts, if the
//     first rolled back); the row it then reads (a new statement, a new snapshot) is the
//     committed one.
//   - Decide is UPDATE ... WHERE decision = 0: of two concurrent decisions, the second waits,
//     re-checks decision = 0 against the committed row, and changes nothing. When no row exists
//     it inserts the presumed abort with ON CONFLICT DO NOTHING, and when a concurrent admission
//     won that insert it tries the UPDATE again (which now sees the admitted row).
//   - A refund's admission first locks the refunded payment's row (SELECT ... FOR UPDATE), so
//     that the admissions of its refunds, on any replica, run one after the other: each then
//     reads the refund_reserved the previous one committed, takes its amount only if it fits,
//     and inserts the refund row, in one transaction. A refund's decision moves or gives back
//     its reservation in Decide's own statement (a data-modifying WITH on the refunded row).
//   - AdoptUnadmitted and MarkCompleted are single UPDATEs whose WHERE is re-checked the same
//     way (and decision never goes back to none).
//   - Events (see eventLog) are inserted by the statement that makes the change, from the row it
//     returned, so only a statement that changed the row appends; seq is given later, by
//     SequenceEvents, one run at a time under a transaction advisory lock, to rows committed
//     before its statement started (see store_events.go).
//   - Leases: a renewal locks its lease row FOR UPDATE before it compares expires_at with the
//     clock, and whoever takes payments away from an owner (Claim, ClaimOrphans) locks that
//     owner's lease row FOR SHARE first and reads the clock after: so a lease is either renewed
//     before it is judged (and found live) or judged expired before the renewal looks (which
//     then finds it expired, ErrLeaseLost). Claiming rows is a compare-and-set on the payment
//     row (locked FOR UPDATE, or skipped when locked: SKIP LOCKED), so each orphan is claimed
//     by one process.
//   - Counting limits (CreateSession's cap, OpenStream's) first takes a lock per user (the user's
//     row FOR NO KEY UPDATE, a transaction advisory lock on the stream's username), so that
//     concurrent counts of one user run one after the other, each seeing what the one before it
//     inserted. Throttle buckets are locked FOR UPDATE in key order before they are read.
//   - User imports insert with ON CONFLICT DO NOTHING and fail on the first conflict, so of two
//     concurrent imports of one user the one that waited fails; crossing orders deadlock, and
//     the deadlock is retried (pgdb.Write) into the same failure.
//
// Writes are retried on serialization failures and deadlocks (SQLSTATE 40001, 40P01; pgdb.Write).
//
// # Durability
//
// A write is durable when its COMMIT returns, provided synchronous_commit is on (the server's
// default) or remote_apply/remote_write with replicas: with synchronous_commit = off, a server
// crash may lose decisions the gateway has already acted on. Do not turn it off for the
// gateway's database or role. A connection lost during a COMMIT leaves its outcome unknown (the
// error is reported, pgdb.Unavailable): an admission whose durable() failed that way may be
// stored after all, as an undecided payment of this process's lease, which recovery then drives
// or aborts like any other.
//
// # Leases
//
// Each PGStore is one lease: a row of leases (owner, expires_at) that OpenPGStore inserts and
// RenewLease pushes to the database's clock + LeaseTTL while it has not expired. payments.owner
// names the lease that drives a payment: the admitting process's, or a claimant's. An orphan is
// an unfinished payment whose owner is empty (handed back by ReleaseLease) or has no lease row that
// expires after the database's clock; Claim and ClaimOrphans take orphans (never a payment of a
// live lease). Every expiry is judged by the database's clock (clock_timestamp()), never by a
// replica's. Holding() is judged locally: the lease is certainly valid until LeaseTTL minus a
// margin (a fifth) after its last successful renewal started, measured by the monotonic clock.
// A renewal that finds the lease expired gives the store a new owner (ErrLeaseLost): the old
// one's payments are orphans, to be claimed by whoever comes first, this process included.
// Renewals also clean up: old lease rows, full throttle buckets, streams of deleted leases.
//
// Changes other processes should hear of (admissions, decisions, adoptions) are announced with
// pg_notify on the channel paygate_payments, as "<owner>:<payment_id>", once they have
// committed, in batches (see runNotifier: a NOTIFY inside each writing transaction would
// serialise their commits); Listen hears them on a connection of its own. PostgreSQL delivers
// one of identical notifications sent in one transaction, so two changes of one payment in a
// batch are heard once: the listener reads the row as it is by then.
//
// PostgreSQL text cannot hold NUL bytes (nor invalid UTF-8): ids and names holding one are not
// found by reads, and writes refuse them with errNULText; in free text (a payment's description,
// a failure message) they are stored as U+FFFD.
type PGStore struct {
	pool   *pgxpool.Pool
	ttl    time.Duration
	logger *slog.Logger
	host   string // the owner ids' prefix: host and pid

	mu       sync.Mutex
	owner    string              // the current lease
	past     map[string]struct{} // every lease this store has had, for Listen's filter
	renewing sync.Mutex          // one RenewLease at a time
	released bool                // ReleaseLease ran; under renewing

	closeOnce    sync.Once
	notes        sync.Mutex
	pending      []string      // announcements to send (announce)
	wake         chan struct{} // a new announcement (capacity 1)
	stopNotifier context.CancelFunc
	notifierDone chan struct{}
	// appended is signalled (without waiting) when events this process appended have
	// committed, for ListenEvents.
	appended chan struct{}

	renewedAt atomic.Pointer[time.Time] // local start of the last successful renewal; nil when released
	offset    atomic.Int64              // the database's clock minus the local one, in nanoseconds
	lastGC    atomic.Int64              // local unix nanoseconds of the last cleanup

	commits atomic.Pointer[pgdb.CommitMetrics] // observes write's commits; nil: none (registerMetrics)
}

var (
	_ Store        = (*PGStore)(nil)
	_ sharedLimits = (*PGStore)(nil)
)

// PGStoreOptions configures OpenPGStore.
type PGStoreOptions struct {
	// LeaseTTL is how long this process's lease lasts without renewal (DefaultLeaseTTL when
	// zero).
	LeaseTTL time.Duration
	Logger   *slog.Logger
}

//go:embed pgmigrations/*.sql
var pgMigrations embed.FS

// pgMigrationLockKey is the pg_advisory_lock key held while the gateway's migrations run.
const pgMigrationLockKey int64 = 0x7061796761746502 // "paygate" and 02, the gateway store

// pgNotifyChannel is the channel changes of payments are announced on.
const pgNotifyChannel = "paygate_payments"

// pgStreamLockClass is the first key of the advisory locks OpenStream takes per username.
const pgStreamLockClass int32 = 0x70677301

// errLeaseReleased is RenewLease's refusal after ReleaseLease.
var errLeaseReleased = errors.New("gateway: the store lease was released (shutting down)")

// errNULText is a write's refusal of text PostgreSQL cannot store: a NUL byte or invalid UTF-8.
var errNULText = errors.New("gateway: text holding a NUL byte or invalid UTF-8 cannot be stored")

// unstorable reports whether any of ss cannot be stored as PostgreSQL text.
func unstorable(ss ...string) bool {
	if pgdb.HasNUL(ss...) {
		return true
	}
	for _, s := range ss {
		if !utf8.ValidString(s) {
			return true
		}
	}
	return false
}

// pgText returns free text (a description, a failure message) as PostgreSQL can store it: NUL
// bytes and invalid UTF-8 become U+FFFD.
func pgText(s string) string {
	if !unstorable(s) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// storable returns the elements of ss PostgreSQL text can hold (the others match no row).
func storable(ss []string) []string {
	out := make([]string, 0, len(ss))
	for _, s := range ss {
		if !unstorable(s) {
			out = append(out, s)
		}
	}
	return out
}

// OpenPGStore connects to the PostgreSQL database at url (a postgres:// URL or a key=value
// connection string, as pgxpool.ParseConfig reads it), applies the gateway's migrations under an
// advisory lock, and takes a new lease for this process.
func OpenPGStore(ctx context.Context, url string, opts PGStoreOptions) (*PGStore, error) {
	if opts.LeaseTTL <= 0 {
		opts.LeaseTTL = DefaultLeaseTTL
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	pool, err := pgdb.Open(ctx, url, pgMigrations, "pgmigrations", pgMigrationLockKey)
	if err != nil {
		return nil, fmt.Errorf("gateway: open store: %w", err)
	}
	host, _ := os.Hostname()
	host = strings.Map(func(r rune) rune {
		if r == ':' || r < ' ' || r >= utf8.RuneSelf {
			return '_'
		}
		return r
	}, host)
	if host == "" {
		host = "gateway"
	}
	s := &PGStore{pool: pool, ttl: opts.LeaseTTL, logger: opts.Logger,
		host: fmt.Sprintf("%s-%d", host, os.Getpid()), past: map[string]struct{}{}, appended: make(chan struct{}, 1)}
	if err := s.newLease(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("gateway: open store: take a lease: %w", err)
	}
	s.wake, s.notifierDone = make(chan struct{}, 1), make(chan struct{})
	nctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.stopNotifier = cancel
	go s.runNotifier(nctx)
	return s, nil
}

// Close sends the announcements still queued (for at most a second) and closes the store's
// connections. The lease is left to expire (ReleaseLease ends it).
func (s *PGStore) Close() error {
	s.closeOnce.Do(func() {
		s.stopNotifier()
		<-s.notifierDone
		s.pool.Close()
	})
	return nil
}

// Shared is true: replicas share a PostgreSQL store.
func (s *PGStore) Shared() bool { return true }

// write runs fn in a transaction with pgdb.Write.
func (s *PGStore) write(ctx context.Context, fn func(ctx context.Context, tx pgx.Tx) error) error {
	return pgdb.WriteObserved(ctx, s.pool, s.commits.Load(), fn)
}

// announce queues the announcement of a committed change of payment id to the other processes
// (see runNotifier), and tells ListenEvents of this process that events were appended.
func (s *PGStore) announce(owner, id string) {
	s.kickEvents()
	payload := owner + ":" + id
	if len(payload) >= 8000 { // the server's limit; a lost notification is allowed for
		return
	}
	s.notes.Lock()
	s.pending = append(s.pending, payload)
	s.notes.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// runNotifier sends the queued announcements with pg_notify, in batches, until ctx ends (and
// then what is queued, briefly). They are sent after the changes commit, not in their
// transactions: a transaction that notifies holds a lock of the whole server from its NOTIFY to
// the end of its commit (the WAL flush included), which serialises every notifying commit;
// here one transaction, committed asynchronously (it needs no durability), notifies many.
// Notifications sent this way may be lost (a crash after a commit, the database unreachable),
// as Listen allows.
func (s *PGStore) runNotifier(ctx context.Context) {
	defer close(s.notifierDone)
	for {
		select {
		case <-s.wake:
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			s.flushAnnouncements(fctx)
			cancel()
			return
		}
		s.flushAnnouncements(ctx)
	}
}

// flushAnnouncements sends every queued announcement, 1000 at a time.
func (s *PGStore) flushAnnouncements(ctx context.Context) {
	for {
		s.notes.Lock()
		n := min(len(s.pending), 1000)
		batch := slices.Clone(s.pending[:n])
		s.pending = s.pending[n:]
		if len(s.pending) == 0 {
			s.pending = nil
		}
		s.notes.Unlock()
		if n == 0 {
			return
		}
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SET LOCAL synchronous_commit = off`); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `SELECT pg_notify($1, p) FROM unnest($2::text[]) WITH ORDINALITY AS x(p, i) ORDER BY i`, pgNotifyChannel, batch)
			return err
		})
		if err != nil && ctx.Err() == nil {
			s.logger.LogAttrs(ctx, slog.LevelWarn, "store notifications: send", slog.Int("lost", n), slog.String("error", err.Error()))
		}
	}
}

// ---- users

// CountUsers returns how many users exist.
func (s *PGStore) CountUsers(ctx context.Context) (int, error) {
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM users`).Scan(&n); err != nil {
		return 0, fmt.Errorf("gateway: count users: %w", err)
	}
	return n, nil
}

// CreateUsers inserts users and links their accounts in one transaction. It fails with
// ErrUserExists or ErrAccountLinked and inserts nothing when any user or account is taken; of
// concurrent imports of one user, one succeeds and the others fail so.
func (s *PGStore) CreateUsers(ctx context.Context, users []userRecord, now time.Time) error {
	for _, u := range users {
		if unstorable(u.Username, u.PasswordHash, u.Role, u.TOTPSecret) || unstorable(u.Accounts...) {
			return fmt.Errorf("gateway: create user %q: %w", u.Username, errNULText)
		}
	}
	return s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		for _, u := range users {
			tag, err := tx.Exec(ctx,
				`INSERT INTO users (username, password_hash, role, created_at, disabled, must_change_password,
					totp_secret, totp_last_step) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
				 ON CONFLICT (username) DO NOTHING`,
				u.Username, u.PasswordHash, u.Role, now.UnixNano(), u.Disabled, u.MustChangePassword,
				u.TOTPSecret, u.TOTPLastStep)
			if err != nil {
				return fmt.Errorf("gateway: create user %s: %w", u.Username, err)
			}
			if tag.RowsAffected() == 0 {
				return fmt.Errorf("%w: %s", ErrUserExists, u.Username)
			}
			for _, a := range u.Accounts {
				tag, err := tx.Exec(ctx,
					`INSERT INTO user_accounts (account_id, username) VALUES ($1, $2) ON CONFLICT (account_id) DO NOTHING`,
					a, u.Username)
				if err != nil {
					return fmt.Errorf("gateway: link account %s: %w", a, err)
				}
				if tag.RowsAffected() == 0 {
					return fmt.Errorf("%w: %s", ErrAccountLinked, a)
				}
			}
		}
		return nil
	})
}

// User returns a user with its accounts, or ErrNotFound.
func (s *PGStore) User(ctx context.Context, username string) (userRecord, error) {
	if unstorable(username) {
		return userRecord{Username: username}, ErrNotFound
	}
	u, err := pgScanUser(s.pool.QueryRow(ctx, `SELECT `+pgUserColumns+` FROM users u WHERE u.username = $1`, username))
	if errors.Is(err, pgx.ErrNoRows) {
		return userRecord{Username: username}, ErrNotFound
	}
	if err != nil {
		return userRecord{Username: username}, fmt.Errorf("gateway: read user: %w", err)
	}
	return u, nil
}

// pgUserColumns are userColumns of users u followed by the user's accounts in order (an
// array), as scanUser reads them with pgScanUser.
const pgUserColumns = `u.username, u.password_hash, u.role, u.disabled, u.must_change_password, u.totp_secret,
	u.totp_last_step, u.created_at,
	array(SELECT a.account_id FROM user_accounts a WHERE a.username = u.username ORDER BY a.account_id)`

// pgScanUser scans a row of pgUserColumns, followed by extra.
func pgScanUser(row pgx.Row, extra ...any) (userRecord, error) {
	var accounts []string
	u, err := scanUser(row, append([]any{&accounts}, extra...)...)
	if len(accounts) > 0 {
		u.Accounts = accounts
	}
	return u, err
}

// Accounts returns the accounts linked to username, in order.
func (s *PGStore) Accounts(ctx context.Context, username string) ([]string, error) {
	if unstorable(username) {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT account_id FROM user_accounts WHERE username = $1 ORDER BY account_id`, username)
	if err != nil {
		return nil, fmt.Errorf("gateway: read accounts: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("gateway: read accounts: %w", err)
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// AccountOwner returns the username an account is linked to, or ErrNotFound.
func (s *PGStore) AccountOwner(ctx context.Context, account string) (string, error) {
	if unstorable(account) {
		return "", ErrNotFound
	}
	var u string
	err := s.pool.QueryRow(ctx, `SELECT username FROM user_accounts WHERE account_id = $1`, account).Scan(&u)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("gateway: read account owner: %w", err)
	}
	return u, nil
}

// ---- sessions

// CreateSession stores a session under the hash of token, unless rec.Username has max live
// sessions (not expired at now, not revoked) already: then it returns ErrTooManySessions and
// stores nothing. max <= 0 means no limit. The user's row is locked before the count, in the
// transaction of the insert, so that concurrent logins on any replicas cannot overshoot.
func (s *PGStore) CreateSession(ctx context.Context, token string, rec sessionRecord, now time.Time, max int) error {
	if unstorable(rec.Username, rec.CertFingerprint) {
		return fmt.Errorf("gateway: create session: %w", errNULText)
	}
	err := s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		if max > 0 {
			// FOR NO KEY UPDATE: it excludes the other counters, not the foreign key checks
			// of sessions being inserted without a limit.
			if _, err := tx.Exec(ctx, `SELECT 1 FROM users WHERE username = $1 FOR NO KEY UPDATE`, rec.Username); err != nil {
				return err
			}
			var live int
			if err := tx.QueryRow(ctx,
				`SELECT count(*) FROM sessions WHERE username = $1 AND revoked_at IS NULL AND expires_at > $2`,
				rec.Username, now.UnixNano()).Scan(&live); err != nil {
				return err
			}
			if live >= max {
				return ErrTooManySessions
			}
		}
		_, err := tx.Exec(ctx,
			`INSERT INTO sessions (token_hash, username, cert_fingerprint, created_at, expires_at, second_factor)
			 VALUES ($1, $2, $3, $4, $5, $6)`,
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
func (s *PGStore) Session(ctx context.Context, token string) (sessionRecord, error) {
	var rec sessionRecord
	var expires int64
	var revoked *int64
	err := s.pool.QueryRow(ctx,
		`SELECT s.username, s.cert_fingerprint, s.expires_at, s.revoked_at, s.second_factor,
			u.role, u.disabled, u.must_change_password
		 FROM sessions s JOIN users u ON u.username = s.username WHERE s.token_hash = $1`,
		tokenHash(token)).Scan(&rec.Username, &rec.CertFingerprint, &expires, &revoked, &rec.SecondFactor,
		&rec.Role, &rec.UserDisabled, &rec.MustChangePassword)
	if errors.Is(err, pgx.ErrNoRows) {
		return rec, ErrNotFound
	}
	if err != nil {
		return rec, fmt.Errorf("gateway: read session: %w", err)
	}
	rec.ExpiresAt = time.Unix(0, expires)
	rec.Revoked = revoked != nil
	return rec, nil
}

// RevokeSession marks the session of token revoked.
func (s *PGStore) RevokeSession(ctx context.Context, token string, now time.Time) error {
	err := s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `UPDATE sessions SET revoked_at = $1 WHERE token_hash = $2 AND revoked_at IS NULL`,
			now.UnixNano(), tokenHash(token))
		return err
	})
	if err != nil {
		return fmt.Errorf("gateway: revoke session: %w", err)
	}
	return nil
}

// DeleteExpiredSessions removes sessions that expired before t.
func (s *PGStore) DeleteExpiredSessions(ctx context.Context, t time.Time) (int64, error) {
	var n int64
	err := s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM sessions WHERE expires_at < $1`, t.UnixNano())
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("gateway: delete expired sessions: %w", err)
	}
	return n, nil
}

// ---- payments

// pgPaymentColumns are the columns of paymentColumns as pgScanPayment reads them: some are
// read several in one column, so that a payment row has 16 columns, as many as pgx describes
// without allocating (a connection keeps room for 16 field descriptions; a 17th column makes
// every query of a payment allocate them all): decision with decided_by, as decision + 4 *
// decided_by; failure_reason with presumed, as 2 * failure_reason + presumed; completed with
// completed_at, as the completion time when completed (0 when it was not recorded) and -1 while
// not; and fingerprint with refund_of, as the fingerprint's bytes followed by refund_of's (a
// fingerprint is a SHA-256, or empty on a presumed abort, which is no refund).
const pgPaymentColumns = `payment_id, username, from_account, to_account, amount, currency, description,
	fingerprint || convert_to(refund_of, 'UTF8'), decision + 4 * decided_by, 2 * failure_reason + presumed::int,
	failure_message, CASE WHEN completed THEN coalesce(completed_at, 0) ELSE -1 END, created_at, deadline,
	decided_at, refunded`

// pgScanPayment scans a row of pgPaymentColumns, followed by extra.
func pgScanPayment(row pgx.Row, extra ...any) (paymentRecord, error) {
	var p paymentRecord
	// The columns read into locals, in one variable: they escape together, one allocation.
	var v struct {
		state, failure                int32
		created, deadline, completion int64
		decided                       *int64
	}
	err := row.Scan(append([]any{&p.PaymentID, &p.Username, &p.From, &p.To, &p.Amount, &p.Currency, &p.Description,
		&p.Fingerprint, &v.state, &v.failure, &p.FailureMessage, &v.completion,
		&v.created, &v.deadline, &v.decided, &p.Refunded}, extra...)...)
	if err != nil {
		return p, err
	}
	p.Decision, p.DecidedBy = decision(v.state%4), decider(v.state/4)
	p.FailureReason, p.Presumed = v.failure>>1, v.failure&1 == 1
	p.CreatedAt = time.Unix(0, v.created)
	p.Deadline = time.Unix(0, v.deadline)
	if v.decided != nil {
		p.DecidedAt = time.Unix(0, *v.decided)
	}
	p.Completed = v.completion >= 0
	if v.completion > 0 {
		p.CompletedAt = time.Unix(0, v.completion)
	}
	if len(p.Fingerprint) > sha256.Size {
		p.Fingerprint, p.RefundOf = p.Fingerprint[:sha256.Size:sha256.Size], string(p.Fingerprint[sha256.Size:])
	}
	if p.Fingerprint == nil {
		p.Fingerprint = []byte{}
	}
	return p, nil
}

// pgQuerier is a pgx.Tx or the pool.
type pgQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func pgPayment(ctx context.Context, q pgQuerier, id string) (paymentRecord, error) {
	p, err := pgScanPayment(q.QueryRow(ctx, `SELECT `+pgPaymentColumns+` FROM payments WHERE payment_id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return p, ErrNotFound
	}
	if err != nil {
		return p, fmt.Errorf("gateway: read payment %s: %w", id, err)
	}
	return p, nil
}

func pgPayments(rows pgx.Rows, err error) ([]paymentRecord, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []paymentRecord
	for rows.Next() {
		p, err := pgScanPayment(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// Payment returns a payment by id, or ErrNotFound.
func (s *PGStore) Payment(ctx context.Context, id string) (paymentRecord, error) {
	if unstorable(id) {
		return paymentRecord{}, ErrNotFound
	}
	return pgPayment(ctx, s.pool, id)
}

// StartAdmitPayment inserts p, owned by this process's lease, with CreatedAt set by the
// database's clock and Deadline as far after it as p's is after p.CreatedAt, and returns the
// stored row as soon as the INSERT has run: its transaction commits in the background, and
// durable waits for that commit. A payment that exists already is read and returned (with
// durable returning nil at once) once the reading transaction has committed; a concurrent
// admission of the same id is waited for.
func (s *PGStore) StartAdmitPayment(ctx context.Context, p paymentRecord) (stored paymentRecord, inserted bool, durable func() error, err error) {
	wrap := func(err error) error {
		if err != nil {
			return fmt.Errorf("gateway: admit payment %s: %w", p.PaymentID, err)
		}
		return nil
	}
	if unstorable(p.PaymentID, p.Username, p.From, p.To, p.Currency, p.RefundOf) {
		return p, false, nil, wrap(errNULText)
	}
	p.Description = pgText(p.Description)
	fingerprint := p.Fingerprint
	if fingerprint == nil {
		fingerprint = []byte{}
	}
	var committed func() error
	for attempt := 1; ; attempt++ {
		stored, inserted, committed, err = s.startAdmit(ctx, p, fingerprint)
		if err == nil || !pgdb.Retryable(err) || attempt == 5 {
			break
		}
	}
	if err != nil {
		return p, false, nil, wrap(err)
	}
	return stored, inserted, func() error { return wrap(committed()) }, nil
}

// startAdmit runs the INSERT of an admission in a new transaction. When it inserted the row, it
// announces it and starts the commit in the background, for durable to wait for; otherwise it
// reads the existing row and commits before returning. A refund's admission first takes its
// amount from the refunded payment (pgReserveRefund), in the same transaction; it refuses the
// refund, writing nothing, when it does not fit.
func (s *PGStore) startAdmit(ctx context.Context, p paymentRecord, fingerprint []byte) (paymentRecord, bool, func() error, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return p, false, nil, err
	}
	rollback := func() { tx.Rollback(context.WithoutCancel(ctx)) }
	if p.isRefund() {
		existing, err := pgReserveRefund(ctx, tx, &p)
		switch {
		case err == nil:
		case errors.Is(err, errRefundExists):
			// A retry, or a reuse of the id: the caller compares.
			if err := tx.Commit(ctx); err != nil {
				return p, false, nil, err
			}
			return existing, false, func() error { return nil }, nil
		default:
			rollback()
			return p, false, nil, err
		}
	}
	owner := s.Owner()
	// The payment.created (refund.created) event is inserted by the same statement, from the
	// row it inserted: both are in the transaction or neither is, and an insert that did
	// nothing (the id was taken) appends nothing.
	stored, err := pgScanPayment(tx.QueryRow(ctx,
		`WITH t AS (SELECT paygate_now_ns() AS now), i AS (
			INSERT INTO payments (payment_id, username, from_account, to_account, amount, currency, description,
				fingerprint, created_at, deadline, owner, refund_of)
			SELECT $1, $2, $3, $4, $5, $6, $7, $8, t.now, t.now + $9, $10, $11 FROM t
			ON CONFLICT (payment_id) DO NOTHING
			RETURNING *
		 ), e AS (
			INSERT INTO events (type, payment_id, payer, payee, created_at, snapshot)
			SELECT `+pgEventType(eventPaymentCreated, "i")+`, i.payment_id, i.username, `+pgEventPayee("i")+`, i.created_at,
				`+pgEventSnapshot("i")+` FROM i
		 )
		 SELECT `+pgPaymentColumns+` FROM i`,
		p.PaymentID, p.Username, p.From, p.To, p.Amount, p.Currency, p.Description, fingerprint,
		p.Deadline.Sub(p.CreatedAt).Nanoseconds(), owner, p.RefundOf))
	switch {
	case err == nil:
		done := make(chan struct{})
		var commitErr error
		go func() {
			defer close(done)
			if crashpoint.Enabled {
				crashpoint.Held(ctx) // a crash point that needs this write lost holds its commit
			}
			start := time.Now()
			if commitErr = tx.Commit(ctx); commitErr == nil {
				s.commits.Load().ObserveCommit(start)
				s.announce(owner, p.PaymentID)
			}
		}()
		return stored, true, func() error { <-done; return commitErr }, nil
	case errors.Is(err, pgx.ErrNoRows) && p.isRefund():
		// Taken by a payment admitted meanwhile (a refund's would have been seen under the
		// lock): give the reservation back, then read its row.
		rollback()
		stored, err = pgPayment(ctx, s.pool, p.PaymentID)
		if err != nil {
			return p, false, nil, err
		}
		return stored, false, func() error { return nil }, nil
	case errors.Is(err, pgx.ErrNoRows):
		// Taken: the conflict waited for the inserter's commit, so this reads its row.
		stored, err = pgPayment(ctx, tx, p.PaymentID)
		if err != nil {
			rollback()
			return p, false, nil, err
		}
		if err := tx.Commit(ctx); err != nil {
			return p, false, nil, err
		}
		return stored, false, func() error { return nil }, nil
	default:
		rollback()
		return p, false, nil, err
	}
}

// errRefundExists is pgReserveRefund's report that the refund's id is taken already.
var errRefundExists = errors.New("gateway: refund id taken")

// pgReserveRefund takes refund's amount from what is left of the payment it refunds, in tx: it
// locks the payment's row, so that refunds of one payment are admitted one after the other on
// every replica; then, if refund's id is taken already (by this refund admitted before the
// lock was granted, or anything else), it returns that row with errRefundExists and changes
// nothing; otherwise it raises the payment's refund_reserved by the refund's amount (resolving
// 0 into what is left) if refundReservation allows, or returns its refusal. The UPDATE's own
// condition repeats the cap, so that no path can over-reserve.
func pgReserveRefund(ctx context.Context, tx pgx.Tx, refund *paymentRecord) (paymentRecord, error) {
	var amount, reserved int64
	var d int16
	var refundOf string
	err := tx.QueryRow(ctx,
		`SELECT amount, refund_reserved, decision, refund_of FROM payments WHERE payment_id = $1 FOR UPDATE`,
		refund.RefundOf).Scan(&amount, &reserved, &d, &refundOf)
	if errors.Is(err, pgx.ErrNoRows) {
		return paymentRecord{}, fmt.Errorf("refunded payment %s: %w", refund.RefundOf, ErrNotFound)
	}
	if err != nil {
		return paymentRecord{}, err
	}
	if existing, err := pgPayment(ctx, tx, refund.PaymentID); err == nil {
		return existing, errRefundExists
	} else if !errors.Is(err, ErrNotFound) {
		return paymentRecord{}, err
	}
	want, err := refundReservation(*refund, amount, reserved, decision(d), refundOf)
	if err != nil {
		return paymentRecord{}, err
	}
	tag, err := tx.Exec(ctx,
		`UPDATE payments SET refund_reserved = refund_reserved + $2
		 WHERE payment_id = $1 AND decision = 1 AND refund_of = '' AND refund_reserved + $2 <= amount`,
		refund.RefundOf, want)
	if err != nil {
		return paymentRecord{}, err
	}
	if tag.RowsAffected() != 1 {
		return paymentRecord{}, fmt.Errorf("refunded payment %s changed under its lock", refund.RefundOf)
	}
	refund.Amount = want
	return paymentRecord{}, nil
}

// Decide records d for an undecided payment (the compare-and-set that is the commit point) and
// returns the payment as stored afterwards: with d when this call decided it, with the earlier
// decision otherwise. A payment that does not exist is created as a presumed abort when d is an
// abort, so that it can never commit later. decided_at is the database's clock (now is not
// used). A decision is announced to the other processes. A decision of this call is appended to
// the event log by the statement that records it (a presumed abort of an unknown payment is no
// payment: it has no event).
func (s *PGStore) Decide(ctx context.Context, id string, d decision, reason int32, message string, presumed bool, now time.Time, by decider) (paymentRecord, error) {
	if unstorable(id) {
		if d == decisionAbort {
			return paymentRecord{}, fmt.Errorf("gateway: decide %q: %w", id, errNULText)
		}
		return paymentRecord{}, fmt.Errorf("gateway: decide %q: %w", id, ErrNotFound)
	}
	message = pgText(message)
	var p paymentRecord
	var changed bool
	owner := s.Owner()
	// Each statement below is a compare-and-set correct on its own, so they run without a
	// transaction around them: one round trip each instead of three. The decision's event is
	// inserted by the UPDATE's own statement (a data-modifying WITH): one statement is one
	// transaction, so the decision and its event commit together or not at all, and the insert
	// reads only the row the UPDATE changed (RETURNING), so a call that decided nothing (it
	// lost the compare-and-set, or runs again after a retry) appends nothing.
	err := pgdb.Statements(ctx, s.pool, func(ctx context.Context, tx pgdb.Querier) error {
		changed = false
		// At most three rounds: the UPDATE finds no row, the presumed abort's INSERT meets an
		// admission that committed meanwhile, and the UPDATE then finds the admitted row.
		for range 3 {
			var err error
			p, err = pgScanPayment(tx.QueryRow(ctx, pgDecide, int16(d), reason, message, presumed, id, int32(by)))
			if err == nil {
				changed = true
				return nil
			}
			if !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			if d == decisionAbort {
				// Unknown payment: record the presumed abort, completed (no bank was told of it by
				// the gateway) and nobody's. ON CONFLICT keeps a row admitted meanwhile.
				p, err = pgScanPayment(tx.QueryRow(ctx,
					`WITH t AS (SELECT paygate_now_ns() AS now)
					 INSERT INTO payments (payment_id, username, from_account, to_account, amount, currency, fingerprint,
						decision, failure_reason, failure_message, presumed, completed, created_at, deadline, decided_at,
						decided_by, completed_at)
					 SELECT $1, '', '', '', 0, '', '\x'::bytea, $2, $3, $4, true, true, t.now, t.now, t.now, $5, t.now FROM t
					 ON CONFLICT (payment_id) DO NOTHING RETURNING `+pgPaymentColumns,
					id, int16(d), reason, message, int32(by)))
				if err == nil {
					changed = true
					return nil
				}
				if !errors.Is(err, pgx.ErrNoRows) {
					return err
				}
			}
			p, err = pgPayment(ctx, tx, id)
			if err != nil || p.Decision != decisionNone {
				return err
			}
			// Admitted after the UPDATE looked: decide it now.
		}
		return fmt.Errorf("payment %s stayed undecided", id)
	})
	if err != nil {
		return p, fmt.Errorf("gateway: decide %s: %w", id, err)
	}
	if changed {
		s.announce(owner, id)
	}
	return p, nil
}

// pgDecide is Decide's UPDATE of an undecided payment, with its event. For a refund (refund_of
// set) the same statement applies the decision to the refunded payment (r): a commit raises its
// refunded by the refund's amount and appends payment.refunded for it (after the refund's own
// event), an abort gives the refund's reservation back. Only the row the UPDATE decided feeds
// r, so a presumed abort of an unknown id (an INSERT, not this) and an adoption never touch a
// reservation: they made none.
var pgDecide = `WITH u AS (
		UPDATE payments SET decision = $1, failure_reason = $2, failure_message = $3, presumed = $4,
			decided_at = paygate_now_ns(), decided_by = $6
		WHERE payment_id = $5 AND decision = 0 RETURNING *
	 ), r AS (
		UPDATE payments q SET
			refunded = q.refunded + CASE WHEN u.decision = 1 THEN u.amount ELSE 0 END,
			refund_reserved = q.refund_reserved - CASE WHEN u.decision = 1 THEN 0 ELSE u.amount END
		FROM u WHERE u.refund_of <> '' AND q.payment_id = u.refund_of RETURNING q.*
	 ), e AS (
		INSERT INTO events (type, payment_id, payer, payee, created_at, snapshot)
		SELECT x.type, x.payment_id, x.payer, x.payee, x.at, x.snapshot FROM (
			SELECT 1 AS n, CASE WHEN u.decision = 1 THEN ` + pgEventType(eventPaymentSucceeded, "u") + `
				ELSE ` + pgEventType(eventPaymentFailed, "u") + ` END AS type,
				u.payment_id, u.username AS payer, ` + pgEventPayee("u") + ` AS payee, u.decided_at AS at,
				` + pgEventSnapshot("u") + ` AS snapshot FROM u
			UNION ALL
			SELECT 2, '` + string(eventPaymentRefunded) + `', r.payment_id, r.username, ` + pgEventPayee("r") + `,
				u.decided_at, ` + pgEventSnapshot("r") + ` FROM r, u WHERE u.decision = 1
		) x ORDER BY x.n
	 )
	 SELECT ` + pgPaymentColumns + ` FROM u`

// AdoptUnadmitted gives p's parameters to the presumed abort recorded for its id when the
// payment itself was never stored (see Decide), and returns the row as stored afterwards: with
// p's parameters when this call adopted it, with those of an earlier adoption otherwise
// (compare fingerprints). An adoption is announced to the other processes, and appends
// payment.created then payment.failed to the event log in the UPDATE's statement.
func (s *PGStore) AdoptUnadmitted(ctx context.Context, p paymentRecord) (paymentRecord, error) {
	if unstorable(p.PaymentID, p.Username, p.From, p.To, p.Currency, p.RefundOf) {
		return p, fmt.Errorf("gateway: adopt payment %q: %w", p.PaymentID, errNULText)
	}
	p.Description = pgText(p.Description)
	fingerprint := p.Fingerprint
	if fingerprint == nil {
		fingerprint = []byte{}
	}
	var out paymentRecord
	var changed bool
	owner := s.Owner()
	err := s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		var err error
		changed = false
		out, err = pgScanPayment(tx.QueryRow(ctx,
			`WITH u AS (
				UPDATE payments SET username = $1, from_account = $2, to_account = $3, amount = $4, currency = $5,
					description = $6, fingerprint = $7, refund_of = $9
				WHERE payment_id = $8 AND presumed AND length(fingerprint) = 0 RETURNING *
			 ), e AS (
				INSERT INTO events (type, payment_id, payer, payee, created_at, snapshot)
				SELECT x.type, u.payment_id, u.username, `+pgEventPayee("u")+`, x.now, `+pgEventSnapshot("u")+`
				FROM u, (SELECT paygate_now_ns() AS now) t,
					LATERAL (VALUES (1, '`+string(eventPaymentCreated.of(p))+`', t.now), (2, '`+string(eventPaymentFailed.of(p))+`', t.now)) AS x(n, type, now)
				ORDER BY x.n
			 )
			 SELECT `+pgPaymentColumns+` FROM u`,
			p.Username, p.From, p.To, p.Amount, p.Currency, p.Description, fingerprint, p.PaymentID, p.RefundOf))
		if err == nil {
			changed = true
			return nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		out, err = pgPayment(ctx, tx, p.PaymentID)
		return err
	})
	if err != nil {
		return out, fmt.Errorf("gateway: adopt payment %s: %w", p.PaymentID, err)
	}
	if changed {
		s.announce(owner, p.PaymentID)
	}
	return out, nil
}

// MarkCompleted records that every participant acknowledged phase two of the payments ids
// (those that are decided; completed_at is the database's clock).
func (s *PGStore) MarkCompleted(ctx context.Context, ids []string, now time.Time) error {
	ids = storable(ids)
	if len(ids) == 0 {
		return nil
	}
	err := pgdb.Statements(ctx, s.pool, func(ctx context.Context, tx pgdb.Querier) error {
		_, err := tx.Exec(ctx,
			`UPDATE payments SET completed = true, completed_at = paygate_now_ns()
			 WHERE payment_id = ANY($1) AND decision <> 0 AND NOT completed`, ids)
		return err
	})
	if err != nil {
		return fmt.Errorf("gateway: record completion of %d payments: %w", len(ids), err)
	}
	return nil
}

// pgLimit is a LIMIT argument: NULL (no limit) for a negative limit, as SQLite reads one.
func pgLimit(limit int) any {
	if limit < 0 {
		return nil
	}
	return limit
}

// Unfinished returns this process's payments (those of its current lease) that are undecided
// or whose phase two is not acknowledged, oldest deadline first, after the cursor when it is
// set, at most limit.
func (s *PGStore) Unfinished(ctx context.Context, after *unfinishedCursor, limit int) ([]paymentRecord, error) {
	q := `SELECT ` + pgPaymentColumns + ` FROM payments WHERE NOT completed AND owner = $1`
	args := []any{s.Owner(), pgLimit(limit)}
	if after != nil {
		q += ` AND (deadline, payment_id) > ($3, $4)`
		args = append(args, after.Deadline, after.PaymentID)
	}
	q += ` ORDER BY deadline, payment_id LIMIT $2`
	out, err := pgPayments(s.pool.Query(ctx, q, args...))
	if err != nil {
		return nil, fmt.Errorf("gateway: list unfinished payments: %w", err)
	}
	return out, nil
}

// ListPayments returns username's payments, newest first, starting after the cursor
// (created_at, payment_id) when it is set, filtered by decision when filter is set.
func (s *PGStore) ListPayments(ctx context.Context, username string, after *pageCursor, filter *decisionFilter, limit int) ([]paymentRecord, error) {
	if unstorable(username) || (after != nil && unstorable(after.PaymentID)) {
		return nil, nil
	}
	q := `SELECT ` + pgPaymentColumns + ` FROM payments WHERE username = $1`
	args := []any{username, pgLimit(limit)}
	if after != nil {
		q += fmt.Sprintf(` AND (created_at, payment_id) < ($%d, $%d)`, len(args)+1, len(args)+2)
		args = append(args, after.CreatedAt, after.PaymentID)
	}
	if filter != nil {
		q += fmt.Sprintf(` AND decision = $%d`, len(args)+1)
		args = append(args, int16(filter.decision))
	}
	q += ` ORDER BY created_at DESC, payment_id DESC LIMIT $2`
	out, err := pgPayments(s.pool.Query(ctx, q, args...))
	if err != nil {
		return nil, fmt.Errorf("gateway: list payments: %w", err)
	}
	return out, nil
}

// ListReceived implements paymentLog: each of the user's accounts' newest payments
// (payments_by_payee, in its order, limit rows at most per account), merged, in one statement.
func (s *PGStore) ListReceived(ctx context.Context, username string, after *pageCursor, filter *decisionFilter, limit int) ([]paymentRecord, error) {
	if unstorable(username) || (after != nil && unstorable(after.PaymentID)) {
		return nil, nil
	}
	cond := ``
	args := []any{username, pgLimit(limit)}
	if after != nil {
		cond += fmt.Sprintf(` AND (q.created_at, q.payment_id) < ($%d, $%d)`, len(args)+1, len(args)+2)
		args = append(args, after.CreatedAt, after.PaymentID)
	}
	if filter != nil {
		cond += fmt.Sprintf(` AND q.decision = $%d`, len(args)+1)
		args = append(args, int16(filter.decision))
	}
	q := `SELECT ` + pgPaymentColumns + ` FROM (
		SELECT p.* FROM user_accounts ua CROSS JOIN LATERAL (
			SELECT * FROM payments q
			WHERE q.to_account = ua.account_id AND q.username <> $1` + cond + `
			ORDER BY q.created_at DESC, q.payment_id DESC LIMIT $2
		) p
		WHERE ua.username = $1 AND ua.account_id <> ''
	) payments ORDER BY created_at DESC, payment_id DESC LIMIT $2`
	out, err := pgPayments(s.pool.Query(ctx, q, args...))
	if err != nil {
		return nil, fmt.Errorf("gateway: list received payments: %w", err)
	}
	return out, nil
}

// Unsettled returns the ids of decided payments whose phase two is not acknowledged yet and
// that change one of accounts: any such payment, or with raising only those that raise the
// account's available money (a commit crediting it, an abort releasing its hold).
func (s *PGStore) Unsettled(ctx context.Context, accounts []string, raising bool) ([]string, error) {
	accounts = storable(accounts)
	if len(accounts) == 0 {
		return nil, nil
	}
	q := `SELECT payment_id FROM payments WHERE NOT completed AND decision <> 0 AND (from_account = ANY($1) OR to_account = ANY($1))`
	if raising {
		q = `SELECT payment_id FROM payments WHERE NOT completed AND decision <> 0 AND (
			(decision = 1 AND to_account = ANY($1)) OR (decision = 2 AND from_account = ANY($1)))`
	}
	rows, err := s.pool.Query(ctx, q, accounts)
	if err != nil {
		return nil, fmt.Errorf("gateway: list unsettled payments: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("gateway: list unsettled payments: %w", err)
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// Secret returns the store's secret name, creating it with size random bytes on first use.
// Processes sharing the store agree on it: the first to create it wins.
func (s *PGStore) Secret(ctx context.Context, name string, size int) ([]byte, error) {
	if unstorable(name) {
		return nil, fmt.Errorf("gateway: secret %q: %w", name, errNULText)
	}
	var v []byte
	err := s.pool.QueryRow(ctx, `SELECT value FROM secrets WHERE name = $1`, name).Scan(&v)
	if err == nil {
		return v, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("gateway: read secret %s: %w", name, err)
	}
	fresh := make([]byte, size)
	if _, err := rand.Read(fresh); err != nil {
		return nil, fmt.Errorf("gateway: make secret %s: %w", name, err)
	}
	err = s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO secrets (name, value, created_at) VALUES ($1, $2, paygate_now_ns()) ON CONFLICT (name) DO NOTHING`,
			name, fresh); err != nil {
			return err
		}
		// A concurrent creator's insert was waited for: this reads the winner's value.
		return tx.QueryRow(ctx, `SELECT value FROM secrets WHERE name = $1`, name).Scan(&v)
	})
	if err != nil {
		return nil, fmt.Errorf("gateway: store secret %s: %w", name, err)
	}
	return v, nil
}

// ---- leases

// newOwnerID returns a fresh lease id: host, pid and random digits.
func (s *PGStore) newOwnerID() string {
	var b [6]byte
	rand.Read(b[:])
	return s.host + "-" + hex.EncodeToString(b[:])
}

// newLease inserts a lease under a new owner id and makes it the store's (moving the open
// streams of the previous one to it).
func (s *PGStore) newLease(ctx context.Context) error {
	id := s.newOwnerID()
	prev := s.Owner()
	start := time.Now()
	var db int64
	err := s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		if err := tx.QueryRow(ctx,
			`INSERT INTO leases (owner, expires_at, started_at) VALUES ($1, paygate_now_ns() + $2, paygate_now_ns())
			 RETURNING started_at`, id, s.ttl.Nanoseconds()).Scan(&db); err != nil {
			return err
		}
		if prev == "" {
			return nil
		}
		_, err := tx.Exec(ctx, `UPDATE streams SET owner = $1 WHERE owner = $2`, id, prev)
		return err
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.owner = id
	s.past[id] = struct{}{}
	s.mu.Unlock()
	s.renewedAt.Store(&start)
	// The insert's round trip is at least as long as the BEGIN's and the INSERT's: a first
	// estimate, refined by the renewals.
	if err := s.measureClock(ctx); err != nil {
		s.offset.Store(db - start.UnixNano())
	}
	return nil
}

// measureClock estimates the offset of the database's clock from the local one, as the
// midpoint of a round trip reading it (the shortest of a few).
func (s *PGStore) measureClock(ctx context.Context) error {
	best := time.Duration(math.MaxInt64)
	for range 3 {
		t0 := time.Now()
		var db int64
		if err := s.pool.QueryRow(ctx, `SELECT paygate_now_ns()`).Scan(&db); err != nil {
			return err
		}
		rtt := time.Since(t0)
		if rtt < best {
			best = rtt
			s.offset.Store(db - t0.Add(rtt/2).UnixNano())
		}
	}
	return nil
}

// Owner is this process's current lease id.
func (s *PGStore) Owner() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.owner
}

// ownedByThis reports whether owner is one of the leases this store has had.
func (s *PGStore) ownedByThis(owner string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.past[owner]
	return ok
}

// LeaseTTL is how long the lease lasts without renewal.
func (s *PGStore) LeaseTTL() time.Duration { return s.ttl }

// Holding says whether the lease is certainly still valid: less than LeaseTTL minus a fifth of
// it has passed, by the local monotonic clock, since the start of its last successful renewal
// (or of its creation), and it was not released.
func (s *PGStore) Holding() bool {
	at := s.renewedAt.Load()
	return at != nil && time.Since(*at) < s.ttl-s.ttl/5
}

// Now is the database's clock, as estimated at the last renewal: the local clock plus the
// measured offset.
func (s *PGStore) Now() time.Time {
	return time.Now().Add(time.Duration(s.offset.Load()))
}

// RenewLease extends the lease to the database's clock plus LeaseTTL if it has not expired. When
// it has (or was released), the store takes a new lease, with a new Owner and none of the
// payments, and RenewLease returns ErrLeaseLost. It also measures the clock offset (Now), and
// now and then deletes leases expired for over an hour, the streams of dead leases and throttle
// buckets that are full again.
func (s *PGStore) RenewLease(ctx context.Context) error {
	s.renewing.Lock()
	defer s.renewing.Unlock()
	if s.released {
		return errLeaseReleased
	}
	owner := s.Owner()
	start := time.Now()
	var renewed bool
	var db int64
	var t0, t1 time.Time
	err := s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		// Lock the row first, then read the clock: a claimant judging this lease holds the row
		// FOR SHARE, so the two cannot both believe they won.
		renewed = false
		_, err := tx.Exec(ctx, `SELECT 1 FROM leases WHERE owner = $1 FOR UPDATE`, owner)
		if err != nil {
			return err
		}
		t0 = time.Now()
		err = tx.QueryRow(ctx,
			`UPDATE leases SET expires_at = paygate_now_ns() + $2 WHERE owner = $1 AND expires_at > paygate_now_ns()
			 RETURNING paygate_now_ns()`, owner, s.ttl.Nanoseconds()).Scan(&db)
		t1 = time.Now()
		if errors.Is(err, pgx.ErrNoRows) { // expired, or deleted (released or collected)
			return nil
		}
		renewed = err == nil
		return err
	})
	if err != nil {
		return fmt.Errorf("gateway: renew lease: %w", err)
	}
	if !renewed {
		s.logger.LogAttrs(ctx, slog.LevelWarn, "store lease expired before renewal; taking a new one", slog.String("lease", owner))
		if err := s.newLease(ctx); err != nil {
			s.renewedAt.Store(nil)
			return errors.Join(ErrLeaseLost, fmt.Errorf("gateway: take a new lease: %w", err))
		}
		return ErrLeaseLost
	}
	s.renewedAt.Store(&start)
	s.offset.Store(db - t0.Add(t1.Sub(t0)/2).UnixNano())
	s.collectGarbage(ctx)
	return nil
}

// collectGarbage deletes, at most once a minute per process and a bounded number at a time,
// leases expired for over an hour, the streams of leases deleted, and throttle buckets
// untouched for ten minutes that have refilled to their burst. (Streams of a lease that expired
// are not counted anyway, and move to the process's new lease when it finds out, see newLease.)
func (s *PGStore) collectGarbage(ctx context.Context) {
	last := s.lastGC.Load()
	now := time.Now().UnixNano()
	if now-last < int64(time.Minute) || !s.lastGC.CompareAndSwap(last, now) {
		return
	}
	stmts := []string{
		`DELETE FROM leases WHERE owner IN (SELECT owner FROM leases WHERE expires_at < paygate_now_ns() - 3600000000000 LIMIT 1000)`,
		`DELETE FROM streams WHERE id IN (SELECT s.id FROM streams s WHERE NOT EXISTS (
			SELECT 1 FROM leases l WHERE l.owner = s.owner) LIMIT 10000)`,
		`DELETE FROM throttle_buckets WHERE (scope, key) IN (SELECT scope, key FROM throttle_buckets
			WHERE at < paygate_now_ns() - 600000000000 AND tokens + (paygate_now_ns() - at)::float8 / every_ns >= burst
			LIMIT 10000)`,
	}
	for _, q := range stmts {
		if _, err := s.pool.Exec(ctx, q); err != nil {
			s.logger.LogAttrs(ctx, slog.LevelWarn, "store cleanup", slog.String("error", err.Error()))
			return
		}
	}
}

// ReleaseLease hands every unfinished payment of this process's back (to the empty owner:
// orphans at once), closes its streams and deletes its lease, in one transaction: for a
// graceful shutdown.
// The store holds no lease afterwards: Holding is false, claims take nothing, and RenewLease
// fails with errLeaseReleased (it does not take a new lease).
func (s *PGStore) ReleaseLease(ctx context.Context) error {
	s.renewing.Lock()
	defer s.renewing.Unlock()
	owner := s.Owner()
	err := s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		// Payments first, then the lease row: the order Claim locks them in.
		if _, err := tx.Exec(ctx, `UPDATE payments SET owner = '' WHERE owner = $1 AND NOT completed`, owner); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM streams WHERE owner = $1`, owner); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM leases WHERE owner = $1`, owner)
		return err
	})
	if err != nil {
		return fmt.Errorf("gateway: release lease: %w", err)
	}
	s.released = true
	s.renewedAt.Store(nil)
	return nil
}

// lockLeases locks the lease rows of owners FOR SHARE (in owner order), then reads the
// database's clock, and returns which of them are live: so that a lease judged expired here
// cannot be renewed until tx ends (see RenewLease).
func lockLeases(ctx context.Context, tx pgx.Tx, owners []string) (live map[string]bool, err error) {
	rows, err := tx.Query(ctx, `SELECT owner, expires_at FROM leases WHERE owner = ANY($1) ORDER BY owner FOR SHARE`, owners)
	if err != nil {
		return nil, err
	}
	expires := map[string]int64{}
	var o string
	var e int64
	_, err = pgx.ForEachRow(rows, []any{&o, &e}, func() error { expires[o] = e; return nil })
	if err != nil {
		return nil, err
	}
	var now int64
	if err := tx.QueryRow(ctx, `SELECT paygate_now_ns()`).Scan(&now); err != nil {
		return nil, err
	}
	live = map[string]bool{}
	for o, e := range expires {
		live[o] = e > now
	}
	return live, nil
}

// Claim makes id this process's payment unless another live lease holds it, and returns the
// row as stored afterwards with whether this process holds it: true for a payment of its
// current lease while Holding, for an orphan it took, and for a completed payment (nothing is
// left to drive; its owner is not changed); false while another live lease holds it, or when
// this process's own lease has expired. It returns ErrNotFound for an unknown id.
func (s *PGStore) Claim(ctx context.Context, id string) (paymentRecord, bool, error) {
	if unstorable(id) {
		return paymentRecord{}, false, ErrNotFound
	}
	me := s.Owner()
	// The usual cases are one read: one's own payment, a completed one, or one whose owner's
	// lease is live by the read's snapshot (a lease seen live may have expired since: the
	// caller asks again later). Only a claim that may succeed locks anything.
	var owner string
	var ownerLive bool
	p, err := pgScanPayment(s.pool.QueryRow(ctx,
		`SELECT `+pgPaymentColumns+`, owner, EXISTS (SELECT 1 FROM leases l WHERE l.owner = p.owner AND l.expires_at > paygate_now_ns())
		 FROM payments p WHERE payment_id = $1`, id), &owner, &ownerLive)
	if errors.Is(err, pgx.ErrNoRows) {
		return p, false, ErrNotFound
	}
	if err != nil {
		return p, false, fmt.Errorf("gateway: claim payment %s: %w", id, err)
	}
	switch {
	case p.Completed, owner == me && s.Holding():
		return p, true, nil
	case owner != me && owner != "" && ownerLive:
		return p, false, nil
	}
	var held bool
	err = s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		var err error
		p, owner, err = pgPaymentOwner(ctx, tx, id, true)
		if err != nil {
			return err
		}
		if p.Completed {
			held = true
			return nil
		}
		owners := []string{me}
		if owner != "" && owner != me {
			owners = append(owners, owner)
		}
		slices.Sort(owners)
		live, err := lockLeases(ctx, tx, owners)
		if err != nil {
			return err
		}
		held = live[me] && (owner == me || owner == "" || !live[owner])
		if !held || owner == me {
			return nil
		}
		p, err = pgScanPayment(tx.QueryRow(ctx, `UPDATE payments SET owner = $1 WHERE payment_id = $2 RETURNING `+pgPaymentColumns, me, id))
		return err
	})
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return p, false, err
		}
		return p, false, fmt.Errorf("gateway: claim payment %s: %w", id, err)
	}
	return p, held, nil
}

// pgPaymentOwner reads a payment and its owner; forUpdate also locks its row.
func pgPaymentOwner(ctx context.Context, q pgQuerier, id string, forUpdate bool) (paymentRecord, string, error) {
	query := `SELECT ` + pgPaymentColumns + `, owner FROM payments WHERE payment_id = $1`
	if forUpdate {
		query += ` FOR NO KEY UPDATE`
	}
	var owner string
	p, err := pgScanPayment(q.QueryRow(ctx, query, id), &owner)
	if errors.Is(err, pgx.ErrNoRows) {
		return p, "", ErrNotFound
	}
	if err != nil {
		return p, "", fmt.Errorf("gateway: read payment %s: %w", id, err)
	}
	return p, owner, nil
}

// ClaimOrphans claims up to limit orphaned unfinished payments, oldest deadline first, skipping
// rows another process is claiming at the same moment (SKIP LOCKED), and returns how many it
// claimed. It claims nothing while this process's own lease has expired.
func (s *PGStore) ClaimOrphans(ctx context.Context, limit int) (int, error) {
	if limit <= 0 {
		return 0, nil
	}
	me := s.Owner()
	// Which owners might have orphans, by this statement's snapshot (a lease it sees live may
	// expire right after: the next call finds those).
	rows, err := s.pool.Query(ctx,
		`SELECT DISTINCT owner FROM payments p WHERE NOT completed AND owner <> $1 AND NOT EXISTS (
			SELECT 1 FROM leases l WHERE l.owner = p.owner AND l.expires_at > paygate_now_ns())`, me)
	if err != nil {
		return 0, fmt.Errorf("gateway: claim orphans: %w", err)
	}
	candidates, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, fmt.Errorf("gateway: claim orphans: %w", err)
	}
	if len(candidates) == 0 {
		return 0, nil
	}
	var n int
	err = s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		n = 0
		owners := append([]string{me}, candidates...)
		slices.Sort(owners)
		live, err := lockLeases(ctx, tx, owners)
		if err != nil {
			return err
		}
		if !live[me] {
			return nil
		}
		var dead []string
		for _, o := range candidates {
			if !live[o] {
				dead = append(dead, o)
			}
		}
		if len(dead) == 0 {
			return nil
		}
		tag, err := tx.Exec(ctx,
			`UPDATE payments SET owner = $1 WHERE payment_id IN (
				SELECT payment_id FROM payments WHERE NOT completed AND owner = ANY($2)
				ORDER BY deadline, payment_id LIMIT $3 FOR UPDATE SKIP LOCKED)`, me, dead, limit)
		n = int(tag.RowsAffected())
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("gateway: claim orphans: %w", err)
	}
	return n, nil
}

// Listen calls changed with the id of every payment another process admitted, decided or
// adopted (announced with pg_notify), until ctx ends, on a connection of its own; it reconnects,
// with backoff, when the connection is lost (notifications sent meanwhile are lost). It returns
// nil when ctx ends.
func (s *PGStore) Listen(ctx context.Context, changed func(id string)) error {
	cfg := s.pool.Config().ConnConfig
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := s.listenOnce(ctx, cfg, changed, func() { backoff = 100 * time.Millisecond })
		if ctx.Err() != nil {
			break
		}
		s.logger.LogAttrs(ctx, slog.LevelWarn, "store notifications: connection lost; reconnecting",
			slog.String("error", err.Error()), slog.Duration("backoff", backoff))
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	return nil
}

// listenOnce listens on one connection until it fails or ctx ends; connected is called once the
// LISTEN is in place.
func (s *PGStore) listenOnce(ctx context.Context, cfg *pgx.ConnConfig, changed func(string), connected func()) error {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, `LISTEN `+pgNotifyChannel); err != nil {
		return err
	}
	connected()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		owner, id, ok := strings.Cut(n.Payload, ":")
		if !ok || s.ownedByThis(owner) {
			continue
		}
		changed(id)
	}
}

// ---- shared limits

// ReserveAttempt takes one attempt from the budget (burst, refilled at one every every, by the
// database's clock) of each of keys in scope, or, when one of them has none left, takes nothing
// and returns how long until all of them have one (at least a second). The buckets are created
// full, then locked in key order, in one transaction.
func (s *PGStore) ReserveAttempt(ctx context.Context, scope string, keys []string, burst int, every time.Duration) (time.Duration, error) {
	keys = slices.Compact(slices.Sorted(slices.Values(keys)))
	if len(keys) == 0 || burst <= 0 || every <= 0 {
		return 0, nil
	}
	if unstorable(scope) || unstorable(keys...) {
		return 0, fmt.Errorf("gateway: throttle %s: %w", scope, errNULText)
	}
	var wait time.Duration
	err := s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		wait = 0
		if _, err := tx.Exec(ctx,
			`INSERT INTO throttle_buckets (scope, key, tokens, at, burst, every_ns)
			 SELECT $1, k, $3::integer, paygate_now_ns(), $3::integer, $4 FROM unnest($2::text[]) AS k ORDER BY k
			 ON CONFLICT (scope, key) DO NOTHING`, scope, keys, burst, every.Nanoseconds()); err != nil {
			return err
		}
		rows, err := tx.Query(ctx,
			`SELECT key, tokens, at FROM throttle_buckets WHERE scope = $1 AND key = ANY($2) ORDER BY key FOR UPDATE`, scope, keys)
		if err != nil {
			return err
		}
		tokens := make(map[string]float64, len(keys))
		at := make(map[string]int64, len(keys))
		var k string
		var t float64
		var a int64
		if _, err := pgx.ForEachRow(rows, []any{&k, &t, &a}, func() error { tokens[k], at[k] = t, a; return nil }); err != nil {
			return err
		}
		var now int64
		if err := tx.QueryRow(ctx, `SELECT paygate_now_ns()`).Scan(&now); err != nil {
			return err
		}
		left := make([]float64, len(keys))
		for i, k := range keys {
			t := tokens[k]
			if now > at[k] {
				t = min(float64(burst), t+float64(now-at[k])/float64(every))
			}
			if t < 1 {
				wait = max(wait, time.Duration((1-t)*float64(every)))
			}
			left[i] = t - 1
		}
		if wait > 0 {
			wait = max(wait, time.Second)
			return nil
		}
		_, err = tx.Exec(ctx,
			`UPDATE throttle_buckets b SET tokens = x.tokens, at = $4, burst = $5, every_ns = $6
			 FROM unnest($2::text[], $3::float8[]) AS x(key, tokens) WHERE b.scope = $1 AND b.key = x.key`,
			scope, keys, left, now, burst, every.Nanoseconds())
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("gateway: throttle %s: %w", scope, err)
	}
	return wait, nil
}

// RefundAttempt gives one attempt back to each of keys in scope (at most burst).
func (s *PGStore) RefundAttempt(ctx context.Context, scope string, keys []string, burst int) error {
	keys = slices.Compact(slices.Sorted(slices.Values(storable(keys))))
	if len(keys) == 0 || unstorable(scope) {
		return nil
	}
	err := s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx,
			`UPDATE throttle_buckets SET tokens = least($3::float8, tokens + 1)
			 WHERE (scope, key) IN (SELECT scope, key FROM throttle_buckets WHERE scope = $1 AND key = ANY($2) ORDER BY key FOR UPDATE)`,
			scope, keys, burst)
		return err
	})
	if err != nil {
		return fmt.Errorf("gateway: throttle %s: refund: %w", scope, err)
	}
	return nil
}

// OpenStream records an open stream of username's unless username has max streams open on
// processes whose lease is live (ErrTooManyStreams); max <= 0 means no limit. Concurrent opens
// for one username, on any replicas, are counted one after the other (a transaction advisory
// lock on the username). release deletes the stream's row (once; with its own short timeout).
func (s *PGStore) OpenStream(ctx context.Context, username string, max int) (func(), error) {
	if unstorable(username) {
		return nil, fmt.Errorf("gateway: open stream: %w", errNULText)
	}
	var b [12]byte
	rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	err := s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		if max > 0 {
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, hashtext($2))`, pgStreamLockClass, username); err != nil {
				return err
			}
			var open int
			if err := tx.QueryRow(ctx,
				`SELECT count(*) FROM streams s JOIN leases l ON l.owner = s.owner
				 WHERE s.username = $1 AND l.expires_at > paygate_now_ns()`, username).Scan(&open); err != nil {
				return err
			}
			if open >= max {
				return ErrTooManyStreams
			}
		}
		_, err := tx.Exec(ctx, `INSERT INTO streams (id, username, owner, opened_at) VALUES ($1, $2, $3, paygate_now_ns())`,
			id, username, s.Owner())
		return err
	})
	if errors.Is(err, ErrTooManyStreams) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("gateway: open stream: %w", err)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
				_, err := tx.Exec(ctx, `DELETE FROM streams WHERE id = $1`, id)
				return err
			})
			if err != nil {
				// The row goes when this lease dies (it is not counted after that).
				s.logger.LogAttrs(ctx, slog.LevelWarn, "close stream", slog.String("error", err.Error()))
			}
		})
	}, nil
}
