-- The admin interface (see store_admin_pg.go): users that can be disabled, with an initial
-- password to change and an admin's TOTP second factor; sessions that passed it; who decided
-- each payment (gatewayv1.DecidedBy; 0 for decisions recorded before it was kept); the
-- hash-chained audit log of admin actions (see auditlog.go); each payment's two-phase trail, in
-- the order recorded; and an index to page through every user's payments, newest first.
-- Every added column has a constant default: adding it rewrites no rows.

ALTER TABLE users
	ADD COLUMN disabled             boolean NOT NULL DEFAULT false,
	ADD COLUMN must_change_password boolean NOT NULL DEFAULT false,
	ADD COLUMN totp_secret          text NOT NULL DEFAULT '',
	ADD COLUMN totp_last_step       bigint NOT NULL DEFAULT 0;

ALTER TABLE sessions ADD COLUMN second_factor boolean NOT NULL DEFAULT false;

ALTER TABLE payments ADD COLUMN decided_by integer NOT NULL DEFAULT 0;
-- SearchPayments' order. Building it on a large payments table takes a while and holds off
-- payment writes meanwhile: on such a database, build it first without blocking them,
--   CREATE INDEX CONCURRENTLY payments_by_created ON payments (created_at DESC, payment_id DESC);
-- and this migration keeps it.
CREATE INDEX IF NOT EXISTS payments_by_created ON payments (created_at DESC, payment_id DESC);

-- One row per admin action or refused admin attempt. seq is 1, 2, 3, … with no gaps: appends
-- take a transaction advisory lock (pgAuditLockClass) and then read the last row, so that the
-- replicas append one after the other and the chain never forks. prev_hash is the previous
-- row's hash (empty for the first).
CREATE TABLE audit_log (
	seq        bigint PRIMARY KEY,
	at         bigint NOT NULL,
	actor      text COLLATE "C" NOT NULL,
	actor_cert text NOT NULL,
	peer       text NOT NULL,
	action     text NOT NULL,
	target     text NOT NULL,
	outcome    text NOT NULL,
	reason     text NOT NULL,
	request_id text NOT NULL,
	before     text NOT NULL,
	after      text NOT NULL,
	prev_hash  bytea NOT NULL,
	hash       bytea NOT NULL
);
CREATE INDEX audit_log_by_actor ON audit_log (actor, seq);

-- Each payment's two-phase trail; id orders it.
CREATE TABLE payment_trail (
	id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	payment_id text COLLATE "C" NOT NULL,
	at         bigint NOT NULL,
	kind       integer NOT NULL,
	bank       text NOT NULL,
	vote       text NOT NULL,
	decision   text NOT NULL,
	decided_by integer NOT NULL,
	attempt    integer NOT NULL,
	replica    text NOT NULL,
	detail     text NOT NULL
);
CREATE INDEX payment_trail_by_payment ON payment_trail (payment_id, id);
