package main

import (
	"context"
	"errors"
	"os"
	"runtime/debug"
	"slices"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/paygate/paygate/internal/tracing"
)

// tracingFlushTimeout bounds the flush of the spans not yet exported when a process stops: a
// collector that is down must not hold the shutdown up.
const tracingFlushTimeout = 5 * time.Second

// startTracing sets up tracing for a server of this process as the OTEL_* environment asks
// (tracing.Setup: off, and free, unless asked). A variable it does not understand is a usage
// error. Pass the returned stop to stopTracing when the server has stopped.
func startTracing(ctx context.Context, opts tracing.Options) (trace.TracerProvider, func(context.Context) error, error) {
	if opts.Version == "" {
		opts.Version = buildVersion()
	}
	tp, stop, err := tracing.Setup(ctx, opts)
	if err != nil {
		return nil, nil, usageErrorf("%v", err)
	}
	return tp, stop, nil
}

// stopTracing flushes the spans not yet exported, within tracingFlushTimeout, and joins the
// failure to err.
func stopTracing(stop func(context.Context) error, err error) error {
	ctx, cancel := context.WithTimeout(context.Background(), tracingFlushTimeout)
	defer cancel()
	return errors.Join(err, stop(ctx))
}

// serverCommands set up tracing themselves, one provider per server they run; every other
// command is a client (clientTracing).
var serverCommands = []string{"gateway", "bank", "dev"}

// clientTracing sets up tracing for a client command (name) as the OTEL_* environment asks:
// the client library then uses it through otel's globals. It returns the flush to call when
// the command ends.
func clientTracing(ctx context.Context, name string) (func() error, error) {
	if name == "" || slices.Contains(serverCommands, name) || !tracing.Enabled(os.Getenv) {
		return func() error { return nil }, nil
	}
	_, stop, err := startTracing(ctx, tracing.Options{Service: tracing.ServiceClient})
	if err != nil {
		return nil, err
	}
	return func() error { return stopTracing(stop, nil) }, nil
}

// buildVersion is the module's version as built, or "devel".
func buildVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}
