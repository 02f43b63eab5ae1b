package bank

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"regexp"

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
	// DataDir holds the ledger, in the file DataDir/<Name>.db.
	DataDir string
	// AccountsFile is the fixtures file the accounts are imported from on the first start (see
	// ParseAccounts). It is not read once the ledger has accounts, and may then be empty.
	AccountsFile string
	// Currency of seed-format accounts; DefaultCurrency when empty.
	Currency string
	// Logger receives the bank's logs; nil discards them.
	Logger *slog.Logger
	// NoGroupCommit gives every ledger write its own transaction and sync (see
	// sqlitedb.Options); for measuring what group commit buys.
	NoGroupCommit bool
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
	if c.DataDir == "" {
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

// LedgerPath is the path of the bank's ledger file.
func (c Config) LedgerPath() string { return filepath.Join(c.DataDir, c.Name+".db") }

// Bank is an opened bank: its ledger and the BankService serving it.
type Bank struct {
	Ledger  *Ledger
	Service *Service
}

// Open opens the bank described by cfg: it opens (creating if needed) the ledger and, on the first
// start only (the ledger has no account), imports the accounts file in one transaction. Close the
// bank after the server using its Service has stopped.
func Open(ctx context.Context, cfg Config) (*Bank, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ledger, err := OpenLedger(ctx, cfg.LedgerPath(), cfg.Name, sqlitedb.Options{NoGroupCommit: cfg.NoGroupCommit})
	if err != nil {
		return nil, fmt.Errorf("bank %s: %w", cfg.Name, err)
	}
	if err := importOnFirstStart(ctx, ledger, cfg, logger); err != nil {
		ledger.Close()
		return nil, fmt.Errorf("bank %s: %w", cfg.Name, err)
	}
	return &Bank{Ledger: ledger, Service: NewService(cfg.Name, ledger, logger)}, nil
}

func importOnFirstStart(ctx context.Context, ledger *Ledger, cfg Config, logger *slog.Logger) error {
	n, err := ledger.CountAccounts(ctx)
	if err != nil {
		return err
	}
	if n > 0 {
		logger.InfoContext(ctx, "ledger has accounts; accounts file not read", "bank", cfg.Name, "accounts", n, "ledger", cfg.LedgerPath(), "skipped_file", cfg.AccountsFile)
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
	if err := ledger.ImportAccounts(ctx, accounts); err != nil {
		return err
	}
	logger.InfoContext(ctx, "imported accounts", "bank", cfg.Name, "accounts", len(accounts), "file", cfg.AccountsFile, "ledger", cfg.LedgerPath())
	return nil
}

// Close closes the bank's ledger.
func (b *Bank) Close() error { return b.Ledger.Close() }
