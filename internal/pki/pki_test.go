package pki_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
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

func TestGenerateCertificatesVerifyAndNameTheirRole(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := pki.Generate(dir, pki.Options{Banks: []string{"bank-a", "bank-b"}}); err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(filepath.Join(dir, pki.CACertFile), filepath.Join(dir, pki.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if !ca.Cert.IsCA || ca.Cert.Subject.CommonName == "" {
		t.Fatalf("CA: IsCA=%v CN=%q", ca.Cert.IsCA, ca.Cert.Subject.CommonName)
	}
	want := []identity.Identity{
		{Role: identity.RoleGateway},
		{Role: identity.RoleBank, Name: "bank-a"},
		{Role: identity.RoleBank, Name: "bank-b"},
		{Role: identity.RoleClient, Name: "cli"},
	}
	for _, id := range want {
		t.Run(id.String(), func(t *testing.T) {
			t.Parallel()
			f := pki.LeafFiles(dir, id)
			cert, err := pki.LoadCertificate(f.Cert)
			if err != nil {
				t.Fatal(err)
			}
			// Clients authenticate clients only; the gateway and banks are servers and clients.
			if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Errorf("verify for client authentication: %v", err)
			}
			_, err = cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
			if server := id.Role != identity.RoleClient; (err == nil) != server {
				t.Errorf("verify for server authentication: %v; want success %v", err, server)
			}
			if !slices.Equal(cert.ExtKeyUsage, pki.ExtKeyUsages(id.Role)) || len(cert.UnknownExtKeyUsage) != 0 {
				t.Errorf("extended key usages %v (unknown %v), want %v", cert.ExtKeyUsage, cert.UnknownExtKeyUsage, pki.ExtKeyUsages(id.Role))
			}
			if cert.KeyUsage != x509.KeyUsageDigitalSignature {
				t.Errorf("key usage %v, want digital signature only", cert.KeyUsage)
			}
			if len(cert.URIs) != 1 {
				t.Fatalf("URI SANs = %v, want exactly one", cert.URIs)
			}
			got, err := identity.FromCertificate(cert)
			if err != nil || got != id {
				t.Fatalf("identity = %v, %v; want %v", got, err, id)
			}
			for _, h := range pki.DefaultHosts {
				if err := cert.VerifyHostname(h); err != nil {
					t.Errorf("host %s: %v", h, err)
				}
			}
			if _, err := tls.LoadX509KeyPair(f.Cert, f.Key); err != nil {
				t.Errorf("key pair: %v", err)
			}
			keyPEM, err := os.ReadFile(f.Key)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(keyPEM, []byte("-----BEGIN PRIVATE KEY-----")) {
				t.Errorf("key is not PKCS#8 PEM: %.40q", keyPEM)
			}
		})
	}
}

func TestGenerateKeyFilesArePrivate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	rep, err := pki.GenerateReport(dir, pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// CA (2) + gateway (2) + three banks (6) + one client (2).
	if len(rep.Written) != 12 || len(rep.Kept) != 0 {
		t.Fatalf("written %d kept %d, want 12 and 0: %v", len(rep.Written), len(rep.Kept), rep.Written)
	}
	for _, p := range rep.Written {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		want := os.FileMode(0o644)
		if strings.HasSuffix(p, "-key.pem") {
			want = 0o600
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", filepath.Base(p), fi.Mode().Perm(), want)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	for _, n := range []string{"ca.pem", "ca-key.pem", "gateway.pem", "gateway-key.pem", "bank-bank1.pem", "bank-bank3-key.pem", "client-cli.pem", "client-cli-key.pem"} {
		if !slices.Contains(names, n) {
			t.Errorf("missing %s in %v", n, names)
		}
	}
	if len(names) != 12 {
		t.Errorf("dir has %d entries, want 12 (no temporary files left): %v", len(names), names)
	}
}

func TestGenerateIsIdempotent(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := pki.Generate(dir, pki.Options{}); err != nil {
		t.Fatal(err)
	}
	read := func(name string) []byte {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	caBefore, gwBefore := read("ca.pem"), read("gateway.pem")

	// A missing leaf is the only thing made again; a new bank gets a certificate.
	if err := os.Remove(filepath.Join(dir, "bank-bank2.pem")); err != nil {
		t.Fatal(err)
	}
	rep, err := pki.GenerateReport(dir, pki.Options{Banks: []string{"bank1", "bank2", "bank3", "bank4"}})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(caBefore, read("ca.pem")) {
		t.Error("second Generate replaced the CA")
	}
	if !bytes.Equal(gwBefore, read("gateway.pem")) {
		t.Error("second Generate replaced a valid leaf")
	}
	var written []string
	for _, p := range rep.Written {
		written = append(written, filepath.Base(p))
	}
	slices.Sort(written)
	want := []string{"bank-bank2-key.pem", "bank-bank2.pem", "bank-bank4-key.pem", "bank-bank4.pem"}
	if !slices.Equal(written, want) {
		t.Errorf("written = %v, want %v", written, want)
	}
	ca, err := pki.LoadCA(filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.LoadCertificate(filepath.Join(dir, "bank-bank2.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool()}); err != nil {
		t.Errorf("reissued leaf does not verify against the kept CA: %v", err)
	}
}

func TestGenerateReissuesLeavesThatNoLongerFit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := pki.Generate(dir, pki.Options{}); err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	// Replace bank1's certificate with an expired one and bank3's with one naming the wrong role.
	now := time.Now()
	write := func(id, as identity.Identity, notAfter time.Time) {
		t.Helper()
		leaf, err := pki.IssueLeaf(ca, as, pki.DefaultHosts, now.Add(-48*time.Hour), notAfter)
		if err != nil {
			t.Fatal(err)
		}
		f := pki.LeafFiles(dir, id)
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
	bank1 := identity.Identity{Role: identity.RoleBank, Name: "bank1"}
	bank3 := identity.Identity{Role: identity.RoleBank, Name: "bank3"}
	write(bank1, bank1, now.Add(-time.Hour))
	write(bank3, identity.Identity{Role: identity.RoleClient, Name: "bank3"}, now.Add(time.Hour))

	rep, err := pki.GenerateReport(dir, pki.Options{Hosts: []string{"localhost", "127.0.0.1", "::1", "bank.example"}})
	if err != nil {
		t.Fatal(err)
	}
	// A new host makes every leaf stale.
	if len(rep.Written) != 10 {
		t.Errorf("written %d files, want 10 (every leaf): %v", len(rep.Written), rep.Written)
	}
	for _, id := range []identity.Identity{bank1, bank3} {
		cert, err := pki.LoadCertificate(pki.LeafFiles(dir, id).Cert)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool()}); err != nil {
			t.Errorf("%s: %v", id, err)
		}
		if got, _ := identity.FromCertificate(cert); got != id {
			t.Errorf("identity %v, want %v", got, id)
		}
		if err := cert.VerifyHostname("bank.example"); err != nil {
			t.Errorf("%s: %v", id, err)
		}
	}
}

func TestGenerateRefusesBadInput(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		setup func(dir string) error
		opts  pki.Options
		want  string
	}{
		{name: "bad bank name", opts: pki.Options{Banks: []string{"../evil"}}, want: "invalid name"},
		{name: "bad client name", opts: pki.Options{Clients: []string{"Cli"}}, want: "invalid name"},
		{
			name:  "CA certificate without key",
			setup: func(dir string) error { return os.WriteFile(filepath.Join(dir, "ca.pem"), []byte("x"), 0o644) },
			want:  "only one of",
		},
		{
			name: "CA key that does not match",
			setup: func(dir string) error {
				if err := pki.Generate(dir, pki.Options{}); err != nil {
					return err
				}
				other, err := pki.NewCA("other", time.Now(), time.Now().Add(time.Hour))
				if err != nil {
					return err
				}
				key, err := other.KeyPEM()
				if err != nil {
					return err
				}
				return os.WriteFile(filepath.Join(dir, "ca-key.pem"), key, 0o600)
			},
			want: "does not match",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if tt.setup != nil {
				if err := tt.setup(dir); err != nil {
					t.Fatal(err)
				}
			}
			err := pki.Generate(dir, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "pki: ") {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// handshake runs one TLS handshake between server and client over loopback TCP and returns the
// server's and the client's errors.
func handshake(t *testing.T, server, client *tls.Config) (serverErr, clientErr error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		sc, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		s := tls.Server(sc, server)
		err = s.HandshakeContext(ctx)
		if err == nil {
			// TLS 1.3 checks the client certificate after the client's handshake returns: write
			// once so the client learns the verdict when it reads.
			_, _ = s.Write([]byte{1})
		}
		_ = s.Close()
		done <- err
	}()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Client(cc, client)
	clientErr = c.HandshakeContext(ctx)
	if clientErr == nil {
		_, clientErr = c.Read(make([]byte, 1))
	}
	_ = c.Close()
	return <-done, clientErr
}

func TestTLSConfigs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := pki.Generate(dir, pki.Options{}); err != nil {
		t.Fatal(err)
	}
	caFile := pki.CAFile(dir)
	gw := pki.LeafFiles(dir, identity.Identity{Role: identity.RoleGateway})
	bank1 := pki.LeafFiles(dir, identity.Identity{Role: identity.RoleBank, Name: "bank1"})

	server, err := pki.ServerTLS(caFile, bank1.Cert, bank1.Key, tls.RequireAndVerifyClientCert)
	if err != nil {
		t.Fatal(err)
	}
	if server.MinVersion != tls.VersionTLS13 || !slices.Equal(server.NextProtos, []string{"h2", "http/1.1"}) {
		t.Fatalf("server config: min %x protos %v", server.MinVersion, server.NextProtos)
	}
	client, err := pki.ClientTLS(caFile, gw.Cert, gw.Key)
	if err != nil {
		t.Fatal(err)
	}
	client.ServerName = "localhost"
	if client.MinVersion != tls.VersionTLS13 {
		t.Fatalf("client min version %x", client.MinVersion)
	}

	foreign, err := pki.NewCA("foreign", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	foreignLeaf, err := pki.IssueLeaf(foreign, identity.Identity{Role: identity.RoleGateway}, []string{"localhost"}, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	foreignCert := foreignLeaf.TLSCertificate()
	withForeignCert := client.Clone()
	withForeignCert.Certificates = []tls.Certificate{foreignCert}
	noCert, err := pki.ClientTLS(caFile, "", "")
	if err != nil {
		t.Fatal(err)
	}
	noCert.ServerName = "localhost"

	tests := []struct {
		name    string
		client  *tls.Config
		wantErr bool
	}{
		{name: "gateway certificate", client: client},
		{name: "expecting bank1", client: pki.ExpectServer(client, bank1.Identity)},
		{name: "expecting bank2", client: pki.ExpectServer(client, identity.Identity{Role: identity.RoleBank, Name: "bank2"}), wantErr: true},
		{name: "foreign client certificate", client: withForeignCert, wantErr: true},
		{name: "no client certificate", client: noCert, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			serr, cerr := handshake(t, server, tt.client)
			if got := serr != nil || cerr != nil; got != tt.wantErr {
				t.Fatalf("server err %v, client err %v; want failure %v", serr, cerr, tt.wantErr)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := pki.ServerTLS(junk, junk, junk, tls.RequireAndVerifyClientCert); err == nil {
		t.Error("ServerTLS accepted junk")
	}
	if _, err := pki.ClientTLS(filepath.Join(dir, "missing.pem"), "", ""); err == nil {
		t.Error("ClientTLS accepted a missing CA")
	}
	if _, err := pki.LoadCertificate(junk); err == nil {
		t.Error("LoadCertificate accepted junk")
	}
}
