package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/paygate/paygate/internal/cluster"
	"github.com/paygate/paygate/internal/identity"
	"github.com/paygate/paygate/internal/pki"
)

// runCmd runs paygate in-process and returns its exit code, stdout and stderr.
func runCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestCertsWritesAndKeeps(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "certs")
	code, out, errOut := runCmd(t, "certs", "--out", dir, "--banks", "bank-a, bank-b", "--clients", "cli,ops", "--hosts", "localhost,10.0.0.7")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, name := range []string{"ca.pem", "ca-key.pem", "gateway.pem", "gateway-key.pem", "bank-bank-a.pem", "bank-bank-b-key.pem", "client-ops.pem", "client-cli-key.pem"} {
		if !strings.Contains(out, "wrote "+filepath.Join(dir, name)+"\n") {
			t.Errorf("output does not list %s:\n%s", name, out)
		}
	}
	if n := strings.Count(out, "wrote "); n != 12 {
		t.Errorf("%d files written, want 12:\n%s", n, out)
	}
	cert, err := pki.LoadCertificate(filepath.Join(dir, "bank-bank-b.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := identity.FromCertificate(cert); id != (identity.Identity{Role: identity.RoleBank, Name: "bank-b"}) {
		t.Errorf("bank-b certificate names %v", id)
	}
	if err := cert.VerifyHostname("10.0.0.7"); err != nil {
		t.Error(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("ca-key.pem mode %v", fi.Mode().Perm())
	}

	// Again: everything is kept.
	code, out, errOut = runCmd(t, "certs", "--out", dir, "--banks", "bank-a,bank-b", "--clients", "cli,ops", "--hosts", "localhost,10.0.0.7")
	if code != exitOK {
		t.Fatalf("second run: exit %d: %s", code, errOut)
	}
	if strings.Contains(out, "wrote ") || strings.Count(out, "kept ") != 12 {
		t.Errorf("second run changed files:\n%s", out)
	}
}

func TestCertsFromEnvironment(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("PAYGATE_OUT", dir)
	t.Setenv("PAYGATE_BANKS", "solo")
	code, out, errOut := runCmd(t, "certs")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, filepath.Join(dir, "bank-solo.pem")) || strings.Contains(out, "bank-bank1") {
		t.Errorf("environment not used:\n%s", out)
	}
	// A flag wins over the environment.
	other := t.TempDir()
	if code, _, errOut := runCmd(t, "certs", "--out", other); code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(other, "bank-solo.pem")); err != nil {
		t.Errorf("flag --out ignored: %v", err)
	}
	t.Setenv("PAYGATE_VALIDITY", "soon")
	if code, _, errOut := runCmd(t, "certs"); code != exitUsage || !strings.Contains(errOut, "PAYGATE_VALIDITY") {
		t.Errorf("bad environment value: exit %d: %s", code, errOut)
	}
}

func TestUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		args      []string
		wantCode  int
		wantInErr []string
	}{
		{name: "root help", args: []string{"--help"}, wantCode: exitOK, wantInErr: []string{"SUBCOMMANDS", "certs", "make a development CA"}},
		{name: "no subcommand", args: nil, wantCode: exitUsage, wantInErr: []string{"SUBCOMMANDS"}},
		{name: "unknown subcommand", args: []string{"frobnicate"}, wantCode: exitUsage, wantInErr: []string{`unknown subcommand "frobnicate"`}},
		{name: "certs help", args: []string{"certs", "--help"}, wantCode: exitOK, wantInErr: []string{"-out", "-hosts localhost,127.0.0.1,::1", "-banks bank1,bank2,bank3", "-clients cli"}},
		{name: "certs without --out", args: []string{"certs"}, wantCode: exitUsage, wantInErr: []string{"--out is required", "paygate certs --help"}},
		{name: "unknown flag", args: []string{"certs", "--nope"}, wantCode: exitUsage, wantInErr: []string{"-nope"}},
		{name: "stray argument", args: []string{"certs", "--out", "x", "extra"}, wantCode: exitUsage, wantInErr: []string{"unexpected arguments: extra"}},
		{name: "bad bank name", args: []string{"certs", "--out", "x", "--banks", "../up"}, wantCode: exitUsage, wantInErr: []string{`invalid name "../up"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, _, errOut := runCmd(t, tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tt.wantCode, errOut)
			}
			for _, want := range tt.wantInErr {
				if !strings.Contains(errOut, want) {
					t.Errorf("stderr lacks %q:\n%s", want, errOut)
				}
			}
		})
	}
}

func TestCertsFailure(t *testing.T) {
	t.Parallel()
	// --out names a file: making the directory fails, exit 1.
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := runCmd(t, "certs", "--out", file)
	if code != exitFailure || !strings.HasPrefix(errOut, "paygate: certs: pki: ") {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
}

func TestLogFlags(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		lf      logFlags
		wantErr bool
	}{
		{lf: logFlags{format: "json", level: "debug"}},
		{lf: logFlags{format: "text", level: "warn"}},
		{lf: logFlags{format: "xml", level: "info"}, wantErr: true},
		{lf: logFlags{format: "text", level: "chatty"}, wantErr: true},
	} {
		_, err := tt.lf.logger(&bytes.Buffer{})
		if (err != nil) != tt.wantErr {
			t.Errorf("%+v: err %v, want error %v", tt.lf, err, tt.wantErr)
		}
	}
}

// writePair writes cert and its key where pki.LeafFiles puts id's in dir.
func writePair(t *testing.T, dir string, id identity.Identity, cert *tls.Certificate) {
	t.Helper()
	f := pki.LeafFiles(dir, id)
	der, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.Key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.Cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o644); err != nil {
		t.Fatal(err)
	}
}

// oldProfile replaces the client certificate cli in dir with one as paygate made them before
// client certificates lost server authentication.
func oldProfile(t *testing.T, dir string) {
	t.Helper()
	ca, err := pki.LoadCA(filepath.Join(dir, pki.CACertFile), filepath.Join(dir, pki.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	cli := identity.Identity{Role: identity.RoleClient, Name: "cli"}
	writePair(t, dir, cli, servingCertAs(t, ca, cli))
}

// wantClientOnly checks that dir's client certificate cli may authenticate clients only.
func wantClientOnly(t *testing.T, dir string) {
	t.Helper()
	cert, err := pki.LoadCertificate(pki.LeafFiles(dir, identity.Identity{Role: identity.RoleClient, Name: "cli"}).Cert)
	if err != nil {
		t.Fatal(err)
	}
	if !pki.HasRoleKeyUsages(cert, identity.RoleClient) {
		t.Errorf("client-cli.pem has extended key usages %v, want client authentication only", cert.ExtKeyUsage)
	}
}

func TestCertsReissuesLeavesOfAnOldProfile(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "certs")
	if code, _, errOut := runCmd(t, "certs", "--out", dir); code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	oldProfile(t, dir)
	code, out, errOut := runCmd(t, "certs", "--out", dir)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	cliPEM := filepath.Join(dir, "client-cli.pem")
	want := "reissued " + cliPEM + ": extended key usages [server client], want [client] for the client role\n"
	if !strings.Contains(out, want) {
		t.Errorf("output does not say %q:\n%s", want, out)
	}
	if !strings.Contains(out, "wrote "+cliPEM+"\n") || strings.Count(out, "wrote ") != 2 || strings.Count(out, "kept ") != 10 {
		t.Errorf("want client-cli's two files written and the other ten kept:\n%s", out)
	}
	wantClientOnly(t, dir)
}

// TestDevReissuesCertificatesOfAnOldProfile: `paygate dev` reuses the certificates of an earlier
// run, but reissues, and logs, those that do not fit the current profile.
func TestDevReissuesCertificatesOfAnOldProfile(t *testing.T) {
	if testing.Short() {
		t.Skip("starts paygate dev")
	}
	t.Parallel()
	bin := cluster.Binary(t)
	work := t.TempDir()
	dir := filepath.Join(work, "state")
	certDir := filepath.Join(dir, "certs")
	if err := pki.Generate(certDir, pki.Options{}); err != nil {
		t.Fatal(err)
	}
	oldProfile(t, certDir)
	caBefore, err := os.ReadFile(filepath.Join(certDir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	gwBefore, err := os.ReadFile(filepath.Join(certDir, "gateway.pem"))
	if err != nil {
		t.Fatal(err)
	}

	d := startDevProcess(t, bin, work, dir, nil, "dev", "--dir", dir, "--listen", cluster.FreePort(t), "--web", "")
	wantClientOnly(t, certDir)
	if out := d.out.String(); !strings.Contains(out, "dev: reissued certificate") || !strings.Contains(out, "client-cli.pem") ||
		!strings.Contains(out, "want [client] for the client role") {
		t.Errorf("paygate dev does not log that it reissued client-cli.pem:\n%s", out)
	}
	for name, before := range map[string][]byte{"ca.pem": caBefore, "gateway.pem": gwBefore} {
		if now, _ := os.ReadFile(filepath.Join(certDir, name)); !bytes.Equal(now, before) {
			t.Errorf("%s was replaced; only the client certificate needed to be", name)
		}
	}
	// The new client certificate works.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	devBalances(ctx, t, devLogin(ctx, t, d.info, "alice"))
	d.interrupt()
}
