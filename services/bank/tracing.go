package bank

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/paygate/paygate/internal/tracing"
)

// tracedLedger is the service's ledger with a span for each two-phase-commit write (prepare,
// commit, abort, batch) under the span of the RPC that asked for it. Every other call goes
// straight through. It is installed only when tracing is on (ServerConfig.TracerProvider), and
// writes made outside any trace make no span.
type tracedLedger struct {
	ledgerStore
	tracer trace.Tracer
	bank   attribute.KeyValue
}

// traceLedger wraps l when tp is on, and returns l when it is off.
func traceLedger(l ledgerStore, bank string, tp trace.TracerProvider) ledgerStore {
	if !tracing.On(tp) {
		return l
	}
	return &tracedLedger{ledgerStore: l, tracer: tp.Tracer(tracing.ScopeName), bank: tracing.AttrBank.String(bank)}
}

// start starts a span under ctx's, or returns ctx's own (non-recording) span when ctx has none.
func (l *tracedLedger) start(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ctx, trace.SpanFromContext(context.Background())
	}
	return l.tracer.Start(ctx, name, trace.WithAttributes(append(attrs, l.bank)...))
}

// endWrite ends span, failed (with no internal text) when err is set.
func endWrite(span trace.Span, err error) {
	if err != nil {
		span.SetStatus(codes.Error, "ledger write failed")
	}
	span.End()
}

func (l *tracedLedger) PrepareItem(ctx context.Context, it PrepareItem, now time.Time) (Vote, error) {
	ctx, span := l.start(ctx, "ledger.prepare", tracing.AttrPaymentID.String(it.TxnID))
	v, err := l.ledgerStore.PrepareItem(ctx, it, now)
	if err == nil && span.IsRecording() {
		span.SetAttributes(tracing.AttrOutcome.String(voteOutcome(v)))
		if !v.Yes {
			span.SetAttributes(tracing.AttrReason.String(string(v.Reason)))
		}
	}
	endWrite(span, err)
	return v, err
}

func (l *tracedLedger) Commit(ctx context.Context, txnID string) error {
	ctx, span := l.start(ctx, "ledger.commit", tracing.AttrPaymentID.String(txnID))
	err := l.ledgerStore.Commit(ctx, txnID)
	endWrite(span, err)
	return err
}

func (l *tracedLedger) Abort(ctx context.Context, txnID string) error {
	ctx, span := l.start(ctx, "ledger.abort", tracing.AttrPaymentID.String(txnID))
	err := l.ledgerStore.Abort(ctx, txnID)
	endWrite(span, err)
	return err
}

func (l *tracedLedger) Batch(ctx context.Context, completions []Completion, prepares []PrepareItem, now time.Time) ([]error, []Vote, []error, error) {
	ctx, span := l.start(ctx, "ledger.batch", tracing.AttrBatchSize.Int(len(completions)+len(prepares)))
	cerrs, votes, perrs, err := l.ledgerStore.Batch(ctx, completions, prepares, now)
	endWrite(span, err)
	return cerrs, votes, perrs, err
}

// voteOutcome is a vote as the span attribute paygate.outcome: "yes" or "no".
func voteOutcome(v Vote) string {
	if v.Yes {
		return "yes"
	}
	return "no"
}
