package webhook

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
)

// SecretPrefix begins every endpoint secret, so that a secret found in a log or a repository is
// recognized as one.
const SecretPrefix = "whsec_"

// secretBytes is the entropy of a secret: 256 bits, as long as SHA-256's output; a longer key
// adds nothing to HMAC-SHA256's strength.
const secretBytes = 32

// NewSecret returns a new endpoint signing secret: SecretPrefix and 32 random bytes in
// unpadded base64url (43 characters). The whole string, prefix included, is the HMAC key.
func NewSecret() (string, error) {
	b := make([]byte, secretBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("webhook: new secret: %w", err)
	}
	return SecretPrefix + base64.RawURLEncoding.EncodeToString(b), nil
}
