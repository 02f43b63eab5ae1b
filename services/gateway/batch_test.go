package gateway

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	"github.com/paygate/paygate/gen/paygate/bank/v1/bankv1connect"
	"github.com/paygate/paygate/internal/rpcerr"
)

// countingBank answers prepares YES (NO for ids starting with "no-"), fails commits of ids
// starting with "aborted-" as the bank does, and counts the calls it gets.
type countingBank struct {
	bankv1connect.BankServiceClient // nil: other methods are not used
	singles, batches                atomic.Int64
	items                           atomic.Int64
	mixed                           atomic.Int64 // Batch calls carrying prepares and completions
	delay                           time.Duration
	// hold, when set, keeps every call waiting until it is closed.
	hold chan struct{}
}

// wait is a call's time at the bank: the delay, then the hold.
func (b *countingBank) wait() {
	time.Sleep(b.delay)
	if b.hold != nil {
		<-b.hold
	}
}

func (b *countingBank) vote(req *bankv1.PrepareTransactionRequest) *bankv1.PrepareTransactionResponse {
	if len(req.GetTransactionId()) > 3 && req.GetTransactionId()[:3] == "no-" {
		return &bankv1.PrepareTransactionResponse{Vote: bankv1.Vote_VOTE_NO, Reason: bankv1.VoteReason_VOTE_REASON_INSUFFICIENT_FUNDS}
	}
	return &bankv1.PrepareTransactionResponse{Vote: bankv1.Vote_VOTE_YES}
}

func (b *countingBank) PrepareTransaction(ctx context.Context, req *connect.Request[bankv1.PrepareTransactionRequest]) (*connect.Response[bankv1.PrepareTransactionResponse], error) {
	b.singles.Add(1)
	b.items.Add(1)
	b.wait()
	return connect.NewResponse(b.vote(req.Msg)), nil
}

func (b *countingBank) CommitTransaction(ctx context.Context, req *connect.Request[bankv1.CommitTransactionRequest]) (*connect.Response[bankv1.CommitTransactionResponse], error) {
	b.singles.Add(1)
	b.items.Add(1)
	b.wait()
	if req.Msg.GetTransactionId()[:8] == "aborted-" {
		return nil, rpcerr.New(connect.CodeFailedPrecondition, "transaction_already_aborted", "already aborted")
	}
	return connect.NewResponse(&bankv1.CommitTransactionResponse{State: bankv1.TransactionState_TRANSACTION_STATE_COMMITTED}), nil
}

// completion is the bank's answer to one completion: what CommitTransaction answers.
func (b *countingBank) completion(c *bankv1.Completion) *bankv1.BatchCompleteResult {
	if c.GetTransactionId()[:8] == "aborted-" {
		return &bankv1.BatchCompleteResult{Error: &bankv1.ItemError{Code: "failed_precondition", Reason: "transaction_already_aborted", Message: "already aborted"}}
	}
	return &bankv1.BatchCompleteResult{State: bankv1.TransactionState_TRANSACTION_STATE_COMMITTED}
}

func (b *countingBank) Batch(ctx context.Context, req *connect.Request[bankv1.BatchRequest]) (*connect.Response[bankv1.BatchResponse], error) {
	b.batches.Add(1)
	b.items.Add(int64(len(req.Msg.GetCompletions()) + len(req.Msg.GetPrepares())))
	if len(req.Msg.GetCompletions()) > 0 && len(req.Msg.GetPrepares()) > 0 {
		b.mixed.Add(1)
	}
	b.wait()
	out := &bankv1.BatchResponse{}
	for _, c := range req.Msg.GetCompletions() {
		out.Completions = append(out.Completions, b.completion(c))
	}
	for _, p := range req.Msg.GetPrepares() {
		out.Prepares = append(out.Prepares, &bankv1.BatchPrepareResult{Response: b.vote(p)})
	}
	return connect.NewResponse(out), nil
}

func TestBatchingParticipantBatchesUnderLoad(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bank := &countingBank{delay: 5 * time.Millisecond}
	bp := newBatchingParticipant(ctx, new(sync.WaitGroup), bank)

	// Alone, a message goes out at once as the single call.
	resp, err := bp.PrepareTransaction(ctx, connect.NewRequest(&bankv1.PrepareTransactionRequest{TransactionId: "solo"}))
	if err != nil || resp.Msg.GetVote() != bankv1.Vote_VOTE_YES || bank.singles.Load() != 1 || bank.batches.Load() != 0 {
		t.Fatalf("lone prepare: %v %v, singles %d batches %d", resp, err, bank.singles.Load(), bank.batches.Load())
	}

	const n = 200
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("p-%03d", i)
			if i%5 == 0 {
				id = fmt.Sprintf("no-%03d", i)
			}
			resp, err := bp.PrepareTransaction(ctx, connect.NewRequest(&bankv1.PrepareTransactionRequest{TransactionId: id}))
			if err != nil {
				t.Errorf("%s: %v", id, err)
				return
			}
			want := bankv1.Vote_VOTE_YES
			if i%5 == 0 {
				want = bankv1.Vote_VOTE_NO
			}
			if resp.Msg.GetVote() != want {
				t.Errorf("%s: vote %v, want %v (answers mixed up between callers)", id, resp.Msg.GetVote(), want)
			}
			cid := fmt.Sprintf("commit-%03d", i)
			if i%7 == 0 {
				cid = fmt.Sprintf("aborted-%03d", i)
			}
			_, err = bp.CommitTransaction(ctx, connect.NewRequest(&bankv1.CommitTransactionRequest{TransactionId: cid}))
			if i%7 == 0 {
				if connect.CodeOf(err) != connect.CodeFailedPrecondition || rpcerr.Reason(err) != "transaction_already_aborted" {
					t.Errorf("%s: %v, want the item's FailedPrecondition with its reason", cid, err)
				}
			} else if err != nil {
				t.Errorf("%s: %v", cid, err)
			}
		}()
	}
	wg.Wait()
	calls := bank.singles.Load() + bank.batches.Load()
	if bank.items.Load() != 2*n+1 {
		t.Errorf("bank saw %d messages, want %d", bank.items.Load(), 2*n+1)
	}
	if calls > n/2 {
		t.Errorf("%d calls for %d messages: not batched", calls, 2*n+1)
	}
	t.Logf("%d messages in %d calls (%d batches, %d of them mixed)", 2*n+1, calls, bank.batches.Load(), bank.mixed.Load())
}

// TestBatchingParticipantMixesKinds: a prepare and a commit queued while a call to the bank is in
// flight go out together, as one Batch call.
func TestBatchingParticipantMixesKinds(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bank := &countingBank{hold: make(chan struct{})}
	bp := newBatchingParticipant(ctx, new(sync.WaitGroup), bank)
	first := make(chan error, 1)
	go func() {
		_, err := bp.PrepareTransaction(ctx, connect.NewRequest(&bankv1.PrepareTransactionRequest{TransactionId: "first"}))
		first <- err
	}()
	waitFor(t, 5*time.Second, "the first call to reach the bank", func() bool { return bank.singles.Load() == 1 })
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if _, err := bp.PrepareTransaction(ctx, connect.NewRequest(&bankv1.PrepareTransactionRequest{TransactionId: "p-1"})); err != nil {
			t.Error(err)
		}
	}()
	go func() {
		defer wg.Done()
		if _, err := bp.CommitTransaction(ctx, connect.NewRequest(&bankv1.CommitTransactionRequest{TransactionId: "commit-1"})); err != nil {
			t.Error(err)
		}
	}()
	// The first call stays at the bank until both messages are queued behind it, however slow
	// the machine.
	waitFor(t, 5*time.Second, "both messages to be queued", func() bool { return bp.msgs.queued.Load() == 3 })
	close(bank.hold)
	wg.Wait()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if bank.singles.Load() != 1 || bank.batches.Load() != 1 || bank.mixed.Load() != 1 {
		t.Errorf("singles %d, batches %d, mixed %d; want the first alone, then one Batch with both", bank.singles.Load(), bank.batches.Load(), bank.mixed.Load())
	}
}

func TestBatcherCallerDeadline(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bank := &countingBank{delay: 200 * time.Millisecond}
	bp := newBatchingParticipant(ctx, new(sync.WaitGroup), bank)
	short, cancelShort := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancelShort()
	start := time.Now()
	_, err := bp.PrepareTransaction(short, connect.NewRequest(&bankv1.PrepareTransactionRequest{TransactionId: "slow"}))
	if err == nil || time.Since(start) > 150*time.Millisecond {
		t.Fatalf("got %v after %s; want the caller's deadline to end its wait", err, time.Since(start))
	}
}
