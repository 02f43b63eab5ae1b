package bank

import (
	"context"
	"errors"
	"log/slog"

	"connectrpc.com/connect"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	"github.com/paygate/paygate/internal/rpcerr"
	"github.com/paygate/paygate/internal/rpcserver"
)

// itemError turns the error a single call would have returned into a batch item's error.
func itemError(err error) *bankv1.ItemError {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return &bankv1.ItemError{Code: connect.CodeInternal.String(), Message: err.Error()}
	}
	return &bankv1.ItemError{Code: ce.Code().String(), Reason: rpcerr.Reason(err), Message: ce.Message()}
}

// BatchPrepare implements BankService.BatchPrepare: each item exactly as PrepareTransaction, the
// items in order in one ledger write (Ledger.PrepareMany), so that a batch costs one write and one
// sync, and an item sees the holds of the items before it. A failure of the write fails every item
// that reached it with the same error.
func (s *Service) BatchPrepare(ctx context.Context, req *connect.Request[bankv1.BatchPrepareRequest]) (*connect.Response[bankv1.BatchPrepareResponse], error) {
	items := req.Msg.GetPrepares()
	rpcserver.CallInfoFrom(ctx).Add(slog.Int("items", len(items)))
	results := make([]*bankv1.BatchPrepareResult, len(items))
	batch := make([]PrepareItem, 0, len(items))
	index := make([]int, 0, len(items)) // index[j] is the request item of batch[j]
	for i, m := range items {
		item, err := prepareItemFromProto(m)
		if err != nil {
			results[i] = &bankv1.BatchPrepareResult{Error: itemError(err)}
			continue
		}
		batch = append(batch, item)
		index = append(index, i)
	}
	if len(batch) == 0 {
		return connect.NewResponse(&bankv1.BatchPrepareResponse{Results: results}), nil
	}
	votes, errs, err := s.ledger.PrepareMany(ctx, batch, s.now())
	if err != nil {
		err = s.toConnectError(ctx, err)
		for _, i := range index {
			results[i] = &bankv1.BatchPrepareResult{Error: itemError(err)}
		}
		return connect.NewResponse(&bankv1.BatchPrepareResponse{Results: results}), nil
	}
	for j, i := range index {
		if errs[j] != nil {
			results[i] = &bankv1.BatchPrepareResult{Error: itemError(s.toConnectError(ctx, errs[j]))}
			continue
		}
		results[i] = &bankv1.BatchPrepareResult{Response: s.voteResponse(ctx, batch[j].TxnID, votes[j])}
	}
	return connect.NewResponse(&bankv1.BatchPrepareResponse{Results: results}), nil
}

// outcomeFromProto maps a completion's outcome to the state it leads to.
var outcomeFromProto = map[bankv1.Outcome]State{
	bankv1.Outcome_OUTCOME_COMMIT: Committed,
	bankv1.Outcome_OUTCOME_ABORT:  Aborted,
}

// BatchComplete implements BankService.BatchComplete: each item exactly as CommitTransaction or
// AbortTransaction, the items in order in one ledger write (Ledger.CompleteMany). A failure of the
// write fails every item that reached it with the same error.
func (s *Service) BatchComplete(ctx context.Context, req *connect.Request[bankv1.BatchCompleteRequest]) (*connect.Response[bankv1.BatchCompleteResponse], error) {
	items := req.Msg.GetCompletions()
	rpcserver.CallInfoFrom(ctx).Add(slog.Int("items", len(items)))
	results := make([]*bankv1.BatchCompleteResult, len(items))
	batch := make([]Completion, 0, len(items))
	index := make([]int, 0, len(items)) // index[j] is the request item of batch[j]
	for i, c := range items {
		outcome, ok := outcomeFromProto[c.GetOutcome()]
		if !ok {
			results[i] = &bankv1.BatchCompleteResult{Error: itemError(invalidArgument("completions[%d].outcome: %v", i, c.GetOutcome()))}
			continue
		}
		batch = append(batch, Completion{TxnID: c.GetTransactionId(), Outcome: outcome})
		index = append(index, i)
	}
	if len(batch) == 0 {
		return connect.NewResponse(&bankv1.BatchCompleteResponse{Results: results}), nil
	}
	errs, err := s.ledger.CompleteMany(ctx, batch)
	if err != nil {
		err = s.toConnectError(ctx, err)
		for _, i := range index {
			results[i] = &bankv1.BatchCompleteResult{Error: itemError(err)}
		}
		return connect.NewResponse(&bankv1.BatchCompleteResponse{Results: results}), nil
	}
	for j, i := range index {
		c := batch[j]
		if errs[j] != nil {
			results[i] = &bankv1.BatchCompleteResult{Error: itemError(s.completionError(ctx, c.Outcome, c.TxnID, errs[j]))}
			continue
		}
		results[i] = &bankv1.BatchCompleteResult{State: stateToProto[c.Outcome]}
	}
	return connect.NewResponse(&bankv1.BatchCompleteResponse{Results: results}), nil
}
