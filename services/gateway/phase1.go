package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/internal/account"
	"github.com/paygate/paygate/internal/crashpoint"
)

// Phase one: asking the participants to prepare, and the decision their votes make.

// errLeaseLost is prepare's refusal to send prepares for a payment this process no longer
// certainly holds (see Coordinator.holds). The payment is undecided; whoever holds it now
// decides it.
var errLeaseLost = fmt.Errorf("%w: its driver changed", ErrPaymentInProgress)

// prepare asks every participant to prepare, in parallel, and collects their votes. A bank known
// to be down is not called: its vote is an error at once. It sends nothing, and returns
// errLeaseLost, when this process no longer holds the payment.
func (c *Coordinator) prepare(ctx context.Context, p paymentRecord) ([]vote, error) {
	if !c.holds(p.PaymentID) {
		return nil, errLeaseLost
	}
	crashpoint.Trace("prepare.begin", p.PaymentID)
	defer crashpoint.Trace("prepare.end", p.PaymentID)
	ctx, span := c.startSpan(ctx, "prepare", p.PaymentID)
	defer span.End()
	ctx, cancel := context.WithDeadline(ctx, p.Deadline)
	defer cancel()
	banks := participantsOf(p)
	// A payment that needs a bank known to be down fails at once (BANK_UNAVAILABLE), without
	// holding money at the other banks meanwhile.
	for _, bank := range banks {
		if _, ok := c.banks[bank]; !ok {
			v := vote{bank: bank, err: fmt.Errorf("%w %q", ErrUnknownBank, bank)}
			c.noteVote(p.PaymentID, v)
			return []vote{v}, nil
		}
		if err := c.health.check(bank); err != nil {
			v := vote{bank: bank, err: err}
			c.noteVote(p.PaymentID, v)
			return []vote{v}, nil
		}
	}
	votes := make([]vote, len(banks))
	reqs := make([]*bankv1.PrepareTransactionRequest, len(banks))
	for i, bank := range banks {
		req := &bankv1.PrepareTransactionRequest{
			TransactionId: p.PaymentID,
			Deadline:      timestamppb.New(p.Deadline),
			DecisionProof: decisionProof(c.proofKey, p.PaymentID, bank),
		}
		if account.Bank(p.From) == bank {
			req.Legs = append(req.Legs, &bankv1.Leg{AccountId: p.From, Direction: bankv1.LegDirection_LEG_DIRECTION_DEBIT, Amount: p.Amount, Currency: p.Currency})
		}
		if account.Bank(p.To) == bank {
			req.Legs = append(req.Legs, &bankv1.Leg{AccountId: p.To, Direction: bankv1.LegDirection_LEG_DIRECTION_CREDIT, Amount: p.Amount, Currency: p.Currency})
		}
		reqs[i] = req
	}
	each(len(banks), func(i int) {
		votes[i] = c.tracedPrepareOne(ctx, p.PaymentID, banks[i], reqs[i])
		c.noteVote(p.PaymentID, votes[i])
	})
	return votes, nil
}

// each runs f(0) to f(n-1) concurrently, f(n-1) on the calling goroutine, and returns when all
// have returned.
func each(n int, f func(i int)) {
	var wg sync.WaitGroup
	for i := range n - 1 {
		wg.Go(func() { f(i) })
	}
	if n > 0 {
		f(n - 1)
	}
	wg.Wait()
}

func (c *Coordinator) prepareOne(ctx context.Context, bank string, req *bankv1.PrepareTransactionRequest) vote {
	client, ok := c.banks[bank]
	if !ok {
		return vote{bank: bank, err: fmt.Errorf("%w %q", ErrUnknownBank, bank)}
	}
	if err := c.health.check(bank); err != nil {
		return vote{bank: bank, err: err}
	}
	c.notePrepareSent(req.TransactionId, bank)
	// Prepare is idempotent at the bank, so a call that failed to reach it (a connection
	// refused or reset, e.g. just after a restart) is sent again while the deadline allows,
	// rather than aborting the payment at the first hiccup.
	var resp *connect.Response[bankv1.PrepareTransactionResponse]
	var err error
	for attempt, backoff := 0, 50*time.Millisecond; ; attempt, backoff = attempt+1, backoff*3 {
		resp, err = client.PrepareTransaction(ctx, connect.NewRequest(req))
		if err == nil || connect.CodeOf(err) != connect.CodeUnavailable || attempt == 2 {
			break
		}
		if d, ok := ctx.Deadline(); ok && time.Until(d) < 2*backoff {
			break
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
		}
	}
	c.health.observe(bank, err, false)
	if err != nil {
		return vote{bank: bank, err: err}
	}
	v := vote{bank: bank, yes: resp.Msg.GetVote() == bankv1.Vote_VOTE_YES, reason: resp.Msg.GetReason(), msg: resp.Msg.GetMessage()}
	if !v.yes && v.msg == "" {
		v.msg = fmt.Sprintf("%s declined: %s", bank, v.reason)
	}
	return v
}

// decide turns votes into a decision: commit when every bank voted YES, otherwise abort with the
// first reason in participant order (the payer's bank first).
func decide(votes []vote) (decision, gatewayv1.FailureReason, string) {
	for _, v := range votes {
		if v.err != nil {
			if errors.Is(v.err, context.DeadlineExceeded) || connect.CodeOf(v.err) == connect.CodeDeadlineExceeded {
				return decisionAbort, gatewayv1.FailureReason_FAILURE_REASON_TIMEOUT,
					fmt.Sprintf("bank %s did not answer before the payment's deadline", v.bank)
			}
			return decisionAbort, gatewayv1.FailureReason_FAILURE_REASON_BANK_UNAVAILABLE,
				fmt.Sprintf("bank %s unavailable: %v", v.bank, connectMessage(v.err))
		}
		if !v.yes {
			return decisionAbort, failureReason(v.reason), v.msg
		}
	}
	return decisionCommit, gatewayv1.FailureReason_FAILURE_REASON_UNSPECIFIED, ""
}

func connectMessage(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Message()
	}
	return err.Error()
}

func failureReason(r bankv1.VoteReason) gatewayv1.FailureReason {
	switch r {
	case bankv1.VoteReason_VOTE_REASON_INSUFFICIENT_FUNDS:
		return gatewayv1.FailureReason_FAILURE_REASON_INSUFFICIENT_FUNDS
	case bankv1.VoteReason_VOTE_REASON_UNKNOWN_ACCOUNT:
		return gatewayv1.FailureReason_FAILURE_REASON_UNKNOWN_ACCOUNT
	case bankv1.VoteReason_VOTE_REASON_CURRENCY_MISMATCH:
		return gatewayv1.FailureReason_FAILURE_REASON_CURRENCY_MISMATCH
	case bankv1.VoteReason_VOTE_REASON_ACCOUNT_CLOSED:
		return gatewayv1.FailureReason_FAILURE_REASON_ACCOUNT_CLOSED
	case bankv1.VoteReason_VOTE_REASON_DEADLINE_EXCEEDED, bankv1.VoteReason_VOTE_REASON_ALREADY_ABORTED:
		return gatewayv1.FailureReason_FAILURE_REASON_TIMEOUT
	case bankv1.VoteReason_VOTE_REASON_BALANCE_OVERFLOW:
		return gatewayv1.FailureReason_FAILURE_REASON_BALANCE_OVERFLOW
	}
	return gatewayv1.FailureReason_FAILURE_REASON_DECLINED
}
