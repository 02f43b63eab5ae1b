package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/paygate/paygate/client"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/internal/cluster"
	"github.com/paygate/paygate/internal/crashpoint"
)

// End-to-end tests of gateway replicas: several gateway processes on one PostgreSQL database
// (and the banks on PostgreSQL databases of their own), with the built binary, real
// certificates and ports on 127.0.0.1. They skip when no PostgreSQL server can be reached
// (PAYGATE_TEST_DATABASE_URL, default a local server with trust authentication).

// replicaTxnTimeout is the replicas' --txn-timeout; their --lease-ttl is the cluster's 2s.
const replicaTxnTimeout = 6 * time.Second

// TestReplicasShareOnePaymentLog sends payments through every replica of two and then three
// (across banks, within a bank, overdrafts, unknown payees), each first to one replica and,
// on an ambiguous error, again to the next; afterwards every replica answers GetPayment alike
// for every payment, and the ledgers show each applied exactly once.
func TestReplicasShareOnePaymentLog(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real processes")
	}
	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprintf("%d replicas", n), func(t *testing.T) {
			c := replicaCluster(t, n, cluster.Options{TxnTimeout: replicaTxnTimeout})
			before := audit(t, c)
			users := loginEverywhere(t, c)
			plan := planReplicaPayments(30 * n)
			l := newLoad(t, users, n)
			l.run(plan, 4*n)()
			final := finalEverywhere(t, c, users, l, plan, 3*replicaTxnTimeout)
			after := checkSettled(t, c, before, 3*replicaTxnTimeout)
			succeeded, failed := checkExactlyOnce(t, c, before, after, plan, final)
			perReplica := make([]int, n)
			l.mu.Lock()
			for _, r := range l.by {
				perReplica[r]++
			}
			l.mu.Unlock()
			t.Logf("%d payments (%d sends): %d succeeded, %d failed; outcomes answered per replica %v", len(plan), l.sends.Load(), succeeded, failed, perReplica)
			if succeeded == 0 || failed == 0 {
				t.Errorf("a mix of outcomes was expected (succeeded %d, failed %d)", succeeded, failed)
			}
			for r, k := range perReplica {
				if k == 0 {
					t.Errorf("replica %d answered no payment", r+1)
				}
			}
		})
	}
}

// TestReplicaKilledMidLoad kills one of two replicas (SIGKILL) while both take payments, and
// does not restart it: the survivor takes over the payments the dead one was driving once its
// lease runs out, and every payment ends with one outcome, applied exactly once, nothing held.
func TestReplicaKilledMidLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real processes")
	}
	const n = 120
	c := replicaCluster(t, 2, cluster.Options{TxnTimeout: replicaTxnTimeout})
	db := gatewayDB(t, c)
	before := audit(t, c)
	users := loginEverywhere(t, c)
	plan := planReplicaPayments(n)
	l := newLoad(t, users, 2)
	wait := l.run(plan, 12)
	l.waitAnswered(n/3, time.Minute)

	live := leases(t, db)
	deadPid := c.Proc("gateway2").Pid()
	c.Kill("gateway2")
	killed := time.Now()
	unfinished := storedPayments(t, db, `NOT completed`)
	t.Logf("gateway2 (pid %d) killed after %d answers; %d payments unfinished then; leases %v", deadPid, l.answered.Load(), len(unfinished), live)
	wait()

	// The dead replica's leases: those no longer renewed. (A replica that fell behind its
	// renewals under load has a lease of its own that ended too; the owner ids name the
	// process, "<host>-<pid>-<random>", which tells them apart.)
	time.Sleep(2 * time.Second)
	dead := map[string]bool{}
	now := leases(t, db)
	for owner, exp := range live {
		if now[owner] <= exp && (strings.Contains(owner, fmt.Sprintf("-%d-", deadPid)) || len(live) == 2) {
			dead[owner] = true
		}
	}
	if len(dead) == 0 {
		t.Fatalf("no lease of gateway2 (pid %d) stopped being renewed after the kill: %v → %v", deadPid, live, now)
	}

	final := finalEverywhere(t, c, users, l, plan, 3*replicaTxnTimeout)
	after := checkSettled(t, c, before, 3*replicaTxnTimeout)
	succeeded, failed := checkExactlyOnce(t, c, before, after, plan, final)

	// The dead replica's payments that were undecided or not acknowledged at the kill were
	// finished by the survivor.
	var orphans []string
	for id, p := range unfinished {
		if dead[p.owner] {
			orphans = append(orphans, id)
		}
	}
	finished := storedPayments(t, db, `payment_id = ANY($1)`, orphans)
	for _, id := range orphans {
		if p := finished[id]; !p.completed || p.decision == 0 {
			t.Errorf("payment %s, the dead replica's at the kill, is not finished: decision %d, completed %v, owner %q", id, p.decision, p.completed, p.owner)
		}
	}
	if left := storedPayments(t, db, `NOT completed`); len(left) > 0 {
		t.Errorf("%d payments unfinished after settling: %v", len(left), left)
	}
	// The survivor says so: its recovery loop took them over ("recovery: ..."), or a retry of
	// the client did ("took over a payment whose replica's lease expired").
	takeovers := append(c.GrepLog("gateway", `"recovery: `), c.GrepLog("gateway", "took over")...)
	t.Logf("%d payments: %d succeeded, %d failed; %d were the dead replica's and unfinished at the kill; the survivor logged %d recovery and takeover lines; settled %s after the kill",
		n, succeeded, failed, len(orphans), len(takeovers), time.Since(killed).Round(time.Millisecond))
	if len(orphans) > 0 && len(takeovers) == 0 {
		t.Errorf("the survivor finished %d payments of the dead replica and logged no recovery or takeover line", len(orphans))
	}
}

// TestReplicasNeverPrepareTogether checks that no payment is ever in phase one at two
// replicas at once. Every replica appends to one trace file when it begins and ends
// preparing a payment (crashpoint.Trace, in a crashpoints build); while payments run through
// both replicas, gateway2 kills itself right after an admission (gateway.after_admit, its
// prepares done and undecided) and is restarted, and later the test kills the first replica
// with SIGKILL. Per payment, the intervals of different processes must never overlap (one left
// open by a killed process ends when it died), and some payments must have been prepared by
// two processes, taken over from a dead replica, for the check to mean something.
func TestReplicasNeverPrepareTogether(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real processes")
	}
	const n = 150
	trace := filepath.Join(t.TempDir(), "prepare.trace")
	traceEnv := "PAYGATE_TRACE_FILE=" + trace
	c := replicaCluster(t, 2, cluster.Options{
		TxnTimeout: replicaTxnTimeout,
		Tags:       []string{"crashpoints"},
		Env: map[string][]string{
			"gateway":  {traceEnv},
			"gateway2": {traceEnv, "PAYGATE_CRASH_AT=" + crashpoint.GatewayAfterAdmit + "@8"},
		},
	})
	before := audit(t, c)
	users := loginEverywhere(t, c)
	plan := planReplicaPayments(n)
	l := newLoad(t, users, 2)
	wait := l.run(plan, 10)

	killedAt := map[int]int64{}
	// gateway2 dies at its eighth admission; it is restarted at once (its payments are taken
	// over by the first replica when its old lease runs out, or by itself, under a new lease).
	p2 := c.Proc("gateway2")
	select {
	case <-p2.Done():
		killedAt[p2.Pid()] = time.Now().UnixNano()
		t.Logf("gateway2 (pid %d) killed itself at %s after %d answers", p2.Pid(), crashpoint.GatewayAfterAdmit, l.answered.Load())
	case <-time.After(time.Minute):
		t.Fatalf("gateway2 did not reach %s within a minute (%d answers)", crashpoint.GatewayAfterAdmit, l.answered.Load())
	}
	c.StartReplica("gateway2", traceEnv)

	l.waitAnswered(2*n/3, 2*time.Minute)
	p1 := c.Proc("gateway")
	c.Kill("gateway")
	killedAt[p1.Pid()] = time.Now().UnixNano()
	t.Logf("gateway (pid %d) killed after %d answers", p1.Pid(), l.answered.Load())
	time.Sleep(time.Second)
	c.StartGateway(traceEnv)
	wait()

	final := finalEverywhere(t, c, users, l, plan, 3*replicaTxnTimeout)
	after := checkSettled(t, c, before, 3*replicaTxnTimeout)
	checkExactlyOnce(t, c, before, after, plan, final)

	r := checkOverlaps(prepareIntervals(t, readTrace(t, trace), killedAt))
	t.Logf("prepare trace: %s", r)
	for _, o := range r.overlaps {
		t.Errorf("two replicas prepared at once: %s", o)
	}
	if r.payments == 0 {
		t.Fatal("the trace holds no prepare: is PAYGATE_TRACE_FILE honoured by this build?")
	}
	if r.takenOver == 0 {
		t.Errorf("no payment was prepared by two processes: the kills tested nothing")
	}
}

// TestReplicasDuplicateAtOnce sends each of several payment_ids to two replicas at the same
// moment: each is one payment, both answers agree (or one is told to retry while the other
// decides, and the retry agrees), and the money moves once.
func TestReplicasDuplicateAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real processes")
	}
	const rounds = 24
	c := replicaCluster(t, 2, cluster.Options{TxnTimeout: replicaTxnTimeout})
	before := audit(t, c)
	users := loginEverywhere(t, c)
	plan := planReplicaPayments(rounds)
	l := newLoad(t, users, 2)
	for _, p := range plan {
		var ready, both sync.WaitGroup
		ready.Add(2)
		start := make(chan struct{})
		for r := range 2 {
			both.Go(func() {
				ready.Done()
				<-start
				l.send(p, r)
			})
		}
		ready.Wait()
		close(start)
		both.Wait()
	}
	final := finalEverywhere(t, c, users, l, plan, 3*replicaTxnTimeout)
	after := checkSettled(t, c, before, 3*replicaTxnTimeout)
	succeeded, failed := checkExactlyOnce(t, c, before, after, plan, final)
	t.Logf("%d payment_ids, each sent to both replicas at once (%d sends): %d succeeded, %d failed", rounds, l.sends.Load(), succeeded, failed)
	if succeeded == 0 {
		t.Error("no payment succeeded")
	}
	// Two full refunds of one payment at once, each to a different replica: exactly one
	// succeeds (e2e_refunds_test.go).
	t.Run("concurrent full refunds", func(t *testing.T) {
		concurrentFullRefunds(t, c, users["alice"], users["bob"], 8)
	})
}

// TestReplicaWatchSeesOtherReplicas opens alice's WatchPayments (a stream of the caller's own
// payments) at the first replica, and alice makes payments at the second: the stream shows
// each one decided, as the first replica learns of them through the database (LISTEN/NOTIFY).
func TestReplicaWatchSeesOtherReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real processes")
	}
	c := replicaCluster(t, 2, cluster.Options{TxnTimeout: replicaTxnTimeout})
	before := audit(t, c)
	users := loginEverywhere(t, c)
	ctx := ctxT(t, 2*time.Minute)
	stream, err := users["alice"][0].Payments.WatchPayments(ctx, connect.NewRequest(&gatewayv1.WatchPaymentsRequest{}))
	if err != nil {
		t.Fatalf("WatchPayments at the first replica: %v", err)
	}
	stream.ResponseHeader() // the watch is registered once the replica has answered
	if err := stream.Err(); err != nil {
		t.Fatalf("WatchPayments: %v", err)
	}
	defer stream.Close()
	seen := make(chan *gatewayv1.Payment, 64)
	go func() {
		defer close(seen)
		for stream.Receive() {
			seen <- stream.Msg().GetPayment()
		}
	}()

	var plan []plannedPayment
	for i, p := range []plannedPayment{
		{user: "alice", from: "bank1-1001", to: "bank2-2002", amount: 125},       // alice pays, across banks
		{user: "alice", from: "bank1-1001", to: "bank1-1002", amount: 75},        // alice pays, within bank1
		{user: "alice", from: "bank2-2001", to: "bank3-3002", amount: 50},        // from her other account
		{user: "alice", from: "bank2-2001", to: "bank3-3001", amount: 9_000_000}, // alice's payment fails
	} {
		p.id = newID()
		plan = append(plan, p)
		resp, err := pay(ctxT(t, 15*time.Second), users[p.user][1], p.id, p.from, p.to, p.amount)
		if err != nil {
			t.Fatalf("payment %d at the second replica: %v", i, err)
		}
		want := resp.GetPayment().GetStatus()
		timeout := time.After(10 * time.Second)
	wait:
		for {
			select {
			case got, ok := <-seen:
				if !ok {
					t.Fatalf("the stream at the first replica ended: %v", stream.Err())
				}
				if got.GetPaymentId() != p.id || got.GetStatus() == gatewayv1.PaymentStatus_PAYMENT_STATUS_PROCESSING {
					continue
				}
				if got.GetStatus() != want {
					t.Errorf("payment %s: the stream at the first replica shows %v, the second replica answered %v", p.id, got.GetStatus(), want)
				}
				break wait
			case <-timeout:
				t.Fatalf("payment %s (%v at the second replica) not shown decided by the first replica's stream within 10s", p.id, want)
			}
		}
	}
	final := finalEverywhere(t, c, users, nil, plan, 3*replicaTxnTimeout)
	after := checkSettled(t, c, before, 3*replicaTxnTimeout)
	checkExactlyOnce(t, c, before, after, plan, final)
}

// TestReplicaClientFailover gives the Go client both replicas' addresses and kills the first
// (SIGKILL) between two payments: the second payment, and the read of the first, are answered
// by the other replica with the session made at the first, and the money moves once each.
func TestReplicaClientFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real processes")
	}
	c := replicaCluster(t, 2, cluster.Options{TxnTimeout: replicaTxnTimeout})
	before := audit(t, c)
	cl := c.NewClient(client.WithTimeout(20 * time.Second))
	if _, err := cl.Login(ctxT(t, 20*time.Second), "alice", passwords["alice"]); err != nil {
		t.Fatalf("login: %v", err)
	}
	payOnce := func(amount int64) client.Result {
		t.Helper()
		r, err := cl.Pay(ctxT(t, time.Minute), client.PaymentRequest{From: "bank1-1001", To: "bank2-2002", Amount: amount, Currency: "USD"})
		if err != nil || r.Status != client.StatusSucceeded {
			t.Fatalf("pay %d: %+v, %v", amount, r, err)
		}
		return r
	}
	first := payOnce(111)
	c.Kill("gateway")
	second := payOnce(222)
	got, err := cl.GetPayment(ctxT(t, 20*time.Second), first.ID)
	if err != nil || got.GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
		t.Fatalf("GetPayment %s after the first replica's death: %v, %v", first.ID, got, err)
	}
	plan := []plannedPayment{
		{id: first.ID, user: "alice", from: "bank1-1001", to: "bank2-2002", amount: 111},
		{id: second.ID, user: "alice", from: "bank1-1001", to: "bank2-2002", amount: 222},
	}
	users := loginEverywhere(t, c)
	final := finalEverywhere(t, c, users, nil, plan, 3*replicaTxnTimeout)
	after := checkSettled(t, c, before, 3*replicaTxnTimeout)
	checkExactlyOnce(t, c, before, after, plan, final)
}
