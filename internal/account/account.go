// Package account holds the one rule that routes an account to its bank: an account id is
// "<bank>-<number>", and the bank's name is everything before the last '-' (so a bank may be
// named "bank-a"). The banks check their fixtures and requests with it; the gateway routes
// payments with it.
package account

import "strings"

// Split splits an account id at its last '-'. ok is false when id has no '-', or an empty bank
// name or number.
func Split(id string) (bank, number string, ok bool) {
	i := strings.LastIndexByte(id, '-')
	if i <= 0 || i == len(id)-1 {
		return "", "", false
	}
	return id[:i], id[i+1:], true
}

// Bank returns the bank of account id, or "" when id is not of the form "<bank>-<number>".
func Bank(id string) string {
	b, _, _ := Split(id)
	return b
}
