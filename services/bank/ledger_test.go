package bank

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	t0       = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	deadline = t0.Add(30 * time.Second)
)

// openTestLedger opens a ledger of bank1 in a temporary directory with the given accounts.
func openTestLedger(t testing.TB, accounts ...Account) (*Ledger, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "bank1.db")
	l, err := OpenLedger(context.Background(), path, "bank1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	if len(accounts) > 0 {
		if err := l.ImportAccounts(context.Background(), accounts); err != nil {
			t.Fatal(err)
		}
	}
	return l, path
}

func usd(id string, balance int64) Account {
	return Account{ID: id, Currency: "USD", Balance: balance}
}

func debit(id string, amount int64) Leg {
	return Leg{Account: id, Direction: Debit, Amount: amount, Currency: "USD"}
}
func credit(id string, amount int64) Leg {
	return Leg{Account: id, Direction: Credit, Amount: amount, Currency: "USD"}
}

// wantAccount checks an account's amounts.
func wantAccount(t testing.TB, l ledgerStore, id string, balance, held, pending int64) {
	t.Helper()
	a, err := l.Account(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if a.Balance != balance || a.Held != held || a.PendingCredit != pending {
		t.Fatalf("%s: balance %d held %d pending %d; want %d %d %d", id, a.Balance, a.Held, a.PendingCredit, balance, held, pending)
	}
}

func mustPrepare(t testing.TB, l testLedger, txn string, legs ...Leg) Vote {
	t.Helper()
	v, err := l.Prepare(context.Background(), txn, legs, deadline, t0)
	if err != nil {
		t.Fatalf("prepare %s: %v", txn, err)
	}
	return v
}

func wantState(t testing.TB, l testLedger, txn string, s State) {
	t.Helper()
	got, err := l.Transaction(context.Background(), txn)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != s {
		t.Fatalf("%s is %s; want %s", txn, got.State, s)
	}
}

func TestPrepareCommitMovesMoney(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	forEachLedger(t, []Account{usd("bank1-1", 10000), usd("bank1-2", 500)}, func(t *testing.T, l testLedger, _ reopenFunc) {

		if v := mustPrepare(t, l, "t1", debit("bank1-1", 2550)); !v.Yes {
			t.Fatalf("vote = %+v; want YES", v)
		}
		if v := mustPrepare(t, l, "t2", credit("bank1-2", 2550)); !v.Yes {
			t.Fatalf("vote = %+v; want YES", v)
		}
		wantAccount(t, l, "bank1-1", 10000, 2550, 0)
		wantAccount(t, l, "bank1-2", 500, 0, 2550)
		wantState(t, l, "t1", Prepared)

		for _, id := range []string{"t1", "t2"} {
			if err := l.Commit(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
		wantAccount(t, l, "bank1-1", 7450, 0, 0)
		wantAccount(t, l, "bank1-2", 3050, 0, 0)
		wantState(t, l, "t1", Committed)

		// Idempotent: repeating prepare and commit changes nothing.
		if v := mustPrepare(t, l, "t1", debit("bank1-1", 2550)); !v.Yes {
			t.Fatalf("replayed prepare of a committed txn = %+v; want YES", v)
		}
		if err := l.Commit(ctx, "t1"); err != nil {
			t.Fatal(err)
		}
		wantAccount(t, l, "bank1-1", 7450, 0, 0)

		// Crossing: abort after commit is refused.
		if err := l.Abort(ctx, "t1"); !errors.Is(err, ErrAlreadyCommitted) {
			t.Fatalf("abort after commit: %v; want ErrAlreadyCommitted", err)
		}
		wantAccount(t, l, "bank1-1", 7450, 0, 0)
	})
}

func TestPrepareAbortMovesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	forEachLedger(t, []Account{usd("bank1-1", 10000), usd("bank1-2", 500)}, func(t *testing.T, l testLedger, _ reopenFunc) {

		if v := mustPrepare(t, l, "t1", debit("bank1-1", 9000), credit("bank1-2", 9000)); !v.Yes {
			t.Fatalf("vote = %+v; want YES", v)
		}
		wantAccount(t, l, "bank1-1", 10000, 9000, 0)
		wantAccount(t, l, "bank1-2", 500, 0, 9000)
		// The hold is real: a second debit beyond what is available votes NO.
		if v := mustPrepare(t, l, "t2", debit("bank1-1", 1001)); v.Yes || v.Reason != ReasonInsufficientFunds {
			t.Fatalf("vote = %+v; want NO insufficient funds", v)
		}
		for range 2 { // idempotent
			if err := l.Abort(ctx, "t1"); err != nil {
				t.Fatal(err)
			}
		}
		wantAccount(t, l, "bank1-1", 10000, 0, 0)
		wantAccount(t, l, "bank1-2", 500, 0, 0)
		wantState(t, l, "t1", Aborted)

		if err := l.Commit(ctx, "t1"); !errors.Is(err, ErrAlreadyAborted) {
			t.Fatalf("commit after abort: %v; want ErrAlreadyAborted", err)
		}
		if v := mustPrepare(t, l, "t1", debit("bank1-1", 9000), credit("bank1-2", 9000)); v.Yes || v.Reason != ReasonAlreadyAborted {
			t.Fatalf("prepare after abort = %+v; want NO already aborted", v)
		}
		wantAccount(t, l, "bank1-1", 10000, 0, 0)
	})
}

func TestSameBankTransfer(t *testing.T) {
	t.Parallel()
	forEachLedger(t, []Account{usd("bank1-1", 1000), usd("bank1-2", 0)}, func(t *testing.T, l testLedger, _ reopenFunc) {
		if v := mustPrepare(t, l, "t", debit("bank1-1", 1000), credit("bank1-2", 1000)); !v.Yes {
			t.Fatalf("vote = %+v", v)
		}
		if err := l.Commit(context.Background(), "t"); err != nil {
			t.Fatal(err)
		}
		wantAccount(t, l, "bank1-1", 0, 0, 0)
		wantAccount(t, l, "bank1-2", 1000, 0, 0)
		got, err := l.Transaction(context.Background(), "t")
		if err != nil || len(got.Legs) != 2 || !got.Deadline.Equal(deadline) {
			t.Fatalf("transaction = %+v, %v", got, err)
		}
	})
}

func TestAbortBeforePrepareTombstone(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	forEachLedger(t, []Account{usd("bank1-1", 1000)}, func(t *testing.T, l testLedger, _ reopenFunc) {
		if err := l.Abort(ctx, "late"); err != nil {
			t.Fatal(err)
		}
		tomb, err := l.Transaction(ctx, "late")
		if err != nil || tomb.State != Aborted || len(tomb.Legs) != 0 || !tomb.Deadline.IsZero() {
			t.Fatalf("tombstone = %+v, %v", tomb, err)
		}
		if v := mustPrepare(t, l, "late", debit("bank1-1", 10)); v.Yes || v.Reason != ReasonAlreadyAborted {
			t.Fatalf("late prepare = %+v; want NO already aborted", v)
		}
		wantAccount(t, l, "bank1-1", 1000, 0, 0)
		if err := l.Commit(ctx, "late"); !errors.Is(err, ErrAlreadyAborted) {
			t.Fatalf("commit of a tombstone: %v", err)
		}
		if err := l.Commit(ctx, "never"); !errors.Is(err, ErrUnknownTransaction) {
			t.Fatalf("commit of an unknown txn: %v", err)
		}
	})
}

func TestPrepareVotesNo(t *testing.T) {
	t.Parallel()
	const nearMax = 2000 // what the other accounts hold
	closed := usd("bank1-9", 1000)
	closed.Closed = true
	tests := []struct {
		name   string
		legs   []Leg
		now    time.Time
		reason Reason
	}{
		{"insufficient funds", []Leg{debit("bank1-1", 1001)}, t0, ReasonInsufficientFunds},
		{"unknown account", []Leg{credit("bank1-404", 1)}, t0, ReasonUnknownAccount},
		{"another bank's account", []Leg{credit("bank2-1", 1)}, t0, ReasonUnknownAccount},
		{"currency mismatch", []Leg{{Account: "bank1-1", Direction: Debit, Amount: 1, Currency: "EUR"}}, t0, ReasonCurrencyMismatch},
		{"closed account", []Leg{credit("bank1-9", 1)}, t0, ReasonAccountClosed},
		{"deadline passed", []Leg{debit("bank1-1", 1)}, deadline.Add(time.Nanosecond), ReasonDeadlineExceeded},
		{"balance overflow", []Leg{credit("bank1-2", nearMax+1)}, t0, ReasonBalanceOverflow},
		{"second leg fails, first is not kept", []Leg{debit("bank1-1", 10), credit("bank1-404", 10)}, t0, ReasonUnknownAccount},
		{"two debits of one account checked together", []Leg{debit("bank1-1", 600), debit("bank1-1", 600)}, t0, ReasonInsufficientFunds},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			// bank1-2 holds all it can while the bank's total still fits in an int64.
			forEachLedger(t, []Account{usd("bank1-1", 1000), usd("bank1-2", math.MaxInt64-nearMax), closed}, func(t *testing.T, l testLedger, _ reopenFunc) {
				for attempt := range 2 { // a retry gets the same NO
					v, err := l.Prepare(ctx, "t", tt.legs, deadline, tt.now)
					if err != nil {
						t.Fatal(err)
					}
					if v.Yes || v.Reason != tt.reason || v.Message == "" {
						t.Fatalf("attempt %d: vote = %+v; want NO %s with a message", attempt, v, tt.reason)
					}
				}
				wantAccount(t, l, "bank1-1", 1000, 0, 0)
				wantAccount(t, l, "bank1-2", math.MaxInt64-nearMax, 0, 0)
				got, err := l.Transaction(ctx, "t")
				if err != nil || got.State != Aborted || got.Reason != tt.reason {
					t.Fatalf("recorded %+v, %v; want ABORTED %s", got, err, tt.reason)
				}
				if err := l.Commit(ctx, "t"); !errors.Is(err, ErrAlreadyAborted) {
					t.Fatalf("commit after NO: %v; want ErrAlreadyAborted", err)
				}
			})
		})
	}
}

func TestPrepareConflict(t *testing.T) {
	t.Parallel()
	forEachLedger(t, []Account{usd("bank1-1", 1000)}, func(t *testing.T, l testLedger, _ reopenFunc) {
		if v := mustPrepare(t, l, "t", debit("bank1-1", 10)); !v.Yes {
			t.Fatal(v)
		}
		if v := mustPrepare(t, l, "t", debit("bank1-1", 11)); v.Yes || v.Reason != ReasonConflict {
			t.Fatalf("vote = %+v; want NO conflict", v)
		}
		wantState(t, l, "t", Prepared)
		wantAccount(t, l, "bank1-1", 1000, 10, 0)
		// The order of legs does not matter to a replay.
		if v := mustPrepare(t, l, "t2", debit("bank1-1", 5), credit("bank1-1", 5)); !v.Yes {
			t.Fatal(v)
		}
		if v := mustPrepare(t, l, "t2", credit("bank1-1", 5), debit("bank1-1", 5)); !v.Yes {
			t.Fatalf("reordered replay = %+v; want YES", v)
		}
	})
}

func TestPrepareInvalidArguments(t *testing.T) {
	t.Parallel()
	forEachLedger(t, []Account{usd("bank1-1", 1000)}, func(t *testing.T, l testLedger, _ reopenFunc) {
		tests := []struct {
			name     string
			txn      string
			legs     []Leg
			deadline time.Time
		}{
			{"no txn id", "", []Leg{debit("bank1-1", 1)}, deadline},
			{"no legs", "t", nil, deadline},
			{"three legs", "t", []Leg{debit("bank1-1", 1), debit("bank1-1", 1), debit("bank1-1", 1)}, deadline},
			{"zero amount", "t", []Leg{debit("bank1-1", 0)}, deadline},
			{"negative amount", "t", []Leg{credit("bank1-1", -1)}, deadline},
			{"bad direction", "t", []Leg{{Account: "bank1-1", Direction: "SIDEWAYS", Amount: 1, Currency: "USD"}}, deadline},
			{"no deadline", "t", []Leg{debit("bank1-1", 1)}, time.Time{}},
		}
		for _, tt := range tests {
			if _, err := l.Prepare(context.Background(), tt.txn, tt.legs, tt.deadline, t0); !errors.Is(err, ErrInvalidArgument) {
				t.Errorf("%s: err = %v; want ErrInvalidArgument", tt.name, err)
			}
		}
	})
}

func TestLedgerSurvivesRestart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	forEachLedger(t, []Account{usd("bank1-1", 1000), usd("bank1-2", 0)}, func(t *testing.T, l testLedger, reopen reopenFunc) {
		mustPrepare(t, l, "committed", debit("bank1-1", 100), credit("bank1-2", 100))
		if err := l.Commit(ctx, "committed"); err != nil {
			t.Fatal(err)
		}
		mustPrepare(t, l, "prepared", debit("bank1-1", 200))
		mustPrepare(t, l, "credit", credit("bank1-2", 300))
		if err := l.Abort(ctx, "tomb"); err != nil {
			t.Fatal(err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}

		if _, err := reopen("bank2"); !errors.Is(err, ErrWrongBank) {
			t.Fatalf("open as another bank: %v; want ErrWrongBank", err)
		}
		l, err := reopen("bank1")
		if err != nil {
			t.Fatal(err)
		}
		wantAccount(t, l, "bank1-1", 900, 200, 0)
		wantAccount(t, l, "bank1-2", 100, 0, 300)
		wantState(t, l, "committed", Committed)
		wantState(t, l, "prepared", Prepared)
		wantState(t, l, "tomb", Aborted)
		if err := l.ImportAccounts(ctx, []Account{usd("bank1-3", 5)}); !errors.Is(err, ErrLedgerNotEmpty) {
			t.Fatalf("import into a used ledger: %v", err)
		}

		inDoubt, err := l.PreparedBefore(ctx, deadline.Add(time.Second))
		if err != nil || len(inDoubt) != 2 || inDoubt[0].Legs == nil {
			t.Fatalf("PreparedBefore = %+v, %v; want the two prepared txns with legs", inDoubt, err)
		}
		if none, _ := l.PreparedBefore(ctx, deadline); len(none) != 0 {
			t.Fatalf("PreparedBefore(deadline) = %+v; want none", none)
		}
		// The held money is still held after the restart, and phase two completes.
		if err := l.Commit(ctx, "prepared"); err != nil {
			t.Fatal(err)
		}
		if err := l.Abort(ctx, "credit"); err != nil {
			t.Fatal(err)
		}
		wantAccount(t, l, "bank1-1", 700, 0, 0)
		wantAccount(t, l, "bank1-2", 100, 0, 0)
	})
}

func TestListAccountsPages(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var accounts []Account
	for i := range 25 {
		accounts = append(accounts, usd(fmt.Sprintf("bank1-%03d", i), int64(i)))
	}
	forEachLedger(t, accounts, func(t *testing.T, l testLedger, _ reopenFunc) {
		var got []string
		token := ""
		for pages := 0; ; pages++ {
			page, next, err := l.ListAccounts(ctx, 10, token)
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range page {
				got = append(got, a.ID)
			}
			if next == "" {
				if pages != 2 {
					t.Fatalf("%d pages; want 3", pages+1)
				}
				break
			}
			token = next
		}
		if len(got) != 25 || got[0] != "bank1-000" || got[24] != "bank1-024" {
			t.Fatalf("listed %v", got)
		}
		if _, _, err := l.ListAccounts(ctx, 10, "!!"); !errors.Is(err, ErrInvalidPageToken) {
			t.Fatalf("bad token: %v", err)
		}
	})
}

func TestBalancesUnknownAccount(t *testing.T) {
	t.Parallel()
	forEachLedger(t, []Account{usd("bank1-1", 1)}, func(t *testing.T, l testLedger, _ reopenFunc) {
		_, err := l.Balances(context.Background(), []string{"bank1-1", "bank2-1"})
		if !errors.Is(err, ErrUnknownAccount) || !strings.Contains(err.Error(), "bank2-1") {
			t.Fatalf("err = %v; want ErrUnknownAccount naming bank2-1", err)
		}
	})
}

// Many concurrent payments from one account that cannot cover them all: the account never goes
// negative, what left it is exactly the committed debits, money is conserved, no hold remains.
func TestConcurrentDebitsNeverOverdraw(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const (
		workers = 50
		amount  = 700
		start   = 10000 // covers 14 of the 50
	)
	forEachLedger(t, []Account{usd("bank1-src", start), usd("bank1-dst", 0), usd("bank1-other", 12345)}, func(t *testing.T, l testLedger, _ reopenFunc) {

		var (
			wg        sync.WaitGroup
			mu        sync.Mutex
			committed int64
			errs      []error
		)
		for i := range workers {
			wg.Go(func() {
				txn := fmt.Sprintf("p%d", i)
				legs := []Leg{debit("bank1-src", amount), credit("bank1-dst", amount)}
				v, err := l.Prepare(ctx, txn, legs, deadline, t0)
				if err == nil && v.Yes {
					err = l.Commit(ctx, txn)
					if err == nil {
						mu.Lock()
						committed += amount
						mu.Unlock()
					}
				} else if err == nil {
					err = l.Abort(ctx, txn)
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		if committed != start/amount*amount {
			t.Fatalf("committed %d; want %d", committed, start/amount*amount)
		}
		wantAccount(t, l, "bank1-src", start-committed, 0, 0)
		wantAccount(t, l, "bank1-dst", committed, 0, 0)
		all, _, err := l.ListAccounts(ctx, 100, "")
		if err != nil {
			t.Fatal(err)
		}
		var sum int64
		for _, a := range all {
			if a.Balance < 0 || a.Held != 0 || a.PendingCredit != 0 {
				t.Fatalf("account %+v", a)
			}
			sum += a.Balance
		}
		if sum != start+12345 {
			t.Fatalf("sum of balances %d; want %d", sum, start+12345)
		}
	})
}

func BenchmarkLedgerPrepareCommit(b *testing.B) {
	ctx := context.Background()
	l, _ := openTestLedger(b, usd("bank1-1", math.MaxInt64/2), usd("bank1-2", 0))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		txn := fmt.Sprintf("b%d", i)
		i++
		v, err := l.Prepare(ctx, txn, []Leg{debit("bank1-1", 1), credit("bank1-2", 1)}, deadline, t0)
		if err != nil || !v.Yes {
			b.Fatal(v, err)
		}
		if err := l.Commit(ctx, txn); err != nil {
			b.Fatal(err)
		}
	}
}

// TestPrepareKeepsDecisionProof: the coordinator's proof that came with a prepare is stored with
// the transaction, kept by a replayed prepare, and listed with the transactions in doubt, for
// the resolver to present in GetDecision.
func TestPrepareKeepsDecisionProof(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	forEachLedger(t, []Account{usd("bank1-1", 10000)}, func(t *testing.T, l testLedger, _ reopenFunc) {
		now := time.Now()
		deadline := now.Add(time.Minute)
		proof := []byte("proof of t1, thirty-two bytes...")
		for i, p := range [][]byte{proof, []byte("another proof sent by a replay..")} {
			v, err := l.PrepareItem(ctx, PrepareItem{TxnID: "t1", Legs: []Leg{debit("bank1-1", 100)}, Deadline: deadline, DecisionProof: p}, now)
			if err != nil || !v.Yes {
				t.Fatalf("prepare %d = %+v, %v", i+1, v, err)
			}
		}
		got, err := l.Transaction(ctx, "t1")
		if err != nil || !bytes.Equal(got.DecisionProof, proof) {
			t.Fatalf("transaction t1 = %+v, %v; want the first prepare's proof", got, err)
		}
		inDoubt, err := l.PreparedBefore(ctx, deadline.Add(time.Second))
		if err != nil || len(inDoubt) != 1 || !bytes.Equal(inDoubt[0].DecisionProof, proof) {
			t.Fatalf("PreparedBefore = %+v, %v; want t1 with its proof", inDoubt, err)
		}
	})
}
