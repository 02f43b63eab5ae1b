package gateway

import (
	"context"
	"errors"
	"time"
)

var errAdminStoreTODO = errors.New("gateway: not implemented yet")

func (s *SQLiteStore) ListUsers(ctx context.Context, query, role, after string, limit int) ([]userRecord, error) {
	return nil, errAdminStoreTODO
}

func (s *SQLiteStore) UpdateUser(ctx context.Context, username string, fn func(u *userRecord) error, revokeSessions bool, now time.Time) (before, after userRecord, revoked int, err error) {
	return before, after, 0, errAdminStoreTODO
}

func (s *SQLiteStore) UseTOTPStep(ctx context.Context, username string, step int64) (bool, error) {
	return false, errAdminStoreTODO
}

func (s *SQLiteStore) LinkAccount(ctx context.Context, username, account string) error {
	return errAdminStoreTODO
}

func (s *SQLiteStore) UnlinkAccount(ctx context.Context, username, account string) error {
	return errAdminStoreTODO
}

func (s *SQLiteStore) AppendAudit(ctx context.Context, rec auditRecord) (auditRecord, error) {
	return rec, errAdminStoreTODO
}

func (s *SQLiteStore) ListAudit(ctx context.Context, actor string, before int64, limit int) ([]auditRecord, error) {
	return nil, errAdminStoreTODO
}

func (s *SQLiteStore) ScanAudit(ctx context.Context, after int64, limit int) ([]auditRecord, error) {
	return nil, errAdminStoreTODO
}

func (s *SQLiteStore) AppendTrail(ctx context.Context, events []trailEvent) error {
	return errAdminStoreTODO
}

func (s *SQLiteStore) Trail(ctx context.Context, paymentID string) ([]trailEvent, error) {
	return nil, errAdminStoreTODO
}

func (s *SQLiteStore) SearchPayments(ctx context.Context, q paymentQuery) ([]paymentRecord, error) {
	return nil, errAdminStoreTODO
}

func (s *SQLiteStore) InDoubt(ctx context.Context, limit int) ([]paymentRecord, error) {
	return nil, errAdminStoreTODO
}
