// Package rpcserver serves and calls paygate's Connect services over mutual TLS.
//
// Every paygate server (each bank, the gateway's listeners) is a Server: an http.Server speaking
// HTTP/1.1 and HTTP/2 over TLS, which puts the caller's certificate identity into each request's
// context (identity.Middleware) and serves the Connect, gRPC and gRPC-Web protocols, gRPC health
// (grpc.health.v1.Health) and server reflection (v1 and v1alpha), so that grpcurl and buf curl
// work against it.
//
// Handlers are built with the server's HandlerOptions, which chain these interceptors, outermost
// first:
//
//  1. logging: one line per call (see LogMessage) with procedure, request_id, peer address,
//     certificate identity, user, payment_id, transaction_id, amount, currency, attempt
//     (AttemptHeader), code, error and duration; inner layers add to it through
//     CallInfoFrom(ctx). Requests and headers are never logged whole, so passwords and tokens
//     stay out of logs. Every answer carries the call's request id (RequestIDHeader: the
//     caller's when well formed, else a new one; errors also in their ErrorInfo metadata).
//     Then Config.Interceptors, when set (metrics).
//  2. error boundary: every error of the layers inside goes through the service's table
//     (Config.MapError), then becomes a Connect error with a known code and an ErrorInfo reason,
//     never Unknown and never internal text; what the caller does not see is logged at ERROR.
//  3. policy: deny by default. Each procedure's Access in the Policy says who may call it;
//     AccessUser calls go through the Config's Authenticator.
//  4. reason: validation errors get the ErrorInfo reason "invalid_argument", with the
//     offending fields in its metadata "fields".
//  5. validation: the protovalidate rules of the request message (InvalidArgument naming the
//     field).
//
// Wiring a bank server:
//
//	srv, err := rpcserver.New(rpcserver.Config{
//		Name:   "bank1",
//		Logger: log,
//		TLS:    tlsCfg, // pki.ServerTLS(ca, cert, key, tls.RequireAndVerifyClientCert)
//		Policy: rpcserver.Policy{
//			bankv1connect.BankServicePrepareTransactionProcedure: rpcserver.AccessGateway,
//			// ...
//		},
//	})
//	srv.Handle(bankv1connect.NewBankServiceHandler(bank, srv.HandlerOptions()...))
//	go srv.ListenAndServe("127.0.0.1:9001")
//	defer srv.Shutdown(ctx)
//
// Services call each other with NewHTTPClient (long-lived HTTP/2 connections with keepalive
// pings) and ClientOptions (the gRPC protocol).
package rpcserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"connectrpc.com/validate"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/paygate/paygate/internal/identity"
	"github.com/paygate/paygate/internal/rpcerr"
)

// Defaults of Config.
const (
	DefaultReadMaxBytes      = 1 << 20
	DefaultReadHeaderTimeout = 10 * time.Second
	// idleTimeout closes connections without requests; clients dial again when they need to.
	idleTimeout = 5 * time.Minute
	// serverPingInterval and serverPingTimeout detect dead clients of long-lived streams.
	serverPingInterval = 30 * time.Second
	serverPingTimeout  = 10 * time.Second
	maxHeaderBytes     = 64 << 10
	// compressMinBytes is the smallest message that is gzip-compressed when the peer accepts it.
	compressMinBytes = 16 << 10
)

// Procedures of the health and reflection services, which New makes public.
var builtinProcedures = []string{
	"/" + grpchealth.HealthV1ServiceName + "/Check",
	"/" + grpchealth.HealthV1ServiceName + "/Watch",
	"/" + grpcreflect.ReflectV1ServiceName + "/ServerReflectionInfo",
	"/" + grpcreflect.ReflectV1AlphaServiceName + "/ServerReflectionInfo",
}

// Config configures a Server.
type Config struct {
	// Name identifies the server in logs, e.g. "bank1" or "gateway".
	Name string
	// Logger receives the call log and the HTTP server's errors. Nil discards them.
	Logger *slog.Logger
	// Policy says who may call each procedure. Health and reflection are added as AccessPublic.
	Policy Policy
	// Authenticate checks AccessUser and AccessAdmin calls. Required when a procedure is
	// AccessUser or AccessAdmin.
	Authenticate Authenticator
	// AuthorizeAdmin decides AccessAdmin calls after Authenticate. Required when a procedure
	// is AccessAdmin.
	AuthorizeAdmin AdminAuthorizer
	// OnAdminRefused, when set, is told of every refused AccessAdmin call (for an audit log).
	OnAdminRefused AdminRefusalHook
	// Interceptors run inside the logging interceptor and outside the error boundary: they see
	// every call, including those the policy refuses, with the error as the caller will get it
	// (for metrics).
	Interceptors []connect.Interceptor
	// Tracing, when set, is the outermost interceptor (tracing.ServerInterceptor): the call's
	// span covers every layer, and the call's log line carries its trace_id. Nil: no spans.
	Tracing connect.Interceptor
	// MapError is the service's table from its domain errors to Connect errors with reasons,
	// applied to every error a handler or Authenticate returns, before the server's own error
	// boundary (see boundaryInterceptor). Nil: the boundary alone.
	MapError ErrorMapper
	// TLS is the server's TLS configuration, e.g. from pki.ServerTLS. Required.
	TLS *tls.Config
	// ReadMaxBytes limits the size of a request message. Default DefaultReadMaxBytes.
	ReadMaxBytes int
	// ReadHeaderTimeout limits the time to read a request's headers. Default
	// DefaultReadHeaderTimeout.
	ReadHeaderTimeout time.Duration
}

// Validate reports the first problem of c.
func (c Config) Validate() error {
	if c.TLS == nil {
		return errors.New("rpcserver: config: TLS is required")
	}
	if len(c.TLS.Certificates) == 0 && c.TLS.GetCertificate == nil && c.TLS.GetConfigForClient == nil {
		return errors.New("rpcserver: config: TLS has no server certificate")
	}
	if c.ReadMaxBytes < 0 {
		return fmt.Errorf("rpcserver: config: ReadMaxBytes %d is negative", c.ReadMaxBytes)
	}
	for _, proc := range slices.Sorted(maps.Keys(c.Policy)) {
		switch a := c.Policy[proc]; a {
		case AccessPublic, AccessGateway, AccessBank, AccessClient:
		case AccessUser:
			if c.Authenticate == nil {
				return fmt.Errorf("rpcserver: config: %s needs AccessUser but Authenticate is nil", proc)
			}
		case AccessAdmin:
			if c.Authenticate == nil || c.AuthorizeAdmin == nil {
				return fmt.Errorf("rpcserver: config: %s needs AccessAdmin but Authenticate or AuthorizeAdmin is nil", proc)
			}
		default:
			return fmt.Errorf("rpcserver: config: %s has unknown access %v", proc, a)
		}
		if !strings.HasPrefix(proc, "/") || strings.Count(proc, "/") != 2 {
			return fmt.Errorf("rpcserver: config: policy key %q is not a procedure like /pkg.Service/Method", proc)
		}
	}
	return nil
}

// Server serves Connect services over TLS. Create it with New, mount services with Handle, then
// Serve; Shutdown stops it.
type Server struct {
	name     string
	log      *slog.Logger
	policy   Policy
	mux      *http.ServeMux
	health   *grpchealth.StaticChecker
	options  []connect.HandlerOption
	http     *http.Server
	draining chan struct{}
	drain    sync.Once

	mu       sync.Mutex
	services []string
	ln       net.Listener
}

// New returns a Server with health and reflection mounted and no services.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.ReadMaxBytes == 0 {
		cfg.ReadMaxBytes = DefaultReadMaxBytes
	}
	if cfg.ReadHeaderTimeout <= 0 {
		cfg.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Name != "" {
		logger = logger.With(slog.String("server", cfg.Name))
	}
	policy := maps.Clone(cfg.Policy)
	if policy == nil {
		policy = make(Policy, len(builtinProcedures))
	}
	quiet := make(map[string]bool)
	for _, p := range builtinProcedures {
		if _, ok := policy[p]; !ok {
			policy[p] = AccessPublic
		}
	}
	quiet[builtinProcedures[0]] = true
	quiet[builtinProcedures[1]] = true

	s := &Server{
		name:     cfg.Name,
		log:      logger,
		policy:   policy,
		mux:      http.NewServeMux(),
		health:   grpchealth.NewStaticChecker(),
		draining: make(chan struct{}),
	}
	outer := []connect.Interceptor{&logInterceptor{log: logger, quiet: quiet}}
	if cfg.Tracing != nil {
		outer = append([]connect.Interceptor{cfg.Tracing}, outer...)
	}
	s.options = []connect.HandlerOption{
		connect.WithInterceptors(append(append(outer,
			cfg.Interceptors...),
			&boundaryInterceptor{log: logger, mapErr: cfg.MapError},
			&policyInterceptor{policy: policy, authenticate: cfg.Authenticate, authorizeAdmin: cfg.AuthorizeAdmin, onAdminRefused: cfg.OnAdminRefused},
			reasonInterceptor{},
			validate.NewInterceptor(),
		)...),
		connect.WithRecover(s.recoverPanic),
		connect.WithReadMaxBytes(cfg.ReadMaxBytes),
		// paygate's messages are small: compressing them costs more CPU than the bytes it saves
		// on the links they travel (loopback, LAN).
		connect.WithCompressMinBytes(compressMinBytes),
	}

	s.mux.Handle(grpchealth.NewHandler(s.health, s.options...))
	reflector := grpcreflect.NewReflector(grpcreflect.NamerFunc(s.serviceNames))
	s.mux.Handle(grpcreflect.NewHandlerV1(reflector, s.options...))
	s.mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector, s.options...))

	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	s.http = &http.Server{
		Handler:           identity.Middleware(RequestIDMiddleware(s.mux)),
		TLSConfig:         cfg.TLS.Clone(),
		Protocols:         &protocols,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		HTTP2: &http.HTTP2Config{
			SendPingTimeout: serverPingInterval,
			PingTimeout:     serverPingTimeout,
		},
		ErrorLog: log.New(&errorLogWriter{log: logger}, "", 0),
	}
	return s, nil
}

// HandlerOptions returns the options every handler mounted on s must be built with: the
// interceptors (logging, error boundary, policy, validation reasons, validation; see the
// package documentation), panic recovery and the request size limit.
func (s *Server) HandlerOptions() []connect.HandlerOption {
	return slices.Clone(s.options)
}

// Handle mounts a generated service handler at its path, marks the service SERVING in health
// and lists it in reflection. Its arguments are what the generated New...ServiceHandler
// functions return:
//
//	srv.Handle(bankv1connect.NewBankServiceHandler(impl, srv.HandlerOptions()...))
//
// Procedures of the service that the policy does not mention are logged once here at WARN:
// every call to them is denied.
func (s *Server) Handle(path string, h http.Handler) {
	s.mux.Handle(path, h)
	service := strings.Trim(path, "/")
	s.mu.Lock()
	s.services = append(s.services, service)
	s.mu.Unlock()
	s.health.SetStatus(service, grpchealth.StatusServing)

	if d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(service)); err == nil {
		if sd, ok := d.(protoreflect.ServiceDescriptor); ok {
			for i := range sd.Methods().Len() {
				proc := "/" + service + "/" + string(sd.Methods().Get(i).Name())
				if _, ok := s.policy[proc]; !ok {
					s.log.Warn("procedure has no policy entry; every call will be denied", slog.String("procedure", proc))
				}
			}
		}
	}
}

// HandleFallback serves h for every path no service claims, e.g. the web dashboard. It is
// registered on "/" (not "GET /", which would conflict with the RPC paths).
func (s *Server) HandleFallback(h http.Handler) {
	s.mux.Handle("/", h)
}

// Health returns the server's health checker. Handle marks mounted services SERVING; use it to
// publish other statuses (for example one per bank the gateway depends on).
func (s *Server) Health() *grpchealth.StaticChecker { return s.health }

// Draining returns a channel closed when Shutdown begins. Long-lived streaming handlers select on
// it to end their streams so that shutdown does not wait for its deadline.
func (s *Server) Draining() <-chan struct{} { return s.draining }

// ListenAndServe listens on the TCP address addr and serves until Shutdown.
func (s *Server) ListenAndServe(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("rpcserver: %s: listen: %w", s.name, err)
	}
	return s.Serve(ln)
}

// Serve accepts TLS connections on ln until Shutdown, then returns nil. ln is a plain listener;
// Serve does the TLS handshakes.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	s.log.Info("serving", slog.String("addr", ln.Addr().String()), slog.Int("gomaxprocs", runtime.GOMAXPROCS(0)))
	err := s.http.ServeTLS(ln, "", "")
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("rpcserver: %s: serve: %w", s.name, err)
}

// Addr returns the address Serve listens on, or nil before Serve.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Shutdown stops the server gracefully: it closes Draining, marks every service NOT_SERVING,
// stops accepting connections, and waits for calls in flight to finish. When ctx ends first, it
// closes the remaining connections and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.drain.Do(func() { close(s.draining) })
	s.health.SetStatus("", grpchealth.StatusNotServing)
	for _, svc := range s.serviceNames() {
		s.health.SetStatus(svc, grpchealth.StatusNotServing)
	}
	if err := s.http.Shutdown(ctx); err != nil {
		_ = s.http.Close()
		return fmt.Errorf("rpcserver: %s: shutdown: %w", s.name, err)
	}
	return nil
}

// serviceNames lists the services shown by reflection: the mounted ones and health.
func (s *Server) serviceNames() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append(slices.Clone(s.services), grpchealth.HealthV1ServiceName)
}

func (s *Server) recoverPanic(ctx context.Context, spec connect.Spec, _ http.Header, p any) error {
	s.log.ErrorContext(ctx, "panic in handler",
		slog.String("procedure", spec.Procedure),
		slog.Any("panic", p),
		slog.String("stack", string(debug.Stack())))
	return rpcerr.New(connect.CodeInternal, ReasonInternal, "internal error; the server logged it")
}

// errorLogWriter routes net/http's error log into slog. Failed TLS handshakes are WARN (a
// refused certificate is worth seeing), except bare disconnects (port probes), which are DEBUG.
type errorLogWriter struct {
	log *slog.Logger
}

func (w *errorLogWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	level := slog.LevelWarn
	switch {
	case strings.Contains(msg, "TLS handshake error") &&
		(strings.HasSuffix(msg, ": EOF") || strings.HasSuffix(msg, "connection reset by peer")):
		level = slog.LevelDebug
	case strings.Contains(msg, "panic"):
		level = slog.LevelError
	}
	w.log.Log(context.Background(), level, msg, slog.String("component", "http"))
	return len(p), nil
}
