// Package gateway is paygate's payment gateway: it signs users in, authorizes every call,
// coordinates two-phase commit across the banks, aggregates balances, and recovers unfinished
// payments after a crash.
//
// # Payments
//
// ExecutePayment admits a payment by inserting its row, keyed by the client's payment_id. The
// coordinator then asks each bank involved to prepare, in parallel (one call per bank; a payment
// within one bank is one call with two legs) while the row is being synced; the decision waits
// for both, so the row is durable before anything is decided. When every bank voted
// YES before the payment's deadline, the coordinator records COMMIT; otherwise ABORT with the
// first reason. Recording the decision is a compare-and-set on the payment row and is the commit
// point: once written it never changes, whoever wrote it (the request, the timeout monitor, or a
// bank's GetDecision). Only then are commits or aborts sent, and the client is answered with
// SUCCEEDED or FAILED. A bank that does not acknowledge phase two is retried by the recovery loop
// with backoff until it does, across restarts.
//
// The states of a payment row:
//
//	admitted (decision none) ──all YES──▶ COMMIT ──all banks acked──▶ COMMIT, completed
//	        │                 └─NO/error/timeout─▶ ABORT ──all banks acked──▶ ABORT, completed
//	        └── deadline passed, or a bank asked GetDecision ──▶ ABORT (presumed)
//
// # Recovery
//
// The recovery loop runs at start and then every interval: undecided payments past their
// deadline are aborted; undecided payments that nobody in this process is driving (admitted
// before a restart) are resumed from phase one, which the banks answer idempotently; decided
// payments that are not completed get phase two again.
//
// # Idempotency
//
// A payment_id with the same parameters returns the stored outcome marked replayed; with other
// parameters it is refused with ALREADY_EXISTS (reason payment_id_reused). A duplicate that
// arrives while the first request is still deciding waits for the outcome until shortly before
// its own deadline and then gets ABORTED (reason payment_in_progress), which is safe to retry.
// Outcomes are kept
// for as long as the store is: payment rows are never deleted, so a payment_id can never be
// applied twice, however late the retry.
//
// # Refunds
//
// A refund (RefundPayment) is a payment from the refunded payment's payee back to its payer,
// run by the same coordinator; the store admits it only if it fits in what is left of the
// payment, reserving its amount in the admission's write, and its decision moves or gives back
// that reservation in the decision's write. See refunds.go.
package gateway
