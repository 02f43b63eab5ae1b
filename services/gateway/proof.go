package gateway

import (
	"crypto/hmac"
	"crypto/sha256"
)

// A decision proof is what lets a bank ask CoordinatorService.GetDecision about a transaction:
// an HMAC-SHA256, under a key only the gateway's store holds, of the transaction id and the
// name of the bank the prepare was sent to. The coordinator puts it in every prepare; the bank
// stores it with the transaction and presents it back. A bank can therefore learn the outcome
// of, and have a presumed abort recorded for, only the transactions the coordinator sent it:
// not another bank's, and not an id a client has not sent yet.

// proofKeyName is the store's secret that keys decision proofs. Every replica on one store
// shares it.
const proofKeyName = "decision_proof_key"

// decisionProof is the proof that transaction txnID was sent to bank.
func decisionProof(key []byte, txnID, bank string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("paygate decision proof v1\x00"))
	m.Write([]byte(txnID))
	m.Write([]byte{0})
	m.Write([]byte(bank))
	return m.Sum(nil)
}

// validProof says whether proof is the decision proof of txnID for bank.
func validProof(key []byte, txnID, bank string, proof []byte) bool {
	return len(proof) == sha256.Size && hmac.Equal(proof, decisionProof(key, txnID, bank))
}
