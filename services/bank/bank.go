package bank

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"regexp"
	"time"

	"github.com/paygate/paygate/internal/money"
	"github.com/paygate/paygate/internal/sqlitedb"
)

// DefaultCurrency is the currency of seed-format accounts when Config.Currency is empty.
const DefaultCurrency = "USD"

// bankNamePattern is what a bank name may look like: it names the ledger file and prefixes
// account ids, so no path separators or dots, and it neither starts nor ends with '-'.
var bankNamePattern = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9_-]{0,46}[A-Za-z0-9])?$`)

// Config configures a bank.
type Config struct {
	// Name is the bank's name, e.g. "bank1": it owns the accounts "bank1-<number>".
	Name string
	// DataDir holds the ledger, in the file DataDir/<Name>.db, when DatabaseURL is empty.
	DataDir string
	// DatabaseURL, when set, is the PostgreSQL database of the ledger instead of the SQLite
	// file under DataDir: a postgres:// or postgresql:// URL (see OpenPGLedger). The database
	// must exist and holds the ledger of this bank only. Its password is never logged.
	DatabaseURL string
	// AccountsFile is the fixtures file the accounts are imported from on the first start (see
	// ParseAccounts). It is not read once the ledger has accounts, and may then be empty.
	AccountsFile string
	// Currency of seed-format accounts; DefaultCurrency when empty.
	Currency string
	// Logger receives the bank's logs; nil discards them.
	Logger *slog.Logger
	// NoGroupCommit gives every ledger write its own transaction and sync (see
	// sqlitedb.Options); for measuring what group commit buys. SQLite only.
	NoGroupCommit bool
}

// ErrDatabaseURL is the error of a Config.DatabaseURL that is not a PostgreSQL URL.
var ErrDatabaseURL = errors.New("bank: database URL")

// checkDatabaseURL accepts a postgres:// or postgresql:// URL with a host or a path. Its
// errors never quote the URL, which may hold a password.
func checkDatabaseURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%w: not a valid URL; want postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE", ErrDatabaseURL)
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return fmt.Errorf("%w: scheme %q: want postgres:// or postgresql://", ErrDatabaseURL, u.Scheme)
	}
	if u.Opaque != "" {
		return fmt.Errorf("%w: want postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE", ErrDatabaseURL)
	}
	return nil
}

// CheckDatabaseURL reports whether c.DatabaseURL, if set, is a PostgreSQL URL; the error
// never quotes it.
func (c Config) CheckDatabaseURL() error {
	if c.DatabaseURL == "" {
		return nil
	}
	return checkDatabaseURL(c.DatabaseURL)
}

// RedactURL returns a database URL with its password replaced by "xxxxx", for logs and
// messages; a string that is not a URL is returned as "(unparsable URL)".
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	if q := u.Query(); q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

// Validate reports what is wrong with the configuration, after filling in defaults.
func (c *Config) Validate() error {
	if c.Currency == "" {
		c.Currency = DefaultCurrency
	}
	var errs []error
	if !bankNamePattern.MatchString(c.Name) {
		errs = append(errs, fmt.Errorf("bank name %q: want 1 to 48 letters, digits, '-' or '_', starting and ending with a letter or digit", c.Name))
	}
	if c.DatabaseURL != "" {
		if err := checkDatabaseURL(c.DatabaseURL); err != nil {
			errs = append(errs, err)
		}
	} else if c.DataDir == "" {
		errs = append(errs, errors.New("no data directory"))
	}
	if !money.Known(c.Currency) {
		errs = append(errs, fmt.Errorf("unknown currency %q", c.Currency))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("bank: config: %w", err)
	}
	return nil
}

// LedgerPath is the path of the bank's ledger file (SQLite).
func (c Config) LedgerPath() string { return filepath.Join(c.DataDir, c.Name+".db") }

// LedgerLocation says where the ledger is, for logs: the SQLite file's path, or the
// PostgreSQL URL with its password redacted.
func (c Config) LedgerLocation() string {
	if c.DatabaseURL != "" {
		return RedactURL(c.DatabaseURL)
	}
	return c.LedgerPath()
}

// LedgerStore is what a bank needs of its ledger: the service's methods, the in-doubt
// resolver's PreparedBefore, the first start's import, and the operators' enrollment codes.
// *Ledger (SQLite) and *PGLedger (PostgreSQL) provide it, with the same semantics (the
// contract tests run on both).
type LedgerStore interface {
	ledgerStore
	PreparedBefore(ctx context.Context, t time.Time) ([]Transaction, error)
	CountAccounts(ctx context.Context) (int, error)
	ImportAccounts(ctx context.Context, accounts []Account) error
	IssueEnrollmentCode(ctx context.Context, id string, ttl time.Duration, now time.Time) (EnrollmentCode, error)
	EnrollmentStatus(ctx context.Context, id string) (EnrollmentStatus, bool, error)
	// Bank is the name of the bank the ledger belongs to.
	Bank() string
	Close() error
}

var (
	_ LedgerStore = (*Ledger)(nil)
	_ LedgerStore = (*PGLedger)(nil)
)

// OpenLedgerStore opens the ledger cfg describes: the PostgreSQL database at cfg.DatabaseURL
// when it is set, otherwise the SQLite file cfg.LedgerPath() (created if needed). It imports
// nothing. cfg must be valid (Config.Validate).
func OpenLedgerStore(ctx context.Context, cfg Config) (LedgerStore, error) {
	if cfg.DatabaseURL != "" {
		return OpenPGLedger(ctx, cfg.DatabaseURL, cfg.Name)
	}
	return OpenLedger(ctx, cfg.LedgerPath(), cfg.Name, sqlitedb.Options{NoGroupCommit: cfg.NoGroupCommit})
}

// Bank is an opened bank: its ledger and the BankService serving it.
type Bank struct {
	Ledger  LedgerStore
	Service *Service
}

// Open opens the bank described by cfg: it opens (creating if needed) the ledger and, on the first
// start only (the ledger has no account), imports the accounts file in one transaction. Processes
// starting together on one ledger import it once: the import only fills an empty ledger, and the
// others find the accounts it wrote. Close the bank after the server using its Service has
// stopped.
func Open(ctx context.Context, cfg Config) (*Bank, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ledger, err := OpenLedgerStore(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("bank %s: %w", cfg.Name, err)
	}
	if err := importOnFirstStart(ctx, ledger, cfg, logger); err != nil {
		ledger.Close()
		return nil, fmt.Errorf("bank %s: %w", cfg.Name, err)
	}
	return &Bank{Ledger: ledger, Service: NewService(cfg.Name, ledger, logger)}, nil
}

func importOnFirstStart(ctx context.Context, ledger LedgerStore, cfg Config, logger *slog.Logger) error {
	n, err := ledger.CountAccounts(ctx)
	if err != nil {
		return err
	}
	if n > 0 {
		logger.InfoContext(ctx, "ledger has accounts; accounts file not read", "bank", cfg.Name, "accounts", n, "ledger", cfg.LedgerLocation(), "skipped_file", cfg.AccountsFile)
		return nil
	}
	if cfg.AccountsFile == "" {
		return errors.New("the ledger is empty and no accounts file is configured")
	}
	accounts, err := ReadAccountsFile(cfg.AccountsFile, cfg.Name, cfg.Currency)
	if err != nil {
		return err
	}
	if len(accounts) == 0 {
		return fmt.Errorf("%s: no accounts", cfg.AccountsFile)
	}
	err = ledger.ImportAccounts(ctx, accounts)
	if errors.Is(err, ErrLedgerNotEmpty) {
		// Another process on the same ledger imported between the count and the import.
		logger.InfoContext(ctx, "ledger has accounts imported by another process; accounts file not used", "bank", cfg.Name, "ledger", cfg.LedgerLocation(), "skipped_file", cfg.AccountsFile)
		return nil
	}
	if err != nil {
		return err
	}
	logger.InfoContext(ctx, "imported accounts", "bank", cfg.Name, "accounts", len(accounts), "file", cfg.AccountsFile, "ledger", cfg.LedgerLocation())
	return nil
}

// Close closes the bank's ledger.
func (b *Bank) Close() error { return b.Ledger.Close() }
