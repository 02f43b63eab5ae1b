// Package pki makes and loads the certificates paygate's services use for mutual TLS.
//
// A paygate deployment trusts one certificate authority. Every leaf certificate it issues carries
// exactly one URI SAN naming its role (see package identity), DNS and IP SANs for the hosts it
// serves, and the extended key usages of its role only (see ExtKeyUsages): client certificates
// may authenticate clients and nothing else, so they cannot serve TLS; gateway and bank
// certificates may authenticate both servers and clients, because banks and the gateway are
// servers and clients of each other.
//
// Generate writes a development PKI into a directory and is idempotent, so `paygate dev` can call
// it on every start. NewCA and IssueLeaf are the lower-level pieces; tests use them to make
// expired certificates, certificates with the wrong role, and foreign authorities. ServerTLS and
// ClientTLS turn the files into TLS 1.3 configurations.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"time"

	"github.com/paygate/paygate/internal/identity"
)

// ErrNoPEM reports a file or buffer without the expected PEM block.
var ErrNoPEM = errors.New("pki: no PEM block found")

// CA is a certificate authority: its certificate and the key that signs leaves.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// Leaf is an issued certificate and its private key.
type Leaf struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// NewCA makes a self-signed ECDSA P-256 certificate authority valid from notBefore to notAfter.
func NewCA(commonName string, notBefore, notAfter time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"paygate"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("pki: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse CA certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// ExtKeyUsages returns the extended key usages a leaf of role carries, and the only ones it may
// carry: client authentication for clients; server and client authentication for the gateway
// and banks. Nil for an unknown role.
func ExtKeyUsages(role identity.Role) []x509.ExtKeyUsage {
	switch role {
	case identity.RoleClient, identity.RoleAdmin:
		return []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	case identity.RoleGateway, identity.RoleBank:
		return []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	return nil
}

// IssueLeaf signs a leaf certificate for id with ca. The leaf carries exactly one URI SAN, id's
// URI, and the extended key usages of id's role (ExtKeyUsages); every entry of hosts becomes an
// IP SAN when it parses as an IP address and a DNS SAN otherwise. It refuses an identity that
// does not validate (identity.Identity.Validate).
func IssueLeaf(ca *CA, id identity.Identity, hosts []string, notBefore, notAfter time.Time) (*Leaf, error) {
	if ca == nil || ca.Cert == nil || ca.Key == nil {
		return nil, errors.New("pki: issue leaf: CA without certificate or key")
	}
	if err := id.Validate(); err != nil {
		return nil, fmt.Errorf("pki: issue leaf: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generate key for %s: %w", id, err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	cn := string(id.Role)
	if id.Name != "" {
		cn += " " + id.Name
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"paygate"}},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  ExtKeyUsages(id.Role),
		URIs:         []*url.URL{id.URI()},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("pki: create certificate for %s: %w", id, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse certificate for %s: %w", id, err)
	}
	return &Leaf{Cert: cert, Key: key}, nil
}

// CertPEM returns the CA certificate in PEM form.
func (ca *CA) CertPEM() []byte { return encodeCert(ca.Cert) }

// KeyPEM returns the CA key as a PKCS#8 PEM block.
func (ca *CA) KeyPEM() ([]byte, error) { return encodeKey(ca.Key) }

// Pool returns a certificate pool holding only the CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// CertPEM returns the leaf certificate in PEM form.
func (l *Leaf) CertPEM() []byte { return encodeCert(l.Cert) }

// KeyPEM returns the leaf key as a PKCS#8 PEM block.
func (l *Leaf) KeyPEM() ([]byte, error) { return encodeKey(l.Key) }

// TLSCertificate returns the leaf as a certificate for tls.Config.Certificates.
func (l *Leaf) TLSCertificate() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{l.Cert.Raw}, PrivateKey: l.Key, Leaf: l.Cert}
}

// LoadCA reads a CA certificate and its PKCS#8 (or SEC 1) ECDSA key from PEM files.
func LoadCA(certFile, keyFile string) (*CA, error) {
	cert, err := LoadCertificate(certFile)
	if err != nil {
		return nil, err
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("pki: %s is not a CA certificate", certFile)
	}
	key, err := loadKey(keyFile)
	if err != nil {
		return nil, err
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("pki: %s does not match %s", keyFile, certFile)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// LoadCertificate reads the first certificate of a PEM file.
func LoadCertificate(file string) (*x509.Certificate, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("pki: read certificate: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("pki: %s: %w", file, ErrNoPEM)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: parse %s: %w", file, err)
	}
	return cert, nil
}

// LoadPool reads a PEM file of trusted CA certificates.
func LoadPool(caFile string) (*x509.CertPool, error) {
	data, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("pki: read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("pki: %s: %w", caFile, ErrNoPEM)
	}
	return pool, nil
}

func loadKey(file string) (*ecdsa.PrivateKey, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("pki: read key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("pki: %s: %w", file, ErrNoPEM)
	}
	switch block.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("pki: parse %s: %w", file, err)
		}
		ek, ok := k.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("pki: %s: key is %T, want ECDSA", file, k)
		}
		return ek, nil
	case "EC PRIVATE KEY":
		k, err := x509.ParseECPrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("pki: parse %s: %w", file, err)
		}
		return k, nil
	}
	return nil, fmt.Errorf("pki: %s: unexpected PEM block %q", file, block.Type)
}

func encodeCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func encodeKey(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("pki: marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("pki: serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}
