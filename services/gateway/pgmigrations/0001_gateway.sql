-- The gateway's store on PostgreSQL (see store_pg.go). Times are unix nanoseconds (bigint), as
-- in the SQLite store; those the store sets itself come from paygate_now_ns(), the database's
-- clock. Identifiers sort bytewise (COLLATE "C"), as in SQLite, so that pages follow the same
-- order on both stores. Payment ids are written in their canonical spelling from the start (the
-- SQLite store's second migration rewrites rows older than that; a PostgreSQL store has none).

-- The database's clock now (clock_timestamp(), not the transaction's start), in unix
-- nanoseconds.
CREATE FUNCTION paygate_now_ns() RETURNS bigint LANGUAGE sql VOLATILE PARALLEL SAFE AS
$$ SELECT (extract(epoch FROM clock_timestamp()) * 1000000000)::bigint $$;

CREATE TABLE users (
	username      text COLLATE "C" PRIMARY KEY,
	password_hash text NOT NULL,
	role          text NOT NULL DEFAULT 'customer',
	created_at    bigint NOT NULL
);

CREATE TABLE user_accounts (
	account_id text COLLATE "C" PRIMARY KEY,
	username   text COLLATE "C" NOT NULL REFERENCES users (username)
);
CREATE INDEX user_accounts_by_user ON user_accounts (username, account_id);

CREATE TABLE sessions (
	token_hash       bytea PRIMARY KEY,
	username         text COLLATE "C" NOT NULL REFERENCES users (username),
	cert_fingerprint text NOT NULL,
	created_at       bigint NOT NULL,
	expires_at       bigint NOT NULL,
	revoked_at       bigint
);
CREATE INDEX sessions_by_user ON sessions (username, expires_at);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);

-- A payment belongs to owner (a lease, see leases) until it is completed; '' is nobody's (handed
-- back, or a presumed abort recorded for an id never admitted).
CREATE TABLE payments (
	payment_id      text COLLATE "C" PRIMARY KEY,
	username        text COLLATE "C" NOT NULL,
	from_account    text COLLATE "C" NOT NULL,
	to_account      text COLLATE "C" NOT NULL,
	amount          bigint NOT NULL CHECK (amount >= 0),
	currency        text NOT NULL,
	description     text NOT NULL DEFAULT '',
	fingerprint     bytea NOT NULL,
	decision        smallint NOT NULL DEFAULT 0 CHECK (decision IN (0, 1, 2)),
	failure_reason  integer NOT NULL DEFAULT 0,
	failure_message text NOT NULL DEFAULT '',
	presumed        boolean NOT NULL DEFAULT false,
	completed       boolean NOT NULL DEFAULT false,
	created_at      bigint NOT NULL,
	deadline        bigint NOT NULL,
	decided_at      bigint,
	completed_at    bigint,
	owner           text COLLATE "C" NOT NULL DEFAULT ''
);
CREATE INDEX payments_by_user ON payments (username, created_at DESC, payment_id DESC);
-- Unfinished payments: a process's own (Unfinished), anyone's (ClaimOrphans), and the decided
-- ones by account (Unsettled). They are few: only payments in flight or stuck at a bank.
CREATE INDEX payments_unfinished ON payments (deadline, payment_id) WHERE NOT completed;
CREATE INDEX payments_unfinished_by_owner ON payments (owner, deadline, payment_id) WHERE NOT completed;
CREATE INDEX payments_unsettled_to ON payments (to_account) WHERE NOT completed AND decision <> 0;
CREATE INDEX payments_unsettled_from ON payments (from_account) WHERE NOT completed AND decision <> 0;

CREATE TABLE secrets (
	name       text PRIMARY KEY,
	value      bytea NOT NULL,
	created_at bigint NOT NULL
);

-- One row per gateway process (a lease): live while expires_at is after the database's clock.
CREATE TABLE leases (
	owner      text COLLATE "C" PRIMARY KEY,
	expires_at bigint NOT NULL,
	started_at bigint NOT NULL
);
CREATE INDEX leases_by_expiry ON leases (expires_at);

-- Login and registration throttles shared by the replicas: tokens left at time at, of a budget
-- of burst refilled at one every every_ns (as written by the last attempt).
CREATE TABLE throttle_buckets (
	scope    text COLLATE "C" NOT NULL,
	key      text COLLATE "C" NOT NULL,
	tokens   double precision NOT NULL,
	at       bigint NOT NULL,
	burst    integer NOT NULL,
	every_ns bigint NOT NULL,
	PRIMARY KEY (scope, key)
);
CREATE INDEX throttle_buckets_by_age ON throttle_buckets (at);

-- Open WatchPayments streams, counted per user across the replicas while their owner's lease
-- is live.
CREATE TABLE streams (
	id        text PRIMARY KEY,
	username  text COLLATE "C" NOT NULL,
	owner     text COLLATE "C" NOT NULL,
	opened_at bigint NOT NULL
);
CREATE INDEX streams_by_user ON streams (username);
CREATE INDEX streams_by_owner ON streams (owner);
