package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/paygate/paygate/internal/identity"
)

// Names of the CA files in a directory made by Generate.
const (
	CACertFile = "ca.pem"
	CAKeyFile  = "ca-key.pem"
)

// Defaults of Options.
var (
	DefaultHosts   = []string{"localhost", "127.0.0.1", "::1"}
	DefaultBanks   = []string{"bank1", "bank2", "bank3"}
	DefaultClients = []string{"cli"}
)

const (
	// DefaultValidity is how long generated leaf certificates are valid.
	DefaultValidity = 365 * 24 * time.Hour
	// caValidity is how long a generated CA is valid, at least.
	caValidity = 10 * 365 * 24 * time.Hour
	// backdate covers small clock differences between the machines of a deployment.
	backdate = time.Hour
)

// Options says what Generate makes. Zero fields take the defaults.
type Options struct {
	// Hosts become the DNS and IP SANs of every leaf. Default: DefaultHosts.
	Hosts []string
	// Banks get one certificate each with identity spiffe://paygate/bank/<name>. Default:
	// DefaultBanks.
	Banks []string
	// Clients get one certificate each with identity spiffe://paygate/client/<name>. Default:
	// DefaultClients.
	Clients []string
	// Admins get one certificate each with identity spiffe://paygate/admin/<name>, for
	// operators calling AdminService on the API listener; like client certificates they
	// authenticate clients only. Default: none.
	Admins []string
	// Validity of the leaf certificates. Default: DefaultValidity.
	Validity time.Duration
}

func (o Options) withDefaults() Options {
	if len(o.Hosts) == 0 {
		o.Hosts = DefaultHosts
	}
	if len(o.Banks) == 0 {
		o.Banks = DefaultBanks
	}
	if len(o.Clients) == 0 {
		o.Clients = DefaultClients
	}
	if o.Validity <= 0 {
		o.Validity = DefaultValidity
	}
	return o
}

// Validate reports the first invalid bank, client or admin name.
func (o Options) Validate() error {
	for _, names := range [][]string{o.Banks, o.Clients, o.Admins} {
		for _, n := range names {
			if !identity.ValidName(n) {
				return fmt.Errorf("pki: invalid name %q: use 1 to 63 of a-z, 0-9, '.', '_', '-', starting with a letter or digit", n)
			}
		}
	}
	return nil
}

// Files names the certificate and key files of one identity in a directory made by Generate.
type Files struct {
	Identity identity.Identity
	Cert     string
	Key      string
}

// LeafFiles returns where Generate keeps the certificate and key of id in dir:
// gateway.pem, bank-<name>.pem, client-<name>.pem, admin-<name>.pem, each with a -key.pem twin.
func LeafFiles(dir string, id identity.Identity) Files {
	base := string(id.Role)
	if id.Name != "" {
		base += "-" + id.Name
	}
	return Files{
		Identity: id,
		Cert:     filepath.Join(dir, base+".pem"),
		Key:      filepath.Join(dir, base+"-key.pem"),
	}
}

// CAFile returns the path of the CA certificate in dir.
func CAFile(dir string) string { return filepath.Join(dir, CACertFile) }

// Report says what Generate did.
type Report struct {
	// Written lists the files Generate created or replaced, in the order written.
	Written []string
	// Kept lists the files that were already valid and left alone.
	Kept []string
	// Replaced lists the leaves that existed but were issued again, and why.
	Replaced []Replacement
}

// Replacement is a leaf that Generate issued again over an existing one.
type Replacement struct {
	Files
	// Reason says what was wrong with the old leaf, e.g. "extended key usages [server client],
	// want [client] for the client role".
	Reason string
}

// Generate makes a development PKI in dir: a CA (ca.pem, ca-key.pem), a gateway certificate, one
// certificate per bank, one per client and one per admin. See GenerateReport.
func Generate(dir string, opts Options) error {
	_, err := GenerateReport(dir, opts)
	return err
}

// GenerateReport is Generate that also reports which files it wrote and which it kept.
//
// It is idempotent: an existing CA is reused, and an existing leaf is kept when its certificate
// and key match, it verifies against the CA now, names the expected identity as its only URI SAN,
// has exactly the extended key usages of its role (ExtKeyUsages) and covers every host;
// otherwise the leaf is issued again, and listed in Report.Replaced if it existed. A new CA
// replaces every leaf. Keys are written as PKCS#8 PEM with mode 0600, certificates with mode
// 0644, each file atomically.
func GenerateReport(dir string, opts Options) (*Report, error) {
	opts = opts.withDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pki: create %s: %w", dir, err)
	}
	rep := &Report{}
	now := time.Now()

	caCert, caKey := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	ca, created, err := ensureCA(caCert, caKey, now, opts.Validity)
	if err != nil {
		return nil, err
	}
	if created {
		rep.Written = append(rep.Written, caKey, caCert)
	} else {
		rep.Kept = append(rep.Kept, caKey, caCert)
	}

	ids := []identity.Identity{{Role: identity.RoleGateway}}
	for _, b := range opts.Banks {
		ids = append(ids, identity.Identity{Role: identity.RoleBank, Name: b})
	}
	for _, c := range opts.Clients {
		ids = append(ids, identity.Identity{Role: identity.RoleClient, Name: c})
	}
	for _, a := range opts.Admins {
		ids = append(ids, identity.Identity{Role: identity.RoleAdmin, Name: a})
	}
	for _, id := range ids {
		f := LeafFiles(dir, id)
		problem := "a new CA"
		if !created {
			problem = leafProblem(ca, f, opts.Hosts, now)
		}
		if problem == "" {
			rep.Kept = append(rep.Kept, f.Key, f.Cert)
			continue
		}
		if problem != problemMissing {
			if ok, _ := exists(f.Cert); ok {
				rep.Replaced = append(rep.Replaced, Replacement{Files: f, Reason: problem})
			}
		}
		leaf, err := IssueLeaf(ca, id, opts.Hosts, now.Add(-backdate), now.Add(opts.Validity))
		if err != nil {
			return nil, err
		}
		keyPEM, err := leaf.KeyPEM()
		if err != nil {
			return nil, err
		}
		// Key first: a crash between the two writes leaves a mismatch that the next run repairs.
		if err := writeFileAtomic(f.Key, keyPEM, 0o600); err != nil {
			return nil, err
		}
		if err := writeFileAtomic(f.Cert, leaf.CertPEM(), 0o644); err != nil {
			return nil, err
		}
		rep.Written = append(rep.Written, f.Key, f.Cert)
	}
	return rep, nil
}

// ensureCA loads the CA from certFile and keyFile, or creates it when neither exists.
func ensureCA(certFile, keyFile string, now time.Time, leafValidity time.Duration) (*CA, bool, error) {
	certExists, err := exists(certFile)
	if err != nil {
		return nil, false, err
	}
	keyExists, err := exists(keyFile)
	if err != nil {
		return nil, false, err
	}
	switch {
	case certExists && keyExists:
		ca, err := LoadCA(certFile, keyFile)
		if err != nil {
			return nil, false, err
		}
		return ca, false, nil
	case certExists != keyExists:
		return nil, false, fmt.Errorf("pki: only one of %s and %s exists; restore the other or remove both to make a new CA", certFile, keyFile)
	}
	validity := max(caValidity, leafValidity)
	ca, err := NewCA("paygate development CA", now.Add(-backdate), now.Add(validity))
	if err != nil {
		return nil, false, err
	}
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		return nil, false, err
	}
	if err := writeFileAtomic(keyFile, keyPEM, 0o600); err != nil {
		return nil, false, err
	}
	if err := writeFileAtomic(certFile, ca.CertPEM(), 0o644); err != nil {
		return nil, false, err
	}
	return ca, true, nil
}

// problemMissing is leafProblem's answer for a leaf whose certificate file does not exist.
const problemMissing = "missing"

// leafProblem says why the leaf in f cannot be kept, or "" when it can.
func leafProblem(ca *CA, f Files, hosts []string, now time.Time) string {
	if ok, err := exists(f.Cert); err == nil && !ok {
		return problemMissing
	}
	cert, err := LoadCertificate(f.Cert)
	if err != nil {
		return err.Error()
	}
	key, err := loadKey(f.Key)
	if err != nil {
		return err.Error()
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return "key does not match the certificate"
	}
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots:       ca.Pool(),
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return "does not verify against the CA: " + err.Error()
	}
	id, err := identity.FromCertificate(cert)
	if err != nil {
		return err.Error()
	}
	if id != f.Identity {
		return fmt.Sprintf("names %s, want %s", id, f.Identity)
	}
	if !HasRoleKeyUsages(cert, id.Role) {
		return fmt.Sprintf("extended key usages %s, want %s for the %s role",
			usageNames(cert.ExtKeyUsage, len(cert.UnknownExtKeyUsage)), usageNames(ExtKeyUsages(id.Role), 0), id.Role)
	}
	for _, h := range hosts {
		if cert.VerifyHostname(h) != nil {
			return "does not cover host " + h
		}
	}
	return ""
}

// HasRoleKeyUsages reports whether cert has exactly the extended key usages of role
// (ExtKeyUsages), in any order, and no others.
func HasRoleKeyUsages(cert *x509.Certificate, role identity.Role) bool {
	want := ExtKeyUsages(role)
	if want == nil || len(cert.UnknownExtKeyUsage) != 0 || len(cert.ExtKeyUsage) != len(want) {
		return false
	}
	for _, u := range want {
		if !slices.Contains(cert.ExtKeyUsage, u) {
			return false
		}
	}
	return true
}

// usageNames returns usages as "[server client]"; unknown counts usages crypto/x509 does not
// name.
func usageNames(usages []x509.ExtKeyUsage, unknown int) string {
	names := make([]string, 0, len(usages)+unknown)
	for _, u := range usages {
		switch u {
		case x509.ExtKeyUsageServerAuth:
			names = append(names, "server")
		case x509.ExtKeyUsageClientAuth:
			names = append(names, "client")
		case x509.ExtKeyUsageAny:
			names = append(names, "any")
		default:
			names = append(names, fmt.Sprintf("usage-%d", int(u)))
		}
	}
	for range unknown {
		names = append(names, "unknown")
	}
	return fmt.Sprint(names)
}

func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, fmt.Errorf("pki: %w", err)
}

// writeFileAtomic writes data to a temporary file in path's directory with mode perm, syncs it
// and renames it over path.
func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(perm); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	return nil
}
