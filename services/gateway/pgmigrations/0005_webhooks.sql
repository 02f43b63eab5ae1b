-- Webhooks (see webhookStore in store_webhooks.go): users' endpoints, with the lease of the
-- worker sending to one (lease_owner, lease_until, by the database's clock: one delivery at a
-- time per endpoint, on any replica); one delivery per endpoint and event, its body built once
-- at fan-out; every attempt; and the fan-out cursor, the last event seq fanned out, in one row
-- that the fan-out locks (replicas take turns), starting at the log's end. Times are unix
-- nanoseconds, 0 for none.
CREATE TABLE webhook_endpoints (
	id                   text COLLATE "C" PRIMARY KEY,
	username             text COLLATE "C" NOT NULL,
	url                  text NOT NULL,
	event_types          text NOT NULL,
	secret               text NOT NULL,
	previous_secret      text NOT NULL DEFAULT '',
	previous_expires_at  bigint NOT NULL DEFAULT 0,
	status               integer NOT NULL DEFAULT 1,
	disabled_reason      text NOT NULL DEFAULT '',
	created_at           bigint NOT NULL,
	consecutive_failures integer NOT NULL DEFAULT 0,
	failing_since        bigint NOT NULL DEFAULT 0,
	start_seq            bigint NOT NULL,
	lease_owner          text NOT NULL DEFAULT '',
	lease_until          bigint NOT NULL DEFAULT 0
);
CREATE INDEX webhook_endpoints_by_user ON webhook_endpoints (username, created_at, id);

CREATE TABLE webhook_deliveries (
	id               text COLLATE "C" PRIMARY KEY,
	endpoint_id      text COLLATE "C" NOT NULL,
	event_seq        bigint NOT NULL,
	event_type       text NOT NULL,
	payment_id       text COLLATE "C" NOT NULL,
	body             bytea NOT NULL,
	status           integer NOT NULL DEFAULT 1,
	next_attempt_at  bigint NOT NULL,
	created_at       bigint NOT NULL,
	first_attempt_at bigint NOT NULL DEFAULT 0,
	attempts         integer NOT NULL DEFAULT 0,
	redeliver        integer NOT NULL DEFAULT 0,
	finished_at      bigint NOT NULL DEFAULT 0,
	UNIQUE (endpoint_id, event_seq)
);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (endpoint_id, payment_id, event_seq) WHERE status = 1;
CREATE INDEX webhook_deliveries_redeliver ON webhook_deliveries (endpoint_id) WHERE redeliver > 0;
CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (finished_at) WHERE status != 1;

CREATE TABLE webhook_attempts (
	id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	delivery_id text COLLATE "C" NOT NULL,
	at          bigint NOT NULL,
	http_status integer NOT NULL,
	error       text NOT NULL,
	latency     bigint NOT NULL,
	manual      integer NOT NULL
);
CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (delivery_id, id);

CREATE TABLE webhook_cursor (
	one integer PRIMARY KEY DEFAULT 1 CHECK (one = 1),
	seq bigint NOT NULL
);
INSERT INTO webhook_cursor (seq) SELECT last FROM event_counter;
