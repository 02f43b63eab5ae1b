-- The payments' event log (see eventLog in store.go and store_events.go): one row per change of
-- a payment, appended in the statement or transaction that makes the change. A database from
-- before gets the table empty: payments stored before it have no events.
--
-- id is taken at insert, and replicas commit in any order, so id is not the order readers can
-- see rows in. seq is: rows are inserted with seq NULL, and SequenceEvents, one run at a time
-- (an advisory lock), gives the committed rows without a seq the next values of
-- event_counter.last, in id order, in one transaction. Readers only return rows with a seq.
CREATE TABLE events (
	id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	seq        bigint UNIQUE,
	type       text NOT NULL,
	payment_id text COLLATE "C" NOT NULL,
	payer      text COLLATE "C" NOT NULL,
	payee      text COLLATE "C" NOT NULL,
	created_at bigint NOT NULL,
	snapshot   jsonb NOT NULL
);
-- The rows SequenceEvents has to number (few at any time).
CREATE INDEX events_unsequenced ON events (id) WHERE seq IS NULL;
CREATE INDEX events_by_payer ON events (payer, seq) WHERE seq IS NOT NULL;
CREATE INDEX events_by_payee ON events (payee, seq) WHERE seq IS NOT NULL;

-- The last seq given, in one row: a seq is never reused, even once every event was pruned.
CREATE TABLE event_counter (
	one  boolean PRIMARY KEY DEFAULT true CHECK (one),
	last bigint NOT NULL
);
INSERT INTO event_counter (last) VALUES (0);
