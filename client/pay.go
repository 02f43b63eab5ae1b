package client

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/internal/money"
	"github.com/paygate/paygate/internal/payid"
)

// PaymentRequest is a payment to make.
type PaymentRequest struct {
	// ID is the payment_id. Leave it empty for a new payment: Pay generates a UUIDv7 (time
	// ordered). Set it only to retry a payment whose outcome is unknown (ErrOutcomeUnknown).
	ID string `json:"payment_id"`
	// From is an account of the user, "<bank>-<number>" (e.g. "bank1-1001").
	From string `json:"from_account"`
	// To is the payee's account.
	To string `json:"to_account"`
	// Amount is in minor units of Currency (cents): 2500 is 25.00 USD. See ParseAmount.
	Amount int64 `json:"amount"`
	// Currency is the ISO 4217 code, e.g. "USD".
	Currency    string `json:"currency"`
	Description string `json:"description,omitempty"`
}

// ParseAmount converts a decimal amount such as "25.00" to minor units of currency, exactly:
// a fraction of a minor unit is refused, never rounded.
func ParseAmount(decimal, currency string) (int64, error) {
	v, err := money.ParseDecimal(decimal, currency)
	if err != nil {
		return 0, fmt.Errorf("%w: amount: %w", ErrInvalidPayment, err)
	}
	return v, nil
}

// FormatAmount writes minor units of currency as a decimal: FormatAmount(2500, "USD") is
// "25.00".
func FormatAmount(amount int64, currency string) string { return money.FormatDecimal(amount, currency) }

// NewPaymentID returns a new payment id: a UUIDv7, so ids sort by creation time.
func NewPaymentID() string {
	id, err := uuid.NewV7()
	if err != nil {
		return uuid.NewString()
	}
	return id.String()
}

var (
	idPattern       = regexp.MustCompile(`^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26})$`)
	currencyPattern = regexp.MustCompile(`^[A-Z]{3}$`)
)

// validate checks what the gateway would refuse anyway, so that a payment that can never
// succeed is not queued.
func (r PaymentRequest) validate() error {
	var errs []string
	if r.ID != "" && !idPattern.MatchString(r.ID) {
		errs = append(errs, fmt.Sprintf("payment id %q is not a UUID or ULID", r.ID))
	}
	if r.From == "" || len(r.From) > 64 {
		errs = append(errs, "from account: want 1 to 64 characters")
	}
	if r.To == "" || len(r.To) > 64 {
		errs = append(errs, "to account: want 1 to 64 characters")
	}
	if r.From != "" && r.From == r.To {
		errs = append(errs, "to account must differ from from account")
	}
	if r.Amount <= 0 || r.Amount > 1_000_000_000_000_000 {
		errs = append(errs, fmt.Sprintf("amount %d: want more than 0 and at most 10^15 minor units", r.Amount))
	}
	if !currencyPattern.MatchString(r.Currency) {
		errs = append(errs, fmt.Sprintf("currency %q: want an ISO 4217 code such as USD", r.Currency))
	}
	if len(r.Description) > 200 {
		errs = append(errs, "description: at most 200 characters")
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalidPayment, strings.Join(errs, "; "))
	}
	return nil
}

// Status is where a payment stands for the client.
type Status string

const (
	// StatusSucceeded: the money moved.
	StatusSucceeded Status = "succeeded"
	// StatusFailed: no money moved; Result.Reason says why. Final: never retried.
	StatusFailed Status = "failed"
	// StatusQueued: recorded in the queue, outcome not known yet. The sender delivers it.
	StatusQueued Status = "queued"
)

// Result is a payment's outcome, or StatusQueued.
type Result struct {
	// ID is the payment_id.
	ID      string         `json:"payment_id"`
	Request PaymentRequest `json:"request"`
	Status  Status         `json:"status"`
	// Reason is machine-readable: for StatusFailed the bank's or the gateway's reason
	// ("insufficient_funds", "unknown_account", "not_account_owner", "payment_id_reused"...).
	Reason string `json:"reason,omitempty"`
	// Message explains a failure, or why a payment is still queued.
	Message string `json:"message,omitempty"`
	// Payment is the gateway's record when the gateway decided the payment.
	Payment *Payment `json:"-"`
	// Replayed is true when the gateway answered with the stored outcome of an earlier attempt.
	Replayed bool `json:"replayed,omitempty"`
	// Attempts is the number of calls made to the gateway for this payment.
	Attempts int `json:"attempts"`
}

// Pay makes a payment, exactly once.
//
// Without a queue, Pay calls the gateway and retries ambiguous failures with the same
// payment_id (see RetryPolicy) up to MaxAttempts; if none settles the payment it returns
// ErrOutcomeUnknown with Result.ID, to pay again with that ID later.
//
// With a queue (WithQueue), Pay first records the payment in the queue, durably, then the
// sender sends it (after any earlier queued payment from the same account) and Pay waits for
// the outcome up to WithPayWait. When the gateway cannot be reached, or no outcome came in
// time, Pay returns StatusQueued and a nil error: the payment is safe on disk and the sender
// delivers it later, reporting its outcome through WithOutcomes and the queue.
//
// A definitive refusal (insufficient funds, an account that is not the user's, a malformed
// request the gateway refuses) is StatusFailed with a nil error; it is never retried. Pay
// returns an error only for a payment it could not record or send at all (ErrInvalidPayment,
// a storage failure, ErrLoginRequired or ErrOutcomeUnknown without a queue).
func (c *Client) Pay(ctx context.Context, req PaymentRequest) (Result, error) {
	if err := req.validate(); err != nil {
		return Result{}, err
	}
	if req.ID == "" {
		req.ID = NewPaymentID()
	}
	// One spelling per payment: the gateway treats an upper-case UUID as the same payment as
	// its lower-case form, and so does the queue.
	req.ID = payid.Normalize(req.ID)
	if c.queue == nil {
		return c.payDirect(ctx, req)
	}
	return c.payQueued(ctx, req)
}

func (c *Client) payDirect(ctx context.Context, req PaymentRequest) (Result, error) {
	log := c.cfg.logger.With("payment_id", req.ID)
	calls := 0
	for n := 1; ; n++ {
		r, class, err := c.attempt(ctx, req, calls+1, nil)
		if err == nil {
			return r, nil
		}
		calls = r.Attempts
		unknown := Result{ID: req.ID, Request: req, Status: StatusQueued, Message: err.Error(), Attempts: calls}
		if class == classAuth {
			// Refused before the payment was looked at: it was not made.
			return unknown, fmt.Errorf("pay %s: %w: %w", req.ID, ErrLoginRequired, err)
		}
		if ctx.Err() != nil || n >= c.cfg.retry.MaxAttempts {
			return unknown, fmt.Errorf("pay %s: %w after %d attempts: %w", req.ID, ErrOutcomeUnknown, calls, err)
		}
		d := c.cfg.retry.Backoff(n)
		log.Info("payment attempt failed; retrying with the same id", "attempt", calls, "retry_in", d, logErr(err))
		if !sleepCtx(ctx, d) {
			return unknown, fmt.Errorf("pay %s: %w: %w", req.ID, ErrOutcomeUnknown, ctx.Err())
		}
	}
}

func (c *Client) payQueued(ctx context.Context, req PaymentRequest) (Result, error) {
	w := c.sender.await(req.ID)
	defer c.sender.unawait(req.ID)
	if err := c.queue.add(ctx, c.Username(), req, time.Now()); err != nil {
		return Result{}, err
	}
	c.cfg.logger.Debug("payment queued", "payment_id", req.ID, "from", req.From, "to", req.To, "amount", req.Amount, "currency", req.Currency)
	c.sender.kick()
	queued := func(why string) (Result, error) {
		// The outcome may have arrived just now.
		c.sender.unawait(req.ID)
		select {
		case r := <-w.done:
			return r, nil
		default:
		}
		return Result{ID: req.ID, Request: req, Status: StatusQueued, Message: why}, nil
	}
	timer := time.NewTimer(c.cfg.payWait)
	defer timer.Stop()
	poll := time.NewTicker(c.cfg.pollEvery)
	defer poll.Stop()
	for {
		select {
		case r := <-w.done:
			return r, nil
		case why := <-w.queued:
			return queued(why)
		case <-timer.C:
			return queued("no outcome yet; the sender keeps trying")
		case <-ctx.Done():
			return queued(ctx.Err().Error())
		case <-poll.C:
			// Another process may be the one sending.
			if c.sender.leading() {
				continue
			}
			if p, err := c.queue.Get(ctx, req.ID); err == nil && p.Status != StatusQueued {
				c.queue.MarkReported(ctx, req.ID)
				return p.Result, nil
			}
		}
	}
}

// attempt makes one attempt of req, whose first call is number n. The attempt is one call at
// the gateway, which moves on to the next address when one cannot be reached (see call): the
// payment_id makes it the same payment at every replica. Each call has its own number, n, n+1,
// ... in the Paygate-Attempt header and r.Attempts is the last one; before each call after
// the first, note (if not nil) records its number. A nil error means the payment is settled (r
// is its outcome); otherwise class says what the failure means.
func (c *Client) attempt(ctx context.Context, req PaymentRequest, n int, note func(n int) error) (Result, errClass, error) {
	cctx, cancel := c.callCtx(ctx)
	defer cancel()
	r := Result{ID: req.ID, Request: req, Attempts: n - 1}
	var resp *connect.Response[gatewayv1.ExecutePaymentResponse]
	err := c.call(cctx, idempotent, func(cctx context.Context, ep *endpoint) error {
		if r.Attempts >= n && note != nil {
			if err := note(r.Attempts + 1); err != nil {
				return fmt.Errorf("record attempt %d: %w", r.Attempts+1, err)
			}
		}
		r.Attempts++
		var err error
		resp, err = ep.payments.ExecutePayment(withAttempt(cctx, r.Attempts), connect.NewRequest(&gatewayv1.ExecutePaymentRequest{
			PaymentId:   req.ID,
			FromAccount: req.From,
			ToAccount:   req.To,
			Amount:      req.Amount,
			Currency:    req.Currency,
			Description: req.Description,
		}))
		return err
	})
	if err == nil {
		p := resp.Msg.GetPayment()
		r.Payment, r.Replayed = p, resp.Msg.GetReplayed()
		switch p.GetStatus() {
		case gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED:
			r.Status = StatusSucceeded
			return r, classDefinitive, nil
		case gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED:
			r.Status, r.Reason, r.Message = StatusFailed, FailureReasonName(p.GetFailureReason()), p.GetFailureMessage()
			return r, classDefinitive, nil
		}
		return r, classRetry, fmt.Errorf("payment %s is %s", req.ID, p.GetStatus())
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

// refusalOf returns the reason (the error's, or its code's name in snake_case) and the
// message of err, a definitive refusal: what a failed result says.
func refusalOf(err error) (reason, message string) {
	reason = Reason(err)
	if reason == "" {
		reason = strings.ReplaceAll(connect.CodeOf(err).String(), " ", "_")
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return reason, ce.Message()
	}
	return reason, err.Error()
}

// FailureReasonName returns the snake_case name of a failure reason: "insufficient_funds" for
// FAILURE_REASON_INSUFFICIENT_FUNDS.
func FailureReasonName(r gatewayv1.FailureReason) string {
	if r == gatewayv1.FailureReason_FAILURE_REASON_UNSPECIFIED {
		return "unspecified"
	}
	return strings.ToLower(strings.TrimPrefix(r.String(), "FAILURE_REASON_"))
}
