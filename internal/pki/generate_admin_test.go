package pki_test

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/paygate/paygate/internal/identity"
	"github.com/paygate/paygate/internal/pki"
)

func TestGenerateAdminCertificates(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// A client and an admin of the same name are two identities in two files.
	rep, err := pki.GenerateReport(dir, pki.Options{Clients: []string{"ops"}, Admins: []string{"ops", "erin"}})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(filepath.Join(dir, pki.CACertFile), filepath.Join(dir, pki.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"ops", "erin"} {
		id := identity.Identity{Role: identity.RoleAdmin, Name: name}
		f := pki.LeafFiles(dir, id)
		if want := filepath.Join(dir, "admin-"+name+".pem"); f.Cert != want || f.Key != filepath.Join(dir, "admin-"+name+"-key.pem") {
			t.Fatalf("files %s %s, want %s and its -key.pem twin", f.Cert, f.Key, want)
		}
		if !slices.Contains(rep.Written, f.Cert) || !slices.Contains(rep.Written, f.Key) {
			t.Errorf("%s: not reported written: %v", name, rep.Written)
		}
		cert, err := pki.LoadCertificate(f.Cert)
		if err != nil {
			t.Fatal(err)
		}
		got, err := identity.FromCertificate(cert)
		if err != nil || got != id || got.String() != "spiffe://paygate/admin/"+name {
			t.Fatalf("identity = %v, %v; want %v", got, err, id)
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("%s: verify for client authentication: %v", name, err)
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
			t.Errorf("%s: an admin certificate verifies for server authentication", name)
		}
		if !pki.HasRoleKeyUsages(cert, identity.RoleAdmin) {
			t.Errorf("%s: extended key usages %v, want %v", name, cert.ExtKeyUsage, pki.ExtKeyUsages(identity.RoleAdmin))
		}
		fi, err := os.Stat(f.Key)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: key mode %v, want 0600", f.Key, fi.Mode().Perm())
		}
	}
	client, err := pki.LoadCertificate(pki.LeafFiles(dir, identity.Identity{Role: identity.RoleClient, Name: "ops"}).Cert)
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := identity.FromCertificate(client); id.Role != identity.RoleClient {
		t.Errorf("client-ops.pem names %v, want the client role", id)
	}

	// Again: every admin certificate is kept.
	rep, err = pki.GenerateReport(dir, pki.Options{Clients: []string{"ops"}, Admins: []string{"ops", "erin"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Written) != 0 || len(rep.Replaced) != 0 {
		t.Errorf("second run wrote %v, replaced %v; want everything kept", rep.Written, rep.Replaced)
	}
}

func TestGenerateMakesNoAdminCertificateByDefault(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := pki.Generate(dir, pki.Options{}); err != nil {
		t.Fatal(err)
	}
	matches, err := filepath.Glob(filepath.Join(dir, "admin-*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(matches) != 0 {
		t.Errorf("admin files without Admins: %v", matches)
	}
}

func TestGenerateRefusesBadAdminName(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"Ops", "../ops", "", "-ops"} {
		err := pki.Generate(t.TempDir(), pki.Options{Admins: []string{name}})
		if err == nil || !strings.Contains(err.Error(), "invalid name") {
			t.Errorf("admin %q: err = %v, want invalid name", name, err)
		}
	}
}
