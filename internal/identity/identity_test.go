package identity_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/paygate/paygate/internal/identity"
)

var (
	gateway = identity.Identity{Role: identity.RoleGateway}
	bank1   = identity.Identity{Role: identity.RoleBank, Name: "bank1"}
	cli     = identity.Identity{Role: identity.RoleClient, Name: "cli"}
)

func TestParseURI(t *testing.T) {
	t.Parallel()
	tests := []struct {
		uri  string
		want identity.Identity // zero: refused
	}{
		{uri: "spiffe://paygate/gateway", want: gateway},
		{uri: "spiffe://paygate/bank/bank1", want: bank1},
		{uri: "spiffe://paygate/client/cli", want: cli},
		{uri: "spiffe://paygate/bank/bank-a.b_c", want: identity.Identity{Role: identity.RoleBank, Name: "bank-a.b_c"}},
		{uri: "spiffe://paygate/client/" + strings.Repeat("a", 63), want: identity.Identity{Role: identity.RoleClient, Name: strings.Repeat("a", 63)}},

		// Case variants.
		{uri: "SPIFFE://paygate/gateway"},
		{uri: "Spiffe://paygate/gateway"},
		{uri: "spiffe://PAYGATE/gateway"},
		{uri: "spiffe://Paygate/bank/bank1"},
		{uri: "spiffe://paygate/Gateway"},
		{uri: "spiffe://paygate/BANK/bank1"},
		{uri: "spiffe://paygate/bank/Bank1"},
		// Percent escapes, anywhere.
		{uri: "spiffe://paygate/bank/bank%31"},
		{uri: "spiffe://paygate/%62ank/bank1"},
		{uri: "spiffe://paygate/bank%2Fbank1"},
		{uri: "spiffe://%70aygate/gateway"},
		{uri: "spiffe://paygate/gateway%00"},
		// User info, port, other hosts.
		{uri: "spiffe://user@paygate/gateway"},
		{uri: "spiffe://:@paygate/gateway"},
		{uri: "spiffe://paygate:443/gateway"},
		{uri: "spiffe://paygate./gateway"},
		{uri: "spiffe://evil.paygate/gateway"},
		{uri: "spiffe://paygate.evil/gateway"},
		{uri: "spiffe:///paygate/gateway"},
		// Query and fragment.
		{uri: "spiffe://paygate/gateway?x=1"},
		{uri: "spiffe://paygate/gateway?"},
		{uri: "spiffe://paygate/bank/bank1#frag"},
		{uri: "spiffe://paygate/gateway#"},
		// Empty segments, trailing slash, dot segments.
		{uri: "spiffe://paygate/"},
		{uri: "spiffe://paygate"},
		{uri: "spiffe://paygate//gateway"},
		{uri: "spiffe://paygate/gateway/"},
		{uri: "spiffe://paygate/bank/"},
		{uri: "spiffe://paygate/bank//bank1"},
		{uri: "spiffe://paygate/bank/bank1/"},
		{uri: "spiffe://paygate/bank/."},
		{uri: "spiffe://paygate/bank/.."},
		{uri: "spiffe://paygate/bank/../gateway"},
		// Wrong number of segments, unknown roles.
		{uri: "spiffe://paygate/gateway/x"},
		{uri: "spiffe://paygate/bank"},
		{uri: "spiffe://paygate/client"},
		{uri: "spiffe://paygate/bank/bank1/extra"},
		{uri: "spiffe://paygate/admin"},
		{uri: "spiffe://paygate/operator/root"},
		// Names outside the pattern.
		{uri: "spiffe://paygate/bank/-bank"},
		{uri: "spiffe://paygate/bank/_bank"},
		{uri: "spiffe://paygate/bank/bank 1"},
		{uri: "spiffe://paygate/bank/bänk"},
		{uri: "spiffe://paygate/client/" + strings.Repeat("a", 64)},
		// Not spiffe at all.
		{uri: "https://paygate/gateway"},
		{uri: "spiffe:paygate/gateway"},
		{uri: "urn:spiffe:paygate:gateway"},
		{uri: " spiffe://paygate/gateway"},
		{uri: "spiffe://paygate/gateway "},
		{uri: ""},
	}
	for _, tt := range tests {
		got, err := identity.ParseURI(tt.uri)
		if tt.want.Role == "" {
			if err == nil {
				t.Errorf("ParseURI(%q) = %v, want an error", tt.uri, got)
				continue
			}
			if !errors.Is(err, identity.ErrInvalid) || !strings.HasPrefix(err.Error(), "identity: ") {
				t.Errorf("ParseURI(%q): error %q is not an identity.ErrInvalid", tt.uri, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseURI(%q) = %v, %v; want %v", tt.uri, got, err, tt.want)
		}
		if s := got.String(); s != tt.uri {
			t.Errorf("String() = %q, want %q", s, tt.uri)
		}
	}
}

func TestParseIsStrictToo(t *testing.T) {
	t.Parallel()
	for _, u := range []*url.URL{
		{Scheme: "spiffe", Host: "PAYGATE", Path: "/gateway"},
		{Scheme: "spiffe", User: url.User("u"), Host: "paygate", Path: "/gateway"},
		{Scheme: "spiffe", Host: "paygate:1", Path: "/gateway"},
		{Scheme: "spiffe", Host: "paygate", Path: "/gateway", RawQuery: "a"},
		{Scheme: "spiffe", Host: "paygate", Path: "/gateway", Fragment: "a"},
		{Scheme: "spiffe", Host: "paygate", Path: "/bank/b 1"},
		nil,
	} {
		if id, err := identity.Parse(u); err == nil {
			t.Errorf("Parse(%v) = %v, want an error", u, id)
		}
	}
	if id, err := identity.Parse(bank1.URI()); err != nil || id != bank1 {
		t.Errorf("Parse(%v) = %v, %v", bank1.URI(), id, err)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		id identity.Identity
		ok bool
	}{
		{id: gateway, ok: true},
		{id: bank1, ok: true},
		{id: cli, ok: true},
		{id: identity.Identity{}},
		{id: identity.Identity{Role: identity.RoleGateway, Name: "x"}},
		{id: identity.Identity{Role: identity.RoleBank}},
		{id: identity.Identity{Role: identity.RoleBank, Name: "Bank1"}},
		{id: identity.Identity{Role: identity.RoleBank, Name: "bank/1"}},
		{id: identity.Identity{Role: identity.RoleClient, Name: "../x"}},
		{id: identity.Identity{Role: "operator", Name: "x"}},
	} {
		if err := tt.id.Validate(); (err == nil) != tt.ok {
			t.Errorf("%#v.Validate() = %v, want ok %v", tt.id, err, tt.ok)
		}
	}
}

// certWithURIs returns a self-signed certificate whose subject alternative names are the URIs
// given, encoded byte for byte, and one DNS name.
func certWithURIs(t *testing.T, uris ...string) (*x509.Certificate, error) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	names := []asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 2, Bytes: []byte("localhost")}}
	for _, u := range uris {
		names = append(names, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 6, Bytes: []byte(u)})
	}
	san, err := asn1.Marshal(names)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:    big.NewInt(1),
		Subject:         pkix.Name{CommonName: "test"},
		NotBefore:       time.Now().Add(-time.Hour),
		NotAfter:        time.Now().Add(time.Hour),
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Value: san}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return x509.ParseCertificate(der)
}

func TestFromCertificate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		uris []string
		want identity.Identity // zero: refused
		err  error
	}{
		{name: "gateway", uris: []string{"spiffe://paygate/gateway"}, want: gateway},
		{name: "bank", uris: []string{"spiffe://paygate/bank/bank1"}, want: bank1},
		{name: "client", uris: []string{"spiffe://paygate/client/cli"}, want: cli},
		{name: "none", err: identity.ErrNoIdentity},
		{name: "two paygate URIs", uris: []string{"spiffe://paygate/client/cli", "spiffe://paygate/gateway"}, err: identity.ErrInvalid},
		{name: "the same URI twice", uris: []string{"spiffe://paygate/gateway", "spiffe://paygate/gateway"}, err: identity.ErrInvalid},
		{name: "paygate URI and another", uris: []string{"spiffe://paygate/gateway", "https://example.com/"}, err: identity.ErrInvalid},
		{name: "non-spiffe", uris: []string{"https://paygate/gateway"}, err: identity.ErrInvalid},
		{name: "other trust domain", uris: []string{"spiffe://example.org/gateway"}, err: identity.ErrInvalid},
		{name: "upper-case scheme", uris: []string{"SPIFFE://paygate/gateway"}, err: identity.ErrInvalid},
		{name: "upper-case host", uris: []string{"spiffe://PAYGATE/gateway"}, err: identity.ErrInvalid},
		{name: "upper-case role", uris: []string{"spiffe://paygate/Gateway"}, err: identity.ErrInvalid},
		{name: "percent escape", uris: []string{"spiffe://paygate/bank/bank%31"}, err: identity.ErrInvalid},
		{name: "user info", uris: []string{"spiffe://admin@paygate/gateway"}, err: identity.ErrInvalid},
		{name: "port", uris: []string{"spiffe://paygate:8443/gateway"}, err: identity.ErrInvalid},
		{name: "query", uris: []string{"spiffe://paygate/gateway?role=bank"}, err: identity.ErrInvalid},
		{name: "fragment", uris: []string{"spiffe://paygate/bank/bank1#x"}, err: identity.ErrInvalid},
		{name: "empty segment", uris: []string{"spiffe://paygate/bank//bank1"}, err: identity.ErrInvalid},
		{name: "trailing slash", uris: []string{"spiffe://paygate/gateway/"}, err: identity.ErrInvalid},
		{name: "extra segment", uris: []string{"spiffe://paygate/bank/bank1/x"}, err: identity.ErrInvalid},
		{name: "unknown role", uris: []string{"spiffe://paygate/operator/root"}, err: identity.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cert, err := certWithURIs(t, tt.uris...)
			if err != nil {
				// crypto/x509 refuses some of these already; nothing can present them then.
				t.Logf("x509 refuses the certificate: %v", err)
				return
			}
			got, err := identity.FromCertificate(cert)
			if tt.err == nil {
				if err != nil || got != tt.want {
					t.Fatalf("FromCertificate = %v, %v; want %v", got, err, tt.want)
				}
				return
			}
			if !errors.Is(err, tt.err) || got != (identity.Identity{}) {
				t.Fatalf("FromCertificate = %v, %v; want error %v", got, err, tt.err)
			}
			t.Logf("refused: %v", err)
		})
	}
}

func TestMiddlewareUsesTheStrictParser(t *testing.T) {
	t.Parallel()
	good, err := certWithURIs(t, "spiffe://paygate/client/cli")
	if err != nil {
		t.Fatal(err)
	}
	folded, err := certWithURIs(t, "SPIFFE://paygate/gateway")
	if err != nil {
		t.Fatal(err)
	}
	two, err := certWithURIs(t, "spiffe://paygate/client/cli", "spiffe://paygate/gateway")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		cert *x509.Certificate
		want identity.Identity
	}{
		{name: "valid", cert: good, want: cli},
		{name: "case-folded gateway", cert: folded},
		{name: "two URIs", cert: two},
	} {
		var got identity.Peer
		var ok bool
		h := identity.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			got, ok = identity.PeerFrom(r.Context())
		}))
		r := httptest.NewRequestWithContext(context.Background(), http.MethodGet, "/", nil)
		r.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{tt.cert}}}
		h.ServeHTTP(httptest.NewRecorder(), r)
		if !ok || got.Identity != tt.want || got.Fingerprint != identity.Fingerprint(tt.cert) {
			t.Errorf("%s: peer %+v (ok %v), want identity %v", tt.name, got, ok, tt.want)
		}
	}
}
