package rpcserver

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"time"

	"connectrpc.com/connect"

	"github.com/paygate/paygate/internal/identity"
	"github.com/paygate/paygate/internal/pki"
)

// Keepalive of the HTTP/2 client connections made by NewHTTPClient.
const (
	// ClientReadIdleTimeout is how long a connection may stay silent before the client pings it.
	ClientReadIdleTimeout = 10 * time.Second
	// ClientPingTimeout is how long the client waits for a ping's answer before it closes the
	// connection, failing the calls on it.
	ClientPingTimeout = 5 * time.Second
	// clientWriteByteTimeout fails a connection whose peer stops reading.
	clientWriteByteTimeout = 10 * time.Second
)

// NewHTTPClient returns an HTTP client for calls between paygate services: HTTP/2 only, over TLS
// with tlsCfg (from pki.ClientTLS), on long-lived connections that are pinged when idle so that a
// dead peer is noticed within ClientReadIdleTimeout+ClientPingTimeout rather than at the TCP
// timeout. It sets no overall timeout: every call carries its own deadline in its context.
//
// It checks the server's chain and host name only; services call each other with
// NewBankHTTPClient and NewGatewayHTTPClient, which also check whom the server's certificate
// names.
func NewHTTPClient(tlsCfg *tls.Config) *http.Client {
	// net/http's own HTTP/2 client, as the servers use net/http's HTTP/2 server: HTTP/2 only,
	// negotiated by ALPN over TLS.
	var protocols http.Protocols
	protocols.SetHTTP2(true)
	return &http.Client{
		Transport: &http.Transport{
			TLSClientConfig:     tlsCfg,
			Protocols:           &protocols,
			TLSHandshakeTimeout: 10 * time.Second,
			IdleConnTimeout:     idleTimeout,
			HTTP2: &http.HTTP2Config{
				SendPingTimeout:  ClientReadIdleTimeout,
				PingTimeout:      ClientPingTimeout,
				WriteByteTimeout: clientWriteByteTimeout,
			},
		},
	}
}

// NewBankHTTPClient is NewHTTPClient for calls to bank name only: the TLS handshake fails
// (pki.ExpectServer), before any request is sent, unless the server's certificate names
// exactly spiffe://paygate/bank/<name>. The gateway makes one per bank.
func NewBankHTTPClient(tlsCfg *tls.Config, name string) (*http.Client, error) {
	want := identity.Identity{Role: identity.RoleBank, Name: name}
	if err := want.Validate(); err != nil {
		return nil, fmt.Errorf("rpcserver: bank %q: %w", name, err)
	}
	return NewHTTPClient(pki.ExpectServer(tlsCfg, want)), nil
}

// NewGatewayHTTPClient is NewHTTPClient for calls to the gateway only: the TLS handshake fails,
// before any request is sent, unless the server's certificate names spiffe://paygate/gateway.
func NewGatewayHTTPClient(tlsCfg *tls.Config) *http.Client {
	return NewHTTPClient(pki.ExpectServer(tlsCfg, identity.Identity{Role: identity.RoleGateway}))
}

// ClientOptions returns the options of Connect clients between paygate services: they speak the
// gRPC protocol (connect.WithGRPC), the binary protocol every gRPC tool also speaks, with
// trailers for status. A call made in the context of a call a Server is handling forwards that
// call's request id (RequestIDFrom) in RequestIDHeader, unless the request already has one.
// Interceptors, when given, run outside that one, e.g. tracing.ClientInterceptor's; nil ones are
// skipped. Append call-specific options after them.
func ClientOptions(interceptors ...connect.Interceptor) []connect.ClientOption {
	chain := make([]connect.Interceptor, 0, len(interceptors)+1)
	for _, i := range interceptors {
		if i != nil {
			chain = append(chain, i)
		}
	}
	return []connect.ClientOption{
		connect.WithGRPC(),
		connect.WithCompressMinBytes(compressMinBytes),
		connect.WithInterceptors(append(chain, requestIDClientInterceptor{})...),
	}
}
