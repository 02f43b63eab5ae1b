package metrics

import (
	"context"
	"errors"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/paygate/paygate/internal/rpcerr"
)

// OtherProcedure is the procedure label of calls to a path that is not a registered procedure.
const OtherProcedure = "other"

// codeOK is the code label of a call that succeeded.
const codeOK = "ok"

// builtinProcedures are the health and reflection procedures every rpcserver.Server serves.
var builtinProcedures = []string{
	"/" + grpchealth.HealthV1ServiceName + "/Check",
	"/" + grpchealth.HealthV1ServiceName + "/Watch",
	"/" + grpcreflect.ReflectV1ServiceName + "/ServerReflectionInfo",
	"/" + grpcreflect.ReflectV1AlphaServiceName + "/ServerReflectionInfo",
}

// DefBuckets are the latency buckets of the RPC and payment phase histograms, in seconds: from
// 0.5 ms (a local read) to 10 s (a bank call timing out).
var DefBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// RPCInterceptor counts the calls a server handles: paygate_rpc_server_requests_total{procedure,
// code}, paygate_rpc_server_errors_total{procedure,code,reason} and the histogram
// paygate_rpc_server_duration_seconds{procedure}. Install it in rpcserver.Config.Interceptors,
// where it sees the code and reason the caller gets. One interceptor may serve several servers
// of a process that share procedures.
type RPCInterceptor struct{ rpcMetrics }

// RPCClientInterceptor counts the unary calls a client makes: paygate_rpc_client_requests_total
// {procedure,code}, paygate_rpc_client_errors_total{procedure,code,reason} and the histogram
// paygate_rpc_client_duration_seconds{procedure}, each call timed from the request until the
// answer or the error (the transport's and the server's time together). Install it with
// connect.WithInterceptors on the clients of one kind of server; one interceptor may serve the
// clients of several servers of that kind (the gateway's banks). Client streams are not
// counted.
type RPCClientInterceptor struct{ rpcMetrics }

// rpcMetrics are the counters of one side (server or client) of a process's RPCs.
type rpcMetrics struct {
	procs    map[string]*procMetrics
	other    *procMetrics
	requests *prometheus.CounterVec
	errors   *prometheus.CounterVec
}

// procMetrics are one procedure's pre-resolved children, so that a successful call costs no
// label lookup.
type procMetrics struct {
	name     string
	ok       prometheus.Counter
	duration prometheus.Observer
}

// NewRPCInterceptor registers the RPC metrics in reg and returns their interceptor. procedures
// are the server's registered procedures ("/pkg.Service/Method", e.g. the keys of its policy);
// health and reflection are added. Any other path is counted as "other", so that no
// caller-chosen value becomes a label.
func NewRPCInterceptor(reg prometheus.Registerer, procedures []string) *RPCInterceptor {
	return &RPCInterceptor{newRPCMetrics(reg, "rpc_server", procedures,
		"RPCs handled, by procedure and Connect code (ok when it succeeded).",
		"RPCs that failed, by procedure, Connect code and ErrorInfo reason (empty when none).",
		"Time to handle an RPC (a stream: until it ends), by procedure.")}
}

// NewRPCClientInterceptor registers the client RPC metrics in reg and returns their
// interceptor. procedures are the procedures the clients call (the server's policy keys); health
// and reflection are added, and any other procedure is counted as "other".
func NewRPCClientInterceptor(reg prometheus.Registerer, procedures []string) *RPCClientInterceptor {
	return &RPCClientInterceptor{newRPCMetrics(reg, "rpc_client", procedures,
		"RPCs this process made as a client, by procedure and Connect code (ok when it succeeded).",
		"RPCs this process made as a client that failed, by procedure, Connect code and ErrorInfo reason (empty when none).",
		"Time from sending an RPC until its answer or error, as the client saw it, by procedure.")}
}

// newRPCMetrics registers one side's metrics, under subsystem, with a pre-resolved child for
// every procedure, the built-in ones and "other".
func newRPCMetrics(reg prometheus.Registerer, subsystem string, procedures []string, requestsHelp, errorsHelp, durationHelp string) rpcMetrics {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: subsystem, Name: "requests_total", Help: requestsHelp,
	}, []string{"procedure", "code"})
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: subsystem, Name: "errors_total", Help: errorsHelp,
	}, []string{"procedure", "code", "reason"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Subsystem: subsystem, Name: "duration_seconds", Help: durationHelp,
		Buckets: DefBuckets,
	}, []string{"procedure"})
	reg.MustRegister(requests, errs, duration)

	i := rpcMetrics{procs: make(map[string]*procMetrics), requests: requests, errors: errs}
	child := func(name string) *procMetrics {
		return &procMetrics{name: name, ok: requests.WithLabelValues(name, codeOK), duration: duration.WithLabelValues(name)}
	}
	for _, p := range append(append([]string(nil), procedures...), builtinProcedures...) {
		if _, ok := i.procs[p]; !ok {
			i.procs[p] = child(p)
		}
	}
	i.other = child(OtherProcedure)
	return i
}

func (i *rpcMetrics) lookup(procedure string) *procMetrics {
	if m, ok := i.procs[procedure]; ok {
		return m
	}
	return i.other
}

func (i *rpcMetrics) observe(m *procMetrics, start time.Time, err error) {
	m.duration.Observe(time.Since(start).Seconds())
	if err == nil {
		m.ok.Inc()
		return
	}
	code := codeLabel(err)
	i.requests.WithLabelValues(m.name, code).Inc()
	i.errors.WithLabelValues(m.name, code, rpcerr.Reason(err)).Inc()
}

// codeLabel is the Connect code of err as its lower-case name, e.g. "not_found". Context errors
// are named as the caller sees them (canceled, deadline_exceeded).
func codeLabel(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Code().String()
	}
	return connect.CodeOf(err).String()
}

// WrapUnary implements connect.Interceptor.
func (i *RPCInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		m := i.lookup(req.Spec().Procedure)
		start := time.Now()
		resp, err := next(ctx, req)
		i.observe(m, start, err)
		return resp, err
	}
}

// WrapStreamingClient implements connect.Interceptor; client streams are not counted.
func (i *RPCInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler implements connect.Interceptor.
func (i *RPCInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		m := i.lookup(conn.Spec().Procedure)
		start := time.Now()
		err := next(ctx, conn)
		i.observe(m, start, err)
		return err
	}
}

// WrapUnary implements connect.Interceptor.
func (i *RPCClientInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if !req.Spec().IsClient {
			return next(ctx, req)
		}
		m := i.lookup(req.Spec().Procedure)
		start := time.Now()
		resp, err := next(ctx, req)
		i.observe(m, start, err)
		return resp, err
	}
}

// WrapStreamingClient implements connect.Interceptor; client streams are not counted.
func (i *RPCClientInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler implements connect.Interceptor; it counts nothing (a client interceptor).
func (i *RPCClientInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}
