// Package crashpoint makes a process die abruptly at a named step of the payment protocol, so
// that tests can prove recovery from a crash at exactly that step.
//
// Crash points exist only in binaries built with the "crashpoints" build tag (the end-to-end
// tests build paygate that way). In such a binary, the environment variable PAYGATE_CRASH_AT
// names the point, optionally followed by "@N" to crash on the N-th hit instead of the first
// (e.g. "gateway.after_decision" or "bank.prepare.after_persist@3"). At that point the process
// sends itself SIGKILL: no deferred function runs, no buffer is flushed, no goroutine finishes,
// exactly as if the machine had lost power after the durable writes made so far.
//
// Some points need a write to be lost, not merely maybe lost: the process must die after a
// write ran and before it is durable. Hold marks a context for such a point, on its configured
// hit; a store commit that carries a write made under a marked context waits (Held) instead of
// committing, and HitHeld, reached once the work that overlaps the sync is done, kills the
// process. The write is then in no committed transaction, so a restart cannot find it.
//
// Trace records events for tests to read back (PAYGATE_TRACE_FILE).
//
// In ordinary builds Hit, Hold, Held, HitHeld and Trace are empty (Enabled is false and callers guard
// on it) and PAYGATE_CRASH_AT is ignored: no production configuration can enable a crash point.
package crashpoint

// The named steps. A name says which process dies and after what.
const (
	// GatewayAfterAdmit: the payment row (undecided) is durable; the banks have voted meanwhile
	// (the row is synced while they prepare), nothing is decided.
	GatewayAfterAdmit = "gateway.after_admit"
	// GatewayAfterInsert: the payment row's insert ran, its commit is held (the row is never
	// durable), and no bank was asked to prepare. A hold point (Hold, HitHeld).
	GatewayAfterInsert = "gateway.after_insert"
	// GatewayVotesBeforeAdmit: every participant voted (the banks hold prepared transactions)
	// while the commit of the payment row is held: the row is never durable, so the restarted
	// gateway has no record of the payment. A hold point (Hold, HitHeld).
	GatewayVotesBeforeAdmit = "gateway.votes_before_admit"
	// GatewayAfterPrepare: every participant voted; no decision is recorded.
	GatewayAfterPrepare = "gateway.after_prepare"
	// GatewayAfterDecision: the decision is durable; no commit or abort was sent.
	GatewayAfterDecision = "gateway.after_decision"
	// GatewayAfterFirstPhase2: one participant acknowledged commit or abort; others were not told.
	// Phase two runs beside the answer to the client, which may have been sent already.
	GatewayAfterFirstPhase2 = "gateway.after_first_phase2"
	// GatewayBeforeReply: the decision is durable and phase two has started; the client has no
	// answer yet.
	GatewayBeforeReply = "gateway.before_reply"

	// BankPrepareBeforePersist: a prepare arrived; nothing is recorded.
	BankPrepareBeforePersist = "bank.prepare.before_persist"
	// BankPrepareAfterPersist: the hold or pending credit is durable; the vote was not sent.
	BankPrepareAfterPersist = "bank.prepare.after_persist"
	// BankCommitBeforePersist: a commit arrived for a prepared transaction; nothing is applied.
	BankCommitBeforePersist = "bank.commit.before_persist"
	// BankCommitAfterPersist: the commit is applied durably; the acknowledgement was not sent.
	BankCommitAfterPersist = "bank.commit.after_persist"
	// BankAbortAfterPersist: the abort is applied durably; the acknowledgement was not sent.
	BankAbortAfterPersist = "bank.abort.after_persist"
)

// All lists every crash point, for tests that cover them all.
var All = []string{
	GatewayAfterInsert, GatewayVotesBeforeAdmit, GatewayAfterAdmit, GatewayAfterPrepare, GatewayAfterDecision, GatewayAfterFirstPhase2, GatewayBeforeReply,
	BankPrepareBeforePersist, BankPrepareAfterPersist, BankCommitBeforePersist, BankCommitAfterPersist, BankAbortAfterPersist,
}
