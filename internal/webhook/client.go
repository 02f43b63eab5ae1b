package webhook

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"
)

// Defaults of Options.
const (
	DefaultTimeout          = 10 * time.Second
	DefaultMaxResponseBytes = 64 << 10
	DefaultMaxRedirects     = 3
)

// Options configure NewClient. The zero value is the production configuration (DefaultPolicy,
// https only, the defaults below), with one exception: its MaxRedirects of 0 follows no
// redirect; set DefaultMaxRedirects to follow some.
type Options struct {
	// Policy decides which addresses the client may connect to; nil is DefaultPolicy. It is
	// applied to the actual IP of every connection, after DNS resolution, on every redirect.
	Policy AddressPolicy
	// AllowHTTP allows http:// endpoints (development and tests). A redirect from https to
	// http is refused even then.
	AllowHTTP bool
	// Timeout bounds a whole attempt: connecting, TLS, the request, the redirects and reading
	// the response. 0 is DefaultTimeout.
	Timeout time.Duration
	// MaxResponseBytes is how much of a response body Deliver reads; the rest is not read, and
	// the connection is closed. 0 is DefaultMaxResponseBytes.
	MaxResponseBytes int64
	// MaxRedirects is how many redirects an attempt follows; 0 (or less) is none, and a
	// redirect is then a failure. DefaultMaxRedirects is the recommended value.
	MaxRedirects int
	// RootCAs verifies the endpoints' certificates; nil is the system's roots. For tests.
	RootCAs *x509.CertPool
}

// withDefaults returns o with its zero fields set to their defaults.
func (o Options) withDefaults() Options {
	if o.Policy == nil {
		o.Policy = DefaultPolicy
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MaxResponseBytes <= 0 {
		o.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if o.MaxRedirects < 0 {
		o.MaxRedirects = 0
	}
	return o
}

// RedirectError is a redirect the client refuses to follow.
type RedirectError struct {
	Msg string
	Err error // the URLError or AddressError of the redirect's URL, if that is the reason
}

// Error returns the message.
func (e *RedirectError) Error() string { return "redirect refused: " + e.Msg }

// Unwrap returns the error of the redirect's URL, or nil.
func (e *RedirectError) Unwrap() error { return e.Err }

// NewClient returns an HTTP client for webhook deliveries to endpoints that users choose, which
// must not reach the operator's own network (SSRF):
//
//   - Its own Transport (never http.DefaultTransport), without a proxy (a proxy would connect
//     on the client's behalf, and defeat the address check).
//   - Its dialer checks, with o.Policy, the IP address of every connection it makes, after DNS
//     resolution: a name that resolves to a refused address (also after a DNS answer changed,
//     "rebinding") is refused when connecting, and so is every address a redirect leads to.
//   - Every request, the first and each redirect's, is checked again with ValidateURL (https
//     only unless o.AllowHTTP; no credentials in the URL) and its IP literal with o.Policy.
//   - Redirects: at most o.MaxRedirects; never from https to http; and only 307 and 308,
//     which resend the POST and its body (301, 302 and 303 would turn it into a GET without
//     the event, and report a delivery that did not happen).
//   - TLS 1.2 or later; HTTP/1.1 and HTTP/2 over TLS, no unencrypted HTTP/2; no transparent
//     decompression; bounded response headers, idle connections and waits.
//   - o.Timeout bounds each attempt as a whole.
//
// The caller reads at most MaxResponseBytes of a response; Deliver does.
func NewClient(o Options) *http.Client {
	o = o.withDefaults()
	dialer := &net.Dialer{
		Timeout:   o.Timeout,
		KeepAlive: 30 * time.Second,
		Control:   dialControl(o.Policy),
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	transport := &http.Transport{
		Proxy:       nil,
		DialContext: dialer.DialContext,
		TLSClientConfig: &tls.Config{
			MinVersion: tls.VersionTLS12,
			RootCAs:    o.RootCAs,
		},
		Protocols:              &protocols,
		TLSHandshakeTimeout:    o.Timeout,
		ResponseHeaderTimeout:  o.Timeout,
		ExpectContinueTimeout:  time.Second,
		MaxIdleConns:           100,
		MaxIdleConnsPerHost:    2,
		MaxConnsPerHost:        8,
		IdleConnTimeout:        90 * time.Second,
		MaxResponseHeaderBytes: 32 << 10,
		DisableCompression:     true,
	}
	return &http.Client{
		Transport:     &guardTransport{base: transport, policy: o.Policy, allowHTTP: o.AllowHTTP, maxResponse: o.MaxResponseBytes},
		CheckRedirect: checkRedirect(o.MaxRedirects, o.Policy, o.AllowHTTP),
		Timeout:       o.Timeout,
	}
}

// dialControl returns the dialer's Control function: it runs for every connection, with the
// address being connected to (an IP, after DNS), and refuses it unless policy allows it.
func dialControl(policy AddressPolicy) func(network, address string, _ syscall.RawConn) error {
	return func(network, address string, _ syscall.RawConn) error {
		switch network {
		case "tcp4", "tcp6":
		default:
			return fmt.Errorf("webhook: refused to dial network %q", network)
		}
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("webhook: refused to dial %q: not an IP address and port", address)
		}
		return policy(ap.Addr())
	}
}

// checkRedirect returns the client's CheckRedirect: at most max redirects, each a 307 or 308
// (which keep the POST and its body), to a URL that ValidateURL and CheckLiteral accept, and no
// https to http downgrade. The address a redirect leads to is checked by the dialer, as for
// every connection.
func checkRedirect(max int, policy AddressPolicy, allowHTTP bool) func(req *http.Request, via []*http.Request) error {
	return func(req *http.Request, via []*http.Request) error {
		if len(via) > max {
			if max == 0 {
				return &RedirectError{Msg: "redirects are not followed; register the final URL"}
			}
			return &RedirectError{Msg: fmt.Sprintf("more than %d redirects", max)}
		}
		if req.Response != nil {
			if code := req.Response.StatusCode; code != http.StatusTemporaryRedirect && code != http.StatusPermanentRedirect {
				return &RedirectError{Msg: fmt.Sprintf("a %d redirect would resend the event as a GET without its body; use 307 or 308, or register the final URL", code)}
			}
		}
		if prev := via[len(via)-1]; prev.URL.Scheme == "https" && req.URL.Scheme != "https" {
			return &RedirectError{Msg: "from https to " + req.URL.Scheme}
		}
		u, err := ValidateURL(req.URL.String(), allowHTTP)
		if err == nil {
			err = CheckLiteral(u, policy)
		}
		if err != nil {
			return &RedirectError{Msg: err.Error(), Err: err}
		}
		return nil
	}
}

// guardTransport checks every request before its base sends it: the URL with ValidateURL and
// an IP literal with the policy. The client sends each redirect through it too (after
// CheckRedirect has checked the same, so that a refusal there keeps the redirect's status).
type guardTransport struct {
	base        *http.Transport
	policy      AddressPolicy
	allowHTTP   bool
	maxResponse int64 // for Deliver, which reads it from the client
}

// RoundTrip checks req and sends it with the base transport.
func (g *guardTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	u, err := ValidateURL(req.URL.String(), g.allowHTTP)
	if err == nil {
		err = CheckLiteral(u, g.policy)
	}
	if err != nil {
		if req.Body != nil {
			req.Body.Close() // a RoundTripper closes the body, also on errors
		}
		if req.Response != nil {
			// A redirect's URL: the endpoint's doing, which it may change; the first URL's
			// refusal is the registration's, final.
			return nil, &RedirectError{Msg: err.Error(), Err: err}
		}
		return nil, err
	}
	return g.base.RoundTrip(req)
}

// CloseIdleConnections closes the base transport's idle connections (http.Client's method of
// the same name calls it).
func (g *guardTransport) CloseIdleConnections() { g.base.CloseIdleConnections() }

// guardOf returns the guardTransport of a client of NewClient, or an error for another client:
// Deliver sends nothing through a client without the guards.
func guardOf(c *http.Client) (*guardTransport, error) {
	if c != nil {
		if g, ok := c.Transport.(*guardTransport); ok {
			return g, nil
		}
	}
	return nil, errors.New("webhook: the HTTP client was not made by NewClient")
}
