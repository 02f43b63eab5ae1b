package bank

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
)

func TestBatchCallsHandleEachItemAsTheSingleCall(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l, err := OpenLedger(ctx, t.TempDir()+"/b.db", "bank1")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.ImportAccounts(ctx, []Account{{ID: "bank1-1", Currency: "USD", Balance: 1000}, {ID: "bank1-2", Currency: "USD", Balance: 0}}); err != nil {
		t.Fatal(err)
	}
	s := NewService("bank1", l, nil)
	deadline := timestamppb.New(time.Now().Add(time.Minute))
	debit := func(id, acct string, amount int64) *bankv1.PrepareTransactionRequest {
		return &bankv1.PrepareTransactionRequest{TransactionId: id, Deadline: deadline, Legs: []*bankv1.Leg{
			{AccountId: acct, Direction: bankv1.LegDirection_LEG_DIRECTION_DEBIT, Amount: amount, Currency: "USD"}}}
	}
	// Two debits of 600 from an account of 1000 in one batch: exactly one can be held.
	resp, err := s.BatchPrepare(ctx, connect.NewRequest(&bankv1.BatchPrepareRequest{Prepares: []*bankv1.PrepareTransactionRequest{
		debit("t1", "bank1-1", 600), debit("t2", "bank1-1", 600), debit("t3", "bank1-9", 1),
		{TransactionId: "t4", Deadline: deadline, Legs: []*bankv1.Leg{{AccountId: "bank1-1", Amount: 1, Currency: "USD"}}},
	}}))
	if err != nil {
		t.Fatal(err)
	}
	r := resp.Msg.GetResults()
	if len(r) != 4 {
		t.Fatalf("%d results, want 4", len(r))
	}
	yes := 0
	for _, x := range r[:2] {
		if x.GetResponse().GetVote() == bankv1.Vote_VOTE_YES {
			yes++
		} else if x.GetResponse().GetReason() != bankv1.VoteReason_VOTE_REASON_INSUFFICIENT_FUNDS {
			t.Errorf("second debit: %v", x)
		}
	}
	if yes != 1 {
		t.Errorf("%d of two 600 debits from 1000 held, want 1", yes)
	}
	if r[2].GetResponse().GetReason() != bankv1.VoteReason_VOTE_REASON_UNKNOWN_ACCOUNT {
		t.Errorf("unknown account: %v", r[2])
	}
	if r[3].GetError().GetCode() != "invalid_argument" {
		t.Errorf("leg without direction: %v, want an invalid_argument item error", r[3])
	}
	held := "t1"
	if r[0].GetResponse().GetVote() != bankv1.Vote_VOTE_YES {
		held = "t2"
	}
	other := map[string]string{"t1": "t2", "t2": "t1"}[held]
	cresp, err := s.BatchComplete(ctx, connect.NewRequest(&bankv1.BatchCompleteRequest{Completions: []*bankv1.Completion{
		{TransactionId: held, Outcome: bankv1.Outcome_OUTCOME_COMMIT},
		{TransactionId: other, Outcome: bankv1.Outcome_OUTCOME_COMMIT}, // voted NO: refused
		{TransactionId: "never-seen", Outcome: bankv1.Outcome_OUTCOME_ABORT},
	}}))
	if err != nil {
		t.Fatal(err)
	}
	c := cresp.Msg.GetResults()
	if c[0].GetState() != bankv1.TransactionState_TRANSACTION_STATE_COMMITTED || c[0].GetError() != nil {
		t.Errorf("commit: %v", c[0])
	}
	if c[1].GetError().GetCode() != "failed_precondition" || c[1].GetError().GetReason() != ErrorReasonTransactionAlreadyAborted {
		t.Errorf("commit of a NO vote: %v, want failed_precondition %s", c[1], ErrorReasonTransactionAlreadyAborted)
	}
	if c[2].GetState() != bankv1.TransactionState_TRANSACTION_STATE_ABORTED {
		t.Errorf("abort of an unknown transaction: %v", c[2])
	}
	accts, err := l.Balances(ctx, []string{"bank1-1"})
	if err != nil {
		t.Fatal(err)
	}
	if a := accts[0]; a.Balance != 400 || a.Held != 0 {
		t.Errorf("bank1-1: balance %d held %d, want 400 and 0", a.Balance, a.Held)
	}
}
