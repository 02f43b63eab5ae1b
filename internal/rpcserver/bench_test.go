package rpcserver_test

import (
	"context"
	"crypto/tls"
	"net"
	"path/filepath"
	"testing"

	"connectrpc.com/grpchealth"

	"github.com/paygate/paygate/internal/pki"
	"github.com/paygate/paygate/internal/rpcserver"
)

// BenchmarkEmptyUnaryCall measures the ceiling of every paygate RPC: an empty unary call
// (grpc.health.v1.Health/Check) to a Server with its interceptors, over mutual TLS and HTTP/2 on
// loopback, from a client made as the services make theirs (NewHTTPClient, ClientOptions). The
// client and server share this process. The concurrency is SetParallelism(32) × GOMAXPROCS:
// 64 on two cores, the default concurrency of `paygate bench`. Allocations are the client's and
// the server's together.
func BenchmarkEmptyUnaryCall(b *testing.B) {
	dir := b.TempDir()
	if err := pki.Generate(dir, pki.Options{Hosts: []string{"127.0.0.1"}, Banks: []string{"bank1"}}); err != nil {
		b.Fatal(err)
	}
	serverTLS, err := pki.ServerTLS(pki.CAFile(dir), filepath.Join(dir, "bank-bank1.pem"), filepath.Join(dir, "bank-bank1-key.pem"),
		tls.RequireAndVerifyClientCert)
	if err != nil {
		b.Fatal(err)
	}
	clientTLS, err := pki.ClientTLS(pki.CAFile(dir), filepath.Join(dir, "gateway.pem"), filepath.Join(dir, "gateway-key.pem"))
	if err != nil {
		b.Fatal(err)
	}
	srv, err := rpcserver.New(rpcserver.Config{Name: "bench", TLS: serverTLS})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Shutdown(context.Background()) })

	client := grpchealth.NewClient(rpcserver.NewHTTPClient(clientTLS), "https://"+ln.Addr().String(), rpcserver.ClientOptions()...)
	ctx := context.Background()
	if _, err := client.Check(ctx, &grpchealth.CheckRequest{}); err != nil {
		b.Fatal(err) // and the connection is up before the clock starts
	}
	b.ReportAllocs()
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := client.Check(ctx, &grpchealth.CheckRequest{}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
}
