-- The operators' work, as the SQLite ledger's fourth migration has it: the journal of deposits
-- and withdrawals (entries, in seq order, each written with the balance change it makes), the
-- requests that opened accounts (replays of a request_id find their account), and the initial
-- total that conservation is checked against: ImportAccounts records it; a ledger that has
-- accounts already gets the sum of its balances now, since no entry existed before.

CREATE TABLE entries (
	entry_id      text COLLATE "C" PRIMARY KEY,
	seq           bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
	kind          text NOT NULL CHECK (kind IN ('DEPOSIT', 'WITHDRAWAL')),
	account_id    text COLLATE "C" NOT NULL REFERENCES accounts (id),
	amount        bigint NOT NULL CHECK (amount > 0),
	currency      text NOT NULL,
	actor         text NOT NULL,
	reason        text NOT NULL,
	balance_after bigint NOT NULL CHECK (balance_after >= 0),
	created_at    bigint NOT NULL
);

CREATE INDEX entries_by_account ON entries (account_id, seq);

CREATE TABLE account_requests (
	request_id text COLLATE "C" PRIMARY KEY,
	account_id text COLLATE "C" NOT NULL UNIQUE REFERENCES accounts (id),
	holder     text NOT NULL,
	currency   text NOT NULL,
	created_at bigint NOT NULL
);

INSERT INTO meta (key, value) SELECT 'initial', coalesce(sum(balance), 0)::text FROM accounts;
