// Package identity names the parties of paygate by the role in their certificate.
//
// Every paygate certificate carries one URI SAN of the form
//
//	spiffe://paygate/gateway
//	spiffe://paygate/bank/<bank name>
//	spiffe://paygate/client/<client name>
//
// A server learns the caller's identity from the verified client certificate of the TLS
// connection (see FromRequest) and carries it in the request context for interceptors.
package identity

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// TrustDomain is the SPIFFE trust domain of every paygate certificate.
const TrustDomain = "paygate"

// Role is what a certificate may do.
type Role string

// The roles of paygate's certificates.
const (
	RoleGateway Role = "gateway"
	RoleBank    Role = "bank"
	RoleClient  Role = "client"
)

// ErrNoIdentity reports a certificate without a paygate URI SAN.
var ErrNoIdentity = errors.New("identity: certificate has no spiffe://paygate/ URI SAN")

// Identity is a verified party: its role and, for banks and clients, its name.
type Identity struct {
	Role Role
	Name string // bank or client name; empty for the gateway
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

// Parse reads an identity from its URI form.
func Parse(u *url.URL) (Identity, error) {
	if u.Scheme != "spiffe" || u.Host != TrustDomain {
		return Identity{}, fmt.Errorf("identity: %q is not in spiffe://%s", u, TrustDomain)
	}
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	switch {
	case len(parts) == 1 && parts[0] == string(RoleGateway):
		return Identity{Role: RoleGateway}, nil
	case len(parts) == 2 && (parts[0] == string(RoleBank) || parts[0] == string(RoleClient)) && parts[1] != "":
		return Identity{Role: Role(parts[0]), Name: parts[1]}, nil
	}
	return Identity{}, fmt.Errorf("identity: unknown role in %q", u)
}

// FromCertificate returns the identity named by a certificate's URI SANs.
func FromCertificate(cert *x509.Certificate) (Identity, error) {
	for _, u := range cert.URIs {
		if u.Scheme == "spiffe" && u.Host == TrustDomain {
			return Parse(u)
		}
	}
	return Identity{}, ErrNoIdentity
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

// Middleware puts the verified client certificate's identity into each request's context. A
// request without a verified certificate (the web listener) gets no Peer; a certificate without
// a paygate identity gets a Peer with an empty Identity and its fingerprint.
func Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
			leaf := r.TLS.VerifiedChains[0][0]
			id, _ := FromCertificate(leaf)
			r = r.WithContext(WithPeer(r.Context(), Peer{Identity: id, Fingerprint: Fingerprint(leaf)}))
		}
		next.ServeHTTP(w, r)
	})
}
