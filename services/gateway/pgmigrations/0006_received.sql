-- ListReceived's order: the payments made to an account, newest first. Building it on a large
-- payments table takes a while and holds off payment writes meanwhile: on such a database,
-- build it first without blocking them,
--   CREATE INDEX CONCURRENTLY payments_by_payee ON payments (to_account, created_at DESC, payment_id DESC);
-- and this migration keeps it.
CREATE INDEX IF NOT EXISTS payments_by_payee ON payments (to_account, created_at DESC, payment_id DESC);
