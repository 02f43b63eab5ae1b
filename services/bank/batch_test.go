package bank

import (
	"context"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
)

// TestBatchCallsHandleEachItemAsTheSingleCall runs the Batch RPC on each backend.
func TestBatchCallsHandleEachItemAsTheSingleCall(t *testing.T) {
	t.Parallel()
	forEachLedger(t, []Account{{ID: "bank1-1", Currency: "USD", Balance: 1000}, {ID: "bank1-2", Currency: "USD", Balance: 0}},
		func(t *testing.T, l testLedger, _ reopenFunc) { testBatchCallsHandleEachItemAsTheSingleCall(t, l) })
}

func testBatchCallsHandleEachItemAsTheSingleCall(t *testing.T, l testLedger) {
	ctx := context.Background()
	s := NewService("bank1", l, nil)
	deadline := timestamppb.New(time.Now().Add(time.Minute))
	debit := func(id, acct string, amount int64) *bankv1.PrepareTransactionRequest {
		return &bankv1.PrepareTransactionRequest{TransactionId: id, Deadline: deadline, Legs: []*bankv1.Leg{
			{AccountId: acct, Direction: bankv1.LegDirection_LEG_DIRECTION_DEBIT, Amount: amount, Currency: "USD"}}}
	}
	// Two debits of 600 from an account of 1000 in one batch: exactly one can be held.
	resp, err := s.Batch(ctx, connect.NewRequest(&bankv1.BatchRequest{Prepares: []*bankv1.PrepareTransactionRequest{
		debit("t1", "bank1-1", 600), debit("t2", "bank1-1", 600), debit("t3", "bank1-9", 1),
		{TransactionId: "t4", Deadline: deadline, Legs: []*bankv1.Leg{{AccountId: "bank1-1", Amount: 1, Currency: "USD"}}},
	}}))
	if err != nil {
		t.Fatal(err)
	}
	r := resp.Msg.GetPrepares()
	if len(r) != 4 || len(resp.Msg.GetCompletions()) != 0 {
		t.Fatalf("%d prepare and %d completion results, want 4 and 0", len(r), len(resp.Msg.GetCompletions()))
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
	cresp, err := s.Batch(ctx, connect.NewRequest(&bankv1.BatchRequest{Completions: []*bankv1.Completion{
		{TransactionId: held, Outcome: bankv1.Outcome_OUTCOME_COMMIT},
		{TransactionId: other, Outcome: bankv1.Outcome_OUTCOME_COMMIT}, // voted NO: refused
		{TransactionId: "never-seen", Outcome: bankv1.Outcome_OUTCOME_ABORT},
	}}))
	if err != nil {
		t.Fatal(err)
	}
	c := cresp.Msg.GetCompletions()
	if len(c) != 3 || len(cresp.Msg.GetPrepares()) != 0 {
		t.Fatalf("%d completion and %d prepare results, want 3 and 0", len(c), len(cresp.Msg.GetPrepares()))
	}
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

func TestBatchPreparesInOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, l, logs := newTestService(t, usd("bank1-1", 1000), usd("bank1-2", 0))
	if res, err := s.PrepareTransaction(ctx, prepareRequest("old", deadline, pbLeg("bank1-1", pbDebit, 100), pbLeg("bank1-2", pbCredit, 100))); err != nil || res.Msg.GetVote() != bankv1.Vote_VOTE_YES {
		t.Fatal(res, err)
	}
	req := func(txn string, legs ...*bankv1.Leg) *bankv1.PrepareTransactionRequest {
		return prepareRequest(txn, deadline, legs...).Msg
	}
	resp, err := s.Batch(ctx, connect.NewRequest(&bankv1.BatchRequest{Prepares: []*bankv1.PrepareTransactionRequest{
		req("first", pbLeg("bank1-1", pbDebit, 500), pbLeg("bank1-2", pbCredit, 500)), // 900 available
		req("second", pbLeg("bank1-1", pbDebit, 500)),                                 // 400 left: NO
		req("old", pbLeg("bank1-2", pbCredit, 100), pbLeg("bank1-1", pbDebit, 100)),   // replay: YES
		req("nodir", pbLeg("bank1-1", bankv1.LegDirection_LEG_DIRECTION_UNSPECIFIED, 1)),
		req("zero", pbLeg("bank1-1", pbDebit, 0)),
		{TransactionId: "nodl", Legs: []*bankv1.Leg{pbLeg("bank1-1", pbDebit, 1)}},
		req("third", pbLeg("bank1-1", pbDebit, 400)), // exactly what is left: YES
	}}))
	if err != nil {
		t.Fatal(err)
	}
	r := resp.Msg.GetPrepares()
	if len(r) != 7 {
		t.Fatalf("%d results, want 7", len(r))
	}
	for i, yes := range map[int]bool{0: true, 1: false, 2: true, 6: true} {
		want := bankv1.Vote_VOTE_NO
		if yes {
			want = bankv1.Vote_VOTE_YES
		}
		if r[i].GetError() != nil || r[i].GetResponse().GetVote() != want {
			t.Errorf("item %d: %v, want %v", i, r[i], want)
		}
	}
	if r[1].GetResponse().GetReason() != bankv1.VoteReason_VOTE_REASON_INSUFFICIENT_FUNDS || !strings.Contains(r[1].GetResponse().GetMessage(), "bank1-1") {
		t.Errorf("second debit: %v, want NO insufficient funds naming the account", r[1])
	}
	for _, i := range []int{3, 4, 5} {
		if e := r[i].GetError(); e.GetCode() != connect.CodeInvalidArgument.String() || e.GetReason() != ErrorReasonInvalidArgument || r[i].GetResponse() != nil {
			t.Errorf("item %d: %v, want an invalid_argument item error", i, r[i])
		}
	}
	if !strings.Contains(logs.String(), "voted no") || !strings.Contains(logs.String(), "txn=second") {
		t.Errorf("no 'voted no' line for txn second in:\n%s", logs)
	}
	wantAccount(t, l, "bank1-1", 1000, 1000, 0)
	wantAccount(t, l, "bank1-2", 0, 0, 600)
	for _, id := range []string{"nodir", "zero", "nodl"} {
		wantUnknown(t, l, id)
	}
}

func TestBatchCompletionsInOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, l, logs := newTestService(t, usd("bank1-1", 1000), usd("bank1-2", 0))
	for _, id := range []string{"c", "a", "done"} {
		if v := mustPrepare(t, l, id, debit("bank1-1", 100), credit("bank1-2", 100)); !v.Yes {
			t.Fatal(id, v)
		}
	}
	if err := l.Commit(ctx, "done"); err != nil {
		t.Fatal(err)
	}
	if err := l.Abort(ctx, "aborted"); err != nil {
		t.Fatal(err)
	}
	resp, err := s.Batch(ctx, connect.NewRequest(&bankv1.BatchRequest{Completions: []*bankv1.Completion{
		{TransactionId: "c", Outcome: bankv1.Outcome_OUTCOME_COMMIT},
		{TransactionId: "a", Outcome: bankv1.Outcome_OUTCOME_ABORT},
		{TransactionId: "ghost", Outcome: bankv1.Outcome_OUTCOME_COMMIT},
		{TransactionId: "aborted", Outcome: bankv1.Outcome_OUTCOME_COMMIT},
		{TransactionId: "done", Outcome: bankv1.Outcome_OUTCOME_ABORT},
		{TransactionId: "c", Outcome: bankv1.Outcome_OUTCOME_UNSPECIFIED},
		{TransactionId: "c", Outcome: bankv1.Outcome_OUTCOME_ABORT}, // committed by item 0
	}}))
	if err != nil {
		t.Fatal(err)
	}
	r := resp.Msg.GetCompletions()
	want := []struct {
		state  bankv1.TransactionState
		code   connect.Code
		reason string
	}{
		{state: bankv1.TransactionState_TRANSACTION_STATE_COMMITTED},
		{state: bankv1.TransactionState_TRANSACTION_STATE_ABORTED},
		{code: connect.CodeNotFound, reason: ErrorReasonTransactionNotFound},
		{code: connect.CodeFailedPrecondition, reason: ErrorReasonTransactionAlreadyAborted},
		{code: connect.CodeFailedPrecondition, reason: ErrorReasonTransactionAlreadyCommitted},
		{code: connect.CodeInvalidArgument, reason: ErrorReasonInvalidArgument},
		{code: connect.CodeFailedPrecondition, reason: ErrorReasonTransactionAlreadyCommitted},
	}
	if len(r) != len(want) {
		t.Fatalf("%d results, want %d", len(r), len(want))
	}
	for i, w := range want {
		if w.code == 0 {
			if r[i].GetError() != nil || r[i].GetState() != w.state {
				t.Errorf("item %d: %v, want %v", i, r[i], w.state)
			}
			continue
		}
		if e := r[i].GetError(); e.GetCode() != w.code.String() || e.GetReason() != w.reason || r[i].GetState() != bankv1.TransactionState_TRANSACTION_STATE_UNSPECIFIED {
			t.Errorf("item %d: %v, want %v %s", i, r[i], w.code, w.reason)
		}
	}
	for _, txn := range []string{"txn=ghost", "txn=aborted", "txn=done"} {
		found := false
		for line := range strings.Lines(logs.String()) {
			if strings.Contains(line, "level=ERROR") && strings.Contains(line, "invariant violation") && strings.Contains(line, txn) {
				found = true
			}
		}
		if !found {
			t.Errorf("no ERROR log line naming %s in:\n%s", txn, logs)
		}
	}
	wantState(t, l, "c", Committed)
	wantState(t, l, "a", Aborted)
	wantAccount(t, l, "bank1-1", 800, 0, 0)
	wantAccount(t, l, "bank1-2", 200, 0, 0)
}

func TestBatchWriteFailureFailsEveryItem(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, l, logs := newTestService(t, usd("bank1-1", 1000), usd("bank1-2", 0))
	if v := mustPrepare(t, l, "prepared", debit("bank1-1", 100)); !v.Yes {
		t.Fatal(v)
	}
	addTrigger(t, l, `CREATE TRIGGER boom BEFORE INSERT ON transactions WHEN NEW.id = 'boom'
		BEGIN SELECT RAISE(ABORT, 'boom'); END`)
	resp, err := s.Batch(ctx, connect.NewRequest(&bankv1.BatchRequest{
		Completions: []*bankv1.Completion{
			{TransactionId: "prepared", Outcome: bankv1.Outcome_OUTCOME_COMMIT},
			{TransactionId: "prepared", Outcome: bankv1.Outcome_OUTCOME_UNSPECIFIED},
		},
		Prepares: []*bankv1.PrepareTransactionRequest{
			prepareRequest("ok", deadline, pbLeg("bank1-1", pbDebit, 10)).Msg,
			prepareRequest("nodir", deadline, pbLeg("bank1-1", bankv1.LegDirection_LEG_DIRECTION_UNSPECIFIED, 1)).Msg,
			prepareRequest("boom", deadline, pbLeg("bank1-2", pbCredit, 10)).Msg,
		},
	}))
	if err != nil {
		t.Fatal(err)
	}
	r, c := resp.Msg.GetPrepares(), resp.Msg.GetCompletions()
	if len(r) != 3 || len(c) != 2 {
		t.Fatalf("%d prepare and %d completion results, want 3 and 2", len(r), len(c))
	}
	for _, i := range []int{0, 2} {
		if e := r[i].GetError(); e.GetCode() != connect.CodeInternal.String() || e.GetReason() != ErrorReasonInternal || r[i].GetResponse() != nil {
			t.Errorf("prepare %d: %v, want an internal item error", i, r[i])
		}
	}
	if r[1].GetError().GetCode() != connect.CodeInvalidArgument.String() {
		t.Errorf("prepare 1: %v, want its own invalid_argument error", r[1])
	}
	if e := c[0].GetError(); e.GetCode() != connect.CodeInternal.String() || e.GetReason() != ErrorReasonInternal || c[0].GetState() != bankv1.TransactionState_TRANSACTION_STATE_UNSPECIFIED {
		t.Errorf("completion 0: %v, want an internal item error", c[0])
	}
	if c[1].GetError().GetCode() != connect.CodeInvalidArgument.String() {
		t.Errorf("completion 1: %v, want its own invalid_argument error", c[1])
	}
	if n := strings.Count(logs.String(), "ledger failure"); n != 1 {
		t.Errorf("%d 'ledger failure' lines, want 1, in:\n%s", n, logs)
	}
	wantUnknown(t, l, "ok")
	wantState(t, l, "prepared", Prepared)
	wantAccount(t, l, "bank1-1", 1000, 100, 0)
}

// TestBatchCompletesThenPrepares: one Batch call applies its completions before its prepares,
// in one write, so a hold released by an abort is available to a prepare of the same call; each
// item is answered as its single call would answer it.
func TestBatchCompletesThenPrepares(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, l, _ := newTestService(t, Account{ID: "bank1-1", Currency: "USD", Balance: 1000}, Account{ID: "bank1-2", Currency: "USD"})
	deadline := timestamppb.New(deadline) // the service's clock reads t0
	debit := func(id string, amount int64) *bankv1.PrepareTransactionRequest {
		return &bankv1.PrepareTransactionRequest{TransactionId: id, Deadline: deadline, Legs: []*bankv1.Leg{
			pbLeg("bank1-1", bankv1.LegDirection_LEG_DIRECTION_DEBIT, amount)}}
	}
	// Hold 800 of the 1000, and 100 more to be committed.
	first, err := s.Batch(ctx, connect.NewRequest(&bankv1.BatchRequest{Prepares: []*bankv1.PrepareTransactionRequest{debit("held", 800), debit("paid", 100)}}))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range first.Msg.GetPrepares() {
		if r.GetResponse().GetVote() != bankv1.Vote_VOTE_YES {
			t.Fatalf("setup prepare: %v", r)
		}
	}
	resp, err := s.Batch(ctx, connect.NewRequest(&bankv1.BatchRequest{
		Completions: []*bankv1.Completion{
			{TransactionId: "held", Outcome: bankv1.Outcome_OUTCOME_ABORT},
			{TransactionId: "paid", Outcome: bankv1.Outcome_OUTCOME_COMMIT},
			{TransactionId: "never-prepared", Outcome: bankv1.Outcome_OUTCOME_COMMIT},
		},
		// 850 fits only once the 800 are released: the completions come first.
		Prepares: []*bankv1.PrepareTransactionRequest{debit("next", 850), debit("too-much", 100)},
	}))
	if err != nil {
		t.Fatal(err)
	}
	c, p := resp.Msg.GetCompletions(), resp.Msg.GetPrepares()
	if len(c) != 3 || len(p) != 2 {
		t.Fatalf("%d completion and %d prepare results, want 3 and 2", len(c), len(p))
	}
	if c[0].GetState() != bankv1.TransactionState_TRANSACTION_STATE_ABORTED || c[1].GetState() != bankv1.TransactionState_TRANSACTION_STATE_COMMITTED {
		t.Errorf("completions = %v", c)
	}
	if c[2].GetError().GetReason() != ErrorReasonTransactionNotFound {
		t.Errorf("commit of an unknown transaction: %v", c[2])
	}
	if p[0].GetResponse().GetVote() != bankv1.Vote_VOTE_YES {
		t.Errorf("prepare of 850 after the abort released 800: %v", p[0])
	}
	if p[1].GetResponse().GetReason() != bankv1.VoteReason_VOTE_REASON_INSUFFICIENT_FUNDS {
		t.Errorf("prepare of 100 more: %v, want insufficient funds", p[1])
	}
	a, err := l.Account(ctx, "bank1-1")
	if err != nil {
		t.Fatal(err)
	}
	if a.Balance != 900 || a.Held != 850 {
		t.Errorf("bank1-1 balance %d held %d, want 900 and 850", a.Balance, a.Held)
	}
}
