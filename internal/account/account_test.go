package account

import "testing"

func TestSplit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		id, bank, number string
		ok               bool
	}{
		{"bank1-1001", "bank1", "1001", true},
		{"bank-a-7", "bank-a", "7", true},
		{"bank1", "", "", false},
		{"-1", "", "", false},
		{"bank1-", "", "", false},
		{"", "", "", false},
	}
	for _, tt := range tests {
		b, n, ok := Split(tt.id)
		if b != tt.bank || n != tt.number || ok != tt.ok {
			t.Errorf("Split(%q) = %q, %q, %v; want %q, %q, %v", tt.id, b, n, ok, tt.bank, tt.number, tt.ok)
		}
		if got := Bank(tt.id); got != tt.bank {
			t.Errorf("Bank(%q) = %q, want %q", tt.id, got, tt.bank)
		}
	}
}
