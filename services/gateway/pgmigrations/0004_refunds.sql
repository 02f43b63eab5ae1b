-- Refunds (see refunds.go): a refund is a payment row with refund_of, the payment_id of the
-- payment it gives money back for ('' on a payment). On the refunded payment, refunded is the
-- sum of its succeeded refunds and refund_reserved that of its refunds admitted and not failed:
-- a refund is admitted only if it fits (refund_reserved + amount <= amount), in the admission's
-- transaction, under the refunded row's lock; its decision moves the reservation to refunded
-- (a commit) or gives it back (an abort), in the decision's statement. The CHECK keeps the cap
-- whatever a write does.
ALTER TABLE payments
	ADD COLUMN refund_of text COLLATE "C" NOT NULL DEFAULT '',
	ADD COLUMN refunded bigint NOT NULL DEFAULT 0,
	ADD COLUMN refund_reserved bigint NOT NULL DEFAULT 0,
	ADD CONSTRAINT payments_refund_cap CHECK (0 <= refunded AND refunded <= refund_reserved AND refund_reserved <= amount);
