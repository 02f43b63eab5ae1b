package bank

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
)

// The Batch RPC as the gateway calls it, 32 items a batch: the ledger's batch write plus the
// conversions from and to the API's messages.

func benchService(b *testing.B) *Service {
	return NewService("bank1", openBenchLedger(b, true), nil, WithClock(func() time.Time { return t0 }))
}

// benchPrepareRequest is a Batch of a prepare for each id.
func benchPrepareRequest(ids []string) *connect.Request[bankv1.BatchRequest] {
	req := &bankv1.BatchRequest{}
	for _, id := range ids {
		req.Prepares = append(req.Prepares, &bankv1.PrepareTransactionRequest{TransactionId: id, Deadline: timestamppb.New(deadline), Legs: []*bankv1.Leg{
			pbLeg("bank1-1", pbDebit, 1), pbLeg("bank1-2", pbCredit, 1),
		}})
	}
	return connect.NewRequest(req)
}

// BenchmarkServiceBatchPrepares is Batch calls of 32 prepares.
func BenchmarkServiceBatchPrepares(b *testing.B) {
	s := benchService(b)
	ids := benchIDs(b.N * benchBatch)
	m := startItems(b, benchBatch)
	for n := range b.N {
		resp, err := s.Batch(context.Background(), benchPrepareRequest(ids[n*benchBatch:(n+1)*benchBatch]))
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range resp.Msg.GetPrepares() {
			if r.GetResponse().GetVote() != bankv1.Vote_VOTE_YES {
				b.Fatal(r)
			}
		}
	}
	m.stop()
}

// BenchmarkServiceBatchCommits is Batch calls of 32 commits; the prepares are made before the
// clock starts.
func BenchmarkServiceBatchCommits(b *testing.B) {
	s := benchService(b)
	ids := benchIDs(b.N * benchBatch)
	for n := range b.N {
		resp, err := s.Batch(context.Background(), benchPrepareRequest(ids[n*benchBatch:(n+1)*benchBatch]))
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range resp.Msg.GetPrepares() {
			if r.GetResponse().GetVote() != bankv1.Vote_VOTE_YES {
				b.Fatal(r)
			}
		}
	}
	m := startItems(b, benchBatch)
	for n := range b.N {
		req := &bankv1.BatchRequest{}
		for _, id := range ids[n*benchBatch : (n+1)*benchBatch] {
			req.Completions = append(req.Completions, &bankv1.Completion{TransactionId: id, Outcome: bankv1.Outcome_OUTCOME_COMMIT})
		}
		resp, err := s.Batch(context.Background(), connect.NewRequest(req))
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range resp.Msg.GetCompletions() {
			if r.GetError() != nil {
				b.Fatal(r)
			}
		}
	}
	m.stop()
}
