// Package money converts between decimal amounts and the integer minor units that paygate's
// ledgers store.
//
// An amount is an int64 count of a currency's minor units (cents for USD, yen for JPY, fils for
// BHD), paired with an ISO 4217 code. The number of minor-unit digits is the currency's ISO 4217
// exponent, looked up in a small table of common currencies; an unknown code is an error rather
// than a guess. Conversions are exact: they work on the decimal digits of the text and never pass
// through float64, and a value that does not fit exactly (a fraction of a cent, more than int64
// can hold) is refused, never rounded.
package money

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Errors returned by this package, wrapped with the offending value.
var (
	ErrUnknownCurrency = errors.New("money: unknown currency")
	ErrSyntax          = errors.New("money: not a decimal number")
	ErrInexact         = errors.New("money: not a whole number of minor units")
	ErrOverflow        = errors.New("money: amount out of range")
)

// exponents holds the ISO 4217 minor-unit exponent of the currencies paygate knows.
var exponents = map[string]int{
	// Two decimal places.
	"USD": 2, "EUR": 2, "GBP": 2, "INR": 2, "CHF": 2, "CAD": 2, "AUD": 2, "NZD": 2, "CNY": 2,
	"HKD": 2, "SGD": 2, "SEK": 2, "NOK": 2, "DKK": 2, "PLN": 2, "CZK": 2, "ZAR": 2, "BRL": 2,
	"MXN": 2, "AED": 2, "SAR": 2, "TRY": 2, "ILS": 2, "THB": 2, "MYR": 2, "PHP": 2, "IDR": 2,
	// No minor unit.
	"JPY": 0, "KRW": 0, "VND": 0, "CLP": 0, "ISK": 0, "UGX": 0, "XAF": 0, "XOF": 0,
	// Three decimal places.
	"BHD": 3, "KWD": 3, "OMR": 3, "JOD": 3, "TND": 3, "IQD": 3, "LYD": 3,
}

// maxDigits is the number of decimal digits of math.MaxInt64.
const maxDigits = 19

// Exponent returns the number of minor-unit digits of currency (2 for "USD", 0 for "JPY", 3 for
// "BHD"). Codes are upper case, as ISO 4217 writes them.
func Exponent(currency string) (int, error) {
	e, ok := exponents[currency]
	if !ok {
		return 0, fmt.Errorf("%w %q", ErrUnknownCurrency, currency)
	}
	return e, nil
}

// Known reports whether currency is in the table of currencies paygate knows.
func Known(currency string) bool {
	_, ok := exponents[currency]
	return ok
}

// ParseDecimal converts the decimal text s to minor units of currency, exactly.
//
// The accepted form is an optional sign, one or more digits, an optional fraction ('.' and one or
// more digits) and an optional exponent ('e' or 'E', an optional sign, one to four digits): the
// number grammar of JSON, plus a leading '+' and leading zeros. So "1000", "1000.0", "250.50",
// "-3.5" and "1e3" are accepted, and "1.", ".5", " 1", "1_000", "0x10", "NaN" and "Inf" are not.
// Exponents are accepted because a JSON encoder may write 1000 as 1e3.
//
// The result is refused with ErrInexact when s has non-zero digits below the currency's minor
// unit ("0.001" USD, "0.5" JPY), with ErrOverflow when it does not fit in an int64, and with
// ErrUnknownCurrency when currency is not known. A negative amount is returned as such: whether
// it is allowed is the caller's business.
func ParseDecimal(s string, currency string) (int64, error) {
	exp, err := Exponent(currency)
	if err != nil {
		return 0, err
	}
	neg, digits, scale, err := scan(s)
	if err != nil {
		return 0, err
	}
	// The value is digits × 10^-scale; in minor units it is digits × 10^(exp-scale).
	digits = strings.TrimLeft(digits, "0")
	if digits == "" {
		return 0, nil
	}
	shift := exp - scale
	for shift < 0 && strings.HasSuffix(digits, "0") {
		digits = digits[:len(digits)-1]
		shift++
	}
	if shift < 0 {
		return 0, fmt.Errorf("%w: %q has more decimal places than %s's %d", ErrInexact, s, currency, exp)
	}
	if len(digits)+shift > maxDigits {
		return 0, fmt.Errorf("%w: %q %s", ErrOverflow, s, currency)
	}
	u, err := strconv.ParseUint(digits+strings.Repeat("0", shift), 10, 64)
	if err != nil || u > math.MaxInt64 {
		return 0, fmt.Errorf("%w: %q %s", ErrOverflow, s, currency)
	}
	if neg {
		return -int64(u), nil
	}
	return int64(u), nil
}

// scan checks the syntax of s and returns its sign, its significant digits (integer and fraction
// digits run together) and the power of ten they are divided by.
func scan(s string) (neg bool, digits string, scale int, err error) {
	bad := func() (bool, string, int, error) { return false, "", 0, fmt.Errorf("%w: %q", ErrSyntax, s) }
	rest := s
	if rest != "" && (rest[0] == '+' || rest[0] == '-') {
		neg = rest[0] == '-'
		rest = rest[1:]
	}
	intPart := leadingDigits(rest)
	if intPart == "" {
		return bad()
	}
	rest = rest[len(intPart):]
	var frac string
	if rest != "" && rest[0] == '.' {
		frac = leadingDigits(rest[1:])
		if frac == "" {
			return bad()
		}
		rest = rest[1+len(frac):]
	}
	e := 0
	if rest != "" && (rest[0] == 'e' || rest[0] == 'E') {
		rest = rest[1:]
		eneg := false
		if rest != "" && (rest[0] == '+' || rest[0] == '-') {
			eneg = rest[0] == '-'
			rest = rest[1:]
		}
		ed := leadingDigits(rest)
		if ed == "" || len(ed) > 4 {
			return bad()
		}
		rest = rest[len(ed):]
		e, _ = strconv.Atoi(ed) // at most four digits: cannot fail
		if eneg {
			e = -e
		}
	}
	if rest != "" {
		return bad()
	}
	return neg, intPart + frac, len(frac) - e, nil
}

func leadingDigits(s string) string {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return s[:i]
}

// FormatDecimal writes amount minor units of currency as a decimal with exactly the currency's
// number of decimal places: FormatDecimal(1050, "USD") is "10.50", FormatDecimal(-5, "BHD") is
// "-0.005". ParseDecimal reads it back to amount. An unknown currency is written in minor units.
func FormatDecimal(amount int64, currency string) string {
	exp := exponents[currency]
	var mag uint64
	if amount < 0 {
		mag = uint64(-(amount + 1)) + 1 // no overflow for math.MinInt64
	} else {
		mag = uint64(amount)
	}
	d := strconv.FormatUint(mag, 10)
	if exp > 0 {
		if len(d) <= exp {
			d = strings.Repeat("0", exp-len(d)+1) + d
		}
		d = d[:len(d)-exp] + "." + d[len(d)-exp:]
	}
	if amount < 0 {
		return "-" + d
	}
	return d
}

// Format writes an amount for people and logs: Format(1050, "USD") is "10.50 USD".
func Format(amount int64, currency string) string {
	return FormatDecimal(amount, currency) + " " + currency
}

// CheckedAdd returns a+b and true, or 0 and false when the sum overflows int64.
func CheckedAdd(a, b int64) (int64, bool) {
	s := a + b
	if (b > 0 && s < a) || (b < 0 && s > a) {
		return 0, false
	}
	return s, true
}

// CheckedSub returns a-b and true, or 0 and false when the difference overflows int64.
func CheckedSub(a, b int64) (int64, bool) {
	d := a - b
	if (b > 0 && d > a) || (b < 0 && d < a) {
		return 0, false
	}
	return d, true
}
