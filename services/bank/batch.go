package bank

import (
	"context"
	"errors"
	"log/slog"
	"sync"

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

// forEach runs fn for every index concurrently. The items' ledger writes then share group
// commits: a batch of n prepares costs about one sync, not n.
func forEach(n int, fn func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(i)
		}()
	}
	wg.Wait()
}

// BatchPrepare implements BankService.BatchPrepare: each item exactly as PrepareTransaction.
func (s *Service) BatchPrepare(ctx context.Context, req *connect.Request[bankv1.BatchPrepareRequest]) (*connect.Response[bankv1.BatchPrepareResponse], error) {
	items := req.Msg.GetPrepares()
	rpcserver.CallInfoFrom(ctx).Add(slog.Int("items", len(items)))
	results := make([]*bankv1.BatchPrepareResult, len(items))
	forEach(len(items), func(i int) {
		resp, err := s.PrepareTransaction(ctx, connect.NewRequest(items[i]))
		if err != nil {
			results[i] = &bankv1.BatchPrepareResult{Error: itemError(err)}
			return
		}
		results[i] = &bankv1.BatchPrepareResult{Response: resp.Msg}
	})
	return connect.NewResponse(&bankv1.BatchPrepareResponse{Results: results}), nil
}

// BatchComplete implements BankService.BatchComplete: each item exactly as CommitTransaction or
// AbortTransaction.
func (s *Service) BatchComplete(ctx context.Context, req *connect.Request[bankv1.BatchCompleteRequest]) (*connect.Response[bankv1.BatchCompleteResponse], error) {
	items := req.Msg.GetCompletions()
	rpcserver.CallInfoFrom(ctx).Add(slog.Int("items", len(items)))
	results := make([]*bankv1.BatchCompleteResult, len(items))
	forEach(len(items), func(i int) {
		id := items[i].GetTransactionId()
		var state bankv1.TransactionState
		var err error
		switch items[i].GetOutcome() {
		case bankv1.Outcome_OUTCOME_COMMIT:
			var resp *connect.Response[bankv1.CommitTransactionResponse]
			if resp, err = s.CommitTransaction(ctx, connect.NewRequest(&bankv1.CommitTransactionRequest{TransactionId: id})); err == nil {
				state = resp.Msg.GetState()
			}
		case bankv1.Outcome_OUTCOME_ABORT:
			var resp *connect.Response[bankv1.AbortTransactionResponse]
			if resp, err = s.AbortTransaction(ctx, connect.NewRequest(&bankv1.AbortTransactionRequest{TransactionId: id})); err == nil {
				state = resp.Msg.GetState()
			}
		default:
			err = invalidArgument("completions[%d].outcome: %v", i, items[i].GetOutcome())
		}
		if err != nil {
			results[i] = &bankv1.BatchCompleteResult{Error: itemError(err)}
			return
		}
		results[i] = &bankv1.BatchCompleteResult{State: state}
	})
	return connect.NewResponse(&bankv1.BatchCompleteResponse{Results: results}), nil
}
