package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/internal/account"
	"github.com/paygate/paygate/internal/cluster"
	"github.com/paygate/paygate/internal/rpcerr"
)

// diskFullTxnTimeout is the gateway's --txn-timeout in the disk-full tests.
const diskFullTxnTimeout = 3 * time.Second

// internalText is what a caller must never read in an answer: the store's own error text.
var internalText = []string{"database or disk is full", "disk is full", "sqlite", "SQLITE", "no space left"}

// diskFullPayment is one payment a disk-full test sent, and what it was answered.
type diskFullPayment struct {
	id, from, to string
	amount       int64
	user         *cluster.User
}

// answers records every answer the clients got while a disk was full, and checks each one:
// a decided outcome, or one of the allowed errors (UNAVAILABLE with an allowed reason), never
// UNKNOWN or INTERNAL and never the store's own error text.
type answers struct {
	t       *testing.T
	allowed map[string]bool // reasons of UNAVAILABLE that may answer

	mu     sync.Mutex
	counts map[string]int // "ok" and code/reason
}

func newAnswers(t *testing.T, reasons ...string) *answers {
	a := &answers{t: t, allowed: map[string]bool{}, counts: map[string]int{}}
	for _, r := range reasons {
		a.allowed[r] = true
	}
	return a
}

func (a *answers) check(api string, err error) {
	a.t.Helper()
	key := "ok"
	if err != nil {
		key = connect.CodeOf(err).String() + "/" + rpcerr.Reason(err)
		switch code := connect.CodeOf(err); {
		case code == connect.CodeUnavailable && a.allowed[rpcerr.Reason(err)]:
		default:
			a.t.Errorf("%s answered %v (code %v, reason %q); want a decided outcome or UNAVAILABLE with one of %v",
				api, err, code, rpcerr.Reason(err), a.allowed)
		}
		a.noInternalText(api, err.Error())
	}
	a.mu.Lock()
	a.counts[key]++
	a.mu.Unlock()
}

func (a *answers) noInternalText(api, s string) {
	a.t.Helper()
	for _, bad := range internalText {
		if strings.Contains(s, bad) {
			a.t.Errorf("%s answered internal text %q: %s", api, bad, s)
		}
	}
}

// payment sends p once and checks the answer; a decided outcome must not carry internal text.
func (a *answers) payment(p diskFullPayment) {
	a.t.Helper()
	resp, err := pay(ctxT(a.t, 20*time.Second), p.user, p.id, p.from, p.to, p.amount)
	a.check("ExecutePayment", err)
	if err == nil {
		a.noInternalText("ExecutePayment", resp.GetPayment().GetFailureMessage())
	}
}

func (a *answers) count(key string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.counts[key]
}

func (a *answers) String() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(a.counts)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, a.counts[k]))
	}
	return strings.Join(parts, " ")
}

// sendAll sends every payment once, from workers goroutines, checking each answer.
func sendAll(a *answers, ps []diskFullPayment, workers int) {
	work := make(chan diskFullPayment)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for p := range work {
				a.payment(p)
			}
		})
	}
	for _, p := range ps {
		work <- p
	}
	close(work)
	wg.Wait()
}

// settleAll gives every attempted payment its one final outcome once the disk has room again:
// ExecutePayment retried with the same id, which GetPayment and ListPayments must agree on
// (finalOutcome); then it checks the ledgers: the audit settles with nothing held and the total
// unchanged, every payment is committed at all of its banks or at none, as its outcome says,
// and every account moved by exactly the payments that succeeded.
func settleAll(t *testing.T, c *cluster.Cluster, before cluster.Ledger, ps []diskFullPayment) (succeeded, failed int) {
	t.Helper()
	want := map[string]int64{}
	outcomes := map[string]*gatewayv1.Payment{}
	for _, p := range ps {
		resp := finalOutcome(t, p.user, p.id, p.from, p.to, p.amount, 2*diskFullTxnTimeout+20*time.Second)
		got := resp.GetPayment()
		outcomes[p.id] = got
		for _, bad := range internalText {
			if strings.Contains(got.GetFailureMessage(), bad) {
				t.Errorf("payment %s failed with internal text: %s", p.id, got.GetFailureMessage())
			}
		}
		switch got.GetStatus() {
		case gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED:
			succeeded++
			want[p.from] -= p.amount
			want[p.to] += p.amount
		case gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED:
			failed++
		}
	}
	after := checkSettled(t, c, before, 2*diskFullTxnTimeout+20*time.Second)
	if after.Held != 0 || after.Pending != 0 {
		t.Errorf("held %d, pending credit %d after settling", after.Held, after.Pending)
	}
	for id := range want {
		if want[id] == 0 {
			delete(want, id)
		}
	}
	if got := delta(before, after); !maps.Equal(got, want) {
		t.Errorf("exactly once: balances moved by %v; the succeeded payments add up to %v", got, want)
	}
	for _, p := range ps {
		states, err := c.TransactionStates(ctxT(t, 10*time.Second), p.id)
		if err != nil {
			t.Fatal(err)
		}
		committed := 0
		for bank, s := range states {
			switch s {
			case bankv1.TransactionState_TRANSACTION_STATE_COMMITTED:
				committed++
			case bankv1.TransactionState_TRANSACTION_STATE_PREPARED:
				t.Errorf("payment %s still prepared at %s", p.id, bank)
			}
		}
		banks := 1
		if account.Bank(p.from) != account.Bank(p.to) {
			banks = 2
		}
		switch outcomes[p.id].GetStatus() {
		case gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED:
			if committed != banks {
				t.Errorf("payment %s SUCCEEDED but committed at %d of its %d banks: %v", p.id, committed, banks, states)
			}
		default:
			if committed != 0 {
				t.Errorf("payment %s %v but committed at %d banks: %v", p.id, outcomes[p.id].GetStatus(), committed, states)
			}
		}
	}
	return succeeded, failed
}

// needTmpfs skips the test when this machine cannot mount the small file system it fills.
func needTmpfs(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end: starts real processes")
	}
	if err := cluster.TmpfsAvailable(); err != nil {
		t.Skipf("skipping the disk-full test: it fills a tmpfs of its own, and %v", err)
	}
}

// TestDiskFullGateway fills the gateway's disk (a tmpfs under its data directory) while
// payments are admitted. Every answer is a decided outcome or UNAVAILABLE storage_unavailable,
// never UNKNOWN or INTERNAL and never the store's own text. Once the disk has room again, every
// payment that was attempted ends with one outcome that a retried ExecutePayment, GetPayment and
// ListPayments agree on, and the ledgers show it exactly once.
func TestDiskFullGateway(t *testing.T) {
	needTmpfs(t)
	t.Parallel()
	c := cluster.New(t, cluster.Options{
		Banks: []string{"bank1", "bank2"}, Users: twoBankUsers,
		TxnTimeout: diskFullTxnTimeout, ResolveAfter: time.Second,
		DataDisks: map[string]int64{"gateway": 8 << 20},
	})
	alice := login(t, c, "alice")
	before := audit(t, c)
	disk := c.Disk("gateway")
	var ps []diskFullPayment
	add := func(n int) []diskFullPayment {
		var out []diskFullPayment
		for range n {
			p := diskFullPayment{id: newID(), from: "bank1-1001", to: "bank2-2002", amount: 100, user: alice}
			out = append(out, p)
			ps = append(ps, p)
		}
		return out
	}
	a := newAnswers(t, "storage_unavailable")

	sendAll(a, add(3), 1)
	if err := disk.Fill(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	full := add(24)
	sendAll(a, full, 4)
	// Reads need no room; writes other than payments meet the full disk too.
	for _, p := range full[:4] {
		_, err := alice.Payments.GetPayment(ctxT(t, 10*time.Second), connect.NewRequest(&gatewayv1.GetPaymentRequest{PaymentId: p.id}))
		if connect.CodeOf(err) != connect.CodeNotFound {
			a.check("GetPayment", err)
		}
	}
	_, err := alice.Payments.ListPayments(ctxT(t, 10*time.Second), connect.NewRequest(&gatewayv1.ListPaymentsRequest{}))
	a.check("ListPayments", err)
	_, err = c.Login("bob", passwords["bob"])
	a.check("Login", err)
	// Retries while the disk is still full get the same kinds of answers.
	sendAll(a, full[:8], 4)
	t.Logf("disk full for %s: answers %s", time.Since(start).Round(100*time.Millisecond), a)
	if a.count("unavailable/storage_unavailable") == 0 {
		t.Fatalf("no answer said storage_unavailable while the gateway's disk was full (answers %s): the fault did not bite", a)
	}
	if err := disk.Free(); err != nil {
		t.Fatal(err)
	}
	sendAll(a, add(3), 1)
	// Half the payments refused while the disk was full are retried at once: the gateway has no
	// row for them, so it admits and runs them afresh (the banks repeat their votes). The other
	// half are left until their banks, holding them prepared, have asked GetDecision and been
	// answered a presumed abort, which the retry then adopts.
	sendAll(a, full[:len(full)/2], 4)
	if _, err := c.WaitSettled(2*diskFullTxnTimeout + 20*time.Second); err != nil {
		t.Fatalf("the banks did not resolve the prepares the gateway has no row for: %v", err)
	}
	for _, p := range full[len(full)/2:] {
		resp := finalOutcome(t, p.user, p.id, p.from, p.to, p.amount, 10*time.Second)
		if resp.GetPayment().GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED || !resp.GetReplayed() {
			t.Errorf("payment %s, prepared while its admission failed, retried after the banks asked: %v replayed=%v; want the presumed abort, replayed",
				p.id, resp.GetPayment().GetStatus(), resp.GetReplayed())
		}
	}

	succeeded, failed := settleAll(t, c, before, ps)
	t.Logf("%d payments attempted: %d succeeded, %d failed", len(ps), succeeded, failed)
	if logs := c.GrepLog("gateway", "database or disk is full"); len(logs) == 0 {
		t.Errorf("the gateway did not log the storage failures it answered storage_unavailable for")
	}
}

// TestDiskFullBank fills a bank's disk (the payee's bank for some payments, the payer's for
// others) while payments run. The bank answers UNAVAILABLE storage_unavailable, so prepares
// fail and the payments are FAILED, or are decided before and applied when the disk has room
// again; nothing is half applied, and every payment ends with one outcome that every API agrees
// on, exactly once in the ledgers.
func TestDiskFullBank(t *testing.T) {
	needTmpfs(t)
	t.Parallel()
	c := cluster.New(t, cluster.Options{
		Banks: []string{"bank1", "bank2"}, Users: twoBankUsers,
		TxnTimeout: diskFullTxnTimeout, ResolveAfter: time.Second,
		DataDisks: map[string]int64{"bank2": 8 << 20},
	})
	alice := login(t, c, "alice")
	bob := login(t, c, "bob")
	before := audit(t, c)
	disk := c.Disk("bank2")
	var ps []diskFullPayment
	add := func(n int) []diskFullPayment {
		var out []diskFullPayment
		for i := range n {
			p := diskFullPayment{id: newID(), from: "bank1-1001", to: "bank2-2002", amount: 100, user: alice}
			if i%2 == 1 {
				p = diskFullPayment{id: newID(), from: "bank2-2002", to: "bank1-1001", amount: 70, user: bob}
			}
			out = append(out, p)
			ps = append(ps, p)
		}
		return out
	}
	// The gateway answers decided outcomes; a bank it knows to be down can make it refuse a
	// new payment with bank_unavailable.
	a := newAnswers(t, "bank_unavailable")

	sendAll(a, add(4), 2)
	// Payments in flight while the disk fills: some are prepared before and committed after.
	var wg sync.WaitGroup
	wg.Go(func() { sendAll(a, add(8), 2) })
	time.Sleep(50 * time.Millisecond)
	if err := disk.Fill(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	sendAll(a, add(12), 3)

	// The bank itself answers storage_unavailable, and records nothing.
	probe := newID()
	_, err := c.Bank("bank2").PrepareTransaction(ctxT(t, 10*time.Second), connect.NewRequest(&bankv1.PrepareTransactionRequest{
		TransactionId: probe, Deadline: timestampIn(diskFullTxnTimeout),
		Legs: []*bankv1.Leg{{AccountId: "bank2-2002", Direction: bankv1.LegDirection_LEG_DIRECTION_CREDIT, Amount: 100, Currency: "USD"}},
	}))
	if connect.CodeOf(err) != connect.CodeUnavailable || rpcerr.Reason(err) != "storage_unavailable" {
		t.Errorf("prepare at the bank with a full disk: %v (code %v, reason %q); want UNAVAILABLE storage_unavailable",
			err, connect.CodeOf(err), rpcerr.Reason(err))
	}
	if err != nil {
		a.noInternalText("bank PrepareTransaction", err.Error())
	}
	failedWhileFull := 0
	for _, p := range ps[4:] {
		got, err := p.user.Payments.GetPayment(ctxT(t, 10*time.Second), connect.NewRequest(&gatewayv1.GetPaymentRequest{PaymentId: p.id}))
		if err == nil && got.Msg.GetPayment().GetStatus() == gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED {
			failedWhileFull++
		}
	}
	t.Logf("bank2's disk full: answers %s; %d of %d payments failed", a, failedWhileFull, len(ps)-4)
	if failedWhileFull == 0 {
		t.Fatalf("no payment failed while bank2's disk was full: the fault did not bite")
	}
	if err := disk.Free(); err != nil {
		t.Fatal(err)
	}
	sendAll(a, add(4), 2)

	succeeded, failed := settleAll(t, c, before, ps)
	t.Logf("%d payments attempted: %d succeeded, %d failed", len(ps), succeeded, failed)
	if _, err := c.Bank("bank2").GetTransaction(ctxT(t, 10*time.Second), connect.NewRequest(&bankv1.GetTransactionRequest{TransactionId: probe})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("the prepare refused for a full disk left a record: %v", err)
	}
}
