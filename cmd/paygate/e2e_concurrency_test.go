package main

import (
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/internal/account"
	"github.com/paygate/paygate/internal/cluster"
)

// retryable reports whether a client should send the same payment again: the gateway was
// unreachable, restarting, or still deciding.
func retryable(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeAborted, connect.CodeUnknown, connect.CodeCanceled,
		connect.CodeDeadlineExceeded, connect.CodeInternal:
		return true
	}
	return false
}

type plannedPayment struct {
	id, user, from, to string
	amount             int64
	retry              int // 0: once; 1: again after the answer; 2: twice at the same time
}

// TestConcurrentPaymentsWithGatewayCrash sends 200 concurrent payments among accounts at three
// banks, with random amounts that include overdrafts and unknown payees; a fifth of them are
// sent twice with the same payment_id (some at the same moment), and the gateway is killed
// with SIGKILL and restarted in the middle. Afterwards: every payment_id was applied at most
// once, every answer a client got matches the ledgers, nothing is overdrawn, money is conserved,
// and everything is resolved within two timeouts of the restart.
func TestConcurrentPaymentsWithGatewayCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real processes")
	}
	const (
		n          = 200
		workers    = 16
		txnTimeout = 5 * time.Second
	)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed>>1))

	c := cluster.New(t, cluster.Options{TxnTimeout: txnTimeout})
	before := audit(t, c)
	var accounts []string
	for id := range before.Accounts {
		accounts = append(accounts, id)
	}
	sort.Strings(accounts)
	owned := map[string][]string{
		"alice": {"bank1-1001", "bank2-2001"},
		"bob":   {"bank2-2002", "bank3-3001"},
		"carol": {"bank3-3002", "bank1-1002"},
		"dave":  {"bank1-1003"},
	}
	users := map[string]*cluster.User{}
	var names []string
	for name := range owned {
		users[name] = login(t, c, name)
		names = append(names, name)
	}
	sort.Strings(names)

	plan := make([]plannedPayment, n)
	for i := range plan {
		u := names[rng.IntN(len(names))]
		from := owned[u][rng.IntN(len(owned[u]))]
		to := accounts[rng.IntN(len(accounts))]
		for to == from {
			to = accounts[rng.IntN(len(accounts))]
		}
		if rng.IntN(20) == 0 {
			to = "bank3-9999" // unknown payee
		}
		p := plannedPayment{id: newID(), user: u, from: from, to: to, amount: 1 + rng.Int64N(15000)}
		switch r := rng.IntN(10); {
		case r == 0:
			p.retry = 1
		case r == 1:
			p.retry = 2
		}
		plan[i] = p
	}

	var (
		mu    sync.Mutex
		acks  = map[string][]gatewayv1.PaymentStatus{}
		acked atomic.Int64
	)
	send := func(p plannedPayment) {
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			resp, err := pay(ctxT(t, 15*time.Second), users[p.user], p.id, p.from, p.to, p.amount)
			if err == nil {
				mu.Lock()
				acks[p.id] = append(acks[p.id], resp.GetPayment().GetStatus())
				mu.Unlock()
				acked.Add(1)
				return
			}
			if !retryable(err) {
				t.Errorf("payment %s: %v", p.id, err)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Errorf("payment %s: no answer within 60s", p.id)
	}
	work := make(chan plannedPayment)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				switch p.retry {
				case 0:
					send(p)
				case 1:
					send(p)
					send(p)
				case 2:
					var both sync.WaitGroup
					both.Add(2)
					go func() { defer both.Done(); send(p) }()
					go func() { defer both.Done(); send(p) }()
					both.Wait()
				}
			}
		}()
	}
	feed := make(chan struct{})
	go func() {
		defer close(feed)
		for _, p := range plan {
			work <- p
		}
		close(work)
	}()

	// Kill the gateway once a third of the payments have been answered.
	for acked.Load() < n/3 {
		time.Sleep(5 * time.Millisecond)
	}
	c.Kill("gateway")
	killedAt := acked.Load()
	c.StartGateway()
	restarted := time.Now()
	t.Logf("gateway killed after %d answers and restarted", killedAt)
	<-feed
	wg.Wait()

	// Every payment reaches a final outcome, and every answer given matches it.
	final := map[string]*gatewayv1.Payment{}
	for _, p := range plan {
		u := users[p.user]
		for {
			resp, err := u.Payments.GetPayment(ctxT(t, 10*time.Second), connect.NewRequest(&gatewayv1.GetPaymentRequest{PaymentId: p.id}))
			if err != nil && connect.CodeOf(err) != connect.CodeNotFound && !retryable(err) {
				t.Fatalf("GetPayment %s: %v", p.id, err)
			}
			if err == nil && resp.Msg.GetPayment().GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_PROCESSING {
				final[p.id] = resp.Msg.GetPayment()
				break
			}
			if time.Since(restarted) > 2*txnTimeout {
				t.Fatalf("payment %s not decided %s after the restart (%v)", p.id, time.Since(restarted), err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		for _, s := range acks[p.id] {
			if s != final[p.id].GetStatus() {
				t.Errorf("payment %s: a client was told %v, the payment ended %v", p.id, s, final[p.id].GetStatus())
			}
		}
	}
	after, err := c.WaitSettled(2*txnTimeout - time.Since(restarted))
	if err != nil {
		t.Fatalf("not resolved within two timeouts of the restart: %v", err)
	}
	t.Logf("resolved %s after the restart", time.Since(restarted).Round(time.Millisecond))
	checkSettled(t, c, before, time.Second)

	// Exactly once: each account moved by exactly the sum of the succeeded payments touching it,
	// and each payment is committed at both of its banks or at neither.
	want := map[string]int64{}
	succeeded, failed := 0, 0
	for _, p := range plan {
		f := final[p.id]
		states, err := c.TransactionStates(ctxT(t, 10*time.Second), p.id)
		if err != nil {
			t.Fatal(err)
		}
		committed := 0
		for _, s := range states {
			if s == bankv1.TransactionState_TRANSACTION_STATE_COMMITTED {
				committed++
			}
		}
		wantCommitted := 2
		if account.Bank(p.from) == account.Bank(p.to) {
			wantCommitted = 1
		}
		switch f.GetStatus() {
		case gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED:
			succeeded++
			want[p.from] -= p.amount
			want[p.to] += p.amount
			if committed != wantCommitted {
				t.Errorf("payment %s SUCCEEDED but committed at %d of %d banks: %v", p.id, committed, wantCommitted, states)
			}
		default:
			failed++
			if committed != 0 {
				t.Errorf("payment %s FAILED but committed at %d banks: %v", p.id, committed, states)
			}
		}
	}
	for id, a := range after.Accounts {
		if got := a.GetBalance() - before.Accounts[id].GetBalance(); got != want[id] {
			t.Errorf("%s moved by %d; the succeeded payments add up to %d", id, got, want[id])
		}
	}
	t.Logf("%d payments: %d succeeded, %d failed; %d answers", n, succeeded, failed, acked.Load())
	if succeeded == 0 || failed == 0 {
		t.Errorf("a mix of outcomes was expected (succeeded %d, failed %d)", succeeded, failed)
	}
}
