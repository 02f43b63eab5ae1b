package bank

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/paygate/paygate/internal/tracing"
)

// stubLedger votes NO for insufficient funds and fails every commit.
type stubLedger struct{ ledgerStore }

func (stubLedger) PrepareItem(context.Context, PrepareItem, time.Time) (Vote, error) {
	return Vote{Reason: ReasonInsufficientFunds}, nil
}

func (stubLedger) Commit(context.Context, string) error {
	return errors.New("sqlite: database is locked (/var/lib/bank1.db)")
}

// TestTracedLedger: the ledger's writes in a traced call get spans under the call's, with the
// vote and the bank; a failed write's span says so without the error's text; writes outside a
// trace make none; with tracing off the ledger is not wrapped.
func TestTracedLedger(t *testing.T) {
	t.Parallel()
	if l := traceLedger(stubLedger{}, "bank1", noop.NewTracerProvider()); l != (stubLedger{}) {
		t.Fatalf("tracing off: ledger wrapped as %T", l)
	}
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	l := traceLedger(stubLedger{}, "bank1", tp)

	if _, err := l.PrepareItem(context.Background(), PrepareItem{TxnID: "t0"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if n := len(exp.GetSpans()); n != 0 {
		t.Fatalf("a write outside any trace made %d spans", n)
	}

	ctx, call := tp.Tracer("test").Start(context.Background(), "PrepareTransaction")
	if _, err := l.PrepareItem(ctx, PrepareItem{TxnID: "t1"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := l.Commit(ctx, "t1"); err == nil {
		t.Fatal("Commit: no error")
	}
	call.End()

	got := map[string]tracetest.SpanStub{}
	for _, s := range exp.GetSpans() {
		got[s.Name] = s
	}
	attrs := func(s tracetest.SpanStub) map[string]string {
		m := map[string]string{}
		for _, kv := range s.Attributes {
			m[string(kv.Key)] = kv.Value.String()
		}
		return m
	}
	p, ok := got["ledger.prepare"]
	if !ok || p.Parent.SpanID() != call.SpanContext().SpanID() {
		t.Fatalf("ledger.prepare missing or not under the call's span: %+v", p.Parent)
	}
	a := attrs(p)
	if a[string(tracing.AttrOutcome)] != "no" || a[string(tracing.AttrReason)] != string(ReasonInsufficientFunds) ||
		a[string(tracing.AttrBank)] != "bank1" || a[string(tracing.AttrPaymentID)] != "t1" {
		t.Errorf("ledger.prepare attributes %v", a)
	}
	c, ok := got["ledger.commit"]
	if !ok || c.Status.Code != codes.Error || c.Status.Description != "ledger write failed" {
		t.Errorf("ledger.commit: present %v, status %v %q; want Error without the error's text", ok, c.Status.Code, c.Status.Description)
	}
}
