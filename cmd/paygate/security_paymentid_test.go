package main

import (
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
)

// paymentIDCases returns TestSecurityMatrix's cases for one payment per payment_id, however it
// is spelled: a UUID (or ULID) sent in one case and retried in another is one payment, paid
// once, and every API finds it under either spelling.
func paymentIDCases(t *testing.T, m *secMatrix) []secCase {
	// pairedOnce pays 1.00 from alice to bob under first, then sends the same payment under
	// second; it checks the second is a replay, that both spellings find the payment, and that
	// exactly 1.00 moved. It restores the balances afterwards with a payment back, so the
	// matrix's audit sees the ledgers as they were.
	pairedOnce := func(t *testing.T, first, second string) {
		t.Helper()
		before := audit(t, m.c)
		r1, err := pay(m.ctx(), m.alice, first, "bank1-1001", "bank2-2002", 100)
		if err != nil || r1.GetPayment().GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
			t.Fatalf("first spelling %s: %v, %v", first, r1, err)
		}
		r2, err := pay(m.ctx(), m.alice, second, "bank1-1001", "bank2-2002", 100)
		if err != nil {
			t.Fatalf("second spelling %s: %v", second, err)
		}
		if !r2.GetReplayed() || r2.GetPayment().GetPaymentId() != r1.GetPayment().GetPaymentId() {
			t.Fatalf("second spelling %s = replayed %v, id %s; want a replay of %s",
				second, r2.GetReplayed(), r2.GetPayment().GetPaymentId(), r1.GetPayment().GetPaymentId())
		}
		for _, id := range []string{first, second} {
			g, err := m.alice.Payments.GetPayment(m.ctx(), connect.NewRequest(&gatewayv1.GetPaymentRequest{PaymentId: id}))
			if err != nil || g.Msg.GetPayment().GetPaymentId() != r1.GetPayment().GetPaymentId() {
				t.Fatalf("GetPayment(%s) = %v, %v", id, g, err)
			}
		}
		if _, err := m.c.WaitSettled(30 * time.Second); err != nil {
			t.Fatal(err)
		}
		after := audit(t, m.c)
		d := delta(before, after)
		if d["bank1-1001"] != -100 || d["bank2-2002"] != 100 || len(d) != 2 {
			t.Fatalf("the two spellings moved %v; want 1.00 from bank1-1001 to bank2-2002, once", d)
		}
		// Pay it back, so that the matrix's audit finds the ledgers unchanged.
		if r, err := pay(m.ctx(), m.bob, newID(), "bank2-2002", "bank1-1001", 100); err != nil ||
			r.GetPayment().GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
			t.Fatalf("paying back: %v, %v", r, err)
		}
		if _, err := m.c.WaitSettled(30 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	return []secCase{
		{"payment_id in lower then upper case", func(t *testing.T) {
			id := newID()
			pairedOnce(t, id, strings.ToUpper(id))
		}},
		{"payment_id in upper then mixed case", func(t *testing.T) {
			id := strings.ToUpper(newID())
			mixed := []byte(strings.ToLower(id))
			for i := 0; i < len(mixed); i += 2 {
				mixed[i] = strings.ToUpper(string(mixed[i]))[0]
			}
			pairedOnce(t, id, string(mixed))
		}},
		{"ULID in upper then lower case", func(t *testing.T) {
			id := newULID()
			pairedOnce(t, id, strings.ToLower(id))
		}},
		{"another user's payment under another spelling", func(t *testing.T) {
			_, err := m.bob.Payments.GetPayment(m.ctx(), connect.NewRequest(&gatewayv1.GetPaymentRequest{PaymentId: strings.ToUpper(m.alicePay)}))
			wantCode(t, err, connect.CodeNotFound, "payment_not_found")
		}},
	}
}

// newULID returns a random ULID in upper case.
func newULID() string {
	const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
	var b [26]byte
	rand.Read(b[:])
	for i := range b {
		b[i] = crockford[b[i]%32]
	}
	b[0] = '0' // a ULID's first digit is at most 7
	return string(b[:])
}
