package gateway

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

// The refunds' store contract (see refunds.go): the reservation a refund's admission takes from
// its payment, and what its decision does with it, on both stores; and the cap under concurrent
// admissions, on one store and on two PostgreSQL replicas.

// rfRefund is an undecided refund of parent by its payee, of amount (0: what is left).
func rfRefund(parent paymentRecord, payee string, amount int64) paymentRecord {
	r := paymentRecord{PaymentID: newPaymentID(), Username: payee, From: parent.To, To: parent.From,
		Amount: amount, Currency: parent.Currency, Description: "refund", RefundOf: parent.PaymentID}
	r.Fingerprint = refundFingerprint(payee, parent.PaymentID, amount)
	r.CreatedAt = time.Now()
	r.Deadline = r.CreatedAt.Add(time.Minute)
	return r
}

// rfPaid admits and commits a payment of amount from alice to bob.
func rfPaid(t testing.TB, s Store, amount int64) paymentRecord {
	t.Helper()
	p := ctAdmit(t, s, ctPayment("alice", "bankA-1", "bankB-1", amount))
	return ctDecide(t, s, p.PaymentID, decisionCommit)
}

// rfState returns id's refunded and refund_reserved, read from the store's database.
func rfState(t testing.TB, s Store, id string) (refunded, reserved int64) {
	t.Helper()
	const q = `SELECT refunded, refund_reserved FROM payments WHERE payment_id = `
	var err error
	switch s := s.(type) {
	case *SQLiteStore:
		err = s.db.Read.QueryRowContext(context.Background(), q+`?`, id).Scan(&refunded, &reserved)
	case *PGStore:
		err = s.pool.QueryRow(context.Background(), q+`$1`, id).Scan(&refunded, &reserved)
	default:
		t.Fatalf("store %T", s)
	}
	if err != nil {
		t.Fatalf("read refunds of %s: %v", id, err)
	}
	return refunded, reserved
}

// rfWant fails the test unless id's refunded and refund_reserved are as given.
func rfWant(t testing.TB, s Store, id string, refunded, reserved int64) {
	t.Helper()
	if gr, gv := rfState(t, s, id); gr != refunded || gv != reserved {
		t.Fatalf("payment %s: refunded %d, reserved %d; want %d, %d", id, gr, gv, refunded, reserved)
	}
}

// TestStoreRefunds: a refund's admission reserves its amount (0: what is left) on its payment
// in the admission's write, with refund.created; an abort gives the reservation back, a commit
// raises refunded and appends payment.refunded in the decision's write; refusals write
// nothing; a retry of an admitted refund reserves nothing again.
func TestStoreRefunds(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		evUsers(t, s, "alice:bankA-1", "bob:bankB-1")
		p := rfPaid(t, s, 100)
		seen := len(evAll(t, s))

		r1 := rfRefund(p, "bob", 40)
		stored := ctAdmit(t, s, r1)
		if stored.RefundOf != p.PaymentID || stored.Amount != 40 || stored.Refunded != 0 {
			t.Fatalf("admitted refund %+v", stored)
		}
		rfWant(t, s, p.PaymentID, 0, 40)
		evs := evAll(t, s)[seen:]
		if got, want := evTypes(evs), []string{"refund.created " + r1.PaymentID}; !slices.Equal(got, want) {
			t.Fatalf("events %v, want %v", got, want)
		}
		evCheckSnapshot(t, evs[0], stored, eventStatusProcessing)
		seen += len(evs)

		// A retry of the admitted refund is the stored row, and reserves nothing more.
		again, inserted, err := admitPayment(ctx, s, r1)
		if err != nil || inserted || again.PaymentID != r1.PaymentID {
			t.Fatalf("admit again: %+v inserted %v, %v", again, inserted, err)
		}
		rfWant(t, s, p.PaymentID, 0, 40)

		// An abort gives the reservation back, in the decision's write.
		failed := ctDecide(t, s, r1.PaymentID, decisionAbort)
		rfWant(t, s, p.PaymentID, 0, 0)
		evs = evAll(t, s)[seen:]
		if got, want := evTypes(evs), []string{"refund.failed " + r1.PaymentID}; !slices.Equal(got, want) {
			t.Fatalf("events %v, want %v", got, want)
		}
		evCheckSnapshot(t, evs[0], failed, eventStatusFailed)
		seen += len(evs)
		// Deciding it again changes nothing.
		ctDecide(t, s, r1.PaymentID, decisionAbort)
		rfWant(t, s, p.PaymentID, 0, 0)

		// Amount 0 takes all that is left.
		r2 := rfRefund(p, "bob", 0)
		stored = ctAdmit(t, s, r2)
		if stored.Amount != 100 {
			t.Fatalf("refund of what is left stored with amount %d, want 100", stored.Amount)
		}
		rfWant(t, s, p.PaymentID, 0, 100)
		// Its retry is still the stored row, though nothing is left now.
		if _, inserted, err := admitPayment(ctx, s, r2); err != nil || inserted {
			t.Fatalf("admit again when nothing is left: inserted %v, %v", inserted, err)
		}

		// Over the cap: refused, nothing written.
		for _, amount := range []int64{1, 0} {
			r3 := rfRefund(p, "bob", amount)
			_, _, err := admitPayment(ctx, s, r3)
			var left *RefundLeftError
			if !errors.Is(err, ErrRefundExceedsPayment) || !errors.As(err, &left) || left.Left != 0 {
				t.Fatalf("refund of %d with nothing left: %v, want ErrRefundExceedsPayment with 0 left", amount, err)
			}
			if _, err := s.Payment(ctx, r3.PaymentID); !errors.Is(err, ErrNotFound) {
				t.Fatalf("refused refund stored: %v", err)
			}
		}

		// A commit raises refunded, and appends payment.refunded after refund.succeeded.
		seen = len(evAll(t, s))
		done := ctDecide(t, s, r2.PaymentID, decisionCommit)
		rfWant(t, s, p.PaymentID, 100, 100)
		parent, err := s.Payment(ctx, p.PaymentID)
		if err != nil || parent.Refunded != 100 {
			t.Fatalf("refunded payment %+v, %v; want refunded 100", parent, err)
		}
		evs = evAll(t, s)[seen:]
		if got, want := evTypes(evs), []string{"refund.succeeded " + r2.PaymentID, "payment.refunded " + p.PaymentID}; !slices.Equal(got, want) {
			t.Fatalf("events %v, want %v", got, want)
		}
		evCheckSnapshot(t, evs[0], done, eventStatusSucceeded)
		evCheckSnapshot(t, evs[1], parent, eventStatusSucceeded)
		if evs[1].Payee != "bob" || evs[0].Payee != "alice" {
			t.Fatalf("payees %q, %q; want alice (the refund's), bob (the payment's)", evs[0].Payee, evs[1].Payee)
		}
		seen += len(evs)

		// Refusals: a refund of a refund, of an undecided or failed payment, of no payment.
		if _, _, err := admitPayment(ctx, s, rfRefund(done, "alice", 1)); !errors.Is(err, ErrRefundOfRefund) {
			t.Fatalf("refund of a refund: %v", err)
		}
		undecided := ctAdmit(t, s, ctPayment("alice", "bankA-1", "bankB-1", 10))
		if _, _, err := admitPayment(ctx, s, rfRefund(undecided, "bob", 1)); !errors.Is(err, ErrRefundNotSucceeded) {
			t.Fatalf("refund of an undecided payment: %v", err)
		}
		ctDecide(t, s, undecided.PaymentID, decisionAbort)
		if _, _, err := admitPayment(ctx, s, rfRefund(undecided, "bob", 1)); !errors.Is(err, ErrRefundNotSucceeded) {
			t.Fatalf("refund of a failed payment: %v", err)
		}
		rfWant(t, s, undecided.PaymentID, 0, 0)
		if _, _, err := admitPayment(ctx, s, rfRefund(ctPayment("alice", "bankA-1", "bankB-1", 5), "bob", 1)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("refund of no payment: %v", err)
		}
	})
}

// TestStoreRefundPresumedAbort: a presumed abort of an unknown id, and its adoption by a refund
// (whose admission a bank's GetDecision beat), never touch a reservation they did not make.
func TestStoreRefundPresumedAbort(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		evUsers(t, s, "alice:bankA-1", "bob:bankB-1")
		p := rfPaid(t, s, 100)
		held := ctAdmit(t, s, rfRefund(p, "bob", 30))
		rfWant(t, s, p.PaymentID, 0, 30)

		lost := rfRefund(p, "bob", 30)
		if _, err := s.Decide(ctx, lost.PaymentID, decisionAbort, 0, "presumed", true, s.Now(), decidedByGetDecision); err != nil {
			t.Fatal(err)
		}
		rfWant(t, s, p.PaymentID, 0, 30)
		adopted, err := s.AdoptUnadmitted(ctx, lost)
		if err != nil || adopted.RefundOf != p.PaymentID || adopted.Decision != decisionAbort {
			t.Fatalf("adopted %+v, %v", adopted, err)
		}
		rfWant(t, s, p.PaymentID, 0, 30)
		evs := evAll(t, s)
		if got, want := evTypes(evs[len(evs)-2:]), []string{"refund.created " + lost.PaymentID, "refund.failed " + lost.PaymentID}; !slices.Equal(got, want) {
			t.Fatalf("adoption's events %v, want %v", got, want)
		}
		// The adopted refund is decided: deciding it again moves nothing.
		ctDecide(t, s, lost.PaymentID, decisionCommit)
		rfWant(t, s, p.PaymentID, 0, 30)

		ctDecide(t, s, held.PaymentID, decisionCommit)
		rfWant(t, s, p.PaymentID, 30, 30)
	})
}

// TestStoreRefundsConcurrent: many partial refunds of one payment admitted at once never
// reserve more than its amount, and exactly as many fit as the amount allows.
func TestStoreRefundsConcurrent(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		p := rfPaid(t, s, 1000)
		rfConcurrent(t, []Store{s}, p, 30, 70, 14) // 14 * 70 = 980 fit, 16 do not
	})
}

// TestStorePGRefundsReplicas: two full refunds of one payment admitted at once by two
// replicas: exactly one is admitted; and many partial refunds on both never over-reserve.
func TestStorePGRefundsReplicas(t *testing.T) {
	t.Parallel()
	a, b, _ := ctReplicas(t, 10*time.Second, 10*time.Second)
	for round := range 10 {
		p := rfPaid(t, a, 500)
		rfConcurrent(t, []Store{a, b}, p, 2, 0, 1)
		if round == 0 {
			p := rfPaid(t, b, 1000)
			rfConcurrent(t, []Store{a, b}, p, 40, 90, 11)
		}
	}
}

// rfConcurrent admits n refunds of p (of amount each, 0 for all that is left) at once, spread
// over stores, and checks that exactly fit were admitted and that the reservation is theirs.
func rfConcurrent(t *testing.T, stores []Store, p paymentRecord, n int, amount int64, fit int) {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var admitted int
	var reserved int64
	start := make(chan struct{})
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			out, inserted, err := admitPayment(context.Background(), stores[i%len(stores)], rfRefund(p, "bob", amount))
			switch {
			case errors.Is(err, ErrRefundExceedsPayment):
			case err != nil:
				errs <- err
			case inserted:
				mu.Lock()
				admitted++
				reserved += out.Amount
				mu.Unlock()
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if admitted != fit {
		t.Fatalf("%d of %d refunds of %d admitted, want %d", admitted, n, amount, fit)
	}
	if _, got := rfState(t, stores[0], p.PaymentID); got != reserved || got > p.Amount {
		t.Fatalf("reserved %d of %d; the admitted refunds hold %d", got, p.Amount, reserved)
	}
}
