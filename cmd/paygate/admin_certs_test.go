package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/paygate/paygate/internal/identity"
	"github.com/paygate/paygate/internal/pki"
)

func TestCertsAdmins(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "certs")
	code, out, errOut := runCmd(t, "certs", "--out", dir, "--admins", "ops, erin")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, name := range []string{"ops", "erin"} {
		for _, f := range []string{"admin-" + name + ".pem", "admin-" + name + "-key.pem"} {
			if !strings.Contains(out, "wrote "+filepath.Join(dir, f)+"\n") {
				t.Errorf("output does not list %s:\n%s", f, out)
			}
		}
		cert, err := pki.LoadCertificate(filepath.Join(dir, "admin-"+name+".pem"))
		if err != nil {
			t.Fatal(err)
		}
		if id, _ := identity.FromCertificate(cert); id != (identity.Identity{Role: identity.RoleAdmin, Name: name}) {
			t.Errorf("admin-%s.pem names %v", name, id)
		}
		if !pki.HasRoleKeyUsages(cert, identity.RoleAdmin) {
			t.Errorf("admin-%s.pem: extended key usages %v, want client authentication only", name, cert.ExtKeyUsage)
		}
	}

	// Without --admins: none, and the ones made before are left alone.
	code, out, errOut = runCmd(t, "certs", "--out", dir)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if strings.Contains(out, "admin-") {
		t.Errorf("certs without --admins mentions admin files:\n%s", out)
	}
	other := filepath.Join(t.TempDir(), "certs")
	if code, _, errOut := runCmd(t, "certs", "--out", other); code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if m, _ := filepath.Glob(filepath.Join(other, "admin-*")); len(m) != 0 {
		t.Errorf("admin files by default: %v", m)
	}

	if code, _, errOut := runCmd(t, "certs", "--out", dir, "--admins", "Ops"); code != exitUsage || !strings.Contains(errOut, `invalid name "Ops"`) {
		t.Errorf("bad admin name: exit %d: %s", code, errOut)
	}
}
