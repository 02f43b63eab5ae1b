package bank

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/paygate/paygate/internal/sqlitedb"
)

// Enrollment codes prove, at registration, that the person registering holds an account: the
// bank issues a one-time code for the account (`paygate bank enroll`), it reaches the holder out
// of band (post, the bank's own app, a branch), and the gateway has the bank redeem it for the
// username being registered (RedeemEnrollmentCode).
//
// A code is 80 random bits written as 16 Crockford base32 characters in groups of four
// (K7QX-3MZD-9TRA-WP4C). The ledger keeps only a SHA-256 hash of the account id and the code;
// with 80 bits of entropy and at most MaxEnrollmentFailures guesses per code, a hash without a
// slow KDF is enough. A code expires after its TTL, is burned after MaxEnrollmentFailures wrong
// attempts, and, once redeemed, is bound to the username that redeemed it: the same username
// may redeem it again (a registration retried after a lost answer), any other is refused.
// Issuing a new code for an account replaces its previous code, redeemed or not.

// Limits of enrollment codes.
const (
	// DefaultEnrollmentTTL is how long a code is valid when no TTL is given.
	DefaultEnrollmentTTL = 72 * time.Hour
	// MaxEnrollmentTTL is the longest TTL a code may have.
	MaxEnrollmentTTL = 30 * 24 * time.Hour
	// MaxEnrollmentFailures wrong codes burn an account's code: the bank must issue a new one.
	MaxEnrollmentFailures = 5
	// enrollmentCodeBits is the entropy of a code: 16 base32 characters.
	enrollmentCodeBits = 80
)

// ErrorReasonEnrollmentRefused is the ErrorInfo reason of every refused RedeemEnrollmentCode.
const ErrorReasonEnrollmentRefused = "enrollment_refused"

var (
	// ErrEnrollmentRefused is every refusal of RedeemEnrollmentCode: unknown or closed account,
	// no code, a wrong, expired, burned or already used code. Its message does not say which; the
	// bank logs the cause.
	ErrEnrollmentRefused = errors.New("bank: enrollment code refused")
	// ErrAccountClosed reports a code asked for a closed account.
	ErrAccountClosed = errors.New("bank: account closed")
)

// crockford is Crockford's base32 alphabet: digits and letters without I, L, O and U.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// EnrollmentCode is a code just issued for an account. Code is shown once and never stored.
type EnrollmentCode struct {
	AccountID string
	Holder    string
	Code      string
	IssuedAt  time.Time
	ExpiresAt time.Time
	// Replaced says whether the account had a code before, which this one replaces;
	// ReplacedRedeemer is the username that had redeemed it, if any.
	Replaced         bool
	ReplacedRedeemer string
}

// enrollmentRefusal is a refused redemption: Error says only that it was refused (it reaches the
// caller); cause says why (it reaches the bank's log).
type enrollmentRefusal struct {
	account string
	cause   string
}

func (e *enrollmentRefusal) Error() string {
	return fmt.Sprintf("enrollment code refused for account %s", e.account)
}

func (e *enrollmentRefusal) Unwrap() error { return ErrEnrollmentRefused }

// EnrollmentRefusalCause returns why err, a refusal of RedeemEnrollmentCode, was refused
// ("wrong code", "expired", ...), or "".
func EnrollmentRefusalCause(err error) string {
	var r *enrollmentRefusal
	if errors.As(err, &r) {
		return r.cause
	}
	return ""
}

// newEnrollmentCode returns a fresh random code, grouped for reading: "K7QX-3MZD-9TRA-WP4C".
func newEnrollmentCode() (string, error) {
	var b [enrollmentCodeBits / 8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	var out strings.Builder
	var acc uint32
	bits := 0
	n := 0
	for _, c := range b {
		acc = acc<<8 | uint32(c)
		bits += 8
		for bits >= 5 {
			bits -= 5
			if n > 0 && n%4 == 0 {
				out.WriteByte('-')
			}
			out.WriteByte(crockford[(acc>>bits)&31])
			n++
		}
	}
	return out.String(), nil
}

// NormalizeEnrollmentCode returns code as it is hashed: upper case, without spaces and hyphens,
// with the letters Crockford's base32 reads as digits (I and L as 1, O as 0) turned into them.
func NormalizeEnrollmentCode(code string) string {
	var b strings.Builder
	for _, r := range strings.ToUpper(code) {
		switch r {
		case ' ', '-', '\t':
			continue
		case 'I', 'L':
			r = '1'
		case 'O':
			r = '0'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// enrollmentHash is what the ledger stores of a code: SHA-256 over a domain-separated
// "account|code", so that one code's hash says nothing about the same code for another account.
func enrollmentHash(accountID, code string) []byte {
	h := sha256.New()
	h.Write([]byte("paygate enrollment code v1\x00"))
	h.Write([]byte(accountID))
	h.Write([]byte{'|'})
	h.Write([]byte(NormalizeEnrollmentCode(code)))
	return h.Sum(nil)
}

// IssueEnrollmentCode makes a new code for account id, valid for ttl from now
// (DefaultEnrollmentTTL when ttl is 0), and stores its hash, replacing the account's previous
// code. It refuses an unknown account (ErrUnknownAccount) and a closed one (ErrAccountClosed).
// The code is returned only here.
func (l *Ledger) IssueEnrollmentCode(ctx context.Context, id string, ttl time.Duration, now time.Time) (EnrollmentCode, error) {
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
	out := EnrollmentCode{AccountID: id, Code: code, IssuedAt: now.UTC(), ExpiresAt: now.Add(ttl).UTC()}
	err = l.write(ctx, func(ctx context.Context, tx *sqlitedb.Tx) error {
		a, err := loadAccount(ctx, tx, id)
		if err != nil {
			return err
		}
		if a.Closed {
			return fmt.Errorf("%w: %s", ErrAccountClosed, id)
		}
		out.Holder = a.Holder
		var redeemer sql.NullString
		switch err := tx.QueryRowContext(ctx, `SELECT redeemed_by FROM enrollment_codes WHERE account_id = ?`, id).Scan(&redeemer); {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return err
		default:
			out.Replaced, out.ReplacedRedeemer = true, redeemer.String
		}
		_, err = tx.ExecContext(ctx, `
INSERT INTO enrollment_codes (account_id, code_hash, created_at, expires_at, failures, redeemed_by, redeemed_at)
VALUES (?, ?, ?, ?, 0, NULL, NULL)
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

// RedeemEnrollmentCode checks code against the code issued for account id and binds it to
// username. It returns the account when the code is right, unexpired, not burned, and either
// unredeemed or redeemed before by the same username. Every refusal is ErrEnrollmentRefused (see
// EnrollmentRefusalCause); a wrong code counts against the code, and the MaxEnrollmentFailures-th
// burns it. The code is compared in constant time.
func (l *Ledger) RedeemEnrollmentCode(ctx context.Context, id, code, username string, now time.Time) (Account, error) {
	if username == "" {
		return Account{}, fmt.Errorf("redeem enrollment code: %w: empty username", ErrInvalidArgument)
	}
	var (
		acct    Account
		refusal *enrollmentRefusal
	)
	refuse := func(cause string) error {
		refusal = &enrollmentRefusal{account: id, cause: cause}
		return nil // a refusal still commits what it recorded (a failure)
	}
	err := l.write(ctx, func(ctx context.Context, tx *sqlitedb.Tx) error {
		refusal = nil
		a, err := loadAccount(ctx, tx, id)
		if errors.Is(err, ErrUnknownAccount) {
			return refuse("unknown account")
		}
		if err != nil {
			return err
		}
		var c storedCode
		var by sql.NullString
		err = tx.QueryRowContext(ctx, `SELECT code_hash, expires_at, failures, redeemed_by FROM enrollment_codes WHERE account_id = ?`, id).
			Scan(&c.hash, &c.expires, &c.failures, &by)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if by.Valid {
			c.redeemedBy = &by.String
		}
		step, cause := decideRedemption(id, code, username, a.Closed, err == nil, c, now)
		switch step {
		case redeemRefused:
			return refuse(cause)
		case redeemWrongCode:
			// One writer at a time: the count read above is current.
			c.failures++
			if _, err := tx.ExecContext(ctx, `UPDATE enrollment_codes SET failures = ? WHERE account_id = ?`, c.failures, id); err != nil {
				return err
			}
			return refuse(wrongCodeCause(c.failures))
		case redeemBind:
			if _, err := tx.ExecContext(ctx, `UPDATE enrollment_codes SET redeemed_by = ?, redeemed_at = ? WHERE account_id = ?`, username, now.UnixNano(), id); err != nil {
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

// storedCode is an account's row of enrollment_codes, as a redemption reads it.
type storedCode struct {
	hash       []byte
	expires    int64 // Unix nanoseconds
	failures   int
	redeemedBy *string
}

// redemption is what redeeming a code does to the stored code.
type redemption int

const (
	redeemRefused   redemption = iota // nothing changes; the cause says why
	redeemWrongCode                   // count a failure, then refuse (wrongCodeCause)
	redeemBind                        // bind the code to the username
	redeemAgain                       // the same username again: answer as the first time
)

// decideRedemption is the rule of RedeemEnrollmentCode, the same for every store: code and
// username against account id's stored code c (found false: none issued), at now.
func decideRedemption(id, code, username string, closed, found bool, c storedCode, now time.Time) (redemption, string) {
	switch {
	case !found:
		return redeemRefused, "no code issued for the account"
	case closed:
		return redeemRefused, "account closed"
	case c.failures >= MaxEnrollmentFailures:
		return redeemRefused, fmt.Sprintf("code burned after %d wrong attempts", c.failures)
	case subtle.ConstantTimeCompare(c.hash, enrollmentHash(id, code)) != 1:
		return redeemWrongCode, ""
	case c.redeemedBy != nil && *c.redeemedBy == username:
		// A retry of a registration whose first answer was lost: answered as the first time,
		// even past the expiry, since the code was redeemed in time.
		return redeemAgain, ""
	case c.redeemedBy != nil:
		return redeemRefused, "code already redeemed by another username"
	case now.UnixNano() >= c.expires:
		return redeemRefused, "code expired at " + time.Unix(0, c.expires).UTC().Format(time.RFC3339)
	}
	return redeemBind, ""
}

// wrongCodeCause is the refusal of a wrong code that brought the code's failures to failures.
func wrongCodeCause(failures int) string {
	if failures >= MaxEnrollmentFailures {
		return fmt.Sprintf("wrong code (attempt %d of %d: the code is burned)", failures, MaxEnrollmentFailures)
	}
	return fmt.Sprintf("wrong code (attempt %d of %d)", failures, MaxEnrollmentFailures)
}

// EnrollmentStatus is what the ledger knows of an account's code (never the code).
type EnrollmentStatus struct {
	IssuedAt   time.Time
	ExpiresAt  time.Time
	Failures   int
	RedeemedBy string
	RedeemedAt time.Time
	// CodeHash is the stored hash, for tests that check nothing else is kept.
	CodeHash []byte
}

// EnrollmentStatus returns the state of account id's code; ok is false when it has none.
func (l *Ledger) EnrollmentStatus(ctx context.Context, id string) (s EnrollmentStatus, ok bool, err error) {
	var (
		created, expires int64
		by               sql.NullString
		at               sql.NullInt64
	)
	err = l.db.Read.QueryRowContext(ctx, `SELECT code_hash, created_at, expires_at, failures, redeemed_by, redeemed_at FROM enrollment_codes WHERE account_id = ?`, id).
		Scan(&s.CodeHash, &created, &expires, &s.Failures, &by, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return EnrollmentStatus{}, false, nil
	}
	if err != nil {
		return EnrollmentStatus{}, false, fmt.Errorf("enrollment status of %s: %w", id, err)
	}
	s.IssuedAt, s.ExpiresAt = time.Unix(0, created).UTC(), time.Unix(0, expires).UTC()
	s.RedeemedBy = by.String
	if at.Valid {
		s.RedeemedAt = time.Unix(0, at.Int64).UTC()
	}
	return s, true, nil
}

// Ledger returns the bank's ledger, for tools in the same process (`paygate dev` issues
// enrollment codes through it).
func (s *Server) Ledger() LedgerStore { return s.bank.Ledger }
