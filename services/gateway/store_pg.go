package gateway

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// PGStoreOptions configures OpenPGStore.
type PGStoreOptions struct {
	// LeaseTTL is how long this process's lease lasts without renewal (default 10s).
	LeaseTTL time.Duration
	Logger   *slog.Logger
}

// PGStore is the gateway's store on PostgreSQL, shared by any number of gateway replicas.
type PGStore struct {
	ttl time.Duration
}

var (
	_ Store        = (*PGStore)(nil)
	_ sharedLimits = (*PGStore)(nil)
)

var errPGNotImplemented = errors.New("gateway: PostgreSQL store: not implemented yet")

// OpenPGStore connects to the PostgreSQL database at url, applies the gateway's migrations and
// takes a lease for this process.
func OpenPGStore(ctx context.Context, url string, opts PGStoreOptions) (*PGStore, error) {
	return nil, errPGNotImplemented
}

func (s *PGStore) Close() error { return nil }
func (s *PGStore) Shared() bool { return true }
func (s *PGStore) Secret(ctx context.Context, name string, size int) ([]byte, error) {
	return nil, errPGNotImplemented
}
func (s *PGStore) CountUsers(ctx context.Context) (int, error) { return 0, errPGNotImplemented }
func (s *PGStore) CreateUsers(ctx context.Context, users []userRecord, now time.Time) error {
	return errPGNotImplemented
}
func (s *PGStore) User(ctx context.Context, username string) (userRecord, error) {
	return userRecord{}, errPGNotImplemented
}
func (s *PGStore) Accounts(ctx context.Context, username string) ([]string, error) {
	return nil, errPGNotImplemented
}
func (s *PGStore) AccountOwner(ctx context.Context, account string) (string, error) {
	return "", errPGNotImplemented
}
func (s *PGStore) CreateSession(ctx context.Context, token string, rec sessionRecord, now time.Time, max int) error {
	return errPGNotImplemented
}
func (s *PGStore) Session(ctx context.Context, token string) (sessionRecord, error) {
	return sessionRecord{}, errPGNotImplemented
}
func (s *PGStore) RevokeSession(ctx context.Context, token string, now time.Time) error {
	return errPGNotImplemented
}
func (s *PGStore) DeleteExpiredSessions(ctx context.Context, t time.Time) (int64, error) {
	return 0, errPGNotImplemented
}
func (s *PGStore) AdmitPayment(ctx context.Context, p paymentRecord) (paymentRecord, bool, error) {
	return p, false, errPGNotImplemented
}
func (s *PGStore) StartAdmitPayment(ctx context.Context, p paymentRecord) (paymentRecord, bool, func() error, error) {
	return p, false, nil, errPGNotImplemented
}
func (s *PGStore) Payment(ctx context.Context, id string) (paymentRecord, error) {
	return paymentRecord{}, errPGNotImplemented
}
func (s *PGStore) Decide(ctx context.Context, id string, d decision, reason int32, message string, presumed bool, now time.Time) (paymentRecord, error) {
	return paymentRecord{}, errPGNotImplemented
}
func (s *PGStore) AdoptUnadmitted(ctx context.Context, p paymentRecord) (paymentRecord, error) {
	return p, errPGNotImplemented
}
func (s *PGStore) MarkCompleted(ctx context.Context, ids []string, now time.Time) error {
	return errPGNotImplemented
}
func (s *PGStore) Unfinished(ctx context.Context, after *unfinishedCursor, limit int) ([]paymentRecord, error) {
	return nil, errPGNotImplemented
}
func (s *PGStore) ListPayments(ctx context.Context, username string, after *pageCursor, filter *decisionFilter, limit int) ([]paymentRecord, error) {
	return nil, errPGNotImplemented
}
func (s *PGStore) Unsettled(ctx context.Context, accounts []string, raising bool) ([]string, error) {
	return nil, errPGNotImplemented
}
func (s *PGStore) Owner() string { return "" }
func (s *PGStore) Claim(ctx context.Context, id string) (paymentRecord, bool, error) {
	return paymentRecord{}, false, errPGNotImplemented
}
func (s *PGStore) ClaimOrphans(ctx context.Context, limit int) (int, error) {
	return 0, errPGNotImplemented
}
func (s *PGStore) RenewLease(ctx context.Context) error   { return errPGNotImplemented }
func (s *PGStore) Holding() bool                          { return false }
func (s *PGStore) ReleaseLease(ctx context.Context) error { return errPGNotImplemented }
func (s *PGStore) LeaseTTL() time.Duration                { return s.ttl }
func (s *PGStore) Now() time.Time                         { return time.Now() }
func (s *PGStore) Listen(ctx context.Context, changed func(id string)) error {
	<-ctx.Done()
	return nil
}
func (s *PGStore) ReserveAttempt(ctx context.Context, scope string, keys []string, burst int, every time.Duration) (time.Duration, error) {
	return 0, errPGNotImplemented
}
func (s *PGStore) RefundAttempt(ctx context.Context, scope string, keys []string, burst int) error {
	return errPGNotImplemented
}
func (s *PGStore) OpenStream(ctx context.Context, username string, max int) (func(), error) {
	return nil, errPGNotImplemented
}
