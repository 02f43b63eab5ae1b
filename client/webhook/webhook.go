package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// SignatureHeader is the HTTP header that carries an event's signature.
const SignatureHeader = "Paygate-Signature"

// DefaultTolerance is how far an event's timestamp may be from the receiver's clock, in either
// direction, when Verify is given a tolerance of 0.
const DefaultTolerance = 5 * time.Minute

// DefaultMaxBody is the body size ReadVerified reads when given a limit of 0 or less. paygate's
// events are a few KiB; a MiB leaves room and still bounds what a forged request costs.
const DefaultMaxBody = 1 << 20

// maxHeaderLen bounds the signature header Verify parses. A header of a handful of signatures
// is about 200 bytes; anything much longer was not made by paygate.
const maxHeaderLen = 8 << 10

// Errors of Verify and ReadVerified, for errors.Is. The errors returned wrap one of them with
// details; none names the secret or repeats the header.
var (
	// ErrNoSignature: the header is missing or malformed, or it has no v1 signature.
	ErrNoSignature = errors.New("webhook: no valid signature header")
	// ErrSignature: no v1 signature of the header matches the body and the secret.
	ErrSignature = errors.New("webhook: signature does not match")
	// ErrTimestamp: the signature matches, but its timestamp is outside the tolerance (an old
	// event replayed, or a clock far off).
	ErrTimestamp = errors.New("webhook: timestamp outside the tolerance")
	// ErrBodyTooLarge: ReadVerified's request body is larger than its limit.
	ErrBodyTooLarge = errors.New("webhook: body too large")
)

// Sign returns the SignatureHeader value for body sent at t, signed with secret:
// "t=<unix seconds>,v1=<hex HMAC-SHA256 of "<unix seconds>.<body>">". The HMAC key is the
// whole secret string, "whsec_" prefix included.
func Sign(secret string, t time.Time, body []byte) string {
	return SignMulti([]string{secret}, t, body)
}

// SignMulti is Sign with one v1 signature per secret, in order: paygate signs with the old and
// the new secret while a rotated secret's grace period lasts, and the receiver accepts either.
func SignMulti(secrets []string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	var b strings.Builder
	b.Grow(len("t=") + len(ts) + len(secrets)*(len(",v1=")+sha256.Size*2))
	b.WriteString("t=")
	b.WriteString(ts)
	for _, s := range secrets {
		b.WriteString(",v1=")
		b.WriteString(hex.EncodeToString(mac(s, ts, body)))
	}
	return b.String()
}

// mac is the HMAC-SHA256 with key secret of "<ts>.<body>".
func mac(secret, ts string, body []byte) []byte {
	h := hmac.New(sha256.New, []byte(secret))
	io.WriteString(h, ts)
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}

// Verify checks that header, the SignatureHeader value of a request, signs body with secret and
// that its timestamp is within tolerance of the current time. A tolerance of 0 means
// DefaultTolerance; a negative tolerance turns the timestamp check off (for replaying stored
// events; it also gives up the protection against replays).
//
// The header's entries are comma-separated key=value pairs in any order: one t (the unix time
// in seconds, in decimal without leading zeros) and one or more v1 (hex HMAC-SHA256); entries of
// other schemes are ignored. Any one v1 matching is enough, which is how a rotated secret keeps
// working during its grace period. The comparison takes constant time.
//
// The error wraps ErrNoSignature, ErrSignature or ErrTimestamp. The signature is checked before
// the timestamp, so ErrTimestamp means that the event is authentic but old (a replay, or a
// clock off): answer it, like ErrSignature, with 400, and do not process the event. An empty
// secret matches nothing (an unset configuration variable must not accept forgeries).
func Verify(secret, header string, body []byte, tolerance time.Duration) error {
	return VerifyAt(secret, header, body, tolerance, time.Now())
}

// VerifyAt is Verify with now as the current time.
func VerifyAt(secret, header string, body []byte, tolerance time.Duration, now time.Time) error {
	h, err := parseHeader(header)
	if err != nil {
		return err
	}
	if secret == "" {
		return fmt.Errorf("%w: the secret is empty", ErrSignature)
	}
	want := mac(secret, h.ts, body)
	match := false
	for _, sig := range h.v1 {
		// Every v1 is compared, also after a match, so that the time taken does not say which.
		if hmac.Equal(sig, want) {
			match = true
		}
	}
	if !match {
		return fmt.Errorf("%w: none of the header's %d v1 signatures matches the body", ErrSignature, len(h.v1))
	}
	if tolerance == 0 {
		tolerance = DefaultTolerance
	}
	if tolerance > 0 {
		at := time.Unix(h.unix, 0)
		if age := now.Sub(at); age > tolerance {
			return fmt.Errorf("%w: signed %s ago, more than %s", ErrTimestamp, age.Truncate(time.Second), tolerance)
		}
		if ahead := at.Sub(now); ahead > tolerance {
			return fmt.Errorf("%w: signed %s in the future, more than %s", ErrTimestamp, ahead.Truncate(time.Second), tolerance)
		}
	}
	return nil
}

// header is a parsed SignatureHeader.
type header struct {
	ts   string   // the t entry as sent, which is what was signed
	unix int64    // ts parsed
	v1   [][]byte // the decoded v1 signatures
}

// parseHeader parses a SignatureHeader value. Errors wrap ErrNoSignature.
func parseHeader(s string) (header, error) {
	var h header
	if strings.TrimSpace(s) == "" {
		return h, fmt.Errorf("%w: the %s header is missing", ErrNoSignature, SignatureHeader)
	}
	if len(s) > maxHeaderLen {
		return h, fmt.Errorf("%w: the header is longer than %d bytes", ErrNoSignature, maxHeaderLen)
	}
	haveT := false
	for i, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		key, value, ok := strings.Cut(item, "=")
		if !ok {
			return h, fmt.Errorf("%w: entry %d is not key=value", ErrNoSignature, i+1)
		}
		switch key {
		case "t":
			if haveT {
				return h, fmt.Errorf("%w: more than one timestamp (t)", ErrNoSignature)
			}
			unix, ok := parseUnix(value)
			if !ok {
				return h, fmt.Errorf("%w: the timestamp (t) is not a unix time in seconds", ErrNoSignature)
			}
			h.ts, h.unix, haveT = value, unix, true
		case "v1":
			sig, err := hex.DecodeString(value)
			if err != nil || len(sig) != sha256.Size {
				return h, fmt.Errorf("%w: entry %d (v1) is not %d hex digits", ErrNoSignature, i+1, sha256.Size*2)
			}
			h.v1 = append(h.v1, sig)
		default:
			// Another scheme (a future v2, or a test's v0): not ours to judge.
		}
	}
	if !haveT {
		return h, fmt.Errorf("%w: no timestamp (t)", ErrNoSignature)
	}
	if len(h.v1) == 0 {
		return h, fmt.Errorf("%w: no v1 signature", ErrNoSignature)
	}
	return h, nil
}

// parseUnix parses a unix time as Sign writes it: decimal digits, no sign, no leading zeros.
// Only that one spelling is accepted, so that one signed message has one header.
func parseUnix(s string) (int64, bool) {
	if s == "" || len(s) > 19 || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// ReadVerified reads the body of r, at most maxBody bytes (0 or less: DefaultMaxBody), and
// verifies it with Verify and DefaultTolerance against r's SignatureHeader. It returns the body
// only when it is authentic; a larger body is an error wrapping ErrBodyTooLarge, and is not
// read further. Errors reading the body are returned as they are.
func ReadVerified(r *http.Request, secret string, maxBody int64) ([]byte, error) {
	if maxBody <= 0 {
		maxBody = DefaultMaxBody
	}
	header := r.Header.Get(SignatureHeader)
	if _, err := parseHeader(header); err != nil {
		// Checked first, so that a request without a signature costs no body read.
		return nil, err
	}
	var body []byte
	if r.Body != nil { // a server's request always has one; a client's may not
		var err error
		if body, err = io.ReadAll(io.LimitReader(r.Body, maxBody+1)); err != nil {
			return nil, fmt.Errorf("webhook: read the body: %w", err)
		}
	}
	if int64(len(body)) > maxBody {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrBodyTooLarge, maxBody)
	}
	if err := Verify(secret, header, body, DefaultTolerance); err != nil {
		return nil, err
	}
	return body, nil
}
