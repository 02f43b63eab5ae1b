package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// The gateway's store, as the gateway uses it: users and their linked accounts, sessions, and
// payments with the coordinator's decision log. Two implementations: SQLiteStore (one file, the
// embedded default, one gateway process) and PGStore (PostgreSQL, shared by any number of
// gateway replicas).
//
// A payment row is the coordinator's durable record of one two-phase commit:
//
//	decision = none     admitted, prepares in flight: the user sees PROCESSING
//	decision = commit   the commit point has passed: SUCCEEDED
//	decision = abort    FAILED, with failure_reason and failure_message
//	completed           every participant acknowledged phase two
//
// The decision is written with a compare-and-set (only while it is none), so exactly one of
// the handler, the timeout monitor and a bank's GetDecision ever decides a payment, on any
// replica. Safety rests on that alone: leases (who drives a payment) only keep replicas from
// doing the same work twice.

// Store is everything the gateway keeps durably.
type Store interface {
	userStore
	sessionStore
	paymentLog
	leaseStore
	adminStore
	eventLog
	webhookStore
	// Secret returns the store's secret name, creating it with size random bytes on first
	// use. Processes sharing the store agree on it: the first to create it wins.
	Secret(ctx context.Context, name string, size int) ([]byte, error)
	// Shared says whether other gateway processes may use the store at the same time. A
	// shared store is the source of truth for what one process would otherwise keep in
	// memory: sessions are read on every call, throttles and stream limits are counted in it,
	// and reads wait for phase twos that other replicas are running (Unsettled).
	Shared() bool
	Close() error
}

// userStore holds users and the accounts linked to them.
type userStore interface {
	// CountUsers returns how many users exist.
	CountUsers(ctx context.Context) (int, error)
	// CreateUsers inserts users and links their accounts in one transaction. It fails with
	// ErrUserExists or ErrAccountLinked and inserts nothing when any user or account is taken.
	CreateUsers(ctx context.Context, users []userRecord, now time.Time) error
	// User returns a user with its accounts, or ErrNotFound.
	User(ctx context.Context, username string) (userRecord, error)
	// Accounts returns the accounts linked to username, in order.
	Accounts(ctx context.Context, username string) ([]string, error)
	// AccountOwner returns the username an account is linked to, or ErrNotFound.
	AccountOwner(ctx context.Context, account string) (string, error)
}

// sessionStore holds login sessions, by the hash of their token.
type sessionStore interface {
	// CreateSession stores a session under the hash of token, unless rec.Username has max
	// live sessions (not expired at now, not revoked) already: then it returns
	// ErrTooManySessions and stores nothing. max <= 0 means no limit. Concurrent logins
	// cannot overshoot the limit.
	CreateSession(ctx context.Context, token string, rec sessionRecord, now time.Time, max int) error
	// Session returns the session of token with its user's role, or ErrNotFound.
	Session(ctx context.Context, token string) (sessionRecord, error)
	// RevokeSession marks the session of token revoked.
	RevokeSession(ctx context.Context, token string, now time.Time) error
	// DeleteExpiredSessions removes sessions that expired before t.
	DeleteExpiredSessions(ctx context.Context, t time.Time) (int64, error)
}

// paymentLog is the coordinator's decision log and the payments' history.
type paymentLog interface {
	// StartAdmitPayment inserts p (undecided) unless a payment with its id exists, and
	// returns as soon as the insert has run, before it is durable (see admitPayment for the
	// durable form): the stored row and whether it was inserted are what the store will hold once
	// durable returns nil. If durable returns an error, nothing was written. A payment it
	// inserts is leased to this process (see leaseStore). A shared store sets CreatedAt and
	// Deadline from its own clock (keeping p's Deadline - CreatedAt): the stored row has them.
	//
	// A refund (p.RefundOf set) is admitted only with its amount taken from what is left of
	// the payment it refunds, in the same write: the payment's refund_reserved (the sum of its
	// refunds admitted and not failed) rises by p.Amount, or, when p.Amount is 0, by all that
	// is left (the stored row has that amount). Otherwise nothing is written and the error is
	// ErrRefundExceedsPayment (a *RefundLeftError), ErrRefundNotSucceeded, ErrRefundOfRefund or
	// ErrNotFound (no such payment), decided under a lock of the payment's row (or the one
	// writer), so that concurrent admissions, on any replica, never reserve more than its
	// amount. A refund whose id is taken is not refused: the stored row is returned, as for a
	// payment.
	StartAdmitPayment(ctx context.Context, p paymentRecord) (stored paymentRecord, inserted bool, durable func() error, err error)
	// Payment returns a payment by id, or ErrNotFound.
	Payment(ctx context.Context, id string) (paymentRecord, error)
	// Decide records d for an undecided payment (the compare-and-set that is the commit
	// point) and returns the payment as stored afterwards: with d when this call decided it,
	// with the earlier decision otherwise. A payment that does not exist is created as a presumed abort when d is an abort (a bank asking about a
	// transaction the gateway never admitted), so that it can never commit later.
	// by says which part of the gateway decides, kept with the decision for the payment's
	// trail. When this call decides a refund, the same write moves its reservation on the
	// refunded payment: an abort gives it back, a commit adds the amount to the payment's
	// refunded and appends payment.refunded for it. A presumed abort of an unknown id made
	// no reservation and touches none.
	Decide(ctx context.Context, id string, d decision, reason int32, message string, presumed bool, now time.Time, by decider) (paymentRecord, error)
	// AdoptUnadmitted gives p's parameters to the presumed abort recorded for its id when the
	// payment itself was never stored (see Decide), and returns the row as stored afterwards:
	// with p's parameters when this call adopted it, with those of an earlier adoption
	// otherwise (compare fingerprints). Adopting a refund touches no reservation (its
	// admission, which would have made one, was never stored).
	AdoptUnadmitted(ctx context.Context, p paymentRecord) (paymentRecord, error)
	// MarkCompleted records that every participant acknowledged phase two of the payments ids.
	MarkCompleted(ctx context.Context, ids []string, now time.Time) error
	// Unfinished returns payments that are undecided or whose phase two is not acknowledged,
	// and that this process drives (holds the lease of), oldest deadline first, after the
	// cursor when it is set, at most limit.
	Unfinished(ctx context.Context, after *unfinishedCursor, limit int) ([]paymentRecord, error)
	// ListPayments returns username's payments, newest first, starting after the cursor
	// (created_at, payment_id) when it is set, filtered by decision when filter is set.
	ListPayments(ctx context.Context, username string, after *pageCursor, filter *decisionFilter, limit int) ([]paymentRecord, error)
	// ListReceived returns the payments others made to username's accounts: those whose
	// to_account is linked to username now and whose username is another's (a refund of
	// username's payment, made by its payee, is one). Newest first, after the cursor when it
	// is set, filtered by decision when filter is set, like ListPayments. A presumed abort of
	// an id never admitted has no accounts and is never listed.
	ListReceived(ctx context.Context, username string, after *pageCursor, filter *decisionFilter, limit int) ([]paymentRecord, error)
	// Unsettled returns the ids of decided payments whose phase two is not acknowledged yet
	// and changes one of accounts: any such payment, or with raising only those that raise
	// the account's available money (a commit crediting it, an abort releasing its hold).
	Unsettled(ctx context.Context, accounts []string, raising bool) ([]string, error)
}

// eventLog is the payments' durable event log: every change of a payment (created, succeeded,
// failed, refunded; a refund's are refund.created, refund.succeeded and refund.failed) is appended, as an eventRecord, in the same write as the change itself (both or
// neither are stored), exactly once: by StartAdmitPayment when it inserted, by Decide when this
// call decided (never for the presumed abort of a payment that was never admitted, which is no
// payment), and by AdoptUnadmitted when it adopted (created, then failed). The store numbers
// the events with seq, which only grows and is never reused.
//
// Readers page through events with seq > after. What a reader sees is always every event up to
// some seq and none after it: an event is never visible before one with a lower seq, so a
// reader that passes the last seq it saw misses nothing and sees nothing twice. On a store that
// is not shared, events get their seq as they are written (one writer commits in seq order).
// On a shared store, writes on several replicas commit in any order, so events are written
// without a seq and get one from SequenceEvents, in the order they became visible; readers see
// only sequenced events.
type eventLog interface {
	// Events returns username's events (as payer or payee) with seq > after, in seq order, at
	// most limit.
	Events(ctx context.Context, username string, after int64, limit int) ([]eventRecord, error)
	// EventsAfter returns everyone's events with seq > after, in seq order, at most limit.
	EventsAfter(ctx context.Context, after int64, limit int) ([]eventRecord, error)
	// LastEventSeq returns the highest seq given to an event so far (0 when none), whether or
	// not that event was pruned since.
	LastEventSeq(ctx context.Context) (int64, error)
	// PruneEvents deletes the events created before before (by the store's clock) whose seq is
	// below keepFrom (the caller passes the lowest seq not yet delivered), and returns how many
	// it deleted. Events without a seq yet are kept, and so is the newest event.
	PruneEvents(ctx context.Context, before time.Time, keepFrom int64) (int64, error)
	// SequenceEvents gives a seq to events written but not numbered yet (at most
	// eventSequenceBatch of them, oldest first) and returns how many it numbered and the
	// highest seq given so far. Any process may run it at any time, concurrently with others:
	// runs take turns. A store that is not shared numbers events as it writes them: it only
	// returns the last seq.
	SequenceEvents(ctx context.Context) (assigned int, last int64, err error)
	// ListenEvents calls appended after events written by this process have committed
	// (calls are coalesced: one call may stand for many appends), and sequenced with the last
	// seq another process's SequenceEvents gave, until ctx ends; then it returns nil. One
	// caller at a time. Notifications may be lost: callers also poll.
	ListenEvents(ctx context.Context, appended func(), sequenced func(last int64)) error
}

// leaseStore says which process drives each unfinished payment, so that replicas sharing a
// store never drive one payment at the same time. Every process holds one lease in the store
// (an owner id with an expiry, by the store's clock) and renews it while it lives; a payment
// belongs to the lease that admitted or claimed it until it is completed. A payment whose
// owner's lease has expired (the process died, or was cut off from the store for longer than
// the lease lasts) is an orphan, which any process may claim. On a store that is not shared
// every payment is the one process's.
type leaseStore interface {
	// Owner is this process's lease id.
	Owner() string
	// Claim makes id this process's payment unless another live lease holds it, and returns
	// the row as stored afterwards (read after the claim) with whether this process holds it.
	// It returns ErrNotFound for an unknown id.
	Claim(ctx context.Context, id string) (paymentRecord, bool, error)
	// ClaimOrphans claims up to limit orphaned unfinished payments, skipping rows another
	// process is claiming at the same moment, and returns how many it claimed.
	ClaimOrphans(ctx context.Context, limit int) (int, error)
	// RenewLease extends this process's lease. It fails with ErrLeaseLost when the lease had
	// expired: its payments may have been claimed by others, and the process has been given
	// a new lease (a new Owner) that holds none of them.
	RenewLease(ctx context.Context) error
	// Holding says whether this process's lease is certainly still valid now, by the local
	// clock since its last renewal, with a safety margin.
	Holding() bool
	// ReleaseLease hands every payment of this process back (they become orphans at once) and
	// ends its lease: for a graceful shutdown.
	ReleaseLease(ctx context.Context) error
	// LeaseTTL is how long a lease lasts without renewal.
	LeaseTTL() time.Duration
	// Now is the store's clock: deadlines and leases are measured by it, so that replicas
	// whose clocks disagree still agree on them.
	Now() time.Time
	// Listen calls changed with the id of every payment another process admitted, decided or
	// adopted, until ctx ends. A store that is not shared returns when ctx ends.
	// Notifications may be lost (a reconnect): callers also poll what they wait for.
	Listen(ctx context.Context, changed func(id string)) error
}

// ErrLeaseLost is RenewLease's report that the lease had expired before it was renewed.
var ErrLeaseLost = errors.New("gateway: lease expired before renewal; payments may have been claimed by other replicas")

// sharedLimits is what a shared store also offers, so that replicas share what one process
// would keep in memory: login and registration throttles, and the number of open streams.
type sharedLimits interface {
	// ReserveAttempt takes one attempt from the budget (burst, refilled at one every every, by
	// the store's clock) of each of keys in scope, or, when one of them has none left, takes
	// nothing and returns how long until all of them have one (wait > 0).
	ReserveAttempt(ctx context.Context, scope string, keys []string, burst int, every time.Duration) (wait time.Duration, err error)
	// RefundAttempt gives one attempt back to each of keys in scope (at most burst).
	RefundAttempt(ctx context.Context, scope string, keys []string, burst int) error
	// OpenStream records an open stream of username's unless username has max streams open
	// on live processes already (ErrTooManyStreams); release removes it.
	OpenStream(ctx context.Context, username string, max int) (release func(), err error)
}

// ErrTooManyStreams is OpenStream's refusal.
var ErrTooManyStreams = errors.New("gateway: too many open streams for the user")

// Store errors.
var (
	ErrNotFound      = errors.New("gateway: not found")
	ErrUserExists    = errors.New("gateway: user already exists")
	ErrAccountLinked = errors.New("gateway: account already linked to a user")
)

// decider is which part of the gateway recorded a decision, stored in payments.decided_by
// (the values of gatewayv1.DecidedBy).
type decider int32

const (
	decidedByUnknown        decider = 0 // decided before decided_by was kept
	decidedByRequest        decider = 1 // the ExecutePayment call, after phase one
	decidedByTimeoutMonitor decider = 2 // no decision before the deadline
	decidedByGetDecision    decider = 3 // a bank asked; presumed abort
	decidedByRecovery       decider = 4 // recovery after a restart or a takeover
)

// Decision values stored in payments.decision.
type decision int

const (
	decisionNone   decision = 0
	decisionCommit decision = 1
	decisionAbort  decision = 2
)

// userRecord is a user with its linked accounts.
type userRecord struct {
	Username     string
	PasswordHash string
	Role         string
	Accounts     []string
	// Disabled users cannot sign in; their sessions are refused.
	Disabled bool
	// MustChangePassword: the password is an initial one an admin set.
	MustChangePassword bool
	// TOTPSecret is an admin's second factor (base32), "" when none is enrolled; TOTPLastStep
	// is the time step of the last code accepted (codes are accepted once).
	TOTPSecret   string
	TOTPLastStep int64
	CreatedAt    time.Time
}

// sessionRecord is a login session. Role is its user's role, read with it.
type sessionRecord struct {
	Username        string
	CertFingerprint string
	ExpiresAt       time.Time
	Revoked         bool
	// SecondFactor: the login passed the user's TOTP second factor.
	SecondFactor bool
	// Role, UserDisabled and MustChangePassword are its user's, read with it.
	Role               string
	UserDisabled       bool
	MustChangePassword bool
}

func tokenHash(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// ErrTooManySessions is returned by CreateSession when the user has as many live sessions as
// allowed.
var ErrTooManySessions = errors.New("gateway: too many live sessions for the user")

// paymentRecord is a payment row.
type paymentRecord struct {
	PaymentID      string
	Username       string
	From, To       string
	Amount         int64
	Currency       string
	Description    string
	Fingerprint    []byte
	Decision       decision
	FailureReason  int32
	FailureMessage string
	Presumed       bool
	Completed      bool
	CreatedAt      time.Time
	Deadline       time.Time
	DecidedAt      time.Time
	// DecidedBy is who recorded the decision (decidedByUnknown while undecided).
	DecidedBy   decider
	CompletedAt time.Time
	// RefundOf is, on a refund, the payment_id of the payment it gives money back for ("" on
	// a payment). A refund is a payment like any other, from the refunded payment's to-account
	// back to its from-account, made by the payee.
	RefundOf string
	// Refunded is how much of Amount succeeded refunds gave back (always 0 on a refund).
	Refunded int64
}

// isRefund says whether p is a refund of another payment.
func (p paymentRecord) isRefund() bool { return p.RefundOf != "" }

// paymentFingerprint identifies a payment's parameters: the same payment_id may be sent again
// only with the same fingerprint.
func paymentFingerprint(username, from, to string, amount int64, currency string) []byte {
	h := sha256.New()
	for _, s := range []string{username, from, to, currency} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	var a [8]byte
	binary.BigEndian.PutUint64(a[:], uint64(amount))
	h.Write(a[:])
	return h.Sum(nil)
}

// refundFingerprint identifies a refund's parameters, as paymentFingerprint does a payment's:
// the refunder, the refunded payment and the amount asked for (0 for "what is left"). It is
// domain-separated from payments' fingerprints, so that a refund_id can never replay a payment
// that has the same id, nor a payment_id a refund.
func refundFingerprint(username, paymentID string, amount int64) []byte {
	h := sha256.New()
	h.Write([]byte("paygate refund\x00"))
	for _, s := range []string{username, paymentID} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	var a [8]byte
	binary.BigEndian.PutUint64(a[:], uint64(amount))
	h.Write(a[:])
	return h.Sum(nil)
}

// Refund admission refusals (StartAdmitPayment of a refund): nothing was recorded.
var (
	// ErrRefundExceedsPayment: the refund's amount is more than what is left of the payment
	// once the refunds admitted and not failed are counted (errors.As a *RefundLeftError
	// says how much is left).
	ErrRefundExceedsPayment = errors.New("gateway: refund exceeds what is left of the payment")
	// ErrRefundNotSucceeded: the refunded payment is not decided commit.
	ErrRefundNotSucceeded = errors.New("gateway: refunded payment has not succeeded")
	// ErrRefundOfRefund: the refunded payment is itself a refund.
	ErrRefundOfRefund = errors.New("gateway: a refund cannot be refunded")
)

// RefundLeftError is ErrRefundExceedsPayment with what is left to refund of the payment: its
// amount less the refunds admitted and not failed.
type RefundLeftError struct{ Left int64 }

func (e *RefundLeftError) Error() string {
	return fmt.Sprintf("%s (%d left)", ErrRefundExceedsPayment, e.Left)
}

// Is makes errors.Is(err, ErrRefundExceedsPayment) hold.
func (e *RefundLeftError) Is(target error) bool { return target == ErrRefundExceedsPayment }

// refundReservation is what admitting refund takes from its payment, whose amount is amount
// with reserved of it taken by refunds admitted and not failed, decided as d and itself a
// refund of refundOf: the refund's amount (refund.Amount, or all that is left when it is 0), or
// the refusal. Both stores call it with the payment's row locked.
func refundReservation(refund paymentRecord, amount, reserved int64, d decision, refundOf string) (int64, error) {
	switch {
	case refundOf != "":
		return 0, ErrRefundOfRefund
	case d != decisionCommit:
		return 0, ErrRefundNotSucceeded
	}
	left := amount - reserved
	want := refund.Amount
	if want == 0 {
		want = left
	}
	if want <= 0 || want > left {
		return 0, &RefundLeftError{Left: left}
	}
	return want, nil
}

// pageCursor is where a page of ListPayments ends.
type pageCursor struct {
	CreatedAt int64
	PaymentID string
}

// newestFirst sorts payments newest first (created_at, then payment_id, descending: the
// listings' order) and keeps the first limit.
func newestFirst(list []paymentRecord, limit int) []paymentRecord {
	slices.SortFunc(list, func(a, b paymentRecord) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(b.PaymentID, a.PaymentID)
	})
	if limit >= 0 && len(list) > limit {
		list = list[:limit]
	}
	return list
}

// unfinishedCursor is where a page of Unfinished ends.
type unfinishedCursor struct {
	Deadline  int64
	PaymentID string
}

// decisionFilter selects payments by decision.
type decisionFilter struct{ decision decision }

// admitPayment inserts p (undecided) into s unless a payment with its id exists. It returns the
// stored row and whether it was inserted now, once that is durable.
func admitPayment(ctx context.Context, s paymentLog, p paymentRecord) (paymentRecord, bool, error) {
	stored, inserted, durable, err := s.StartAdmitPayment(ctx, p)
	if err == nil {
		err = durable()
	}
	if err != nil {
		return p, false, err
	}
	return stored, inserted, nil
}
