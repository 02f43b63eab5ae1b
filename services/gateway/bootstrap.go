package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/google/uuid"
	"golang.org/x/crypto/bcrypt"
)

// What `paygate admin` does against the gateway's store directly, without a running gateway:
// bootstrap the first admin, and verify the audit log.

// StoreLocation says where a gateway's store is, as Config's fields of the same names do: a
// PostgreSQL URL, or else the data directory holding gateway.db.
type StoreLocation struct{ DataDir, DatabaseURL string }

// AdminEnrollment is a new admin's second factor, shown once: the TOTP secret (base32) and its
// otpauth:// URL (for a QR code).
type AdminEnrollment struct{ Username, Secret, URL string }

// ErrAdminExists is BootstrapAdmin's refusal when the store has an enabled admin with a second
// factor: that admin creates further admins with AdminService.CreateUser.
var ErrAdminExists = errors.New("gateway: an enabled admin exists already: sign in as that admin and use AdminService CreateUser")

// openStoreAt opens the store at for a command. A SQLite store must exist already: a mistyped
// data directory is reported rather than given a new, empty store (and a new store is made by
// the gateway's first start, which imports its users file only into an empty store).
func openStoreAt(ctx context.Context, at StoreLocation) (Store, error) {
	if at.DatabaseURL == "" {
		if at.DataDir == "" {
			return nil, errors.New("gateway: data directory (or database URL) required")
		}
		path := filepath.Join(at.DataDir, "gateway.db")
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("gateway: no gateway store at %s: start the gateway with this data directory once first (%w)", path, err)
		}
	}
	return openStore(ctx, Config{DataDir: at.DataDir, DatabaseURL: at.DatabaseURL, LeaseTTL: DefaultLeaseTTL, Logger: slog.New(slog.DiscardHandler)})
}

// BootstrapAdmin creates the first admin of the store at: username with password (not an
// initial one: it need not be changed) and a new TOTP second factor, returned once. It appends
// an audit entry (action "bootstrap", actor operator, e.g. "local:root"). It is refused with
// ErrAdminExists when an enabled admin with a second factor exists, and when username is taken
// (by a customer or anyone else); username and password must be as CreateUser wants them.
// Admins imported from a users file have no second factor and cannot use AdminService: they do
// not count.
func BootstrapAdmin(ctx context.Context, at StoreLocation, username, password, operator string) (AdminEnrollment, error) {
	if err := validateNewUser(username, "username", password, "password"); err != nil {
		return AdminEnrollment{}, fmt.Errorf("gateway: %w", err)
	}
	if operator == "" {
		return AdminEnrollment{}, errors.New("gateway: operator: required, for the audit log")
	}
	s, err := openStoreAt(ctx, at)
	if err != nil {
		return AdminEnrollment{}, err
	}
	defer s.Close()
	if ok, err := hasSignInAdmin(ctx, s); err != nil {
		return AdminEnrollment{}, err
	} else if ok {
		return AdminEnrollment{}, ErrAdminExists
	}
	switch u, err := s.User(ctx, username); {
	case err == nil:
		return AdminEnrollment{}, fmt.Errorf("gateway: username: %s exists already (as a %s): choose another username for the admin", username, u.Role)
	case !errors.Is(err, ErrNotFound):
		return AdminEnrollment{}, err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return AdminEnrollment{}, fmt.Errorf("gateway: hash password: %w", err)
	}
	key, err := newTOTPKey(username)
	if err != nil {
		return AdminEnrollment{}, err
	}
	rec := userRecord{Username: username, PasswordHash: string(hash), Role: RoleAdmin, TOTPSecret: key.Secret()}
	switch err := s.CreateUsers(ctx, []userRecord{rec}, s.Now()); {
	case errors.Is(err, ErrUserExists):
		return AdminEnrollment{}, fmt.Errorf("gateway: username: %s exists already: choose another username for the admin", username)
	case err != nil:
		return AdminEnrollment{}, err
	}
	after := auditUser(rec)
	after.NewSecondFactor = true
	if _, err := s.AppendAudit(ctx, auditRecord{Actor: operator, Action: "bootstrap", Target: userTarget(username),
		Outcome: "ok", RequestID: uuid.NewString(), After: auditJSON(after)}); err != nil {
		return AdminEnrollment{}, fmt.Errorf("gateway: admin %s was created, but the audit log could not be written: %w", username, err)
	}
	return AdminEnrollment{Username: username, Secret: key.Secret(), URL: key.URL()}, nil
}

// hasSignInAdmin reports whether s has an enabled admin with a second factor.
func hasSignInAdmin(ctx context.Context, s Store) (bool, error) {
	after := ""
	for {
		page, err := s.ListUsers(ctx, "", RoleAdmin, after, 500)
		if err != nil {
			return false, err
		}
		for _, u := range page {
			if !u.Disabled && u.TOTPSecret != "" {
				return true, nil
			}
		}
		if len(page) < 500 {
			return false, nil
		}
		after = page[len(page)-1].Username
	}
}

// AuditVerification is what VerifyAuditLog found (see AdminService.VerifyAuditLog).
type AuditVerification struct {
	// OK: every entry's hash is right and links to the one before.
	OK bool
	// Entries is how many entries were checked; FirstBroken is the seq of the first entry whose
	// hash or link is wrong (0 when OK), and Problem says what is wrong with it.
	Entries, FirstBroken int64
	Problem              string
}

// VerifyAuditLog checks the hash chain of the audit log of the store at from its first entry.
func VerifyAuditLog(ctx context.Context, at StoreLocation) (AuditVerification, error) {
	s, err := openStoreAt(ctx, at)
	if err != nil {
		return AuditVerification{}, err
	}
	defer s.Close()
	v, err := verifyAudit(ctx, s)
	if err != nil {
		return AuditVerification{}, err
	}
	return AuditVerification(v), nil
}

// CurrentTOTP returns the TOTP code of secret (base32) at t: what an authenticator app shows.
func CurrentTOTP(secret string, t time.Time) (string, error) {
	code, err := totpCode(secret, t)
	if err != nil {
		return "", fmt.Errorf("gateway: TOTP code: %w", err)
	}
	return code, nil
}
