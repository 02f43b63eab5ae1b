package chaos

import (
	"context"
	"fmt"
	"sync"
	"time"

	"connectrpc.com/connect"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
	"github.com/paygate/paygate/internal/account"
	"github.com/paygate/paygate/internal/audit"
	"github.com/paygate/paygate/internal/launch"
)

// check verifies the invariants of the design against the settled ledgers:
//
//   - conservation: the sum of all balances is the initial total plus deposits minus
//     withdrawals, and changed by exactly the deposits minus the withdrawals of the run
//     (audit.Conserved);
//   - no overdraft: no balance and no available amount is negative;
//   - nothing held: no hold and no pending credit is left at any bank;
//   - atomicity: each payment is committed at all of its banks or at none;
//   - outcomes match the ledgers: SUCCEEDED is committed where it should be, FAILED nowhere;
//   - exactly once: each account moved by exactly the sum of the SUCCEEDED payments touching it
//     and of the SUCCEEDED refunds touching it (from the refunded payment's payee back to its
//     payer), plus its deposits minus its withdrawals as the banks journaled them;
//   - atomicity of refunds too: each refund, a transaction of its own, committed at both of its
//     banks or at neither, as its outcome says (checkRefunds checks the refunds' amounts);
//   - every answer a client got for a payment_id is its final outcome;
//   - every accepted payment has a final outcome (resolveAll reports the ones without);
//   - the journals hold exactly the entries the workload made, each once and as answered
//     (checkEntries), and their sums are the banks' summaries' deposits and withdrawals.
func check(ctx context.Context, c *launch.System, before, after audit.Ledger, b *book, v *violations) {
	if err := audit.Conserved(before, after); err != nil {
		v.addf("conservation: %v", err)
	}
	if after.Held != 0 || after.Pending != 0 {
		v.addf("holds left: held %d, pending credit %d", after.Held, after.Pending)
	}
	if len(after.Accounts) != len(before.Accounts) {
		v.addf("accounts: %d before, %d after", len(before.Accounts), len(after.Accounts))
	}
	for _, id := range sortedKeys(after.Accounts) {
		a := after.Accounts[id]
		if a.GetBalance() < 0 || a.GetAvailable() < 0 {
			v.addf("overdraft: %s has balance %d, available %d", id, a.GetBalance(), a.GetAvailable())
		}
		if a.GetHeld() != 0 || a.GetPendingCredit() != 0 {
			v.addf("hold left: %s holds %d, pending credit %d", id, a.GetHeld(), a.GetPendingCredit())
		}
	}

	all := b.all()
	want := map[string]int64{}
	for _, p := range all {
		b.mu.Lock()
		final, answers := p.final, append([]gatewayv1.PaymentStatus(nil), p.answers...)
		b.mu.Unlock()
		if final == nil {
			continue // reported by resolveAll
		}
		if final.GetAmount() != p.amount || final.GetFromAccount() != p.from || final.GetToAccount() != p.to {
			v.addf("payment %s: recorded as %s → %s %d, sent as %s → %s %d", p.id,
				final.GetFromAccount(), final.GetToAccount(), final.GetAmount(), p.from, p.to, p.amount)
		}
		if leak := internalText(final.GetFailureMessage()); leak != "" {
			v.addf("payment %s: its failure message shows the server's internal text %q: %s", p.id, leak, final.GetFailureMessage())
		}
		for _, s := range answers {
			if s != final.GetStatus() {
				v.addf("payment %s: a client was told %v, the payment ended %v", p.id, s, final.GetStatus())
			}
		}
		if final.GetStatus() == gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
			want[p.from] -= p.amount
			want[p.to] += p.amount
		}
	}
	journal, err := readJournals(ctx, directBanks(c))
	if err != nil {
		v.addf("journals: %v (the entries and exactly once are not checked)", err)
	} else {
		entries, totals := checkEntries(b, journal, v)
		if totals.deposited != after.Deposited || totals.withdrawn != after.Withdrawn {
			v.addf("journals: deposits %d and withdrawals %d journaled, the banks' summaries say %d and %d",
				totals.deposited, totals.withdrawn, after.Deposited, after.Withdrawn)
		}
		refunds := map[string]int64{}
		refundMoves(b, refunds)
		for _, id := range sortedKeys(after.Accounts) {
			got := after.Accounts[id].GetBalance() - before.Accounts[id].GetBalance()
			if got != want[id]+refunds[id]+entries[id] {
				v.addf("exactly once: %s moved by %d; the succeeded payments add up to %d, the succeeded refunds to %d, its deposits minus its withdrawals to %d",
					id, got, want[id], refunds[id], entries[id])
			}
		}
	}

	// Atomicity, per payment, from the banks' own transaction records.
	work := make(chan *payment)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				checkAtomic(ctx, c, p, b, v)
			}
		}()
	}
	for _, p := range all {
		work <- p
	}
	close(work)
	wg.Wait()
	checkRefundsAtomic(ctx, c, b, v)
}

// checkEntries checks the deposits and withdrawals the workload sent against the banks'
// journals, and returns by how much the journaled entries moved each account (deposits minus
// withdrawals) and the journals' sums, which it also records in b:
//
//   - every journaled entry is one the workload sent, journaled by the bank of its account with
//     the kind, account, amount and currency sent, and is in the journals once;
//   - every entry answered as journaled is in the journal, with the balance_after of every
//     answer it had (replays included);
//   - an entry refused (insufficient_funds) is not in the journal. The bank keeps no trace of a
//     refused entry_id, so an earlier request of the entry that went unanswered may have been
//     applied after the refusal: then the entry is journaled without a violation, with a note.
//
// An entry that never had an answer is reported by resolveEntries; its journal decides.
func checkEntries(b *book, journal []journaled, v *violations) (map[string]int64, journalTotals) {
	sent := map[string]*entry{}
	for _, e := range b.allEntries() {
		sent[e.id] = e
	}
	moved := map[string]int64{}
	var totals journalTotals
	found := map[string][]journaled{}
	for _, j := range journal {
		je := j.entry
		found[je.GetEntryId()] = append(found[je.GetEntryId()], j)
		switch je.GetKind() {
		case bankv1.EntryKind_ENTRY_KIND_DEPOSIT:
			totals.deposits++
			totals.deposited += je.GetAmount()
			moved[je.GetAccountId()] += je.GetAmount()
		case bankv1.EntryKind_ENTRY_KIND_WITHDRAWAL:
			totals.withdrawals++
			totals.withdrawn += je.GetAmount()
			moved[je.GetAccountId()] -= je.GetAmount()
		default:
			v.addf("entry %s at %s: kind %v", je.GetEntryId(), j.bank, je.GetKind())
		}
		if je.GetBalanceAfter() < 0 {
			v.addf("entry %s at %s: balance after %d", je.GetEntryId(), j.bank, je.GetBalanceAfter())
		}
		e := sent[je.GetEntryId()]
		switch {
		case e == nil:
			v.addf("entry %s (%s %s %d) in the journal of %s was never sent", je.GetEntryId(), kindName(je.GetKind()),
				je.GetAccountId(), je.GetAmount(), j.bank)
		case j.bank != e.bank || je.GetKind() != e.kind || je.GetAccountId() != e.account || je.GetAmount() != e.amount ||
			je.GetCurrency() != "USD":
			v.addf("entry %s: sent as %s, journaled by %s as %s %s %d %s", e, e.bank, j.bank, kindName(je.GetKind()),
				je.GetAccountId(), je.GetAmount(), je.GetCurrency())
		}
	}
	for id, js := range found {
		if len(js) > 1 {
			banks := make([]string, len(js))
			for i, j := range js {
				banks[i] = j.bank
			}
			v.addf("entry %s journaled %d times (%v)", id, len(js), banks)
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.journal = totals
	for _, e := range b.entries {
		js := found[e.id]
		for _, a := range e.answers {
			switch {
			case a.refused == "" && len(js) == 0:
				v.addf("entry %s: answered journaled (balance after %d), not in the journal", e, a.balanceAfter)
			case a.refused == "" && js[0].entry.GetBalanceAfter() != a.balanceAfter:
				v.addf("entry %s: answered with balance after %d, journaled with %d", e, a.balanceAfter, js[0].entry.GetBalanceAfter())
			case a.refused != "" && len(js) > 0 && e.lost == 0:
				v.addf("entry %s: refused (%s), yet journaled with balance after %d", e, a.refused, js[0].entry.GetBalanceAfter())
			case a.refused != "" && len(js) > 0:
				b.notes = append(b.notes, fmt.Sprintf("entry %s was refused (%s), and journaled by one of its %d earlier requests that had no answer",
					e, a.refused, e.lost))
			}
		}
	}
	return moved, totals
}

func checkAtomic(ctx context.Context, c *launch.System, p *payment, b *book, v *violations) {
	b.mu.Lock()
	final := p.final
	b.mu.Unlock()
	checkTxn(ctx, c, "payment "+p.id, p.id, p.from, p.to, final, v)
}

// checkTxn checks the banks' records of transaction id (what, in violations), which moves money
// from one account to another and ended as final (nil when unknown): committed at both of its
// banks or at none, nowhere else, nothing left prepared, and committed exactly when final is
// SUCCEEDED.
func checkTxn(ctx context.Context, c *launch.System, what, id, from, to string, final *gatewayv1.Payment, v *violations) {
	var (
		states map[string]bankv1.TransactionState
		err    error
	)
	for range 5 {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		states, err = c.TransactionStates(cctx, id)
		cancel()
		if err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		v.addf("%s: transaction states: %v", what, err)
		return
	}
	participants := map[string]bool{account.Bank(from): true, account.Bank(to): true}
	committed := 0
	for bank, s := range states {
		switch s {
		case bankv1.TransactionState_TRANSACTION_STATE_COMMITTED:
			committed++
			if !participants[bank] {
				v.addf("%s: committed at %s, which is not one of its banks", what, bank)
			}
		case bankv1.TransactionState_TRANSACTION_STATE_ABORTED:
		default:
			v.addf("%s: %s at %s after quiescence", what, s, bank)
		}
	}
	switch {
	case committed != 0 && committed != len(participants):
		v.addf("atomicity: %s committed at %d of its %d banks: %v", what, committed, len(participants), states)
	case final == nil:
	case final.GetStatus() == gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED && committed != len(participants):
		v.addf("%s SUCCEEDED but committed at %d of its %d banks: %v", what, committed, len(participants), states)
	case final.GetStatus() == gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED && committed != 0:
		v.addf("%s FAILED but committed at %d banks: %v", what, committed, states)
	}
}

// checkReplicas asks every gateway replica for every payment (GetPayment, as its sender) and
// checks that each answers the payment's final outcome and refunded_amount: replicas share one
// payment log, so a payment has one outcome whichever replica is asked.
func checkReplicas(ctx context.Context, clients []*client, b *book, v *violations, log *logger) {
	byUser := map[string]*client{}
	for _, c := range clients {
		byUser[c.user] = c
	}
	all := b.all()
	log.printf("asking every gateway replica for each of the %d payments", len(all))
	work := make(chan *payment)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				b.mu.Lock()
				final, again := p.final, p.refunded
				b.mu.Unlock()
				if final == nil {
					continue // reported by resolveAll
				}
				// A payment with refunds was read again after them (checkRefunds).
				refunded := final.GetRefundedAmount()
				if again != nil {
					refunded = again.GetRefundedAmount()
				}
				uc := byUser[p.user].clients()
				for r, pc := range uc.replicas {
					got, err := replicaPayment(ctx, pc, p.id)
					switch {
					case err != nil:
						v.addf("payment %s: replica %d: GetPayment: %v", p.id, r+1, err)
					case got.GetStatus() != final.GetStatus() || got.GetFailureReason() != final.GetFailureReason() ||
						got.GetAmount() != final.GetAmount() || got.GetFromAccount() != final.GetFromAccount() || got.GetToAccount() != final.GetToAccount():
						v.addf("payment %s: replica %d answers %v %v (%s → %s %d), another %v %v (%s → %s %d)", p.id, r+1,
							got.GetStatus(), got.GetFailureReason(), got.GetFromAccount(), got.GetToAccount(), got.GetAmount(),
							final.GetStatus(), final.GetFailureReason(), final.GetFromAccount(), final.GetToAccount(), final.GetAmount())
					case got.GetRefundedAmount() != refunded:
						v.addf("payment %s: replica %d answers refunded_amount %d, another %d", p.id, r+1, got.GetRefundedAmount(), refunded)
					}
				}
			}
		}()
	}
	for _, p := range all {
		work <- p
	}
	close(work)
	wg.Wait()
}

// replicaPayment asks one replica for payment id, retrying errors for a few seconds (the
// replica may still be coming back after the last fault).
func replicaPayment(ctx context.Context, pc gatewayv1connect.PaymentServiceClient, id string) (*gatewayv1.Payment, error) {
	var err error
	for range 20 {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var resp *connect.Response[gatewayv1.GetPaymentResponse]
		resp, err = pc.GetPayment(cctx, connect.NewRequest(&gatewayv1.GetPaymentRequest{PaymentId: id}))
		cancel()
		if err == nil {
			return resp.Msg.GetPayment(), nil
		}
		if connect.CodeOf(err) == connect.CodeNotFound || ctx.Err() != nil {
			return nil, err
		}
		time.Sleep(250 * time.Millisecond)
	}
	return nil, err
}
