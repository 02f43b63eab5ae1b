package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/paygate/paygate/client"
	"github.com/paygate/paygate/internal/money"
	"github.com/paygate/paygate/internal/payid"
)

func init() { register(newRefundCommand) }

// refundJSON is the --json output of paygate refund.
type refundJSON struct {
	RefundID string `json:"refund_id"`
	// Status is succeeded or failed (refused by the gateway, or failed at a bank).
	Status   string `json:"status"`
	Reason   string `json:"reason,omitempty"`
	Message  string `json:"message,omitempty"`
	Replayed bool   `json:"replayed,omitempty"`
	Attempts int    `json:"attempts,omitempty"`
	// Refund is the gateway's record of the refund, when it decided one.
	Refund *paymentJSON `json:"refund,omitempty"`
	// Payment is the refunded payment as the refund left it.
	Payment *paymentJSON `json:"payment,omitempty"`
}

func newRefundCommand(e *env) *ffcli.Command {
	fs := newFlagSet(e, "refund")
	cf := clientFlags{e: e}
	cf.register(fs)
	amount := fs.String("amount", "", "decimal amount to give back, e.g. 12.50, in the payment's currency; default: all that is left")
	reason := fs.String("reason", "", "why, kept with the refund for both sides")
	id := fs.String("refund-id", "", "refund id to reuse (only to retry a refund whose outcome is unknown); default: a new UUIDv7")
	return &ffcli.Command{
		Name:       "refund",
		ShortUsage: "paygate refund PAYMENT_ID [--amount 12.50] [--reason TEXT] [--refund-id ID] [--json]",
		ShortHelp:  "give back money of a payment made to one of your accounts, exactly once",
		LongHelp: "Refunds a succeeded payment made to one of your accounts: moves --amount (all that\n" +
			"is left when omitted) from the account it was paid to back to the payer's, with the\n" +
			"same two-phase commit as a payment, and prints the refund's outcome and what is\n" +
			"left to refund. Several partial refunds may be made; together they never pass the\n" +
			"payment's amount. A retry after an unknown outcome must reuse the printed\n" +
			"--refund-id. Refunds are never queued: the gateway must be reachable.\n\n" +
			"Example:\n" +
			"  paygate refund 0198c2d4-5a1e-7c3b-9f00-1b2c3d4e5f60 --amount 12.50 --reason \"damaged\"\n\n" +
			"Exit codes: 0 succeeded, 3 refused or failed (e.g. more than is left,\n" +
			"insufficient funds), 2 usage, 1 other errors (e.g. outcome unknown).",
		FlagSet: fs,
		Options: ffOptions(),
		Exec: func(ctx context.Context, args []string) error {
			if len(args) == 0 {
				return usageErrorf("PAYMENT_ID is required")
			}
			paymentID := args[0]
			// Flags may follow the payment id: paygate refund ID --amount 5.00.
			if err := fs.Parse(args[1:]); err != nil {
				return usageErrorf("%v", err)
			}
			if err := noArgs(fs.Args()); err != nil {
				return err
			}
			if _, ok := payid.Canonical(*id); *id != "" && !ok {
				return usageErrorf("--refund-id %q: want a UUID or a ULID", *id)
			}
			_, c, err := cf.connectLoggedIn()
			if err != nil {
				return err
			}
			defer c.Close()
			var minor int64
			if *amount != "" {
				// The amount is in the payment's currency: read it first.
				p, err := c.GetPayment(ctx, paymentID)
				if err != nil {
					return refundRefused(e, cf.json, *id, err)
				}
				if minor, err = money.ParseDecimal(*amount, p.GetCurrency()); err != nil {
					return usageErrorf("--amount %s %s: %v", *amount, p.GetCurrency(), err)
				}
				if minor == 0 {
					return usageErrorf("--amount %s: want more than 0 (omit --amount to refund all that is left)", *amount)
				}
			}
			stopProgress := progressAfter(e, 2*time.Second, "waiting for the gateway's decision...")
			r, err := c.Refund(ctx, client.RefundRequest{ID: *id, PaymentID: paymentID, Amount: minor, Reason: *reason})
			stopProgress()
			if errors.Is(err, client.ErrInvalidPayment) {
				return usageErrorf("%v", err)
			}
			if errors.Is(err, client.ErrOutcomeUnknown) {
				return fmt.Errorf("%w\nretry with: paygate refund %s --refund-id %s", err, paymentID, r.ID)
			}
			if err != nil {
				return err
			}
			out := refundJSON{RefundID: r.ID, Status: string(r.Status), Reason: r.Reason, Message: r.Message,
				Replayed: r.Replayed, Attempts: r.Attempts}
			if r.Refund != nil {
				pj := paymentToJSON(r.Refund)
				out.Refund = &pj
			}
			if r.Payment != nil {
				pj := paymentToJSON(r.Payment)
				out.Payment = &pj
			}
			if cf.json {
				printJSON(e.stdout, out)
			} else {
				printRefund(e, out)
			}
			if r.Status != client.StatusSucceeded {
				return &exitError{code: exitPaymentFailed}
			}
			return nil
		},
	}
}

// printRefund writes a refund's outcome as text:
//
//	refund succeeded  0198c2d5-...  bank2-2002 -> bank1-1001  12.50 USD  refund of 0198c2d4-...
//	payment 0198c2d4-...  100.00 USD  refunded 12.50  left 87.50
func printRefund(e *env, r refundJSON) {
	switch {
	case r.Refund != nil:
		fmt.Fprintln(e.stdout, "refund "+paymentLine(*r.Refund))
	default:
		line := fmt.Sprintf("refund %-10s %s  %s", r.Status, r.RefundID, r.Reason)
		if r.Message != "" {
			line += ": " + r.Message
		}
		fmt.Fprintln(e.stdout, line)
	}
	if p := r.Payment; p != nil {
		fmt.Fprintf(e.stdout, "payment %s  %s %s  refunded %s  left %s\n", p.PaymentID, p.AmountDecimal, p.Currency,
			client.FormatAmount(p.RefundedAmount, p.Currency), client.FormatAmount(p.Amount-p.RefundedAmount, p.Currency))
	}
	if r.Replayed {
		fmt.Fprintln(e.stdout, "(the stored outcome of an earlier request with this refund id)")
	}
}

// refundRefused reports a refund the gateway refused before it was sent (its payment could not
// be read): a refusal (exit 3) when the gateway said why, the error otherwise.
func refundRefused(e *env, asJSON bool, id string, err error) error {
	reason := client.Reason(err)
	if reason == "" {
		return err
	}
	msg := err.Error()
	var ce *connect.Error
	if errors.As(err, &ce) {
		msg = ce.Message()
	}
	out := refundJSON{RefundID: id, Status: string(client.StatusFailed), Reason: reason, Message: msg}
	if asJSON {
		printJSON(e.stdout, out)
	} else {
		printRefund(e, out)
	}
	return &exitError{code: exitPaymentFailed}
}
