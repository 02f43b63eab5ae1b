package gateway

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/paygate/paygate/internal/pgdb"
)

// The PostgreSQL store's admin port (see adminStore), for replicas sharing the store:
//
//   - UpdateUser locks, in username order, the user's row and those of every enabled admin
//     (FOR NO KEY UPDATE) before it reads them: of two concurrent updates that would each leave
//     the other admin the last one, the second waits for the first, re-reads the rows it
//     waited for as committed (an admin demoted meanwhile no longer matches) and refuses with
//     ErrLastAdmin. Locking in one order means they never deadlock.
//   - AppendAudit takes a transaction advisory lock (pgAuditLockClass), then reads the last
//     entry and the database's clock, then inserts: appends from every replica run one after
//     the other, each reading its predecessor as committed, so seq has no gaps and the chain no
//     forks; At follows seq (one clock, read under the lock).
//   - UseTOTPStep is one compare-and-set UPDATE.
//
// Text PostgreSQL cannot hold: names and ids holding a NUL byte (or invalid UTF-8) are not
// found by reads and refused by writes (errNULText); the audit log's fields and a trail event's
// detail are free text, stored with U+FFFD in their place (the entry is hashed as stored).

// pgAuditLockClass is the first key of the transaction advisory lock AppendAudit takes (the
// second is 0).
const pgAuditLockClass int32 = 0x70676101

// ---- users as admins manage them

// ListUsers returns users in username order after the username after (when set), at most limit,
// with their accounts: only those whose username contains query (ASCII case-insensitive, as in
// SQLite) when it is set, and only of role when it is set.
func (s *PGStore) ListUsers(ctx context.Context, query, role, after string, limit int) ([]userRecord, error) {
	if unstorable(query, role, after) {
		return nil, nil
	}
	q := `SELECT ` + pgUserColumns + ` FROM users u WHERE u.username > $1`
	args := []any{after, pgLimit(limit)}
	if query != "" {
		args = append(args, query)
		q += fmt.Sprintf(` AND strpos(lower(u.username), lower($%d COLLATE "C")) > 0`, len(args))
	}
	if role != "" {
		args = append(args, role)
		q += fmt.Sprintf(` AND u.role = $%d`, len(args))
	}
	q += ` ORDER BY u.username LIMIT $2`
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("gateway: list users: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (userRecord, error) { return pgScanUser(row) })
	if err != nil {
		return nil, fmt.Errorf("gateway: list users: %w", err)
	}
	return out, nil
}

// UpdateUser implements adminStore. fn runs in the transaction, with the user's row and those
// of the enabled admins locked: it must be quick (hash a new password before calling
// UpdateUser, not in fn), and it runs again when the transaction is retried (a serialization
// failure or a deadlock), on the row as read then.
func (s *PGStore) UpdateUser(ctx context.Context, username string, fn func(u *userRecord) error, revokeSessions bool, now time.Time) (before, after userRecord, revoked int, err error) {
	if unstorable(username) {
		return before, after, 0, ErrNotFound
	}
	var refused error // fn's
	err = s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		revoked, refused = 0, nil
		rows, err := tx.Query(ctx,
			`SELECT `+pgUserColumns+` FROM users u WHERE u.username = $1 OR (u.role = $2 AND NOT u.disabled)
			 ORDER BY u.username FOR NO KEY UPDATE OF u`, username, RoleAdmin)
		if err != nil {
			return err
		}
		locked, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (userRecord, error) { return pgScanUser(row) })
		if err != nil {
			return err
		}
		found, others := false, 0
		for _, u := range locked {
			if u.Username == username {
				before, found = u, true
			} else if enabledAdmin(u) {
				others++
			}
		}
		if !found {
			return ErrNotFound
		}
		after, refused = applyUserUpdate(before, fn)
		if refused != nil {
			return refused
		}
		if enabledAdmin(before) && !enabledAdmin(after) && others == 0 {
			return ErrLastAdmin
		}
		if unstorable(after.PasswordHash, after.Role, after.TOTPSecret) {
			return errNULText
		}
		if _, err := tx.Exec(ctx,
			`UPDATE users SET password_hash = $1, role = $2, disabled = $3, must_change_password = $4, totp_secret = $5,
				totp_last_step = $6 WHERE username = $7`,
			after.PasswordHash, after.Role, after.Disabled, after.MustChangePassword, after.TOTPSecret,
			after.TOTPLastStep, username); err != nil {
			return err
		}
		if !revokeSessions {
			return nil
		}
		tag, err := tx.Exec(ctx,
			`UPDATE sessions SET revoked_at = $1 WHERE username = $2 AND revoked_at IS NULL AND expires_at > $1`,
			now.UnixNano(), username)
		revoked = int(tag.RowsAffected())
		return err
	})
	if err != nil {
		return before, after, 0, userUpdateError(username, err, refused)
	}
	return before, after, revoked, nil
}

// UseTOTPStep implements adminStore: a compare-and-set of totp_last_step. It returns ErrNotFound
// for an unknown user.
func (s *PGStore) UseTOTPStep(ctx context.Context, username string, step int64) (bool, error) {
	if unstorable(username) {
		return false, ErrNotFound
	}
	var used bool
	err := pgdb.Statements(ctx, s.pool, func(ctx context.Context, q pgdb.Querier) error {
		tag, err := q.Exec(ctx, `UPDATE users SET totp_last_step = $1 WHERE username = $2 AND totp_last_step < $1`, step, username)
		if err != nil {
			return err
		}
		if used = tag.RowsAffected() == 1; used {
			return nil
		}
		return pgUserExists(ctx, q, username)
	})
	if errors.Is(err, ErrNotFound) {
		return false, err
	}
	if err != nil {
		return false, fmt.Errorf("gateway: record second factor step of %s: %w", username, err)
	}
	return used, nil
}

// pgUserExists returns nil when username exists, else ErrNotFound.
func pgUserExists(ctx context.Context, q pgQuerier, username string) error {
	var exists bool
	if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM users WHERE username = $1)`, username).Scan(&exists); err != nil {
		return err
	}
	if !exists {
		return ErrNotFound
	}
	return nil
}

// LinkAccount links account to username: ErrNotFound for an unknown user, ErrAccountLinked
// when the account is linked to anybody (username included). Of concurrent links of one
// account, one succeeds.
func (s *PGStore) LinkAccount(ctx context.Context, username, account string) error {
	if unstorable(username) {
		return ErrNotFound
	}
	if unstorable(account) {
		return fmt.Errorf("gateway: link account %q: %w", account, errNULText)
	}
	err := s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		if err := pgUserExists(ctx, tx, username); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx,
			`INSERT INTO user_accounts (account_id, username) VALUES ($1, $2) ON CONFLICT (account_id) DO NOTHING`,
			account, username)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("%w: %s", ErrAccountLinked, account)
		}
		return nil
	})
	if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrAccountLinked) {
		return fmt.Errorf("gateway: link account %s: %w", account, err)
	}
	return err
}

// UnlinkAccount removes the link of account to username, or returns ErrNotFound when there is
// none.
func (s *PGStore) UnlinkAccount(ctx context.Context, username, account string) error {
	if unstorable(username, account) {
		return ErrNotFound
	}
	var n int64
	err := pgdb.Statements(ctx, s.pool, func(ctx context.Context, q pgdb.Querier) error {
		tag, err := q.Exec(ctx, `DELETE FROM user_accounts WHERE account_id = $1 AND username = $2`, account, username)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return fmt.Errorf("gateway: unlink account %s: %w", account, err)
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// ---- the audit log

// AppendAudit implements adminStore: see the serialisation of appends above. At is the
// database's clock, read once the previous entry is committed.
func (s *PGStore) AppendAudit(ctx context.Context, rec auditRecord) (auditRecord, error) {
	for _, f := range []*string{&rec.Actor, &rec.ActorCert, &rec.Peer, &rec.Action, &rec.Target, &rec.Outcome,
		&rec.Reason, &rec.RequestID, &rec.Before, &rec.After} {
		*f = pgText(*f)
	}
	var out auditRecord
	err := s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		out = rec
		out.Seq, out.PrevHash = 1, nil
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, 0)`, pgAuditLockClass); err != nil {
			return err
		}
		// A statement after the lock: its snapshot holds the previous holder's entry.
		var last, now int64
		var prev []byte
		err := tx.QueryRow(ctx, `SELECT seq, hash, paygate_now_ns() FROM audit_log ORDER BY seq DESC LIMIT 1`).Scan(&last, &prev, &now)
		switch {
		case err == nil:
			out.Seq, out.PrevHash = last+1, prev
		case errors.Is(err, pgx.ErrNoRows):
			if err := tx.QueryRow(ctx, `SELECT paygate_now_ns()`).Scan(&now); err != nil {
				return err
			}
		default:
			return err
		}
		out.At = time.Unix(0, now)
		out.Hash = auditHash(out.PrevHash, out)
		_, err = tx.Exec(ctx, `INSERT INTO audit_log (`+auditColumns+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`,
			out.Seq, now, out.Actor, out.ActorCert, out.Peer, out.Action, out.Target, out.Outcome,
			out.Reason, out.RequestID, out.Before, out.After, nonNil(out.PrevHash), out.Hash)
		return err
	})
	if err != nil {
		return rec, fmt.Errorf("gateway: append to the audit log: %w", err)
	}
	return out, nil
}

// ListAudit returns entries newest first with Seq below before (when before > 0), only actor's
// when actor is set, at most limit.
func (s *PGStore) ListAudit(ctx context.Context, actor string, before int64, limit int) ([]auditRecord, error) {
	if unstorable(actor) {
		return nil, nil
	}
	q := `SELECT ` + auditColumns + ` FROM audit_log WHERE true`
	args := []any{pgLimit(limit)}
	if before > 0 {
		args = append(args, before)
		q += fmt.Sprintf(` AND seq < $%d`, len(args))
	}
	if actor != "" {
		args = append(args, actor)
		q += fmt.Sprintf(` AND actor = $%d`, len(args))
	}
	out, err := s.audit(ctx, q+` ORDER BY seq DESC LIMIT $1`, args...)
	if err != nil {
		return nil, fmt.Errorf("gateway: list the audit log: %w", err)
	}
	return out, nil
}

// ScanAudit returns entries oldest first with Seq above after, at most limit, as stored.
func (s *PGStore) ScanAudit(ctx context.Context, after int64, limit int) ([]auditRecord, error) {
	out, err := s.audit(ctx, `SELECT `+auditColumns+` FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2`, after, pgLimit(limit))
	if err != nil {
		return nil, fmt.Errorf("gateway: read the audit log: %w", err)
	}
	return out, nil
}

func (s *PGStore) audit(ctx context.Context, q string, args ...any) ([]auditRecord, error) {
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (auditRecord, error) { return scanAudit(row) })
	if len(out) == 0 {
		out = nil
	}
	return out, err
}

// ---- payments as admins see them

// AppendTrail appends events to their payments' trails, in one statement (so all or none), in
// their order. An event without a time gets the store's clock.
func (s *PGStore) AppendTrail(ctx context.Context, events []trailEvent) error {
	if len(events) == 0 {
		return nil
	}
	n := len(events)
	ids, banks, votes, decisions, replicas, details := make([]string, n), make([]string, n), make([]string, n),
		make([]string, n), make([]string, n), make([]string, n)
	at := make([]int64, n)
	kinds, by, attempts := make([]int32, n), make([]int32, n), make([]int32, n)
	for i, e := range events {
		if unstorable(e.PaymentID, e.Bank, e.Vote, e.Decision, e.Replica) {
			return fmt.Errorf("gateway: append trail events of %q: %w", e.PaymentID, errNULText)
		}
		if e.At.IsZero() {
			e.At = s.Now()
		}
		ids[i], banks[i], votes[i], decisions[i], replicas[i], details[i] = e.PaymentID, e.Bank, e.Vote, e.Decision,
			e.Replica, pgText(e.Detail)
		at[i], kinds[i], by[i], attempts[i] = e.At.UnixNano(), e.Kind, e.DecidedBy, e.Attempt
	}
	err := pgdb.Statements(ctx, s.pool, func(ctx context.Context, q pgdb.Querier) error {
		_, err := q.Exec(ctx,
			`INSERT INTO payment_trail (`+trailColumns+`)
			 SELECT payment_id, at, kind, bank, vote, decision, decided_by, attempt, replica, detail
			 FROM unnest($1::text[], $2::bigint[], $3::integer[], $4::text[], $5::text[], $6::text[], $7::integer[],
				$8::integer[], $9::text[], $10::text[])
				WITH ORDINALITY AS x(payment_id, at, kind, bank, vote, decision, decided_by, attempt, replica, detail, i)
			 ORDER BY i`,
			ids, at, kinds, banks, votes, decisions, by, attempts, replicas, details)
		return err
	})
	if err != nil {
		return fmt.Errorf("gateway: append %d trail events: %w", n, err)
	}
	return nil
}

// Trail returns a payment's trail events, oldest first (in the order appended).
func (s *PGStore) Trail(ctx context.Context, paymentID string) ([]trailEvent, error) {
	if unstorable(paymentID) {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT `+trailColumns+` FROM payment_trail WHERE payment_id = $1 ORDER BY id`, paymentID)
	if err != nil {
		return nil, fmt.Errorf("gateway: read the trail of %s: %w", paymentID, err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (trailEvent, error) { return scanTrail(row) })
	if err != nil {
		return nil, fmt.Errorf("gateway: read the trail of %s: %w", paymentID, err)
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// SearchPayments returns every user's payments matching q, newest first (created_at,
// payment_id), after q.After when set, at most q.Limit.
func (s *PGStore) SearchPayments(ctx context.Context, q paymentQuery) ([]paymentRecord, error) {
	if unstorable(q.Username, q.Account, q.Bank) || (q.After != nil && unstorable(q.After.PaymentID)) {
		return nil, nil
	}
	where, args := paymentQueryWhere(q, "$", "strpos")
	query := fmt.Sprintf(`SELECT %s FROM payments WHERE %s ORDER BY created_at DESC, payment_id DESC LIMIT $%d`,
		pgPaymentColumns, where, len(args)+1)
	out, err := pgPayments(s.pool.Query(ctx, query, append(args, pgLimit(q.Limit))...))
	if err != nil {
		return nil, fmt.Errorf("gateway: search payments: %w", err)
	}
	return out, nil
}

// InDoubt returns the payments that are undecided or not yet completed, of every replica,
// oldest deadline first, at most limit.
func (s *PGStore) InDoubt(ctx context.Context, limit int) ([]paymentRecord, error) {
	out, err := pgPayments(s.pool.Query(ctx,
		`SELECT `+pgPaymentColumns+` FROM payments WHERE NOT completed ORDER BY deadline, payment_id LIMIT $1`, pgLimit(limit)))
	if err != nil {
		return nil, fmt.Errorf("gateway: list in-doubt payments: %w", err)
	}
	return out, nil
}

// trailColumns are the columns of payment_trail that scanTrail reads, in its order.
const trailColumns = `payment_id, at, kind, bank, vote, decision, decided_by, attempt, replica, detail`

func scanTrail(row interface{ Scan(...any) error }) (trailEvent, error) {
	var e trailEvent
	var at int64
	err := row.Scan(&e.PaymentID, &at, &e.Kind, &e.Bank, &e.Vote, &e.Decision, &e.DecidedBy, &e.Attempt, &e.Replica, &e.Detail)
	e.At = time.Unix(0, at)
	return e, err
}
