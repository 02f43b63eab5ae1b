package gateway

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/paygate/paygate/internal/sqlitedb"
)

// The SQLite store's admin port (see adminStore). Every write runs in the one writer's
// transaction (sqlitedb.Update), so read-then-write sequences (UpdateUser's last-admin check,
// AppendAudit's link to the previous entry) cannot interleave with another write.

// ---- users as admins manage them

// ListUsers returns users in username order after the username after (when set), at most limit,
// with their accounts: only those whose username contains query (ASCII case-insensitive) when
// it is set, and only of role when it is set.
func (s *SQLiteStore) ListUsers(ctx context.Context, query, role, after string, limit int) ([]userRecord, error) {
	q := `SELECT ` + userColumns + `,
		(SELECT json_group_array(account_id) FROM user_accounts a WHERE a.username = users.username)
		FROM users WHERE username > ?`
	args := []any{after}
	if query != "" {
		q += ` AND instr(lower(username), lower(?)) > 0`
		args = append(args, query)
	}
	if role != "" {
		q += ` AND role = ?`
		args = append(args, role)
	}
	q += ` ORDER BY username LIMIT ?`
	rows, err := s.db.Read.QueryContext(ctx, q, append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("gateway: list users: %w", err)
	}
	defer rows.Close()
	var out []userRecord
	for rows.Next() {
		var accounts string
		u, err := scanUser(rows, &accounts)
		if err != nil {
			return nil, fmt.Errorf("gateway: list users: %w", err)
		}
		if u.Accounts, err = jsonAccounts(accounts); err != nil {
			return nil, fmt.Errorf("gateway: list users: %w", err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("gateway: list users: %w", err)
	}
	return out, nil
}

// jsonAccounts decodes a JSON array of account ids, sorted (nil when empty).
func jsonAccounts(list string) ([]string, error) {
	var out []string
	if err := json.Unmarshal([]byte(list), &out); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, nil
	}
	slices.Sort(out)
	return out, nil
}

// UpdateUser implements adminStore. fn runs in the store's write transaction, on the writer's
// goroutine: it must be quick (hash a new password before calling UpdateUser, not in fn) and
// must not write to the store itself.
func (s *SQLiteStore) UpdateUser(ctx context.Context, username string, fn func(u *userRecord) error, revokeSessions bool, now time.Time) (before, after userRecord, revoked int, err error) {
	var refused error // fn's
	err = s.db.Update(ctx, func(ctx context.Context, tx *sqlitedb.Tx) error {
		revoked = 0
		var err error
		before, err = scanUser(tx.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE username = ?`, username))
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `SELECT account_id FROM user_accounts WHERE username = ? ORDER BY account_id`, username)
		if err != nil {
			return err
		}
		if before.Accounts, err = scanStrings(rows); err != nil {
			return err
		}
		after, refused = applyUserUpdate(before, fn)
		if refused != nil {
			return refused
		}
		if enabledAdmin(before) && !enabledAdmin(after) {
			var others int
			if err := tx.QueryRowContext(ctx,
				`SELECT count(*) FROM users WHERE role = ? AND disabled = 0 AND username != ?`,
				RoleAdmin, username).Scan(&others); err != nil {
				return err
			}
			if others == 0 {
				return ErrLastAdmin
			}
		}
		if _, err := tx.ExecContext(ctx,
			`UPDATE users SET password_hash = ?, role = ?, disabled = ?, must_change_password = ?, totp_secret = ?,
				totp_last_step = ? WHERE username = ?`,
			after.PasswordHash, after.Role, after.Disabled, after.MustChangePassword, after.TOTPSecret,
			after.TOTPLastStep, username); err != nil {
			return err
		}
		if !revokeSessions {
			return nil
		}
		res, err := tx.ExecContext(ctx,
			`UPDATE sessions SET revoked_at = ? WHERE username = ? AND revoked_at IS NULL AND expires_at > ?`,
			now.UnixNano(), username, now.UnixNano())
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		revoked = int(n)
		return err
	})
	if err != nil {
		return before, after, 0, userUpdateError(username, err, refused)
	}
	return before, after, revoked, nil
}

// applyUserUpdate returns before as fn changes it, with the fields UpdateUser never changes
// (Username, Accounts, CreatedAt) kept.
func applyUserUpdate(before userRecord, fn func(u *userRecord) error) (userRecord, error) {
	after := before
	after.Accounts = slices.Clone(before.Accounts)
	if err := fn(&after); err != nil {
		return before, err
	}
	after.Username, after.Accounts, after.CreatedAt = before.Username, before.Accounts, before.CreatedAt
	return after, nil
}

// enabledAdmin says whether u counts as one of the store's enabled admins.
func enabledAdmin(u userRecord) bool { return u.Role == RoleAdmin && !u.Disabled }

// userUpdateError is UpdateUser's error: ErrNotFound, ErrLastAdmin and fn's refusal as they
// are, a failure of the store wrapped.
func userUpdateError(username string, err, refused error) error {
	if refused != nil || errors.Is(err, ErrNotFound) || errors.Is(err, ErrLastAdmin) {
		return err
	}
	return fmt.Errorf("gateway: update user %s: %w", username, err)
}

// UseTOTPStep implements adminStore: a compare-and-set of totp_last_step. It returns ErrNotFound
// for an unknown user.
func (s *SQLiteStore) UseTOTPStep(ctx context.Context, username string, step int64) (bool, error) {
	var used bool
	err := s.db.Update(ctx, func(ctx context.Context, tx *sqlitedb.Tx) error {
		res, err := tx.ExecContext(ctx,
			`UPDATE users SET totp_last_step = ? WHERE username = ? AND totp_last_step < ?`, step, username, step)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if used = n == 1; used {
			return nil
		}
		return userExists(ctx, tx, username)
	})
	if errors.Is(err, ErrNotFound) {
		return false, err
	}
	if err != nil {
		return false, fmt.Errorf("gateway: record second factor step of %s: %w", username, err)
	}
	return used, nil
}

// userExists returns nil when username exists, else ErrNotFound.
func userExists(ctx context.Context, tx *sqlitedb.Tx, username string) error {
	var one int
	err := tx.QueryRowContext(ctx, `SELECT 1 FROM users WHERE username = ?`, username).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	return err
}

// LinkAccount links account to username: ErrNotFound for an unknown user, ErrAccountLinked
// when the account is linked to anybody (username included).
func (s *SQLiteStore) LinkAccount(ctx context.Context, username, account string) error {
	err := s.db.Update(ctx, func(ctx context.Context, tx *sqlitedb.Tx) error {
		if err := userExists(ctx, tx, username); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx,
			`INSERT INTO user_accounts (account_id, username) VALUES (?, ?) ON CONFLICT (account_id) DO NOTHING`,
			account, username)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
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
func (s *SQLiteStore) UnlinkAccount(ctx context.Context, username, account string) error {
	err := s.db.Update(ctx, func(ctx context.Context, tx *sqlitedb.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM user_accounts WHERE account_id = ? AND username = ?`, account, username)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("gateway: unlink account %s: %w", account, err)
	}
	return err
}

// ---- the audit log

// auditColumns are the columns of audit_log that scanAudit reads, in its order.
const auditColumns = `seq, at, actor, actor_cert, peer, action, target, outcome, reason, request_id, before, after,
	prev_hash, hash`

// scanAudit scans a row of auditColumns. An empty prev_hash (the first entry's) is nil.
func scanAudit(row interface{ Scan(...any) error }) (auditRecord, error) {
	var r auditRecord
	var at int64
	err := row.Scan(&r.Seq, &at, &r.Actor, &r.ActorCert, &r.Peer, &r.Action, &r.Target, &r.Outcome, &r.Reason,
		&r.RequestID, &r.Before, &r.After, &r.PrevHash, &r.Hash)
	r.At = time.Unix(0, at)
	if len(r.PrevHash) == 0 {
		r.PrevHash = nil
	}
	return r, err
}

// AppendAudit implements adminStore: the entry links to the last one in the write transaction
// that inserts it, so appends form one chain in the writer's order.
func (s *SQLiteStore) AppendAudit(ctx context.Context, rec auditRecord) (auditRecord, error) {
	var out auditRecord
	err := s.db.Update(ctx, func(ctx context.Context, tx *sqlitedb.Tx) error {
		out = rec
		out.Seq, out.PrevHash = 1, nil
		var last int64
		var prev []byte
		err := tx.QueryRowContext(ctx, `SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1`).Scan(&last, &prev)
		switch {
		case err == nil:
			out.Seq, out.PrevHash = last+1, prev
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		out.At = time.Unix(0, s.Now().UnixNano())
		out.Hash = auditHash(out.PrevHash, out)
		_, err = tx.ExecContext(ctx, `INSERT INTO audit_log (`+auditColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			out.Seq, out.At.UnixNano(), out.Actor, out.ActorCert, out.Peer, out.Action, out.Target, out.Outcome,
			out.Reason, out.RequestID, out.Before, out.After, nonNil(out.PrevHash), out.Hash)
		return err
	})
	if err != nil {
		return rec, fmt.Errorf("gateway: append to the audit log: %w", err)
	}
	return out, nil
}

// nonNil returns b, or an empty slice for nil (stored as an empty value, not NULL).
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// ListAudit returns entries newest first with Seq below before (when before > 0), only actor's
// when actor is set, at most limit.
func (s *SQLiteStore) ListAudit(ctx context.Context, actor string, before int64, limit int) ([]auditRecord, error) {
	q := `SELECT ` + auditColumns + ` FROM audit_log WHERE 1`
	var args []any
	if before > 0 {
		q += ` AND seq < ?`
		args = append(args, before)
	}
	if actor != "" {
		q += ` AND actor = ?`
		args = append(args, actor)
	}
	q += ` ORDER BY seq DESC LIMIT ?`
	out, err := s.audit(ctx, q, append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("gateway: list the audit log: %w", err)
	}
	return out, nil
}

// ScanAudit returns entries oldest first with Seq above after, at most limit, as stored.
func (s *SQLiteStore) ScanAudit(ctx context.Context, after int64, limit int) ([]auditRecord, error) {
	out, err := s.audit(ctx, `SELECT `+auditColumns+` FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("gateway: read the audit log: %w", err)
	}
	return out, nil
}

func (s *SQLiteStore) audit(ctx context.Context, q string, args ...any) ([]auditRecord, error) {
	rows, err := s.db.Read.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []auditRecord
	for rows.Next() {
		r, err := scanAudit(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// ---- payments as admins see them

// On SQLite a payment's trail events are packed: each row of payment_trail holds, as a JSON
// array in the order appended, the events of one payment that one AppendTrail call wrote. The
// recorder writes a payment's events of a moment together, so a payment takes a row or two
// instead of one per event: the store's single writer, which payments wait on, does a few
// times less work for the trail.

// packedEvent is a trailEvent in a payment_trail row, without its payment id.
type packedEvent struct {
	At        int64  `json:"t"`
	Kind      int32  `json:"k"`
	Bank      string `json:"b,omitempty"`
	Vote      string `json:"v,omitempty"`
	Decision  string `json:"d,omitempty"`
	DecidedBy int32  `json:"y,omitempty"`
	Attempt   int32  `json:"a,omitempty"`
	Replica   string `json:"r,omitempty"`
	Detail    string `json:"x,omitempty"`
}

// trailRowsPerInsert bounds the rows of one INSERT statement (two parameters each).
const trailRowsPerInsert = 200

// AppendTrail appends events to their payments' trails, in one transaction. An event without a
// time gets the store's clock.
func (s *SQLiteStore) AppendTrail(ctx context.Context, events []trailEvent) error {
	if len(events) == 0 {
		return nil
	}
	// One row per payment, its events in the order given; rows in the order of each payment's
	// first event.
	var order []string
	byPayment := make(map[string][]packedEvent)
	for _, e := range events {
		if e.At.IsZero() {
			e.At = s.Now()
		}
		if _, ok := byPayment[e.PaymentID]; !ok {
			order = append(order, e.PaymentID)
		}
		byPayment[e.PaymentID] = append(byPayment[e.PaymentID], packedEvent{At: e.At.UnixNano(), Kind: e.Kind, Bank: e.Bank,
			Vote: e.Vote, Decision: e.Decision, DecidedBy: e.DecidedBy, Attempt: e.Attempt, Replica: e.Replica, Detail: e.Detail})
	}
	args := make([]any, 0, 2*min(len(order), trailRowsPerInsert))
	var query strings.Builder
	err := s.db.Update(ctx, func(ctx context.Context, tx *sqlitedb.Tx) error {
		for start := 0; start < len(order); start += trailRowsPerInsert {
			rows := order[start:min(start+trailRowsPerInsert, len(order))]
			args = args[:0]
			query.Reset()
			query.WriteString(`INSERT INTO payment_trail (payment_id, events) VALUES `)
			for i, id := range rows {
				packed, err := json.Marshal(byPayment[id])
				if err != nil {
					return err
				}
				if i > 0 {
					query.WriteString(", ")
				}
				query.WriteString("(?, ?)")
				args = append(args, id, string(packed))
			}
			if _, err := tx.ExecContext(ctx, query.String(), args...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("gateway: append %d trail events: %w", len(events), err)
	}
	return nil
}

// Trail returns a payment's trail events, oldest first (in the order appended).
func (s *SQLiteStore) Trail(ctx context.Context, paymentID string) ([]trailEvent, error) {
	rows, err := s.db.Read.QueryContext(ctx, `SELECT events FROM payment_trail WHERE payment_id = ? ORDER BY id`, paymentID)
	if err != nil {
		return nil, fmt.Errorf("gateway: read the trail of %s: %w", paymentID, err)
	}
	defer rows.Close()
	var out []trailEvent
	for rows.Next() {
		var packed string
		var events []packedEvent
		if err := rows.Scan(&packed); err != nil {
			return nil, fmt.Errorf("gateway: read the trail of %s: %w", paymentID, err)
		}
		if err := json.Unmarshal([]byte(packed), &events); err != nil {
			return nil, fmt.Errorf("gateway: read the trail of %s: %w", paymentID, err)
		}
		for _, e := range events {
			out = append(out, trailEvent{PaymentID: paymentID, At: time.Unix(0, e.At), Kind: e.Kind, Bank: e.Bank, Vote: e.Vote,
				Decision: e.Decision, DecidedBy: e.DecidedBy, Attempt: e.Attempt, Replica: e.Replica, Detail: e.Detail})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("gateway: read the trail of %s: %w", paymentID, err)
	}
	return out, nil
}

// SearchPayments returns every user's payments matching q, newest first (created_at,
// payment_id), after q.After when set, at most q.Limit.
func (s *SQLiteStore) SearchPayments(ctx context.Context, q paymentQuery) ([]paymentRecord, error) {
	where, args := paymentQueryWhere(q, "?", "instr")
	query := fmt.Sprintf(`SELECT %s FROM payments WHERE %s ORDER BY created_at DESC, payment_id DESC LIMIT ?%d`,
		paymentColumns, where, len(args)+1)
	out, err := s.payments(ctx, query, append(args, q.Limit)...)
	if err != nil {
		return nil, fmt.Errorf("gateway: search payments: %w", err)
	}
	return out, nil
}

// paymentQueryWhere returns the WHERE condition of q, in SQL both stores read, with its
// arguments: the nth argument (from 1) is mark followed by n ("?" for SQLite, "$" for
// PostgreSQL); strpos is the name of the function that finds a text in another ("instr" for
// SQLite, "strpos" for PostgreSQL).
//
// A bank's accounts are "<bank>-<number>" where the number holds no '-' (see package
// account): their ids are those from "<bank>-" up to, not including, "<bank>." (the byte after
// '-'), compared bytewise, and have no '-' after the prefix. No pattern is built from the
// input, so nothing in it needs escaping, and the match is case-sensitive on both stores.
func paymentQueryWhere(q paymentQuery, mark, strpos string) (string, []any) {
	conds := []string{"1 = 1"}
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("%s%d", mark, len(args))
	}
	if q.Username != "" {
		conds = append(conds, `username = `+arg(q.Username))
	}
	if q.Account != "" {
		a := arg(q.Account)
		conds = append(conds, `(from_account = `+a+` OR to_account = `+a+`)`)
	}
	if q.Bank != "" {
		lo, hi := arg(q.Bank+"-"), arg(q.Bank+".")
		atBank := func(col string) string {
			return `(` + col + ` >= ` + lo + ` AND ` + col + ` < ` + hi + ` AND
				` + strpos + `(substr(` + col + `, length(` + lo + `) + 1), '-') = 0)`
		}
		conds = append(conds, `(`+atBank("from_account")+` OR `+atBank("to_account")+`)`)
	}
	if q.Decision != nil {
		conds = append(conds, `decision = `+arg(int16(*q.Decision)))
	}
	if q.FailureReason != 0 {
		conds = append(conds, `failure_reason = `+arg(q.FailureReason))
	}
	if !q.CreatedAfter.IsZero() {
		conds = append(conds, `created_at >= `+arg(q.CreatedAfter.UnixNano()))
	}
	if !q.CreatedBefore.IsZero() {
		conds = append(conds, `created_at < `+arg(q.CreatedBefore.UnixNano()))
	}
	if q.After != nil {
		c, id := arg(q.After.CreatedAt), arg(q.After.PaymentID)
		conds = append(conds, `(created_at < `+c+` OR (created_at = `+c+` AND payment_id < `+id+`))`)
	}
	return strings.Join(conds, " AND "), args
}

// InDoubt returns the payments that are undecided or not yet completed, oldest deadline first,
// at most limit.
func (s *SQLiteStore) InDoubt(ctx context.Context, limit int) ([]paymentRecord, error) {
	out, err := s.payments(ctx, `SELECT `+paymentColumns+` FROM payments WHERE completed = 0
		ORDER BY deadline, payment_id LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("gateway: list in-doubt payments: %w", err)
	}
	return out, nil
}

// payments runs a query of paymentColumns on the readers.
func (s *SQLiteStore) payments(ctx context.Context, q string, args ...any) ([]paymentRecord, error) {
	rows, err := s.db.Read.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
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
