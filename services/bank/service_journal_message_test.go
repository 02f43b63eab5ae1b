package bank

import (
	"context"
	"strings"
	"testing"

	"connectrpc.com/connect"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
)

// TestJournalRefusalMessagesSayOnlyWhy: a refused entry or close answers with what is wrong,
// naming the account and the figures, and not the action, the entry id and the package prefix
// the ledger wraps its errors in.
func TestJournalRefusalMessagesSayOnlyWhy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, _ := newTestService(t, usd("bank1-1", 1000))
	c := newBankClients(t, s)["connect"]
	_, err := c.PostEntry(ctx, postRequest("w-too-much", pbWithdrawal, "bank1-1", 5000))
	if want := "account bank1-1 has 10.00 USD available, the withdrawal is 50.00 USD"; connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.HasSuffix(err.Error(), ": "+want) ||
		strings.Contains(err.Error(), "w-too-much") || strings.Contains(err.Error(), "bank:") {
		t.Errorf("withdrawal above the available balance: %v; want failed_precondition: %s", err, want)
	}
	_, err = c.CloseAccount(ctx, connect.NewRequest(&bankv1.CloseAccountRequest{AccountId: "bank1-1"}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || strings.Contains(err.Error(), "bank:") || !strings.Contains(err.Error(), ": account bank1-1 has a balance of 10.00") {
		t.Errorf("close of an account with money: %v; want failed_precondition naming the account and its balance only", err)
	}
}
