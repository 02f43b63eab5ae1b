package bank

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
)

// The batch RPCs as the gateway calls them, 32 items a batch: the ledger's batch write plus the
// conversions from and to the API's messages.

func benchService(b *testing.B) *Service {
	return NewService("bank1", openBenchLedger(b, true), nil, WithClock(func() time.Time { return t0 }))
}

func benchPrepareRequest(ids []string) *connect.Request[bankv1.BatchPrepareRequest] {
	req := &bankv1.BatchPrepareRequest{}
	for _, id := range ids {
		req.Prepares = append(req.Prepares, &bankv1.PrepareTransactionRequest{TransactionId: id, Deadline: timestamppb.New(deadline), Legs: []*bankv1.Leg{
			pbLeg("bank1-1", pbDebit, 1), pbLeg("bank1-2", pbCredit, 1),
		}})
	}
	return connect.NewRequest(req)
}

// BenchmarkServiceBatchPrepare is BatchPrepare calls of 32 prepares.
func BenchmarkServiceBatchPrepare(b *testing.B) {
	s := benchService(b)
	ids := benchIDs(b.N * benchBatch)
	m := startItems(b, benchBatch)
	for n := range b.N {
		resp, err := s.BatchPrepare(context.Background(), benchPrepareRequest(ids[n*benchBatch:(n+1)*benchBatch]))
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range resp.Msg.GetResults() {
			if r.GetResponse().GetVote() != bankv1.Vote_VOTE_YES {
				b.Fatal(r)
			}
		}
	}
	m.stop()
}

// BenchmarkServiceBatchComplete is BatchComplete calls of 32 commits; the prepares are made
// before the clock starts.
func BenchmarkServiceBatchComplete(b *testing.B) {
	s := benchService(b)
	ids := benchIDs(b.N * benchBatch)
	for n := range b.N {
		if _, err := s.BatchPrepare(context.Background(), benchPrepareRequest(ids[n*benchBatch:(n+1)*benchBatch])); err != nil {
			b.Fatal(err)
		}
	}
	m := startItems(b, benchBatch)
	for n := range b.N {
		req := &bankv1.BatchCompleteRequest{}
		for _, id := range ids[n*benchBatch : (n+1)*benchBatch] {
			req.Completions = append(req.Completions, &bankv1.Completion{TransactionId: id, Outcome: bankv1.Outcome_OUTCOME_COMMIT})
		}
		resp, err := s.BatchComplete(context.Background(), connect.NewRequest(req))
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range resp.Msg.GetResults() {
			if r.GetError() != nil {
				b.Fatal(r)
			}
		}
	}
	m.stop()
}
