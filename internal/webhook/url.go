package webhook

import (
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// MaxURLLength is the longest endpoint URL accepted, in bytes.
const MaxURLLength = 2048

// Reasons of a URLError, stable strings for the API's ErrorInfo.
const (
	ReasonURLInvalid     = "webhook_url_invalid"     // not a URL, or control characters or spaces in it
	ReasonURLTooLong     = "webhook_url_too_long"    // longer than MaxURLLength
	ReasonURLScheme      = "webhook_url_scheme"      // not https (or http, when allowed), or not absolute
	ReasonURLHost        = "webhook_url_host"        // no host, or a host that is not a plain name or IP
	ReasonURLPort        = "webhook_url_port"        // a port outside 1-65535, or an empty one
	ReasonURLUserinfo    = "webhook_url_userinfo"    // user:password@ in the URL
	ReasonURLFragment    = "webhook_url_fragment"    // a #fragment, which is never sent
	ReasonAddressRefused = "webhook_address_refused" // an address the policy refuses (AddressError)
)

// URLError is an endpoint URL that ValidateURL (or the client, on a redirect) refuses. Reason
// is stable, for programs (the API turns it into INVALID_ARGUMENT with that reason); Msg says
// what is wrong for people.
type URLError struct {
	Reason string
	Msg    string
}

// Error returns the message.
func (e *URLError) Error() string { return "webhook URL: " + e.Msg }

// urlErrorf returns a URLError with reason and a formatted message.
func urlErrorf(reason, format string, args ...any) *URLError {
	return &URLError{Reason: reason, Msg: fmt.Sprintf(format, args...)}
}

// ValidateURL parses raw as an endpoint URL and returns it, or a *URLError: an absolute https
// URL (or http, when allowHTTP), at most MaxURLLength bytes, with a host (a DNS name of ASCII
// letters, digits, '-', '_' and '.', or an IP literal), an optional port in 1-65535, and no
// user information (credentials in a URL end up in logs) or fragment. The scheme and host are
// lower-cased.
//
// A host that is, or resolves to, a private or loopback address is not refused here: DNS
// answers change, so the client's dial guard checks every connection's actual address. Use
// CheckLiteral to refuse an IP literal early, when registering an endpoint.
func ValidateURL(raw string, allowHTTP bool) (*url.URL, error) {
	if len(raw) > MaxURLLength {
		return nil, urlErrorf(ReasonURLTooLong, "longer than %d bytes", MaxURLLength)
	}
	for i := 0; i < len(raw); i++ {
		if c := raw[i]; c <= ' ' || c == 0x7f {
			return nil, urlErrorf(ReasonURLInvalid, "a space or control character at byte %d", i)
		}
	}
	if strings.Contains(raw, "#") {
		return nil, urlErrorf(ReasonURLFragment, "has a fragment (#...), which is never sent")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, urlErrorf(ReasonURLInvalid, "not a URL")
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && allowHTTP:
	case u.Scheme == "http":
		return nil, urlErrorf(ReasonURLScheme, "the scheme must be https")
	case u.Scheme == "":
		return nil, urlErrorf(ReasonURLScheme, "not an absolute URL (no https://)")
	default:
		return nil, urlErrorf(ReasonURLScheme, "the scheme must be https, not %q", u.Scheme)
	}
	if u.Opaque != "" {
		return nil, urlErrorf(ReasonURLHost, "no host (the scheme must be followed by //)")
	}
	if u.User != nil {
		return nil, urlErrorf(ReasonURLUserinfo, "has user information (user:password@); put credentials in the path, or rely on the signature")
	}
	if err := checkPort(u); err != nil {
		return nil, err
	}
	host := strings.ToLower(u.Hostname())
	if err := checkHost(host); err != nil {
		return nil, err
	}
	u.Host = joinHostPort(host, u.Port())
	return u, nil
}

// checkPort refuses an empty port ("host:") or one outside 1-65535.
func checkPort(u *url.URL) error {
	port := u.Port()
	if port == "" {
		if strings.HasSuffix(u.Host, ":") {
			return urlErrorf(ReasonURLPort, "an empty port after the host's ':'")
		}
		return nil
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 || (len(port) > 1 && port[0] == '0') {
		return urlErrorf(ReasonURLPort, "the port must be a number in 1-65535")
	}
	return nil
}

// checkHost refuses an empty host, an IPv6 zone, a host of other characters than a DNS name's,
// and a name that looks like a number without being a dotted-quad IPv4 address: "127.1",
// "0x7f000001" and "2130706433" are 127.0.0.1 to some resolvers (inet_aton) and not to others.
func checkHost(host string) error {
	if host == "" {
		return urlErrorf(ReasonURLHost, "no host")
	}
	if strings.Contains(host, ":") { // an IPv6 literal (url.Parse requires the brackets)
		a, err := netip.ParseAddr(host)
		if err != nil || !a.Is6() || a.Zone() != "" {
			return urlErrorf(ReasonURLHost, "the host is not a valid IPv6 address (zones are not allowed)")
		}
		return nil
	}
	if len(host) > 253+1 {
		return urlErrorf(ReasonURLHost, "the host name is longer than 253 characters")
	}
	name := strings.TrimSuffix(host, ".")
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return urlErrorf(ReasonURLHost, "the host name has an empty label or one longer than 63 characters")
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return urlErrorf(ReasonURLHost, "the host name has a character other than letters, digits, '-', '_' and '.' (write an international name in its xn-- form)")
			}
		}
	}
	if last := labels[len(labels)-1]; isNumeric(last) {
		if a, err := netip.ParseAddr(name); err != nil || !a.Is4() || name != host {
			return urlErrorf(ReasonURLHost, "the host looks like a number but is not an IPv4 address in dotted-quad form")
		}
	}
	return nil
}

// isNumeric reports whether a host's last label makes the WHATWG URL parser read the host as an
// IPv4 address: all decimal digits, or 0x followed by hex digits.
func isNumeric(label string) bool {
	if rest, ok := strings.CutPrefix(label, "0x"); ok {
		label = rest
		for i := 0; i < len(label); i++ {
			if c := label[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return false
			}
		}
		return true
	}
	for i := 0; i < len(label); i++ {
		if label[i] < '0' || label[i] > '9' {
			return false
		}
	}
	return true
}

// joinHostPort is net.JoinHostPort with an optional port.
func joinHostPort(host, port string) string {
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port == "" {
		return host
	}
	return host + ":" + port
}

// CheckLiteral applies policy to u's host when it is an IP literal, and returns nil for a DNS
// name (whose addresses the dial guard checks on every connection). Endpoint registration
// calls it to refuse "https://127.0.0.1/" at once rather than at every delivery.
func CheckLiteral(u *url.URL, policy AddressPolicy) error {
	a, err := netip.ParseAddr(u.Hostname())
	if err != nil {
		return nil
	}
	return policy(a)
}
