// Package identity names the parties of paygate by the role in their certificate.
//
// Every paygate certificate carries exactly one URI SAN, of one of the forms
//
//	spiffe://paygate/gateway
//	spiffe://paygate/bank/<bank name>
//	spiffe://paygate/client/<client name>
//
// where a name is 1 to 63 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit. The URI
// is read strictly, byte for byte, from the certificate (see ParseURI): no case folding, no
// percent escapes, no user info, port, query or fragment, no empty or extra path segments. A
// certificate that does not name exactly one identity this way names none.
//
// A server learns the caller's identity from the verified client certificate of the TLS
// connection (see Middleware) and carries it in the request context for interceptors; a client
// checks the server's identity the same way (pki.ExpectServer).
package identity

import (
	"context"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
)

// TrustDomain is the SPIFFE trust domain of every paygate certificate.
const TrustDomain = "paygate"

// uriPrefix is what every identity URI starts with.
const uriPrefix = "spiffe://" + TrustDomain + "/"

// Role is what a certificate may do.
type Role string

// The roles of paygate's certificates.
const (
	RoleGateway Role = "gateway"
	RoleBank    Role = "bank"
	RoleClient  Role = "client"
	// RoleAdmin is an operator's certificate: the API listener accepts AdminService calls
	// only with it (and with an admin's token). It may also make every call a client may.
	RoleAdmin Role = "admin"
)

// Errors of this package.
var (
	// ErrNoIdentity reports a certificate without a URI SAN.
	ErrNoIdentity = errors.New("identity: certificate has no URI SAN (want one spiffe://paygate/ identity)")
	// ErrInvalid reports a URI, a name or a certificate that does not name exactly one paygate
	// identity in the strict form.
	ErrInvalid = errors.New("identity: not a valid paygate identity")
)

// validName is the form of bank and client names.
var validName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ValidName reports whether name may name a bank or a client: 1 to 63 of a-z, 0-9, '.', '_' and
// '-', starting with a letter or digit.
func ValidName(name string) bool { return validName.MatchString(name) }

// Identity is a verified party: its role and, for banks and clients, its name.
type Identity struct {
	Role Role
	Name string // bank or client name; empty for the gateway
}

// Validate reports whether id is an identity a certificate may carry: a known role, with a
// valid name for banks and clients and none for the gateway.
func (id Identity) Validate() error {
	if p := id.problem(); p != "" {
		return fmt.Errorf("%w: %s", ErrInvalid, p)
	}
	return nil
}

// problem says what is wrong with id, or "".
func (id Identity) problem() string {
	switch id.Role {
	case RoleGateway:
		if id.Name != "" {
			return fmt.Sprintf("the gateway has no name (got %q)", id.Name)
		}
		return ""
	case RoleBank, RoleClient, RoleAdmin:
		if !ValidName(id.Name) {
			return fmt.Sprintf("%s name %q: use 1 to 63 of a-z, 0-9, '.', '_', '-', starting with a letter or digit", id.Role, id.Name)
		}
		return ""
	case "":
		return "no role"
	}
	return fmt.Sprintf("unknown role %q (want gateway, bank, client or admin)", id.Role)
}

// URI returns the identity as the URI SAN that names it.
func (id Identity) URI() *url.URL {
	p := "/" + string(id.Role)
	if id.Name != "" {
		p += "/" + id.Name
	}
	return &url.URL{Scheme: "spiffe", Host: TrustDomain, Path: p}
}

// String returns the URI form, e.g. "spiffe://paygate/bank/bank1".
func (id Identity) String() string {
	if id.Role == "" {
		return ""
	}
	return id.URI().String()
}

// ParseURI reads an identity from its URI form, strictly: s must be exactly
// "spiffe://paygate/gateway", "spiffe://paygate/bank/<name>", "spiffe://paygate/client/<name>" or
// "spiffe://paygate/admin/<name>"
// with a valid name (see ValidName). Scheme and trust domain are matched byte for byte; user
// info, a port, percent escapes ('%' anywhere), a query, a fragment, empty segments, a trailing
// slash and unknown roles are refused.
func ParseURI(s string) (Identity, error) {
	if !strings.HasPrefix(s, uriPrefix) {
		return Identity{}, fmt.Errorf("%w: %q does not start with %s", ErrInvalid, s, uriPrefix)
	}
	if i := strings.IndexAny(s, "%?#"); i >= 0 {
		return Identity{}, fmt.Errorf("%w: %q has %q (no escapes, queries or fragments)", ErrInvalid, s, s[i])
	}
	segs := strings.Split(s[len(uriPrefix):], "/")
	for _, seg := range segs {
		if seg == "" {
			return Identity{}, fmt.Errorf("%w: %q has an empty path segment (or a trailing slash)", ErrInvalid, s)
		}
	}
	var id Identity
	switch Role(segs[0]) {
	case RoleGateway:
		if len(segs) != 1 {
			return Identity{}, fmt.Errorf("%w: %q: the gateway's URI is %sgateway", ErrInvalid, s, uriPrefix)
		}
		id = Identity{Role: RoleGateway}
	case RoleBank, RoleClient, RoleAdmin:
		if len(segs) != 2 {
			return Identity{}, fmt.Errorf("%w: %q: want %s%s/<name>", ErrInvalid, s, uriPrefix, segs[0])
		}
		id = Identity{Role: Role(segs[0]), Name: segs[1]}
	default:
		return Identity{}, fmt.Errorf("%w: %q: unknown role %q (want gateway, bank, client or admin)", ErrInvalid, s, segs[0])
	}
	if p := id.problem(); p != "" {
		return Identity{}, fmt.Errorf("%w: %q: %s", ErrInvalid, s, p)
	}
	return id, nil
}

// Parse reads an identity from a parsed URI, with ParseURI's rules applied to its string form.
// Prefer ParseURI on the original text: parsing a URL lowercases its scheme and decodes escapes.
func Parse(u *url.URL) (Identity, error) {
	if u == nil {
		return Identity{}, fmt.Errorf("%w: no URI", ErrInvalid)
	}
	return ParseURI(u.String())
}

// FromCertificate returns the identity named by a certificate. The certificate must carry
// exactly one URI SAN and it must parse with ParseURI; the URI is read from the certificate's
// encoding as it is, not from the normalised x509.Certificate.URIs.
func FromCertificate(cert *x509.Certificate) (Identity, error) {
	uris, err := rawURISANs(cert)
	if err != nil {
		return Identity{}, err
	}
	switch len(uris) {
	case 0:
		return Identity{}, ErrNoIdentity
	case 1:
		return ParseURI(uris[0])
	}
	return Identity{}, fmt.Errorf("%w: certificate has %d URI SANs %q, want exactly one", ErrInvalid, len(uris), uris)
}

// oidSubjectAltName is the subject alternative name extension, RFC 5280 4.2.1.6.
var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// rawURISANs returns the uniformResourceIdentifier entries of cert's subject alternative names
// exactly as encoded.
func rawURISANs(cert *x509.Certificate) ([]string, error) {
	var uris []string
	for _, ext := range cert.Extensions {
		if !ext.Id.Equal(oidSubjectAltName) {
			continue
		}
		var seq asn1.RawValue
		rest, err := asn1.Unmarshal(ext.Value, &seq)
		if err != nil || len(rest) != 0 || !seq.IsCompound || seq.Tag != asn1.TagSequence || seq.Class != asn1.ClassUniversal {
			return nil, fmt.Errorf("%w: malformed subject alternative names", ErrInvalid)
		}
		rest = seq.Bytes
		for len(rest) > 0 {
			var v asn1.RawValue
			if rest, err = asn1.Unmarshal(rest, &v); err != nil {
				return nil, fmt.Errorf("%w: malformed subject alternative names", ErrInvalid)
			}
			const tagURI = 6 // GeneralName uniformResourceIdentifier [6] IA5String
			if v.Class == asn1.ClassContextSpecific && v.Tag == tagURI {
				uris = append(uris, string(v.Bytes))
			}
		}
	}
	return uris, nil
}

// Peer is what a server knows about the caller of a request.
type Peer struct {
	Identity Identity
	// Fingerprint is the hex SHA-256 of the client certificate's DER bytes; empty without one.
	Fingerprint string
}

type peerKey struct{}

// WithPeer returns a context carrying p.
func WithPeer(ctx context.Context, p Peer) context.Context {
	return context.WithValue(ctx, peerKey{}, p)
}

// PeerFrom returns the peer stored by WithPeer, and whether there was one.
func PeerFrom(ctx context.Context) (Peer, bool) {
	p, ok := ctx.Value(peerKey{}).(Peer)
	return p, ok
}

// Middleware puts the verified client certificate's identity, read with FromCertificate, into
// each request's context. A request without a verified certificate (the web listener) gets no
// Peer; a certificate that names no valid identity gets a Peer with an empty Identity and its
// fingerprint, which every role check refuses. (Servers configured with pki.ServerTLS refuse such
// certificates during the handshake already.)
func Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
			leaf := r.TLS.VerifiedChains[0][0]
			id, err := FromCertificate(leaf)
			if err != nil {
				id = Identity{}
			}
			r = r.WithContext(WithPeer(r.Context(), Peer{Identity: id, Fingerprint: Fingerprint(leaf)}))
		}
		next.ServeHTTP(w, r)
	})
}
