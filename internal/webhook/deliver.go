package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/paygate/paygate/client/webhook"
)

// Headers of a delivery, besides webhook.SignatureHeader.
const (
	EventIDHeader   = "Paygate-Event-Id"
	EventTypeHeader = "Paygate-Event-Type"
)

// SnippetBytes is how much of a response body an Attempt keeps, for the delivery log.
const SnippetBytes = 1 << 10

// Request is one delivery attempt of an event to an endpoint.
type Request struct {
	URL       string    // the endpoint's URL
	Body      []byte    // the event, JSON
	Secrets   []string  // the signing secrets: the current one, and a rotated one in its grace period
	EventID   string    // sent as Paygate-Event-Id; the same for every attempt of the event
	EventType string    // sent as Paygate-Event-Type, e.g. "payment.succeeded"
	Now       time.Time // the signature's timestamp; zero is the current time
	UserAgent string    // "" is DefaultUserAgent()
}

// Attempt is the outcome of Deliver.
type Attempt struct {
	// StatusCode is the endpoint's answer; 0 when there was none. With a refused redirect it
	// is the redirect's status.
	StatusCode int
	// Latency is the time from sending the request to having read the response.
	Latency time.Duration
	// Err says why the attempt failed; it is nil exactly when Success is true. Its message is
	// sanitized for the delivery log that the merchant sees ("timeout", "connection refused",
	// "address refused: loopback", "TLS: certificate signed by an unknown authority", "HTTP
	// 500"); the error it wraps has the details, for the operator's logs.
	Err error
	// Success is true for a 2xx answer, and only then.
	Success bool
	// Retryable is false when another attempt cannot do better: an invalid URL, an IP literal
	// the policy refuses, a request that cannot be built, 410 Gone, or success. It is true for
	// every other failure: network errors, timeouts, redirects refused, every other status
	// (4xx included: the merchant may be deploying a fix), and an address refused after DNS
	// resolution (DNS answers change; every connection is checked again).
	Retryable bool
	// Gone is true when the endpoint answered 410 Gone: it says that it no longer exists. The
	// event is not retried; the delivery loop should disable the endpoint and tell the
	// merchant, as for DisableAfterFailures.
	Gone bool
	// Response is the first SnippetBytes of the response body, valid UTF-8, for the delivery
	// log.
	Response string
}

// DeliveryError is the error of a failed Attempt: Error is a message fit for the merchant's
// delivery log, Unwrap the error it describes.
type DeliveryError struct {
	Msg string
	Err error
}

// Error returns the sanitized message.
func (e *DeliveryError) Error() string { return e.Msg }

// Unwrap returns the underlying error.
func (e *DeliveryError) Unwrap() error { return e.Err }

// DefaultUserAgent returns "paygate-webhooks/<version>", with the version of the running
// binary's main module ("dev" for a development build).
var DefaultUserAgent = sync.OnceValue(func() string {
	v := "dev"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v = bi.Main.Version
	}
	return "paygate-webhooks/" + v
})

// Deliver POSTs r.Body to r.URL with c, which must come from NewClient, and reports the
// outcome. The request has Content-Type application/json, the User-Agent, the signature
// (webhook.SignMulti of the body with every secret, at r.Now), Paygate-Event-Id and
// Paygate-Event-Type. Deliver reads at most the client's MaxResponseBytes of the answer, keeps
// its first SnippetBytes, and closes the connection rather than read more. ctx bounds the
// attempt besides the client's Timeout.
//
// Only the status decides success: a 2xx whose body then fails to arrive is a success, as the
// endpoint has taken the event.
func Deliver(ctx context.Context, c *http.Client, r Request) Attempt {
	g, err := guardOf(c)
	if err != nil {
		return Attempt{Err: &DeliveryError{Msg: "internal error: unguarded HTTP client", Err: err}}
	}
	req, err := newRequest(ctx, g, r)
	if err != nil {
		return Attempt{Err: &DeliveryError{Msg: err.Error(), Err: err}}
	}
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		a := Attempt{Latency: time.Since(start), Err: &DeliveryError{Msg: describe(err), Err: err}, Retryable: retryable(err)}
		if resp != nil { // a redirect that CheckRedirect refused; its body is closed
			a.StatusCode = resp.StatusCode
		}
		return a
	}
	snippet := readBounded(resp.Body, g.maxResponse)
	resp.Body.Close()
	a := Attempt{StatusCode: resp.StatusCode, Latency: time.Since(start), Response: snippet}
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode <= 299:
		a.Success = true
	case resp.StatusCode == http.StatusGone:
		a.Gone = true
		a.Err = &DeliveryError{Msg: "410 Gone: the endpoint says it no longer exists"}
	default:
		a.Retryable = true
		a.Err = &DeliveryError{Msg: fmt.Sprintf("HTTP %d", resp.StatusCode)}
	}
	return a
}

// newRequest checks r and builds its HTTP request. Its errors are not retryable.
func newRequest(ctx context.Context, g *guardTransport, r Request) (*http.Request, error) {
	u, err := ValidateURL(r.URL, true) // the client refuses http unless allowed
	if err != nil {
		return nil, err
	}
	if err := CheckLiteral(u, g.policy); err != nil {
		return nil, err
	}
	if len(r.Secrets) == 0 {
		return nil, errors.New("no signing secret")
	}
	for _, s := range r.Secrets {
		if s == "" {
			return nil, errors.New("an empty signing secret")
		}
	}
	if r.EventID == "" || !validHeaderValue(r.EventID) || !validHeaderValue(r.EventType) {
		return nil, errors.New("the event id or type is empty or has control characters")
	}
	now := r.Now
	if now.IsZero() {
		now = time.Now()
	}
	ua := r.UserAgent
	if ua == "" {
		ua = DefaultUserAgent()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(r.Body))
	if err != nil {
		return nil, fmt.Errorf("build the request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", ua)
	req.Header.Set(webhook.SignatureHeader, webhook.SignMulti(r.Secrets, now, r.Body))
	req.Header.Set(EventIDHeader, r.EventID)
	req.Header.Set(EventTypeHeader, r.EventType)
	return req, nil
}

// validHeaderValue reports whether s is printable ASCII, safe in a header.
func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// readBounded reads at most limit bytes of body and returns the first SnippetBytes of them as
// valid UTF-8. Errors reading are ignored: the status has been received.
func readBounded(body io.Reader, limit int64) string {
	lr := io.LimitReader(body, limit)
	buf := make([]byte, min(int64(SnippetBytes), limit))
	n, _ := io.ReadFull(lr, buf)
	io.Copy(io.Discard, lr)
	b := buf[:n]
	// Drop a character cut in two at the end, then replace what is not UTF-8.
	for i := 1; i < utf8.UTFMax && i <= len(b); i++ {
		if utf8.RuneStart(b[len(b)-i]) {
			if !utf8.FullRune(b[len(b)-i:]) {
				b = b[:len(b)-i]
			}
			break
		}
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

// retryable reports whether a failed request may succeed later. The endpoint's own URL refused
// by the guard before anything was sent (http when only https is allowed) cannot; everything
// else may: a redirect refused (the endpoint may change it), an address refused after DNS
// resolution (the answer may change), network errors and timeouts.
func retryable(err error) bool {
	var re *RedirectError
	var ue *URLError
	return errors.As(err, &re) || !errors.As(err, &ue)
}

// describe returns a short message for the delivery log that says why a request failed, without
// the Go error's details (addresses, internal names) that the merchant has no use for.
func describe(err error) string {
	var (
		addrErr   *AddressError
		urlErr    *URLError
		redirErr  *RedirectError
		dnsErr    *net.DNSError
		unknownCA x509.UnknownAuthorityError
		hostErr   x509.HostnameError
		invalid   x509.CertificateInvalidError
		record    tls.RecordHeaderError
		alert     tls.AlertError
		netErr    net.Error
	)
	switch {
	case errors.As(err, &redirErr): // first: it may wrap a URLError or AddressError
		return redirErr.Error()
	case errors.As(err, &addrErr):
		return addrErr.Error()
	case errors.As(err, &urlErr):
		return urlErr.Error()
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return "timeout"
	case errors.As(err, &dnsErr):
		if dnsErr.IsNotFound {
			return "DNS: no such host"
		}
		return "DNS: lookup failed"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EHOSTUNREACH):
		return "host unreachable"
	case errors.Is(err, syscall.ENETUNREACH):
		return "network unreachable"
	case errors.As(err, &unknownCA):
		return "TLS: certificate signed by an unknown authority"
	case errors.As(err, &hostErr):
		return "TLS: certificate is not valid for the host name"
	case errors.As(err, &invalid):
		if invalid.Reason == x509.Expired {
			return "TLS: certificate expired or not yet valid"
		}
		return "TLS: certificate invalid"
	case errors.As(err, &record):
		return "TLS: the server did not answer with TLS"
	case errors.As(err, &alert):
		return "TLS: the server refused the handshake (" + strings.TrimPrefix(alert.Error(), "tls: ") + ")"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed by the server"
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "HTTP response to HTTPS client"):
		return "TLS: the server did not answer with TLS"
	case strings.Contains(msg, "malformed HTTP"):
		return "malformed HTTP response"
	case strings.Contains(msg, "response headers exceeded"):
		return "response headers too large"
	case strings.Contains(msg, "tls: "):
		return "TLS: handshake failed"
	}
	return "request failed"
}
