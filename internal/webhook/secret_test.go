package webhook

import (
	"encoding/base64"
	"strings"
	"testing"
)

func TestNewSecret(t *testing.T) {
	t.Parallel()
	seen := make(map[string]bool)
	for range 100 {
		s, err := NewSecret()
		if err != nil {
			t.Fatal(err)
		}
		rest, ok := strings.CutPrefix(s, SecretPrefix)
		if !ok {
			t.Fatalf("NewSecret = %q, want the prefix %q", s, SecretPrefix)
		}
		b, err := base64.RawURLEncoding.Strict().DecodeString(rest)
		if err != nil || len(b) != 32 {
			t.Fatalf("NewSecret = %q: not 32 bytes of unpadded base64url (%d bytes, %v)", s, len(b), err)
		}
		if seen[s] {
			t.Fatalf("NewSecret returned %q twice", s)
		}
		seen[s] = true
	}
}
