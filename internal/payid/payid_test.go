package payid

import "testing"

func TestCanonical(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"01a21834-3b1a-75a8-a2e1-01afa0bcdf0e", "01a21834-3b1a-75a8-a2e1-01afa0bcdf0e", true},
		{"01A21834-3B1A-75A8-A2E1-01AFA0BCDF0E", "01a21834-3b1a-75a8-a2e1-01afa0bcdf0e", true},
		{"01a21834-3B1a-75a8-a2E1-01afa0bcdf0E", "01a21834-3b1a-75a8-a2e1-01afa0bcdf0e", true},
		{"01ARZ3NDEKTSV4RRFFQ69G5FAV", "01ARZ3NDEKTSV4RRFFQ69G5FAV", true},
		{"01arz3ndektsv4rrffq69g5fav", "01ARZ3NDEKTSV4RRFFQ69G5FAV", true},
		{"01ArZ3NdEKTSV4RRFFQ69G5FAv", "01ARZ3NDEKTSV4RRFFQ69G5FAV", true},
		{"", "", false},
		{"01a21834_3b1a-75a8-a2e1-01afa0bcdf0e", "", false}, // not a hyphen
		{"01a21834-3b1a-75a8-a2e1-01afa0bcdf0g", "", false}, // not hexadecimal
		{"01a218343b1a75a8a2e101afa0bcdf0e", "", false},     // no hyphens
		{"01ARZ3NDEKTSV4RRFFQ69G5FAI", "", false},           // I is not Crockford
		{"01ARZ3NDEKTSV4RRFFQ69G5FAu", "", false},           // nor U
		{"01ARZ3NDEKTSV4RRFFQ69G5FA-", "", false},
		{"01ARZ3NDEKTSV4RRFFQ69G5FA", "", false}, // 25 digits
		{"01a21834-3b1a-75a8-a2e1-01afa0bcdf0\u00e9", "", false},
	} {
		got, ok := Canonical(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("Canonical(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func FuzzCanonical(f *testing.F) {
	f.Add("01A21834-3B1A-75A8-A2E1-01AFA0BCDF0E")
	f.Add("01arz3ndektsv4rrffq69g5fav")
	f.Fuzz(func(t *testing.T, id string) {
		c, ok := Canonical(id)
		if !ok {
			return
		}
		// Canonical is idempotent, and two spellings with the same canonical form differ only
		// in case.
		if again, ok2 := Canonical(c); !ok2 || again != c {
			t.Fatalf("Canonical(%q) = %q, but Canonical(%q) = %q, %v", id, c, c, again, ok2)
		}
		if len(c) != len(id) {
			t.Fatalf("Canonical(%q) = %q changes the length", id, c)
		}
	})
}
