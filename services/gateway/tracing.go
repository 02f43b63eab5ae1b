package gateway

import (
	"context"
	"errors"
	"time"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/internal/rpcerr"
	"github.com/paygate/paygate/internal/tracing"
)

// Traces of payments (see internal/tracing and docs/operations.md, "Traces").
//
// Under the server span of ExecutePayment a payment has:
//
//	admission            from the insert until the row is durable (it overlaps prepare:
//	                     the banks prepare while the row is being synced)
//	prepare              every bank's vote
//	  prepare <bank>     one bank's vote (paygate.outcome yes, no or error), with the client
//	                     span of its PrepareTransaction (or Batch) call under it
//	decision             the commit point (paygate.outcome commit or abort, paygate.reason)
//	phase_two            commit or abort at every bank; after the answer, in the same trace
//	  phase_two <bank>   one bank's acknowledgement
//
// and a span per store call on the way (store.admit, store.decide, ...). A payment the
// recovery loop drives gets a root span of its own, "recovery". Spans carry ids, banks,
// outcomes and reasons; never a username, a token or a password.
//
// With tracing off (Config.TracerProvider nil or no-op) the coordinator has no tracer: every
// helper here returns at once with a span that does nothing, and the store is not wrapped.

// noSpan is the span the helpers return when the coordinator has no tracer: it records nothing
// and ending it does nothing.
var noSpan = trace.SpanFromContext(context.Background())

// startSpan starts a span of payment id under ctx's, or returns noSpan when tracing is off.
// It takes the id rather than attributes so that, off, it allocates nothing.
func (c *Coordinator) startSpan(ctx context.Context, name, id string) (context.Context, trace.Span) {
	if c.tracer == nil {
		return ctx, noSpan
	}
	return c.tracer.Start(ctx, name, trace.WithAttributes(tracing.AttrPaymentID.String(id)))
}

// startPhaseTwo starts the span of p's phase two, with its decision.
func (c *Coordinator) startPhaseTwo(ctx context.Context, p paymentRecord) (context.Context, trace.Span) {
	if c.tracer == nil {
		return ctx, noSpan
	}
	return c.tracer.Start(ctx, "phase_two", trace.WithAttributes(tracing.AttrPaymentID.String(p.PaymentID), tracing.AttrOutcome.String(p.Decision.String())))
}

// startRecovery starts the root span of the recovery loop's work on payment id: recovery acts
// on its own, not for a caller, so its spans form a trace of their own.
func (c *Coordinator) startRecovery(ctx context.Context, id string) (context.Context, trace.Span) {
	if c.tracer == nil {
		return ctx, noSpan
	}
	return c.tracer.Start(ctx, "recovery", trace.WithNewRoot(), trace.WithAttributes(tracing.AttrPaymentID.String(id)))
}

// tagPayment names the payment on the span of the call that runs it (ExecutePayment's
// server span), so that the trace can be found by paygate.payment_id.
func tagPayment(ctx context.Context, id string) {
	if s := trace.SpanFromContext(ctx); s.IsRecording() {
		s.SetAttributes(tracing.AttrPaymentID.String(id))
	}
}

// setError marks span failed with err's Connect code and reason (never its message, which may
// hold internal text).
func setError(span trace.Span, err error) {
	if err == nil || !span.IsRecording() {
		return
	}
	desc := connect.CodeOf(err).String()
	if errors.Is(err, context.DeadlineExceeded) {
		desc = connect.CodeDeadlineExceeded.String()
	}
	if r := rpcerr.Reason(err); r != "" {
		desc += ": " + r
		span.SetAttributes(tracing.AttrReason.String(r))
	}
	span.SetStatus(codes.Error, desc)
}

// tracedPrepareOne is prepareOne in a span "prepare <bank>" holding the bank's vote.
func (c *Coordinator) tracedPrepareOne(ctx context.Context, id, bank string, req *bankv1.PrepareTransactionRequest) vote {
	if c.tracer == nil {
		return c.prepareOne(ctx, bank, req)
	}
	ctx, span := c.tracer.Start(ctx, "prepare "+bank, trace.WithAttributes(tracing.AttrPaymentID.String(id), tracing.AttrBank.String(bank)))
	defer span.End()
	v := c.prepareOne(ctx, bank, req)
	switch {
	case v.err != nil:
		span.SetAttributes(tracing.AttrOutcome.String("error"))
		setError(span, v.err)
	case v.yes:
		span.SetAttributes(tracing.AttrOutcome.String("yes"))
	default:
		span.SetAttributes(tracing.AttrOutcome.String("no"), tracing.AttrReason.String(v.reason.String()))
	}
	return v
}

// tracedPhase2 is phase2 in a span "phase_two <bank>".
func (c *Coordinator) tracedPhase2(ctx context.Context, bank string, p paymentRecord) error {
	if c.tracer == nil {
		return c.phase2(ctx, bank, p)
	}
	ctx, span := c.tracer.Start(ctx, "phase_two "+bank, trace.WithAttributes(tracing.AttrPaymentID.String(p.PaymentID), tracing.AttrBank.String(bank),
		tracing.AttrOutcome.String(p.Decision.String())))
	defer span.End()
	err := c.phase2(ctx, bank, p)
	setError(span, err)
	return err
}

// endDecision ends the decision's span with the decision recorded (or the store's error).
func endDecision(span trace.Span, decided paymentRecord, err error) {
	if span.IsRecording() {
		if err != nil {
			setError(span, err)
		} else {
			span.SetAttributes(tracing.AttrOutcome.String(decided.Decision.String()))
			if r := gatewayv1.FailureReason(decided.FailureReason); r != gatewayv1.FailureReason_FAILURE_REASON_UNSPECIFIED {
				span.SetAttributes(tracing.AttrReason.String(r.String()))
			}
		}
	}
	span.End()
}

// startBatchSpan starts the root span of a Batch call carrying the messages of live, linked to
// each message's span, and links each message's span (its "prepare <bank>" or "phase_two
// <bank>") back to it with the batch's size. A batch serves several payments, so it belongs to
// none of their traces. When no message is traced it returns ctx and noSpan, having built
// nothing.
func startBatchSpan[Req, Resp any](ctx context.Context, live []*pending[Req, Resp]) (context.Context, trace.Span) {
	var tp trace.TracerProvider
	for _, p := range live {
		if s := trace.SpanFromContext(p.ctx); s.IsRecording() {
			tp = s.TracerProvider()
			break
		}
	}
	if tp == nil {
		return ctx, noSpan
	}
	size := tracing.AttrBatchSize.Int(len(live))
	links := make([]trace.Link, 0, len(live))
	for _, p := range live {
		if sc := trace.SpanContextFromContext(p.ctx); sc.IsValid() {
			links = append(links, trace.Link{SpanContext: sc})
		}
	}
	ctx, span := tp.Tracer(tracing.ScopeName).Start(ctx, "batch", trace.WithNewRoot(), trace.WithLinks(links...), trace.WithAttributes(size))
	for _, p := range live {
		if s := trace.SpanFromContext(p.ctx); s.IsRecording() {
			s.SetAttributes(size)
			s.AddLink(trace.Link{SpanContext: span.SpanContext()})
		}
	}
	return ctx, span
}

// tracedStore is the coordinator's store with a span for each call on a payment's path,
// under the payment's span. A call made outside any trace (the completer's batches, the
// recovery loop's listing) makes no span: it would be a trace of one span.
type tracedStore struct {
	Store
	tracer trace.Tracer
}

// traceStore wraps s for the coordinator when tracing is on; it returns s when it is off. Only
// the coordinator's store is wrapped: the gateway's own keeps the optional interfaces of its
// backend (sharedLimits), which an embedding wrapper would hide.
func traceStore(s Store, tracer trace.Tracer) Store {
	if tracer == nil {
		return s
	}
	return &tracedStore{Store: s, tracer: tracer}
}

// start starts a store span under ctx's, or returns noSpan when ctx has none.
func (s *tracedStore) start(ctx context.Context, name, id string) (context.Context, trace.Span) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ctx, noSpan
	}
	attrs := []attribute.KeyValue{}
	if id != "" {
		attrs = append(attrs, tracing.AttrPaymentID.String(id))
	}
	return s.tracer.Start(ctx, name, trace.WithAttributes(attrs...))
}

// end ends span, failed when err is (ErrNotFound is an answer, not a failure).
func end(span trace.Span, err error) {
	if err != nil && !errors.Is(err, ErrNotFound) {
		span.SetStatus(codes.Error, "store error")
	}
	span.End()
}

// StartAdmitPayment's span lasts until the row is durable (durable returns) or the insert
// failed.
func (s *tracedStore) StartAdmitPayment(ctx context.Context, p paymentRecord) (paymentRecord, bool, func() error, error) {
	ctx, span := s.start(ctx, "store.admit", p.PaymentID)
	stored, inserted, durable, err := s.Store.StartAdmitPayment(ctx, p)
	if err != nil || durable == nil {
		end(span, err)
		return stored, inserted, durable, err
	}
	return stored, inserted, func() error {
		err := durable()
		end(span, err)
		return err
	}, nil
}

func (s *tracedStore) Payment(ctx context.Context, id string) (paymentRecord, error) {
	ctx, span := s.start(ctx, "store.payment", id)
	p, err := s.Store.Payment(ctx, id)
	end(span, err)
	return p, err
}

func (s *tracedStore) Decide(ctx context.Context, id string, d decision, reason int32, message string, presumed bool, now time.Time, by decider) (paymentRecord, error) {
	ctx, span := s.start(ctx, "store.decide", id)
	p, err := s.Store.Decide(ctx, id, d, reason, message, presumed, now, by)
	end(span, err)
	return p, err
}

func (s *tracedStore) AdoptUnadmitted(ctx context.Context, p paymentRecord) (paymentRecord, error) {
	ctx, span := s.start(ctx, "store.adopt", p.PaymentID)
	out, err := s.Store.AdoptUnadmitted(ctx, p)
	end(span, err)
	return out, err
}

func (s *tracedStore) MarkCompleted(ctx context.Context, ids []string, now time.Time) error {
	id := ""
	if len(ids) == 1 {
		id = ids[0]
	}
	ctx, span := s.start(ctx, "store.complete", id)
	err := s.Store.MarkCompleted(ctx, ids, now)
	end(span, err)
	return err
}

func (s *tracedStore) Claim(ctx context.Context, id string) (paymentRecord, bool, error) {
	ctx, span := s.start(ctx, "store.claim", id)
	p, held, err := s.Store.Claim(ctx, id)
	end(span, err)
	return p, held, err
}

// tracingInterceptors returns the gateway's tracing interceptors for tp: its API listener's
// (trusting the caller's trace context: callers hold paygate's certificates), its web
// listener's (linking to it only: browsers are anyone) and its bank clients'. All nil when tp
// is off.
func tracingInterceptors(tp trace.TracerProvider) (api, web, client connect.Interceptor, err error) {
	if !tracing.On(tp) {
		return nil, nil, nil, nil
	}
	if api, err = tracing.ServerInterceptor(tp, true); err != nil {
		return nil, nil, nil, err
	}
	if web, err = tracing.ServerInterceptor(tp, false); err != nil {
		return nil, nil, nil, err
	}
	if client, err = tracing.ClientInterceptor(tp); err != nil {
		return nil, nil, nil, err
	}
	return api, web, client, nil
}

// coordinatorTracer is the coordinator's tracer for tp, nil when tp is off.
func coordinatorTracer(tp trace.TracerProvider) trace.Tracer {
	if !tracing.On(tp) {
		return nil
	}
	return tp.Tracer(tracing.ScopeName)
}
