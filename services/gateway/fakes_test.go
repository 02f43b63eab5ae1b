package gateway

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
)

// fakeBank is a participant for coordinator tests. With next set it forwards to it (a real bank
// client) after its hooks; without, it answers by itself: YES, or NO with noReason, and
// acknowledges phase two. Configure it before use; the counters are safe to read at any time.
type fakeBank struct {
	next participant

	// vote NO with this reason when set.
	noReason bankv1.VoteReason
	// prepareErr is returned by every prepare when set.
	prepareErr error
	// hang makes prepare block until its context ends.
	hang bool
	// gate, when set, holds every prepare until it is closed (or the context ends); entered
	// receives one value per prepare that reaches it.
	gate    chan struct{}
	entered chan string
	// commitFailures commits fail with Unavailable before commits succeed.
	commitFailures atomic.Int32
	// blockPhase2 makes commit and abort block until their context ends, then linger for
	// phase2Linger (a slow teardown) before returning; phase2Done counts the calls that returned.
	blockPhase2  atomic.Bool
	phase2Linger time.Duration
	phase2Done   atomic.Int32

	// phase2Gate, when set, holds every commit and abort until it is closed (or the context
	// ends); phase2Entered receives one value per commit or abort that reaches it.
	phase2Gate    chan struct{}
	phase2Entered chan string

	prepares, commits, aborts atomic.Int32

	mu   sync.Mutex
	legs map[string][]*bankv1.Leg // by transaction
}

var errFakeUnavailable = connect.NewError(connect.CodeUnavailable, errors.New("fake bank: connection refused"))

func (f *fakeBank) PrepareTransaction(ctx context.Context, req *connect.Request[bankv1.PrepareTransactionRequest]) (*connect.Response[bankv1.PrepareTransactionResponse], error) {
	f.prepares.Add(1)
	f.mu.Lock()
	if f.legs == nil {
		f.legs = map[string][]*bankv1.Leg{}
	}
	f.legs[req.Msg.GetTransactionId()] = req.Msg.GetLegs()
	f.mu.Unlock()
	if f.gate != nil {
		if f.entered != nil {
			f.entered <- req.Msg.GetTransactionId()
		}
		select {
		case <-f.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if f.hang {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if f.prepareErr != nil {
		return nil, f.prepareErr
	}
	if f.noReason != bankv1.VoteReason_VOTE_REASON_UNSPECIFIED {
		return connect.NewResponse(&bankv1.PrepareTransactionResponse{Vote: bankv1.Vote_VOTE_NO, Reason: f.noReason}), nil
	}
	if f.next != nil {
		return f.next.PrepareTransaction(ctx, req)
	}
	return connect.NewResponse(&bankv1.PrepareTransactionResponse{Vote: bankv1.Vote_VOTE_YES}), nil
}

func (f *fakeBank) CommitTransaction(ctx context.Context, req *connect.Request[bankv1.CommitTransactionRequest]) (*connect.Response[bankv1.CommitTransactionResponse], error) {
	f.commits.Add(1)
	if err := f.phase2Hooks(ctx); err != nil {
		return nil, err
	}
	for {
		n := f.commitFailures.Load()
		if n <= 0 {
			break
		}
		if f.commitFailures.CompareAndSwap(n, n-1) {
			return nil, errFakeUnavailable
		}
	}
	if f.next != nil {
		return f.next.CommitTransaction(ctx, req)
	}
	return connect.NewResponse(&bankv1.CommitTransactionResponse{State: bankv1.TransactionState_TRANSACTION_STATE_COMMITTED}), nil
}

func (f *fakeBank) AbortTransaction(ctx context.Context, req *connect.Request[bankv1.AbortTransactionRequest]) (*connect.Response[bankv1.AbortTransactionResponse], error) {
	f.aborts.Add(1)
	if err := f.phase2Hooks(ctx); err != nil {
		return nil, err
	}
	if f.next != nil {
		return f.next.AbortTransaction(ctx, req)
	}
	return connect.NewResponse(&bankv1.AbortTransactionResponse{State: bankv1.TransactionState_TRANSACTION_STATE_ABORTED}), nil
}

func (f *fakeBank) phase2Hooks(ctx context.Context) error {
	if f.phase2Gate != nil {
		if f.phase2Entered != nil {
			f.phase2Entered <- "phase two"
		}
		select {
		case <-f.phase2Gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if !f.blockPhase2.Load() {
		return nil
	}
	<-ctx.Done()
	time.Sleep(f.phase2Linger)
	f.phase2Done.Add(1)
	return ctx.Err()
}

// legsOf returns the legs of the last prepare of txn.
func (f *fakeBank) legsOf(txn string) []*bankv1.Leg {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.legs[txn]
}
