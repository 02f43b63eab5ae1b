package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/paygate/paygate/internal/cluster"
	"github.com/paygate/paygate/internal/identity"
	"github.com/paygate/paygate/internal/pki"
)

// TestDevAdmin: paygate dev makes an admin with a certificate, keeps its password and second
// factor in dev.json (and across starts), shows them in the banner, and 'paygate login admin'
// signs in with them, code included; a customer who logs in afterwards presents the client
// certificate again.
func TestDevAdmin(t *testing.T) {
	t.Parallel()
	bin := cluster.Binary(t)
	work := t.TempDir()
	dir := filepath.Join(work, "state")
	config := filepath.Join(work, "config")
	api := cluster.FreePort(t) // both starts: the session keeps the address
	d := startDevProcess(t, bin, work, dir, nil, "dev", "--dir", dir, "--listen", api, "--web", "")

	a := d.info.Admin
	if a == nil || a.Username != "admin" || len(a.Password) < 20 || a.TOTPSecret == "" || !strings.HasPrefix(a.OTPAuthURL, "otpauth://totp/") {
		t.Fatalf("dev.json admin = %+v", a)
	}
	if want := pki.LeafFiles(filepath.Join(dir, "certs"), identity.Identity{Role: identity.RoleAdmin, Name: "admin"}); a.Cert != want.Cert || a.Key != want.Key {
		t.Errorf("dev.json admin certificate %s %s, want %s %s", a.Cert, a.Key, want.Cert, want.Key)
	}
	cert, err := pki.LoadCertificate(a.Cert)
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := identity.FromCertificate(cert); id.String() != "spiffe://paygate/admin/admin" {
		t.Errorf("the admin certificate names %v", id)
	}
	if st, err := os.Stat(filepath.Join(dir, devAdminFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("%s holds the admin's password and must be private: %v %v", devAdminFile, st.Mode(), err)
	}
	if want := "admin       admin  password " + a.Password + "  TOTP secret " + a.TOTPSecret; !strings.Contains(d.out.String(), want) {
		t.Errorf("the banner lacks %q:\n%s", want, d.out)
	}

	paygate := func(want int, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Dir = work
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + work, "PAYGATE_DEV_DIR=" + dir, "PAYGATE_CONFIG_DIR=" + config, "PAYGATE_STATE_DIR=" + filepath.Join(work, "queue")}
		out, err := cmd.CombinedOutput()
		if code := cmd.ProcessState.ExitCode(); code != want {
			t.Fatalf("paygate %s: exit %d (%v), want %d:\n%s", strings.Join(args, " "), code, err, want, out)
		}
		return string(out)
	}
	sessionCert := func() string {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(config, sessionFile))
		if err != nil {
			t.Fatal(err)
		}
		var s session
		if err := json.Unmarshal(data, &s); err != nil {
			t.Fatal(err)
		}
		return s.Cert
	}

	if out := paygate(0, "login", "admin"); !strings.Contains(out, "role: admin, second factor passed") {
		t.Fatalf("paygate login admin: %s", out)
	}
	if got := sessionCert(); got != a.Cert {
		t.Errorf("the admin's session presents %s, want the admin certificate", got)
	}
	var users struct {
		Users []userJSON `json:"users"`
	}
	if err := json.Unmarshal([]byte(paygate(0, "admin", "users", "list", "--json")), &users); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, u := range users.Users {
		names = append(names, u.Username)
	}
	if strings.Join(names, ",") != "admin,alice,bob,carol,dave" {
		t.Errorf("users %v", names)
	}

	paygate(0, "login", "alice")
	if got := sessionCert(); got != d.info.Certs.Cert {
		t.Errorf("alice after the admin presents %s, want %s", got, d.info.Certs.Cert)
	}
	paygate(0, "balance")
	d.interrupt()

	// The next start (dev.json removed first) has the same admin, and its login works again,
	// at once: the gateway accepts each code once, so this one is the next.
	d2 := startDevProcess(t, bin, work, dir, nil, "dev", "--dir", dir, "--listen", api, "--web", "")
	if b := d2.info.Admin; b == nil || b.Password != a.Password || b.TOTPSecret != a.TOTPSecret {
		t.Fatalf("second start: dev.json admin = %+v, want the first start's", b)
	}
	if out := paygate(0, "login", "admin"); !strings.Contains(out, "second factor passed") {
		t.Fatalf("paygate login admin after a restart: %s", out)
	}
	paygate(0, "admin", "ops")
	d2.interrupt()
}
