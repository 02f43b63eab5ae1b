package client

import (
	"fmt"

	"connectrpc.com/connect"
	"connectrpc.com/otelconnect"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// WithTracerProvider makes the client's spans (one per call to the gateway, a child of the
// span in the call's context) with tp, and sends their W3C trace context to the gateway, which
// continues the trace: a payment made under an application's span is one trace from the
// application through the gateway to the banks. Without this option the client uses otel's
// global tracer provider and propagator (otel.SetTracerProvider, otel.SetTextMapPropagator),
// which do nothing until the application sets them.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) { c.tracerProvider = tp }
}

// tracingInterceptor returns the interceptor that makes the client's spans: with the
// configured provider and W3C trace context and baggage, or with otel's globals.
func (c *config) tracingInterceptor() (connect.Interceptor, error) {
	opts := []otelconnect.Option{otelconnect.WithoutMetrics()}
	if c.tracerProvider != nil {
		opts = append(opts, otelconnect.WithTracerProvider(c.tracerProvider),
			otelconnect.WithPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})))
	}
	i, err := otelconnect.NewInterceptor(opts...)
	if err != nil {
		return nil, fmt.Errorf("client: tracing: %w", err)
	}
	return i, nil
}
