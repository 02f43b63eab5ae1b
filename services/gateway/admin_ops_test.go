package gateway

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
)

func operations(t testing.TB, s *session) *gatewayv1.GetOperationsResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := s.admin.GetOperations(ctx, connect.NewRequest(&gatewayv1.GetOperationsRequest{}))
	if err != nil {
		t.Fatalf("GetOperations: %v", err)
	}
	return resp.Msg
}

func inDoubtOf(ops *gatewayv1.GetOperationsResponse, id string) *gatewayv1.InDoubtPayment {
	for _, d := range ops.GetInDoubt() {
		if d.GetPayment().GetPaymentId() == id {
			return d
		}
	}
	return nil
}

func bankOps(ops *gatewayv1.GetOperationsResponse, bank string) *gatewayv1.BankOperations {
	for _, b := range ops.GetBanks() {
		if b.GetBank() == bank {
			return b
		}
	}
	return nil
}

func redrive(t testing.TB, s *session, id string) *gatewayv1.RedrivePaymentResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	resp, err := s.admin.RedrivePayment(ctx, connect.NewRequest(&gatewayv1.RedrivePaymentRequest{PaymentId: id}))
	if err != nil {
		t.Fatalf("RedrivePayment %s: %v", id, err)
	}
	return resp.Msg
}

// TestOperationsAndRedrive: a payment decided while the payee's bank went down is in doubt in
// GetOperations, waiting for that bank, which is reported unavailable; a re-drive while the
// bank is still down leaves it so; once the bank is back a re-drive completes it, with the
// decision it had. The recovery loop is kept out of the way (it runs once an hour), so that
// what finishes the payment is the re-drive.
func TestOperationsAndRedrive(t *testing.T) {
	t.Parallel()
	gate, entered := make(chan struct{}), make(chan string, 4)
	e := newAdminEnv(t, envOptions{
		config: func(c *Config) { c.RecoveryInterval = time.Hour },
		beforeStart: func(g *Gateway) {
			wrapBanks(g, func(name string, p participant) participant {
				if name != "bank2" {
					return p
				}
				return &fakeBank{next: p, phase2Gate: gate, phase2Entered: entered}
			})
		},
	})
	alice, root := e.customer(t, "alice"), e.admin(t, "root")
	p := alice.pay(t, newPaymentID(), "bank1-1001", "bank2-2002", 700)
	if p.GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
		t.Fatalf("payment %v", p.GetStatus())
	}
	id := p.GetPaymentId()
	recv(t, entered, "the commit to bank2")
	e.banks["bank2"].stop(t)
	close(gate) // the commit goes on to bank2, which is down

	var ops *gatewayv1.GetOperationsResponse
	waitFor(t, 10*time.Second, "the payment in doubt, waiting for bank2, with bank2 unavailable", func() bool {
		ops = operations(t, root)
		d := inDoubtOf(ops, id)
		b := bankOps(ops, "bank2")
		return d != nil && slices.Equal(d.GetWaitingFor(), []string{"bank2"}) &&
			b.GetStatus() == gatewayv1.BankStatus_BANK_STATUS_UNAVAILABLE
	})
	d := inDoubtOf(ops, id)
	if d.GetStage() != "awaiting_acknowledgement" || d.GetPayment().GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
		t.Fatalf("in doubt: %v", d)
	}
	if b := bankOps(ops, "bank1"); b.GetStatus() != gatewayv1.BankStatus_BANK_STATUS_AVAILABLE || b.GetAccounts() == 0 || b.GetBalance() == 0 {
		t.Errorf("bank1: %v", b)
	}
	if b := bankOps(ops, "bank2"); b.GetError() == "" {
		t.Errorf("bank2 unavailable without an error: %v", b)
	}
	decidedAt := d.GetPayment().GetDecideTime().AsTime()

	// Re-driven while bank2 is down: still not completed, still committed.
	r := redrive(t, root, id)
	if r.GetCompleted() || r.GetPayment().GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
		t.Fatalf("re-drive with bank2 down: completed %v, %v", r.GetCompleted(), r.GetPayment().GetStatus())
	}

	e.banks["bank2"].start(t)
	r = redrive(t, root, id)
	if !r.GetCompleted() || r.GetPayment().GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED ||
		!r.GetPayment().GetDecideTime().AsTime().Equal(decidedAt) {
		t.Fatalf("re-drive with bank2 back: completed %v, %v decided at %v (was %v)", r.GetCompleted(), r.GetPayment().GetStatus(),
			r.GetPayment().GetDecideTime().AsTime(), decidedAt)
	}

	tr := trailOf(t, root, id, func(r *gatewayv1.GetPaymentTrailResponse) bool {
		return r.GetCompleted() && kindAt(r.GetEvents(), evAck, "bank2") >= 0 && countKind(r.GetEvents(), evRetry) == 2
	})
	ev := tr.GetEvents()
	if n := countKind(ev, evDecided); n != 1 {
		t.Fatalf("%d decisions in the trail:\n%s", n, trailText(ev))
	}
	if dd := ev[kindAt(ev, evDecided, "")]; dd.GetDecision() != "commit" || dd.GetDecidedBy() != gatewayv1.DecidedBy_DECIDED_BY_REQUEST {
		t.Fatalf("decision %q by %v:\n%s", dd.GetDecision(), dd.GetDecidedBy(), trailText(ev))
	}
	if n := countKind(ev, evRedrive); n != 2 {
		t.Fatalf("%d REDRIVE_REQUESTED events, want 2:\n%s", n, trailText(ev))
	}
	var attempts []int32
	for _, x := range ev {
		if x.GetKind() == evRetry {
			attempts = append(attempts, x.GetAttempt())
		}
	}
	if !slices.Equal(attempts, []int32{1, 2}) {
		t.Fatalf("RETRY attempts %v, want [1 2]:\n%s", attempts, trailText(ev))
	}
	bankErr := kindAt(ev, evBankError, "bank2")
	if bankErr < 0 || ev[bankErr].GetDetail() != "unavailable" || bankErr > kindAt(ev, evAck, "bank2") {
		t.Fatalf("no BANK_ERROR unavailable from bank2 before its acknowledgement:\n%s", trailText(ev))
	}
	if ev[len(ev)-1].GetKind() != evCompleted {
		t.Fatalf("trail does not end with COMPLETED:\n%s", trailText(ev))
	}
	for _, b := range tr.GetBanks() {
		if b.GetState() != "committed" {
			t.Errorf("bank %s: %s (%s)", b.GetBank(), b.GetState(), b.GetDetail())
		}
	}
	waitFor(t, 10*time.Second, "the payment out of GetOperations, with bank2 available", func() bool {
		ops := operations(t, root)
		return inDoubtOf(ops, id) == nil && bankOps(ops, "bank2").GetStatus() == gatewayv1.BankStatus_BANK_STATUS_AVAILABLE
	})

	// A finished payment is answered as it is.
	r = redrive(t, root, id)
	if !r.GetCompleted() || r.GetPayment().GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
		t.Fatalf("re-drive of a finished payment: %v", r)
	}
	_, err := root.admin.RedrivePayment(context.Background(), connect.NewRequest(&gatewayv1.RedrivePaymentRequest{PaymentId: newPaymentID()}))
	wantErr(t, err, connect.CodeNotFound, "payment_not_found")

	var redrives []auditRecord
	for _, rec := range e.auditLog(t) {
		if rec.Action == "RedrivePayment" && rec.Target == "payment:"+id {
			redrives = append(redrives, rec)
		}
	}
	if len(redrives) != 3 || redrives[1].Before != `{"status":"PAYMENT_STATUS_SUCCEEDED","completed":false}` ||
		redrives[1].After != `{"status":"PAYMENT_STATUS_SUCCEEDED","completed":true}` {
		t.Errorf("audit entries of the re-drives: %+v", redrives)
	}
	e.assertSettled(t)
}

// TestRedriveUndecidedPastDeadline: a payment admitted and never decided (its gateway stopped
// before preparing it), past its deadline, is aborted by a re-drive as the timeout monitor
// would abort it, and both banks acknowledge.
func TestRedriveUndecidedPastDeadline(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, envOptions{config: func(c *Config) { c.RecoveryInterval = time.Hour }})
	root := e.admin(t, "root")
	ctx := context.Background()
	p := paymentRecord{PaymentID: newPaymentID(), Username: "alice", From: "bank1-1001", To: "bank3-3001", Amount: 100, Currency: "USD"}
	p.Fingerprint = paymentFingerprint(p.Username, p.From, p.To, p.Amount, p.Currency)
	p.CreatedAt = time.Now().Add(-2 * time.Second)
	p.Deadline = p.CreatedAt.Add(time.Second)
	if _, inserted, err := admitPayment(ctx, e.gw.store, p); err != nil || !inserted {
		t.Fatalf("admit: inserted %v, %v", inserted, err)
	}
	ops := operations(t, root)
	d := inDoubtOf(ops, p.PaymentID)
	if d.GetStage() != "undecided" || !slices.Equal(d.GetWaitingFor(), []string{"bank1", "bank3"}) {
		t.Fatalf("in doubt: %v", d)
	}
	r := redrive(t, root, p.PaymentID)
	if !r.GetCompleted() || r.GetPayment().GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED ||
		r.GetPayment().GetFailureReason() != gatewayv1.FailureReason_FAILURE_REASON_TIMEOUT {
		t.Fatalf("re-drive: %v", r)
	}
	got := stored(t, e.gw.store, p.PaymentID)
	if got.DecidedBy != decidedByTimeoutMonitor {
		t.Fatalf("decided by %v, want the timeout monitor", got.DecidedBy)
	}
	e.assertSettled(t)
}

// TestRedriveHeldElsewhere: on a shared store, a re-drive refuses a payment another replica
// holds under a live lease, and never sends anything for it; once that replica's lease has
// expired, a re-drive claims the payment (the trail says which replica) and finishes it.
func TestRedriveHeldElsewhere(t *testing.T) {
	a, b := newSharedBank(), newSharedBank()
	const ttl = 2 * time.Second
	rs := newReplicas(t, 2, ttl, 30*time.Second, false, a, b)
	holder, other := rs[0], rs[1]
	other.trail.start()
	t.Cleanup(func() { other.trail.close(context.Background()) })
	ctx := context.Background()
	if err := holder.store.RenewLease(ctx); err != nil {
		t.Fatal(err)
	}
	p := testPayment("bankA-1", "bankB-1", 100)
	p.CreatedAt = time.Now()
	p.Deadline = p.CreatedAt.Add(30 * time.Second)
	if _, inserted, err := admitPayment(ctx, holder.store, p); err != nil || !inserted {
		t.Fatalf("admit: inserted %v, %v", inserted, err)
	}
	_, _, err := other.Redrive(ctx, p.PaymentID, "root")
	if !errors.Is(err, ErrHeldElsewhere) && holder.store.Holding() {
		t.Fatalf("re-drive of a payment another replica holds: %v, want ErrHeldElsewhere", err)
	}
	if n := a.prepared(p.PaymentID) + b.prepared(p.PaymentID); n != 0 && holder.store.Holding() {
		t.Fatalf("a re-drive sent %d prepares for a payment another replica holds", n)
	}
	go other.keepLease(t.Context())
	var out paymentRecord
	var done bool
	waitFor(t, 10*time.Second, "the re-drive to claim and finish the payment once the holder's lease expired", func() bool {
		out, done, err = other.Redrive(ctx, p.PaymentID, "root")
		return err == nil && done
	})
	if out.Decision != decisionCommit || stored(t, other.store, p.PaymentID).DecidedBy != decidedByRecovery {
		t.Fatalf("re-driven payment: decision %v, decided by %v", out.Decision, stored(t, other.store, p.PaymentID).DecidedBy)
	}
	waitFor(t, 10*time.Second, "the trail's CLAIMED and REDRIVE_REQUESTED by the other replica", func() bool {
		trail, err := other.store.Trail(ctx, p.PaymentID)
		if err != nil {
			t.Fatal(err)
		}
		var claimed, requested bool
		for _, ev := range trail {
			switch gatewayv1.TrailEventKind(ev.Kind) {
			case evClaimed:
				claimed = claimed || ev.Replica == other.store.Owner()
			case evRedrive:
				requested = requested || (ev.Replica == other.store.Owner() && ev.Detail == "requested by root")
			}
		}
		return claimed && requested
	})
}
