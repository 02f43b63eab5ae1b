package pki_test

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
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/paygate/paygate/internal/identity"
	"github.com/paygate/paygate/internal/pki"
)

var (
	serverAndClient = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	clientOnly      = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	serverOnly      = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	anyUsage        = []x509.ExtKeyUsage{x509.ExtKeyUsageAny}

	cliID   = identity.Identity{Role: identity.RoleClient, Name: "cli"}
	gwID    = identity.Identity{Role: identity.RoleGateway}
	bank1ID = identity.Identity{Role: identity.RoleBank, Name: "bank1"}
	bank2ID = identity.Identity{Role: identity.RoleBank, Name: "bank2"}
)

// issueRaw signs, with ca, a leaf that pki.IssueLeaf would not make: its URI SANs are encoded
// byte for byte as given, its extended key usages are ekus, and it covers pki.DefaultHosts.
func issueRaw(t *testing.T, ca *pki.CA, uris []string, ekus []x509.ExtKeyUsage) *pki.Leaf {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var names []asn1.RawValue
	for _, h := range pki.DefaultHosts {
		if ip := net.ParseIP(h); ip != nil {
			if v4 := ip.To4(); v4 != nil {
				ip = v4
			}
			names = append(names, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 7, Bytes: ip})
		} else {
			names = append(names, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 2, Bytes: []byte(h)})
		}
	}
	for _, u := range uris {
		names = append(names, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 6, Bytes: []byte(u)})
	}
	san, err := asn1.Marshal(names)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:    serial,
		Subject:         pkix.Name{CommonName: "raw", Organization: []string{"paygate"}},
		NotBefore:       time.Now().Add(-time.Hour),
		NotAfter:        time.Now().Add(time.Hour),
		KeyUsage:        x509.KeyUsageDigitalSignature,
		ExtKeyUsage:     ekus,
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Value: san}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &pki.Leaf{Cert: cert, Key: key}
}

func writeLeaf(t *testing.T, f pki.Files, leaf *pki.Leaf) {
	t.Helper()
	key, err := leaf.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.Key, key, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.Cert, leaf.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// devPKI makes a development PKI and returns its directory and CA.
func devPKI(t *testing.T) (string, *pki.CA) {
	t.Helper()
	dir := t.TempDir()
	if err := pki.Generate(dir, pki.Options{}); err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(filepath.Join(dir, pki.CACertFile), filepath.Join(dir, pki.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	return dir, ca
}

func TestExtKeyUsagesPerRole(t *testing.T) {
	t.Parallel()
	for role, want := range map[identity.Role][]x509.ExtKeyUsage{
		identity.RoleClient:  clientOnly,
		identity.RoleGateway: serverAndClient,
		identity.RoleBank:    serverAndClient,
		identity.RoleAdmin:   clientOnly,
		"operator":           nil,
	} {
		if got := pki.ExtKeyUsages(role); !slices.Equal(got, want) {
			t.Errorf("ExtKeyUsages(%q) = %v, want %v", role, got, want)
		}
	}
}

func TestIssueLeafRefusesInvalidIdentities(t *testing.T) {
	t.Parallel()
	ca, err := pki.NewCA("test", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []identity.Identity{
		{},
		{Role: identity.RoleGateway, Name: "extra"},
		{Role: identity.RoleBank},
		{Role: identity.RoleBank, Name: "Bank1"},
		{Role: identity.RoleClient, Name: "a/b"},
		{Role: identity.RoleClient, Name: "a%20b"},
		{Role: "operator", Name: "root"},
	} {
		if _, err := pki.IssueLeaf(ca, id, nil, time.Now(), time.Now().Add(time.Hour)); !errors.Is(err, identity.ErrInvalid) {
			t.Errorf("IssueLeaf(%#v): %v, want an identity.ErrInvalid", id, err)
		}
	}
}

// TestGenerateReissuesLeavesWithAnotherProfile: leaves made before client certificates lost
// server authentication, or with other usages or identities than their role's, are issued
// again and reported.
func TestGenerateReissuesLeavesWithAnotherProfile(t *testing.T) {
	t.Parallel()
	dir, ca := devPKI(t)
	writeLeaf(t, pki.LeafFiles(dir, cliID), issueRaw(t, ca, []string{cliID.String()}, serverAndClient)) // the old profile
	writeLeaf(t, pki.LeafFiles(dir, gwID), issueRaw(t, ca, []string{gwID.String()}, clientOnly))        // cannot serve
	writeLeaf(t, pki.LeafFiles(dir, bank1ID), issueRaw(t, ca, []string{bank1ID.String()}, anyUsage))    // anything
	writeLeaf(t, pki.LeafFiles(dir, bank2ID), issueRaw(t, ca, []string{bank2ID.String(), cliID.String()}, serverAndClient))
	kept := issueRaw(t, ca, []string{"spiffe://paygate/bank/bank3"}, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth})
	writeLeaf(t, pki.LeafFiles(dir, identity.Identity{Role: identity.RoleBank, Name: "bank3"}), kept) // right usages, other order

	rep, err := pki.GenerateReport(dir, pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[identity.Identity]string{}
	for _, r := range rep.Replaced {
		reasons[r.Identity] = r.Reason
	}
	want := map[identity.Identity]string{
		cliID:   "extended key usages [server client], want [client] for the client role",
		gwID:    "extended key usages [client], want [server client] for the gateway role",
		bank1ID: "extended key usages [any], want [server client] for the bank role",
		bank2ID: "certificate has 2 URI SANs",
	}
	if len(reasons) != len(want) {
		t.Errorf("replaced %v, want %d leaves", rep.Replaced, len(want))
	}
	for id, reason := range want {
		if !strings.Contains(reasons[id], reason) {
			t.Errorf("%s: reason %q, want one containing %q", id, reasons[id], reason)
		}
		cert, err := pki.LoadCertificate(pki.LeafFiles(dir, id).Cert)
		if err != nil {
			t.Fatal(err)
		}
		if !pki.HasRoleKeyUsages(cert, id.Role) {
			t.Errorf("%s: reissued with usages %v", id, cert.ExtKeyUsage)
		}
		if got, err := identity.FromCertificate(cert); err != nil || got != id {
			t.Errorf("%s: reissued naming %v, %v", id, got, err)
		}
	}
	if len(rep.Written) != 2*len(want) {
		t.Errorf("written %v, want the %d replaced leaves only", rep.Written, len(want))
	}

	rep, err = pki.GenerateReport(dir, pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Written) != 0 || len(rep.Replaced) != 0 {
		t.Errorf("third run: written %v, replaced %v", rep.Written, rep.Replaced)
	}
}

// exchange runs one TLS connection over loopback TCP: the client sends a secret once its
// handshake is done, the server reads what arrives. It returns the bytes the server received
// and the handshake errors of both sides.
func exchange(t *testing.T, server, client *tls.Config) (received []byte, serverErr, clientErr error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		err  error
		data []byte
	}
	done := make(chan result, 1)
	go func() {
		sc, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer sc.Close()
		s := tls.Server(sc, server)
		if err := s.HandshakeContext(ctx); err != nil {
			done <- result{err: err}
			return
		}
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		data, err := io.ReadAll(s)
		done <- result{err: err, data: data}
	}()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Client(cc, client)
	clientErr = c.HandshakeContext(ctx)
	if clientErr == nil {
		_, clientErr = c.Write([]byte("password"))
	}
	_ = c.Close()
	r := <-done
	return r.data, r.err, clientErr
}

func TestServerTLSRequiresClientUsageAndIdentity(t *testing.T) {
	t.Parallel()
	dir, ca := devPKI(t)
	bank1 := pki.LeafFiles(dir, bank1ID)
	server, err := pki.ServerTLS(pki.CAFile(dir), bank1.Cert, bank1.Key, tls.RequireAndVerifyClientCert)
	if err != nil {
		t.Fatal(err)
	}
	presenting := func(leaf *pki.Leaf) *tls.Config {
		cfg := pki.ClientTLSFrom(ca.Pool(), nil)
		cfg.ServerName = "localhost"
		cfg.Certificates = []tls.Certificate{leaf.TLSCertificate()}
		return cfg
	}
	tests := []struct {
		name    string
		leaf    *pki.Leaf
		wantErr string // in the server's error; empty: accepted
	}{
		{name: "client certificate", leaf: issueRaw(t, ca, []string{cliID.String()}, clientOnly)},
		{name: "server usage only", leaf: issueRaw(t, ca, []string{cliID.String()}, serverOnly), wantErr: "incompatible key usage"},
		{name: "no URI SAN", leaf: issueRaw(t, ca, nil, clientOnly), wantErr: "no URI SAN"},
		{name: "two URI SANs", leaf: issueRaw(t, ca, []string{cliID.String(), gwID.String()}, clientOnly), wantErr: "2 URI SANs"},
		{name: "case-folded gateway", leaf: issueRaw(t, ca, []string{"spiffe://PAYGATE/gateway"}, clientOnly), wantErr: "not a valid paygate identity"},
		{name: "percent escape", leaf: issueRaw(t, ca, []string{"spiffe://paygate/%67ateway"}, clientOnly), wantErr: "not a valid paygate identity"},
		{name: "not spiffe", leaf: issueRaw(t, ca, []string{"https://paygate/gateway"}, clientOnly), wantErr: "not a valid paygate identity"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, serr, cerr := exchange(t, server, presenting(tt.leaf))
			if tt.wantErr == "" {
				if serr != nil || cerr != nil || string(got) != "password" {
					t.Fatalf("server err %v, client err %v, received %q", serr, cerr, got)
				}
				return
			}
			if serr == nil || !strings.Contains(serr.Error(), tt.wantErr) {
				t.Fatalf("server err %v, want one containing %q", serr, tt.wantErr)
			}
			if len(got) != 0 {
				t.Fatalf("server received %q from a refused client", got)
			}
			t.Logf("server refused: %v", serr)
		})
	}
}

func TestExpectServerRefusesOtherParties(t *testing.T) {
	t.Parallel()
	dir, ca := devPKI(t)
	gw := pki.LeafFiles(dir, gwID)
	client, err := pki.ClientTLS(pki.CAFile(dir), gw.Cert, gw.Key)
	if err != nil {
		t.Fatal(err)
	}
	client.ServerName = "localhost"
	serving := func(leaf *pki.Leaf) *tls.Config {
		return pki.ServerTLSFrom(ca.Pool(), leaf.TLSCertificate(), tls.RequireAndVerifyClientCert)
	}
	load := func(id identity.Identity) *pki.Leaf {
		f := pki.LeafFiles(dir, id)
		pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			t.Fatal(err)
		}
		return &pki.Leaf{Cert: pair.Leaf, Key: pair.PrivateKey.(*ecdsa.PrivateKey)}
	}
	tests := []struct {
		name    string
		server  *pki.Leaf
		want    identity.Identity
		wantErr string // in the client's error; empty: accepted
	}{
		{name: "bank1 as bank1", server: load(bank1ID), want: bank1ID},
		{name: "gateway as gateway", server: load(gwID), want: gwID},
		{name: "bank2 as bank1", server: load(bank2ID), want: bank1ID, wantErr: "server certificate is spiffe://paygate/bank/bank2, not bank bank1 (spiffe://paygate/bank/bank1)"},
		{name: "gateway as bank1", server: load(gwID), want: bank1ID, wantErr: "server certificate is spiffe://paygate/gateway, not bank bank1"},
		{name: "bank1 as gateway", server: load(bank1ID), want: gwID, wantErr: "server certificate is spiffe://paygate/bank/bank1, not the gateway (spiffe://paygate/gateway)"},
		// A generated client certificate cannot serve TLS at all.
		{name: "client certificate as gateway", server: load(cliID), want: gwID, wantErr: "incompatible key usage"},
		{name: "client certificate as bank1", server: load(cliID), want: bank1ID, wantErr: "incompatible key usage"},
		// One that can is still not the gateway.
		{name: "client with server usage as gateway", server: issueRaw(t, ca, []string{cliID.String()}, serverAndClient), want: gwID,
			wantErr: "server certificate is spiffe://paygate/client/cli, not the gateway"},
		{name: "case-folded gateway", server: issueRaw(t, ca, []string{"SPIFFE://paygate/gateway"}, serverAndClient), want: gwID,
			wantErr: "server certificate names no valid paygate identity"},
		{name: "two URI SANs", server: issueRaw(t, ca, []string{gwID.String(), bank1ID.String()}, serverAndClient), want: gwID,
			wantErr: "2 URI SANs"},
		{name: "no URI SAN", server: issueRaw(t, ca, nil, serverAndClient), want: bank1ID, wantErr: "no URI SAN"},
		{name: "trailing slash", server: issueRaw(t, ca, []string{"spiffe://paygate/bank/bank1/"}, serverAndClient), want: bank1ID,
			wantErr: "empty path segment"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, _, cerr := exchange(t, serving(tt.server), pki.ExpectServer(client, tt.want))
			if tt.wantErr == "" {
				if cerr != nil || string(got) != "password" {
					t.Fatalf("client err %v, server received %q", cerr, got)
				}
				return
			}
			if cerr == nil || !strings.Contains(cerr.Error(), tt.wantErr) {
				t.Fatalf("client err %v, want one containing %q", cerr, tt.wantErr)
			}
			if len(got) != 0 {
				t.Fatalf("the refused server received %q", got)
			}
			if !strings.Contains(tt.wantErr, "key usage") && !errors.Is(cerr, pki.ErrUnexpectedServer) {
				t.Errorf("client err %v is not a pki.ErrUnexpectedServer", cerr)
			}
			t.Logf("client refused: %v", cerr)
		})
	}
}
