package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"strings"

	"connectrpc.com/connect"
	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/paygate/paygate/client"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
	"github.com/paygate/paygate/internal/account"
	"github.com/paygate/paygate/internal/money"
	"github.com/paygate/paygate/services/gateway"
)

// paygate admin accounts, deposit, withdraw and entries: accounts at the banks and money
// entering and leaving the system.

// requestIDPattern is what the gateway takes as a request_id: a UUID or a ULID.
var requestIDPattern = regexp.MustCompile(`^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26})$`)

// requestID returns --request-id, checked, or a new one (a UUIDv7).
func requestID(flagValue string) (string, error) {
	if flagValue == "" {
		return client.NewPaymentID(), nil
	}
	if !requestIDPattern.MatchString(flagValue) {
		return "", usageErrorf("--request-id %q: want a UUID or a ULID, as printed by an earlier run", flagValue)
	}
	return flagValue, nil
}

// withRequestID makes req carry id as the call's request id, which the audit log records.
func withRequestID[T any](req *connect.Request[T], id string) *connect.Request[T] {
	req.Header().Set(gateway.RequestIDHeader, id)
	return req
}

// retryHint adds to a failed change how to retry it without doing it twice.
func retryHint(err error, id string) error {
	switch connect.CodeOf(err) {
	case connect.CodeInvalidArgument, connect.CodePermissionDenied, connect.CodeNotFound, connect.CodeFailedPrecondition,
		connect.CodeAlreadyExists, connect.CodeUnauthenticated:
		return err // refused: nothing was done
	}
	return fmt.Errorf("%w\n  it may or may not have been done: run the same command again with --request-id %s (never done twice)", err, id)
}

// bankFlag checks a --bank value.
func bankFlag(bank string) error {
	if bank == "" {
		return usageErrorf("--bank is required, e.g. --bank bank1")
	}
	return nil
}

func newAdminAccountsCommand(e *env) *ffcli.Command {
	return adminGroup(e, "admin accounts", "list, open and close accounts at the banks",
		"Accounts at the banks, with balances, holds and the user each is linked to.",
		newAdminAccountsListCommand(e),
		newAdminAccountsOpenCommand(e),
		newAdminAccountsCloseCommand(e),
	)
}

func newAdminAccountsListCommand(e *env) *ffcli.Command {
	var pg paging
	var bank string
	return adminSpec{
		path:    "admin accounts list",
		args:    "--bank BANK [flags]",
		short:   "list a bank's accounts with balances and linked users",
		long:    "Lists the accounts of BANK: holder, currency, balance, held by payments in\nprogress, available, incoming payments in progress, open or closed, linked user.",
		example: "  paygate admin accounts list --bank bank1",
		flags: func(fs *flag.FlagSet) {
			pg.register(fs, 100, 1000)
			fs.StringVar(&bank, "bank", "", "the bank's name, e.g. bank1 (required)")
		},
		run: func(ctx context.Context, a *adminRun, args []string) error {
			if err := wantArgs(args); err != nil {
				return err
			}
			if err := errors.Join(bankFlag(bank), pg.check()); err != nil {
				return err
			}
			svc, done, err := a.service()
			if err != nil {
				return err
			}
			defer done()
			resp, err := svc.ListBankAccounts(ctx, connect.NewRequest(&gatewayv1.ListBankAccountsRequest{Bank: bank, PageSize: pg.size(), PageToken: pg.token}))
			if err != nil {
				return adminFailure("accounts list --bank "+bank, err)
			}
			out := struct {
				Accounts      []bankAccountJSON `json:"accounts"`
				NextPageToken string            `json:"next_page_token"`
			}{Accounts: []bankAccountJSON{}, NextPageToken: resp.Msg.GetNextPageToken()}
			for _, acc := range resp.Msg.GetAccounts() {
				out.Accounts = append(out.Accounts, bankAccountToJSON(acc))
			}
			return a.output(out, func(w io.Writer) {
				writeAccountsTable(w, out.Accounts)
				pg.next(w, out.NextPageToken)
			})
		},
	}.command(e)
}

func newAdminAccountsOpenCommand(e *env) *ffcli.Command {
	var bank, holder, currency, link, reqID string
	return adminSpec{
		path:  "admin accounts open",
		args:  "--bank BANK --holder NAME --currency CODE [flags]",
		short: "open an account at a bank, optionally linked to its user",
		long: "Opens an account at BANK for HOLDER with a zero balance; the bank picks its\n" +
			"number. For an account to be linked to a user, the holder must be the username;\n" +
			"--link links it at once. The request id is printed: running the command again\n" +
			"with --request-id opens nothing more and prints the same account.",
		example: "  paygate admin accounts open --bank bank2 --holder erin --currency USD --link erin",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&bank, "bank", "", "the bank's name, e.g. bank1 (required)")
			fs.StringVar(&holder, "holder", "", "the holder's name as the bank records it (required)")
			fs.StringVar(&currency, "currency", "", "ISO 4217 code of the account, e.g. USD (required)")
			fs.StringVar(&link, "link", "", "link the new account to this user at once (the holder must be the username)")
			fs.StringVar(&reqID, "request-id", "", "the request id of an earlier run to repeat (default: a new one)")
		},
		run: func(ctx context.Context, a *adminRun, args []string) error {
			if err := wantArgs(args); err != nil {
				return err
			}
			if err := bankFlag(bank); err != nil {
				return err
			}
			if holder == "" || currency == "" {
				return usageErrorf("--holder and --currency are required")
			}
			currency = strings.ToUpper(currency)
			id, err := requestID(reqID)
			if err != nil {
				return err
			}
			svc, done, err := a.service()
			if err != nil {
				return err
			}
			defer done()
			resp, err := svc.OpenAccount(ctx, withRequestID(connect.NewRequest(&gatewayv1.OpenAccountRequest{
				Bank: bank, Holder: holder, Currency: currency, RequestId: id, LinkUsername: link}), id))
			if err != nil {
				return retryHint(adminFailure("accounts open", err), id)
			}
			acc := bankAccountToJSON(resp.Msg.GetAccount())
			replayed := resp.Msg.GetReplayed()
			return a.output(map[string]any{"account": acc, "replayed": replayed, "request_id": id}, func(w io.Writer) {
				fmt.Fprintf(w, "opened %s at %s for %s (%s)", acc.AccountID, acc.Bank, acc.Holder, acc.Currency)
				if acc.LinkedUsername != "" {
					fmt.Fprintf(w, ", linked to %s", acc.LinkedUsername)
				}
				fmt.Fprintln(w)
				if replayed {
					fmt.Fprintln(w, "  (an earlier request with this id opened it; nothing more was opened now)")
				}
				fmt.Fprintf(w, "request id %s\n", id)
			})
		},
	}.command(e)
}

func newAdminAccountsCloseCommand(e *env) *ffcli.Command {
	var reason string
	return adminSpec{
		path:  "admin accounts close",
		args:  "--reason TEXT [flags] ACCOUNT",
		short: "close an empty account",
		long: "Closes ACCOUNT. Its balance must be zero and nothing may hold or credit it\n" +
			"(refused otherwise: account_not_empty; withdraw the money first). A closed\n" +
			"account takes part in no payment.",
		example: "  paygate admin accounts close --reason \"customer left\" bank1-1003",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&reason, "reason", "", "why, for the audit log (required)")
		},
		run: func(ctx context.Context, a *adminRun, args []string) error {
			if err := wantArgs(args, "ACCOUNT"); err != nil {
				return err
			}
			if strings.TrimSpace(reason) == "" {
				return usageErrorf("--reason is required: it goes to the audit log")
			}
			svc, done, err := a.service()
			if err != nil {
				return err
			}
			defer done()
			resp, err := svc.CloseAccount(ctx, connect.NewRequest(&gatewayv1.CloseAccountRequest{AccountId: args[0], Reason: reason}))
			if err != nil {
				return adminFailure("accounts close "+args[0], err)
			}
			acc := bankAccountToJSON(resp.Msg.GetAccount())
			return a.output(map[string]any{"account": acc}, func(w io.Writer) { fmt.Fprintf(w, "closed %s\n", acc.AccountID) })
		},
	}.command(e)
}

// accountCurrency finds the currency of account id at its bank.
func accountCurrency(ctx context.Context, svc gatewayv1connect.AdminServiceClient, id string) (string, error) {
	bank := account.Bank(id)
	if bank == "" {
		return "", usageErrorf("ACCOUNT %q: want <bank>-<number>, e.g. bank1-1001", id)
	}
	req := &gatewayv1.ListBankAccountsRequest{Bank: bank, PageSize: 1000}
	for {
		resp, err := svc.ListBankAccounts(ctx, connect.NewRequest(req))
		if err != nil {
			return "", adminFailure("find the currency of "+id, err)
		}
		for _, a := range resp.Msg.GetAccounts() {
			if a.GetAccountId() == id {
				return a.GetCurrency(), nil
			}
		}
		if req.PageToken = resp.Msg.GetNextPageToken(); req.PageToken == "" {
			return "", fmt.Errorf("%s: no such account at %s", id, bank)
		}
	}
}

// newAdminDepositCommand is `deposit` or, with withdraw, `withdraw`.
func newAdminDepositCommand(e *env, withdraw bool) *ffcli.Command {
	var reason, reqID, currency string
	spec := adminSpec{
		path:  "admin deposit",
		args:  "--reason TEXT [flags] ACCOUNT AMOUNT",
		short: "bring money into the system: credit an account",
		long: "Credits AMOUNT (a decimal in the account's currency, e.g. 100.00, converted\n" +
			"exactly) to ACCOUNT as an entry of its bank's journal, recorded with you, the\n" +
			"reason and a request id. The request id is printed: running the command again\n" +
			"with --request-id moves nothing more and prints the same entry; that is how to\n" +
			"retry one whose outcome is unknown.",
		example: "  paygate admin deposit --reason \"cash deposit, branch 12\" bank1-1004 250.00",
	}
	verb, past := "deposit", "deposited"
	if withdraw {
		spec.path, spec.short = "admin withdraw", "take money out of the system: debit an account"
		spec.long = "Debits AMOUNT (a decimal in the account's currency, e.g. 100.00, converted\n" +
			"exactly) from ACCOUNT as an entry of its bank's journal; refused with\n" +
			"insufficient_funds beyond what is available. Recorded with you, the reason and a\n" +
			"request id, which is printed: running the command again with --request-id moves\n" +
			"nothing more and prints the same entry."
		spec.example = "  paygate admin withdraw --reason \"account closing, cheque 5521\" bank1-1003 40.00"
		verb, past = "withdraw", "withdrew"
	}
	spec.flags = func(fs *flag.FlagSet) {
		fs.StringVar(&reason, "reason", "", "why, for the journal and the audit log (required)")
		fs.StringVar(&reqID, "request-id", "", "the request id of an earlier run to repeat (default: a new one)")
		fs.StringVar(&currency, "currency", "", "the account's currency (default: looked up at its bank)")
	}
	spec.run = func(ctx context.Context, a *adminRun, args []string) error {
		if err := wantArgs(args, "ACCOUNT", "AMOUNT"); err != nil {
			return err
		}
		acct, amountText := args[0], args[1]
		if strings.TrimSpace(reason) == "" {
			return usageErrorf("--reason is required: it goes to the journal and the audit log")
		}
		if account.Bank(acct) == "" {
			return usageErrorf("ACCOUNT %q: want <bank>-<number>, e.g. bank1-1001", acct)
		}
		id, err := requestID(reqID)
		if err != nil {
			return err
		}
		currency = strings.ToUpper(currency)
		if currency != "" {
			if _, err := parseMajor(amountText, currency); err != nil {
				return err
			}
		}
		svc, done, err := a.service()
		if err != nil {
			return err
		}
		defer done()
		if currency == "" {
			if currency, err = accountCurrency(ctx, svc, acct); err != nil {
				return err
			}
		}
		amount, err := parseMajor(amountText, currency)
		if err != nil {
			return err
		}
		var resp interface {
			GetEntry() *gatewayv1.LedgerEntry
			GetReplayed() bool
		}
		if withdraw {
			r, err := svc.Withdraw(ctx, withRequestID(connect.NewRequest(&gatewayv1.WithdrawRequest{
				AccountId: acct, Amount: amount, Currency: currency, Reason: reason, RequestId: id}), id))
			if err != nil {
				return retryHint(adminFailure(verb+" "+acct, err), id)
			}
			resp = r.Msg
		} else {
			r, err := svc.Deposit(ctx, withRequestID(connect.NewRequest(&gatewayv1.DepositRequest{
				AccountId: acct, Amount: amount, Currency: currency, Reason: reason, RequestId: id}), id))
			if err != nil {
				return retryHint(adminFailure(verb+" "+acct, err), id)
			}
			resp = r.Msg
		}
		en := ledgerEntryToJSON(resp.GetEntry())
		replayed := resp.GetReplayed()
		return a.output(map[string]any{"entry": en, "replayed": replayed, "request_id": id}, func(w io.Writer) {
			dir := "to"
			if withdraw {
				dir = "from"
			}
			fmt.Fprintf(w, "%s %s %s %s %s: balance now %s %s\n", past, en.AmountDecimal, en.Currency, dir, en.AccountID,
				client.FormatAmount(en.BalanceAfter, en.Currency), en.Currency)
			if replayed {
				fmt.Fprintln(w, "  (an earlier request with this id made the entry; nothing moved now)")
			}
			fmt.Fprintf(w, "request id %s\n", id)
		})
	}
	return spec.command(e)
}

// parseMajor reads an AMOUNT in major units ("100.00") of currency, exactly, as pay does.
func parseMajor(text, currency string) (int64, error) {
	v, err := money.ParseDecimal(text, currency)
	if err != nil {
		return 0, usageErrorf("AMOUNT %s %s: %s", text, currency, strings.TrimPrefix(err.Error(), "money: "))
	}
	if v <= 0 {
		return 0, usageErrorf("AMOUNT %s: want more than zero", text)
	}
	return v, nil
}

func newAdminEntriesCommand(e *env) *ffcli.Command {
	var pg paging
	var bank, acct string
	return adminSpec{
		path:    "admin entries",
		args:    "--bank BANK [--account ACCOUNT] [flags]",
		short:   "list a bank's deposits and withdrawals, newest first",
		long:    "Lists the journal entries of BANK (deposits and withdrawals, not payments),\nnewest first: when, which account, how much, the balance after, who and why.",
		example: "  paygate admin entries --bank bank1 --account bank1-1004",
		flags: func(fs *flag.FlagSet) {
			pg.register(fs, 50, 500)
			fs.StringVar(&bank, "bank", "", "the bank's name, e.g. bank1 (required; default with --account: the account's)")
			fs.StringVar(&acct, "account", "", "only this account's entries")
		},
		run: func(ctx context.Context, a *adminRun, args []string) error {
			if err := wantArgs(args); err != nil {
				return err
			}
			if bank == "" {
				bank = account.Bank(acct)
			}
			if err := errors.Join(bankFlag(bank), pg.check()); err != nil {
				return err
			}
			svc, done, err := a.service()
			if err != nil {
				return err
			}
			defer done()
			resp, err := svc.ListLedgerEntries(ctx, connect.NewRequest(&gatewayv1.ListLedgerEntriesRequest{Bank: bank, AccountId: acct, PageSize: pg.size(), PageToken: pg.token}))
			if err != nil {
				return adminFailure("entries --bank "+bank, err)
			}
			out := struct {
				Entries       []ledgerEntryJSON `json:"entries"`
				NextPageToken string            `json:"next_page_token"`
			}{Entries: []ledgerEntryJSON{}, NextPageToken: resp.Msg.GetNextPageToken()}
			for _, en := range resp.Msg.GetEntries() {
				out.Entries = append(out.Entries, ledgerEntryToJSON(en))
			}
			return a.output(out, func(w io.Writer) {
				writeEntriesTable(w, out.Entries)
				pg.next(w, out.NextPageToken)
			})
		},
	}.command(e)
}
