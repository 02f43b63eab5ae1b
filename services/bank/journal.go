package bank

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/paygate/paygate/internal/money"
)

// Operators' work on the ledger, the same for both stores: opening and closing accounts, the
// journal of deposits and withdrawals (money entering and leaving the system), and the summary
// the money invariants are checked against.
//
// Payments move money between accounts and conserve the sum of all balances across the banks;
// entries change it, and are journaled so that the sum stays explained:
//
//	sum(balance) = sum(initial) + sum(deposited) − sum(withdrawn)
//
// over every bank, once no transaction is prepared. initial is what a bank's accounts held when
// it imported them at its first start (ImportAccounts records it). A ledger created before the
// journal existed records, when it is first opened by a binary with the journal, the sum of its
// balances at that moment as its initial: the equation holds across the system from then on if
// every bank was upgraded while no payment was in flight.

// Errors of the operators' procedures, wrapped with the action and the account or id concerned.
// ErrAccountClosed (enroll.go) is also returned for an entry on a closed account.
var (
	ErrEntryIDReused     = errors.New("bank: entry id already used with other parameters")
	ErrRequestIDReused   = errors.New("bank: request id already used with other parameters")
	ErrInsufficientFunds = errors.New("bank: insufficient funds")
	ErrBalanceOverflow   = errors.New("bank: balance overflow")
	ErrCurrencyMismatch  = errors.New("bank: currency mismatch")
	ErrAccountNotEmpty   = errors.New("bank: account not empty")
)

// EntryKind says which way an entry moves money across the system's edge.
type EntryKind string

// The kinds of entry, as stored.
const (
	Deposit    EntryKind = "DEPOSIT"
	Withdrawal EntryKind = "WITHDRAWAL"
)

// MaxEntryAmount is the largest amount of one entry, in minor units (the API's limit too).
const MaxEntryAmount = 1_000_000_000_000_000

// Limits of the operators' text fields, in characters, as the API's validation has them.
const (
	maxRequestIDLen = 64
	maxHolderLen    = 64
	maxActorLen     = 64
	maxReasonLen    = 200
)

// Entry is one journaled deposit or withdrawal.
type Entry struct {
	ID       string
	Kind     EntryKind
	Account  string
	Amount   int64 // minor units, > 0
	Currency string
	// Actor is who made the entry (an admin's username at the gateway); Reason is why.
	Actor  string
	Reason string
	// BalanceAfter is the account's balance once the entry was applied.
	BalanceAfter int64
	CreatedAt    time.Time

	// seq orders the journal: a later entry has a larger seq.
	seq int64
}

// sameEntry says whether a replay of e asks for what stored does: the same kind, account, amount
// and currency (who made it and why may differ).
func sameEntry(stored, e Entry) bool {
	return stored.Kind == e.Kind && stored.Account == e.Account && stored.Amount == e.Amount && stored.Currency == e.Currency
}

// Summary is a bank's totals, read in one snapshot; amounts are sums of minor units over every
// account, whatever its currency.
type Summary struct {
	Accounts      int
	Balance       int64
	Held          int64
	PendingCredit int64
	// Initial is what the accounts held when the bank imported them at its first start.
	Initial int64
	// Deposited and Withdrawn are the sums of the journal's deposits and withdrawals.
	Deposited int64
	Withdrawn int64
	// Prepared counts the transactions prepared and not yet committed or aborted.
	Prepared int
}

// checkText checks a text argument of the operators' procedures: 1 to max characters of
// UTF-8 without NUL bytes (PostgreSQL text cannot hold them; both stores refuse them alike).
func checkText(field, s string, max int) error {
	switch {
	case s == "" || utf8.RuneCountInString(s) > max:
		return fmt.Errorf("%w: %s must be 1 to %d characters", ErrInvalidArgument, field, max)
	case !utf8.ValidString(s) || hasNUL(s):
		return fmt.Errorf("%w: %s must be UTF-8 text without NUL bytes", ErrInvalidArgument, field)
	}
	return nil
}

// checkOpenAccount validates OpenAccount's arguments.
func checkOpenAccount(requestID, holder, currency string) error {
	if err := checkText("request_id", requestID, maxRequestIDLen); err != nil {
		return err
	}
	if err := checkText("holder", holder, maxHolderLen); err != nil {
		return err
	}
	if !money.Known(currency) {
		return fmt.Errorf("%w: currency %q is not a currency the bank knows", ErrInvalidArgument, currency)
	}
	return nil
}

// checkAccountArg validates an account id argument.
func checkAccountArg(id string) error {
	return checkText("account_id", id, maxAccountIDLen)
}

// checkEntry validates PostEntry's arguments.
func checkEntry(e Entry) error {
	if err := checkText("entry_id", e.ID, maxRequestIDLen); err != nil {
		return err
	}
	if e.Kind != Deposit && e.Kind != Withdrawal {
		return fmt.Errorf("%w: kind %q: want %s or %s", ErrInvalidArgument, e.Kind, Deposit, Withdrawal)
	}
	if err := checkAccountArg(e.Account); err != nil {
		return err
	}
	if e.Amount <= 0 || e.Amount > MaxEntryAmount {
		return fmt.Errorf("%w: amount must be 1 to %d minor units, got %d", ErrInvalidArgument, int64(MaxEntryAmount), e.Amount)
	}
	if err := checkText("currency", e.Currency, 3); err != nil {
		return err
	}
	if err := checkText("actor", e.Actor, maxActorLen); err != nil {
		return err
	}
	return checkText("reason", e.Reason, maxReasonLen)
}

// applyEntry checks entry e against account a (locked, or read by the single writer) and
// returns the account's new balance, or the refusal: the account is closed, holds another
// currency, cannot pay the withdrawal from its available balance, or would overflow with the
// deposit (counting its pending credits, as a prepare's credit does).
func applyEntry(a Account, e Entry) (int64, error) {
	switch {
	case a.Closed:
		return 0, fmt.Errorf("%w: account %s is closed", ErrAccountClosed, a.ID)
	case a.Currency != e.Currency:
		return 0, fmt.Errorf("%w: account %s holds %s, the entry is in %s", ErrCurrencyMismatch, a.ID, a.Currency, e.Currency)
	case e.Kind == Withdrawal:
		if a.Available() < e.Amount {
			return 0, fmt.Errorf("%w: account %s has %s available, the withdrawal is %s", ErrInsufficientFunds,
				a.ID, money.Format(a.Available(), a.Currency), money.Format(e.Amount, e.Currency))
		}
		return a.Balance - e.Amount, nil
	}
	total, ok := money.CheckedAdd(a.Balance, a.PendingCredit)
	if ok {
		_, ok = money.CheckedAdd(total, e.Amount)
	}
	if !ok {
		return 0, fmt.Errorf("%w: a deposit of %s would take account %s beyond the largest representable balance",
			ErrBalanceOverflow, money.Format(e.Amount, e.Currency), a.ID)
	}
	return a.Balance + e.Amount, nil
}

// checkCloseable refuses to close an account that holds money or has a prepared transaction.
func checkCloseable(a Account) error {
	if a.Balance != 0 || a.Held != 0 || a.PendingCredit != 0 {
		return fmt.Errorf("%w: account %s has a balance of %s, %s held and %s of pending credits", ErrAccountNotEmpty, a.ID,
			money.Format(a.Balance, a.Currency), money.Format(a.Held, a.Currency), money.Format(a.PendingCredit, a.Currency))
	}
	return nil
}

// sumBalances is what accounts hold together: the initial total an import records. A total
// that int64 cannot hold is refused, since no summary could report it.
func sumBalances(accounts []Account) (int64, error) {
	var total int64
	for _, a := range accounts {
		var ok bool
		if total, ok = money.CheckedAdd(total, a.Balance); !ok {
			return 0, fmt.Errorf("%w: the accounts' balances total more than %d minor units", ErrInvalidArgument, int64(math.MaxInt64))
		}
	}
	return total, nil
}

// nextAccountID is the id OpenAccount gives the next account of bank: "<bank>-<n>", n one more
// than highest, the highest number of an account in use (0 for none).
func nextAccountID(bank string, highest int64) (string, error) {
	if highest >= maxAccountNumber {
		return "", fmt.Errorf("open account: no account number left after %d", highest)
	}
	return bank + "-" + strconv.FormatInt(highest+1, 10), nil
}

// maxAccountNumber bounds the account numbers OpenAccount reads as numbers: up to 18 digits, so
// that the next one always fits in an int64. Longer numbers (fixtures may have any) are ignored.
const (
	maxAccountNumberDigits = 18
	maxAccountNumber       = 999_999_999_999_999_999
)

// entryPageToken is the token of the page of entries after entry e.
func entryPageToken(e Entry) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(e.seq, 10)))
}

// decodeEntryPageToken is the seq a ListEntries page starts below (math.MaxInt64 for the first
// page), or ErrInvalidPageToken.
func decodeEntryPageToken(pageToken string) (int64, error) {
	if pageToken == "" {
		return math.MaxInt64, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(pageToken)
	if err != nil {
		return 0, fmt.Errorf("list entries: %w", ErrInvalidPageToken)
	}
	seq, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil || seq <= 0 {
		return 0, fmt.Errorf("list entries: %w", ErrInvalidPageToken)
	}
	return seq, nil
}

// checkListEntries validates ListEntries' arguments and returns the seq the page starts below.
func checkListEntries(accountID string, pageSize int, pageToken string) (int64, error) {
	if pageSize <= 0 {
		return 0, fmt.Errorf("list entries: %w: page size %d", ErrInvalidArgument, pageSize)
	}
	if accountID != "" {
		if err := checkAccountArg(accountID); err != nil {
			return 0, fmt.Errorf("list entries: %w", err)
		}
	}
	return decodeEntryPageToken(pageToken)
}

// entryRows is what entryPage needs of a query's rows (database/sql's and pgx's).
type entryRows = accountRows

// entryColumns are the columns scanEntry reads, in its order.
const entryColumns = `seq, entry_id, kind, account_id, amount, currency, actor, reason, balance_after, created_at`

func scanEntry(row interface{ Scan(...any) error }) (Entry, error) {
	var e Entry
	var kind string
	var created int64
	err := row.Scan(&e.seq, &e.ID, &kind, &e.Account, &e.Amount, &e.Currency, &e.Actor, &e.Reason, &e.BalanceAfter, &created)
	e.Kind, e.CreatedAt = EntryKind(kind), time.Unix(0, created).UTC()
	return e, err
}

// entryPage reads a ListEntries query's rows (at most pageSize+1, newest first) into a page and
// the token of the next one ("" after the last page).
func entryPage(rows entryRows, pageSize int) ([]Entry, string, error) {
	var out []Entry
	for rows.Next() {
		e, err := scanEntry(rows)
		if err != nil {
			return nil, "", fmt.Errorf("list entries: %w", err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("list entries: %w", err)
	}
	next := ""
	if len(out) > pageSize {
		out = out[:pageSize]
		next = entryPageToken(out[pageSize-1])
	}
	return out, next, nil
}

// parseInitial reads the initial total stored in the meta table.
func parseInitial(value string) (int64, error) {
	n, err := strconv.ParseInt(value, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("meta initial %q: %w", value, err)
	}
	return n, nil
}
