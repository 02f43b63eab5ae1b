// Package audit reads every account of every bank, through the banks' own API, to check the
// money invariants: the total of all balances, and whether any hold or pending credit is left.
// Tests, `paygate bench` and `paygate chaos` end with it.
package audit

import (
	"context"
	"fmt"
	"sort"
	"time"

	"connectrpc.com/connect"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	"github.com/paygate/paygate/gen/paygate/bank/v1/bankv1connect"
)

// Ledger is every account of every bank at one moment.
type Ledger struct {
	Accounts map[string]*bankv1.AccountBalance
	Total    int64 // sum of balances
	Held     int64 // sum of holds
	Pending  int64 // sum of pending credits
}

// Settled reports whether no hold and no pending credit is left.
func (l Ledger) Settled() bool { return l.Held == 0 && l.Pending == 0 }

// Take reads every account of the banks with ListAccounts (callers need a gateway-role
// certificate), bank by bank in name order.
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
