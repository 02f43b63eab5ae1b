package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/internal/account"
	"github.com/paygate/paygate/internal/cluster"
)

// The helpers of the replica tests (e2e_replicas_test.go): a load spread over the gateway
// replicas, the outcome of every payment at every replica, the exactly-once audit, the
// gateway's PostgreSQL tables, and the prepare trace.

// demoAccounts are the accounts of the demo users (fixtures/user_details.json).
var demoAccounts = map[string][]string{
	"alice": {"bank1-1001", "bank2-2001"},
	"bob":   {"bank2-2002", "bank3-3001"},
	"carol": {"bank3-3002", "bank1-1002"},
	"dave":  {"bank1-1003"},
}

// replicaMix is a fixed mix of payments among the demo accounts: across banks, within one
// bank, overdrafts and unknown payees. The amounts are small against the balances, so that
// most of them succeed however they interleave.
var replicaMix = []plannedPayment{
	{user: "alice", from: "bank1-1001", to: "bank2-2002", amount: 700},   // across banks
	{user: "bob", from: "bank2-2002", to: "bank3-3002", amount: 900},     // across banks
	{user: "carol", from: "bank3-3002", to: "bank1-1001", amount: 1100},  // across banks
	{user: "alice", from: "bank1-1001", to: "bank1-1002", amount: 300},   // within bank1
	{user: "bob", from: "bank3-3001", to: "bank3-3002", amount: 250},     // within bank3
	{user: "carol", from: "bank1-1002", to: "bank2-2001", amount: 400},   // across banks
	{user: "dave", from: "bank1-1003", to: "bank2-2001", amount: 9000},   // often more than dave has
	{user: "carol", from: "bank1-1002", to: "bank3-9999", amount: 100},   // unknown payee
	{user: "alice", from: "bank2-2001", to: "bank2-2002", amount: 50000}, // more than alice has there
}

// planReplicaPayments returns n payments of replicaMix with fresh ids.
func planReplicaPayments(n int) []plannedPayment {
	plan := make([]plannedPayment, n)
	for i := range plan {
		p := replicaMix[i%len(replicaMix)]
		p.id = newID()
		plan[i] = p
	}
	return plan
}

// replicaCluster starts a system with n gateway replicas on one PostgreSQL database (and the
// banks on databases of their own); it skips the test when no PostgreSQL server can be reached.
func replicaCluster(t *testing.T, n int, opts cluster.Options) *cluster.Cluster {
	t.Helper()
	opts.Gateways, opts.Backend = n, cluster.Postgres
	c := cluster.New(t, opts)
	if len(c.GatewayAddrs) != n {
		t.Fatalf("%d gateway addresses, want %d", len(c.GatewayAddrs), n)
	}
	return c
}

// replicaUsers are the demo users, each logged in once (at the first replica running) and with clients
// of every replica that send that one session's token: the replicas share their sessions.
type replicaUsers map[string][]*cluster.User

func loginEverywhere(t *testing.T, c *cluster.Cluster) replicaUsers {
	t.Helper()
	// The login is made at the first replica that runs.
	at := ""
	for _, name := range c.GatewayNames() {
		if p := c.Proc(name); p != nil && !p.Exited() {
			at = c.GatewayAddrOf(name)
			break
		}
	}
	out := replicaUsers{}
	for name := range demoAccounts {
		u, err := c.LoginAt(at, name, passwords[name])
		if err != nil {
			t.Fatalf("login %s at %s: %v", name, at, err)
		}
		for _, addr := range c.GatewayAddrs {
			out[name] = append(out[name], c.UserAt(addr, name, u.Token))
		}
	}
	return out
}

// load sends payments through the replicas: payment i first to replica i mod N, a retry after
// an ambiguous error to the next replica, until it has an outcome.
type load struct {
	t       *testing.T
	users   replicaUsers
	n       int // replicas
	timeout time.Duration

	mu       sync.Mutex
	acks     map[string]gatewayv1.PaymentStatus
	by       map[string]int // the replica that gave the outcome
	sends    atomic.Int64
	answered atomic.Int64
}

func newLoad(t *testing.T, users replicaUsers, replicas int) *load {
	return &load{t: t, users: users, n: replicas, timeout: 60 * time.Second,
		acks: map[string]gatewayv1.PaymentStatus{}, by: map[string]int{}}
}

// send sends p, first to replica start, until it has an outcome or l.timeout has passed.
func (l *load) send(p plannedPayment, start int) {
	deadline := time.Now().Add(l.timeout)
	var last error
	for attempt := 0; time.Now().Before(deadline); attempt++ {
		r := (start + attempt) % l.n
		l.sends.Add(1)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		resp, err := pay(ctx, l.users[p.user][r], p.id, p.from, p.to, p.amount)
		cancel()
		if err == nil && resp.GetPayment().GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_PROCESSING {
			st := resp.GetPayment().GetStatus()
			l.mu.Lock()
			if prev, ok := l.acks[p.id]; ok && prev != st {
				l.t.Errorf("payment %s: answered %v, then %v", p.id, prev, st)
			}
			l.acks[p.id], l.by[p.id] = st, r
			l.mu.Unlock()
			l.answered.Add(1)
			return
		}
		if err != nil && !retryable(err) {
			l.t.Errorf("payment %s at replica %d: %v", p.id, r+1, err)
			return
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	l.t.Errorf("payment %s: no outcome within %s (last error %v)", p.id, l.timeout, last)
}

// run sends plan from workers goroutines (payment i first to replica i mod N) and returns at
// once; wait waits for them.
func (l *load) run(plan []plannedPayment, workers int) (wait func()) {
	type job struct {
		p plannedPayment
		i int
	}
	jobs := make(chan job)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for j := range jobs {
				l.send(j.p, j.i%l.n)
			}
		})
	}
	go func() {
		for i, p := range plan {
			jobs <- job{p, i}
		}
		close(jobs)
	}()
	return wg.Wait
}

// waitAnswered waits until n payments have an outcome, up to d.
func (l *load) waitAnswered(n int64, d time.Duration) {
	l.t.Helper()
	deadline := time.Now().Add(d)
	for l.answered.Load() < n {
		if time.Now().After(deadline) {
			l.t.Fatalf("%d payments answered after %s, waited for %d", l.answered.Load(), d, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// finalEverywhere asks every running replica for every payment of plan until each answers a
// final outcome (up to within), and checks that they all answer the same one, the one its
// client was told. It returns the outcomes.
func finalEverywhere(t *testing.T, c *cluster.Cluster, users replicaUsers, l *load, plan []plannedPayment, within time.Duration) map[string]*gatewayv1.Payment {
	t.Helper()
	deadline := time.Now().Add(within)
	final := map[string]*gatewayv1.Payment{}
	for r, name := range c.GatewayNames() {
		if p := c.Proc(name); p == nil || p.Exited() {
			continue
		}
		for _, p := range plan {
			var got *gatewayv1.Payment
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				resp, err := users[p.user][r].Payments.GetPayment(ctx, connect.NewRequest(&gatewayv1.GetPaymentRequest{PaymentId: p.id}))
				cancel()
				if err != nil && !retryable(err) {
					t.Fatalf("%s: GetPayment %s: %v", name, p.id, err)
				}
				if err == nil && resp.Msg.GetPayment().GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_PROCESSING {
					got = resp.Msg.GetPayment()
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: payment %s undecided after %s (%v)", name, p.id, within, err)
				}
				time.Sleep(50 * time.Millisecond)
			}
			if f, ok := final[p.id]; !ok {
				final[p.id] = got
			} else if f.GetStatus() != got.GetStatus() || f.GetFailureReason() != got.GetFailureReason() ||
				f.GetAmount() != got.GetAmount() || f.GetFromAccount() != got.GetFromAccount() || f.GetToAccount() != got.GetToAccount() {
				t.Errorf("payment %s: %s answers %v %v (%s → %s %d), an earlier replica %v %v (%s → %s %d)", p.id, name,
					got.GetStatus(), got.GetFailureReason(), got.GetFromAccount(), got.GetToAccount(), got.GetAmount(),
					f.GetStatus(), f.GetFailureReason(), f.GetFromAccount(), f.GetToAccount(), f.GetAmount())
			}
		}
	}
	if l != nil {
		l.mu.Lock()
		defer l.mu.Unlock()
		for id, s := range l.acks {
			if f := final[id]; f != nil && f.GetStatus() != s {
				t.Errorf("payment %s: replica %d told the client %v, the payment ended %v", id, l.by[id]+1, s, f.GetStatus())
			}
		}
	}
	return final
}

// checkExactlyOnce checks the ledgers after the payments of plan settled: each account moved
// by the sum of the succeeded payments touching it, and each payment is committed at all of
// its banks (SUCCEEDED) or at none (FAILED), nothing left prepared. It returns the numbers of
// payments that succeeded and failed.
func checkExactlyOnce(t *testing.T, c *cluster.Cluster, before, after cluster.Ledger, plan []plannedPayment, final map[string]*gatewayv1.Payment) (succeeded, failed int) {
	t.Helper()
	want := map[string]int64{}
	seen := map[string]bool{}
	for _, p := range plan {
		if seen[p.id] {
			continue
		}
		seen[p.id] = true
		states, err := c.TransactionStates(ctxT(t, 10*time.Second), p.id)
		if err != nil {
			t.Fatal(err)
		}
		committed := 0
		for bank, s := range states {
			switch s {
			case bankv1.TransactionState_TRANSACTION_STATE_COMMITTED:
				committed++
			case bankv1.TransactionState_TRANSACTION_STATE_ABORTED:
			default:
				t.Errorf("payment %s: %v at %s after settling", p.id, s, bank)
			}
		}
		banks := 2
		if account.Bank(p.from) == account.Bank(p.to) {
			banks = 1
		}
		switch final[p.id].GetStatus() {
		case gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED:
			succeeded++
			want[p.from] -= p.amount
			want[p.to] += p.amount
			if committed != banks {
				t.Errorf("payment %s SUCCEEDED but committed at %d of %d banks: %v", p.id, committed, banks, states)
			}
		case gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED:
			failed++
			if committed != 0 {
				t.Errorf("payment %s FAILED but committed at %d banks: %v", p.id, committed, states)
			}
		default:
			t.Errorf("payment %s: no final outcome (%v)", p.id, final[p.id].GetStatus())
		}
	}
	for id, a := range after.Accounts {
		if got := a.GetBalance() - before.Accounts[id].GetBalance(); got != want[id] {
			t.Errorf("exactly once: %s moved by %d; the succeeded payments add up to %d", id, got, want[id])
		}
	}
	return succeeded, failed
}

// gatewayDB connects to the gateways' PostgreSQL database, closed when the test ends.
func gatewayDB(t *testing.T, c *cluster.Cluster) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.GatewayDatabaseURL())
	if err != nil {
		t.Fatalf("connect to the gateways' database: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// leases returns the gateway processes' leases: owner → expiry (unix nanoseconds).
func leases(t *testing.T, db *pgx.Conn) map[string]int64 {
	t.Helper()
	rows, err := db.Query(ctxT(t, 10*time.Second), `SELECT owner, expires_at FROM leases`)
	if err != nil {
		t.Fatalf("leases: %v", err)
	}
	out := map[string]int64{}
	for rows.Next() {
		var owner string
		var exp int64
		if err := rows.Scan(&owner, &exp); err != nil {
			t.Fatal(err)
		}
		out[owner] = exp
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// storedPayment is a row of the gateways' payments table.
type storedPayment struct {
	id, owner string
	decision  int
	completed bool
}

// storedPayments returns the rows of the payments table that match where (SQL), by id.
func storedPayments(t *testing.T, db *pgx.Conn, where string, args ...any) map[string]storedPayment {
	t.Helper()
	rows, err := db.Query(ctxT(t, 10*time.Second), `SELECT payment_id, owner, decision, completed FROM payments WHERE `+where, args...)
	if err != nil {
		t.Fatalf("payments: %v", err)
	}
	out := map[string]storedPayment{}
	for rows.Next() {
		var p storedPayment
		if err := rows.Scan(&p.id, &p.owner, &p.decision, &p.completed); err != nil {
			t.Fatal(err)
		}
		out[p.id] = p
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// traceEvent is a line of a crashpoint trace file: "<unix nanoseconds> <pid> <event> <id>".
type traceEvent struct {
	at    int64
	pid   int
	event string
	id    string
}

func readTrace(t *testing.T, path string) []traceEvent {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("trace: %v", err)
	}
	defer f.Close()
	var out []traceEvent
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 4 {
			t.Fatalf("trace: malformed line %q", sc.Text())
		}
		at, err1 := strconv.ParseInt(fields[0], 10, 64)
		pid, err2 := strconv.Atoi(fields[1])
		if err1 != nil || err2 != nil {
			t.Fatalf("trace: malformed line %q", sc.Text())
		}
		out = append(out, traceEvent{at: at, pid: pid, event: fields[2], id: fields[3]})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].at < out[j].at })
	return out
}

// interval is a span of phase one of a payment in one process.
type interval struct {
	pid        int
	begin, end int64
	open       bool // never ended: the process was killed in it (end is the kill time)
}

// prepareIntervals pairs each process's prepare.begin and prepare.end events per payment. An
// interval left open by a process that was killed ends at its kill time (killedAt, by pid); one
// left open by a live process is reported.
func prepareIntervals(t *testing.T, events []traceEvent, killedAt map[int]int64) map[string][]interval {
	t.Helper()
	type key struct {
		id  string
		pid int
	}
	open := map[key]int64{}
	out := map[string][]interval{}
	for _, e := range events {
		k := key{e.id, e.pid}
		switch e.event {
		case "prepare.begin":
			if _, ok := open[k]; ok {
				t.Errorf("trace: pid %d began preparing %s twice without ending", e.pid, e.id)
			}
			open[k] = e.at
		case "prepare.end":
			b, ok := open[k]
			if !ok {
				t.Errorf("trace: pid %d ended preparing %s without beginning", e.pid, e.id)
				continue
			}
			delete(open, k)
			out[e.id] = append(out[e.id], interval{pid: e.pid, begin: b, end: e.at})
		}
	}
	for k, b := range open {
		end, killed := killedAt[k.pid]
		if !killed {
			t.Errorf("trace: pid %d began preparing %s and never ended, without being killed", k.pid, k.id)
			continue
		}
		out[k.id] = append(out[k.id], interval{pid: k.pid, begin: b, end: end, open: true})
	}
	return out
}

// overlapReport counts what prepareIntervals found: payments prepared, those prepared by
// more than one process (taken over), intervals left open by a kill, and overlaps of two
// processes' intervals of one payment (there must be none).
type overlapReport struct {
	payments, takenOver, intervals, openAtKill int
	overlaps                                   []string
}

func (r overlapReport) String() string {
	return fmt.Sprintf("%d payments prepared in %d intervals, %d prepared by two or more processes, %d intervals cut by a kill, %d overlaps",
		r.payments, r.intervals, r.takenOver, r.openAtKill, len(r.overlaps))
}

func checkOverlaps(byID map[string][]interval) overlapReport {
	var r overlapReport
	for id, ivs := range byID {
		r.payments++
		r.intervals += len(ivs)
		pids := map[int]bool{}
		for _, iv := range ivs {
			pids[iv.pid] = true
			if iv.open {
				r.openAtKill++
			}
		}
		if len(pids) > 1 {
			r.takenOver++
		}
		for i := range ivs {
			for j := i + 1; j < len(ivs); j++ {
				a, b := ivs[i], ivs[j]
				if a.pid != b.pid && a.begin < b.end && b.begin < a.end {
					r.overlaps = append(r.overlaps, fmt.Sprintf("payment %s: pid %d prepared it in [%d, %d] and pid %d in [%d, %d]",
						id, a.pid, a.begin, a.end, b.pid, b.begin, b.end))
				}
			}
		}
	}
	sort.Strings(r.overlaps)
	return r
}
