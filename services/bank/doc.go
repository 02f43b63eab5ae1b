// Package bank is a paygate bank: the ledger of one bank's accounts and the participant side of
// paygate's two-phase commit, served as paygate.bank.v1.BankService.
//
// # Accounts
//
// A bank owns the accounts whose id starts with its name: an account id is "<bank>-<number>", the
// bank name being everything before the last '-' (bank "bank1" owns "bank1-1001", bank "bank-a"
// owns "bank-a-7"). Each account has a currency and three amounts in the currency's minor units:
// the balance, the held amount (sum of the debits of prepared transactions) and the pending credit
// (sum of the credits of prepared transactions). What the account can pay is balance − held; a
// pending credit is not spendable until it is committed. The ledger keeps 0 ≤ held ≤ balance at
// all times, under any concurrency: every change happens in one transaction of the ledger's store
// (on SQLite's single writer connection, or on PostgreSQL with the accounts locked in id order),
// and CHECK constraints refuse anything else as a last line of defence.
//
// The bank uses its ledger through LedgerStore, which two stores provide with one contract:
// Ledger, a SQLite file (the default), and PGLedger, a PostgreSQL database of the bank's own
// (Config.DatabaseURL).
//
// Accounts are imported from a fixtures file (see ParseAccounts) on the first start only; from
// then on the ledger is the truth and the fixtures file is not read again. The import records
// the sum of the balances as the ledger's initial total.
//
// # Operators
//
// The gateway's admins open accounts (OpenAccount: a zero balance, the next number, idempotent
// by request id) and close empty ones (CloseAccount), and move money across the system's edge
// with journaled entries (PostEntry: a deposit or a withdrawal, idempotent by entry id, written
// with the balance change in one write). Summary reads the totals the money invariants are
// checked against, in one snapshot: across every bank, once no transaction is prepared, the
// balances add up to the initial totals plus the deposits minus the withdrawals.
//
// # The participant's state machine
//
// A transaction, identified by the coordinator's transaction id, is in one of three states at a
// bank:
//
//	            Prepare: every leg can be applied
//	(unknown) ───────────────────────────────────▶ PREPARED ──Commit──▶ COMMITTED
//	    │                                             │
//	    │ Prepare: a leg cannot be applied,           │ Abort
//	    │ or the deadline has passed (vote NO)        ▼
//	    ├───────────────────────────────────────▶ ABORTED
//	    │ Abort (tombstone, no legs)                  ▲
//	    └─────────────────────────────────────────────┘
//
// Prepare records the transaction and its legs, a hold on every debited account and a pending
// credit on every credited account, and makes all of it durable before it votes YES. A bank never
// leaves PREPARED on its own: only the coordinator's Commit or Abort moves it on (a bank in doubt
// asks the coordinator for the decision; see PreparedBefore).
//
// A NO vote is recorded too, as ABORTED with the reason, so that a retried prepare gets the same
// answer and a Commit that should never come is refused. An Abort of a transaction the bank has
// never seen records an ABORTED tombstone with no legs, so that a prepare arriving after the
// coordinator gave up votes NO (ALREADY_ABORTED) instead of placing a hold nobody will release.
//
// Every operation is idempotent: Prepare with the same legs returns the recorded vote, Commit of a
// committed and Abort of an aborted transaction succeed without changing anything. The two
// crossings, Commit after Abort and Abort after Commit, are refused (ErrAlreadyAborted,
// ErrAlreadyCommitted) and logged at ERROR: they mean the coordinator broke the protocol.
// Prepare with the same id but different legs votes NO (CONFLICT) and records nothing.
package bank
