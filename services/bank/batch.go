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

// Batch implements BankService.Batch: each completion exactly as CommitTransaction or
// AbortTransaction, then each prepare exactly as PrepareTransaction, in order in one ledger write
// (Ledger.Batch), so that a batch costs one write and one sync and an item sees the effects of
// the items before it. A failure of the write fails every item that reached it with the same
// error.
func (s *Service) Batch(ctx context.Context, req *connect.Request[bankv1.BatchRequest]) (*connect.Response[bankv1.BatchResponse], error) {
	rpcserver.CallInfoFrom(ctx).Add(slog.Int("completions", len(req.Msg.GetCompletions())), slog.Int("prepares", len(req.Msg.GetPrepares())))
	c := newCompleteBatch(req.Msg.GetCompletions())
	p := s.newPrepareBatch(req.Msg.GetPrepares())
	if len(c.items)+len(p.items) > 0 {
		cerrs, votes, perrs, err := s.ledger.Batch(ctx, c.items, p.items, s.now())
		if err != nil {
			err = s.toConnectError(ctx, err) // logged once, not once per item
		}
		c.done(ctx, s, cerrs, err)
		p.done(ctx, s, votes, perrs, err)
	}
	return connect.NewResponse(&bankv1.BatchResponse{Completions: c.results, Prepares: p.results}), nil
}

// prepareBatch is the prepares of a batch call: the ledger's items, and the results, filled in
// for the items that failed conversion.
type prepareBatch struct {
	items   []PrepareItem
	index   []int // index[j] is the request item of items[j]
	results []*bankv1.BatchPrepareResult
}

func (s *Service) newPrepareBatch(reqs []*bankv1.PrepareTransactionRequest) *prepareBatch {
	b := &prepareBatch{items: make([]PrepareItem, 0, len(reqs)), index: make([]int, 0, len(reqs)),
		results: make([]*bankv1.BatchPrepareResult, len(reqs))}
	for i, m := range reqs {
		item, err := prepareItemFromProto(m)
		if err != nil {
			b.results[i] = &bankv1.BatchPrepareResult{Error: itemError(err)}
			continue
		}
		b.items = append(b.items, item)
		b.index = append(b.index, i)
	}
	return b
}

// done fills in the results of the ledger's answer; err, the batch's failure as a Connect
// error, fails every item that reached the ledger.
func (b *prepareBatch) done(ctx context.Context, s *Service, votes []Vote, errs []error, err error) {
	if err != nil {
		for _, i := range b.index {
			b.results[i] = &bankv1.BatchPrepareResult{Error: itemError(err)}
		}
		return
	}
	for j, i := range b.index {
		if errs[j] != nil {
			b.results[i] = &bankv1.BatchPrepareResult{Error: itemError(s.toConnectError(ctx, errs[j]))}
			continue
		}
		b.results[i] = &bankv1.BatchPrepareResult{Response: s.voteResponse(ctx, b.items[j].TxnID, votes[j])}
	}
}

// outcomeFromProto maps a completion's outcome to the state it leads to.
var outcomeFromProto = map[bankv1.Outcome]State{
	bankv1.Outcome_OUTCOME_COMMIT: Committed,
	bankv1.Outcome_OUTCOME_ABORT:  Aborted,
}

// completeBatch is the completions of a batch call, as prepareBatch.
type completeBatch struct {
	items   []Completion
	index   []int
	results []*bankv1.BatchCompleteResult
}

func newCompleteBatch(reqs []*bankv1.Completion) *completeBatch {
	b := &completeBatch{items: make([]Completion, 0, len(reqs)), index: make([]int, 0, len(reqs)),
		results: make([]*bankv1.BatchCompleteResult, len(reqs))}
	for i, c := range reqs {
		outcome, ok := outcomeFromProto[c.GetOutcome()]
		if !ok {
			b.results[i] = &bankv1.BatchCompleteResult{Error: itemError(invalidArgument("completions[%d].outcome: %v", i, c.GetOutcome()))}
			continue
		}
		b.items = append(b.items, Completion{TxnID: c.GetTransactionId(), Outcome: outcome})
		b.index = append(b.index, i)
	}
	return b
}

// done fills in the results of the ledger's answer, as prepareBatch.done.
func (b *completeBatch) done(ctx context.Context, s *Service, errs []error, err error) {
	if err != nil {
		for _, i := range b.index {
			b.results[i] = &bankv1.BatchCompleteResult{Error: itemError(err)}
		}
		return
	}
	for j, i := range b.index {
		c := b.items[j]
		if errs[j] != nil {
			b.results[i] = &bankv1.BatchCompleteResult{Error: itemError(s.completionError(ctx, c.Outcome, c.TxnID, errs[j]))}
			continue
		}
		b.results[i] = &bankv1.BatchCompleteResult{State: stateToProto[c.Outcome]}
	}
}
