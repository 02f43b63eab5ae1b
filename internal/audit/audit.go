// Package audit reads every account of every bank, and every bank's ledger summary, through the
// banks' own API, to check the money invariants: whether any hold or pending credit is left,
// and conservation. Payments move money between accounts and never change the total of all
// balances; deposits and withdrawals bring money into the system and take it out, journaled at
// the banks. So money is conserved when
//
//	total of balances = initial + deposits − withdrawals
//
// summed over every bank, once no transaction is prepared (initial is what the banks' accounts
// held when they were imported), and when between two audits the total changed by exactly the
// deposits minus the withdrawals made meanwhile (Conserved). Tests, `paygate bench` and
// `paygate chaos` end with it.
package audit

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"connectrpc.com/connect"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	"github.com/paygate/paygate/gen/paygate/bank/v1/bankv1connect"
)

// Ledger is every account of every bank at one moment, with the banks' totals.
type Ledger struct {
	Accounts map[string]*bankv1.AccountBalance
	Total    int64 // sum of balances
	Held     int64 // sum of holds
	Pending  int64 // sum of pending credits
	// The sums over the banks of their ledger summaries: what their accounts held when
	// imported, and the journal's deposits and withdrawals.
	Initial   int64
	Deposited int64
	Withdrawn int64
}

// Settled reports whether no hold and no pending credit is left.
func (l Ledger) Settled() bool { return l.Held == 0 && l.Pending == 0 }

// Base is the money not explained by deposits and withdrawals: Total − Deposited + Withdrawn.
// Payments conserve it.
func (l Ledger) Base() int64 { return l.Total - l.Deposited + l.Withdrawn }

// ErrNotConserved is Conserved's error.
var ErrNotConserved = errors.New("audit: money not conserved")

// Conserved checks conservation between the ledger before and the ledger after: the total
// changed by exactly the deposits minus the withdrawals made in between (the two Bases are
// equal), and, when after is settled, its total is its initial total plus its deposits minus
// its withdrawals. Its error (ErrNotConserved) gives the totals, deposits, withdrawals and the
// difference.
func Conserved(before, after Ledger) error {
	var errs []error
	if d := after.Base() - before.Base(); d != 0 {
		errs = append(errs, fmt.Errorf("%w: total %d before, %d after; deposits %d before, %d after; withdrawals %d before, %d after: %+d not explained by deposits and withdrawals",
			ErrNotConserved, before.Total, after.Total, before.Deposited, after.Deposited, before.Withdrawn, after.Withdrawn, d))
	}
	if want := after.Initial + after.Deposited - after.Withdrawn; after.Settled() && after.Total != want {
		errs = append(errs, fmt.Errorf("%w: total %d after, but initial %d + deposits %d − withdrawals %d = %d: %+d",
			ErrNotConserved, after.Total, after.Initial, after.Deposited, after.Withdrawn, want, after.Total-want))
	}
	return errors.Join(errs...)
}

// Take reads every account of the banks with ListAccounts, then each bank's totals with
// GetLedgerSummary (callers need a gateway-role certificate), bank by bank in name order.
func Take(ctx context.Context, banks map[string]bankv1connect.BankServiceClient) (Ledger, error) {
	l := Ledger{Accounts: map[string]*bankv1.AccountBalance{}}
	names := make([]string, 0, len(banks))
	for n := range banks {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, b := range names {
		token := ""
		for {
			resp, err := banks[b].ListAccounts(ctx, connect.NewRequest(&bankv1.ListAccountsRequest{PageSize: 1000, PageToken: token}))
			if err != nil {
				return l, fmt.Errorf("audit %s: %w", b, err)
			}
			for _, a := range resp.Msg.GetAccounts() {
				bal := a.GetBalance()
				l.Accounts[a.GetAccountId()] = bal
				l.Total += bal.GetBalance()
				l.Held += bal.GetHeld()
				l.Pending += bal.GetPendingCredit()
			}
			if token = resp.Msg.GetNextPageToken(); token == "" {
				break
			}
		}
		sum, err := banks[b].GetLedgerSummary(ctx, connect.NewRequest(&bankv1.GetLedgerSummaryRequest{}))
		if err != nil {
			return l, fmt.Errorf("audit %s: ledger summary: %w", b, err)
		}
		l.Initial += sum.Msg.GetInitial()
		l.Deposited += sum.Msg.GetDeposited()
		l.Withdrawn += sum.Msg.GetWithdrawn()
	}
	return l, nil
}

// WaitSettled takes the ledger until it is settled (every transaction resolved), up to d, and
// returns the last one taken.
func WaitSettled(ctx context.Context, banks map[string]bankv1connect.BankServiceClient, d time.Duration) (Ledger, error) {
	deadline := time.Now().Add(d)
	for {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		l, err := Take(actx, banks)
		cancel()
		if err == nil && l.Settled() {
			return l, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			if err != nil {
				return l, err
			}
			return l, fmt.Errorf("not settled after %s: held %d, pending credit %d", d, l.Held, l.Pending)
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
		}
	}
}
