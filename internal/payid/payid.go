// Package payid gives payment ids their one canonical spelling.
//
// A payment_id is a UUID or a ULID chosen by the client. Both are case-insensitive: a UUID
// written in upper case and the same UUID in lower case name one payment, and so do a ULID and
// its lower-case spelling. paygate stores and compares ids only in their canonical form (a UUID
// in lower-case hyphenated form, a ULID in upper-case Crockford base32), applied before any
// lookup, so that two spellings can never be two payments.
package payid

// Canonical returns the canonical spelling of id and true, or "" and false when id is neither
// a UUID (8-4-4-4-12 hexadecimal digits) nor a ULID (26 Crockford base32 digits).
func Canonical(id string) (string, bool) {
	switch len(id) {
	case 36:
		b := []byte(id)
		for i, c := range b {
			switch {
			case i == 8 || i == 13 || i == 18 || i == 23:
				if c != '-' {
					return "", false
				}
			case c >= '0' && c <= '9', c >= 'a' && c <= 'f':
			case c >= 'A' && c <= 'F':
				b[i] = c + ('a' - 'A')
			default:
				return "", false
			}
		}
		return string(b), true
	case 26:
		b := []byte(id)
		for i, c := range b {
			if c >= 'a' && c <= 'z' {
				c -= 'a' - 'A'
				b[i] = c
			}
			switch {
			case c >= '0' && c <= '9':
			case c >= 'A' && c <= 'Z' && c != 'I' && c != 'L' && c != 'O' && c != 'U':
			default:
				return "", false
			}
		}
		return string(b), true
	}
	return "", false
}

// Normalize returns the canonical spelling of id, or id unchanged when it is not a payment id
// (so that a lookup of a malformed id finds nothing rather than failing differently).
func Normalize(id string) string {
	if c, ok := Canonical(id); ok {
		return c
	}
	return id
}
