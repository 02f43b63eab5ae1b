package bank

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/paygate/paygate/internal/account"
	"github.com/paygate/paygate/internal/money"
)

// ErrInvalidAccounts is wrapped by every error of ParseAccounts.
var ErrInvalidAccounts = errors.New("bank: invalid accounts file")

// maxAccountIDLen is the longest account id the API accepts.
const maxAccountIDLen = 64

// checkAccountID reports why id cannot be an account of bank bankName, or nil.
func checkAccountID(id, bankName string) error {
	if id == "" {
		return errors.New("empty account id")
	}
	if len(id) > maxAccountIDLen {
		return fmt.Errorf("account id %.16q... is longer than %d bytes", id, maxAccountIDLen)
	}
	owner, number, ok := account.Split(id)
	if !ok {
		return fmt.Errorf("account %q: want an id of the form %s-<number>", id, bankName)
	}
	for _, c := range []byte(number) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return fmt.Errorf("account %q: the part after the last '-' must be letters and digits", id)
		}
	}
	if owner != bankName {
		return fmt.Errorf("account %q belongs to bank %q, not to %q", id, owner, bankName)
	}
	return nil
}

// ReadAccountsFile reads and parses the accounts file at path; see ParseAccounts.
func ReadAccountsFile(path, bankName, currency string) ([]Account, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("bank: read accounts: %w", err)
	}
	accounts, err := ParseAccounts(data, bankName, currency)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return accounts, nil
}

// ParseAccounts parses the opening accounts of bank bankName from a fixtures file. Two shapes are
// accepted, told apart by the presence of a top-level "accounts" array:
//
// The seed format maps account ids to decimal balances in currency, with no holder:
//
//	{"bank1-1234": 1000.0, "bank1-5678": 250.5}
//
// The rich format names holders, and currencies per file or per account (an account without a
// currency takes the file's, a file without one takes currency). A balance is a JSON string or
// number:
//
//	{"currency": "USD", "accounts": [
//	  {"id": "bank1-1001", "holder": "alice", "balance": "1000.00"},
//	  {"id": "bank1-1002", "holder": "carol", "balance": 250.5, "currency": "EUR"}]}
//
// Balances are converted to minor units exactly (money.ParseDecimal), never through float64. The
// file is refused as a whole, with an error naming the account and the reason, when a balance is
// not exactly representable in minor units, is negative or out of range; when an id is empty,
// repeated, malformed or belongs to another bank; when a currency is unknown; and when the JSON
// has any other shape or trailing data. Accounts are returned in file order.
func ParseAccounts(data []byte, bankName, currency string) ([]Account, error) {
	accounts, err := parseAccounts(data, bankName, currency)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidAccounts, err)
	}
	return accounts, nil
}

func parseAccounts(data []byte, bankName, currency string) ([]Account, error) {
	var top map[string]json.RawMessage
	if err := decodeStrict(data, &top); err != nil {
		return nil, err
	}
	if top == nil {
		return nil, errors.New("want a JSON object")
	}
	if raw, ok := top["accounts"]; ok && bytes.HasPrefix(bytes.TrimSpace(raw), []byte("[")) {
		return parseRich(data, bankName, currency)
	}
	return parseSeed(data, bankName, currency)
}

// decodeStrict decodes exactly one JSON value from data, with numbers kept as json.Number.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

// parseSeed reads {"id": number, ...} token by token, so that a repeated id is seen (decoding into
// a map would silently keep the last one) and accounts keep the file's order.
func parseSeed(data []byte, bankName, currency string) ([]Account, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, errors.New("want a JSON object")
	}
	b := newAccountsBuilder(bankName)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("decode: %w", err)
		}
		id, _ := tok.(string) // object keys are always strings
		tok, err = dec.Token()
		if err != nil {
			return nil, fmt.Errorf("account %q: %w", id, err)
		}
		n, ok := tok.(json.Number)
		if !ok {
			return nil, fmt.Errorf("account %q: balance must be a JSON number, got %v", id, describe(tok))
		}
		if err := b.add(id, "", currency, string(n)); err != nil {
			return nil, err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return nil, fmt.Errorf("decode: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data after the JSON value")
	}
	return b.accounts, nil
}

func describe(tok json.Token) string {
	switch tok.(type) {
	case json.Delim:
		return "an object or array"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", tok)
}

// AccountsFile is the rich format of a bank's accounts file (<bank>_server_accounts.json);
// ParseAccounts reads it.
type AccountsFile struct {
	// Currency is the currency of the accounts that name none.
	Currency string           `json:"currency,omitempty"`
	Accounts []AccountFixture `json:"accounts"`
}

// AccountFixture is one account of an AccountsFile.
type AccountFixture struct {
	ID     string `json:"id"`
	Holder string `json:"holder,omitempty"`
	// Balance is a decimal amount in the account's currency, as a JSON string ("1000.00") or
	// number (1000.0).
	Balance  json.RawMessage `json:"balance"`
	Currency string          `json:"currency,omitempty"`
}

func parseRich(data []byte, bankName, currency string) ([]Account, error) {
	var f AccountsFile
	if err := decodeStrict(data, &f); err != nil {
		return nil, err
	}
	if f.Currency != "" {
		currency = f.Currency
	}
	b := newAccountsBuilder(bankName)
	for i, a := range f.Accounts {
		name := a.ID
		if name == "" {
			name = fmt.Sprintf("#%d", i+1)
		}
		var balance string
		raw := bytes.TrimSpace(a.Balance)
		switch {
		case len(raw) == 0 || bytes.Equal(raw, []byte("null")):
			return nil, fmt.Errorf("account %q: no balance", name)
		case raw[0] == '"':
			if err := json.Unmarshal(raw, &balance); err != nil {
				return nil, fmt.Errorf("account %q: balance: %w", name, err)
			}
		case raw[0] == '-' || ('0' <= raw[0] && raw[0] <= '9'):
			balance = string(raw) // a JSON number literal, checked by the decoder already
		default:
			return nil, fmt.Errorf("account %q: balance must be a string or a number, got %s", name, raw)
		}
		c := a.Currency
		if c == "" {
			c = currency
		}
		if err := b.add(a.ID, a.Holder, c, balance); err != nil {
			return nil, err
		}
	}
	return b.accounts, nil
}

type accountsBuilder struct {
	bank     string
	seen     map[string]bool
	accounts []Account
}

func newAccountsBuilder(bankName string) *accountsBuilder {
	return &accountsBuilder{bank: bankName, seen: make(map[string]bool)}
}

func (b *accountsBuilder) add(id, holder, currency, balance string) error {
	if err := checkAccountID(id, b.bank); err != nil {
		return err
	}
	if b.seen[id] {
		return fmt.Errorf("account %q appears more than once", id)
	}
	if !money.Known(currency) {
		return fmt.Errorf("account %q: unknown currency %q", id, currency)
	}
	amount, err := money.ParseDecimal(balance, currency)
	if err != nil {
		return fmt.Errorf("account %q: balance %s: %w", id, balance, err)
	}
	if amount < 0 {
		return fmt.Errorf("account %q: negative balance %s", id, balance)
	}
	b.seen[id] = true
	b.accounts = append(b.accounts, Account{ID: id, Holder: holder, Currency: currency, Balance: amount})
	return nil
}
