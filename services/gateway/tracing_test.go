package gateway

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/paygate/paygate/internal/tracing"
)

// recorder returns a tracer provider recording every span into the returned exporter.
func recorder(t testing.TB) (*sdktrace.TracerProvider, *tracetest.InMemoryExporter) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	return tp, exp
}

// byName returns the ended span called name, failing the test unless there is exactly one.
func byName(t *testing.T, exp *tracetest.InMemoryExporter, name string) tracetest.SpanStub {
	t.Helper()
	var found []tracetest.SpanStub
	for _, s := range exp.GetSpans() {
		if s.Name == name {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d spans %q, want 1", len(found), name)
	}
	return found[0]
}

func attrOf(s tracetest.SpanStub, key string) (string, bool) {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key {
			return kv.Value.String(), true
		}
	}
	return "", false
}

// TestBatchSpan: a batch of several messages gets a root span of its own linked to every
// message's span, and each message's span is linked back to it with the batch's size.
func TestBatchSpan(t *testing.T) {
	t.Parallel()
	tp, exp := recorder(t)
	tracer := tp.Tracer("test")
	var live []*pending[int, int]
	var msgSpans []trace.Span
	for range 3 {
		ctx, span := tracer.Start(context.Background(), "prepare bank1")
		msgSpans = append(msgSpans, span)
		live = append(live, &pending[int, int]{ctx: ctx})
	}
	// The batch call is made in the first message's context, as (*batcher).send does.
	ctx, batch := startBatchSpan(live[0].ctx, live)
	if got := trace.SpanFromContext(ctx); !got.SpanContext().Equal(batch.SpanContext()) {
		t.Fatal("the batch call's context does not carry the batch span")
	}
	batch.End()
	for _, s := range msgSpans {
		s.End()
	}

	b := byName(t, exp, "batch")
	if b.Parent.IsValid() {
		t.Errorf("batch span has parent %v, want a root", b.Parent.SpanID())
	}
	if b.SpanContext.TraceID() == msgSpans[0].SpanContext().TraceID() {
		t.Error("batch span is in the first message's trace, want a trace of its own")
	}
	if len(b.Links) != len(live) {
		t.Fatalf("batch span has %d links, want %d", len(b.Links), len(live))
	}
	for i, l := range b.Links {
		if l.SpanContext.SpanID() != msgSpans[i].SpanContext().SpanID() {
			t.Errorf("link %d is to %v, want message %d's span %v", i, l.SpanContext.SpanID(), i, msgSpans[i].SpanContext().SpanID())
		}
	}
	if v, _ := attrOf(b, string(tracing.AttrBatchSize)); v != "3" {
		t.Errorf("batch span's %s = %q, want 3", tracing.AttrBatchSize, v)
	}
	for _, s := range exp.GetSpans() {
		if s.Name != "prepare bank1" {
			continue
		}
		if len(s.Links) != 1 || s.Links[0].SpanContext.SpanID() != b.SpanContext.SpanID() {
			t.Errorf("message span %v has links %v, want one to the batch span", s.SpanContext.SpanID(), s.Links)
		}
		if v, _ := attrOf(s, string(tracing.AttrBatchSize)); v != "3" {
			t.Errorf("message span's %s = %q, want 3", tracing.AttrBatchSize, v)
		}
	}
}

// TestBatchSpanUntraced: messages without spans build nothing.
func TestBatchSpanUntraced(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	live := []*pending[int, int]{{ctx: ctx}, {ctx: ctx}}
	got, span := startBatchSpan(ctx, live)
	if got != ctx || span != noSpan || span.IsRecording() {
		t.Errorf("untraced batch: context changed %v, span %v recording %v; want ctx and noSpan", got != ctx, span, span.IsRecording())
	}
}

// stubStore answers Payment with ErrNotFound and Decide with a store failure.
type stubStore struct{ Store }

func (stubStore) Payment(context.Context, string) (paymentRecord, error) {
	return paymentRecord{}, ErrNotFound
}

func (stubStore) Decide(context.Context, string, decision, int32, string, bool, time.Time, decider) (paymentRecord, error) {
	return paymentRecord{}, errors.New("sqlite: disk I/O error at /var/lib/secret/path")
}

// TestTracedStore: a store call in a payment's trace gets a child span naming the payment,
// failed (without the error's text) when the store fails; a call outside any trace makes none.
func TestTracedStore(t *testing.T) {
	t.Parallel()
	tp, exp := recorder(t)
	s := traceStore(stubStore{}, tp.Tracer(tracing.ScopeName))
	if _, ok := s.(*tracedStore); !ok {
		t.Fatalf("traceStore returned %T, want *tracedStore", s)
	}
	if same := traceStore(stubStore{}, nil); same != (stubStore{}) {
		t.Errorf("traceStore without a tracer wrapped the store: %T", same)
	}

	// Outside a trace: no span.
	if _, err := s.Payment(context.Background(), "p0"); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if n := len(exp.GetSpans()); n != 0 {
		t.Fatalf("a call outside any trace made %d spans", n)
	}

	ctx, parent := tp.Tracer("test").Start(context.Background(), "payment")
	if _, err := s.Payment(ctx, "p1"); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if _, err := s.Decide(ctx, "p1", decisionCommit, 0, "", false, time.Now(), decidedByRequest); err == nil {
		t.Fatal("Decide: no error")
	}
	parent.End()

	p := byName(t, exp, "store.payment")
	if p.Parent.SpanID() != parent.SpanContext().SpanID() {
		t.Errorf("store.payment's parent is %v, want the payment's span", p.Parent.SpanID())
	}
	if v, _ := attrOf(p, string(tracing.AttrPaymentID)); v != "p1" {
		t.Errorf("store.payment's %s = %q, want p1", tracing.AttrPaymentID, v)
	}
	if p.Status.Code == codes.Error {
		t.Error("store.payment failed on ErrNotFound, an answer")
	}
	d := byName(t, exp, "store.decide")
	if d.Status.Code != codes.Error || d.Status.Description != "store error" {
		t.Errorf("store.decide status %v %q, want Error \"store error\" (no internal text)", d.Status.Code, d.Status.Description)
	}
}

// TestSpanHelpersOff: without a tracer the coordinator's helpers make nothing and leave the
// context as it is.
func TestSpanHelpersOff(t *testing.T) {
	t.Parallel()
	c := &Coordinator{}
	ctx := context.Background()
	for _, start := range []func() (context.Context, trace.Span){
		func() (context.Context, trace.Span) { return c.startSpan(ctx, "prepare", "p1") },
		func() (context.Context, trace.Span) { return c.startRecovery(ctx, "p1") },
	} {
		got, span := start()
		if got != ctx || span.IsRecording() || span.SpanContext().IsValid() {
			t.Errorf("helper without a tracer: context changed %v, span recording %v", got != ctx, span.IsRecording())
		}
		span.End()
	}
	if coordinatorTracer(nil) != nil {
		t.Error("coordinatorTracer(nil) is not nil")
	}
	api, web, cl, err := tracingInterceptors(nil)
	if api != nil || web != nil || cl != nil || err != nil {
		t.Errorf("tracingInterceptors(nil) = %v, %v, %v, %v; want nothing", api, web, cl, err)
	}
}

// BenchmarkSpanOff is what a payment's span helpers cost with tracing off (per span).
func BenchmarkSpanOff(b *testing.B) {
	c := &Coordinator{}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		_, span := c.startSpan(ctx, "prepare", "p1")
		span.End()
	}
}

// BenchmarkSpanOn is the same with tracing on (spans recorded, exported nowhere).
func BenchmarkSpanOn(b *testing.B) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(tracetest.NewNoopExporter()))
	b.Cleanup(func() { tp.Shutdown(context.Background()) })
	c := &Coordinator{tracer: tp.Tracer(tracing.ScopeName)}
	ctx, parent := tp.Tracer("bench").Start(context.Background(), "payment")
	defer parent.End()
	b.ReportAllocs()
	for b.Loop() {
		_, span := c.startSpan(ctx, "prepare", "p1")
		span.End()
	}
}
