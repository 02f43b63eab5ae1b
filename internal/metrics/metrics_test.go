package metrics

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/paygate/paygate/internal/rpcerr"
)

const (
	procOK   = "/test.v1.Test/OK"
	procFail = "/test.v1.Test/Fail"
	procLost = "/test.v1.Test/Unlisted"
)

// newTestServer serves three unary procedures through the interceptor: OK succeeds, Fail and
// Unlisted fail with not_found; only OK and Fail are registered procedures.
func newTestServer(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	rpc := NewRPCInterceptor(reg, []string{procOK, procFail})
	opts := connect.WithInterceptors(rpc)
	ok := func(context.Context, *connect.Request[emptypb.Empty]) (*connect.Response[emptypb.Empty], error) {
		return connect.NewResponse(&emptypb.Empty{}), nil
	}
	fail := func(context.Context, *connect.Request[emptypb.Empty]) (*connect.Response[emptypb.Empty], error) {
		return nil, rpcerr.New(connect.CodeNotFound, "no_such_thing", "thing: not found")
	}
	mux := http.NewServeMux()
	mux.Handle(procOK, connect.NewUnaryHandler(procOK, ok, opts))
	mux.Handle(procFail, connect.NewUnaryHandler(procFail, fail, opts))
	mux.Handle(procLost, connect.NewUnaryHandler(procLost, fail, opts))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

func call(t *testing.T, base, proc string) error {
	t.Helper()
	c := connect.NewClient[emptypb.Empty, emptypb.Empty](http.DefaultClient, base+proc)
	_, err := c.CallUnary(context.Background(), connect.NewRequest(&emptypb.Empty{}))
	return err
}

func TestRPCInterceptorCounts(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	base := newTestServer(t, reg)
	for range 3 {
		if err := call(t, base, procOK); err != nil {
			t.Fatalf("OK: %v", err)
		}
	}
	for range 2 {
		if err := call(t, base, procFail); connect.CodeOf(err) != connect.CodeNotFound {
			t.Fatalf("Fail: got %v, want not_found", err)
		}
	}
	if err := call(t, base, procLost); err == nil {
		t.Fatal("Unlisted: no error")
	}

	want := `
# HELP paygate_rpc_server_errors_total RPCs that failed, by procedure, Connect code and ErrorInfo reason (empty when none).
# TYPE paygate_rpc_server_errors_total counter
paygate_rpc_server_errors_total{code="not_found",procedure="/test.v1.Test/Fail",reason="no_such_thing"} 2
paygate_rpc_server_errors_total{code="not_found",procedure="other",reason="no_such_thing"} 1
# HELP paygate_rpc_server_requests_total RPCs handled, by procedure and Connect code (ok when it succeeded).
# TYPE paygate_rpc_server_requests_total counter
paygate_rpc_server_requests_total{code="not_found",procedure="/test.v1.Test/Fail"} 2
paygate_rpc_server_requests_total{code="not_found",procedure="other"} 1
paygate_rpc_server_requests_total{code="ok",procedure="/grpc.health.v1.Health/Check"} 0
paygate_rpc_server_requests_total{code="ok",procedure="/grpc.health.v1.Health/Watch"} 0
paygate_rpc_server_requests_total{code="ok",procedure="/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"} 0
paygate_rpc_server_requests_total{code="ok",procedure="/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"} 0
paygate_rpc_server_requests_total{code="ok",procedure="/test.v1.Test/Fail"} 0
paygate_rpc_server_requests_total{code="ok",procedure="/test.v1.Test/OK"} 3
paygate_rpc_server_requests_total{code="ok",procedure="other"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"paygate_rpc_server_requests_total", "paygate_rpc_server_errors_total"); err != nil {
		t.Error(err)
	}
	// Pre-resolved children of registered procedures exist at zero; none carries the
	// unlisted path.
	n, err := testutil.GatherAndCount(reg, "paygate_rpc_server_duration_seconds")
	if err != nil {
		t.Fatal(err)
	}
	if want := 2 + len(builtinProcedures) + 1; n != want {
		t.Errorf("duration series: got %d, want %d", n, want)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if strings.Contains(l.GetValue(), "Unlisted") {
					t.Errorf("%s has label %s=%q from an unregistered path", mf.GetName(), l.GetName(), l.GetValue())
				}
			}
		}
	}
}

func TestListenServesMetricsOnly(t *testing.T) {
	t.Parallel()
	reg := NewRegistry()
	srv, err := Listen("127.0.0.1:0", reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	base := "http://" + srv.Addr().String()

	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	for _, want := range []string{`paygate_build_info{goversion="go`, "go_goroutines ", "process_cpu_seconds_total "} {
		if !strings.Contains(string(body), want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	for _, path := range []string{"/", "/paygate.gateway.v1.GatewayService/Login", "/debug/pprof/"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %s, want 404", path, resp.Status)
		}
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(base + "/metrics"); err == nil || errors.Is(err, context.Canceled) {
		t.Errorf("after Shutdown: GET /metrics: err %v, want a refused connection", err)
	}
}

// BenchmarkRPCInterceptorObserve is what the interceptor adds to a call: the procedure's
// look-up and the observations of a success and of an error.
func BenchmarkRPCInterceptorObserve(b *testing.B) {
	i := NewRPCInterceptor(prometheus.NewRegistry(), []string{procOK, procFail})
	fail := rpcerr.New(connect.CodeNotFound, "no_such_thing", "thing: not found")
	b.Run("ok", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			i.observe(i.lookup(procOK), time.Now(), nil)
		}
	})
	b.Run("error", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			i.observe(i.lookup(procFail), time.Now(), fail)
		}
	})
}

// TestRPCClientInterceptorCounts: a client's calls are counted by procedure and code, an
// unregistered procedure as "other".
func TestRPCClientInterceptorCounts(t *testing.T) {
	t.Parallel()
	serverReg := prometheus.NewRegistry()
	base := newTestServer(t, serverReg)
	reg := prometheus.NewRegistry()
	rpc := NewRPCClientInterceptor(reg, []string{procOK, procFail})
	clientCall := func(proc string) error {
		c := connect.NewClient[emptypb.Empty, emptypb.Empty](http.DefaultClient, base+proc, connect.WithInterceptors(rpc))
		_, err := c.CallUnary(context.Background(), connect.NewRequest(&emptypb.Empty{}))
		return err
	}
	for range 2 {
		if err := clientCall(procOK); err != nil {
			t.Fatalf("OK: %v", err)
		}
	}
	if err := clientCall(procFail); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("Fail: got %v, want not_found", err)
	}
	if err := clientCall(procLost); err == nil {
		t.Fatal("Unlisted: no error")
	}
	want := `
# HELP paygate_rpc_client_errors_total RPCs this process made as a client that failed, by procedure, Connect code and ErrorInfo reason (empty when none).
# TYPE paygate_rpc_client_errors_total counter
paygate_rpc_client_errors_total{code="not_found",procedure="/test.v1.Test/Fail",reason="no_such_thing"} 1
paygate_rpc_client_errors_total{code="not_found",procedure="other",reason="no_such_thing"} 1
# HELP paygate_rpc_client_requests_total RPCs this process made as a client, by procedure and Connect code (ok when it succeeded).
# TYPE paygate_rpc_client_requests_total counter
paygate_rpc_client_requests_total{code="not_found",procedure="/test.v1.Test/Fail"} 1
paygate_rpc_client_requests_total{code="not_found",procedure="other"} 1
paygate_rpc_client_requests_total{code="ok",procedure="/grpc.health.v1.Health/Check"} 0
paygate_rpc_client_requests_total{code="ok",procedure="/grpc.health.v1.Health/Watch"} 0
paygate_rpc_client_requests_total{code="ok",procedure="/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"} 0
paygate_rpc_client_requests_total{code="ok",procedure="/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"} 0
paygate_rpc_client_requests_total{code="ok",procedure="/test.v1.Test/Fail"} 0
paygate_rpc_client_requests_total{code="ok",procedure="/test.v1.Test/OK"} 2
paygate_rpc_client_requests_total{code="ok",procedure="other"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"paygate_rpc_client_requests_total", "paygate_rpc_client_errors_total"); err != nil {
		t.Error(err)
	}
	n, err := testutil.GatherAndCount(reg, "paygate_rpc_client_duration_seconds")
	if err != nil || n != 2+len(builtinProcedures)+1 {
		t.Errorf("client duration series: %d, %v", n, err)
	}
	// The client interceptor counts no server side.
	if n, _ := testutil.GatherAndCount(reg, "paygate_rpc_server_requests_total"); n != 0 {
		t.Errorf("the client interceptor registered %d server series", n)
	}
}

// BenchmarkRPCClientInterceptorObserve is what the client interceptor adds to a call.
func BenchmarkRPCClientInterceptorObserve(b *testing.B) {
	i := NewRPCClientInterceptor(prometheus.NewRegistry(), []string{procOK})
	b.ReportAllocs()
	for b.Loop() {
		i.observe(i.lookup(procOK), time.Now(), nil)
	}
}
