package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/internal/rpcerr"
)

// AdminService: every user's payments, and each one's two-phase trail.

const reasonPaymentNotFound = "payment_not_found"

// searchToken is a SearchPayments page token: where the page ended, and the filters it was
// made for (a token is refused with other filters).
type searchToken struct {
	CreatedAt int64  `json:"t"`
	PaymentID string `json:"id"`
	Filters   string `json:"f"`
}

// searchFilters identifies the filters of a search, for its page tokens.
func searchFilters(m *gatewayv1.SearchPaymentsRequest) string {
	h := sha256.New()
	for _, s := range []string{m.GetUsername(), m.GetAccountId(), m.GetBank()} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	var b [8]byte
	for _, v := range []int64{int64(m.GetStatus()), int64(m.GetFailureReason()), timeKey(m.GetCreatedAfter().AsTime(), m.CreatedAfter != nil), timeKey(m.GetCreatedBefore().AsTime(), m.CreatedBefore != nil)} {
		binary.BigEndian.PutUint64(b[:], uint64(v))
		h.Write(b[:])
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}

func timeKey(t time.Time, set bool) int64 {
	if !set {
		return -1 << 63
	}
	return t.UnixNano()
}

// SearchPayments implements AdminService.SearchPayments.
func (a *adminService) SearchPayments(ctx context.Context, req *connect.Request[gatewayv1.SearchPaymentsRequest]) (*connect.Response[gatewayv1.SearchPaymentsResponse], error) {
	resp, err := a.searchPayments(ctx, req.Msg)
	if err := a.audited(ctx, req, "SearchPayments", "payments", nil, nil, err); err != nil {
		return nil, err
	}
	return connect.NewResponse(resp), nil
}

func (a *adminService) searchPayments(ctx context.Context, m *gatewayv1.SearchPaymentsRequest) (*gatewayv1.SearchPaymentsResponse, error) {
	q := paymentQuery{Username: m.GetUsername(), Account: m.GetAccountId(), Bank: m.GetBank(), FailureReason: int32(m.GetFailureReason())}
	var d decision
	switch m.GetStatus() {
	case gatewayv1.PaymentStatus_PAYMENT_STATUS_PROCESSING:
		d = decisionNone
		q.Decision = &d
	case gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED:
		d = decisionCommit
		q.Decision = &d
	case gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED:
		d = decisionAbort
		q.Decision = &d
	}
	if q.FailureReason != 0 && q.Decision == nil {
		d = decisionAbort // only failed payments have a failure reason
		q.Decision = &d
	}
	if ts := m.GetCreatedAfter(); ts != nil {
		if err := ts.CheckValid(); err != nil {
			return nil, rpcerr.New(connect.CodeInvalidArgument, "invalid_argument", "created_after: not a valid time")
		}
		q.CreatedAfter = ts.AsTime()
	}
	if ts := m.GetCreatedBefore(); ts != nil {
		if err := ts.CheckValid(); err != nil {
			return nil, rpcerr.New(connect.CodeInvalidArgument, "invalid_argument", "created_before: not a valid time")
		}
		q.CreatedBefore = ts.AsTime()
	}
	filters := searchFilters(m)
	if tok := m.GetPageToken(); tok != "" {
		raw, err := base64.RawURLEncoding.DecodeString(tok)
		var t searchToken
		if err == nil {
			err = json.Unmarshal(raw, &t)
		}
		if err != nil || t.Filters != filters || t.PaymentID == "" {
			return nil, rpcerr.New(connect.CodeInvalidArgument, "invalid_page_token",
				"page_token: not a token from the previous page of this search (same filters)")
		}
		q.After = &pageCursor{CreatedAt: t.CreatedAt, PaymentID: t.PaymentID}
	}
	size := int(m.GetPageSize())
	if size == 0 {
		size = 50
	}
	q.Limit = size + 1
	list, err := a.g.store.SearchPayments(ctx, q)
	if err != nil {
		return nil, err
	}
	out := &gatewayv1.SearchPaymentsResponse{}
	if len(list) > size {
		list = list[:size]
		last := list[len(list)-1]
		raw, _ := json.Marshal(searchToken{CreatedAt: last.CreatedAt.UnixNano(), PaymentID: last.PaymentID, Filters: filters})
		out.NextPageToken = base64.RawURLEncoding.EncodeToString(raw)
	}
	for _, p := range list {
		out.Payments = append(out.Payments, p.proto())
	}
	return out, nil
}

// adminPayment returns the payment named id (as the request's field payment_id spells it), or
// NOT_FOUND payment_not_found.
func (a *adminService) adminPayment(ctx context.Context, id string) (paymentRecord, error) {
	canonical, err := a.g.paymentID(ctx, id)
	if err != nil {
		return paymentRecord{}, err
	}
	p, err := a.g.store.Payment(ctx, canonical)
	if errors.Is(err, ErrNotFound) {
		return p, rpcerr.New(connect.CodeNotFound, reasonPaymentNotFound, fmt.Sprintf("payment_id: no payment %s", id))
	}
	return p, err
}

// GetPaymentTrail implements AdminService.GetPaymentTrail.
func (a *adminService) GetPaymentTrail(ctx context.Context, req *connect.Request[gatewayv1.GetPaymentTrailRequest]) (*connect.Response[gatewayv1.GetPaymentTrailResponse], error) {
	id := req.Msg.GetPaymentId()
	resp, err := a.paymentTrail(ctx, id)
	if err := a.audited(ctx, req, "GetPaymentTrail", "payment:"+id, nil, nil, err); err != nil {
		return nil, err
	}
	return connect.NewResponse(resp), nil
}

func (a *adminService) paymentTrail(ctx context.Context, id string) (*gatewayv1.GetPaymentTrailResponse, error) {
	p, err := a.adminPayment(ctx, id)
	if err != nil {
		return nil, err
	}
	recorded, err := a.g.store.Trail(ctx, p.PaymentID)
	if err != nil {
		return nil, err
	}
	out := &gatewayv1.GetPaymentTrailResponse{Payment: p.proto(), Events: paymentTrail(p, recorded), Completed: p.Completed}
	if p.From == "" {
		// A presumed abort of a payment the gateway never stored: its banks are not known.
		return out, nil
	}
	banks := participantsOf(p)
	out.Banks = make([]*gatewayv1.BankTransaction, len(banks))
	each(len(banks), func(i int) { out.Banks[i] = a.bankTransaction(ctx, banks[i], p.PaymentID) })
	return out, nil
}

// bankTransaction reads bank's record of transaction id now.
func (a *adminService) bankTransaction(ctx context.Context, bank, id string) *gatewayv1.BankTransaction {
	out := &gatewayv1.BankTransaction{Bank: bank, State: "unavailable"}
	client, err := a.adminBank(bank, "bank", bank)
	if err != nil {
		out.Detail = connectMessage(err)
		return out
	}
	txn, err := callBank(ctx, a, bank, func(ctx context.Context) (*bankv1.Transaction, error) {
		resp, err := client.GetTransaction(ctx, connect.NewRequest(&bankv1.GetTransactionRequest{TransactionId: id}))
		if err != nil {
			return nil, err
		}
		return resp.Msg.GetTransaction(), nil
	})
	switch {
	case connect.CodeOf(err) == connect.CodeNotFound:
		out.State, out.Detail = "unknown", "the bank has no record of the transaction"
	case err != nil:
		out.Detail = connectMessage(err)
	default:
		out.State = bankTransactionState(txn.GetState())
		if r := txn.GetReason(); r != bankv1.VoteReason_VOTE_REASON_UNSPECIFIED {
			out.Detail = voteReasonText(r)
		}
	}
	return out
}
