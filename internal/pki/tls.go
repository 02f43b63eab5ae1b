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
func ServerTLSFrom(clientCAs *x509.CertPool, cert tls.Certificate, clientAuth tls.ClientAuthType) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    clientCAs,
		ClientAuth:   clientAuth,
		NextProtos:   []string{"h2", "http/1.1"},
	}
}

// ClientTLS loads a client configuration: the CA that signs the servers' certificates, and the
// client's own certificate and key. With certFile and keyFile both empty the client presents no
// certificate. TLS 1.3 is the minimum.
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

// ExpectServer returns a copy of a client configuration that, on top of the usual chain and host
// name checks, refuses servers whose certificate does not name want. The gateway uses it to make
// sure the server it dialled as bank1 really is spiffe://paygate/bank/bank1.
func ExpectServer(cfg *tls.Config, want identity.Identity) *tls.Config {
	c := cfg.Clone()
	next := c.VerifyConnection
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("pki: server presented no certificate")
		}
		got, err := identity.FromCertificate(cs.PeerCertificates[0])
		if err != nil {
			return fmt.Errorf("pki: server certificate: %w", err)
		}
		if got != want {
			return fmt.Errorf("pki: server is %s, want %s", got, want)
		}
		if next != nil {
			return next(cs)
		}
		return nil
	}
	return c
}
