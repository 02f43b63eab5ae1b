package gateway

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
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
		RefundOf:       s.RefundOf,
		Refunded:       s.RefundedAmount,
	}
	switch s.Status {
	case eventStatusSucceeded:
		p.Decision = decisionCommit
	case eventStatusFailed:
		p.Decision = decisionAbort
	default:
		p.Decision = decisionNone
	}
	switch {
	case s.CreatedAt != 0:
		p.CreatedAt = time.Unix(0, s.CreatedAt)
	case e.Type == eventPaymentCreated:
		p.CreatedAt = e.CreatedAt // an event from before snapshots kept the admission time
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
// of check; nil: none) finds the session gone. It finds them in the hub's memory when the hub
// holds every event after pos, and otherwise (a stream replaying from further back, or the hub
// not following) reads the store, a page at a time, until it has caught up. Either way it
// goes at its own pace: a stream never falls behind, and a slow one only delays itself.
func (g *Gateway) followEvents(ctx context.Context, user principal, pos int64, end *streamEnd, check <-chan time.Time, send func(*gatewayv1.Event) error) error {
	g.eventHub.open()
	defer g.eventHub.close()
	for {
		list, upTo, changed, ok := g.eventHub.since(user.Username, pos, watchEventsPage)
		if !ok {
			// Taken before the read, so that an advance during it is not missed; a read that
			// finds less than a page has seen every event of the user up to last.
			last, advanced := g.eventSeq.Last()
			g.eventHub.storeReads.Add(1)
			var err error
			list, err = g.store.Events(ctx, user.Username, pos, watchEventsPage)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			upTo, changed = pos, advanced
			if len(list) < watchEventsPage {
				upTo = max(pos, last)
			}
		}
		for _, e := range list {
			if err := send(eventProto(e, user.Username)); err != nil {
				return err
			}
			pos = e.Seq
		}
		pos = max(pos, upTo)
		if len(list) == watchEventsPage {
			// More may be waiting: read on, unless the stream must end.
			changed = closedChan
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
		case <-changed:
		}
	}
}

// closedChan is a channel that is always ready.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// eventHubKeep is how many of the latest events the hub keeps in memory: a stream that is
// further behind reads the store itself until it has caught up.
const eventHubKeep = 4096

// eventHubPage is how many events the hub reads from the store at a time.
const eventHubPage = 1000

// eventHub reads the log once per advance for all the payment streams of the process, and
// keeps the latest events in memory, where each stream finds its user's: W streams cost one
// EventsAfter per advance instead of W Events reads. It reads only while streams are open; when
// the last one ends it forgets what it holds, and starts again from the log's end for the next.
type eventHub struct {
	store  eventLog
	seq    *eventSequencer
	logger *slog.Logger
	wake   chan struct{} // the number of streams changed

	mu sync.Mutex
	// valid says whether ring holds every event with base < seq <= pos.
	valid     bool
	base, pos int64
	ring      []eventRecord
	streams   int
	// changed is closed, and replaced, when pos grows or the ring stops being valid.
	changed chan struct{}
	// storeReads counts the reads streams made of the store themselves (since returned false).
	storeReads atomic.Int64
}

func newEventHub(store eventLog, seq *eventSequencer, logger *slog.Logger) *eventHub {
	return &eventHub{store: store, seq: seq, logger: logger, wake: make(chan struct{}, 1), changed: make(chan struct{})}
}

// open counts a stream in; close counts it out. Both wake the hub: to follow the log for the
// first stream, to forget it after the last.
func (h *eventHub) open() { h.count(1) }

func (h *eventHub) close() { h.count(-1) }

func (h *eventHub) count(d int) {
	h.mu.Lock()
	h.streams += d
	h.mu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// broadcast wakes the streams waiting on changed. Call with mu held.
func (h *eventHub) broadcast() {
	close(h.changed)
	h.changed = make(chan struct{})
}

// since returns username's events with seq > pos from memory (at most limit), how far the
// stream has now seen (the last of them when limit were found, else the hub's position), and a
// channel closed when there may be more. ok is false when the hub does not hold every event
// after pos: the stream then reads the store.
func (h *eventHub) since(username string, pos int64, limit int) (evs []eventRecord, upTo int64, changed <-chan struct{}, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.valid || pos < h.base {
		return nil, pos, nil, false
	}
	i, _ := slices.BinarySearchFunc(h.ring, pos+1, func(e eventRecord, seq int64) int { return cmp.Compare(e.Seq, seq) })
	for _, e := range h.ring[i:] {
		if e.Payer == username || e.Payee == username {
			evs = append(evs, e)
			if len(evs) == limit {
				return evs, e.Seq, h.changed, true
			}
		}
	}
	return evs, max(pos, h.pos), h.changed, true
}

// run reads the log while streams are open, until ctx ends.
func (h *eventHub) run(ctx context.Context) {
	for ctx.Err() == nil {
		h.mu.Lock()
		streams, valid, pos := h.streams, h.valid, h.pos
		if streams == 0 && valid {
			// Nobody reads: stop following, and forget.
			h.valid, h.ring = false, nil
			h.broadcast()
		}
		h.mu.Unlock()
		if streams == 0 {
			select {
			case <-ctx.Done():
				return
			case <-h.wake:
				continue
			}
		}
		_, advanced := h.seq.Last()
		if !valid {
			last, _ := h.seq.Last()
			if last == 0 {
				var err error
				if last, err = h.store.LastEventSeq(ctx); err != nil {
					h.failed(ctx, err)
					continue
				}
			}
			h.mu.Lock()
			h.valid, h.base, h.pos, h.ring = true, last, last, nil
			h.mu.Unlock()
			pos = last
		}
		list, err := h.store.EventsAfter(ctx, pos, eventHubPage)
		if err != nil {
			h.failed(ctx, err)
			continue
		}
		if len(list) > 0 {
			h.mu.Lock()
			h.ring = append(h.ring, list...)
			if n := len(h.ring); n > 2*eventHubKeep {
				h.base = h.ring[n-eventHubKeep-1].Seq
				h.ring = slices.Clone(h.ring[n-eventHubKeep:])
			}
			h.pos = list[len(list)-1].Seq
			h.broadcast()
			h.mu.Unlock()
		}
		if len(list) == eventHubPage {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-advanced:
		case <-h.wake:
		}
	}
}

// failed gives up what the hub holds after a failed read (the streams read the store
// themselves meanwhile), logs it and waits a little.
func (h *eventHub) failed(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	h.mu.Lock()
	if h.valid {
		h.valid, h.ring = false, nil
		h.broadcast()
	}
	h.mu.Unlock()
	h.logger.LogAttrs(ctx, slog.LevelWarn, "event log: read for the payment streams", slog.String("error", err.Error()))
	t := time.NewTimer(eventSequenceFloor)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
