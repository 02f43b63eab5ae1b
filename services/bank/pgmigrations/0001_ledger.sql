-- The bank's ledger on PostgreSQL: the schema of the SQLite ledger's migrations, as it stands
-- after all of them. Money is bigint minor units; times are bigint Unix nanoseconds (UTC), as in
-- SQLite, so that both stores keep the same instants. Never edit a migration that has shipped:
-- existing ledgers have run it; add a new file.

CREATE TABLE meta (
	key   text PRIMARY KEY,
	value text NOT NULL
);

CREATE TABLE accounts (
	id             text COLLATE "C" PRIMARY KEY,
	holder         text NOT NULL DEFAULT '',
	currency       text NOT NULL CHECK (length(currency) = 3),
	balance        bigint NOT NULL CHECK (balance >= 0),
	held           bigint NOT NULL DEFAULT 0 CHECK (held >= 0 AND held <= balance),
	pending_credit bigint NOT NULL DEFAULT 0 CHECK (pending_credit >= 0),
	closed         boolean NOT NULL DEFAULT false
);

-- legs is the JSON array of the transaction's legs in the order given at prepare ('[]' for a
-- tombstone); decision_proof is the coordinator's proof sent with the prepare (empty for a
-- tombstone).
CREATE TABLE transactions (
	id             text COLLATE "C" PRIMARY KEY,
	state          text NOT NULL CHECK (state IN ('PREPARED', 'COMMITTED', 'ABORTED')),
	reason         text NOT NULL DEFAULT '',
	message        text NOT NULL DEFAULT '',
	deadline       bigint,
	created_at     bigint NOT NULL,
	updated_at     bigint NOT NULL,
	legs           jsonb NOT NULL DEFAULT '[]',
	decision_proof bytea NOT NULL DEFAULT '\x',
	CHECK (state = 'ABORTED' OR reason = '')
);

CREATE INDEX transactions_prepared_by_deadline ON transactions (deadline) WHERE state = 'PREPARED';

-- One-time enrollment codes, stored only as hashes (see enroll.go).
CREATE TABLE enrollment_codes (
	account_id  text PRIMARY KEY REFERENCES accounts (id),
	code_hash   bytea NOT NULL,
	created_at  bigint NOT NULL,
	expires_at  bigint NOT NULL,
	failures    integer NOT NULL DEFAULT 0,
	redeemed_by text,
	redeemed_at bigint
);
