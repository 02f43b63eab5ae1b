package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/peterbourgon/ff/v3/ffcli"
	"google.golang.org/protobuf/types/known/timestamppb"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
)

// paygate admin payments, ops and redrive: every user's payments, their two-phase trail, and
// the work that is in doubt.

func newAdminPaymentsCommand(e *env) *ffcli.Command {
	return adminGroup(e, "admin payments", "search every user's payments; show one payment's two-phase trail",
		"Every user's payments, and how each went through the two-phase commit.",
		newAdminPaymentsSearchCommand(e),
		newAdminPaymentsTrailCommand(e),
	)
}

// paymentStatus reads a --status value.
func paymentStatus(s string) (gatewayv1.PaymentStatus, error) {
	switch s {
	case "":
		return gatewayv1.PaymentStatus_PAYMENT_STATUS_UNSPECIFIED, nil
	case "processing":
		return gatewayv1.PaymentStatus_PAYMENT_STATUS_PROCESSING, nil
	case "succeeded":
		return gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED, nil
	case "failed":
		return gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED, nil
	}
	return 0, usageErrorf("--status %q: want processing, succeeded or failed", s)
}

// failureReason reads a --reason value: a failure reason's name, e.g. insufficient_funds.
func failureReason(s string) (gatewayv1.FailureReason, error) {
	if s == "" {
		return gatewayv1.FailureReason_FAILURE_REASON_UNSPECIFIED, nil
	}
	if v, ok := gatewayv1.FailureReason_value["FAILURE_REASON_"+strings.ToUpper(s)]; ok && v != 0 {
		return gatewayv1.FailureReason(v), nil
	}
	var names []string
	for v := range len(gatewayv1.FailureReason_name) {
		if v != 0 {
			names = append(names, enumName(gatewayv1.FailureReason(v).String(), "FAILURE_REASON_"))
		}
	}
	return 0, usageErrorf("--reason %q: want one of %s", s, strings.Join(names, ", "))
}

// searchFlags are the filters of payments search.
type searchFlags struct {
	user, acct, bank, status, reason, since, until string
}

// request builds the search request of the flags, with times relative to now.
func (f searchFlags) request(now time.Time) (*gatewayv1.SearchPaymentsRequest, error) {
	st, err := paymentStatus(f.status)
	if err != nil {
		return nil, err
	}
	fr, err := failureReason(f.reason)
	if err != nil {
		return nil, err
	}
	if fr != gatewayv1.FailureReason_FAILURE_REASON_UNSPECIFIED && st != gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED {
		if st != gatewayv1.PaymentStatus_PAYMENT_STATUS_UNSPECIFIED {
			return nil, usageErrorf("--reason is a failed payment's: it needs --status failed (or none)")
		}
		st = gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED
	}
	req := &gatewayv1.SearchPaymentsRequest{Username: f.user, AccountId: f.acct, Bank: f.bank, Status: st, FailureReason: fr}
	if f.since != "" {
		t, err := parseWhen(f.since, now)
		if err != nil {
			return nil, usageErrorf("--since %v", err)
		}
		req.CreatedAfter = timestamppb.New(t)
	}
	if f.until != "" {
		t, err := parseWhen(f.until, now)
		if err != nil {
			return nil, usageErrorf("--until %v", err)
		}
		req.CreatedBefore = timestamppb.New(t)
	}
	if req.CreatedAfter != nil && req.CreatedBefore != nil && !req.CreatedBefore.AsTime().After(req.CreatedAfter.AsTime()) {
		return nil, usageErrorf("--until must be after --since")
	}
	return req, nil
}

func newAdminPaymentsSearchCommand(e *env) *ffcli.Command {
	var pg paging
	var sf searchFlags
	return adminSpec{
		path:  "admin payments search",
		args:  "[flags]",
		short: "search every user's payments, newest first",
		long: "Lists payments newest first, of every user, filtered by user, account, bank,\n" +
			"status, failure reason and creation time. --since and --until take a time\n" +
			"(2026-12-01, \"2026-12-01 15:04\", RFC 3339) or an age (90m, 36h, 7d).",
		example: "  paygate admin payments search --status failed --reason insufficient_funds --since 24h\n" +
			"  paygate admin payments search --account bank1-1001 --json",
		flags: func(fs *flag.FlagSet) {
			pg.register(fs, 50, 500)
			fs.StringVar(&sf.user, "user", "", "only this user's payments")
			fs.StringVar(&sf.acct, "account", "", "only payments from or to this account")
			fs.StringVar(&sf.bank, "bank", "", "only payments from or to an account of this bank")
			fs.StringVar(&sf.status, "status", "", "only payments with this status: processing, succeeded or failed")
			fs.StringVar(&sf.reason, "reason", "", "only failed payments with this reason, e.g. insufficient_funds, timeout")
			fs.StringVar(&sf.since, "since", "", "only payments created at or after this time or age")
			fs.StringVar(&sf.until, "until", "", "only payments created before this time or age")
		},
		run: func(ctx context.Context, a *adminRun, args []string) error {
			if err := wantArgs(args); err != nil {
				return err
			}
			if err := pg.check(); err != nil {
				return err
			}
			req, err := sf.request(time.Now())
			if err != nil {
				return err
			}
			req.PageSize, req.PageToken = pg.size(), pg.token
			svc, done, err := a.service()
			if err != nil {
				return err
			}
			defer done()
			resp, err := svc.SearchPayments(ctx, connect.NewRequest(req))
			if err != nil {
				return adminFailure("payments search", err)
			}
			out := struct {
				Payments      []paymentJSON `json:"payments"`
				NextPageToken string        `json:"next_page_token"`
			}{Payments: []paymentJSON{}, NextPageToken: resp.Msg.GetNextPageToken()}
			for _, p := range resp.Msg.GetPayments() {
				out.Payments = append(out.Payments, paymentToJSON(p))
			}
			return a.output(out, func(w io.Writer) {
				writePaymentsTable(w, out.Payments)
				pg.next(w, out.NextPageToken)
			})
		},
	}.command(e)
}

func newAdminPaymentsTrailCommand(e *env) *ffcli.Command {
	return adminSpec{
		path:  "admin payments trail",
		args:  "[flags] PAYMENT_ID",
		short: "show a payment's two-phase trail as a timeline",
		long: "Shows one payment and its trail, oldest first: admission, each prepare and\n" +
			"vote (a NO with its reason), bank errors, the decision and who made it, each\n" +
			"bank's acknowledgement, retries and takeovers; then each bank's own record of\n" +
			"the transaction, read now.",
		example: "  paygate admin payments trail 0198c2d4-7f1e-7c3a-9b61-2f0e8d5a4c11",
		run: func(ctx context.Context, a *adminRun, args []string) error {
			if err := wantArgs(args, "PAYMENT_ID"); err != nil {
				return err
			}
			svc, done, err := a.service()
			if err != nil {
				return err
			}
			defer done()
			resp, err := svc.GetPaymentTrail(ctx, connect.NewRequest(&gatewayv1.GetPaymentTrailRequest{PaymentId: args[0]}))
			if err != nil {
				return adminFailure("payments trail "+args[0], err)
			}
			t := trailToJSON(resp.Msg)
			return a.output(t, func(w io.Writer) { writeTrail(w, t) })
		},
	}.command(e)
}

func newAdminOpsCommand(e *env) *ffcli.Command {
	var limit int
	return adminSpec{
		path:  "admin ops",
		args:  "[flags]",
		short: "show in-doubt payments and each bank's health, holds and pending credits",
		long: "Shows each bank as the gateway sees it (health, accounts, balances, holds,\n" +
			"pending credits, prepared transactions, deposits and withdrawals), then the\n" +
			"payments in doubt: undecided, or decided and not yet acknowledged by every\n" +
			"bank, with the banks waited for and recovery's attempts. 'paygate admin\n" +
			"redrive' hurries one along.",
		example: "  paygate admin ops",
		flags: func(fs *flag.FlagSet) {
			fs.IntVar(&limit, "limit", 100, "at most this many in-doubt payments, 1 to 1000")
		},
		run: func(ctx context.Context, a *adminRun, args []string) error {
			if err := wantArgs(args); err != nil {
				return err
			}
			if limit < 1 || limit > 1000 {
				return usageErrorf("--limit %d: want 1 to 1000", limit)
			}
			svc, done, err := a.service()
			if err != nil {
				return err
			}
			defer done()
			resp, err := svc.GetOperations(ctx, connect.NewRequest(&gatewayv1.GetOperationsRequest{PageSize: int32(limit)}))
			if err != nil {
				return adminFailure("ops", err)
			}
			o := operationsToJSON(resp.Msg)
			return a.output(o, func(w io.Writer) { writeOperations(w, o) })
		},
	}.command(e)
}

func newAdminRedriveCommand(e *env) *ffcli.Command {
	return adminSpec{
		path:  "admin redrive",
		args:  "[flags] PAYMENT_ID",
		short: "run recovery for one unfinished payment now",
		long: "Runs recovery for PAYMENT_ID now instead of at its next round: an undecided\n" +
			"payment past its deadline is aborted, a decided one has its phase two sent\n" +
			"again. It never changes a decision; a finished payment is shown as it is.",
		example: "  paygate admin redrive 0198c2d4-7f1e-7c3a-9b61-2f0e8d5a4c11",
		run: func(ctx context.Context, a *adminRun, args []string) error {
			if err := wantArgs(args, "PAYMENT_ID"); err != nil {
				return err
			}
			svc, done, err := a.service()
			if err != nil {
				return err
			}
			defer done()
			resp, err := svc.RedrivePayment(ctx, connect.NewRequest(&gatewayv1.RedrivePaymentRequest{PaymentId: args[0]}))
			if err != nil {
				return adminFailure("redrive "+args[0], err)
			}
			p := paymentToJSON(resp.Msg.GetPayment())
			completed := resp.Msg.GetCompleted()
			return a.output(map[string]any{"payment": p, "completed": completed}, func(w io.Writer) {
				fmt.Fprintln(w, paymentLine(p))
				if completed {
					fmt.Fprintln(w, "completed: every bank acknowledged")
				} else {
					fmt.Fprintln(w, "not completed yet: see 'paygate admin payments trail "+p.PaymentID+"'")
				}
			})
		},
	}.command(e)
}
