package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/paygate/paygate/internal/pki"
)

func init() { register(newCertsCommand) }

// certsConfig is what `paygate certs` does.
type certsConfig struct {
	Dir  string
	Opts pki.Options
}

// Validate reports the first problem of c.
func (c certsConfig) Validate() error {
	if c.Dir == "" {
		return usageErrorf("--out is required")
	}
	if err := c.Opts.Validate(); err != nil {
		return usageErrorf("%v", err)
	}
	return nil
}

func newCertsCommand(e *env) *ffcli.Command {
	fs := newFlagSet(e, "certs")
	out := fs.String("out", "", "directory for the certificates and keys (required)")
	hosts := fs.String("hosts", strings.Join(pki.DefaultHosts, ","), "comma-separated DNS names and IP addresses the servers answer on")
	banks := fs.String("banks", strings.Join(pki.DefaultBanks, ","), "comma-separated bank names; each gets a bank certificate")
	clients := fs.String("clients", strings.Join(pki.DefaultClients, ","), "comma-separated client names; each gets a client certificate")
	admins := fs.String("admins", "", "comma-separated admin names; each gets an admin certificate (spiffe://paygate/admin/<name>), which AdminService calls on the API listener present (default: none)")
	validity := fs.Duration("validity", pki.DefaultValidity, "how long the leaf certificates are valid")

	return &ffcli.Command{
		Name:       "certs",
		ShortUsage: "paygate certs --out DIR [flags]",
		ShortHelp:  "make a development CA and certificates for the gateway, banks, clients and admins",
		LongHelp: "Makes a CA (ca.pem, ca-key.pem) and one certificate and key per party:\n" +
			"gateway.pem, bank-<name>.pem, client-<name>.pem and, with --admins,\n" +
			"admin-<name>.pem, each with a -key.pem twin. Each certificate names its role in\n" +
			"a URI SAN (spiffe://paygate/gateway, spiffe://paygate/bank/<name>,\n" +
			"spiffe://paygate/client/<name>, spiffe://paygate/admin/<name>). Client and admin\n" +
			"certificates may authenticate clients only; gateway and bank certificates also\n" +
			"serve TLS. On the API listener, AdminService calls need an admin certificate:\n" +
			"  paygate certs --out certs --admins ops\n" +
			"  paygate login --certs certs --cert certs/admin-ops.pem --key certs/admin-ops-key.pem --totp 123456 ops\n" +
			"Running it again keeps the CA and every certificate that is still valid, makes the\n" +
			"missing ones and reissues (saying why) those that no longer fit: expired, another\n" +
			"identity, other hosts, or other key usages than their role's.\n" +
			"Keys are written with mode 0600; never commit them.",
		FlagSet: fs,
		Options: ffOptions(),
		Exec: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return usageErrorf("unexpected arguments: %s", strings.Join(args, " "))
			}
			cfg := certsConfig{
				Dir: *out,
				Opts: pki.Options{
					Hosts:    splitList(*hosts),
					Banks:    splitList(*banks),
					Clients:  splitList(*clients),
					Admins:   splitList(*admins),
					Validity: *validity,
				},
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			return runCerts(ctx, cfg, e.stdout)
		},
	}
}

// runCerts makes the certificates and prints what it wrote and kept.
func runCerts(_ context.Context, cfg certsConfig, stdout io.Writer) error {
	if cfg.Opts.Validity < time.Minute && cfg.Opts.Validity != 0 {
		return usageErrorf("--validity %v is too short", cfg.Opts.Validity)
	}
	rep, err := pki.GenerateReport(cfg.Dir, cfg.Opts)
	if err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	for _, r := range rep.Replaced {
		fmt.Fprintf(stdout, "reissued %s: %s\n", r.Cert, r.Reason)
	}
	for _, f := range rep.Written {
		fmt.Fprintf(stdout, "wrote %s\n", f)
	}
	for _, f := range rep.Kept {
		fmt.Fprintf(stdout, "kept  %s\n", f)
	}
	return nil
}
