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
// # Several gateway replicas
//
// The gateway may run as several replicas on one database: any replica takes any call, a token
// from one works at all of them, and a payment_id names one payment at all of them. Give the
// client every replica's address, in order of preference, separated by commas (or NewMulti
// with a slice):
//
//	c, err := client.New("10.0.0.1:8443,10.0.0.2:8443", client.WithTLSDir(".paygate/certs"))
//
// Each call is made at one address at a time, by these rules:
//
//   - It starts with the address that answered last; at first, with the first one. After
//     WithFailback (default DefaultFailback, a minute) with another address, it starts with
//     the first ones again, so the order of the list is a preference.
//   - It moves on to the next address when this one did not answer: the connection was
//     refused, reset or lost, the TLS handshake failed (also with a server that is not the
//     gateway, which is sent nothing), an error without a paygate reason (Unavailable from a
//     proxy or the HTTP client), no connection within WithConnectTimeout (default 5s; the
//     last address has the rest of the call's time), or the replica is shutting down
//     (Unavailable with reason "shutting_down").
//   - An answer ends the call, an error with a paygate reason included: InvalidArgument,
//     PermissionDenied, FailedPrecondition, NotFound, Unauthenticated, Unavailable
//     "storage_unavailable" and the rest are returned (for Pay, handled as in "Paying exactly
//     once"), not asked again elsewhere: the other replicas share the database and would
//     answer the same.
//   - ExecutePayment, the reads, Logout and health checks go to the next address even after
//     their request reached one that then failed: the payment_id makes a payment sent again
//     the same payment, which the next replica answers with its stored outcome
//     (Result.Replayed), so there is still one outcome. Login and Register are not
//     idempotent: they move on only if their request was not sent.
//   - Each address is tried at most once per call, and WithTimeout (or the context) bounds
//     the call at all its addresses together. When no address answers, the error is
//     Unavailable without a reason and names every address's failure; Pay retries it like an
//     unreachable gateway, and the queue's sender probes the addresses' health until one
//     answers.
//   - Every call counts as an attempt of its payment, at whichever address: Result.Attempts
//     and the Paygate-Attempt header count them all.
//   - Watch reconnects at once to the next address when its stream breaks because its
//     address stopped answering or its replica shuts down; after every address failed, it
//     waits for the backoff. It resumes after the last event it yielded: nothing is lost or
//     repeated across restarts and failovers.
//
// Addresses lists the client's addresses and ActiveAddress says where its next call starts.
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
// pages through the user's payments, newest first (AllHistory iterates over all of them), or
// with HistoryQuery.Received those others made to the user's accounts (AllReceived);
// GetPayment returns one; Watch streams status changes as they happen. ListEvents pages
// through the user's events (every change of the payments they pay and of those paid to
// them, each with a Seq), and WatchFrom streams them from a Seq on, resuming after the last
// one yielded when it reconnects. A user only ever sees their own payments and those paid to
// them (without the payer's username).
//
// # Operators
//
// An admin signs in with LoginWithCode, giving the current code of its authenticator app
// (TOTP), and presents an admin certificate (spiffe://paygate/admin/<name>, made by
// `paygate certs --admins NAME`):
//
//	c, err := client.New("127.0.0.1:8443", client.WithTLSFiles("certs/ca.pem", "certs/admin-ops.pem", "certs/admin-ops-key.pem"))
//	if err != nil { ... }
//	s, err := c.LoginWithCode(ctx, "ops", password, code)
//	// s.Role == client.RoleAdmin, s.SecondFactor == true
//	users, err := c.Admin().ListUsers(ctx, connect.NewRequest(&gatewayv1.ListUsersRequest{}))
//
// Admin returns the gateway's AdminService with the client's token, timeout and failover.
// ChangePassword replaces the signed-in user's password; a user whose password an admin set
// (Session.PasswordChangeRequired) must call it before anything else.
package client
