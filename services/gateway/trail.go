package gateway

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/internal/rpcerr"
)

// Each payment's two-phase trail: what the coordinator did for it and what each bank answered,
// for operators (AdminService.GetPaymentTrail, GetOperations).
//
// The payment row's own facts are authoritative and are not written twice: admission
// (created_at), the decision with who made it (decided_at, decision, decided_by) and
// completion (completed_at) are read from the row when a trail is shown. Everything else is a
// trail event: each prepare sent, each vote, each bank error, each acknowledgement of phase
// two, each re-send by recovery, each takeover by a replica, each re-drive an admin asked for.
//
// Trail events are written in the background (trailRecorder): recording one costs the payment
// a send on a buffered channel, never a wait for the store. When the store falls behind and
// the queue is full, events are dropped and counted, never waited for: the trail is a record
// for people, the payment row is what the protocol rests on. A trail may therefore miss an
// event, and shows a payment's latest events a moment after they happened.

const (
	// trailQueueSize bounds the events waiting to be written (about 1.5 MB).
	trailQueueSize = 8192
	// trailBatchSize is the most events written by one AppendTrail call.
	trailBatchSize = 500
	// trailLinger is how long the writer waits for more events after the first of a batch,
	// so that a light load costs the store a few writes a second rather than one per event.
	trailLinger = 20 * time.Millisecond
	// trailWriteTimeout bounds each write.
	trailWriteTimeout = 5 * time.Second
	// trailLogEvery spaces the warnings about dropped events.
	trailLogEvery = 30 * time.Second
)

// trailRecorder queues trail events and writes them to the store in batches from one
// goroutine (run), between start and close. Events recorded while it is not running stay
// queued, or are dropped once the queue is full.
type trailRecorder struct {
	store interface {
		AppendTrail(ctx context.Context, events []trailEvent) error
	}
	logger *slog.Logger
	queue  chan trailEvent

	// dropped counts events not recorded: the queue was full, or their write failed.
	dropped atomic.Int64

	startOnce, stopOnce sync.Once
	started             atomic.Bool
	stop, done          chan struct{}
}

func newTrailRecorder(store adminStore, logger *slog.Logger) *trailRecorder {
	return &trailRecorder{store: store, logger: logger, queue: make(chan trailEvent, trailQueueSize),
		stop: make(chan struct{}), done: make(chan struct{})}
}

// add queues ev, or drops it when the queue is full. It never blocks.
func (r *trailRecorder) add(ev trailEvent) {
	select {
	case r.queue <- ev:
	default:
		r.dropped.Add(1)
	}
}

// start runs the writer until close.
func (r *trailRecorder) start() {
	r.startOnce.Do(func() {
		r.started.Store(true)
		go r.run()
	})
}

// close writes the events queued so far and stops the writer, or gives up when ctx ends.
// Call it once nothing records events any more, before the store closes.
func (r *trailRecorder) close(ctx context.Context) error {
	if !r.started.Load() {
		return nil
	}
	r.stopOnce.Do(func() { close(r.stop) })
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		return errors.New("gateway: trail events not all written before shutdown: " + ctx.Err().Error())
	}
}

func (r *trailRecorder) run() {
	defer close(r.done)
	batch := make([]trailEvent, 0, trailBatchSize)
	linger := time.NewTimer(trailLinger)
	linger.Stop()
	var reported int64
	var reportedAt time.Time
	for {
		var stopping bool
		select {
		case ev := <-r.queue:
			batch = append(batch[:0], ev)
		case <-r.stop:
			stopping = true
			batch = batch[:0]
		}
		if !stopping {
			linger.Reset(trailLinger)
		gather:
			for len(batch) < trailBatchSize {
				select {
				case ev := <-r.queue:
					batch = append(batch, ev)
				case <-linger.C:
					break gather
				case <-r.stop:
					stopping = true
					break gather
				}
			}
			linger.Stop()
		}
		if stopping {
			// Write everything queued, without lingering.
			for {
			drain:
				for len(batch) < trailBatchSize {
					select {
					case ev := <-r.queue:
						batch = append(batch, ev)
					default:
						break drain
					}
				}
				if len(batch) == 0 {
					break
				}
				r.write(batch)
				batch = batch[:0]
			}
			r.report(&reported, &reportedAt, true)
			return
		}
		r.write(batch)
		r.report(&reported, &reportedAt, false)
	}
}

// write appends a batch; events whose write failed count as dropped.
func (r *trailRecorder) write(batch []trailEvent) {
	ctx, cancel := context.WithTimeout(context.Background(), trailWriteTimeout)
	defer cancel()
	if err := r.store.AppendTrail(ctx, batch); err != nil {
		r.dropped.Add(int64(len(batch)))
		r.logger.LogAttrs(ctx, slog.LevelDebug, "write trail events", slog.Int("events", len(batch)), slog.String("error", err.Error()))
	}
}

// report logs how many events were dropped since the last report, at most once every
// trailLogEvery (and once more at the end).
func (r *trailRecorder) report(reported *int64, at *time.Time, final bool) {
	n := r.dropped.Load()
	if n == *reported || (!final && time.Since(*at) < trailLogEvery) {
		return
	}
	r.logger.LogAttrs(context.Background(), slog.LevelWarn, "payment trail events dropped: the store was too slow or failing; the payments are not affected",
		slog.Int64("dropped", n-*reported), slog.Int64("dropped_total", n))
	*reported, *at = n, time.Now()
}

// Dropped returns how many trail events were not recorded.
func (r *trailRecorder) Dropped() int64 { return r.dropped.Load() }

// The coordinator's trail events. Each costs one channel send: no formatting on the way.

func (c *Coordinator) trailEvent(id string, kind gatewayv1.TrailEventKind, bank string) trailEvent {
	return trailEvent{PaymentID: id, At: c.now(), Kind: int32(kind), Bank: bank, Replica: c.store.Owner()}
}

func (c *Coordinator) notePrepareSent(id, bank string) {
	c.trail.add(c.trailEvent(id, gatewayv1.TrailEventKind_TRAIL_EVENT_KIND_PREPARE_SENT, bank))
}

// noteVote records a bank's vote, or the error it answered with instead.
func (c *Coordinator) noteVote(id string, v vote) {
	if v.err != nil {
		c.noteBankError(id, v.bank, v.err)
		return
	}
	ev := c.trailEvent(id, gatewayv1.TrailEventKind_TRAIL_EVENT_KIND_VOTE, v.bank)
	ev.Vote = "yes"
	if !v.yes {
		ev.Vote, ev.Detail = "no", voteReasonText(v.reason)+": "+v.msg
	}
	c.trail.add(ev)
}

func (c *Coordinator) noteBankError(id, bank string, err error) {
	ev := c.trailEvent(id, gatewayv1.TrailEventKind_TRAIL_EVENT_KIND_BANK_ERROR, bank)
	ev.Detail = trailErrorDetail(err)
	c.trail.add(ev)
}

func (c *Coordinator) noteAcknowledged(id, bank string) {
	c.trail.add(c.trailEvent(id, gatewayv1.TrailEventKind_TRAIL_EVENT_KIND_ACKNOWLEDGED, bank))
}

// noteRetry records that recovery sends a payment's messages again (what: "prepare" or
// "phase two").
func (c *Coordinator) noteRetry(id, what string) {
	ev := c.trailEvent(id, gatewayv1.TrailEventKind_TRAIL_EVENT_KIND_RETRY, "")
	ev.Attempt, ev.Detail = c.nextAttempt(id), what
	c.trail.add(ev)
}

// noteClaimed records that this replica took payment id over (how says from whom).
func (c *Coordinator) noteClaimed(id, how string) {
	ev := c.trailEvent(id, gatewayv1.TrailEventKind_TRAIL_EVENT_KIND_CLAIMED, "")
	ev.Detail = how
	c.trail.add(ev)
}

func (c *Coordinator) noteRedriveRequested(id, admin string) {
	ev := c.trailEvent(id, gatewayv1.TrailEventKind_TRAIL_EVENT_KIND_REDRIVE_REQUESTED, "")
	ev.Detail = "requested by " + admin
	c.trail.add(ev)
}

// noteHeld remembers, on a shared store, that this process holds payment id under its current
// lease (it admitted it).
func (c *Coordinator) noteHeld(id string) {
	if !c.store.Shared() {
		return
	}
	owner := c.store.Owner()
	c.mu.Lock()
	c.known[id] = owner
	c.mu.Unlock()
}

// noteIfClaimed records, on a shared store, that this process took payment id over when it
// had not held it under its current lease before: it claimed it as an orphan, or a duplicate
// request took it over from a replica whose lease expired. how says which.
func (c *Coordinator) noteIfClaimed(id, how string) {
	if !c.store.Shared() {
		return
	}
	owner := c.store.Owner()
	c.mu.Lock()
	had := c.known[id] == owner
	c.known[id] = owner
	c.mu.Unlock()
	if !had {
		c.noteClaimed(id, how)
	}
}

// forgetHeld drops what noteHeld and noteIfClaimed remembered: every payment after the lease
// was lost (whatever this process claims back is claimed anew), or one that is completed.
func (c *Coordinator) forgetHeld(id string) {
	c.mu.Lock()
	if id == "" {
		clear(c.known)
	} else {
		delete(c.known, id)
	}
	c.mu.Unlock()
}

// nextAttempt counts recovery's re-sends of payment id in this process: 1, 2, 3, …
func (c *Coordinator) nextAttempt(id string) int32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.retry[id]
	st.attempts++
	c.retry[id] = st
	return st.attempts
}

// trailErrorDetail is a bank error as a trail shows it: its Connect code, and its reason when
// it has one ("failed_precondition: transaction_already_aborted"). Errors of the gateway's
// own making are named by what they mean.
func trailErrorDetail(err error) string {
	switch {
	case errors.Is(err, ErrBankUnavailable):
		return "unavailable: known to be down"
	case errors.Is(err, ErrUnknownBank):
		return "not_found: no such bank"
	case errors.Is(err, context.DeadlineExceeded):
		return connect.CodeDeadlineExceeded.String()
	case errors.Is(err, context.Canceled):
		return connect.CodeCanceled.String()
	}
	code := connect.CodeOf(err).String()
	if reason := rpcerr.Reason(err); reason != "" {
		return code + ": " + reason
	}
	return code
}

// trailKindOrder orders events recorded at the same instant: a payment's steps in the order
// they happen.
var trailKindOrder = map[gatewayv1.TrailEventKind]int{
	gatewayv1.TrailEventKind_TRAIL_EVENT_KIND_ADMITTED:          0,
	gatewayv1.TrailEventKind_TRAIL_EVENT_KIND_CLAIMED:           1,
	gatewayv1.TrailEventKind_TRAIL_EVENT_KIND_REDRIVE_REQUESTED: 2,
	gatewayv1.TrailEventKind_TRAIL_EVENT_KIND_RETRY:             3,
	gatewayv1.TrailEventKind_TRAIL_EVENT_KIND_PREPARE_SENT:      4,
	gatewayv1.TrailEventKind_TRAIL_EVENT_KIND_VOTE:              5,
	gatewayv1.TrailEventKind_TRAIL_EVENT_KIND_BANK_ERROR:        5,
	gatewayv1.TrailEventKind_TRAIL_EVENT_KIND_DECIDED:           6,
	gatewayv1.TrailEventKind_TRAIL_EVENT_KIND_ACKNOWLEDGED:      7,
	gatewayv1.TrailEventKind_TRAIL_EVENT_KIND_COMPLETED:         8,
}

// paymentTrail returns p's whole trail, oldest first: the events its row holds (admitted,
// decided, completed) and the recorded ones.
func paymentTrail(p paymentRecord, recorded []trailEvent) []*gatewayv1.TrailEvent {
	out := make([]*gatewayv1.TrailEvent, 0, len(recorded)+3)
	if !p.CreatedAt.IsZero() && !isUnadmittedAbort(p) {
		out = append(out, &gatewayv1.TrailEvent{Time: timestamppb.New(p.CreatedAt), Kind: gatewayv1.TrailEventKind_TRAIL_EVENT_KIND_ADMITTED})
	}
	if p.Decision != decisionNone {
		ev := &gatewayv1.TrailEvent{Kind: gatewayv1.TrailEventKind_TRAIL_EVENT_KIND_DECIDED,
			Decision: p.Decision.String(), DecidedBy: gatewayv1.DecidedBy(p.DecidedBy), Detail: p.FailureMessage}
		if !p.DecidedAt.IsZero() {
			ev.Time = timestamppb.New(p.DecidedAt)
		}
		out = append(out, ev)
	}
	if p.Completed {
		ev := &gatewayv1.TrailEvent{Kind: gatewayv1.TrailEventKind_TRAIL_EVENT_KIND_COMPLETED}
		if !p.CompletedAt.IsZero() {
			ev.Time = timestamppb.New(p.CompletedAt)
		}
		out = append(out, ev)
	}
	for _, e := range recorded {
		out = append(out, &gatewayv1.TrailEvent{
			Time:      timestamppb.New(e.At),
			Kind:      gatewayv1.TrailEventKind(e.Kind),
			Bank:      e.Bank,
			Vote:      e.Vote,
			Decision:  e.Decision,
			DecidedBy: gatewayv1.DecidedBy(e.DecidedBy),
			Attempt:   e.Attempt,
			Replica:   e.Replica,
			Detail:    e.Detail,
		})
	}
	// Events without a time (a row written before the time was kept) go first.
	slices.SortStableFunc(out, func(a, b *gatewayv1.TrailEvent) int {
		switch {
		case a.Time == nil && b.Time != nil:
			return -1
		case a.Time != nil && b.Time == nil:
			return 1
		case a.Time != nil:
			if c := a.Time.AsTime().Compare(b.Time.AsTime()); c != 0 {
				return c
			}
		}
		return trailKindOrder[a.GetKind()] - trailKindOrder[b.GetKind()]
	})
	return out
}

// bankTransactionState is a bank's TransactionState as GetPaymentTrail shows it.
func bankTransactionState(s bankv1.TransactionState) string {
	switch s {
	case bankv1.TransactionState_TRANSACTION_STATE_PREPARED:
		return "prepared"
	case bankv1.TransactionState_TRANSACTION_STATE_COMMITTED:
		return "committed"
	case bankv1.TransactionState_TRANSACTION_STATE_ABORTED:
		return "aborted"
	}
	return "unknown"
}

// voteReasonText is "insufficient_funds" for VOTE_REASON_INSUFFICIENT_FUNDS.
func voteReasonText(r bankv1.VoteReason) string {
	if s, ok := voteReasonTexts[r]; ok {
		return s
	}
	return strings.ToLower(strings.TrimPrefix(r.String(), "VOTE_REASON_"))
}

var voteReasonTexts = func() map[bankv1.VoteReason]string {
	m := make(map[bankv1.VoteReason]string, len(bankv1.VoteReason_name))
	for n, name := range bankv1.VoteReason_name {
		m[bankv1.VoteReason(n)] = strings.ToLower(strings.TrimPrefix(name, "VOTE_REASON_"))
	}
	return m
}()
