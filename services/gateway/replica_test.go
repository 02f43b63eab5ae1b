package gateway

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	"github.com/paygate/paygate/internal/pgdb/pgtest"
)

// Two coordinators on one PostgreSQL store are two gateway replicas: these tests check, in one
// process with fake banks, that a payment is driven by one of them at a time and that each sees
// the other's outcomes. The end-to-end tests (cmd/paygate) do the same with real processes.

// sharedBank is a participant shared by replicas that counts prepares of one transaction
// running at the same time (there must never be any) and, per transaction, the prepares sent.
type sharedBank struct {
	fakeBank
	mu       sync.Mutex
	inFlight map[string]int
	sent     map[string]int
	overlaps atomic.Int32
}

func newSharedBank() *sharedBank {
	return &sharedBank{inFlight: map[string]int{}, sent: map[string]int{}}
}

func (b *sharedBank) PrepareTransaction(ctx context.Context, req *connect.Request[bankv1.PrepareTransactionRequest]) (*connect.Response[bankv1.PrepareTransactionResponse], error) {
	id := req.Msg.GetTransactionId()
	b.mu.Lock()
	if b.inFlight[id] > 0 {
		b.overlaps.Add(1)
	}
	b.inFlight[id]++
	b.sent[id]++
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		b.inFlight[id]--
		b.mu.Unlock()
	}()
	return b.fakeBank.PrepareTransaction(ctx, req)
}

func (b *sharedBank) prepared(id string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sent[id]
}

// newReplicas returns n coordinators sharing one fresh PostgreSQL store and the banks a and b,
// each with its own store connection (lease) of lease ttl. With renew, each renews its lease
// (keepLease); without, a test starts that for the replicas it wants alive.
func newReplicas(t *testing.T, n int, ttl, timeout time.Duration, renew bool, a, b *sharedBank) []*Coordinator {
	t.Helper()
	url := pgtest.NewDatabase(t, "paygate_replicas_")
	var out []*Coordinator
	for range n {
		s, err := OpenPGStore(context.Background(), url, PGStoreOptions{LeaseTTL: ttl})
		if err != nil {
			t.Fatal(err)
		}
		c := newCoordinator(s, map[string]participant{"bankA": a, "bankB": b}, nil, newBroker(), slog.New(slog.DiscardHandler), timeout, testProofKey)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() { c.listen(ctx) })
		if renew {
			wg.Go(func() { c.keepLease(ctx) })
		}
		t.Cleanup(func() {
			cancel()
			wg.Wait()
			waitIdle(t, c)
			c.WaitBackground()
			s.Close()
		})
		out = append(out, c)
	}
	return out
}

// TestReplicasDuplicateAtOnce sends one payment to two replicas at the same moment: it is
// prepared once, by one of them, and both answer with its one outcome.
func TestReplicasDuplicateAtOnce(t *testing.T) {
	a, b := newSharedBank(), newSharedBank()
	a.gate, a.entered = make(chan struct{}), make(chan string, 4)
	rs := newReplicas(t, 2, 5*time.Second, 10*time.Second, true, a, b)
	p := testPayment("bankA-1", "bankB-1", 100)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	type answer struct {
		p   paymentRecord
		err error
	}
	answers := make(chan answer, 2)
	for _, c := range rs {
		go func() {
			out, _, err := execute(t, c, ctx, p)
			answers <- answer{out, err}
		}()
	}
	<-a.entered // one replica prepares; the other waits for it
	time.Sleep(200 * time.Millisecond)
	close(a.gate)
	var got []answer
	for range 2 {
		got = append(got, <-answers)
	}
	for _, ans := range got {
		if ans.err != nil || ans.p.Decision != decisionCommit {
			t.Fatalf("answers %+v: want both committed", got)
		}
	}
	if n := a.prepared(p.PaymentID); n != 1 {
		t.Errorf("bankA got %d prepares of the payment, want 1", n)
	}
	if n := a.overlaps.Load() + b.overlaps.Load(); n != 0 {
		t.Errorf("%d prepares overlapped another of the same payment", n)
	}
}

// TestReplicaTakesOverAfterLeaseExpires: a replica admits a payment and dies (it stops renewing
// its lease and does nothing more); once the lease expires another replica claims the payment
// in recovery and drives it to its outcome.
func TestReplicaTakesOverAfterLeaseExpires(t *testing.T) {
	a, b := newSharedBank(), newSharedBank()
	const ttl = 400 * time.Millisecond
	rs := newReplicas(t, 2, ttl, 30*time.Second, false, a, b)
	dead, survivor := rs[0], rs[1]
	ctx := context.Background()
	p := testPayment("bankA-1", "bankB-1", 100)
	p.CreatedAt = time.Now()
	p.Deadline = p.CreatedAt.Add(30 * time.Second)
	if _, inserted, err := admitPayment(ctx, dead.store, p); err != nil || !inserted {
		t.Fatalf("admit: inserted %v, %v", inserted, err)
	}
	// While the dead replica's lease lasts, the payment is not the survivor's to drive. (Only
	// checked when the lease certainly lasted through the round: on a loaded machine the round
	// may come after it expired.)
	survivor.recoverOnce(ctx)
	waitIdle(t, survivor)
	if n := a.prepared(p.PaymentID); n != 0 && dead.store.Holding() {
		t.Fatalf("the survivor prepared a payment whose owner's lease was live (%d prepares)", n)
	}
	go survivor.keepLease(t.Context())
	waitFor(t, 10*time.Second, "the survivor to finish the dead replica's payment", func() bool {
		survivor.recoverOnce(ctx)
		waitIdle(t, survivor)
		got, err := survivor.store.Payment(ctx, p.PaymentID)
		return err == nil && got.Completed
	})
	if got := stored(t, survivor.store, p.PaymentID); got.Decision != decisionCommit {
		t.Fatalf("decision %v, want commit", got.Decision)
	}
	if n := a.overlaps.Load() + b.overlaps.Load(); n != 0 {
		t.Errorf("%d prepares overlapped another of the same payment", n)
	}
}

// TestReplicaWithoutLeaseSendsNoPrepare: a replica whose lease lapsed (it could not renew it,
// e.g. paused or cut off from the store) admits nothing it then prepares: it answers "in
// progress" and the payment is driven by the replica that claims it.
func TestReplicaWithoutLeaseSendsNoPrepare(t *testing.T) {
	a, b := newSharedBank(), newSharedBank()
	const ttl = 300 * time.Millisecond
	rs := newReplicas(t, 2, ttl, 30*time.Second, false, a, b)
	lapsed, other := rs[0], rs[1]
	time.Sleep(ttl) // no renewal: the lease is in doubt
	if lapsed.store.Holding() {
		t.Fatal("Holding() is true after the lease's lifetime without renewal")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p := testPayment("bankA-1", "bankB-1", 100)
	_, _, err := lapsed.Execute(ctx, p)
	if !errors.Is(err, ErrPaymentInProgress) {
		t.Fatalf("Execute on a replica without its lease: %v, want ErrPaymentInProgress", err)
	}
	if n := a.prepared(p.PaymentID) + b.prepared(p.PaymentID); n != 0 {
		t.Fatalf("a replica without its lease sent %d prepares", n)
	}
	go other.keepLease(t.Context())
	waitFor(t, 10*time.Second, "the other replica to finish the payment", func() bool {
		other.recoverOnce(ctx)
		waitIdle(t, other)
		got, err := other.store.Payment(ctx, p.PaymentID)
		return err == nil && got.Completed
	})
}

// TestReplicaWaiterSeesOtherReplica: a request waiting on one replica for a payment's decision
// is told of it when another replica admitted and decided the payment.
func TestReplicaWaiterSeesOtherReplica(t *testing.T) {
	a, b := newSharedBank(), newSharedBank()
	rs := newReplicas(t, 2, 5*time.Second, 10*time.Second, true, a, b)
	p := testPayment("bankA-1", "bankB-1", 100)
	ch, cancel := rs[1].events.waitFor(p.PaymentID)
	defer cancel()
	time.Sleep(300 * time.Millisecond) // the listener is connected
	if _, _, err := execute(t, rs[0], context.Background(), p); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-ch:
		if got.PaymentID != p.PaymentID || got.Decision != decisionCommit {
			t.Fatalf("the waiter was told %s %v; want %s committed", got.PaymentID, got.Decision, p.PaymentID)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the other replica's waiter was not told of the decision")
	}
}

// TestReplicaReadWaitsForOtherReplicasPhaseTwo: read-your-writes across replicas. While one
// replica's phase two of a decided payment is still running, a read on another replica of the
// payee's money waits for it.
func TestReplicaReadWaitsForOtherReplicasPhaseTwo(t *testing.T) {
	a, b := newSharedBank(), newSharedBank()
	b.phase2Gate, b.phase2Entered = make(chan struct{}), make(chan string, 4)
	rs := newReplicas(t, 2, 5*time.Second, 10*time.Second, true, a, b)
	p := testPayment("bankA-1", "bankB-1", 100)
	out, _, err := rs[0].Execute(context.Background(), p)
	if err != nil || out.Decision != decisionCommit {
		t.Fatalf("execute: %v %v", out.Decision, err)
	}
	<-b.phase2Entered // the commit at the payee's bank is being sent
	waited := make(chan error, 1)
	go func() { waited <- rs[1].waitSettled(context.Background(), true, p.To) }()
	select {
	case err := <-waited:
		t.Fatalf("the read did not wait for the other replica's phase two (%v)", err)
	case <-time.After(300 * time.Millisecond):
	}
	close(b.phase2Gate)
	select {
	case err := <-waited:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(remoteSettleWait):
		t.Fatal("the read still waits after the phase two was acknowledged")
	}
}

// TestReplicaLeaseLapsedDuringPrepareDoesNotDecide: a replica whose lease lapses while its
// prepares are in flight (it was paused, or cut off from the store) leaves the decision to
// whoever claims the payment, instead of deciding on votes it may no longer be the one to use.
func TestReplicaLeaseLapsedDuringPrepareDoesNotDecide(t *testing.T) {
	a, b := newSharedBank(), newSharedBank()
	a.gate, a.entered = make(chan struct{}), make(chan string, 4)
	const ttl = 600 * time.Millisecond
	rs := newReplicas(t, 2, ttl, 30*time.Second, false, a, b)
	lapsing, other := rs[0], rs[1]
	p := testPayment("bankA-1", "bankB-1", 100)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, _, err := lapsing.Execute(ctx, p)
		done <- err
	}()
	<-a.entered // the prepare is at the bank, and stays there until the lease has lapsed
	waitFor(t, 5*time.Second, "the lease to lapse", func() bool { return !lapsing.store.Holding() })
	close(a.gate)
	var err error
	select {
	case err = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("no answer after phase one")
	}
	if !errors.Is(err, ErrPaymentInProgress) {
		t.Fatalf("Execute: %v, want ErrPaymentInProgress", err)
	}
	if got := stored(t, other.store, p.PaymentID); got.Decision != decisionNone {
		t.Fatalf("the replica that lost its lease decided %v (%s)", got.Decision, got.FailureMessage)
	}
	go other.keepLease(t.Context())
	waitFor(t, 10*time.Second, "the other replica to finish the payment", func() bool {
		other.recoverOnce(ctx)
		waitIdle(t, other)
		got, err := other.store.Payment(ctx, p.PaymentID)
		return err == nil && got.Completed
	})
	if got := stored(t, other.store, p.PaymentID); got.Decision != decisionCommit {
		t.Fatalf("decision %v (%s), want commit", got.Decision, got.FailureMessage)
	}
}
