package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
)

// listAllEvents pages through c's events after after with pages of size, checking each page's
// has_more and next_after, and returns them all.
func listAllEvents(t *testing.T, c *clients, after int64, size int32) []*gatewayv1.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var all []*gatewayv1.Event
	for range 100 {
		resp, err := c.payments.ListEvents(ctx, connect.NewRequest(&gatewayv1.ListEventsRequest{After: after, PageSize: size}))
		if err != nil {
			t.Fatalf("ListEvents(after=%d) of %s: %v", after, c.username, err)
		}
		evs := resp.Msg.GetEvents()
		want := after
		if len(evs) > 0 {
			want = evs[len(evs)-1].GetSeq()
		}
		if resp.Msg.GetNextAfter() != want {
			t.Fatalf("ListEvents(after=%d): next_after %d; want %d", after, resp.Msg.GetNextAfter(), want)
		}
		if size > 0 && len(evs) > int(size) {
			t.Fatalf("ListEvents(page_size=%d) gave %d events", size, len(evs))
		}
		all = append(all, evs...)
		if !resp.Msg.GetHasMore() {
			return all
		}
		if len(evs) == 0 {
			t.Fatal("ListEvents: has_more with an empty page")
		}
		after = resp.Msg.GetNextAfter()
	}
	t.Fatal("ListEvents does not end")
	return nil
}

// change is what a test compares of an event.
type change struct {
	id, typ, user string
	status        gatewayv1.PaymentStatus
}

func changesOf(evs []*gatewayv1.Event) []change {
	var out []change
	for _, e := range evs {
		out = append(out, change{e.GetPayment().GetPaymentId(), e.GetType(), e.GetPayment().GetUsername(), e.GetPayment().GetStatus()})
	}
	return out
}

// TestListEvents: a user's events are those of the payments they pay and of those paid to
// their accounts, oldest first, in pages; the payee does not see who paid; another user sees
// none of them; a bad page size is refused naming the field.
func TestListEvents(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	p := protocols[1]
	alice := e.login(t, p, "alice", "alice-pass-123")
	bob := e.login(t, p, "bob", "bob-pass-456")
	carol := e.login(t, p, "carol", "carol-pass-789")
	dave := e.login(t, p, "dave", "dave-pass-000")

	p1, p2, p3 := newPaymentID(), newPaymentID(), newPaymentID()
	alice.pay(t, p1, "bank1-1001", "bank2-2002", 20)   // to bob
	carol.pay(t, p2, "bank3-3002", "bank1-1003", 5)    // to dave
	alice.pay(t, p3, "bank1-1001", "bank2-2002", 1e12) // to bob: insufficient funds

	created, succeeded, failed := string(eventPaymentCreated), string(eventPaymentSucceeded), string(eventPaymentFailed)
	wantAlice := []change{
		{p1, created, "alice", statusProcessing}, {p1, succeeded, "alice", statusSucceeded},
		{p3, created, "alice", statusProcessing}, {p3, failed, "alice", gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED},
	}
	for _, size := range []int32{0, 1, 3, 500} {
		got := listAllEvents(t, alice, 0, size)
		if !slices.Equal(changesOf(got), wantAlice) {
			t.Fatalf("alice's events (page_size %d) = %v; want %v", size, changesOf(got), wantAlice)
		}
	}
	aliceEvents := listAllEvents(t, alice, 0, 0)
	for i, ev := range aliceEvents {
		if i > 0 && ev.GetSeq() <= aliceEvents[i-1].GetSeq() {
			t.Fatalf("seqs out of order: %d after %d", ev.GetSeq(), aliceEvents[i-1].GetSeq())
		}
		if ev.GetEventId() != fmt.Sprintf("evt_%d", ev.GetSeq()) || ev.GetCreateTime() == nil {
			t.Fatalf("event %v: want event_id evt_<seq> and a create_time", ev)
		}
	}
	// The decision's payment is the payment as GetPayment shows it, create_time included.
	got, err := alice.payments.GetPayment(context.Background(), connect.NewRequest(&gatewayv1.GetPaymentRequest{PaymentId: p3}))
	if err != nil {
		t.Fatal(err)
	}
	want := got.Msg.GetPayment()
	if ev := aliceEvents[3].GetPayment(); !proto.Equal(ev, want) {
		t.Fatalf("failed event's payment = %v; GetPayment = %v", ev, want)
	}
	// Every event's payment carries the payment's create_time, the one GetPayment shows.
	for _, ev := range aliceEvents {
		got, err := alice.payments.GetPayment(context.Background(), connect.NewRequest(&gatewayv1.GetPaymentRequest{PaymentId: ev.GetPayment().GetPaymentId()}))
		if err != nil {
			t.Fatal(err)
		}
		if ct := ev.GetPayment().GetCreateTime(); ct == nil || !ct.AsTime().Equal(got.Msg.GetPayment().GetCreateTime().AsTime()) {
			t.Fatalf("%s event's payment create_time = %v; GetPayment's %v", ev.GetType(), ct, got.Msg.GetPayment().GetCreateTime())
		}
	}

	// Bob, the payee, sees the same events without alice's name.
	wantBob := slices.Clone(wantAlice)
	for i := range wantBob {
		wantBob[i].user = ""
	}
	bobEvents := listAllEvents(t, bob, 0, 2)
	if !slices.Equal(changesOf(bobEvents), wantBob) {
		t.Fatalf("bob's events = %v; want %v", changesOf(bobEvents), wantBob)
	}
	for i := range bobEvents {
		if bobEvents[i].GetSeq() != aliceEvents[i].GetSeq() {
			t.Fatalf("bob's event %d has seq %d, alice's %d", i, bobEvents[i].GetSeq(), aliceEvents[i].GetSeq())
		}
	}
	// Carol and dave see only the payment between them; after skips what was seen.
	if got := changesOf(listAllEvents(t, dave, 0, 0)); !slices.Equal(got, []change{{p2, created, "", statusProcessing}, {p2, succeeded, "", statusSucceeded}}) {
		t.Fatalf("dave's events = %v", got)
	}
	carolEvents := listAllEvents(t, carol, 0, 0)
	if got := changesOf(carolEvents); !slices.Equal(got, []change{{p2, created, "carol", statusProcessing}, {p2, succeeded, "carol", statusSucceeded}}) {
		t.Fatalf("carol's events = %v", got)
	}
	if got := listAllEvents(t, carol, carolEvents[0].GetSeq(), 0); len(got) != 1 || got[0].GetSeq() != carolEvents[1].GetSeq() {
		t.Fatalf("carol's events after %d = %v", carolEvents[0].GetSeq(), changesOf(got))
	}
	if got := listAllEvents(t, carol, carolEvents[1].GetSeq(), 0); len(got) != 0 {
		t.Fatalf("carol's events after the last = %v", changesOf(got))
	}

	for _, bad := range []*gatewayv1.ListEventsRequest{{PageSize: 501}, {PageSize: -1}, {After: -1}} {
		_, err := alice.payments.ListEvents(context.Background(), connect.NewRequest(bad))
		wantErr(t, err, connect.CodeInvalidArgument, "invalid_argument")
		field := "page_size"
		if bad.After != 0 {
			field = "after"
		}
		if !strings.Contains(err.Error(), field) {
			t.Errorf("ListEvents(%v): %v; want it to name %s", bad, err, field)
		}
	}
	t.Cleanup(func() { e.assertSettled(t) })
}

// TestWatchPaymentsAfter: a stream with after first replays the caller's events after it, then
// follows new ones, exactly as ListEvents lists them; one without after shows only the changes
// made once it is open.
func TestWatchPaymentsAfter(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			acct := map[string]struct{ me, password, from, to string }{
				"grpc":    {"alice", "alice-pass-123", "bank1-1001", "bank2-2002"},
				"connect": {"carol", "carol-pass-789", "bank3-3002", "bank1-1003"},
			}[p.name]
			me, password, from, to := acct.me, acct.password, acct.from, acct.to
			u := e.login(t, p, me, password)
			for range 3 {
				u.pay(t, newPaymentID(), from, to, 1)
			}
			before := listAllEvents(t, u, 0, 0)
			if len(before) != 6 {
				t.Fatalf("%d events before the streams; want 6", len(before))
			}
			after := before[1].GetSeq() // the first payment's decision

			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			replay, err := u.payments.WatchPayments(ctx, connect.NewRequest(&gatewayv1.WatchPaymentsRequest{After: &after}))
			if err != nil {
				t.Fatal(err)
			}
			defer replay.Close()
			now, err := u.payments.WatchPayments(ctx, connect.NewRequest(&gatewayv1.WatchPaymentsRequest{}))
			if err != nil {
				t.Fatal(err)
			}
			defer now.Close()
			for range 2 {
				u.pay(t, newPaymentID(), from, to, 1)
			}
			all := listAllEvents(t, u, 0, 0)
			if len(all) != 10 {
				t.Fatalf("%d events; want 10", len(all))
			}
			receive := func(s *connect.ServerStreamForClient[gatewayv1.WatchPaymentsResponse], n int) []*gatewayv1.Event {
				var got []*gatewayv1.Event
				for len(got) < n && s.Receive() {
					if !proto.Equal(s.Msg().GetPayment(), s.Msg().GetEvent().GetPayment()) {
						t.Fatalf("answer's payment %v is not its event's %v", s.Msg().GetPayment(), s.Msg().GetEvent().GetPayment())
					}
					got = append(got, s.Msg().GetEvent())
				}
				if err := s.Err(); err != nil {
					t.Fatalf("stream: %v", err)
				}
				return got
			}
			for _, c := range []struct {
				name   string
				stream *connect.ServerStreamForClient[gatewayv1.WatchPaymentsResponse]
				want   []*gatewayv1.Event
			}{{"with after", replay, all[2:]}, {"without after", now, all[6:]}} {
				got := receive(c.stream, len(c.want))
				if len(got) != len(c.want) {
					t.Fatalf("stream %s: %d events; want %d", c.name, len(got), len(c.want))
				}
				for i := range got {
					if !proto.Equal(got[i], c.want[i]) {
						t.Fatalf("stream %s: event %d = %v; ListEvents has %v", c.name, i, got[i], c.want[i])
					}
				}
			}
			// Nothing more: the next event on both streams is of a new payment.
			id := newPaymentID()
			u.pay(t, id, from, to, 1)
			for _, s := range []*connect.ServerStreamForClient[gatewayv1.WatchPaymentsResponse]{replay, now} {
				if got := receive(s, 1); len(got) != 1 || got[0].GetPayment().GetPaymentId() != id || got[0].GetType() != string(eventPaymentCreated) {
					t.Fatalf("next event = %v; want %s created", got, id)
				}
			}
		})
	}
	t.Cleanup(func() { e.assertSettled(t) })
}

// BenchmarkWatchRead is what a payment stream costs the store per advance of the log: one
// Events read of its user's events after its position, which finds the few new ones (2: a
// payment's created and decided) or none (another user's payment advanced the log), on a log
// of 20,000 events. With W streams open on a process every advance costs W such reads.
func BenchmarkWatchRead(b *testing.B) {
	s := openBenchStore(b, true)
	admitAll(b, s, benchIDs("watchrd", 10000), true)
	last, err := s.LastEventSeq(context.Background())
	if err != nil || last < 20000 {
		b.Fatalf("last seq %d, %v; want 20000 events", last, err)
	}
	for _, c := range []struct {
		name, user string
		after      int64
		want       int
	}{{"new=2", "alice", last - 2, 2}, {"new=0", "bob", last, 0}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				evs, err := s.Events(context.Background(), c.user, c.after, watchEventsPage)
				if err != nil || len(evs) != c.want {
					b.Fatalf("Events: %d, %v; want %d", len(evs), err, c.want)
				}
			}
		})
	}
}

// TestWatchPayments64Watchers: 16 streams of each of four users (64, each user's limit) all
// receive exactly their user's events, as ListEvents lists them, while payments go round the
// users; the streams find them in the hub's memory: once the hub follows the log, no stream
// reads the store itself.
func TestWatchPayments64Watchers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	p := protocols[1]
	users := []struct{ name, password, from, to string }{
		{"alice", "alice-pass-123", "bank1-1001", "bank2-2002"}, // to bob
		{"bob", "bob-pass-456", "bank2-2002", "bank3-3002"},     // to carol
		{"carol", "carol-pass-789", "bank3-3002", "bank1-1003"}, // to dave
		{"dave", "dave-pass-000", "bank1-1003", "bank1-1001"},   // to alice
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	logins := map[string]*clients{}
	type watcher struct {
		user   string
		stream *connect.ServerStreamForClient[gatewayv1.WatchPaymentsResponse]
	}
	var watchers []watcher
	for _, u := range users {
		logins[u.name] = e.login(t, p, u.name, u.password)
		for range 16 {
			s, err := logins[u.name].payments.WatchPayments(ctx, connect.NewRequest(&gatewayv1.WatchPaymentsRequest{}))
			if err != nil {
				t.Fatalf("stream of %s: %v", u.name, err)
			}
			defer s.Close()
			watchers = append(watchers, watcher{u.name, s})
		}
	}
	hub := e.gw.eventHub
	waitFor(t, 5*time.Second, "64 streams following the hub", func() bool {
		hub.mu.Lock()
		defer hub.mu.Unlock()
		return hub.streams == 64 && hub.valid
	})
	readsBefore := hub.storeReads.Load()
	start := time.Now()
	for range 3 {
		for _, u := range users {
			logins[u.name].pay(t, newPaymentID(), u.from, u.to, 1)
		}
	}
	want := map[string][]*gatewayv1.Event{}
	for _, u := range users {
		want[u.name] = listAllEvents(t, logins[u.name], 0, 0)
		if len(want[u.name]) != 12 {
			t.Fatalf("%s has %d events; want 12 (6 payments)", u.name, len(want[u.name]))
		}
	}
	errs := make(chan error, len(watchers))
	for _, w := range watchers {
		go func() {
			var got []*gatewayv1.Event
			for len(got) < len(want[w.user]) && w.stream.Receive() {
				got = append(got, w.stream.Msg().GetEvent())
			}
			for i := range want[w.user] {
				if i >= len(got) {
					errs <- fmt.Errorf("a stream of %s received %d events; want %d (%v)", w.user, len(got), len(want[w.user]), w.stream.Err())
					return
				}
				if !proto.Equal(got[i], want[w.user][i]) {
					errs <- fmt.Errorf("a stream of %s: event %d = %v; ListEvents has %v", w.user, i, got[i], want[w.user][i])
					return
				}
			}
			errs <- nil
		}()
	}
	for range watchers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	reads := hub.storeReads.Load() - readsBefore
	t.Logf("12 payments, 64 streams, %d events delivered in %v; %d store reads by the streams", 64*12, time.Since(start).Round(time.Millisecond), reads)
	if reads != 0 {
		t.Errorf("the streams read the store %d times while the hub followed the log; want 0", reads)
	}
	t.Cleanup(func() { e.assertSettled(t) })
}

// fakeLog is an eventLog of events in memory, for the hub's test: EventsAfter and LastEventSeq.
type fakeLog struct {
	eventLog
	mu     sync.Mutex
	events []eventRecord
}

func (f *fakeLog) add(n int) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	for range n {
		seq := int64(len(f.events) + 1)
		payer := []string{"alice", "bob"}[seq%2]
		f.events = append(f.events, eventRecord{Seq: seq, Type: eventPaymentCreated, PaymentID: fmt.Sprint("p", seq), Payer: payer, Payee: "carol"})
	}
	return int64(len(f.events))
}

func (f *fakeLog) EventsAfter(_ context.Context, after int64, limit int) ([]eventRecord, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := int(min(after, int64(len(f.events))))
	return slices.Clone(f.events[i:min(len(f.events), i+limit)]), nil
}

func (f *fakeLog) LastEventSeq(context.Context) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return int64(len(f.events)), nil
}

// TestEventHub: the hub follows the log from its end while streams are open, keeps the latest
// events (every one after base), hands a stream its user's (a page at a time), sends a stream
// that is further behind to the store, and forgets everything once the last stream closed.
func TestEventHub(t *testing.T) {
	t.Parallel()
	log := &fakeLog{}
	seq := newEventSequencer(log, nil)
	seq.advance(log.add(50))
	h := newEventHub(log, seq, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.run(ctx) }()
	defer func() { cancel(); <-done }()
	state := func() (valid bool, base, pos int64, ring []eventRecord) {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.valid, h.base, h.pos, h.ring
	}
	if _, _, _, ok := h.since("alice", 50, 100); ok {
		t.Fatal("since answered before the hub follows the log")
	}
	h.open()
	waitFor(t, 5*time.Second, "the hub to follow", func() bool { v, _, _, _ := state(); return v })
	if _, base, pos, _ := state(); base != 50 || pos != 50 {
		t.Fatalf("the hub starts at base %d, pos %d; want the log's end, 50", base, pos)
	}
	last := log.add(3 * eventHubKeep)
	seq.advance(last)
	waitFor(t, 5*time.Second, "the hub to read the new events", func() bool { _, _, pos, _ := state(); return pos == last })
	_, base, pos, ring := state()
	if len(ring) > 2*eventHubKeep || int64(len(ring)) != pos-base || ring[0].Seq != base+1 || ring[len(ring)-1].Seq != pos {
		t.Fatalf("ring of %d events (%d..%d), base %d, pos %d: want every event after base, at most %d", len(ring), ring[0].Seq, ring[len(ring)-1].Seq, base, pos, 2*eventHubKeep)
	}
	if base <= 50 {
		t.Fatalf("base %d: the oldest events were not let go", base)
	}
	if _, _, _, ok := h.since("alice", base-1, 100); ok {
		t.Fatal("since answered for a stream behind the ring")
	}
	evs, upTo, _, ok := h.since("alice", base, 100)
	if !ok || len(evs) != 100 || upTo != evs[99].Seq || evs[0].Seq <= base {
		t.Fatalf("since(alice, base): %d events, up to %d, %v; want a page of 100 after base, up to the last", len(evs), upTo, ok)
	}
	for i, e := range evs {
		if e.Payer != "alice" || (i > 0 && e.Seq != evs[i-1].Seq+2) {
			t.Fatalf("since(alice) gave %+v", e)
		}
	}
	if evs, upTo, _, ok := h.since("carol", pos-3, 100); !ok || len(evs) != 3 || upTo != pos {
		t.Fatalf("since(carol, pos-3): %d events up to %d, %v; want the payee's 3, up to %d", len(evs), upTo, ok, pos)
	}
	if evs, upTo, _, ok := h.since("dave", base, 100); !ok || len(evs) != 0 || upTo != pos {
		t.Fatalf("since(dave): %d events up to %d, %v; want none, up to %d", len(evs), upTo, ok, pos)
	}
	h.close()
	waitFor(t, 5*time.Second, "the hub to forget", func() bool { v, _, _, r := state(); return !v && r == nil })
}
