package money

import (
	"errors"
	"math"
	"strings"
	"testing"
)

func TestParseDecimal(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in       string
		currency string
		want     int64
		err      error
	}{
		{"1000", "USD", 100000, nil},
		{"1000.0", "USD", 100000, nil},
		{"1000.00", "USD", 100000, nil},
		{"1000.000000", "USD", 100000, nil},
		{"250.50", "USD", 25050, nil},
		{"250.5", "USD", 25050, nil},
		{"0.01", "USD", 1, nil},
		{"0", "USD", 0, nil},
		{"-0", "USD", 0, nil},
		{"0.00", "EUR", 0, nil},
		{"+7.25", "GBP", 725, nil},
		{"-3.5", "INR", -350, nil},
		{"007.10", "USD", 710, nil},
		{"1e3", "USD", 100000, nil},
		{"1E3", "USD", 100000, nil},
		{"1.5e2", "USD", 15000, nil},
		{"12345e-2", "USD", 12345, nil},
		{"125e-3", "USD", 0, ErrInexact},
		{"1000e-1", "JPY", 100, nil},
		{"0e9999", "USD", 0, nil},
		{"1500", "JPY", 1500, nil},
		{"1500.0", "JPY", 1500, nil},
		{"1500.5", "JPY", 0, ErrInexact},
		{"1.234", "BHD", 1234, nil},
		{"0.001", "KWD", 1, nil},
		{"0.0001", "KWD", 0, ErrInexact},
		{"0.001", "USD", 0, ErrInexact},
		{"10.505", "USD", 0, ErrInexact},
		{"92233720368547758.07", "USD", math.MaxInt64, nil},
		{"-92233720368547758.07", "USD", -math.MaxInt64, nil},
		{"92233720368547758.08", "USD", 0, ErrOverflow},
		{"-92233720368547758.08", "USD", 0, ErrOverflow},
		{"9223372036854775807", "JPY", math.MaxInt64, nil},
		{"99999999999999999999", "JPY", 0, ErrOverflow},
		{"1e17", "USD", 0, ErrOverflow},
		{"1e9999", "USD", 0, ErrOverflow},
		{"1e10000", "USD", 0, ErrSyntax},
		{"", "USD", 0, ErrSyntax},
		{"-", "USD", 0, ErrSyntax},
		{".5", "USD", 0, ErrSyntax},
		{"1.", "USD", 0, ErrSyntax},
		{"1.2.3", "USD", 0, ErrSyntax},
		{" 1", "USD", 0, ErrSyntax},
		{"1 ", "USD", 0, ErrSyntax},
		{"1_000", "USD", 0, ErrSyntax},
		{"1,000.00", "USD", 0, ErrSyntax},
		{"0x10", "USD", 0, ErrSyntax},
		{"NaN", "USD", 0, ErrSyntax},
		{"Inf", "USD", 0, ErrSyntax},
		{"-Infinity", "USD", 0, ErrSyntax},
		{"1e", "USD", 0, ErrSyntax},
		{"1e+", "USD", 0, ErrSyntax},
		{"--1", "USD", 0, ErrSyntax},
		{"1/2", "USD", 0, ErrSyntax},
		{"١٢", "USD", 0, ErrSyntax},
		{"10", "XYZ", 0, ErrUnknownCurrency},
		{"10", "usd", 0, ErrUnknownCurrency},
		{"10", "", 0, ErrUnknownCurrency},
	}
	for _, tt := range tests {
		t.Run(tt.currency+"/"+tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParseDecimal(tt.in, tt.currency)
			if !errors.Is(err, tt.err) {
				t.Fatalf("ParseDecimal(%q, %q) error = %v; want %v", tt.in, tt.currency, err, tt.err)
			}
			if got != tt.want {
				t.Fatalf("ParseDecimal(%q, %q) = %d; want %d", tt.in, tt.currency, got, tt.want)
			}
		})
	}
}

func TestFormat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		amount   int64
		currency string
		want     string
	}{
		{1050, "USD", "10.50 USD"},
		{5, "USD", "0.05 USD"},
		{0, "USD", "0.00 USD"},
		{-5, "USD", "-0.05 USD"},
		{-150, "EUR", "-1.50 EUR"},
		{1500, "JPY", "1500 JPY"},
		{1234, "BHD", "1.234 BHD"},
		{7, "KWD", "0.007 KWD"},
		{math.MaxInt64, "USD", "92233720368547758.07 USD"},
		{math.MinInt64, "USD", "-92233720368547758.08 USD"},
		{1050, "XYZ", "1050 XYZ"},
	}
	for _, tt := range tests {
		if got := Format(tt.amount, tt.currency); got != tt.want {
			t.Errorf("Format(%d, %q) = %q; want %q", tt.amount, tt.currency, got, tt.want)
		}
	}
}

func TestChecked(t *testing.T) {
	t.Parallel()
	tests := []struct {
		a, b          int64
		sum, diff     int64
		sumOK, diffOK bool
	}{
		{1, 2, 3, -1, true, true},
		{math.MaxInt64, 1, 0, math.MaxInt64 - 1, false, true},
		{math.MaxInt64, -1, math.MaxInt64 - 1, 0, true, false},
		{math.MinInt64, -1, 0, math.MinInt64 + 1, false, true},
		{math.MinInt64, 1, math.MinInt64 + 1, 0, true, false},
		{0, math.MinInt64, math.MinInt64, 0, true, false},
		{-1, math.MinInt64, 0, math.MaxInt64, false, true},
		{math.MaxInt64, math.MaxInt64, 0, 0, false, true},
	}
	for _, tt := range tests {
		if got, ok := CheckedAdd(tt.a, tt.b); ok != tt.sumOK || (ok && got != tt.sum) {
			t.Errorf("CheckedAdd(%d, %d) = %d, %v; want %d, %v", tt.a, tt.b, got, ok, tt.sum, tt.sumOK)
		}
		if got, ok := CheckedSub(tt.a, tt.b); ok != tt.diffOK || (ok && got != tt.diff) {
			t.Errorf("CheckedSub(%d, %d) = %d, %v; want %d, %v", tt.a, tt.b, got, ok, tt.diff, tt.diffOK)
		}
	}
}

func FuzzParseDecimal(f *testing.F) {
	for _, s := range []string{"1000", "1000.0", "250.50", "0.001", "1e3", "-3.5", "92233720368547758.07", "1e-2", "NaN", ""} {
		for _, c := range []string{"USD", "JPY", "BHD"} {
			f.Add(s, c)
		}
	}
	f.Fuzz(func(t *testing.T, s, currency string) {
		v, err := ParseDecimal(s, currency)
		if err != nil {
			if v != 0 {
				t.Fatalf("ParseDecimal(%q, %q) = %d with error %v; want 0", s, currency, v, err)
			}
			return
		}
		if v == math.MinInt64 {
			t.Fatalf("ParseDecimal(%q, %q) = MinInt64; the range is symmetric", s, currency)
		}
		text := Format(v, currency)
		dec, ok := strings.CutSuffix(text, " "+currency)
		if !ok {
			t.Fatalf("Format(%d, %q) = %q; want the currency as suffix", v, currency, text)
		}
		back, err := ParseDecimal(dec, currency)
		if err != nil || back != v {
			t.Fatalf("round trip %q -> %d -> %q -> %d, %v", s, v, dec, back, err)
		}
	})
}
