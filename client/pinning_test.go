package client_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paygate/paygate/client"
	"github.com/paygate/paygate/internal/identity"
	"github.com/paygate/paygate/internal/pki"
)

// impostor is a TLS server on loopback presenting a certificate of the test CA that is not the
// gateway's. It records the handshakes attempted and every byte received after one completed.
type impostor struct {
	ln net.Listener

	mu         sync.Mutex
	handshakes int
	received   []byte
}

func newImpostor(t *testing.T, cert tls.Certificate) *impostor {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	im := &impostor{ln: ln}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS13}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				im.mu.Lock()
				im.handshakes++
				im.mu.Unlock()
				s := tls.Server(c, cfg)
				s.SetDeadline(time.Now().Add(10 * time.Second))
				if s.Handshake() != nil {
					return
				}
				buf := make([]byte, 4096)
				for {
					n, err := s.Read(buf)
					im.mu.Lock()
					im.received = append(im.received, buf[:n]...)
					im.mu.Unlock()
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return im
}

func (im *impostor) stats() (int, []byte) {
	im.mu.Lock()
	defer im.mu.Unlock()
	return im.handshakes, append([]byte(nil), im.received...)
}

// serverCertAs issues, with the test CA, a certificate naming id that may serve TLS, whatever
// id's role: what pki refuses to make for clients.
func serverCertAs(t *testing.T, id identity.Identity) tls.Certificate {
	t.Helper()
	ca, err := pki.LoadCA(filepath.Join(certDir, pki.CACertFile), filepath.Join(certDir, pki.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "impostor"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id.URI()},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func loadLeaf(t *testing.T, id identity.Identity) tls.Certificate {
	t.Helper()
	f := pki.LeafFiles(certDir, id)
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// TestClientTalksOnlyToTheGateway: a server signed by the gateway's CA but not naming the
// gateway is refused during the handshake, so Login never sends it the password.
func TestClientTalksOnlyToTheGateway(t *testing.T) {
	t.Parallel()
	cliFiles := pki.LeafFiles(certDir, identity.Identity{Role: identity.RoleClient, Name: "cli"})
	tlsCfg, err := pki.ClientTLS(pki.CAFile(certDir), cliFiles.Cert, cliFiles.Key)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		cert    tls.Certificate
		opt     client.Option
		wantErr string
	}{
		{name: "client certificate that may serve", cert: serverCertAs(t, identity.Identity{Role: identity.RoleClient, Name: "cli"}),
			opt: client.WithTLSDir(certDir), wantErr: "server certificate is spiffe://paygate/client/cli, not the gateway"},
		{name: "bank certificate", cert: loadLeaf(t, identity.Identity{Role: identity.RoleBank, Name: "bank1"}),
			opt: client.WithTLSDir(certDir), wantErr: "server certificate is spiffe://paygate/bank/bank1, not the gateway"},
		{name: "bank certificate, WithTLSConfig", cert: loadLeaf(t, identity.Identity{Role: identity.RoleBank, Name: "bank2"}),
			opt: client.WithTLSConfig(tlsCfg), wantErr: "server certificate is spiffe://paygate/bank/bank2, not the gateway"},
		{name: "generated client certificate", cert: loadLeaf(t, identity.Identity{Role: identity.RoleClient, Name: "cli"}),
			opt: client.WithTLSDir(certDir), wantErr: "incompatible key usage"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			im := newImpostor(t, tt.cert)
			c, err := client.New(im.ln.Addr().String(), tt.opt, client.WithTimeout(5*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err = c.Login(ctx, "alice", "alice-pass-123")
			n, got := im.stats()
			if n == 0 {
				t.Fatal("the client never reached the impostor")
			}
			if len(got) != 0 {
				t.Fatalf("the impostor received %d bytes after the handshake (Login: %v)", len(got), err)
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Login: %v; want an error containing %q", err, tt.wantErr)
			}
			if !strings.Contains(tt.wantErr, "key usage") && !errors.Is(err, client.ErrNotGateway) {
				t.Errorf("Login: %v is not a client.ErrNotGateway", err)
			}
			t.Logf("refused: %v", err)
		})
	}
}
