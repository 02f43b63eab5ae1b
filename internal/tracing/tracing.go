// Package tracing sets up OpenTelemetry tracing for paygate's processes from the standard
// OTEL_* environment variables, and builds the Connect interceptors that give every RPC a span
// and carry the W3C trace context across it.
//
// Tracing is off unless the environment asks for it (see Enabled): then Setup returns otel's
// no-op provider, starts nothing, and the servers install no interceptor, so an untraced
// process pays nothing for it. When it is on, spans go to an OTLP collector in batches:
//
//	OTEL_TRACES_EXPORTER=otlp OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 paygate dev
//
// The exporters read the rest of the OTEL_EXPORTER_OTLP_* variables (headers, timeouts,
// certificates), the SDK reads OTEL_BSP_* (batching) and OTEL_TRACES_SAMPLER (default
// parent-based always-on), and the resource takes OTEL_SERVICE_NAME and
// OTEL_RESOURCE_ATTRIBUTES over the defaults.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"connectrpc.com/connect"
	"connectrpc.com/otelconnect"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Environment variables Setup reads itself; the exporters and the SDK read the others.
const (
	envSDKDisabled    = "OTEL_SDK_DISABLED"
	envExporter       = "OTEL_TRACES_EXPORTER"
	envEndpoint       = "OTEL_EXPORTER_OTLP_ENDPOINT"
	envTracesEndpoint = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	envProtocol       = "OTEL_EXPORTER_OTLP_PROTOCOL"
	envTracesProtocol = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
)

// Names of paygate's resources and span attributes.
const (
	// ServiceGateway and ServiceBank are the default service.name of the processes.
	ServiceGateway = "paygate-gateway"
	ServiceBank    = "paygate-bank"
	ServiceClient  = "paygate-client"
	// ScopeName is the instrumentation scope of paygate's own spans.
	ScopeName = "github.com/paygate/paygate"
)

// Attribute keys of paygate's spans and resources. None carries a secret: no username,
// password, token or key is ever put on a span.
const (
	AttrPaymentID = attribute.Key("paygate.payment_id")
	AttrBank      = attribute.Key("paygate.bank")
	AttrOutcome   = attribute.Key("paygate.outcome")
	AttrReason    = attribute.Key("paygate.reason")
	AttrBatchSize = attribute.Key("paygate.batch_size")
)

// ErrConfig is the error of an OTEL_* variable Setup does not understand.
var ErrConfig = errors.New("tracing: config")

// Options describe the process whose spans Setup exports.
type Options struct {
	// Service is the default service.name (ServiceGateway, ServiceBank...); OTEL_SERVICE_NAME
	// overrides it.
	Service string
	// Version is service.version, e.g. the build's version.
	Version string
	// Instance is service.instance.id when set: the bank's name, a gateway replica's name.
	Instance string
	// Attributes are further resource attributes, e.g. paygate.bank. OTEL_RESOURCE_ATTRIBUTES
	// overrides them.
	Attributes []attribute.KeyValue
}

// Enabled says whether the environment (as getenv reads it) asks for traces: OTEL_TRACES_EXPORTER
// is set to something other than "none", or an OTLP endpoint is set
// (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); OTEL_SDK_DISABLED=true
// turns it off whatever the rest says.
func Enabled(getenv func(string) string) bool {
	if strings.EqualFold(strings.TrimSpace(getenv(envSDKDisabled)), "true") {
		return false
	}
	switch exp := strings.ToLower(strings.TrimSpace(getenv(envExporter))); exp {
	case "none":
		return false
	case "":
		return getenv(envEndpoint) != "" || getenv(envTracesEndpoint) != ""
	default:
		return true
	}
}

// exporterKind says which exporter the environment asks for, when Enabled: "otlp-http" or
// "otlp-grpc", or an ErrConfig naming the bad value.
func exporterKind(getenv func(string) string) (string, error) {
	exp := strings.ToLower(strings.TrimSpace(getenv(envExporter)))
	if exp != "" && exp != "otlp" {
		return "", fmt.Errorf("%w: %s=%q: want otlp or none", ErrConfig, envExporter, exp)
	}
	proto := getenv(envTracesProtocol)
	if proto == "" {
		proto = getenv(envProtocol)
	}
	switch p := strings.ToLower(strings.TrimSpace(proto)); p {
	case "", "http/protobuf":
		return "otlp-http", nil
	case "grpc":
		return "otlp-grpc", nil
	default:
		return "", fmt.Errorf("%w: OTLP protocol %q: want http/protobuf or grpc", ErrConfig, p)
	}
}

// Setup returns the tracer provider the environment asks for (see Enabled) and a shutdown that
// flushes the spans not yet exported and stops the exporter; call it once, at the end, with a
// bounded context. When tracing is off the provider is otel's no-op one and shutdown does
// nothing. When it is on, Setup also installs the provider and the W3C propagator (Propagator)
// as otel's globals, for the libraries that use them (the client library does by default). A
// variable it does not understand is an ErrConfig.
func Setup(ctx context.Context, opts Options) (trace.TracerProvider, func(context.Context) error, error) {
	return setup(ctx, opts, os.Getenv)
}

func setup(ctx context.Context, opts Options, getenv func(string) string) (trace.TracerProvider, func(context.Context) error, error) {
	nothing := func(context.Context) error { return nil }
	if !Enabled(getenv) {
		return noop.NewTracerProvider(), nothing, nil
	}
	kind, err := exporterKind(getenv)
	if err != nil {
		return nil, nil, err
	}
	res, err := newResource(ctx, opts)
	if err != nil {
		return nil, nil, err
	}
	// The exporters read OTEL_EXPORTER_OTLP_* (endpoint, headers, TLS, timeout) themselves.
	// New does not connect: a collector that is down costs dropped spans, not a failed start.
	var exp sdktrace.SpanExporter
	switch kind {
	case "otlp-grpc":
		exp, err = otlptracegrpc.New(ctx)
	default:
		exp, err = otlptracehttp.New(ctx)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("tracing: exporter: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(Propagator())
	shutdown := func(ctx context.Context) error {
		if err := tp.Shutdown(ctx); err != nil {
			return fmt.Errorf("tracing: flush: %w", err)
		}
		return nil
	}
	return tp, shutdown, nil
}

// newResource describes the process: opts, then what OTEL_SERVICE_NAME and
// OTEL_RESOURCE_ATTRIBUTES say (which win), and the SDK's own attributes.
func newResource(ctx context.Context, opts Options) (*resource.Resource, error) {
	attrs := make([]attribute.KeyValue, 0, 3+len(opts.Attributes))
	if opts.Service != "" {
		attrs = append(attrs, semconv.ServiceName(opts.Service))
	}
	if opts.Version != "" {
		attrs = append(attrs, semconv.ServiceVersion(opts.Version))
	}
	if opts.Instance != "" {
		attrs = append(attrs, semconv.ServiceInstanceID(opts.Instance))
	}
	attrs = append(attrs, opts.Attributes...)
	res, err := resource.New(ctx,
		resource.WithTelemetrySDK(),
		resource.WithAttributes(attrs...),
		resource.WithFromEnv(), // after the defaults: the environment overrides them
	)
	if err != nil {
		return nil, fmt.Errorf("%w: resource: %w", ErrConfig, err)
	}
	return res, nil
}

// Propagator is the propagator of paygate's RPCs: W3C trace context and baggage.
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// On says whether tp records anything: false for nil and for otel's no-op provider, which is
// what Setup returns when tracing is off. The servers install no interceptor then.
func On(tp trace.TracerProvider) bool {
	if tp == nil {
		return false
	}
	_, isNoop := tp.(noop.TracerProvider)
	return !isNoop
}

// traced says whether a call gets a span: all but health checks and reflection, which come
// every second from the gateway's probes and from tools, each a trace of its own that nobody
// wants to see.
func traced(_ context.Context, spec connect.Spec) bool {
	return !strings.HasPrefix(spec.Procedure, "/grpc.health.v1.Health/") && !strings.HasPrefix(spec.Procedure, "/grpc.reflection.")
}

// ServerInterceptor returns the interceptor that gives each call a server span, parented by
// the caller's trace context when trustRemote (callers that hold paygate's certificates: the
// banks, the gateway's mTLS API) and otherwise only linked to it (the web listener, open to
// browsers: a caller cannot graft the server's spans onto a trace of its choosing). It makes
// no metrics: those are internal/metrics'. Nil when tp is off (On).
func ServerInterceptor(tp trace.TracerProvider, trustRemote bool) (connect.Interceptor, error) {
	if !On(tp) {
		return nil, nil
	}
	opts := []otelconnect.Option{otelconnect.WithTracerProvider(tp), otelconnect.WithPropagator(Propagator()), otelconnect.WithoutMetrics(),
		otelconnect.WithFilter(traced)}
	if trustRemote {
		opts = append(opts, otelconnect.WithTrustRemote())
	}
	i, err := otelconnect.NewInterceptor(opts...)
	if err != nil {
		return nil, fmt.Errorf("tracing: server interceptor: %w", err)
	}
	return i, nil
}

// ClientInterceptor returns the interceptor that gives each outgoing call a client span and
// sends the trace context with it. Nil when tp is off (On).
func ClientInterceptor(tp trace.TracerProvider) (connect.Interceptor, error) {
	if !On(tp) {
		return nil, nil
	}
	i, err := otelconnect.NewInterceptor(otelconnect.WithTracerProvider(tp), otelconnect.WithPropagator(Propagator()), otelconnect.WithoutMetrics(),
		otelconnect.WithFilter(traced))
	if err != nil {
		return nil, fmt.Errorf("tracing: client interceptor: %w", err)
	}
	return i, nil
}
