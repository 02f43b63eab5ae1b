package audit

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	"github.com/paygate/paygate/gen/paygate/bank/v1/bankv1connect"
	"github.com/paygate/paygate/services/bank"
)

func TestConserved(t *testing.T) {
	t.Parallel()
	start := Ledger{Total: 1000, Initial: 1000}
	tests := []struct {
		name          string
		before, after Ledger
		ok            bool
		mentions      []string
	}{
		{"payments only", start, start, true, nil},
		{"deposits and withdrawals", start, Ledger{Total: 1250, Initial: 1000, Deposited: 300, Withdrawn: 50}, true, nil},
		{"deposits before and after", Ledger{Total: 1300, Initial: 1000, Deposited: 300}, Ledger{Total: 1290, Initial: 1000, Deposited: 300, Withdrawn: 10}, true, nil},
		{"money appeared", start, Ledger{Total: 1007, Initial: 1000}, false, []string{"1000 before", "1007 after", "+7"}},
		{"a deposit without its money", start, Ledger{Total: 1000, Initial: 1000, Deposited: 5}, false, []string{"deposits 0 before, 5 after", "-5"}},
		{"a withdrawal without its money leaving", start, Ledger{Total: 1000, Initial: 1000, Withdrawn: 5}, false, []string{"withdrawals 0 before, 5 after", "+5"}},
		// Both audits agree with each other but not with what the banks were given.
		{"off from the initial total", Ledger{Total: 990, Initial: 1000}, Ledger{Total: 990, Initial: 1000}, false, []string{"initial 1000", "-10"}},
		{"unsettled after: only the change is checked", Ledger{Total: 990, Initial: 1000}, Ledger{Total: 990, Initial: 1000, Held: 3}, true, nil},
	}
	for _, tt := range tests {
		err := Conserved(tt.before, tt.after)
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrNotConserved)) {
			t.Errorf("%s: Conserved = %v; want ok %v", tt.name, err, tt.ok)
			continue
		}
		for _, m := range tt.mentions {
			if !strings.Contains(err.Error(), m) {
				t.Errorf("%s: %q does not mention %q", tt.name, err, m)
			}
		}
	}
	if got := (Ledger{Total: 1250, Deposited: 300, Withdrawn: 50}).Base(); got != 1000 {
		t.Errorf("Base = %d; want 1000", got)
	}
}

// testBank serves a bank of name with accounts in process and returns a client of it, and its
// ledger.
func testBank(t *testing.T, name string, accounts ...bank.Account) (bankv1connect.BankServiceClient, *bank.Ledger) {
	t.Helper()
	ctx := context.Background()
	l, err := bank.OpenLedger(ctx, filepath.Join(t.TempDir(), name+".db"), name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	if err := l.ImportAccounts(ctx, accounts); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(bankv1connect.NewBankServiceHandler(bank.NewService(name, l, nil)))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return bankv1connect.NewBankServiceClient(srv.Client(), srv.URL), l
}

// Take sums the banks' accounts and summaries; a payment between them, a deposit and a
// withdrawal keep the money conserved, and a payment applied at one bank only does not.
func TestTakeAndConserved(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	usd := func(id string, b int64) bank.Account { return bank.Account{ID: id, Currency: "USD", Balance: b} }
	c1, l1 := testBank(t, "bank1", usd("bank1-1", 1000))
	c2, l2 := testBank(t, "bank2", usd("bank2-1", 500), usd("bank2-2", 0))
	banks := map[string]bankv1connect.BankServiceClient{"bank1": c1, "bank2": c2}

	before, err := Take(ctx, banks)
	if err != nil {
		t.Fatal(err)
	}
	if before.Total != 1500 || before.Initial != 1500 || len(before.Accounts) != 3 || !before.Settled() {
		t.Fatalf("before = %+v", before)
	}

	deadline := time.Now().Add(time.Minute)
	pay := func(txn string, legs ...[]bank.Leg) {
		t.Helper()
		for i, l := range []*bank.Ledger{l1, l2}[:len(legs)] {
			if v, err := l.Prepare(ctx, txn, legs[i], deadline, time.Now()); err != nil || !v.Yes {
				t.Fatalf("prepare %s: %+v, %v", txn, v, err)
			}
			if err := l.Commit(ctx, txn); err != nil {
				t.Fatal(err)
			}
		}
	}
	pay("p1", []bank.Leg{{Account: "bank1-1", Direction: bank.Debit, Amount: 300, Currency: "USD"}},
		[]bank.Leg{{Account: "bank2-2", Direction: bank.Credit, Amount: 300, Currency: "USD"}})
	post := func(id string, kind bankv1.EntryKind, account string, amount int64) {
		t.Helper()
		_, err := banks[account[:5]].PostEntry(ctx, connect.NewRequest(&bankv1.PostEntryRequest{EntryId: id, Kind: kind, AccountId: account,
			Amount: amount, Currency: "USD", Actor: "root", Reason: "test"}))
		if err != nil {
			t.Fatal(err)
		}
	}
	post("d1", bankv1.EntryKind_ENTRY_KIND_DEPOSIT, "bank2-1", 40)
	post("w1", bankv1.EntryKind_ENTRY_KIND_WITHDRAWAL, "bank1-1", 100)

	after, err := Take(ctx, banks)
	if err != nil {
		t.Fatal(err)
	}
	if after.Total != 1440 || after.Deposited != 40 || after.Withdrawn != 100 || after.Initial != 1500 {
		t.Fatalf("after = %+v", after)
	}
	if err := Conserved(before, after); err != nil {
		t.Fatal(err)
	}

	// A credit with no debit: money from nowhere.
	pay("half", []bank.Leg{{Account: "bank1-1", Direction: bank.Credit, Amount: 7, Currency: "USD"}})
	broken, err := Take(ctx, banks)
	if err != nil {
		t.Fatal(err)
	}
	if err := Conserved(before, broken); !errors.Is(err, ErrNotConserved) || !strings.Contains(err.Error(), "+7") {
		t.Fatalf("Conserved after a half payment = %v; want ErrNotConserved naming +7", err)
	}
}
