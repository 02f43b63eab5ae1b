package gateway

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"connectrpc.com/connect"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/internal/rpcerr"
)

// AdminService: in-doubt work (payments undecided, or decided and not acknowledged by every
// bank), each bank's state, and re-driving one payment now.

const reasonPaymentHeldElsewhere = "payment_held_elsewhere"

// GetOperations implements AdminService.GetOperations.
func (a *adminService) GetOperations(ctx context.Context, req *connect.Request[gatewayv1.GetOperationsRequest]) (*connect.Response[gatewayv1.GetOperationsResponse], error) {
	resp, err := a.operations(ctx, int(req.Msg.GetPageSize()))
	if err := a.audited(ctx, req, "GetOperations", "operations", nil, nil, err); err != nil {
		return nil, err
	}
	return connect.NewResponse(resp), nil
}

func (a *adminService) operations(ctx context.Context, size int) (*gatewayv1.GetOperationsResponse, error) {
	if size == 0 {
		size = 100
	}
	list, err := a.g.store.InDoubt(ctx, size+1)
	if err != nil {
		return nil, err
	}
	out := &gatewayv1.GetOperationsResponse{}
	if len(list) > size {
		list, out.More = list[:size], true
	}
	for _, p := range list {
		// What each bank has answered is in the trail: one read of the store per payment.
		trail, err := a.g.store.Trail(ctx, p.PaymentID)
		if err != nil {
			return nil, err
		}
		out.InDoubt = append(out.InDoubt, inDoubt(p, trail))
	}
	names := make([]string, 0, len(a.g.banks))
	for name := range a.g.banks {
		names = append(names, name)
	}
	slices.Sort(names)
	out.Banks = make([]*gatewayv1.BankOperations, len(names))
	each(len(names), func(i int) { out.Banks[i] = a.bankOperations(ctx, names[i]) })
	return out, nil
}

// inDoubt describes an unfinished payment from its row and its trail: the banks that have not
// voted (undecided) or not acknowledged phase two (decided), and how often recovery re-sent
// its messages.
func inDoubt(p paymentRecord, trail []trailEvent) *gatewayv1.InDoubtPayment {
	out := &gatewayv1.InDoubtPayment{Payment: p.proto(), Stage: "awaiting_acknowledgement"}
	answered := gatewayv1.TrailEventKind_TRAIL_EVENT_KIND_ACKNOWLEDGED
	if p.Decision == decisionNone {
		out.Stage, answered = "undecided", gatewayv1.TrailEventKind_TRAIL_EVENT_KIND_VOTE
	}
	done := map[string]bool{}
	for _, e := range trail {
		switch gatewayv1.TrailEventKind(e.Kind) {
		case answered:
			done[e.Bank] = true
		case gatewayv1.TrailEventKind_TRAIL_EVENT_KIND_RETRY:
			out.Attempts++
		}
	}
	if p.From != "" {
		for _, bank := range participantsOf(p) {
			if !done[bank] {
				out.WaitingFor = append(out.WaitingFor, bank)
			}
		}
	}
	return out
}

// bankOperations is bank's state: the health monitor's view, and the bank's ledger summary
// when it answers.
func (a *adminService) bankOperations(ctx context.Context, bank string) *gatewayv1.BankOperations {
	out := &gatewayv1.BankOperations{Bank: bank, Status: gatewayv1.BankStatus_BANK_STATUS_UNAVAILABLE}
	client, err := a.adminBank(bank, "bank", bank)
	if err != nil {
		out.Error = connectMessage(err)
		return out
	}
	sum, err := callBank(ctx, a, bank, func(ctx context.Context) (*bankv1.GetLedgerSummaryResponse, error) {
		resp, err := client.GetLedgerSummary(ctx, connect.NewRequest(&bankv1.GetLedgerSummaryRequest{}))
		if err != nil {
			return nil, err
		}
		return resp.Msg, nil
	})
	if err != nil {
		out.Error = connectMessage(err)
		if up, _ := a.g.health.status(bank); up && connect.CodeOf(err) != connect.CodeUnavailable {
			// It answers, but not this question (an older bank): its health is still good.
			out.Status = gatewayv1.BankStatus_BANK_STATUS_AVAILABLE
		}
		return out
	}
	out.Status = gatewayv1.BankStatus_BANK_STATUS_AVAILABLE
	out.Accounts = sum.GetAccounts()
	out.Balance = sum.GetBalance()
	out.Held = sum.GetHeld()
	out.PendingCredit = sum.GetPendingCredit()
	out.PreparedTransactions = sum.GetPreparedTransactions()
	out.Deposited = sum.GetDeposited()
	out.Withdrawn = sum.GetWithdrawn()
	return out
}

// auditPayment is what the audit log records of a payment a re-drive acted on.
type auditPayment struct {
	Status    string `json:"status"`
	Completed bool   `json:"completed"`
}

func auditPaymentOf(p paymentRecord, completed bool) auditPayment {
	return auditPayment{Status: p.proto().GetStatus().String(), Completed: completed}
}

// RedrivePayment implements AdminService.RedrivePayment.
func (a *adminService) RedrivePayment(ctx context.Context, req *connect.Request[gatewayv1.RedrivePaymentRequest]) (*connect.Response[gatewayv1.RedrivePaymentResponse], error) {
	id := req.Msg.GetPaymentId()
	var before, after any
	p, err := a.adminPayment(ctx, id)
	var out paymentRecord
	var completed bool
	if err == nil {
		before = auditPaymentOf(p, p.Completed)
		out, completed, err = a.g.coord.Redrive(ctx, p.PaymentID, adminUsername(ctx))
		switch {
		case errors.Is(err, ErrHeldElsewhere):
			err = rpcerr.New(connect.CodeFailedPrecondition, reasonPaymentHeldElsewhere,
				fmt.Sprintf("payment_id: payment %s is being driven by another gateway replica, whose lease is live; re-drive it there, or retry after that replica stops", id))
		case errors.Is(err, ErrPaymentInProgress):
			err = rpcerr.New(connect.CodeAborted, "payment_in_progress",
				fmt.Sprintf("payment_id: payment %s is being driven by this gateway right now; retry to see its outcome", id))
		case errors.Is(err, ErrNotFound):
			err = rpcerr.New(connect.CodeNotFound, reasonPaymentNotFound, fmt.Sprintf("payment_id: no payment %s", id))
		}
		if err == nil {
			after = auditPaymentOf(out, completed)
		}
	}
	if err := a.audited(ctx, req, "RedrivePayment", "payment:"+id, before, after, err); err != nil {
		return nil, err
	}
	return connect.NewResponse(&gatewayv1.RedrivePaymentResponse{Payment: out.proto(), Completed: completed}), nil
}
