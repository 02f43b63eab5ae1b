package tracing

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// env returns a getenv reading m.
func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestEnabled(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		want bool
	}{
		{"nothing set", nil, false},
		{"exporter otlp", map[string]string{envExporter: "otlp"}, true},
		{"exporter OTLP, any case", map[string]string{envExporter: " OTLP "}, true},
		{"exporter none", map[string]string{envExporter: "none"}, false},
		{"endpoint only", map[string]string{envEndpoint: "http://127.0.0.1:4318"}, true},
		{"traces endpoint only", map[string]string{envTracesEndpoint: "http://127.0.0.1:4318/v1/traces"}, true},
		{"none beats an endpoint", map[string]string{envExporter: "none", envEndpoint: "http://127.0.0.1:4318"}, false},
		{"protocol alone is not a request", map[string]string{envProtocol: "grpc"}, false},
		{"sdk disabled", map[string]string{envExporter: "otlp", envSDKDisabled: "true"}, false},
		{"sdk disabled, any case", map[string]string{envEndpoint: "http://x", envSDKDisabled: "TRUE"}, false},
		{"sdk not disabled", map[string]string{envExporter: "otlp", envSDKDisabled: "false"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := Enabled(env(tt.env)); got != tt.want {
				t.Errorf("Enabled(%v) = %v, want %v", tt.env, got, tt.want)
			}
		})
	}
}

func TestExporterKind(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		env     map[string]string
		want    string
		wantErr bool
	}{
		{"default protocol", map[string]string{envExporter: "otlp"}, "otlp-http", false},
		{"http/protobuf", map[string]string{envProtocol: "http/protobuf", envEndpoint: "http://x"}, "otlp-http", false},
		{"grpc", map[string]string{envExporter: "otlp", envProtocol: "grpc"}, "otlp-grpc", false},
		{"traces protocol wins", map[string]string{envExporter: "otlp", envProtocol: "grpc", envTracesProtocol: "http/protobuf"}, "otlp-http", false},
		{"unknown exporter", map[string]string{envExporter: "zipkin"}, "", true},
		{"a list is not supported", map[string]string{envExporter: "otlp,console"}, "", true},
		{"http/json unsupported", map[string]string{envExporter: "otlp", envProtocol: "http/json"}, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := exporterKind(env(tt.env))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("exporterKind(%v) = %q, %v; want %q, error %v", tt.env, got, err, tt.want, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrConfig) {
				t.Errorf("error %v is not an ErrConfig", err)
			}
		})
	}
}

func TestSetupOff(t *testing.T) {
	t.Parallel()
	for _, vars := range []map[string]string{nil, {envExporter: "none"}, {envExporter: "otlp", envSDKDisabled: "true"}} {
		setupOff(t, vars)
	}
}

// setupOff checks that setup with vars is off: the no-op provider, a shutdown that does
// nothing, no interceptors.
func setupOff(t *testing.T, vars map[string]string) {
	t.Helper()
	tp, shutdown, err := setup(context.Background(), Options{Service: ServiceGateway}, env(vars))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tp.(noop.TracerProvider); !ok {
		t.Fatalf("provider is %T, want the no-op provider", tp)
	}
	if On(tp) {
		t.Error("On(no-op provider) = true")
	}
	if err := shutdown(context.Background()); err != nil {
		t.Error(err)
	}
	if i, err := ServerInterceptor(tp, true); i != nil || err != nil {
		t.Errorf("ServerInterceptor(off) = %v, %v; want nil, nil", i, err)
	}
	if i, err := ClientInterceptor(tp); i != nil || err != nil {
		t.Errorf("ClientInterceptor(off) = %v, %v; want nil, nil", i, err)
	}
}

func TestSetupBadExporter(t *testing.T) {
	t.Parallel()
	_, _, err := setup(context.Background(), Options{}, env(map[string]string{envExporter: "jaeger"}))
	if !errors.Is(err, ErrConfig) {
		t.Fatalf("setup with OTEL_TRACES_EXPORTER=jaeger: %v, want ErrConfig", err)
	}
}

// TestSetupOn sets process environment (resource.WithFromEnv reads it): not parallel.
func TestSetupOn(t *testing.T) {
	for _, proto := range []string{"http/protobuf", "grpc"} {
		t.Run(proto, func(t *testing.T) {
			vars := map[string]string{
				envExporter: "otlp",
				envProtocol: proto,
				envEndpoint: "http://127.0.0.1:1", // nothing listens: export fails, Setup does not
			}
			for k, v := range vars {
				t.Setenv(k, v)
			}
			t.Setenv("OTEL_SERVICE_NAME", "")
			t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "")
			tp, shutdown, err := setup(context.Background(), Options{Service: ServiceBank, Version: "v1.2.3", Instance: "bank7",
				Attributes: []attribute.KeyValue{AttrBank.String("bank7")}}, env(vars))
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := tp.(*sdktrace.TracerProvider); !ok || !On(tp) {
				t.Fatalf("provider is %T (On %v), want the SDK's", tp, On(tp))
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = shutdown(ctx) // the export fails (nothing listens); the flush ends in time
		})
	}
}

func TestResource(t *testing.T) {
	tests := []struct {
		name, serviceName, resAttrs string
		wantService, wantBank       string
	}{
		{"defaults", "", "", ServiceBank, "bank7"},
		{"OTEL_SERVICE_NAME overrides", "ledger-7", "", "ledger-7", "bank7"},
		{"OTEL_RESOURCE_ATTRIBUTES overrides", "", "service.name=other,paygate.bank=b9", "other", "b9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("OTEL_SERVICE_NAME", tt.serviceName)
			t.Setenv("OTEL_RESOURCE_ATTRIBUTES", tt.resAttrs)
			res, err := newResource(context.Background(), Options{Service: ServiceBank, Version: "v1.2.3", Instance: "bank7",
				Attributes: []attribute.KeyValue{AttrBank.String("bank7")}})
			if err != nil {
				t.Fatal(err)
			}
			got := map[attribute.Key]string{}
			for _, kv := range res.Attributes() {
				got[kv.Key] = kv.Value.String()
			}
			if got["service.name"] != tt.wantService || got[AttrBank] != tt.wantBank || got["service.version"] != "v1.2.3" || got["service.instance.id"] != "bank7" {
				t.Errorf("resource %v: want service.name %q, paygate.bank %q, version v1.2.3, instance bank7", got, tt.wantService, tt.wantBank)
			}
		})
	}
}
