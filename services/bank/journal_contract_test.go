package bank

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// The contract of the operators' procedures (journal.go), on both stores.

func deposit(id, account string, amount int64) Entry {
	return Entry{ID: id, Kind: Deposit, Account: account, Amount: amount, Currency: "USD", Actor: "root", Reason: "cash in"}
}

func withdrawal(id, account string, amount int64) Entry {
	return Entry{ID: id, Kind: Withdrawal, Account: account, Amount: amount, Currency: "USD", Actor: "root", Reason: "cash out"}
}

func mustPost(t *testing.T, l testLedger, e Entry) Entry {
	t.Helper()
	got, replayed, err := l.PostEntry(context.Background(), e, t0)
	if err != nil || replayed {
		t.Fatalf("post %s: %+v, replayed %v, %v; want a new entry", e.ID, got, replayed, err)
	}
	return got
}

// wantEntries checks the ids of the journal's entries (of account, if not empty), newest
// first, reading it a page of two at a time.
func wantEntries(t *testing.T, l testLedger, account string, ids ...string) {
	t.Helper()
	var got []string
	token := ""
	for range 100 {
		page, next, err := l.ListEntries(context.Background(), account, 2, token)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page {
			got = append(got, e.ID)
		}
		if token = next; token == "" {
			break
		}
	}
	if !slices.Equal(got, ids) {
		t.Fatalf("entries of %q: %v; want %v", account, got, ids)
	}
}

func summary(t *testing.T, l testLedger) Summary {
	t.Helper()
	s, err := l.Summary(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// wantConserved checks the summary's conservation: with nothing prepared, the balances are the
// initial total plus what was deposited minus what was withdrawn.
func wantConserved(t *testing.T, s Summary) {
	t.Helper()
	if s.Prepared != 0 || s.Held != 0 || s.PendingCredit != 0 {
		t.Fatalf("summary %+v: want nothing prepared", s)
	}
	if s.Balance != s.Initial+s.Deposited-s.Withdrawn {
		t.Fatalf("summary %+v: balance %d; want initial + deposited - withdrawn = %d", s, s.Balance, s.Initial+s.Deposited-s.Withdrawn)
	}
}

func TestPostEntryDepositWithdrawReplay(t *testing.T) {
	t.Parallel()
	forEachLedger(t, []Account{usd("bank1-1", 1000), usd("bank1-2", 0)}, func(t *testing.T, l testLedger, _ reopenFunc) {
		ctx := context.Background()
		d := mustPost(t, l, deposit("d1", "bank1-1", 500))
		if d.BalanceAfter != 1500 || d.Kind != Deposit || d.Actor != "root" || d.Reason != "cash in" || !d.CreatedAt.Equal(t0) {
			t.Fatalf("deposit = %+v", d)
		}
		wantAccount(t, l, "bank1-1", 1500, 0, 0)

		// The same entry again, by someone else for another reason and later: the stored
		// entry, nothing moved.
		again := deposit("d1", "bank1-1", 500)
		again.Actor, again.Reason = "ops", "retry"
		got, replayed, err := l.PostEntry(ctx, again, t0.Add(time.Hour))
		if err != nil || !replayed || got != d {
			t.Fatalf("replay = %+v, replayed %v, %v; want %+v replayed", got, replayed, err, d)
		}
		wantAccount(t, l, "bank1-1", 1500, 0, 0)

		w := mustPost(t, l, withdrawal("w1", "bank1-1", 300))
		if w.BalanceAfter != 1200 || w.Kind != Withdrawal {
			t.Fatalf("withdrawal = %+v", w)
		}
		wantAccount(t, l, "bank1-1", 1200, 0, 0)

		// The id with other parameters is refused, whatever differs, and moves nothing.
		other := deposit("d1", "bank1-1", 500)
		other.Currency = "EUR"
		for _, e := range []Entry{deposit("d1", "bank1-1", 501), withdrawal("d1", "bank1-1", 500), deposit("d1", "bank1-2", 500), other} {
			if got, _, err := l.PostEntry(ctx, e, t0); !errors.Is(err, ErrEntryIDReused) {
				t.Fatalf("reuse of d1 as %+v: %+v, %v; want ErrEntryIDReused", e, got, err)
			}
		}
		wantAccount(t, l, "bank1-1", 1200, 0, 0)
		wantAccount(t, l, "bank1-2", 0, 0, 0)

		mustPost(t, l, deposit("d2", "bank1-2", 7))
		wantEntries(t, l, "", "d2", "w1", "d1")
		wantEntries(t, l, "bank1-1", "w1", "d1")
		wantEntries(t, l, "bank1-2", "d2")
		wantEntries(t, l, "bank1-404")
		if _, _, err := l.ListEntries(ctx, "", 2, "bm90IGEgbnVtYmVy"); !errors.Is(err, ErrInvalidPageToken) {
			t.Fatalf("list with a bad token: %v; want ErrInvalidPageToken", err)
		}

		s := summary(t, l)
		if s.Initial != 1000 || s.Deposited != 507 || s.Withdrawn != 300 || s.Accounts != 2 {
			t.Fatalf("summary = %+v", s)
		}
		wantConserved(t, s)
	})
}

// Every refused entry leaves the accounts and the journal as they were, and its id unused.
func TestPostEntryRefusals(t *testing.T) {
	t.Parallel()
	closed := usd("bank1-9", 0)
	closed.Closed = true
	const big = math.MaxInt64 - 2000 // the others hold 2000: the bank's total fits
	tests := []struct {
		name string
		e    Entry
		want error
	}{
		{"withdrawal above the available balance", withdrawal("e", "bank1-1", 601), ErrInsufficientFunds},
		{"withdrawal above the balance", withdrawal("e", "bank1-1", 1001), ErrInsufficientFunds},
		{"deposit overflowing the balance", deposit("e", "bank1-big", 2001), ErrBalanceOverflow},
		{"closed account", deposit("e", "bank1-9", 1), ErrAccountClosed},
		{"withdrawal from a closed account", withdrawal("e", "bank1-9", 1), ErrAccountClosed},
		{"unknown account", deposit("e", "bank1-404", 1), ErrUnknownAccount},
		{"another bank's account", deposit("e", "bank2-1", 1), ErrUnknownAccount},
		{"other currency", Entry{ID: "e", Kind: Deposit, Account: "bank1-1", Amount: 1, Currency: "EUR", Actor: "root", Reason: "x"}, ErrCurrencyMismatch},
		{"no entry id", deposit("", "bank1-1", 1), ErrInvalidArgument},
		{"long entry id", deposit(string(make([]byte, 65)), "bank1-1", 1), ErrInvalidArgument},
		{"NUL in entry id", deposit("e\x00", "bank1-1", 1), ErrInvalidArgument},
		{"no kind", Entry{ID: "e", Account: "bank1-1", Amount: 1, Currency: "USD", Actor: "root", Reason: "x"}, ErrInvalidArgument},
		{"zero amount", deposit("e", "bank1-1", 0), ErrInvalidArgument},
		{"amount above the limit", deposit("e", "bank1-1", MaxEntryAmount+1), ErrInvalidArgument},
		{"no actor", Entry{ID: "e", Kind: Deposit, Account: "bank1-1", Amount: 1, Currency: "USD", Reason: "x"}, ErrInvalidArgument},
		{"no reason", Entry{ID: "e", Kind: Deposit, Account: "bank1-1", Amount: 1, Currency: "USD", Actor: "root"}, ErrInvalidArgument},
		{"reason not UTF-8", Entry{ID: "e", Kind: Deposit, Account: "bank1-1", Amount: 1, Currency: "USD", Actor: "root", Reason: "\xff"}, ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			forEachLedger(t, []Account{usd("bank1-1", 1000), usd("bank1-2", 1000), usd("bank1-big", big), closed}, func(t *testing.T, l testLedger, _ reopenFunc) {
				ctx := context.Background()
				// 400 of bank1-1 is held, 250 is on its way to bank1-2.
				if v := mustPrepare(t, l, "p", debit("bank1-1", 400)); !v.Yes {
					t.Fatal(v)
				}
				if v := mustPrepare(t, l, "q", credit("bank1-2", 250)); !v.Yes {
					t.Fatal(v)
				}
				before := summary(t, l)
				got, replayed, err := l.PostEntry(ctx, tt.e, t0)
				if !errors.Is(err, tt.want) {
					t.Fatalf("post = %+v, replayed %v, %v; want %v", got, replayed, err, tt.want)
				}
				if after := summary(t, l); after != before {
					t.Fatalf("summary after the refusal %+v; want %+v", after, before)
				}
				wantAccount(t, l, "bank1-1", 1000, 400, 0)
				wantAccount(t, l, "bank1-2", 1000, 0, 250)
				wantAccount(t, l, "bank1-big", big, 0, 0)
				wantEntries(t, l, "")
				// The id was not used: a valid entry may take it.
				if tt.e.ID == "e" {
					mustPost(t, l, withdrawal("e", "bank1-1", 600))
					wantAccount(t, l, "bank1-1", 400, 400, 0)
				}
			})
		})
	}
}

// A deposit counts the pending credits of the account as a prepare's credit does: a deposit
// that would overflow once they are committed is refused.
func TestPostEntryOverflowCountsPendingCredit(t *testing.T) {
	t.Parallel()
	// big plus the largest deposit fits, not once a pending credit of 1000 is counted too.
	const big = math.MaxInt64 - MaxEntryAmount - 999
	forEachLedger(t, []Account{usd("bank1-1", 1000), usd("bank1-big", big)}, func(t *testing.T, l testLedger, _ reopenFunc) {
		if v := mustPrepare(t, l, "p", debit("bank1-1", 1000), credit("bank1-big", 1000)); !v.Yes {
			t.Fatal(v)
		}
		if _, _, err := l.PostEntry(context.Background(), deposit("e", "bank1-big", MaxEntryAmount), t0); !errors.Is(err, ErrBalanceOverflow) {
			t.Fatalf("deposit with the pending credit: %v; want ErrBalanceOverflow", err)
		}
		if err := l.Abort(context.Background(), "p"); err != nil {
			t.Fatal(err)
		}
		if e := mustPost(t, l, deposit("e", "bank1-big", MaxEntryAmount)); e.BalanceAfter != math.MaxInt64-999 {
			t.Fatalf("deposit after the abort: %+v", e)
		}
	})
}

func TestOpenAccountNumberingAndReplay(t *testing.T) {
	t.Parallel()
	// Numbers of up to 18 digits count, leading zeros or not; others are ignored.
	forEachLedger(t, []Account{usd("bank1-1001", 5), usd("bank1-0999", 0), usd("bank1-a", 1), usd("bank1-1234567890123456789", 0)}, func(t *testing.T, l testLedger, _ reopenFunc) {
		ctx := context.Background()
		a, replayed, err := l.OpenAccount(ctx, "r1", "alice", "EUR", t0)
		if err != nil || replayed {
			t.Fatalf("open = %+v, replayed %v, %v", a, replayed, err)
		}
		want := Account{ID: "bank1-1002", Holder: "alice", Currency: "EUR"}
		if a != want {
			t.Fatalf("opened %+v; want %+v", a, want)
		}
		wantAccount(t, l, "bank1-1002", 0, 0, 0)

		// A replay returns the account as it is now, and opens nothing.
		mustPost(t, l, Entry{ID: "d", Kind: Deposit, Account: "bank1-1002", Amount: 10, Currency: "EUR", Actor: "root", Reason: "x"})
		a, replayed, err = l.OpenAccount(ctx, "r1", "alice", "EUR", t0.Add(time.Minute))
		if want.Balance = 10; err != nil || !replayed || a != want {
			t.Fatalf("replay = %+v, replayed %v, %v; want %+v replayed", a, replayed, err, want)
		}
		for _, r := range [][2]string{{"bob", "EUR"}, {"alice", "USD"}} {
			if a, _, err := l.OpenAccount(ctx, "r1", r[0], r[1], t0); !errors.Is(err, ErrRequestIDReused) {
				t.Fatalf("r1 for %v: %+v, %v; want ErrRequestIDReused", r, a, err)
			}
		}
		if a, _, err = l.OpenAccount(ctx, "r2", "bob", "USD", t0); err != nil || a.ID != "bank1-1003" {
			t.Fatalf("second open = %+v, %v; want bank1-1003", a, err)
		}
		if n, err := l.CountAccounts(ctx); err != nil || n != 6 {
			t.Fatalf("%d accounts, %v; want 6", n, err)
		}
		for _, args := range [][3]string{{"", "x", "USD"}, {"r3", "", "USD"}, {"r3", "x", "XYZ"}, {"r3", "x\x00", "USD"}, {string(make([]byte, 65)), "x", "USD"}} {
			if a, _, err := l.OpenAccount(ctx, args[0], args[1], args[2], t0); !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("open %q: %+v, %v; want ErrInvalidArgument", args, a, err)
			}
		}
		// A prepare sees the new account.
		if v := mustPrepare(t, l, "t", debit("bank1-1001", 5), credit("bank1-1003", 5)); !v.Yes {
			t.Fatal(v)
		}
		if s := summary(t, l); s.Accounts != 6 || s.Initial != 6 || s.Deposited != 10 {
			t.Fatalf("summary = %+v", s)
		}
	})
}

// Accounts opened at once, some with the same request id, get distinct numbers, one per
// request.
func TestOpenAccountConcurrent(t *testing.T) {
	t.Parallel()
	forEachLedger(t, nil, func(t *testing.T, l testLedger, _ reopenFunc) {
		var wg sync.WaitGroup
		ids := make([]string, 16)
		errs := make([]error, len(ids))
		for i := range ids {
			wg.Go(func() {
				a, _, err := l.OpenAccount(context.Background(), fmt.Sprintf("r%d", i%8), "holder", "USD", t0)
				ids[i], errs[i] = a.ID, err
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		for i := range 8 {
			if ids[i] != ids[i+8] {
				t.Fatalf("request r%d opened %s and %s", i, ids[i], ids[i+8])
			}
		}
		got := slices.Sorted(slices.Values(ids[:8]))
		want := []string{"bank1-1", "bank1-2", "bank1-3", "bank1-4", "bank1-5", "bank1-6", "bank1-7", "bank1-8"}
		if !slices.Equal(got, want) {
			t.Fatalf("opened %v; want %v", got, want)
		}
	})
}

func TestCloseAccount(t *testing.T) {
	t.Parallel()
	forEachLedger(t, []Account{usd("bank1-1", 100), usd("bank1-2", 0)}, func(t *testing.T, l testLedger, _ reopenFunc) {
		ctx := context.Background()
		wantNotEmpty := func(id string) {
			t.Helper()
			if a, err := l.CloseAccount(ctx, id); !errors.Is(err, ErrAccountNotEmpty) {
				t.Fatalf("close %s: %+v, %v; want ErrAccountNotEmpty", id, a, err)
			}
			if a, err := l.Account(ctx, id); err != nil || a.Closed {
				t.Fatalf("%s after the refused close: %+v, %v; want open", id, a, err)
			}
		}
		wantNotEmpty("bank1-1") // a balance
		// A hold on all of bank1-1's money, a pending credit on bank1-2.
		if v := mustPrepare(t, l, "p", debit("bank1-1", 100), credit("bank1-2", 100)); !v.Yes {
			t.Fatal(v)
		}
		wantNotEmpty("bank1-1")
		wantNotEmpty("bank1-2")
		if err := l.Abort(ctx, "p"); err != nil {
			t.Fatal(err)
		}
		mustPost(t, l, withdrawal("w", "bank1-1", 100))

		for range 2 { // closing a closed account answers as the first time
			a, err := l.CloseAccount(ctx, "bank1-1")
			if want := (Account{ID: "bank1-1", Currency: "USD", Closed: true}); err != nil || a != want {
				t.Fatalf("close = %+v, %v; want %+v", a, err, want)
			}
		}
		if v := mustPrepare(t, l, "after", credit("bank1-1", 1)); v.Yes || v.Reason != ReasonAccountClosed {
			t.Fatalf("prepare on the closed account: %+v; want NO ACCOUNT_CLOSED", v)
		}
		if _, _, err := l.PostEntry(ctx, deposit("d", "bank1-1", 1), t0); !errors.Is(err, ErrAccountClosed) {
			t.Fatalf("deposit on the closed account: %v; want ErrAccountClosed", err)
		}
		if a, err := l.CloseAccount(ctx, "bank1-404"); !errors.Is(err, ErrUnknownAccount) {
			t.Fatalf("close of an unknown account: %+v, %v; want ErrUnknownAccount", a, err)
		}
		if a, err := l.CloseAccount(ctx, ""); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("close of no account: %+v, %v; want ErrInvalidArgument", a, err)
		}
		wantAccount(t, l, "bank1-2", 0, 0, 0)
		wantConserved(t, summary(t, l))
	})
}

// A close racing a prepare's credit on an empty account: either the prepare came first and
// its pending credit refused the close, or the close came first and the prepare voted NO; a
// closed account never has a hold or a pending credit.
func TestCloseAccountRacingPrepare(t *testing.T) {
	t.Parallel()
	forEachLedger(t, []Account{usd("bank1-1", 1000)}, func(t *testing.T, l testLedger, _ reopenFunc) {
		ctx := context.Background()
		for round := range 20 {
			a, _, err := l.OpenAccount(ctx, fmt.Sprintf("r%d", round), "holder", "USD", t0)
			if err != nil {
				t.Fatal(err)
			}
			txn := fmt.Sprintf("t%d", round)
			var (
				wg       sync.WaitGroup
				vote     Vote
				perr     error
				closeErr error
			)
			wg.Go(func() { vote, perr = l.Prepare(ctx, txn, []Leg{debit("bank1-1", 1), credit(a.ID, 1)}, deadline, t0) })
			wg.Go(func() { _, closeErr = l.CloseAccount(ctx, a.ID) })
			wg.Wait()
			if perr != nil || (closeErr != nil && !errors.Is(closeErr, ErrAccountNotEmpty)) {
				t.Fatalf("round %d: prepare %v, close %v", round, perr, closeErr)
			}
			got, err := l.Account(ctx, a.ID)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case got.Closed && (got.Held != 0 || got.PendingCredit != 0):
				t.Fatalf("round %d: closed account %+v has money on its way", round, got)
			case got.Closed != (closeErr == nil):
				t.Fatalf("round %d: account %+v after close %v", round, got, closeErr)
			case vote.Yes == (closeErr == nil):
				t.Fatalf("round %d: vote %+v and close %v: want exactly one to succeed", round, vote, closeErr)
			}
			if vote.Yes {
				if err := l.Abort(ctx, txn); err != nil {
					t.Fatal(err)
				}
			}
		}
	})
}

// openSibling opens, beside l and on the same backend, the ledger of another bank holding
// accounts: the other side of payments that cross l's edge.
func openSibling(t *testing.T, l testLedger, bank string, accounts ...Account) testLedger {
	t.Helper()
	ctx := context.Background()
	var sib testLedger
	var err error
	switch l.(type) {
	case *Ledger:
		sib, err = OpenLedger(ctx, filepath.Join(t.TempDir(), bank+".db"), bank)
	case *PGLedger:
		sib, err = OpenPGLedger(ctx, pgDatabase(t), bank)
	default:
		t.Fatalf("no sibling for %T", l)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sib.Close() })
	if err := sib.ImportAccounts(ctx, accounts); err != nil {
		t.Fatal(err)
	}
	return sib
}

// sumSummaries adds up the summaries of several banks, as an audit of the system does.
func sumSummaries(ss ...Summary) Summary {
	var out Summary
	for _, s := range ss {
		out.Accounts += s.Accounts
		out.Balance += s.Balance
		out.Held += s.Held
		out.PendingCredit += s.PendingCredit
		out.Initial += s.Initial
		out.Deposited += s.Deposited
		out.Withdrawn += s.Withdrawn
		out.Prepared += s.Prepared
	}
	return out
}

// The summary through payments (within the bank and across its edge, to and from a second
// bank), deposits and withdrawals: the totals follow, and once nothing is prepared the balances
// of both banks together are their initial totals plus what was deposited minus what was
// withdrawn.
func TestLedgerSummary(t *testing.T) {
	t.Parallel()
	forEachLedger(t, []Account{usd("bank1-1", 1000), usd("bank1-2", 500), usd("bank1-3", 0)}, func(t *testing.T, l testLedger, _ reopenFunc) {
		ctx := context.Background()
		l2 := openSibling(t, l, "bank2", usd("bank2-1", 250))
		s := summary(t, l)
		if want := (Summary{Accounts: 3, Balance: 1500, Initial: 1500}); s != want {
			t.Fatalf("summary at the start %+v; want %+v", s, want)
		}
		wantConserved(t, s)
		wantConserved(t, summary(t, l2))

		// pay prepares each bank's legs of a payment and commits them (commit false: prepares
		// only).
		pay := func(id string, commit bool, legs1, legs2 []Leg) {
			t.Helper()
			for _, p := range []struct {
				l    testLedger
				legs []Leg
			}{{l, legs1}, {l2, legs2}} {
				if len(p.legs) == 0 {
					continue
				}
				if v := mustPrepare(t, p.l, id, p.legs...); !v.Yes {
					t.Fatalf("%s: %+v", id, v)
				}
				if commit {
					if err := p.l.Commit(ctx, id); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		pay("in-bank", true, []Leg{debit("bank1-1", 200), credit("bank1-2", 200)}, nil)
		pay("from-bank2", true, []Leg{credit("bank1-3", 70)}, []Leg{debit("bank2-1", 70)})
		pay("to-bank2", true, []Leg{debit("bank1-2", 30)}, []Leg{credit("bank2-1", 30)})
		mustPost(t, l, deposit("d1", "bank1-3", 300))
		mustPost(t, l, withdrawal("w1", "bank1-2", 100))
		mustPost(t, l2, deposit("d2", "bank2-1", 5))
		s = summary(t, l)
		if want := (Summary{Accounts: 3, Balance: 1500 + 70 - 30 + 300 - 100, Initial: 1500, Deposited: 300, Withdrawn: 100}); s != want {
			t.Fatalf("summary after the payments %+v; want %+v", s, want)
		}
		wantConserved(t, sumSummaries(s, summary(t, l2)))

		// Prepared transactions show as holds and pending credits, and are counted.
		pay("p", false, []Leg{debit("bank1-1", 50), credit("bank1-3", 50)}, nil)
		pay("q", false, []Leg{debit("bank1-3", 1)}, []Leg{credit("bank2-1", 1)})
		s = summary(t, l)
		if s.Prepared != 2 || s.Held != 51 || s.PendingCredit != 50 {
			t.Fatalf("summary with two prepared %+v", s)
		}
		for _, err := range []error{l.Commit(ctx, "p"), l.Commit(ctx, "q"), l2.Commit(ctx, "q")} {
			if err != nil {
				t.Fatal(err)
			}
		}
		wantConserved(t, sumSummaries(summary(t, l), summary(t, l2)))
	})
}

// Deposits, withdrawals and prepares of one account at once never overdraw it: every
// operation's outcome is accounted for, and the balance and the summary agree with them.
func TestConcurrentEntriesAndPrepares(t *testing.T) {
	t.Parallel()
	forEachLedger(t, []Account{usd("bank1-1", 5000), usd("bank1-2", 0)}, func(t *testing.T, l testLedger, _ reopenFunc) {
		ctx := context.Background()
		const workers, ops = 8, 50
		var (
			wg                sync.WaitGroup
			mu                sync.Mutex
			errs              []error
			moved, deposited  int64
			withdrawn, refuse int
			withdrawnAmount   int64
		)
		for w := range workers {
			wg.Go(func() {
				for i := range ops {
					id := fmt.Sprintf("w%d-%d", w, i)
					var err error
					switch i % 5 {
					case 0, 1: // a withdrawal
						_, _, err = l.PostEntry(ctx, withdrawal(id, "bank1-1", 37), t0)
						mu.Lock()
						if err == nil {
							withdrawn++
							withdrawnAmount += 37
						} else if errors.Is(err, ErrInsufficientFunds) {
							refuse++
							err = nil
						}
						mu.Unlock()
					case 2: // a small deposit
						if _, _, err = l.PostEntry(ctx, deposit(id, "bank1-1", 3), t0); err == nil {
							mu.Lock()
							deposited += 3
							mu.Unlock()
						}
					default: // a payment to bank1-2, committed or aborted
						var v Vote
						v, err = l.Prepare(ctx, id, []Leg{debit("bank1-1", 41), credit("bank1-2", 41)}, deadline, t0)
						switch {
						case err != nil:
						case !v.Yes && v.Reason != ReasonInsufficientFunds:
							err = fmt.Errorf("%s: %+v", id, v)
						case v.Yes && i%2 == 0:
							if err = l.Commit(ctx, id); err == nil {
								mu.Lock()
								moved += 41
								mu.Unlock()
							}
						case v.Yes:
							err = l.Abort(ctx, id)
						}
					}
					if err != nil {
						mu.Lock()
						errs = append(errs, err)
						mu.Unlock()
						return
					}
				}
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		wantAccount(t, l, "bank1-1", 5000+deposited-withdrawnAmount-moved, 0, 0)
		wantAccount(t, l, "bank1-2", moved, 0, 0)
		s := summary(t, l)
		if s.Deposited != deposited || s.Withdrawn != withdrawnAmount {
			t.Fatalf("summary %+v; want deposited %d, withdrawn %d", s, deposited, withdrawnAmount)
		}
		wantConserved(t, s)
		if refuse == 0 {
			t.Fatalf("no withdrawal was refused (%d made): the test asks for too little to overdraw", withdrawn)
		}
	})
}
