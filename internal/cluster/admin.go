package cluster

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"connectrpc.com/connect"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
	"github.com/paygate/paygate/internal/identity"
	"github.com/paygate/paygate/internal/launch"
	"github.com/paygate/paygate/internal/pki"
	"github.com/paygate/paygate/internal/rpcserver"
)

// AdminCert returns the paths of the certificate and key of admin name (identity
// spiffe://paygate/admin/<name>), issuing them with the cluster's CA on first use.
func (c *Cluster) AdminCert(name string) pki.Files {
	c.t.Helper()
	id := identity.Identity{Role: identity.RoleAdmin, Name: name}
	f := pki.LeafFiles(c.CertDir, id)
	if _, err := os.Stat(f.Cert); err == nil {
		return f
	}
	ca, err := pki.LoadCA(filepath.Join(c.CertDir, pki.CACertFile), filepath.Join(c.CertDir, pki.CAKeyFile))
	if err != nil {
		c.t.Fatal(err)
	}
	leaf, err := pki.IssueLeaf(ca, id, nil, time.Now().Add(-time.Minute), time.Now().Add(24*time.Hour))
	if err != nil {
		c.t.Fatal(err)
	}
	key, err := leaf.KeyPEM()
	if err != nil {
		c.t.Fatal(err)
	}
	if err := os.WriteFile(f.Key, key, 0o600); err != nil {
		c.t.Fatal(err)
	}
	if err := os.WriteFile(f.Cert, leaf.CertPEM(), 0o644); err != nil {
		c.t.Fatal(err)
	}
	return f
}

// CertHTTP returns an HTTP client of the gateway's API listener presenting the certificate
// and key files f.
func (c *Cluster) CertHTTP(f pki.Files) *http.Client {
	c.t.Helper()
	tlsCfg, err := pki.ClientTLS(filepath.Join(c.CertDir, pki.CACertFile), f.Cert, f.Key)
	if err != nil {
		c.t.Fatal(err)
	}
	return rpcserver.NewHTTPClient(tlsCfg)
}

// ClientCert returns the paths of client certificate name ("cli", "other").
func (c *Cluster) ClientCert(name string) pki.Files {
	return pki.LeafFiles(c.CertDir, identity.Identity{Role: identity.RoleClient, Name: name})
}

// Admin is a signed-in operator's clients of one gateway listener.
type Admin struct {
	Name  string
	Token string
	Auth  gatewayv1connect.AuthServiceClient
	Admin gatewayv1connect.AdminServiceClient
}

// AdminClients returns clients of the gateway listener at url ("https://host:port") through
// hc, sending token when it is set.
func AdminClients(hc *http.Client, url, token string) *Admin {
	opts := []connect.ClientOption{connect.WithGRPC()}
	if token != "" {
		opts = append(opts, connect.WithInterceptors(bearer(token)))
	}
	return &Admin{
		Token: token,
		Auth:  gatewayv1connect.NewAuthServiceClient(hc, url, opts...),
		Admin: gatewayv1connect.NewAdminServiceClient(hc, url, opts...),
	}
}

// LoginWith logs username in through hc at the gateway listener url with password and TOTP
// code (empty for none) and returns clients that send the token, with the login's answer.
func LoginWith(ctx context.Context, hc *http.Client, url, username, password, code string) (*Admin, *gatewayv1.LoginResponse, error) {
	resp, err := AdminClients(hc, url, "").Auth.Login(ctx, connect.NewRequest(&gatewayv1.LoginRequest{
		Username: username, Password: password, TotpCode: code}))
	if err != nil {
		return nil, nil, err
	}
	a := AdminClients(hc, url, resp.Msg.GetToken())
	a.Name = username
	return a, resp.Msg, nil
}

// GatewayDataDir is the data directory of the (first) gateway: its SQLite store.
func (c *Cluster) GatewayDataDir() string { return c.sys.DataDir(launch.GatewayName) }
