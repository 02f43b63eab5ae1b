package gateway

import (
	"context"
	"time"
)

func (s *PGStore) ListUsers(ctx context.Context, query, role, after string, limit int) ([]userRecord, error) {
	return nil, errAdminStoreTODO
}

func (s *PGStore) UpdateUser(ctx context.Context, username string, fn func(u *userRecord) error, revokeSessions bool, now time.Time) (before, after userRecord, revoked int, err error) {
	return before, after, 0, errAdminStoreTODO
}

func (s *PGStore) UseTOTPStep(ctx context.Context, username string, step int64) (bool, error) {
	return false, errAdminStoreTODO
}

func (s *PGStore) LinkAccount(ctx context.Context, username, account string) error {
	return errAdminStoreTODO
}

func (s *PGStore) UnlinkAccount(ctx context.Context, username, account string) error {
	return errAdminStoreTODO
}

func (s *PGStore) AppendAudit(ctx context.Context, rec auditRecord) (auditRecord, error) {
	return rec, errAdminStoreTODO
}

func (s *PGStore) ListAudit(ctx context.Context, actor string, before int64, limit int) ([]auditRecord, error) {
	return nil, errAdminStoreTODO
}

func (s *PGStore) ScanAudit(ctx context.Context, after int64, limit int) ([]auditRecord, error) {
	return nil, errAdminStoreTODO
}

func (s *PGStore) AppendTrail(ctx context.Context, events []trailEvent) error {
	return errAdminStoreTODO
}

func (s *PGStore) Trail(ctx context.Context, paymentID string) ([]trailEvent, error) {
	return nil, errAdminStoreTODO
}

func (s *PGStore) SearchPayments(ctx context.Context, q paymentQuery) ([]paymentRecord, error) {
	return nil, errAdminStoreTODO
}

func (s *PGStore) InDoubt(ctx context.Context, limit int) ([]paymentRecord, error) {
	return nil, errAdminStoreTODO
}
