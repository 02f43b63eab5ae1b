package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/paygate/paygate/internal/identity"
)

// ServerTLS loads a server configuration: the certificate and key of the server, and the CA whose
// client certificates it trusts. clientAuth is tls.RequireAndVerifyClientCert for mTLS listeners
// (banks, the gateway's API) and tls.NoClientCert or tls.VerifyClientCertIfGiven for the
// browser-facing listener. TLS 1.3 is the minimum; ALPN offers h2 and http/1.1.
func ServerTLS(caFile, certFile, keyFile string, clientAuth tls.ClientAuthType) (*tls.Config, error) {
	pool, err := LoadPool(caFile)
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("pki: load server key pair: %w", err)
	}
	return ServerTLSFrom(pool, cert, clientAuth), nil
}

// ServerTLSFrom is ServerTLS from material already in memory.
//
// A client certificate must chain to clientCAs and carry the client-authentication extended key
// usage (crypto/x509's check, which this configuration leaves in place), and it must name exactly
// one valid paygate identity (identity.FromCertificate): one that does not is refused during the
// handshake, and the server's error log says why.
func ServerTLSFrom(clientCAs *x509.CertPool, cert tls.Certificate, clientAuth tls.ClientAuthType) *tls.Config {
	return &tls.Config{
		MinVersion:       tls.VersionTLS13,
		Certificates:     []tls.Certificate{cert},
		ClientCAs:        clientCAs,
		ClientAuth:       clientAuth,
		NextProtos:       []string{"h2", "http/1.1"},
		VerifyConnection: verifyClientIdentity,
	}
}

// verifyClientIdentity refuses a verified client certificate without a valid paygate identity.
// A connection without a client certificate (the web listener) is left to the policy.
func verifyClientIdentity(cs tls.ConnectionState) error {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return nil
	}
	if _, err := identity.FromCertificate(cs.VerifiedChains[0][0]); err != nil {
		return fmt.Errorf("pki: client certificate refused: %w", err)
	}
	return nil
}

// ClientTLS loads a client configuration: the CA that signs the servers' certificates, and the
// client's own certificate and key. With certFile and keyFile both empty the client presents no
// certificate. TLS 1.3 is the minimum.
//
// The configuration checks the server's chain and host name only: use ExpectServer to also
// check whom the server's certificate names.
func ClientTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	pool, err := LoadPool(caFile)
	if err != nil {
		return nil, err
	}
	if certFile == "" && keyFile == "" {
		return ClientTLSFrom(pool, nil), nil
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("pki: load client key pair: %w", err)
	}
	return ClientTLSFrom(pool, &cert), nil
}

// ClientTLSFrom is ClientTLS from material already in memory; cert may be nil.
func ClientTLSFrom(rootCAs *x509.CertPool, cert *tls.Certificate) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    rootCAs,
		NextProtos: []string{"h2", "http/1.1"},
	}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg
}

// ErrUnexpectedServer reports a server whose certificate, though signed by the trusted CA, does
// not name the party the caller meant to reach. Errors from ExpectServer's check wrap it.
var ErrUnexpectedServer = errors.New("pki: the server is not the one expected")

// ServerIdentityError is the error of a handshake that ExpectServer refused: the server's
// certificate names Got (zero when it names no valid identity, see Err) instead of Want.
type ServerIdentityError struct {
	Want identity.Identity
	Got  identity.Identity
	// Err is why the certificate names no identity, when Got is zero.
	Err error
}

func (e *ServerIdentityError) Error() string {
	if e.Got.Role == "" {
		return fmt.Sprintf("pki: server certificate names no valid paygate identity (%v), want %s", e.Err, describe(e.Want))
	}
	return fmt.Sprintf("pki: server certificate is %s, not %s", e.Got, describe(e.Want))
}

// Is makes errors.Is(err, ErrUnexpectedServer) true.
func (e *ServerIdentityError) Is(target error) bool { return target == ErrUnexpectedServer }

// Unwrap returns why the certificate names no identity, or nil.
func (e *ServerIdentityError) Unwrap() error { return e.Err }

// describe names id for people: "the gateway (spiffe://paygate/gateway)".
func describe(id identity.Identity) string {
	switch id.Role {
	case identity.RoleGateway:
		return "the gateway (" + id.String() + ")"
	case identity.RoleBank:
		return "bank " + id.Name + " (" + id.String() + ")"
	}
	return id.String()
}

// ExpectServer returns a copy of a client configuration that, on top of the usual chain, key
// usage and host name checks, refuses servers whose certificate does not name exactly want
// (identity.FromCertificate, strict). The check runs during the handshake, before the client
// sends anything over the connection: the gateway uses it so that the server it dialled as bank1
// really is spiffe://paygate/bank/bank1, banks and clients so that they talk to the gateway only.
// A refused handshake fails with a *ServerIdentityError.
func ExpectServer(cfg *tls.Config, want identity.Identity) *tls.Config {
	c := cfg.Clone()
	next := c.VerifyConnection
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return &ServerIdentityError{Want: want, Err: errors.New("no certificate")}
		}
		got, err := identity.FromCertificate(cs.PeerCertificates[0])
		if err != nil {
			return &ServerIdentityError{Want: want, Err: err}
		}
		if got != want {
			return &ServerIdentityError{Want: want, Got: got}
		}
		if next != nil {
			return next(cs)
		}
		return nil
	}
	return c
}
