package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"

	"github.com/paygate/paygate/internal/pki"
	"github.com/paygate/paygate/internal/rpcserver"
)

// CeilingServer is a paygate RPC server with nothing mounted but what every server has (health
// and reflection): the same TLS, interceptors and HTTP/2 settings as the banks and the gateway.
// An empty unary call to it, grpc.health.v1.Health/Check, costs what the transport costs.
type CeilingServer struct {
	URL       string
	ClientTLS *tls.Config
	srv       *rpcserver.Server
	dir       string
	served    chan error
}

// StartCeilingServer makes a throwaway PKI in a temporary directory and serves on a loopback
// port, requiring client certificates as the banks do.
func StartCeilingServer() (*CeilingServer, error) {
	dir, err := os.MkdirTemp("", "paygate-ceiling-")
	if err != nil {
		return nil, err
	}
	c := &CeilingServer{dir: dir, served: make(chan error, 1)}
	fail := func(err error) (*CeilingServer, error) {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := pki.Generate(dir, pki.Options{Hosts: []string{"127.0.0.1"}, Banks: []string{"bank1"}}); err != nil {
		return fail(err)
	}
	serverTLS, err := pki.ServerTLS(pki.CAFile(dir), filepath.Join(dir, "bank-bank1.pem"), filepath.Join(dir, "bank-bank1-key.pem"),
		tls.RequireAndVerifyClientCert)
	if err != nil {
		return fail(err)
	}
	if c.ClientTLS, err = pki.ClientTLS(pki.CAFile(dir), filepath.Join(dir, "gateway.pem"), filepath.Join(dir, "gateway-key.pem")); err != nil {
		return fail(err)
	}
	if c.srv, err = rpcserver.New(rpcserver.Config{Name: "ceiling", TLS: serverTLS}); err != nil {
		return fail(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	c.URL = "https://" + ln.Addr().String()
	go func() { c.served <- c.srv.Serve(ln) }()
	return c, nil
}

// Close stops the server and removes its certificates.
func (c *CeilingServer) Close() error {
	err := c.srv.Shutdown(context.Background())
	if serr := <-c.served; err == nil {
		err = serr
	}
	os.RemoveAll(c.dir)
	return err
}

// Client returns a health client of the server over its own HTTP/2 connection pool.
func (c *CeilingServer) Client() *grpchealth.Client {
	return grpchealth.NewClient(rpcserver.NewHTTPClient(c.ClientTLS), c.URL, rpcserver.ClientOptions()...)
}

// runCeiling measures empty unary calls per second at cfg's concurrency over conns
// connections.
func runCeiling(ctx context.Context, cfg loadConfig, conns int) (*LoadResult, error) {
	srv, err := StartCeilingServer()
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	clients := make([]*grpchealth.Client, max(conns, 1))
	for i := range clients {
		clients[i] = srv.Client()
	}
	// One call first, so that a broken setup fails here rather than as a run of errors.
	if _, err := clients[0].Check(ctx, &grpchealth.CheckRequest{}); err != nil {
		return nil, errors.Join(errors.New("ceiling server does not answer"), err)
	}
	cfg.noun = "calls"
	return runLoad(ctx, cfg, func(ctx context.Context, w *worker) outcome {
		_, err := clients[w.id%len(clients)].Check(ctx, &grpchealth.CheckRequest{})
		if err != nil {
			return outcome{kind: Cross, code: connect.CodeOf(err).String()}
		}
		return outcome{kind: Cross, status: "succeeded", expected: true}
	}), nil
}
