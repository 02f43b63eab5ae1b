package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"connectrpc.com/connect"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/internal/account"
	"github.com/paygate/paygate/internal/money"
	"github.com/paygate/paygate/internal/payid"
	"github.com/paygate/paygate/internal/rpcerr"
)

// Refunds. A refund is a payment: a row of the payments table, in the same id namespace, from
// the refunded payment's to-account back to its from-account, in its currency, made by the
// payee (the user its to-account is linked to), with RefundOf naming the payment. The
// coordinator runs it as it runs any payment (admission, prepares, the decision's
// compare-and-set, phase two, recovery, leases, presumed aborts), and the banks see one more
// transaction.
//
// What makes it a refund is kept by the store, in the same writes as the payment's own:
//
//   - its admission takes its amount from what is left of the refunded payment (the payment's
//     refund_reserved, the sum of its refunds admitted and not failed, may not pass its
//     amount), or refuses it and records nothing (ErrRefundExceedsPayment and the others of
//     refundReservation). So the succeeded refunds of a payment never add up to more than its
//     amount, however many are admitted at once, by any replica;
//   - its decision moves that reservation: a commit adds the amount to the payment's refunded
//     and appends payment.refunded for it; an abort gives the reservation back.
//
// A refund's own events are refund.created, refund.succeeded and refund.failed.

// RefundPayment implements PaymentService.RefundPayment: see the package comment above and the
// API's documentation. The refusals that depend on the refunded payment alone are answered
// here, before anything is recorded; the cap is the store's, atomically with the admission.
func (g *Gateway) RefundPayment(ctx context.Context, req *connect.Request[gatewayv1.RefundPaymentRequest]) (*connect.Response[gatewayv1.RefundPaymentResponse], error) {
	user, err := mustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	m := req.Msg
	if _, ok := payid.Canonical(m.GetRefundId()); !ok { // the validation interceptor refuses these first
		return nil, rpcerr.New(connect.CodeInvalidArgument, "invalid_argument", "refund_id: want a UUID or a ULID")
	}
	parent, err := g.refundable(ctx, user, m.GetPaymentId())
	if err != nil {
		return nil, err
	}
	id, err := g.paymentID(ctx, m.GetRefundId())
	if err != nil {
		return nil, err
	}
	refund := paymentRecord{
		PaymentID:   id,
		Username:    user.Username,
		From:        parent.To,
		To:          parent.From,
		Amount:      m.GetAmount(),
		Currency:    parent.Currency,
		Description: m.GetReason(),
		Fingerprint: refundFingerprint(user.Username, parent.PaymentID, m.GetAmount()),
		RefundOf:    parent.PaymentID,
	}
	addCallAttrs(ctx, slog.String("refund_id", refund.PaymentID), slog.String("refund_of", parent.PaymentID))
	out, replayed, err := g.coord.Execute(ctx, refund)
	if err != nil {
		return nil, refundError(err, refund, parent)
	}
	if replayed {
		addCallAttrs(ctx, slog.Bool("replayed", true))
	}
	addCallAttrs(ctx, slog.String("status", out.proto().GetStatus().String()))
	// The refunded payment as the refund's decision left it (the same write raised refunded).
	after, err := g.store.Payment(ctx, parent.PaymentID)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gatewayv1.RefundPaymentResponse{
		Refund:   out.proto(),
		Payment:  after.protoFor(user.Username),
		Replayed: replayed,
	}), nil
}

// refundable returns the payment paymentID names if user may refund it, or the refusal: a
// payment user can see neither as its payer nor as its payee looks missing (as GetPayment
// answers); its payer who is not its payee may not refund it; a refund, or a payment that has
// not succeeded, cannot be refunded.
func (g *Gateway) refundable(ctx context.Context, user principal, paymentID string) (paymentRecord, error) {
	id, err := g.paymentID(ctx, paymentID)
	if err != nil {
		return paymentRecord{}, err
	}
	p, err := g.store.Payment(ctx, id)
	notFound := rpcerr.New(connect.CodeNotFound, "payment_not_found", fmt.Sprintf("payment_id: no payment %s", paymentID))
	switch {
	case errors.Is(err, ErrNotFound) || (err == nil && isUnadmittedAbort(p)):
		return p, notFound
	case err != nil:
		return p, err
	}
	payee, err := g.accountOwner(ctx, p.To)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return p, err
	}
	if payee != user.Username || payee == "" {
		if p.Username == user.Username {
			return p, rpcerr.New(connect.CodePermissionDenied, "not_payee",
				fmt.Sprintf("payment_id: %s was paid to %s, which is not an account of %s: only the payee can refund a payment",
					p.PaymentID, p.To, user.Username))
		}
		return p, notFound
	}
	if p.isRefund() {
		return p, rpcerr.New(connect.CodeFailedPrecondition, "refund_of_refund",
			fmt.Sprintf("payment_id: %s is a refund (of %s); a refund cannot be refunded", p.PaymentID, p.RefundOf))
	}
	if p.Decision != decisionCommit {
		return p, rpcerr.New(connect.CodeFailedPrecondition, "payment_not_succeeded",
			fmt.Sprintf("payment_id: %s is %s; only a succeeded payment can be refunded", p.PaymentID, statusWord(p.Decision)))
	}
	for _, a := range []string{p.To, p.From} {
		if _, ok := g.banks[account.Bank(a)]; !ok {
			// A bank removed from the configuration since: the refund could never be prepared.
			return p, rpcerr.New(connect.CodeNotFound, "unknown_bank",
				fmt.Sprintf("payment_id: %s involves %s, whose bank %q this gateway does not know", p.PaymentID, a, account.Bank(a)))
		}
	}
	return p, nil
}

// refundError is the answer to a refund of parent that the coordinator (or the store's
// admission) refused with err.
func refundError(err error, refund, parent paymentRecord) error {
	var left *RefundLeftError
	switch {
	case errors.As(err, &left):
		if left.Left <= 0 {
			return rpcerr.New(connect.CodeFailedPrecondition, "refund_exceeds_payment",
				fmt.Sprintf("amount: nothing is left to refund of payment %s (%s, refunded or being refunded in full)",
					parent.PaymentID, money.Format(parent.Amount, parent.Currency)),
				"left", "0")
		}
		return rpcerr.New(connect.CodeFailedPrecondition, "refund_exceeds_payment",
			fmt.Sprintf("amount: %s is more than is left to refund of payment %s: %s of %s left",
				money.Format(refund.Amount, refund.Currency), parent.PaymentID,
				money.Format(left.Left, parent.Currency), money.Format(parent.Amount, parent.Currency)),
			"left", fmt.Sprint(left.Left))
	case errors.Is(err, ErrPaymentReused):
		return rpcerr.New(connect.CodeAlreadyExists, "refund_id_reused",
			fmt.Sprintf("refund_id: %s was already used for another refund or payment; use a new refund_id for a new refund", refund.PaymentID))
	case errors.Is(err, ErrPaymentInProgress):
		return rpcerr.New(connect.CodeAborted, "payment_in_progress",
			fmt.Sprintf("refund %s is still in progress; retry with the same refund_id to get its outcome", refund.PaymentID))
	// The refunded payment changed between refundable and the admission: it cannot become
	// undecided or a refund, nor vanish; these answer what the store saw, should it ever.
	case errors.Is(err, ErrRefundOfRefund):
		return rpcerr.New(connect.CodeFailedPrecondition, "refund_of_refund",
			fmt.Sprintf("payment_id: %s is a refund; a refund cannot be refunded", parent.PaymentID))
	case errors.Is(err, ErrRefundNotSucceeded):
		return rpcerr.New(connect.CodeFailedPrecondition, "payment_not_succeeded",
			fmt.Sprintf("payment_id: %s has not succeeded; only a succeeded payment can be refunded", parent.PaymentID))
	case errors.Is(err, ErrNotFound):
		return rpcerr.New(connect.CodeNotFound, "payment_not_found", fmt.Sprintf("payment_id: no payment %s", parent.PaymentID))
	}
	return err
}

// statusWord is how a refusal names a payment's decision.
func statusWord(d decision) string {
	switch d {
	case decisionCommit:
		return "succeeded"
	case decisionAbort:
		return "failed"
	}
	return "still processing"
}
