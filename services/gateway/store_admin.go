package gateway

import (
	"context"
	"errors"
	"time"
)

// What the admin interface needs of the store: users as admins manage them, the audit log
// (hash-chained), and each payment's two-phase trail. Both stores implement it
// (store_admin_sqlite.go, store_admin_pg.go); the contract tests run against both.

// adminStore is the part of Store that AdminService and `paygate admin` use.
type adminStore interface {
	// ListUsers returns users in username order after the username after (when set), at most
	// limit, with their accounts: only those whose username contains query (case-insensitive)
	// when it is set, and only of role when it is set.
	ListUsers(ctx context.Context, query, role, after string, limit int) ([]userRecord, error)
	// UpdateUser reads username's row, lets fn change it (fn may refuse with an error, which
	// UpdateUser returns, changing nothing), and writes it back, in one transaction; with
	// revokeSessions it also revokes the user's live sessions in that transaction. It returns
	// the user before and after and how many sessions it revoked, or ErrNotFound. Username,
	// Accounts and CreatedAt are not changed by it. When the update leaves no enabled admin
	// (while there was one before), it refuses with ErrLastAdmin; concurrent updates cannot
	// get past that check together.
	UpdateUser(ctx context.Context, username string, fn func(u *userRecord) error, revokeSessions bool, now time.Time) (before, after userRecord, revoked int, err error)
	// UseTOTPStep records that username's second factor accepted the code of time step step,
	// unless a code of that step or a later one was accepted already (a replay): then it
	// returns false.
	UseTOTPStep(ctx context.Context, username string, step int64) (bool, error)
	// LinkAccount links account to username: ErrNotFound for an unknown user,
	// ErrAccountLinked when the account is linked to anybody (username included).
	LinkAccount(ctx context.Context, username, account string) error
	// UnlinkAccount removes the link of account to username, or returns ErrNotFound when
	// there is none.
	UnlinkAccount(ctx context.Context, username, account string) error

	// AppendAudit appends rec to the audit log and returns it as stored: Seq (1, 2, 3, … in
	// append order, with no gaps), At (the store's clock), PrevHash (the previous entry's Hash,
	// nil for the first) and Hash (auditHash of the entry) are set by the store. Appends from
	// every process sharing the store form one chain.
	AppendAudit(ctx context.Context, rec auditRecord) (auditRecord, error)
	// ListAudit returns entries newest first with Seq below before (when before > 0), only
	// actor's when actor is set, at most limit.
	ListAudit(ctx context.Context, actor string, before int64, limit int) ([]auditRecord, error)
	// ScanAudit returns entries oldest first with Seq above after, at most limit, as stored
	// (for verification: nothing is recomputed).
	ScanAudit(ctx context.Context, after int64, limit int) ([]auditRecord, error)

	// AppendTrail appends events to their payments' trails (in one transaction).
	AppendTrail(ctx context.Context, events []trailEvent) error
	// Trail returns a payment's trail events, oldest first.
	Trail(ctx context.Context, paymentID string) ([]trailEvent, error)
	// SearchPayments returns every user's payments matching q, newest first (created_at,
	// payment_id), after q.After when set, at most q.Limit.
	SearchPayments(ctx context.Context, q paymentQuery) ([]paymentRecord, error)
	// InDoubt returns the payments that are undecided or not yet completed, of every process,
	// oldest deadline first, at most limit.
	InDoubt(ctx context.Context, limit int) ([]paymentRecord, error)
}

// ErrLastAdmin is UpdateUser's refusal to leave the store without an enabled admin.
var ErrLastAdmin = errors.New("gateway: the last enabled admin cannot be disabled or demoted")

// auditRecord is one entry of the audit log. See AuditEntry in proto/paygate/gateway/v1/admin.proto
// for what each field holds.
type auditRecord struct {
	Seq       int64
	At        time.Time
	Actor     string
	ActorCert string
	Peer      string
	Action    string
	Target    string
	Outcome   string
	Reason    string
	RequestID string
	Before    string
	After     string
	PrevHash  []byte
	Hash      []byte
}

// trailEvent is one step of a payment's two-phase commit; Kind and DecidedBy hold
// gatewayv1.TrailEventKind and gatewayv1.DecidedBy values.
type trailEvent struct {
	PaymentID string
	At        time.Time
	Kind      int32
	Bank      string
	Vote      string
	Decision  string
	DecidedBy int32
	Attempt   int32
	Replica   string
	Detail    string
}

// paymentQuery selects payments of any user for SearchPayments. Zero fields select all.
type paymentQuery struct {
	Username string
	// Account matches from_account or to_account.
	Account string
	// Bank matches payments with either account at the bank ("<bank>-...").
	Bank string
	// Status: nil for all; decisionNone selects undecided (PROCESSING) payments.
	Decision      *decision
	FailureReason int32
	CreatedAfter  time.Time // inclusive
	CreatedBefore time.Time // exclusive
	After         *pageCursor
	Limit         int
}
