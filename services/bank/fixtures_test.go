package bank

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseAccounts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		bank    string
		data    string
		want    []Account
		wantErr string // substring of the error; "" for success
	}{
		{
			name: "seed format",
			bank: "bank1",
			data: `{"bank1-1234": 1000.0, "bank1-5678": 250.5, "bank1-9": 0, "bank1-10": 1e3}`,
			want: []Account{
				{ID: "bank1-1234", Currency: "USD", Balance: 100000},
				{ID: "bank1-5678", Currency: "USD", Balance: 25050},
				{ID: "bank1-9", Currency: "USD", Balance: 0},
				{ID: "bank1-10", Currency: "USD", Balance: 100000},
			},
		},
		{
			name: "rich format",
			bank: "bank1",
			data: `{"currency": "USD", "accounts": [
				{"id": "bank1-1001", "holder": "alice", "balance": "1000.00"},
				{"id": "bank1-1002", "holder": "carol", "balance": 250.50},
				{"id": "bank1-1003", "holder": "yuki", "balance": "1500", "currency": "JPY"}]}`,
			want: []Account{
				{ID: "bank1-1001", Holder: "alice", Currency: "USD", Balance: 100000},
				{ID: "bank1-1002", Holder: "carol", Currency: "USD", Balance: 25050},
				{ID: "bank1-1003", Holder: "yuki", Currency: "JPY", Balance: 1500},
			},
		},
		{
			name: "rich format without a file currency takes the configured one",
			bank: "bank-a",
			data: `{"accounts": [{"id": "bank-a-7", "holder": "bob", "balance": "0.07"}]}`,
			want: []Account{{ID: "bank-a-7", Holder: "bob", Currency: "USD", Balance: 7}},
		},
		{name: "inexact seed", bank: "bank1", data: `{"bank1-1": 0.001}`, wantErr: `account "bank1-1": balance 0.001`},
		{name: "inexact rich", bank: "bank1", data: `{"accounts": [{"id": "bank1-1", "balance": "10.505"}]}`, wantErr: "not a whole number of minor units"},
		{name: "inexact JPY", bank: "bank1", data: `{"accounts": [{"id": "bank1-1", "balance": 1.5, "currency": "JPY"}]}`, wantErr: `account "bank1-1"`},
		{name: "overflow", bank: "bank1", data: `{"bank1-1": 1e18}`, wantErr: "out of range"},
		{name: "negative", bank: "bank1", data: `{"bank1-1": -5}`, wantErr: `account "bank1-1": negative balance`},
		{name: "foreign account", bank: "bank1", data: `{"bank1-1": 1, "bank2-1": 1}`, wantErr: `account "bank2-1" belongs to bank "bank2"`},
		{name: "prefix is not ownership", bank: "bank1", data: `{"bank10-1": 1}`, wantErr: `belongs to bank "bank10"`},
		{name: "duplicate seed", bank: "bank1", data: `{"bank1-1": 1, "bank1-1": 2}`, wantErr: `account "bank1-1" appears more than once`},
		{name: "duplicate rich", bank: "bank1", data: `{"accounts": [{"id": "bank1-1", "balance": 1}, {"id": "bank1-1", "balance": 2}]}`, wantErr: "appears more than once"},
		{name: "empty id", bank: "bank1", data: `{"": 1}`, wantErr: "empty account id"},
		{name: "empty id rich", bank: "bank1", data: `{"accounts": [{"holder": "x", "balance": 1}]}`, wantErr: "empty account id"},
		{name: "no number", bank: "bank1", data: `{"bank1-": 1}`, wantErr: "want an id of the form"},
		{name: "unknown currency", bank: "bank1", data: `{"currency": "XYZ", "accounts": [{"id": "bank1-1", "balance": 1}]}`, wantErr: `unknown currency "XYZ"`},
		{name: "string in seed", bank: "bank1", data: `{"bank1-1": "10"}`, wantErr: "must be a JSON number"},
		{name: "no balance", bank: "bank1", data: `{"accounts": [{"id": "bank1-1"}]}`, wantErr: "no balance"},
		{name: "bool balance", bank: "bank1", data: `{"accounts": [{"id": "bank1-1", "balance": true}]}`, wantErr: "must be a string or a number"},
		{name: "unknown field", bank: "bank1", data: `{"accounts": [{"id": "bank1-1", "balance": 1, "limit": 5}]}`, wantErr: "unknown field"},
		{name: "trailing data", bank: "bank1", data: `{"bank1-1": 1} {}`, wantErr: "trailing data"},
		{name: "array", bank: "bank1", data: `[1]`, wantErr: "decode"},
		{name: "null", bank: "bank1", data: `null`, wantErr: "want a JSON object"},
		{name: "empty object", bank: "bank1", data: `{}`, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseAccounts([]byte(tt.data), tt.bank, "USD")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrInvalidAccounts) {
					t.Fatalf("ParseAccounts() error = %v; want ErrInvalidAccounts containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseAccounts() error = %v", err)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("ParseAccounts() = %+v; want %+v", got, tt.want)
			}
		})
	}
}

// The fixtures shipped with the project must parse, each for its own bank only.
func TestParseShippedFixtures(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"bank1", "bank2", "bank3"} {
		path := filepath.Join("..", "..", "fixtures", name+"_server_accounts.json")
		accounts, err := ReadAccountsFile(path, name, "USD")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(accounts) == 0 {
			t.Fatalf("%s: no accounts", name)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseAccounts(data, "other", "USD"); err == nil {
			t.Fatalf("%s's accounts accepted for bank other", name)
		}
	}
}

func FuzzParseAccounts(f *testing.F) {
	for _, s := range []string{
		`{"bank1-1234": 1000.0, "bank1-5678": 250.5}`,
		`{"currency": "USD", "accounts": [{"id": "bank1-1001", "holder": "alice", "balance": "1000.00"}]}`,
		`{"accounts": [{"id": "bank1-1", "balance": 1.5, "currency": "JPY"}]}`,
		`{"bank1-1": 1e3, "bank1-2": 0.001}`,
		`{"bank1-1": 1, "bank1-1": 2}`,
		`{"accounts": 5}`,
		`[]`,
		`{"bank1-1": -0}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		accounts, err := ParseAccounts(data, "bank1", "USD")
		if err != nil {
			if accounts != nil {
				t.Fatal("accounts returned with an error")
			}
			return
		}
		seen := make(map[string]bool)
		for _, a := range accounts {
			if err := checkAccountID(a.ID, "bank1"); err != nil {
				t.Fatalf("accepted account id: %v", err)
			}
			if seen[a.ID] {
				t.Fatalf("accepted duplicate %q", a.ID)
			}
			seen[a.ID] = true
			if a.Balance < 0 || a.Held != 0 || a.PendingCredit != 0 || a.Closed {
				t.Fatalf("accepted %+v", a)
			}
		}
	})
}
