package client_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/paygate/paygate/client"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
)

// traceGateway answers every payment SUCCEEDED and keeps the traceparent header of each.
type traceGateway struct {
	gatewayv1connect.UnimplementedPaymentServiceHandler
	mu      sync.Mutex
	parents []string
}

func (g *traceGateway) ExecutePayment(_ context.Context, req *connect.Request[gatewayv1.ExecutePaymentRequest]) (*connect.Response[gatewayv1.ExecutePaymentResponse], error) {
	g.mu.Lock()
	g.parents = append(g.parents, req.Header().Get("traceparent"))
	g.mu.Unlock()
	m := req.Msg
	return connect.NewResponse(&gatewayv1.ExecutePaymentResponse{Payment: &gatewayv1.Payment{PaymentId: m.GetPaymentId(),
		FromAccount: m.GetFromAccount(), ToAccount: m.GetToAccount(), Amount: m.GetAmount(), Currency: m.GetCurrency(),
		Status: gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED}}), nil
}

func (g *traceGateway) traceparents() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.parents...)
}

func newTraceGateway(t *testing.T) (*traceGateway, string, *http.Client) {
	g := &traceGateway{}
	mux := http.NewServeMux()
	mux.Handle(gatewayv1connect.NewPaymentServiceHandler(g))
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return g, srv.URL, srv.Client()
}

// TestWithTracerProvider: a payment made under a span gets a client span of the client's
// provider, child of that span, whose W3C trace context the gateway receives.
func TestWithTracerProvider(t *testing.T) {
	t.Parallel()
	g, url, hc := newTraceGateway(t)
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	c := newTestClient(t, url, hc, client.WithTracerProvider(tp))

	ctx, root := tp.Tracer("app").Start(testCtx(t, 5*time.Second), "checkout")
	res, err := c.Pay(ctx, req("bank1-1001", "bank2-2002", 100))
	root.End()
	if err != nil || res.Status != client.StatusSucceeded {
		t.Fatalf("pay: %v %v", res.Status, err)
	}
	var call *tracetest.SpanStub
	for _, s := range exp.GetSpans() {
		if s.Name == "paygate.gateway.v1.PaymentService/ExecutePayment" {
			call = &s
		}
	}
	if call == nil {
		t.Fatalf("no client span of ExecutePayment among %d spans", len(exp.GetSpans()))
	}
	if call.SpanKind != trace.SpanKindClient || call.Parent.SpanID() != root.SpanContext().SpanID() {
		t.Errorf("call span: kind %v parent %v, want a client span under the application's", call.SpanKind, call.Parent.SpanID())
	}
	parents := g.traceparents()
	want := "00-" + root.SpanContext().TraceID().String() + "-" + call.SpanContext.SpanID().String() + "-01"
	if len(parents) != 1 || parents[0] != want {
		t.Errorf("gateway got traceparent %q, want [%s]", parents, want)
	}
}

// TestNoTracerProvider: without the option and with otel's globals unset, nothing is sent.
func TestNoTracerProvider(t *testing.T) {
	t.Parallel()
	g, url, hc := newTraceGateway(t)
	c := newTestClient(t, url, hc)
	if _, err := c.Pay(testCtx(t, 5*time.Second), req("bank1-1001", "bank2-2002", 100)); err != nil {
		t.Fatal(err)
	}
	if p := g.traceparents(); len(p) != 1 || p[0] != "" {
		t.Errorf("gateway got traceparent %q, want none", p)
	}
}
