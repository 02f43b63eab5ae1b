package gateway

import (
	"context"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/internal/rpcerr"
)

// The event log as the API shows it: ListEvents pages through a user's events, and
// WatchPayments follows them (followEvents).

// listEventsDefault is the page size of a ListEvents that asks for none; the proto bounds what
// may be asked for (at most 500).
const listEventsDefault = 100

// watchEventsPage is how many events a payment stream reads from the store at a time.
const watchEventsPage = 100

// record is the payment as of e, as the store would return it, shown to viewer: the
// snapshot and the event's ids. The snapshot does not hold the payment's creation time: the
// created event's time stands for it (both are written in one transaction), and it is left
// zero for the decisions (eventProto then leaves create_time unset).
func (e eventRecord) record(viewer string) paymentRecord {
	s := e.Payment
	p := paymentRecord{
		PaymentID:      e.PaymentID,
		Username:       e.Payer,
		From:           s.From,
		To:             s.To,
		Amount:         s.Amount,
		Currency:       s.Currency,
		Description:    s.Description,
		FailureReason:  s.FailureReason,
		FailureMessage: s.FailureMessage,
		Presumed:       s.Presumed,
		DecidedAt:      s.Decided(),
		DecidedBy:      s.DecidedBy,
	}
	switch s.Status {
	case eventStatusSucceeded:
		p.Decision = decisionCommit
	case eventStatusFailed:
		p.Decision = decisionAbort
	default:
		p.Decision = decisionNone
	}
	if e.Type == eventPaymentCreated {
		p.CreatedAt = e.CreatedAt
	}
	if viewer != e.Payer {
		// Only the payer sees who paid.
		p.Username = ""
	}
	return p
}

// eventProto is e as the API shows it to viewer (one of its payer and payee).
func eventProto(e eventRecord, viewer string) *gatewayv1.Event {
	p := e.record(viewer)
	pay := p.proto()
	if p.CreatedAt.IsZero() {
		pay.CreateTime = nil
	}
	return &gatewayv1.Event{
		Seq:        e.Seq,
		EventId:    "evt_" + strconv.FormatInt(e.Seq, 10),
		Type:       string(e.Type),
		CreateTime: timestamppb.New(e.CreatedAt),
		Payment:    pay,
	}
}

// ListEvents implements PaymentService.ListEvents: the caller's events (as payer or payee)
// after req's after, oldest first.
func (g *Gateway) ListEvents(ctx context.Context, req *connect.Request[gatewayv1.ListEventsRequest]) (*connect.Response[gatewayv1.ListEventsResponse], error) {
	user, err := mustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	size := int(req.Msg.GetPageSize())
	if size == 0 {
		size = listEventsDefault
	}
	after := req.Msg.GetAfter()
	list, err := g.store.Events(ctx, user.Username, after, size+1)
	if err != nil {
		return nil, err
	}
	resp := &gatewayv1.ListEventsResponse{NextAfter: after}
	if len(list) > size {
		list = list[:size]
		resp.HasMore = true
	}
	for _, e := range list {
		resp.Events = append(resp.Events, eventProto(e, user.Username))
	}
	if len(list) > 0 {
		resp.NextAfter = list[len(list)-1].Seq
	}
	return connect.NewResponse(resp), nil
}

// eventsNow is where a stream that follows only the changes from now on starts: the last seq
// numbered, read from the store while the sequencer has not run yet.
func (g *Gateway) eventsNow(ctx context.Context) (int64, error) {
	if last, _ := g.eventSeq.Last(); last > 0 {
		return last, nil
	}
	return g.store.LastEventSeq(ctx)
}

// followEvents sends user's events after pos, oldest first, as they are numbered, until ctx
// ends (nil), the gateway drains, end ends the user's streams, or a session check (every tick
// of check; nil: none) finds the session gone. It reads the store at its own pace, a page at a
// time, and waits for the sequencer's next advance once it has read everything: a stream never
// falls behind, and a slow one only delays itself.
func (g *Gateway) followEvents(ctx context.Context, user principal, pos int64, end *streamEnd, check <-chan time.Time, send func(*gatewayv1.Event) error) error {
	for {
		// Taken before the read, so that an advance during it is not missed.
		_, advanced := g.eventSeq.Last()
		list, err := g.store.Events(ctx, user.Username, pos, watchEventsPage)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		for _, e := range list {
			if err := send(eventProto(e, user.Username)); err != nil {
				return err
			}
			pos = e.Seq
		}
		if len(list) == watchEventsPage {
			// More may be waiting: read on, unless the stream must end.
			advanced = closedChan
		}
		select {
		case <-ctx.Done():
			return nil
		case <-g.draining:
			// The gateway is shutting down: end the stream so shutdown need not wait for it;
			// clients watch again (after the last seq they saw) when the gateway is back.
			return rpcerr.New(connect.CodeUnavailable, "shutting_down", "the gateway is shutting down; watch again")
		case <-end.Done():
			return end.Err()
		case <-check:
			if err := g.streamSessionEnded(ctx, user); err != nil {
				return err
			}
		case <-advanced:
		}
	}
}

// closedChan is a channel that is always ready.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()
