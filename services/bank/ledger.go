package bank

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/paygate/paygate/internal/crashpoint"
	"github.com/paygate/paygate/internal/money"
)

// The ledger's model (accounts, legs, transactions, votes) and the rules both of its stores
// share: Ledger (SQLite, ledger_sqlite.go) and PGLedger (PostgreSQL, ledger_pg.go).

// Errors of the ledger, wrapped with the action and the transaction or account concerned.
var (
	ErrUnknownTransaction = errors.New("bank: unknown transaction")
	ErrAlreadyAborted     = errors.New("bank: transaction already aborted")
	ErrAlreadyCommitted   = errors.New("bank: transaction already committed")
	ErrUnknownAccount     = errors.New("bank: unknown account")
	ErrInvalidArgument    = errors.New("bank: invalid argument")
	ErrInvalidPageToken   = errors.New("bank: invalid page token")
	ErrLedgerNotEmpty     = errors.New("bank: ledger already has accounts")
	ErrWrongBank          = errors.New("bank: ledger belongs to another bank")
)

// MaxLegs is the largest number of legs of one transaction at one bank: a payment within the
// bank has a debit and a credit leg, a payment between banks one leg at each.
const MaxLegs = 2

// Account is an account and its money, in minor units of Currency.
type Account struct {
	ID       string
	Holder   string
	Currency string
	Closed   bool
	// Balance is the ledger balance.
	Balance int64
	// Held is the sum of the debits of prepared transactions.
	Held int64
	// PendingCredit is the sum of the credits of prepared transactions.
	PendingCredit int64
}

// Available is what the account can pay now: Balance − Held.
func (a Account) Available() int64 { return a.Balance - a.Held }

// Direction says whether a leg takes money from its account or brings money to it.
type Direction string

// The directions of a leg, as stored.
const (
	Debit  Direction = "DEBIT"
	Credit Direction = "CREDIT"
)

// Leg is one account's part in a transaction.
type Leg struct {
	Account   string
	Direction Direction
	Amount    int64 // minor units, > 0
	Currency  string
}

// State is the state of a transaction at this bank.
type State string

// The states of a transaction, as stored.
const (
	Prepared  State = "PREPARED"
	Committed State = "COMMITTED"
	Aborted   State = "ABORTED"
)

// Reason says why the bank voted NO.
type Reason string

// The reasons of a NO vote, as stored.
const (
	ReasonNone              Reason = ""
	ReasonInsufficientFunds Reason = "INSUFFICIENT_FUNDS"
	ReasonUnknownAccount    Reason = "UNKNOWN_ACCOUNT"
	ReasonCurrencyMismatch  Reason = "CURRENCY_MISMATCH"
	ReasonAccountClosed     Reason = "ACCOUNT_CLOSED"
	ReasonDeadlineExceeded  Reason = "DEADLINE_EXCEEDED"
	ReasonAlreadyAborted    Reason = "ALREADY_ABORTED"
	ReasonConflict          Reason = "CONFLICT"
	ReasonBalanceOverflow   Reason = "BALANCE_OVERFLOW"
)

// Vote is the bank's answer to a prepare. Reason and Message are set when Yes is false.
type Vote struct {
	Yes     bool
	Reason  Reason
	Message string
}

// Transaction is the bank's record of a transaction. A tombstone (aborted before any prepare)
// has no legs and a zero Deadline.
type Transaction struct {
	ID       string
	State    State
	Legs     []Leg
	Deadline time.Time
	// Reason and Message are set when the bank voted NO.
	Reason    Reason
	Message   string
	CreatedAt time.Time
	UpdatedAt time.Time
	// DecisionProof is what the coordinator sent with the prepare, to present back in
	// GetDecision; empty for a tombstone and for transactions prepared before proofs existed.
	DecisionProof []byte
}

// checkLegs validates a prepare's arguments; the API's validation rules say the same.
func checkLegs(txnID string, legs []Leg, deadline time.Time) error {
	if txnID == "" || len(txnID) > 64 {
		return fmt.Errorf("%w: transaction id must be 1 to 64 bytes", ErrInvalidArgument)
	}
	if len(legs) == 0 || len(legs) > MaxLegs {
		return fmt.Errorf("%w: want 1 to %d legs, got %d", ErrInvalidArgument, MaxLegs, len(legs))
	}
	if deadline.IsZero() {
		return fmt.Errorf("%w: no deadline", ErrInvalidArgument)
	}
	for i, g := range legs {
		switch {
		case g.Account == "" || len(g.Account) > maxAccountIDLen:
			return fmt.Errorf("%w: leg %d: account id must be 1 to %d bytes", ErrInvalidArgument, i+1, maxAccountIDLen)
		case g.Direction != Debit && g.Direction != Credit:
			return fmt.Errorf("%w: leg %d: unknown direction %q", ErrInvalidArgument, i+1, g.Direction)
		case g.Amount <= 0:
			return fmt.Errorf("%w: leg %d: amount must be positive, got %d", ErrInvalidArgument, i+1, g.Amount)
		case g.Currency == "":
			return fmt.Errorf("%w: leg %d: no currency", ErrInvalidArgument, i+1)
		case !utf8.ValidString(g.Account) || !utf8.ValidString(g.Currency):
			// The legs are stored as JSON text, which cannot hold other bytes unchanged.
			return fmt.Errorf("%w: leg %d: account id and currency must be UTF-8", ErrInvalidArgument, i+1)
		}
	}
	return nil
}

// checkLeg applies leg g to a in memory, or returns the NO vote it earns.
func checkLeg(a *Account, g Leg) Vote {
	switch {
	case a.Closed:
		return Vote{Reason: ReasonAccountClosed, Message: fmt.Sprintf("account %s is closed", a.ID)}
	case a.Currency != g.Currency:
		return Vote{Reason: ReasonCurrencyMismatch, Message: fmt.Sprintf(
			"account %s holds %s, the leg is in %s", a.ID, a.Currency, g.Currency)}
	case g.Direction == Debit:
		if a.Available() < g.Amount {
			return Vote{Reason: ReasonInsufficientFunds, Message: fmt.Sprintf(
				"account %s has %s available, the debit is %s", a.ID, money.Format(a.Available(), a.Currency), money.Format(g.Amount, g.Currency))}
		}
		a.Held += g.Amount
	default:
		total, ok := money.CheckedAdd(a.Balance, a.PendingCredit)
		if ok {
			_, ok = money.CheckedAdd(total, g.Amount)
		}
		if !ok {
			return Vote{Reason: ReasonBalanceOverflow, Message: fmt.Sprintf(
				"a credit of %s would take account %s beyond the largest representable balance", money.Format(g.Amount, g.Currency), a.ID)}
		}
		a.PendingCredit += g.Amount
	}
	return Vote{}
}

// replayVote is the answer to a prepare of an already known transaction.
func replayVote(t Transaction, legs []Leg) Vote {
	if len(t.Legs) == 0 {
		return Vote{Reason: ReasonAlreadyAborted, Message: fmt.Sprintf("transaction %s was aborted before it was prepared", t.ID)}
	}
	if !sameLegs(t.Legs, legs) {
		return Vote{Reason: ReasonConflict, Message: fmt.Sprintf("transaction %s is known here with different legs", t.ID)}
	}
	switch {
	case t.State != Aborted:
		return Vote{Yes: true}
	case t.Reason != ReasonNone:
		return Vote{Reason: t.Reason, Message: t.Message}
	default:
		return Vote{Reason: ReasonAlreadyAborted, Message: fmt.Sprintf("transaction %s was aborted", t.ID)}
	}
}

// sameLegs compares two sets of legs regardless of order.
func sameLegs(a, b []Leg) bool {
	if len(a) != len(b) {
		return false
	}
	cmp := func(x, y Leg) int {
		return strings.Compare(fmt.Sprint(x), fmt.Sprint(y))
	}
	a, b = slices.Clone(a), slices.Clone(b)
	slices.SortFunc(a, cmp)
	slices.SortFunc(b, cmp)
	return slices.Equal(a, b)
}

// notCommitted says why a commit of txnID found no PREPARED transaction to apply, given the
// transaction as read (t, err): refused for an unknown or aborted one, nothing for one
// committed already (a repeated commit), an error otherwise.
func notCommitted(txnID string, t Transaction, err error) (refused, _ error) {
	switch {
	case errors.Is(err, ErrUnknownTransaction):
		return err, nil
	case err != nil:
		return nil, err
	case t.State == Committed:
		return nil, nil
	case t.State == Aborted:
		return ErrAlreadyAborted, nil
	}
	return nil, fmt.Errorf("transaction %s is %s and was not committed", txnID, t.State)
}

// checkAbortID validates Abort's argument.
func checkAbortID(txnID string) error {
	if txnID == "" || len(txnID) > 64 {
		return fmt.Errorf("abort: %w: transaction id must be 1 to 64 bytes", ErrInvalidArgument)
	}
	return nil
}

// PrepareItem is one prepare of a batch: the arguments of Prepare.
type PrepareItem struct {
	TxnID    string
	Legs     []Leg
	Deadline time.Time
	// DecisionProof is the coordinator's proof that it sent this transaction to this bank,
	// stored with a new transaction and presented back in GetDecision.
	DecisionProof []byte
}

// prepareRun is the work of prepares (Prepare's one, Batch's several), in three steps: the
// checks (newPrepareRun), the write (apply, inside a transaction) and what follows the write
// (finish).
type prepareRun struct {
	l        *Ledger
	items    []PrepareItem
	now      time.Time
	errs     []error
	votes    []Vote
	recorded []bool
	valid    int
}

func (r *prepareRun) finish() {
	for _, rec := range r.recorded {
		if rec {
			crashpoint.Hit(crashpoint.BankPrepareAfterPersist)
		}
	}
}

// Completion is one completion of a Batch: phase two of transaction TxnID, Outcome Committed
// (as Commit) or Aborted (as Abort).
type Completion struct {
	TxnID   string
	Outcome State
}

// completeRun is the work of completions (Commit's or Abort's one, Batch's several) in the
// three steps of prepareRun.
type completeRun struct {
	items    []Completion
	errs     []error
	refusals []error
	applied  []bool
	valid    int
}

func newCompleteRun(items []Completion) *completeRun {
	r := &completeRun{items: items, errs: make([]error, len(items)),
		refusals: make([]error, len(items)), applied: make([]bool, len(items))}
	for i, c := range items {
		switch c.Outcome {
		case Committed:
		case Aborted:
			r.errs[i] = checkAbortID(c.TxnID)
		default:
			r.errs[i] = fmt.Errorf("complete %s: %w: outcome %q, want %s or %s", c.TxnID, ErrInvalidArgument, c.Outcome, Committed, Aborted)
		}
		if r.errs[i] == nil {
			r.valid++
		}
	}
	return r
}

func (r *completeRun) finish() {
	for i, c := range r.items {
		if r.refusals[i] != nil {
			r.errs[i] = r.refusals[i]
		}
		if !r.applied[i] {
			continue
		}
		if c.Outcome == Aborted {
			crashpoint.Hit(crashpoint.BankAbortAfterPersist)
		} else {
			crashpoint.Hit(crashpoint.BankCommitAfterPersist)
		}
	}
}

// storedLeg is a leg as stored in the JSON array of transactions.legs_json. The keys are those
// of the migration that filled the column from the former legs table.
type storedLeg struct {
	Account   string    `json:"account"`
	Direction Direction `json:"direction"`
	Amount    int64     `json:"amount"`
	Currency  string    `json:"currency"`
}

// encodeLegs is the legs_json of legs, in their order: "[]" for none.
func encodeLegs(legs []Leg) (string, error) {
	stored := make([]storedLeg, len(legs))
	for i, g := range legs {
		stored[i] = storedLeg(g)
	}
	b, err := json.Marshal(stored)
	if err != nil {
		return "", fmt.Errorf("encode legs: %w", err)
	}
	return string(b), nil
}

// decodeLegs reverses encodeLegs; no legs (a tombstone) is nil.
func decodeLegs(legsJSON []byte) ([]Leg, error) {
	var stored []storedLeg
	if err := json.Unmarshal(legsJSON, &stored); err != nil {
		return nil, fmt.Errorf("decode legs: %w", err)
	}
	if len(stored) == 0 {
		return nil, nil
	}
	legs := make([]Leg, len(stored))
	for i, g := range stored {
		legs[i] = Leg(g)
	}
	return legs, nil
}

const accountColumns = `id, holder, currency, closed, balance, held, pending_credit`

func scanAccount(row interface{ Scan(...any) error }) (Account, error) {
	var a Account
	err := row.Scan(&a.ID, &a.Holder, &a.Currency, &a.Closed, &a.Balance, &a.Held, &a.PendingCredit)
	return a, err
}

// decodeAccountPageToken is the account id a ListAccounts page starts after ("" for the
// first page), or ErrInvalidPageToken.
func decodeAccountPageToken(pageToken string) (string, error) {
	if pageToken == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(pageToken)
	if err != nil || len(b) == 0 || hasNUL(string(b)) {
		return "", fmt.Errorf("list accounts: %w", ErrInvalidPageToken)
	}
	return string(b), nil
}

// accountPage reads a ListAccounts query's rows (at most pageSize+1) into a page and the token
// of the next one ("" after the last page). Both stores' rows satisfy accountRows.
func accountPage(rows accountRows, pageSize int) ([]Account, string, error) {
	var out []Account
	for rows.Next() {
		a, err := scanAccount(rows)
		if err != nil {
			return nil, "", fmt.Errorf("list accounts: %w", err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("list accounts: %w", err)
	}
	next := ""
	if len(out) > pageSize {
		out = out[:pageSize]
		next = base64.RawURLEncoding.EncodeToString([]byte(out[pageSize-1].ID))
	}
	return out, next, nil
}

// accountRows is what accountPage needs of a query's rows (database/sql's and pgx's).
type accountRows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}
