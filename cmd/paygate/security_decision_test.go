package main

import (
	"crypto/rand"
	"testing"
	"time"

	"connectrpc.com/connect"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/internal/rpcerr"
)

// decisionCases returns TestSecurityMatrix's cases for GetDecision: a bank learns the outcome
// of, and can have a presumed abort recorded for, only the transactions the gateway sent it (it
// presents the decision proof that came with the prepare). Everything else is refused the same
// way, whether the id exists or not, and records nothing.
func decisionCases(t *testing.T, m *secMatrix) []secCase {
	bank3 := loadPair(t, m.c, "bank-bank3")
	bank1 := loadPair(t, m.c, "bank-bank1")
	ask := func(t *testing.T, cr credentials, id string, proof []byte) (*connect.Response[gatewayv1.GetDecisionResponse], error) {
		t.Helper()
		_, _, _, co := m.e.gatewayClients(cr)
		return co.GetDecision(m.ctx(), connect.NewRequest(&gatewayv1.GetDecisionRequest{TransactionId: id, Proof: proof}))
	}
	forged := make([]byte, 32)
	rand.Read(forged)
	return []secCase{
		{"bank asks about another bank's payment", func(t *testing.T) {
			// alice's payment is bank1 → bank2: bank3 takes no part.
			_, err := ask(t, credentials{cert: bank3}, m.alicePay, nil)
			wantCode(t, err, connect.CodePermissionDenied, "not_a_participant")
		}},
		{"bank asks about another bank's payment with a forged proof", func(t *testing.T) {
			_, err := ask(t, credentials{cert: bank3}, m.alicePay, forged)
			wantCode(t, err, connect.CodePermissionDenied, "not_a_participant")
		}},
		{"bank asks about an id no client has sent yet", func(t *testing.T) {
			// A presumed abort must not be recorded: the id stays free, and a payment made with
			// it afterwards succeeds.
			id := newID()
			for _, proof := range [][]byte{nil, forged} {
				_, err := ask(t, credentials{cert: bank1}, id, proof)
				wantCode(t, err, connect.CodePermissionDenied, "not_a_participant")
			}
			r, err := pay(m.ctx(), m.alice, id, "bank1-1001", "bank2-2002", 100)
			if err != nil || r.GetPayment().GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED || r.GetReplayed() {
				t.Fatalf("paying with the id a bank asked about: %v, %v; want a fresh success", r, err)
			}
			// Pay it back, so that the matrix's audit finds the ledgers unchanged.
			if r, err := pay(m.ctx(), m.bob, newID(), "bank2-2002", "bank1-1001", 100); err != nil ||
				r.GetPayment().GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
				t.Fatalf("paying back: %v, %v", r, err)
			}
			if _, err := m.c.WaitSettled(30 * time.Second); err != nil {
				t.Fatal(err)
			}
		}},
		{"the two refusals look the same", func(t *testing.T) {
			_, known := ask(t, credentials{cert: bank3}, m.alicePay, nil)
			_, unknown := ask(t, credentials{cert: bank3}, newID(), nil)
			if connect.CodeOf(known) != connect.CodeOf(unknown) || rpcerr.Reason(known) != rpcerr.Reason(unknown) {
				t.Fatalf("known id: %v; unknown id: %v; want the same refusal", known, unknown)
			}
		}},
		{"a participant without a proof learns only its own payment", func(t *testing.T) {
			// Transactions prepared before proofs existed carry none: a participant is still
			// answered about a payment the gateway holds.
			r, err := ask(t, credentials{cert: bank1}, m.alicePay, nil)
			if err != nil || r.Msg.GetDecision() != gatewayv1.Decision_DECISION_COMMIT {
				t.Fatalf("bank1 about its own payment: %v, %v; want COMMIT", r, err)
			}
		}},
	}
}
