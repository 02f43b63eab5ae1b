// Package client is the Go client of paygate: it signs in, pays, and reads balances and
// history at the paygate gateway, over mutual TLS, and keeps a durable offline queue so that
// a payment made while the gateway is unreachable is delivered later, exactly once, and its
// outcome reported.
//
// # Connecting
//
// The gateway's API requires a client certificate signed by the deployment's authority. The
// files `paygate certs` (or `paygate dev`, under .paygate/certs) makes are read by WithTLSDir:
//
//	c, err := client.New("127.0.0.1:8443", client.WithTLSDir(".paygate/certs"))
//	if err != nil { ... }
//	defer c.Close()
//	if _, err := c.Login(ctx, "alice", "alice-pass-123"); err != nil { ... }
//
// The token that Login returns is bound to the certificate that logged in; keep it with
// Client.Token and pass it back with WithToken and WithUsername in a later process.
//
// # Paying exactly once
//
// Every payment has a payment_id chosen by the client: Pay generates a UUIDv7 (time ordered)
// before the first attempt. Failures that leave the outcome unknown (the gateway unreachable,
// a deadline passed, a bank briefly unavailable, the payment still in progress) are retried
// with the same id after a jittered exponential backoff (RetryPolicy); the gateway applies an
// id at most once and answers a retry with the stored outcome (Result.Replayed). Each attempt
// carries its number in the Paygate-Attempt header, which the gateway logs as attempt (and
// retry=true from the second).
//
// Failures that cannot change with a retry end the payment with StatusFailed and the reason:
// a refusal by a bank (insufficient_funds, unknown_account, ...) and the gateway's
// InvalidArgument, PermissionDenied, AlreadyExists, NotFound and FailedPrecondition errors.
// Unauthenticated (an expired or revoked token) is not a failure of the payment: the payment
// waits, and ErrLoginRequired asks the user to log in again.
//
// # The offline queue
//
// With WithQueue(dir), Pay is a write-ahead log: it records the payment in dir/queue.db, a
// SQLite file in WAL mode with synchronous=FULL, before the first attempt, so the payment
// survives the process being killed at any moment. A background sender, started by New and
// stopped by Close, then
//
//   - sends each source account's payments one at a time, in the order they were queued
//     (different accounts in parallel), so a later payment never overtakes an earlier one from
//     the same account;
//   - records each outcome before reporting it, and never sends a settled payment again;
//   - on a retryable failure, waits for the payment's backoff; when the gateway cannot be
//     reached at all, probes its health service with a growing period (up to
//     RetryPolicy.MaxBackoff) and resumes when it answers;
//   - pauses on ErrLoginRequired until Login or SetToken.
//
// Pay waits for the outcome up to WithPayWait and otherwise returns StatusQueued with the id;
// when the gateway cannot be reached it returns StatusQueued at once. Outcomes of payments that
// no Pay call waited for go to the WithOutcomes callback, and stay in the queue (Queue.Recent,
// Queue.Unreported) so that a later process can tell the user.
//
// Only one process sends a given queue: the sender takes an advisory lock on dir/sender.lock
// (flock; released by the kernel when the process dies, even by SIGKILL). Other processes may
// add payments to the same queue and read it; the lock holder picks them up within a second.
//
// SQLite was chosen over an append-only file of our own because it gives atomic,
// durable updates of one record (attempt counts, outcomes), safe concurrent access by several
// processes, and queries for listing, all already used and tested by the servers
// (package internal/sqlitedb).
//
// # Reading
//
// Balance returns every account of the user at every bank with totals per currency; History
// pages through the user's payments, newest first (AllHistory iterates over all of them);
// GetPayment returns one; Watch streams status changes as they happen. A user only ever sees
// their own payments.
package client
