package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/internal/account"
	"github.com/paygate/paygate/internal/cluster"
	"github.com/paygate/paygate/internal/pgdb/pgtest"
)

// pgBankDatabases creates one database per bank on the test server (pgtest), dropped when the
// test ends, and returns their URLs by bank; it skips the test when no server is reachable. When
// the server URL has no password, the URLs carry a made-up one (trust authentication ignores it),
// so that the test can check that it is never logged.
func pgBankDatabases(t *testing.T, banks ...string) (urls map[string]string, password string) {
	t.Helper()
	base, err := url.Parse(pgtest.URL())
	if err != nil {
		t.Fatal(err)
	}
	password, ok := base.User.Password()
	if !ok && base.User != nil {
		password = "pw-" + randomHex(8)
	}
	urls = map[string]string{}
	for _, b := range banks {
		u, err := url.Parse(pgtest.NewDatabase(t, "paygate_e2e_"+b+"_"))
		if err != nil {
			t.Fatal(err)
		}
		if !ok && u.User != nil {
			u.User = url.UserPassword(u.User.Username(), password)
		}
		urls[b] = u.String()
	}
	return urls, password
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// TestPostgresBanksEndToEnd runs the system with every bank's ledger on PostgreSQL (each in
// its own database): concurrent payments between banks and within one, some of which must fail,
// while bank2 is killed with SIGKILL and restarted. Afterwards every payment has one final
// outcome, applied exactly once, money is conserved and nothing is held. It also issues an
// enrollment code against a bank's database, and checks that no database password is logged.
func TestPostgresBanksEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real processes")
	}
	const (
		n          = 120
		workers    = 12
		txnTimeout = 5 * time.Second
	)
	banks := []string{"bank1", "bank2", "bank3"}
	urls, password := pgBankDatabases(t, banks...)
	c := cluster.New(t, cluster.Options{TxnTimeout: txnTimeout, BankDatabaseURL: func(b string) string { return urls[b] }})
	before := audit(t, c)
	if len(before.Accounts) == 0 {
		t.Fatal("no accounts imported")
	}

	owned := map[string][]string{
		"alice": {"bank1-1001", "bank2-2001"},
		"bob":   {"bank2-2002", "bank3-3001"},
		"carol": {"bank3-3002", "bank1-1002"},
		"dave":  {"bank1-1003"},
	}
	users := map[string]*cluster.User{}
	for name := range owned {
		users[name] = login(t, c, name)
	}
	// A fixed mix: between banks, within a bank, overdrafts and unknown payees.
	kinds := []plannedPayment{
		{user: "alice", from: "bank1-1001", to: "bank2-2002", amount: 700},   // across banks
		{user: "bob", from: "bank2-2002", to: "bank3-3002", amount: 900},     // across banks
		{user: "carol", from: "bank3-3002", to: "bank1-1001", amount: 1100},  // across banks
		{user: "alice", from: "bank1-1001", to: "bank1-1002", amount: 300},   // within bank1
		{user: "bob", from: "bank3-3001", to: "bank3-3002", amount: 250},     // within bank3
		{user: "dave", from: "bank1-1003", to: "bank2-2001", amount: 9000},   // often more than dave has
		{user: "carol", from: "bank1-1002", to: "bank3-9999", amount: 100},   // unknown payee
		{user: "alice", from: "bank2-2001", to: "bank2-2002", amount: 50000}, // more than alice has there
	}
	plan := make([]plannedPayment, n)
	for i := range plan {
		p := kinds[i%len(kinds)]
		p.id = newID()
		plan[i] = p
	}

	var (
		mu    sync.Mutex
		acks  = map[string]gatewayv1.PaymentStatus{}
		acked atomic.Int64
	)
	send := func(p plannedPayment) {
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			resp, err := pay(ctxT(t, 15*time.Second), users[p.user], p.id, p.from, p.to, p.amount)
			if err == nil {
				mu.Lock()
				acks[p.id] = resp.GetPayment().GetStatus()
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
		t.Errorf("payment %s: no answer within 30s", p.id)
	}
	work := make(chan plannedPayment)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				send(p)
			}
		}()
	}
	go func() {
		for _, p := range plan {
			work <- p
		}
		close(work)
	}()
	for acked.Load() < n/3 {
		time.Sleep(5 * time.Millisecond)
	}
	c.Kill("bank2")
	t.Logf("bank2 killed after %d answers", acked.Load())
	c.StartBank("bank2")
	restarted := time.Now()
	wg.Wait()

	// Every payment has a final outcome, the one its client was told.
	final := map[string]*gatewayv1.Payment{}
	for _, p := range plan {
		for {
			resp, err := users[p.user].Payments.GetPayment(ctxT(t, 10*time.Second), connect.NewRequest(&gatewayv1.GetPaymentRequest{PaymentId: p.id}))
			if err != nil && !retryable(err) {
				t.Fatalf("GetPayment %s: %v", p.id, err)
			}
			if err == nil && resp.Msg.GetPayment().GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_PROCESSING {
				final[p.id] = resp.Msg.GetPayment()
				break
			}
			if time.Since(restarted) > 3*txnTimeout {
				t.Fatalf("payment %s undecided %s after bank2's restart (%v)", p.id, time.Since(restarted), err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if s, ok := acks[p.id]; ok && s != final[p.id].GetStatus() {
			t.Errorf("payment %s: the client was told %v, the payment ended %v", p.id, s, final[p.id].GetStatus())
		}
	}
	after := checkSettled(t, c, before, 3*txnTimeout)

	// Exactly once: each account moved by the sum of the succeeded payments touching it, and
	// each payment is committed at all of its banks or at none.
	want := map[string]int64{}
	succeeded, failed := 0, 0
	for _, p := range plan {
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
		if final[p.id].GetStatus() == gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
			succeeded++
			want[p.from] -= p.amount
			want[p.to] += p.amount
			if committed != wantCommitted {
				t.Errorf("payment %s SUCCEEDED but committed at %d of %d banks: %v", p.id, committed, wantCommitted, states)
			}
		} else {
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
	t.Logf("%d payments: %d succeeded, %d failed; settled %s after bank2's restart", n, succeeded, failed, time.Since(restarted).Round(time.Millisecond))
	if succeeded == 0 || failed == 0 {
		t.Errorf("a mix of outcomes was expected (succeeded %d, failed %d)", succeeded, failed)
	}

	// The operator's tool works on the bank's database.
	if code, err := c.EnrollmentCode("bank1", "bank1-1004"); err != nil || code == "" {
		t.Errorf("paygate bank enroll --database-url: %q, %v", code, err)
	}
	// A database belongs to its bank: bank2's tool is refused bank1's database.
	var stderr bytes.Buffer
	cmd := exec.Command(c.Bin, "bank", "enroll", "--name", "bank2", "--account", "bank2-2003", "--database-url", urls["bank1"])
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil || !strings.Contains(stderr.String(), "belongs to another bank") {
		t.Errorf("bank2 on bank1's database: %v, %q; want a refusal naming the other bank", err, stderr.String())
	}
	if password != "" && strings.Contains(stderr.String(), password) {
		t.Errorf("the database password is in the tool's message: %q", stderr.String())
	}

	// Passwords never reach the logs; the bank says where its ledger is, redacted.
	logs := c.Logs()
	if password != "" && strings.Contains(logs, password) {
		t.Errorf("the database password is in the logs")
	}
	if lines := c.GrepLog("bank1", "bank serving", "paygate_e2e_bank1_"); len(lines) == 0 {
		t.Errorf("bank1 does not log its PostgreSQL ledger at start")
	} else if password != "" && !strings.Contains(lines[0], "xxxxx") {
		t.Errorf("bank1's start log does not show the URL redacted: %s", lines[0])
	}
}

func TestBankDatabaseURLUsage(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"bank", "--name", "bank1", "--certs", t.TempDir(), "--database-url", "mysql://u:s3cret@h/db"},
		{"bank", "--name", "bank1", "--certs", t.TempDir(), "--database-url", "host=h password=s3cret"},
		{"bank", "enroll", "--name", "bank1", "--account", "bank1-1", "--database-url", "sqlite:///s3cret.db"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, &stdout, &stderr); code != exitUsage {
			t.Errorf("%v: exit %d, want %d (usage); stderr %q", args, code, exitUsage, stderr.String())
		}
		if !strings.Contains(stderr.String(), "--database-url") || strings.Contains(stderr.String(), "s3cret") {
			t.Errorf("%v: stderr %q; want a usage error naming --database-url, without the URL's secrets", args, stderr.String())
		}
	}
}
