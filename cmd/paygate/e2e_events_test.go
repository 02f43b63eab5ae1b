package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/paygate/paygate/client"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/internal/cluster"
	"github.com/paygate/paygate/internal/faultproxy"
)

// eventRecorder keeps what a watcher yielded.
type eventRecorder struct {
	mu     sync.Mutex
	events []*client.Event
	err    error
}

func (r *eventRecorder) add(ev *client.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
}

func (r *eventRecorder) snapshot() ([]*client.Event, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*client.Event(nil), r.events...), r.err
}

// lastSeq is the seq of the last event recorded, 0 when none.
func (r *eventRecorder) lastSeq() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.events) == 0 {
		return 0
	}
	return r.events[len(r.events)-1].GetSeq()
}

// allEvents pages through cl's user's events after after with ListEvents.
func allEvents(t *testing.T, cl *client.Client, after int64) []*client.Event {
	t.Helper()
	var out []*client.Event
	for range 1000 {
		page, err := cl.ListEvents(ctxT(t, 10*time.Second), after, 7)
		if err != nil {
			t.Fatalf("ListEvents(after=%d): %v", after, err)
		}
		out = append(out, page.Events...)
		if !page.HasMore {
			return out
		}
		after = page.NextAfter
	}
	t.Fatal("ListEvents does not end")
	return nil
}

// sameEvents fails t unless got is exactly want: the same events, once each, in seq order.
func sameEvents(t *testing.T, what string, got, want []*client.Event) {
	t.Helper()
	seqs := func(evs []*client.Event) string {
		var b strings.Builder
		for _, e := range evs {
			fmt.Fprintf(&b, " %d", e.GetSeq())
		}
		return b.String()
	}
	if len(got) != len(want) {
		t.Fatalf("%s: %d events (seqs%s); ListEvents has %d (seqs%s)", what, len(got), seqs(got), len(want), seqs(want))
	}
	for i := range got {
		if !proto.Equal(got[i], want[i]) {
			t.Fatalf("%s: event %d is %v; ListEvents has %v (seqs%s / %s)", what, i, got[i], want[i], seqs(got), seqs(want))
		}
	}
}

// TestWatchResumesAcrossGatewayRestart is the event log's promise, on real processes: a watcher
// that passes the last seq it saw loses nothing and sees nothing twice, across a SIGKILL of the
// gateway. A Go client's WatchFrom follows alice's events while payments are made (by her and
// to her); the gateway is killed mid-stream (the watcher holding an event it has not yielded
// yet) and started again; more payments follow before the watcher reads on. The watcher
// (which reconnects by itself, with after = the last seq it yielded) must have seen
// exactly what ListEvents(after=0) lists over the whole run, and a raw WatchPayments with after
// = the last seq seen before the kill must replay exactly the events after it. The ledger is
// then audited.
func TestWatchResumesAcrossGatewayRestart(t *testing.T) {
	t.Parallel()
	c := cluster.New(t, cluster.Options{})
	before := audit(t, c)
	cl, err := client.New(c.GatewayAddr, client.WithTLSDir(c.CertDir), client.WithTimeout(10*time.Second),
		client.WithRetry(client.RetryPolicy{InitialBackoff: 50 * time.Millisecond, MaxBackoff: 300 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := cl.Login(ctxT(t, 10*time.Second), "alice", passwords["alice"]); err != nil {
		t.Fatal(err)
	}
	// alice's payments and the raw stream go through clients of their own (another session).
	alice, bob := login(t, c, "alice"), login(t, c, "bob")

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	rec := &eventRecorder{}
	watched := make(chan struct{})
	// While gate holds a channel, the watcher stops in the middle of the stream, with an event
	// received and not yet recorded (held counts it): it reads nothing more until the channel
	// is closed.
	var gate atomic.Pointer[chan struct{}]
	var held atomic.Int32
	go func() {
		defer close(watched)
		for ev, err := range cl.WatchFrom(ctx, 0) {
			if err != nil {
				rec.mu.Lock()
				rec.err = err
				rec.mu.Unlock()
				return
			}
			if g := gate.Load(); g != nil {
				held.Add(1)
				<-*g
				held.Add(-1)
			}
			rec.add(ev)
		}
	}()
	// payments makes n payments of alice's to bob, one of bob's to alice, and one of alice's
	// that fails (insufficient funds): each gives a created and a decided event.
	payments := func(n int) {
		t.Helper()
		for range n {
			if p, err := pay(ctxT(t, 15*time.Second), alice, newID(), "bank1-1001", "bank2-2002", 100); err != nil || p.GetPayment().GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
				t.Fatalf("alice pays: %v %v", p, err)
			}
		}
		if p, err := pay(ctxT(t, 15*time.Second), bob, newID(), "bank2-2002", "bank1-1001", 30); err != nil || p.GetPayment().GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
			t.Fatalf("bob pays: %v %v", p, err)
		}
		p, err := pay(ctxT(t, 15*time.Second), alice, newID(), "bank1-1001", "bank2-2002", 1e12)
		if err != nil || p.GetPayment().GetFailureReason() != gatewayv1.FailureReason_FAILURE_REASON_INSUFFICIENT_FUNDS {
			t.Fatalf("an overdraft: %v %v; want insufficient funds", p, err)
		}
	}
	// caughtUp waits until ListEvents lists n events (on PostgreSQL an event is listed once the
	// sequencer numbered it, just after its payment's answer) and the watcher has recorded as
	// many, and checks that they are the same.
	caughtUp := func(what string, n int) []*client.Event {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			want := allEvents(t, cl, 0)
			got, err := rec.snapshot()
			if err != nil {
				t.Fatalf("watch ended: %v", err)
			}
			if (len(want) >= n && len(got) >= n) || time.Now().After(deadline) {
				if len(want) != n {
					t.Fatalf("%s: ListEvents has %d events; want %d (2 per payment)", what, len(want), n)
				}
				sameEvents(t, what, got, want)
				return want
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	payments(3)
	first := caughtUp("the watcher before the restart", 10) // 5 payments
	lastSeen := rec.lastSeq()

	// The watcher stops on the next event; the gateway is killed and started again, and more
	// payments are made before the watcher reads on: it must reconnect with after = the seq it
	// yielded last, or lose them (or see some twice).
	release := make(chan struct{})
	gate.Store(&release)
	unhold := sync.OnceFunc(func() { gate.Store(nil); close(release) })
	defer unhold()
	if p, err := pay(ctxT(t, 15*time.Second), alice, newID(), "bank1-1001", "bank2-2002", 100); err != nil || p.GetPayment().GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
		t.Fatalf("alice pays: %v %v", p, err)
	}
	for deadline := time.Now().Add(10 * time.Second); held.Load() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the watcher did not receive the payment's event")
		}
	}
	c.Kill("gateway")
	startGateway(t, c)
	payments(2)
	unhold()
	all := caughtUp("the watcher across the restart", 20) // 10 payments

	// A raw stream resuming from the last seq seen before the kill replays exactly what came
	// after it, then follows: one more payment shows up once.
	after := lastSeen
	sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	stream, err := alice.Payments.WatchPayments(sctx, connect.NewRequest(&gatewayv1.WatchPaymentsRequest{After: &after}))
	if err != nil {
		t.Fatalf("WatchPayments(after=%d): %v", after, err)
	}
	defer stream.Close()
	receive := func(n int) []*client.Event {
		var got []*client.Event
		for len(got) < n && stream.Receive() {
			got = append(got, stream.Msg().GetEvent())
		}
		if err := stream.Err(); err != nil {
			t.Fatalf("WatchPayments(after=%d): %v", after, err)
		}
		return got
	}
	sameEvents(t, fmt.Sprintf("WatchPayments(after=%d) after the restart", after), receive(len(all)-len(first)), all[len(first):])
	payments(1)
	final := caughtUp("the watcher at the end", 26) // 13 payments
	sameEvents(t, "the raw stream's new events", receive(len(final)-len(all)), final[len(all):])

	stop()
	select {
	case <-watched:
	case <-time.After(10 * time.Second):
		t.Fatal("WatchFrom did not stop with its context")
	}
	if _, err := rec.snapshot(); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("watch: %v", err)
	}
	checkSettled(t, c, before, 30*time.Second)

	// The CLI shows the same log: paygate events pages through it, and paygate watch --after
	// replays what follows a seq.
	u := newCLIUser(t, c)
	u.login("alice")
	seqsOf := func(evs []eventJSON) []int64 {
		var out []int64
		for _, e := range evs {
			out = append(out, e.Seq)
		}
		return out
	}
	var wantSeqs []int64
	for _, e := range final[3:] {
		wantSeqs = append(wantSeqs, e.GetSeq())
	}
	var page struct {
		Events    []eventJSON `json:"events"`
		NextAfter int64       `json:"next_after"`
		HasMore   bool        `json:"has_more"`
	}
	from := final[2].GetSeq()
	lastJSON(t, u.must(0, "events", "--after", fmt.Sprint(from), "--limit", "500", "--json"), &page)
	if got := seqsOf(page.Events); !slices.Equal(got, wantSeqs) || page.HasMore || page.NextAfter != wantSeqs[len(wantSeqs)-1] {
		t.Fatalf("paygate events --after %d: seqs %v, next_after %d, has_more %v; want %v", from, got, page.NextAfter, page.HasMore, wantSeqs)
	}
	for i, e := range page.Events {
		if w := final[3+i]; e.Type != w.GetType() || e.PaymentID != w.GetPayment().GetPaymentId() || e.EventID != w.GetEventId() {
			t.Fatalf("paygate events: %+v; ListEvents has %v", e, w)
		}
	}
	text := u.must(0, "events", "--after", fmt.Sprint(from), "--limit", "2")
	if want := fmt.Sprintf("next page: paygate events --after %d --limit 2", wantSeqs[1]); !strings.Contains(text, want) ||
		!strings.Contains(text, fmt.Sprintf("%-6d %-18s %s", wantSeqs[0], final[3].GetType(), "")) {
		t.Fatalf("paygate events --limit 2:\n%s\nwant the events' lines and %q", text, want)
	}
	from = final[len(final)-5].GetSeq()
	var watchedSeqs []int64
	for line := range strings.SplitSeq(strings.TrimSpace(u.must(0, "watch", "--after", fmt.Sprint(from), "--for", "2s", "--json", "--no-send")), "\n") {
		var e eventJSON
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("paygate watch --json: %q: %v", line, err)
		}
		watchedSeqs = append(watchedSeqs, e.Seq)
	}
	if want := wantSeqs[len(wantSeqs)-4:]; !slices.Equal(watchedSeqs, want) {
		t.Fatalf("paygate watch --after %d: seqs %v; want %v", from, watchedSeqs, want)
	}
	u.must(exitUsage, "events", "--limit", "0")
	u.must(exitUsage, "events", "--after", "-1")
	u.must(exitUsage, "watch", "--after", "-2")
	if out, errOut, code := u.run("events", "--help"); code != 0 || !strings.Contains(out+errOut, "paygate events") || !strings.Contains(out+errOut, "-after") {
		t.Errorf("paygate events --help: exit %d\n%s%s", code, out, errOut)
	}
}

// followingHandler is a slog handler that reports the after of each "watch: following" record
// a client logs (a stream of WatchFrom's has opened).
type followingHandler struct{ after chan int64 }

func (h followingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h followingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h followingHandler) WithGroup(string) slog.Handler            { return h }
func (h followingHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "watch: following" {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "after" {
			select {
			case h.after <- a.Value.Int64():
			default:
			}
		}
		return true
	})
	return nil
}

// TestWatchFromNowResumesBeforeTheFirstEvent: a watcher from now (after unset) whose stream
// breaks before it saw any event loses nothing either. carol's Go client watches through a
// TCP proxy; once her stream is open the proxy cuts it and refuses reconnections while bob pays
// her; when the proxy lets her through again, the watcher must yield that payment's events
// (the stream's headers said where "now" was in the log, and the reconnection asks for what
// came after it, not for a new now). The ledger is then audited.
func TestWatchFromNowResumesBeforeTheFirstEvent(t *testing.T) {
	t.Parallel()
	c := cluster.New(t, cluster.Options{})
	before := audit(t, c)
	proxy, err := faultproxy.New(c.GatewayAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	following := followingHandler{after: make(chan int64, 16)}
	cl, err := client.New(proxy.Addr(), client.WithTLSDir(c.CertDir), client.WithTimeout(10*time.Second),
		client.WithLogger(slog.New(following)),
		client.WithRetry(client.RetryPolicy{InitialBackoff: 50 * time.Millisecond, MaxBackoff: 300 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := cl.Login(ctxT(t, 10*time.Second), "carol", passwords["carol"]); err != nil {
		t.Fatal(err)
	}
	bob := login(t, c, "bob")
	// An event of someone else's first, so that "now" is not the start of the log.
	if p, err := pay(ctxT(t, 15*time.Second), login(t, c, "alice"), newID(), "bank1-1001", "bank2-2002", 100); err != nil || p.GetPayment().GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
		t.Fatalf("alice pays: %v %v", p, err)
	}

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	got := make(chan *client.Event, 16)
	go func() {
		for ev, err := range cl.WatchFrom(ctx, -1) {
			if err != nil {
				return
			}
			got <- ev
		}
	}()
	wait := func(what string) int64 {
		t.Helper()
		select {
		case after := <-following.after:
			return after
		case <-time.After(15 * time.Second):
			t.Fatalf("carol's watcher did not %s", what)
			return 0
		}
	}
	start := wait("open its stream")
	if start <= 0 {
		t.Fatalf("carol's stream from now started after seq %d; want the seq of alice's events", start)
	}

	proxy.SetMode(faultproxy.Drop, 0)
	id := newID()
	if p, err := pay(ctxT(t, 15*time.Second), bob, id, "bank2-2002", "bank1-1002", 250); err != nil || p.GetPayment().GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
		t.Fatalf("bob pays carol: %v %v", p, err)
	}
	// On PostgreSQL the events are listed once sequenced: let that happen while carol is cut
	// off, so that a reconnection from a new now would start after them.
	time.Sleep(300 * time.Millisecond)
	proxy.SetMode(faultproxy.Pass, 0)
	if after := wait("reconnect"); after != start {
		t.Fatalf("carol's watcher reconnected after seq %d; want %d, where its first stream started", after, start)
	}
	var types []string
	for len(types) < 2 {
		select {
		case ev := <-got:
			if ev.GetPayment().GetPaymentId() != id {
				t.Fatalf("carol's watcher yielded %v; want only the events of bob's payment %s", ev, id)
			}
			types = append(types, ev.GetType())
		case <-time.After(15 * time.Second):
			t.Fatalf("carol's watcher yielded %v of bob's payment made while it was cut off; want payment.created and payment.succeeded", types)
		}
	}
	if !slices.Equal(types, []string{"payment.created", "payment.succeeded"}) {
		t.Fatalf("carol's watcher yielded %v; want payment.created, payment.succeeded", types)
	}
	stop()
	checkSettled(t, c, before, 30*time.Second)
}
