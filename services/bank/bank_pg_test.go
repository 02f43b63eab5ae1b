package bank

import (
	"context"
	"errors"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestOpenPostgres opens a bank on PostgreSQL: the first start imports the accounts file, a
// second one keeps the ledger, and another bank is refused the database.
func TestOpenPostgres(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := pgDatabase(t)
	file := filepath.Join(t.TempDir(), "accounts.json")
	if err := os.WriteFile(file, []byte(`{"bank1-1234": 1000.0, "bank1-5678": 250.5}`), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	cfg := Config{Name: "bank1", DatabaseURL: dbURL, AccountsFile: file, Logger: slog.New(slog.NewTextHandler(logs, nil))}
	b, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := b.Ledger.(*PGLedger); !ok {
		t.Fatalf("ledger is a %T, want *PGLedger", b.Ledger)
	}
	wantAccount(t, b.Ledger, "bank1-5678", 25050, 0, 0)
	if v := mustPrepare(t, b.Ledger.(testLedger), "t", debit("bank1-5678", 50)); !v.Yes {
		t.Fatal(v)
	}
	if err := b.Ledger.Commit(ctx, "t"); err != nil {
		t.Fatal(err)
	}
	b.Close()

	if err := os.WriteFile(file, []byte(`{"bank1-1234": 0.001}`), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err = Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	wantAccount(t, b.Ledger, "bank1-5678", 25000, 0, 0)
	b.Close()
	if !strings.Contains(logs.String(), "accounts file not read") {
		t.Fatalf("no log of the skipped import in:\n%s", logs)
	}

	other := cfg
	other.Name = "bank2"
	if b, err := Open(ctx, other); !errors.Is(err, ErrWrongBank) {
		if err == nil {
			b.Close()
		}
		t.Fatalf("bank2 on bank1's database: err = %v, want ErrWrongBank", err)
	}
}

// TestOpenPostgresConcurrentFirstStart starts several processes' worth of banks on one empty
// database at once: every one opens, and the accounts are imported exactly once.
func TestOpenPostgresConcurrentFirstStart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := pgDatabase(t)
	file := filepath.Join(t.TempDir(), "accounts.json")
	if err := os.WriteFile(file, []byte(`{"bank1-1": 10.0, "bank1-2": 20.0, "bank1-3": 30.0}`), 0o600); err != nil {
		t.Fatal(err)
	}
	const n = 6
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		errs  = make([]error, n)
		banks = make([]*Bank, n)
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			banks[i], errs[i] = Open(ctx, Config{Name: "bank1", DatabaseURL: dbURL, AccountsFile: file})
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("open %d: %v", i, err)
			continue
		}
		defer banks[i].Close()
	}
	if t.Failed() {
		return
	}
	if c, err := banks[0].Ledger.CountAccounts(ctx); err != nil || c != 3 {
		t.Fatalf("CountAccounts = %d, %v; want 3", c, err)
	}
	wantAccount(t, banks[n-1].Ledger, "bank1-2", 2000, 0, 0)
}

// TestImportIntoNonEmptyLedgerIsRefused checks the property the concurrent first start relies on,
// on both backends: an import only fills an empty ledger.
func TestImportIntoNonEmptyLedgerIsRefused(t *testing.T) {
	t.Parallel()
	forEachLedger(t, []Account{usd("bank1-1", 100)}, func(t *testing.T, l testLedger, _ reopenFunc) {
		err := l.ImportAccounts(context.Background(), []Account{usd("bank1-2", 100)})
		if !errors.Is(err, ErrLedgerNotEmpty) {
			t.Fatalf("import into a ledger with accounts: err = %v, want ErrLedgerNotEmpty", err)
		}
		if n, err := l.CountAccounts(context.Background()); err != nil || n != 1 {
			t.Fatalf("CountAccounts = %d, %v; want 1", n, err)
		}
	})
}

func TestConfigDatabaseURL(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		url string
		ok  bool
	}{
		{"postgres://u:pw@127.0.0.1:5432/bank1", true},
		{"postgresql://u@localhost/bank1?sslmode=disable", true},
		{"postgres:///bank1?host=/run/postgresql", true},
		{"mysql://u:s3cret@h/db", false},
		{"host=localhost dbname=bank1 password=s3cret", false},
		{"postgres:s3cret", false},
		{"postgres://u:s3cret@h:port/db", false},
	} {
		cfg := Config{Name: "bank1", DatabaseURL: tt.url}
		err := cfg.Validate()
		if (err == nil) != tt.ok {
			t.Errorf("%q: Validate() = %v, want ok %v", tt.url, err, tt.ok)
		}
		if err != nil && (!errors.Is(err, ErrDatabaseURL) || strings.Contains(err.Error(), "s3cret")) {
			t.Errorf("%q: Validate() = %v, want ErrDatabaseURL without the password", tt.url, err)
		}
	}
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"postgres://u:s3cret@h:5432/db":           "postgres://u:xxxxx@h:5432/db",
		"postgres://u@h/db":                       "postgres://u@h/db",
		"postgres://h/db?password=s3cret&x=1":     "postgres://h/db?password=xxxxx&x=1",
		"postgres://u:s3cret@h:port/db":           "(unparsable URL)",
		"postgresql://u:s%40cret@h/db?sslmode=on": "postgresql://u:xxxxx@h/db?sslmode=on",
	} {
		got := RedactURL(in)
		if got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
		if u, err := url.Parse(got); err == nil && strings.Contains(u.String(), "s3cret") {
			t.Errorf("RedactURL(%q) keeps the password", in)
		}
	}
}
