package bank

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// IssueEnrollmentCode is Ledger.IssueEnrollmentCode.
func (l *PGLedger) IssueEnrollmentCode(ctx context.Context, id string, ttl time.Duration, now time.Time) (EnrollmentCode, error) {
	if ttl == 0 {
		ttl = DefaultEnrollmentTTL
	}
	if ttl < 0 || ttl > MaxEnrollmentTTL {
		return EnrollmentCode{}, fmt.Errorf("issue enrollment code: %w: ttl %s: want more than 0 and at most %s", ErrInvalidArgument, ttl, MaxEnrollmentTTL)
	}
	code, err := newEnrollmentCode()
	if err != nil {
		return EnrollmentCode{}, fmt.Errorf("issue enrollment code: %w", err)
	}
	var out EnrollmentCode
	err = l.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		out = EnrollmentCode{AccountID: id, Code: code, IssuedAt: now.UTC(), ExpiresAt: now.Add(ttl).UTC()}
		a, err := pgLoadAccount(ctx, tx, id)
		if err != nil {
			return err
		}
		if a.Closed {
			return fmt.Errorf("%w: %s", ErrAccountClosed, id)
		}
		out.Holder = a.Holder
		var redeemer *string
		switch err := tx.QueryRow(ctx, `SELECT redeemed_by FROM enrollment_codes WHERE account_id = $1 FOR UPDATE`, id).Scan(&redeemer); {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return err
		default:
			out.Replaced = true
			if redeemer != nil {
				out.ReplacedRedeemer = *redeemer
			}
		}
		_, err = tx.Exec(ctx, `
INSERT INTO enrollment_codes (account_id, code_hash, created_at, expires_at, failures, redeemed_by, redeemed_at)
VALUES ($1, $2, $3, $4, 0, NULL, NULL)
ON CONFLICT (account_id) DO UPDATE SET
	code_hash = excluded.code_hash, created_at = excluded.created_at, expires_at = excluded.expires_at,
	failures = 0, redeemed_by = NULL, redeemed_at = NULL`,
			id, enrollmentHash(id, code), now.UnixNano(), out.ExpiresAt.UnixNano())
		return err
	})
	if err != nil {
		return EnrollmentCode{}, l.accountError("issue enrollment code", id, err)
	}
	return out, nil
}

// RedeemEnrollmentCode is Ledger.RedeemEnrollmentCode. The code's row is locked while it is
// checked, and failures are counted by a relative update, so that concurrent wrong codes are all
// counted.
func (l *PGLedger) RedeemEnrollmentCode(ctx context.Context, id, code, username string, now time.Time) (Account, error) {
	if username == "" || hasNUL(username) {
		return Account{}, fmt.Errorf("redeem enrollment code: %w: empty username or one with a NUL byte", ErrInvalidArgument)
	}
	var (
		acct    Account
		refusal *enrollmentRefusal
	)
	refuse := func(cause string) error {
		refusal = &enrollmentRefusal{account: id, cause: cause}
		return nil // a refusal still commits what it recorded (a failure)
	}
	err := l.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		refusal = nil
		a, err := pgLoadAccount(ctx, tx, id)
		if errors.Is(err, ErrUnknownAccount) {
			return refuse("unknown account")
		}
		if err != nil {
			return err
		}
		var c storedCode
		err = tx.QueryRow(ctx, `SELECT code_hash, expires_at, failures, redeemed_by FROM enrollment_codes WHERE account_id = $1 FOR UPDATE`, id).
			Scan(&c.hash, &c.expires, &c.failures, &c.redeemedBy)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		step, cause := decideRedemption(id, code, username, a.Closed, err == nil, c, now)
		switch step {
		case redeemRefused:
			return refuse(cause)
		case redeemWrongCode:
			if err := tx.QueryRow(ctx, `UPDATE enrollment_codes SET failures = failures + 1 WHERE account_id = $1 RETURNING failures`, id).Scan(&c.failures); err != nil {
				return err
			}
			return refuse(wrongCodeCause(c.failures))
		case redeemBind:
			if _, err := tx.Exec(ctx, `UPDATE enrollment_codes SET redeemed_by = $1, redeemed_at = $2 WHERE account_id = $3`, username, now.UnixNano(), id); err != nil {
				return err
			}
		}
		acct = a
		return nil
	})
	if err != nil {
		return Account{}, fmt.Errorf("redeem enrollment code for %s: %w", id, err)
	}
	if refusal != nil {
		return Account{}, refusal
	}
	return acct, nil
}

// EnrollmentStatus is Ledger.EnrollmentStatus.
func (l *PGLedger) EnrollmentStatus(ctx context.Context, id string) (s EnrollmentStatus, ok bool, err error) {
	if hasNUL(id) {
		return EnrollmentStatus{}, false, nil
	}
	var (
		created, expires int64
		by               *string
		at               *int64
	)
	err = l.pool.QueryRow(ctx, `SELECT code_hash, created_at, expires_at, failures, redeemed_by, redeemed_at FROM enrollment_codes WHERE account_id = $1`, id).
		Scan(&s.CodeHash, &created, &expires, &s.Failures, &by, &at)
	if errors.Is(err, pgx.ErrNoRows) {
		return EnrollmentStatus{}, false, nil
	}
	if err != nil {
		return EnrollmentStatus{}, false, fmt.Errorf("enrollment status of %s: %w", id, err)
	}
	s.IssuedAt, s.ExpiresAt = time.Unix(0, created).UTC(), time.Unix(0, expires).UTC()
	if by != nil {
		s.RedeemedBy = *by
	}
	if at != nil {
		s.RedeemedAt = time.Unix(0, *at).UTC()
	}
	return s, true, nil
}
