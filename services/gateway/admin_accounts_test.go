package gateway

import (
	"context"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
)

// adminOver returns s's AdminService client over protocol p.
func adminOver(t testing.TB, s *session, name string, e *adminEnv, p protocol) gatewayv1connect.AdminServiceClient {
	t.Helper()
	opts := append(slices.Clone(p.opts), connect.WithInterceptors(bearer("Bearer "+s.token)))
	return gatewayv1connect.NewAdminServiceClient(adminHTTPClient(t, name), e.url, opts...)
}

// assertMoney checks, once nothing is held, that the money in the system is what it was at the
// start plus what was deposited and less what was withdrawn, both by the banks' balances and by
// their ledger summaries.
func (e *adminEnv) assertMoney(t testing.TB, s *session, deposited, withdrawn int64) {
	t.Helper()
	e.initial += deposited - withdrawn
	e.assertSettled(t)
	var ops *gatewayv1.GetOperationsResponse
	waitFor(t, 10*time.Second, "every bank available", func() bool { // a bank restarted is seen up at the next probe
		ops = operations(t, s)
		return !slices.ContainsFunc(ops.GetBanks(), func(b *gatewayv1.BankOperations) bool {
			return b.GetStatus() != gatewayv1.BankStatus_BANK_STATUS_AVAILABLE
		})
	})
	var dep, wd, bal int64
	for _, b := range ops.GetBanks() {
		dep, wd, bal = dep+b.GetDeposited(), wd+b.GetWithdrawn(), bal+b.GetBalance()
	}
	if dep != deposited || wd != withdrawn || bal != e.initial {
		t.Fatalf("ledger summaries: deposited %d, withdrawn %d, balance %d; want %d, %d, %d", dep, wd, bal, deposited, withdrawn, e.initial)
	}
}

// TestAdminDepositWithdraw: money enters and leaves through the account's bank, journaled with
// the admin and the reason; a request id sent again (over either protocol) replays the entry
// and moves nothing, with other parameters it is refused; a withdrawal above the available
// balance is refused and changes nothing; every refusal keeps the bank's code and reason.
func TestAdminDepositWithdraw(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, envOptions{})
	root := e.admin(t, "root")
	ctx := context.Background()
	const acct = "bank1-1003" // dave's, 75.25
	start := e.balance(t, acct)

	r1 := uuid.NewString()
	dep := &gatewayv1.DepositRequest{AccountId: acct, Amount: 25_000, Currency: "USD", Reason: "cash deposit, branch 12", RequestId: r1}
	resp, err := root.admin.Deposit(ctx, connect.NewRequest(dep))
	if err != nil {
		t.Fatal(err)
	}
	entry := resp.Msg.GetEntry()
	if resp.Msg.GetReplayed() || entry.GetEntryId() != r1 || entry.GetKind() != gatewayv1.LedgerEntryKind_LEDGER_ENTRY_KIND_DEPOSIT ||
		entry.GetAdmin() != "root" || entry.GetReason() != dep.Reason || entry.GetBalanceAfter() != start+25_000 || entry.GetAmount() != 25_000 {
		t.Fatalf("deposit: %v (replayed %v)", entry, resp.Msg.GetReplayed())
	}
	for _, p := range protocols {
		again, err := adminOver(t, root, "root", e, p).Deposit(ctx, connect.NewRequest(dep))
		if err != nil {
			t.Fatalf("%s: replay: %v", p.name, err)
		}
		if !again.Msg.GetReplayed() || again.Msg.GetEntry().GetEntryId() != r1 || again.Msg.GetEntry().GetBalanceAfter() != start+25_000 {
			t.Fatalf("%s: replay: %v", p.name, again.Msg)
		}
	}
	if got := e.balance(t, acct); got != start+25_000 {
		t.Fatalf("balance %d after a deposit and its replays, want %d", got, start+25_000)
	}
	reused := &gatewayv1.DepositRequest{AccountId: acct, Amount: 1, Currency: "USD", Reason: "other", RequestId: r1}
	_, err = root.admin.Deposit(ctx, connect.NewRequest(reused))
	wantErr(t, err, connect.CodeAlreadyExists, "entry_id_reused")

	_, err = root.admin.Withdraw(ctx, connect.NewRequest(&gatewayv1.WithdrawRequest{AccountId: acct, Amount: start + 25_001, Currency: "USD", Reason: "too much", RequestId: uuid.NewString()}))
	wantErr(t, err, connect.CodeFailedPrecondition, "insufficient_funds")
	if got := e.balance(t, acct); got != start+25_000 {
		t.Fatalf("balance %d after a refused withdrawal, want %d", got, start+25_000)
	}
	r3 := uuid.NewString()
	wd := &gatewayv1.WithdrawRequest{AccountId: acct, Amount: 2_525, Currency: "USD", Reason: "cash withdrawal", RequestId: r3}
	for i, p := range protocols {
		w, err := adminOver(t, root, "root", e, p).Withdraw(ctx, connect.NewRequest(wd))
		if err != nil {
			t.Fatalf("%s: withdraw: %v", p.name, err)
		}
		if w.Msg.GetReplayed() != (i > 0) || w.Msg.GetEntry().GetKind() != gatewayv1.LedgerEntryKind_LEDGER_ENTRY_KIND_WITHDRAWAL ||
			w.Msg.GetEntry().GetBalanceAfter() != start+25_000-2_525 {
			t.Fatalf("%s: withdraw: %v", p.name, w.Msg)
		}
	}

	for _, tc := range []struct {
		name   string
		req    *gatewayv1.DepositRequest
		code   connect.Code
		reason string
	}{
		{"currency", &gatewayv1.DepositRequest{AccountId: acct, Amount: 1, Currency: "EUR", Reason: "x", RequestId: uuid.NewString()}, connect.CodeFailedPrecondition, "currency_mismatch"},
		{"unknown account", &gatewayv1.DepositRequest{AccountId: "bank1-9999", Amount: 1, Currency: "USD", Reason: "x", RequestId: uuid.NewString()}, connect.CodeNotFound, "account_not_found"},
		{"unknown bank", &gatewayv1.DepositRequest{AccountId: "bank9-1", Amount: 1, Currency: "USD", Reason: "x", RequestId: uuid.NewString()}, connect.CodeNotFound, "bank_not_found"},
		{"no request id", &gatewayv1.DepositRequest{AccountId: acct, Amount: 1, Currency: "USD", Reason: "x"}, connect.CodeInvalidArgument, ""},
	} {
		_, err := root.admin.Deposit(ctx, connect.NewRequest(tc.req))
		wantErr(t, err, tc.code, tc.reason)
	}

	// A bank that is down.
	e.banks["bank3"].stop(t)
	_, err = root.admin.Deposit(ctx, connect.NewRequest(&gatewayv1.DepositRequest{AccountId: "bank3-3001", Amount: 1, Currency: "USD", Reason: "x", RequestId: uuid.NewString()}))
	wantErr(t, err, connect.CodeUnavailable, "bank_unavailable")
	e.banks["bank3"].start(t)

	list, err := root.admin.ListLedgerEntries(ctx, connect.NewRequest(&gatewayv1.ListLedgerEntriesRequest{Bank: "bank1"}))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, en := range list.Msg.GetEntries() {
		ids = append(ids, en.GetEntryId())
	}
	if !slices.Equal(ids, []string{r3, r1}) {
		t.Fatalf("bank1's entries %v, want [%s %s] (newest first)", ids, r3, r1)
	}
	list, err = root.admin.ListLedgerEntries(ctx, connect.NewRequest(&gatewayv1.ListLedgerEntriesRequest{Bank: "bank1", AccountId: "bank1-1001"}))
	if err != nil || len(list.Msg.GetEntries()) != 0 {
		t.Fatalf("entries of an account without any: %v, %v", list, err)
	}
	_, err = root.admin.ListLedgerEntries(ctx, connect.NewRequest(&gatewayv1.ListLedgerEntriesRequest{Bank: "bank2", AccountId: acct}))
	wantErr(t, err, connect.CodeInvalidArgument, "invalid_argument")

	// The audit log has the balance before and after each entry made, nothing for a replay.
	var deposits []auditRecord
	for _, rec := range e.auditLog(t) {
		if rec.Action == "Deposit" && rec.Target == "account:"+acct {
			deposits = append(deposits, rec)
		}
	}
	if len(deposits) != 5 {
		t.Fatalf("%d audit entries of deposits into %s, want 5: %+v", len(deposits), acct, deposits)
	}
	first := deposits[0]
	if first.Actor != "root" || first.Outcome != "ok" || first.Before != `{"account_id":"bank1-1003","balance":7525,"currency":"USD"}` ||
		first.After != `{"account_id":"bank1-1003","balance":32525,"currency":"USD","entry_id":"`+r1+`","reason":"cash deposit, branch 12"}` {
		t.Errorf("audit of the deposit: %+v", first)
	}
	if deposits[1].Before != "" || deposits[1].After != "" || deposits[1].Outcome != "ok" {
		t.Errorf("audit of a replay: %+v", deposits[1])
	}
	if deposits[3].Outcome != "already_exists" || deposits[3].Reason != "entry_id_reused" {
		t.Errorf("audit of a reuse: %+v", deposits[3])
	}
	e.assertMoney(t, root, 25_000, 2_525)
}

// TestAdminAccounts: an account opened at a bank (linked to its holder's user at once), listed
// with its link, refused closing while it holds money, closed once empty; a closed account
// takes no payment.
func TestAdminAccounts(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, envOptions{})
	root, alice := e.admin(t, "root"), e.customer(t, "alice")
	ctx := context.Background()
	rid := uuid.NewString()
	open := &gatewayv1.OpenAccountRequest{Bank: "bank1", Holder: "alice", Currency: "USD", RequestId: rid, LinkUsername: "alice"}
	resp, err := root.admin.OpenAccount(ctx, connect.NewRequest(open))
	if err != nil {
		t.Fatal(err)
	}
	acct := resp.Msg.GetAccount()
	id := acct.GetAccountId()
	if id != "bank1-1005" || acct.GetBank() != "bank1" || acct.GetHolder() != "alice" || acct.GetLinkedUsername() != "alice" ||
		acct.GetBalance().GetBalance() != 0 || acct.GetClosed() || resp.Msg.GetReplayed() {
		t.Fatalf("opened %v (replayed %v)", acct, resp.Msg.GetReplayed())
	}
	again, err := root.admin.OpenAccount(ctx, connect.NewRequest(open))
	if err != nil || !again.Msg.GetReplayed() || again.Msg.GetAccount().GetAccountId() != id || again.Msg.GetAccount().GetLinkedUsername() != "alice" {
		t.Fatalf("replay: %v, %v", again, err)
	}
	for _, tc := range []struct {
		name   string
		req    *gatewayv1.OpenAccountRequest
		code   connect.Code
		reason string
	}{
		{"request id reused", &gatewayv1.OpenAccountRequest{Bank: "bank1", Holder: "bob", Currency: "USD", RequestId: rid}, connect.CodeAlreadyExists, "request_id_reused"},
		{"holder is not the user", &gatewayv1.OpenAccountRequest{Bank: "bank1", Holder: "bob", Currency: "USD", RequestId: uuid.NewString(), LinkUsername: "alice"}, connect.CodeFailedPrecondition, "holder_mismatch"},
		{"unknown user", &gatewayv1.OpenAccountRequest{Bank: "bank1", Holder: "nobody", Currency: "USD", RequestId: uuid.NewString(), LinkUsername: "nobody"}, connect.CodeNotFound, "user_not_found"},
		{"unknown bank", &gatewayv1.OpenAccountRequest{Bank: "bank9", Holder: "alice", Currency: "USD", RequestId: uuid.NewString()}, connect.CodeNotFound, "bank_not_found"},
	} {
		_, err := root.admin.OpenAccount(ctx, connect.NewRequest(tc.req))
		wantErr(t, err, tc.code, tc.reason)
	}
	if accounts, err := e.gw.store.Accounts(ctx, "alice"); err != nil || !slices.Contains(accounts, id) {
		t.Fatalf("alice's accounts %v, %v: want %s among them", accounts, err, id)
	}

	// Listed with its link, in pages.
	var listed []*gatewayv1.BankAccount
	tok := ""
	for {
		page, err := root.admin.ListBankAccounts(ctx, connect.NewRequest(&gatewayv1.ListBankAccountsRequest{Bank: "bank1", PageSize: 2, PageToken: tok}))
		if err != nil {
			t.Fatal(err)
		}
		listed = append(listed, page.Msg.GetAccounts()...)
		if tok = page.Msg.GetNextPageToken(); tok == "" {
			break
		}
	}
	links := map[string]string{}
	for _, a := range listed {
		links[a.GetAccountId()] = a.GetLinkedUsername()
	}
	want := map[string]string{"bank1-1001": "alice", "bank1-1002": "", "bank1-1003": "", "bank1-1004": "", id: "alice"}
	if len(links) != len(want) {
		t.Fatalf("bank1's accounts %v, want %v", links, want)
	}
	for k, v := range want {
		if l, ok := links[k]; !ok || l != v {
			t.Fatalf("bank1's accounts %v, want %v", links, want)
		}
	}

	// Closing: refused while it holds money, done once empty, answered the same again.
	if _, err := root.admin.Deposit(ctx, connect.NewRequest(&gatewayv1.DepositRequest{AccountId: id, Amount: 1_000, Currency: "USD", Reason: "opening deposit", RequestId: uuid.NewString()})); err != nil {
		t.Fatal(err)
	}
	_, err = root.admin.CloseAccount(ctx, connect.NewRequest(&gatewayv1.CloseAccountRequest{AccountId: id, Reason: "customer left"}))
	wantErr(t, err, connect.CodeFailedPrecondition, "account_not_empty")
	if _, err := root.admin.Withdraw(ctx, connect.NewRequest(&gatewayv1.WithdrawRequest{AccountId: id, Amount: 1_000, Currency: "USD", Reason: "closing", RequestId: uuid.NewString()})); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		closed, err := root.admin.CloseAccount(ctx, connect.NewRequest(&gatewayv1.CloseAccountRequest{AccountId: id, Reason: "customer left"}))
		if err != nil || !closed.Msg.GetAccount().GetClosed() || closed.Msg.GetAccount().GetLinkedUsername() != "alice" {
			t.Fatalf("close: %v, %v", closed, err)
		}
	}
	_, err = root.admin.CloseAccount(ctx, connect.NewRequest(&gatewayv1.CloseAccountRequest{AccountId: "bank1-9999", Reason: "x"}))
	wantErr(t, err, connect.CodeNotFound, "account_not_found")
	var closes []auditRecord
	for _, rec := range e.auditLog(t) {
		if rec.Action == "CloseAccount" && rec.Target == "account:"+id {
			closes = append(closes, rec)
		}
	}
	if len(closes) != 3 || closes[0].Reason != "account_not_empty" || closes[1].After == "" || closes[2].After != "" {
		t.Errorf("audit of the closes: %+v", closes)
	}

	// A closed account takes no payment and no deposit.
	p := alice.pay(t, newPaymentID(), "bank1-1001", id, 100)
	if p.GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED || p.GetFailureReason() != gatewayv1.FailureReason_FAILURE_REASON_ACCOUNT_CLOSED {
		t.Fatalf("payment to a closed account: %v %v", p.GetStatus(), p.GetFailureReason())
	}
	_, err = root.admin.Deposit(ctx, connect.NewRequest(&gatewayv1.DepositRequest{AccountId: id, Amount: 1, Currency: "USD", Reason: "x", RequestId: uuid.NewString()}))
	wantErr(t, err, connect.CodeFailedPrecondition, "account_closed")
	e.assertMoney(t, root, 1_000, 1_000)
}
