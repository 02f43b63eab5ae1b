package gateway

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"connectrpc.com/connect"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	"github.com/paygate/paygate/gen/paygate/bank/v1/bankv1connect"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/internal/account"
	"github.com/paygate/paygate/internal/rpcerr"
)

// AdminService: accounts at the banks, and money entering and leaving the system (deposits and
// withdrawals, journaled by the account's bank). The banks do the work; the gateway checks the
// caller, names the admin in each entry, links accounts to users and audits every call.

// Reasons of the account procedures' own refusals. Refusals of a bank keep the bank's code and
// reason (insufficient_funds, entry_id_reused, account_closed, account_not_empty,
// currency_mismatch, account_not_found, ...).
const (
	reasonBankNotFound    = "bank_not_found"
	reasonBankUnavailable = "bank_unavailable"
	reasonUserNotFound    = "user_not_found"
	reasonHolderMismatch  = "holder_mismatch"
	reasonAccountLinked   = "account_linked"
)

// adminBank returns the client of the bank named name (the value of field), ready to be called:
// NOT_FOUND bank_not_found for a bank the gateway does not know, UNAVAILABLE bank_unavailable
// for one known to be down.
func (a *adminService) adminBank(name, field, value string) (bankv1connect.BankServiceClient, error) {
	client, ok := a.g.banks[name]
	if !ok {
		return nil, rpcerr.New(connect.CodeNotFound, reasonBankNotFound,
			fmt.Sprintf("%s: %s: no bank named %q", field, value, name), "bank", name)
	}
	if up, since := a.g.health.status(name); !up {
		return nil, rpcerr.New(connect.CodeUnavailable, reasonBankUnavailable,
			fmt.Sprintf("bank %s is not answering (since %s); retry when it is back", name, since.UTC().Format("2006-01-02T15:04:05Z")), "bank", name)
	}
	return client, nil
}

// callBank runs call against bank with the gateway's bank call timeout, tells the health
// monitor how it went, and maps its error with bankError.
func callBank[T any](ctx context.Context, a *adminService, bank string, call func(ctx context.Context) (T, error)) (T, error) {
	cctx, cancel := context.WithTimeout(ctx, a.g.cfg.BankCallTimeout)
	defer cancel()
	out, err := call(cctx)
	a.g.health.observe(bank, err, false)
	if err != nil {
		return out, bankError(ctx, bank, err)
	}
	return out, nil
}

// bankFields names the request field each refusal of a bank is about, for its message.
var bankFields = map[string]string{
	"insufficient_funds": "amount",
	"balance_overflow":   "amount",
	"currency_mismatch":  "currency",
	"entry_id_reused":    "request_id",
	"request_id_reused":  "request_id",
	"invalid_page_token": "page_token",
}

// bankError is the admin's answer for a bank's error: a bank that could not be reached (or
// timed out) is UNAVAILABLE bank_unavailable; a refusal keeps the bank's code and reason, with
// the bank's message prefixed by the field it is about. The caller's own context ending passes
// through.
func bankError(ctx context.Context, bank string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	var ce *connect.Error
	if !errors.As(err, &ce) || isTransportFailure(err) {
		return rpcerr.New(connect.CodeUnavailable, reasonBankUnavailable,
			fmt.Sprintf("bank %s unavailable: %s; retry when it is back", bank, connectMessage(err)), "bank", bank)
	}
	reason := rpcerr.Reason(err)
	if reason == "" {
		reason = ce.Code().String()
	}
	field, ok := bankFields[reason]
	if !ok {
		field = "account_id"
	}
	msg := strings.TrimPrefix(ce.Message(), "bank: ")
	return rpcerr.New(ce.Code(), reason, fmt.Sprintf("%s: bank %s: %s", field, bank, msg), "bank", bank)
}

// adminUsername is the calling admin's username.
func adminUsername(ctx context.Context) string {
	p, _ := principalFrom(ctx)
	return p.Username
}

// linkedUsername returns the user account is linked to, or "" when none is.
func (a *adminService) linkedUsername(ctx context.Context, id string) (string, error) {
	owner, err := a.g.store.AccountOwner(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return "", nil
	}
	return owner, err
}

func bankAccountProto(bank string, acct *bankv1.Account, linked string) *gatewayv1.BankAccount {
	b := acct.GetBalance()
	return &gatewayv1.BankAccount{
		AccountId: acct.GetAccountId(),
		Bank:      bank,
		Holder:    acct.GetHolder(),
		Currency:  acct.GetCurrency(),
		Closed:    acct.GetClosed(),
		Balance: &gatewayv1.AccountBalance{
			AccountId:     acct.GetAccountId(),
			Currency:      b.GetCurrency(),
			Balance:       b.GetBalance(),
			Held:          b.GetHeld(),
			Available:     b.GetAvailable(),
			PendingCredit: b.GetPendingCredit(),
		},
		LinkedUsername: linked,
	}
}

// auditAccount is what the audit log records of an account an action changed.
type auditAccount struct {
	AccountID string `json:"account_id"`
	Holder    string `json:"holder,omitempty"`
	Currency  string `json:"currency,omitempty"`
	Closed    bool   `json:"closed"`
	Balance   int64  `json:"balance"`
	Linked    string `json:"linked_username,omitempty"`
	Reason    string `json:"reason,omitempty"`
}

// OpenAccount implements AdminService.OpenAccount.
func (a *adminService) OpenAccount(ctx context.Context, req *connect.Request[gatewayv1.OpenAccountRequest]) (*connect.Response[gatewayv1.OpenAccountResponse], error) {
	m := req.Msg
	target := "bank:" + m.GetBank()
	resp, err := a.openAccount(ctx, m)
	var after any
	if err == nil {
		acct := resp.GetAccount()
		target = "account:" + acct.GetAccountId()
		if !resp.GetReplayed() {
			after = auditAccount{AccountID: acct.GetAccountId(), Holder: acct.GetHolder(), Currency: acct.GetCurrency(), Linked: acct.GetLinkedUsername()}
		}
	}
	if err := a.audited(ctx, req, "OpenAccount", target, nil, after, err); err != nil {
		return nil, err
	}
	return connect.NewResponse(resp), nil
}

func (a *adminService) openAccount(ctx context.Context, m *gatewayv1.OpenAccountRequest) (*gatewayv1.OpenAccountResponse, error) {
	link := m.GetLinkUsername()
	if link != "" {
		if m.GetHolder() != link {
			return nil, rpcerr.New(connect.CodeFailedPrecondition, reasonHolderMismatch,
				fmt.Sprintf("link_username: an account linked to %q must have %q as its holder, not %q", link, link, m.GetHolder()))
		}
		if _, err := a.g.store.User(ctx, link); errors.Is(err, ErrNotFound) {
			return nil, rpcerr.New(connect.CodeNotFound, reasonUserNotFound, fmt.Sprintf("link_username: no user %q", link))
		} else if err != nil {
			return nil, err
		}
	}
	client, err := a.adminBank(m.GetBank(), "bank", m.GetBank())
	if err != nil {
		return nil, err
	}
	opened, err := callBank(ctx, a, m.GetBank(), func(ctx context.Context) (*bankv1.OpenAccountResponse, error) {
		resp, err := client.OpenAccount(ctx, connect.NewRequest(&bankv1.OpenAccountRequest{
			RequestId: m.GetRequestId(), Holder: m.GetHolder(), Currency: m.GetCurrency()}))
		if err != nil {
			return nil, err
		}
		return resp.Msg, nil
	})
	if err != nil {
		return nil, err
	}
	id := opened.GetAccount().GetAccountId()
	linked := ""
	if link != "" {
		// A replay links again: the first request may have stopped between the bank and here.
		switch err := a.g.store.LinkAccount(ctx, link, id); {
		case errors.Is(err, ErrAccountLinked):
			owner, oerr := a.linkedUsername(ctx, id)
			if oerr != nil {
				return nil, oerr
			}
			if owner != link {
				return nil, rpcerr.New(connect.CodeAlreadyExists, reasonAccountLinked,
					fmt.Sprintf("link_username: account %s is linked to another user", id))
			}
		case errors.Is(err, ErrNotFound):
			return nil, rpcerr.New(connect.CodeNotFound, reasonUserNotFound,
				fmt.Sprintf("link_username: no user %q; account %s was opened and is not linked", link, id))
		case err != nil:
			return nil, err
		}
		linked = link
	} else if linked, err = a.linkedUsername(ctx, id); err != nil {
		return nil, err
	}
	return &gatewayv1.OpenAccountResponse{Account: bankAccountProto(m.GetBank(), opened.GetAccount(), linked), Replayed: opened.GetReplayed()}, nil
}

// CloseAccount implements AdminService.CloseAccount.
func (a *adminService) CloseAccount(ctx context.Context, req *connect.Request[gatewayv1.CloseAccountRequest]) (*connect.Response[gatewayv1.CloseAccountResponse], error) {
	m := req.Msg
	id := m.GetAccountId()
	var before, after any
	resp, wasClosed, err := a.closeAccount(ctx, id)
	if err == nil && !wasClosed {
		acct := resp.GetAccount()
		before = auditAccount{AccountID: id, Balance: acct.GetBalance().GetBalance()}
		after = auditAccount{AccountID: id, Closed: true, Balance: acct.GetBalance().GetBalance(), Reason: m.GetReason()}
	}
	if err := a.audited(ctx, req, "CloseAccount", "account:"+id, before, after, err); err != nil {
		return nil, err
	}
	return connect.NewResponse(resp), nil
}

// closeAccount closes account id; wasClosed says it was closed already.
func (a *adminService) closeAccount(ctx context.Context, id string) (resp *gatewayv1.CloseAccountResponse, wasClosed bool, err error) {
	bank := account.Bank(id)
	client, err := a.adminBank(bank, "account_id", id)
	if err != nil {
		return nil, false, err
	}
	current, err := callBank(ctx, a, bank, func(ctx context.Context) (*bankv1.Account, error) {
		resp, err := client.GetAccount(ctx, connect.NewRequest(&bankv1.GetAccountRequest{AccountId: id}))
		if err != nil {
			return nil, err
		}
		return resp.Msg.GetAccount(), nil
	})
	if err != nil {
		return nil, false, err
	}
	closed, err := callBank(ctx, a, bank, func(ctx context.Context) (*bankv1.Account, error) {
		resp, err := client.CloseAccount(ctx, connect.NewRequest(&bankv1.CloseAccountRequest{AccountId: id}))
		if err != nil {
			return nil, err
		}
		return resp.Msg.GetAccount(), nil
	})
	if err != nil {
		return nil, false, err
	}
	linked, err := a.linkedUsername(ctx, id)
	if err != nil {
		return nil, false, err
	}
	return &gatewayv1.CloseAccountResponse{Account: bankAccountProto(bank, closed, linked)}, current.GetClosed(), nil
}

// ListBankAccounts implements AdminService.ListBankAccounts.
func (a *adminService) ListBankAccounts(ctx context.Context, req *connect.Request[gatewayv1.ListBankAccountsRequest]) (*connect.Response[gatewayv1.ListBankAccountsResponse], error) {
	m := req.Msg
	resp, err := a.listBankAccounts(ctx, m)
	if err := a.audited(ctx, req, "ListBankAccounts", "bank:"+m.GetBank(), nil, nil, err); err != nil {
		return nil, err
	}
	return connect.NewResponse(resp), nil
}

func (a *adminService) listBankAccounts(ctx context.Context, m *gatewayv1.ListBankAccountsRequest) (*gatewayv1.ListBankAccountsResponse, error) {
	bank := m.GetBank()
	client, err := a.adminBank(bank, "bank", bank)
	if err != nil {
		return nil, err
	}
	size := m.GetPageSize()
	if size == 0 {
		size = 100
	}
	page, err := callBank(ctx, a, bank, func(ctx context.Context) (*bankv1.ListAccountsResponse, error) {
		resp, err := client.ListAccounts(ctx, connect.NewRequest(&bankv1.ListAccountsRequest{PageSize: size, PageToken: m.GetPageToken()}))
		if err != nil {
			return nil, err
		}
		return resp.Msg, nil
	})
	if err != nil {
		return nil, err
	}
	out := &gatewayv1.ListBankAccountsResponse{NextPageToken: page.GetNextPageToken()}
	for _, acct := range page.GetAccounts() {
		linked, err := a.linkedUsername(ctx, acct.GetAccountId())
		if err != nil {
			return nil, err
		}
		out.Accounts = append(out.Accounts, bankAccountProto(bank, acct, linked))
	}
	return out, nil
}

// auditBalance is what the audit log records of an account's balance around a deposit or a
// withdrawal.
type auditBalance struct {
	AccountID string `json:"account_id"`
	Balance   int64  `json:"balance"`
	Currency  string `json:"currency"`
	EntryID   string `json:"entry_id,omitempty"`
	Reason    string `json:"reason,omitempty"`
}

// Deposit implements AdminService.Deposit.
func (a *adminService) Deposit(ctx context.Context, req *connect.Request[gatewayv1.DepositRequest]) (*connect.Response[gatewayv1.DepositResponse], error) {
	m := req.Msg
	entry, replayed, err := a.postEntry(ctx, req, "Deposit", bankv1.EntryKind_ENTRY_KIND_DEPOSIT, m.GetAccountId(), m.GetAmount(), m.GetCurrency(), m.GetReason(), m.GetRequestId())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gatewayv1.DepositResponse{Entry: entry, Replayed: replayed}), nil
}

// Withdraw implements AdminService.Withdraw.
func (a *adminService) Withdraw(ctx context.Context, req *connect.Request[gatewayv1.WithdrawRequest]) (*connect.Response[gatewayv1.WithdrawResponse], error) {
	m := req.Msg
	entry, replayed, err := a.postEntry(ctx, req, "Withdraw", bankv1.EntryKind_ENTRY_KIND_WITHDRAWAL, m.GetAccountId(), m.GetAmount(), m.GetCurrency(), m.GetReason(), m.GetRequestId())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gatewayv1.WithdrawResponse{Entry: entry, Replayed: replayed}), nil
}

// postEntry has the account's bank journal a deposit or a withdrawal made by the calling admin,
// with the request id as the entry id, and audits it with the balance before and after.
func (a *adminService) postEntry(ctx context.Context, req connect.AnyRequest, action string, kind bankv1.EntryKind, id string, amount int64, currency, reason, requestID string) (*gatewayv1.LedgerEntry, bool, error) {
	var before, after any
	posted, err := a.postBankEntry(ctx, kind, id, amount, currency, reason, requestID)
	if err == nil && !posted.GetReplayed() {
		e := posted.GetEntry()
		prior := e.GetBalanceAfter() - e.GetAmount()
		if kind == bankv1.EntryKind_ENTRY_KIND_WITHDRAWAL {
			prior = e.GetBalanceAfter() + e.GetAmount()
		}
		before = auditBalance{AccountID: id, Balance: prior, Currency: e.GetCurrency()}
		after = auditBalance{AccountID: id, Balance: e.GetBalanceAfter(), Currency: e.GetCurrency(), EntryID: e.GetEntryId(), Reason: reason}
	}
	if err := a.audited(ctx, req, action, "account:"+id, before, after, err); err != nil {
		return nil, false, err
	}
	return ledgerEntryProto(posted.GetEntry()), posted.GetReplayed(), nil
}

func (a *adminService) postBankEntry(ctx context.Context, kind bankv1.EntryKind, id string, amount int64, currency, reason, requestID string) (*bankv1.PostEntryResponse, error) {
	bank := account.Bank(id)
	client, err := a.adminBank(bank, "account_id", id)
	if err != nil {
		return nil, err
	}
	actor := adminUsername(ctx)
	return callBank(ctx, a, bank, func(ctx context.Context) (*bankv1.PostEntryResponse, error) {
		resp, err := client.PostEntry(ctx, connect.NewRequest(&bankv1.PostEntryRequest{
			EntryId: requestID, Kind: kind, AccountId: id, Amount: amount, Currency: currency, Actor: actor, Reason: reason}))
		if err != nil {
			return nil, err
		}
		return resp.Msg, nil
	})
}

func ledgerEntryProto(e *bankv1.Entry) *gatewayv1.LedgerEntry {
	kind := gatewayv1.LedgerEntryKind_LEDGER_ENTRY_KIND_UNSPECIFIED
	switch e.GetKind() {
	case bankv1.EntryKind_ENTRY_KIND_DEPOSIT:
		kind = gatewayv1.LedgerEntryKind_LEDGER_ENTRY_KIND_DEPOSIT
	case bankv1.EntryKind_ENTRY_KIND_WITHDRAWAL:
		kind = gatewayv1.LedgerEntryKind_LEDGER_ENTRY_KIND_WITHDRAWAL
	}
	return &gatewayv1.LedgerEntry{
		EntryId:      e.GetEntryId(),
		Kind:         kind,
		AccountId:    e.GetAccountId(),
		Amount:       e.GetAmount(),
		Currency:     e.GetCurrency(),
		Admin:        e.GetActor(),
		Reason:       e.GetReason(),
		BalanceAfter: e.GetBalanceAfter(),
		CreateTime:   e.GetCreateTime(),
	}
}

// ListLedgerEntries implements AdminService.ListLedgerEntries.
func (a *adminService) ListLedgerEntries(ctx context.Context, req *connect.Request[gatewayv1.ListLedgerEntriesRequest]) (*connect.Response[gatewayv1.ListLedgerEntriesResponse], error) {
	m := req.Msg
	target := "bank:" + m.GetBank()
	if m.GetAccountId() != "" {
		target = "account:" + m.GetAccountId()
	}
	resp, err := a.listLedgerEntries(ctx, m)
	if err := a.audited(ctx, req, "ListLedgerEntries", target, nil, nil, err); err != nil {
		return nil, err
	}
	return connect.NewResponse(resp), nil
}

func (a *adminService) listLedgerEntries(ctx context.Context, m *gatewayv1.ListLedgerEntriesRequest) (*gatewayv1.ListLedgerEntriesResponse, error) {
	bank := m.GetBank()
	if id := m.GetAccountId(); id != "" && account.Bank(id) != bank {
		return nil, rpcerr.New(connect.CodeInvalidArgument, "invalid_argument",
			fmt.Sprintf("account_id: %s is not an account of bank %s", id, bank))
	}
	client, err := a.adminBank(bank, "bank", bank)
	if err != nil {
		return nil, err
	}
	size := m.GetPageSize()
	if size == 0 {
		size = 50
	}
	page, err := callBank(ctx, a, bank, func(ctx context.Context) (*bankv1.ListEntriesResponse, error) {
		resp, err := client.ListEntries(ctx, connect.NewRequest(&bankv1.ListEntriesRequest{
			AccountId: m.GetAccountId(), PageSize: size, PageToken: m.GetPageToken()}))
		if err != nil {
			return nil, err
		}
		return resp.Msg, nil
	})
	if err != nil {
		return nil, err
	}
	out := &gatewayv1.ListLedgerEntriesResponse{NextPageToken: page.GetNextPageToken()}
	for _, e := range page.GetEntries() {
		out.Entries = append(out.Entries, ledgerEntryProto(e))
	}
	return out, nil
}
