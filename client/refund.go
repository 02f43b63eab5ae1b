package client

import (
	"context"
	"fmt"
	"strings"

	"connectrpc.com/connect"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/internal/payid"
)

// RefundRequest is a refund to make: money of a succeeded payment made to one of the user's
// accounts, given back to its payer.
type RefundRequest struct {
	// ID is the refund_id. Leave it empty for a new refund: Refund generates one as Pay does a
	// payment_id. Set it only to retry a refund whose outcome is unknown (ErrOutcomeUnknown).
	ID string `json:"refund_id"`
	// PaymentID is the payment to refund.
	PaymentID string `json:"payment_id"`
	// Amount is in minor units of the payment's currency; 0 refunds all that is not refunded
	// (or being refunded) yet.
	Amount int64 `json:"amount"`
	// Reason is why, for both sides' records (the refund's description).
	Reason string `json:"reason,omitempty"`
}

// validate checks what the gateway would refuse anyway.
func (r RefundRequest) validate() error {
	var errs []string
	if r.ID != "" && !idPattern.MatchString(r.ID) {
		errs = append(errs, fmt.Sprintf("refund id %q is not a UUID or ULID", r.ID))
	}
	if r.PaymentID == "" || len(r.PaymentID) > 64 {
		errs = append(errs, "payment id: want 1 to 64 characters")
	}
	if r.Amount < 0 || r.Amount > 1_000_000_000_000_000 {
		errs = append(errs, fmt.Sprintf("amount %d: want 0 (all that is left) to 10^15 minor units", r.Amount))
	}
	if len(r.Reason) > 200 {
		errs = append(errs, "reason: at most 200 characters")
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalidPayment, strings.Join(errs, "; "))
	}
	return nil
}

// RefundResult is a refund's outcome.
type RefundResult struct {
	// ID is the refund_id.
	ID      string        `json:"refund_id"`
	Request RefundRequest `json:"request"`
	// Status is StatusSucceeded or StatusFailed (never StatusQueued: refunds are not queued).
	Status Status `json:"status"`
	// Reason is machine-readable: for a refund the gateway refused, its reason
	// ("refund_exceeds_payment", "payment_not_found", "not_payee", "payment_not_succeeded",
	// "refund_of_refund", "refund_id_reused"); for a refund that failed at a bank, the bank's
	// ("insufficient_funds"...).
	Reason string `json:"reason,omitempty"`
	// Message explains a failure.
	Message string `json:"message,omitempty"`
	// Refund is the gateway's record of the refund (a Payment with RefundOf set) when the
	// gateway decided it; nil when it refused it.
	Refund *Payment `json:"-"`
	// Payment is the refunded payment as the refund left it (RefundedAmount), when the gateway
	// decided the refund.
	Payment *Payment `json:"-"`
	// Replayed is true when the gateway answered with the stored outcome of an earlier attempt.
	Replayed bool `json:"replayed,omitempty"`
	// Attempts is the number of calls made to the gateway for this refund.
	Attempts int `json:"attempts"`
}

// Refund gives back money of a succeeded payment made to one of the user's accounts, exactly
// once: it calls the gateway and retries ambiguous failures (an unreachable gateway, a replica
// that failed over, "payment_in_progress") with the same refund_id (see RetryPolicy) up to
// MaxAttempts, moving on to the next gateway address as Pay does. If no attempt settles the
// refund it returns ErrOutcomeUnknown with RefundResult.ID, to refund again with that ID later:
// a refund is never applied twice.
//
// Refunds are never queued (WithQueue has no effect on them): a refund is sent at once, and
// the gateway's answer is its outcome.
//
// A refusal (more than is left, a payment that is not the user's to refund, a reused
// refund_id) or a refund that failed at the bank (the payee's account cannot cover it) is
// StatusFailed with a nil error. Refund returns an error only for a refund it could not send
// at all (ErrInvalidPayment, ErrNotLoggedIn, ErrLoginRequired) or whose outcome is unknown.
func (c *Client) Refund(ctx context.Context, req RefundRequest) (RefundResult, error) {
	if err := req.validate(); err != nil {
		return RefundResult{}, err
	}
	if c.Token() == "" {
		return RefundResult{}, ErrNotLoggedIn
	}
	if req.ID == "" {
		req.ID = NewPaymentID()
	}
	req.ID = payid.Normalize(req.ID)
	log := c.cfg.logger.With("refund_id", req.ID, "payment_id", req.PaymentID)
	calls := 0
	for n := 1; ; n++ {
		r, class, err := c.refundAttempt(ctx, req, calls+1)
		if err == nil {
			return r, nil
		}
		calls = r.Attempts
		unknown := RefundResult{ID: req.ID, Request: req, Message: err.Error(), Attempts: calls}
		if class == classAuth {
			return unknown, fmt.Errorf("refund %s: %w: %w", req.ID, ErrLoginRequired, err)
		}
		if ctx.Err() != nil || n >= c.cfg.retry.MaxAttempts {
			return unknown, fmt.Errorf("refund %s: %w after %d attempts: %w", req.ID, ErrOutcomeUnknown, calls, err)
		}
		d := c.cfg.retry.Backoff(n)
		log.Info("refund attempt failed; retrying with the same id", "attempt", calls, "retry_in", d, logErr(err))
		if !sleepCtx(ctx, d) {
			return unknown, fmt.Errorf("refund %s: %w: %w", req.ID, ErrOutcomeUnknown, ctx.Err())
		}
	}
}

// refundAttempt makes one attempt of req (one call at the gateway, moving on to the next
// address when one cannot be reached), whose first call is number n. A nil error means the
// refund is settled; otherwise class says what the failure means.
func (c *Client) refundAttempt(ctx context.Context, req RefundRequest, n int) (RefundResult, errClass, error) {
	cctx, cancel := c.callCtx(ctx)
	defer cancel()
	r := RefundResult{ID: req.ID, Request: req, Attempts: n - 1}
	var resp *connect.Response[gatewayv1.RefundPaymentResponse]
	err := c.call(cctx, idempotent, func(cctx context.Context, ep *endpoint) error {
		r.Attempts++
		var err error
		resp, err = ep.payments.RefundPayment(withAttempt(cctx, r.Attempts), connect.NewRequest(&gatewayv1.RefundPaymentRequest{
			RefundId:  req.ID,
			PaymentId: req.PaymentID,
			Amount:    req.Amount,
			Reason:    req.Reason,
		}))
		return err
	})
	if err == nil {
		ref := resp.Msg.GetRefund()
		r.Refund, r.Payment, r.Replayed = ref, resp.Msg.GetPayment(), resp.Msg.GetReplayed()
		switch ref.GetStatus() {
		case gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED:
			r.Status = StatusSucceeded
			return r, classDefinitive, nil
		case gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED:
			r.Status, r.Reason, r.Message = StatusFailed, FailureReasonName(ref.GetFailureReason()), ref.GetFailureMessage()
			return r, classDefinitive, nil
		}
		return r, classRetry, fmt.Errorf("refund %s is %s", req.ID, ref.GetStatus())
	}
	if ctx.Err() != nil {
		return r, classRetry, ctx.Err()
	}
	class := classify(err)
	if class == classDefinitive {
		r.Reason, r.Message = refusalOf(err)
		r.Status = StatusFailed
		return r, class, nil
	}
	return r, class, err
}
