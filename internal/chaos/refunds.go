package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"connectrpc.com/connect"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/internal/launch"
	"github.com/paygate/paygate/internal/money"
)

// Refunds. About one operation in refundEvery of each client is a refund of a payment made to
// one of its user's accounts that a client was answered SUCCEEDED (PaymentService.RefundPayment,
// made by the payee, as the API requires), drawn from a generator of its own so that the
// payments and entries of a seed stay what they were: a part of what is left of the payment,
// all that is left (amount 0, or the amount itself), more than can be left (over the cap,
// which the gateway must refuse, FAILED_PRECONDITION refund_exceeds_payment, recording
// nothing), or two or three refunds of the same payment at once, at different replicas, that
// together may pass the cap. An ambiguous error is retried with the same refund_id, at the next
// replica, for up to Config.RetryFor; some refunds are sent twice at once, or again after their
// answer, with the same refund_id, and must be answered alike (replayed); the first request of
// some has a deadline of a few milliseconds, so that its answer is lost while the gateway
// decides it. After the faults, a refund without an answer is sent once more, and every refund
// is looked up (GetPayment).
const (
	// refundEvery: one operation in refundEvery of a client is a refund (when its user has
	// been paid at all).
	refundEvery = 8
	// refundExceeds is the reason of the refusal of a refund larger than what is left.
	refundExceeds = "refund_exceeds_payment"
	// refundStream+i is the PCG stream of client i's refund generator (the scheduler's is 0,
	// client i's workload's i+1).
	refundStream = 1000
)

// refund is one intended refund and everything the clients saw of it.
type refund struct {
	id   string
	of   *payment
	user string // the refunder: the user of the payment's payee account
	// amount asked for, in minor units; 0 means all that is left.
	amount int64
	kind   string

	// Guarded by book.mu.

	// hurry, when not 0, is the deadline of the refund's first request: a few milliseconds, so
	// that the gateway sometimes decides the refund after its caller gave up, and the retry
	// must find its outcome (a replay), not refund twice.
	hurry time.Duration
	// together: sent twice at once with the same refund_id (either answer may be the replay).
	together bool
	requests int            // RefundPayment calls sent
	lost     int            // calls without an answer (ambiguous errors, PROCESSING)
	answers  []refundAnswer // the answers, in order
	counted  bool           // a SUCCEEDED answer was added to of.refundedKnown
	// final is the refund as GetPayment showed it after quiescence; nil when the gateway
	// never recorded it (every answer was a refusal).
	final *gatewayv1.Payment
}

// refundAnswer is one answer of the gateway to RefundPayment: an outcome, or a refusal.
type refundAnswer struct {
	status   gatewayv1.PaymentStatus // of an outcome
	amount   int64                   // the refund's amount, of an outcome
	refused  string                  // the reason of a refusal (nothing recorded), "" for an outcome
	replayed bool
}

func (r *refund) String() string {
	return fmt.Sprintf("%s (%s of %s, %d asked)", r.id, r.kind, r.of.id, r.amount)
}

// ownerOf returns the index of the user whose account id is, or -1 (an unknown payee).
func ownerOf(id string) int {
	bi := bankIndex(id)
	if bi < 0 {
		return -1
	}
	n, err := strconv.Atoi(id[len(bankNames[bi])+1:])
	if err != nil {
		return -1
	}
	i := n - (bi+1)*1000 - 1
	if i < 0 || i >= len(userNames) {
		return -1
	}
	return i
}

// succeeded records that a client was answered SUCCEEDED for p: from now on its payee's
// client may refund it. Called with b.mu held.
func (b *book) succeededLocked(p *payment) {
	if p.refundable {
		return
	}
	u := ownerOf(p.to)
	if u < 0 {
		return
	}
	p.refundable = true
	b.received[userNames[u]] = append(b.received[userNames[u]], p)
}

// pickReceived draws one of the payments made to user's accounts that can be refunded, and
// what is left of it as far as the clients know (its amount less the refunds they were
// answered SUCCEEDED: never less than what is really left); nil when there is none yet.
func (b *book) pickReceived(user string, rng *rand.Rand) (*payment, int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ps := b.received[user]
	if len(ps) == 0 {
		return nil, 0
	}
	p := ps[rng.IntN(len(ps))]
	return p, p.amount - p.refundedKnown
}

// addRefund records r, which a client is about to send.
func (b *book) addRefund(r *refund) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refunds = append(b.refunds, r)
	r.of.refunds = append(r.of.refunds, r)
	b.refundKinds[r.kind]++
}

func (b *book) refundRetry(why string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refundRetries[why]++
}

func (b *book) refundError(err error) {
	key := errorKey(err)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refundErrors[key]++
}

func (b *book) allRefunds() []*refund {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*refund(nil), b.refunds...)
}

// refundsOf returns p's refunds and the sum of those whose final outcome is SUCCEEDED.
func (b *book) refundsOf(p *payment) ([]*refund, int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var sum int64
	for _, r := range p.refunds {
		if r.final.GetStatus() == gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
			sum += r.final.GetAmount()
		}
	}
	return append([]*refund(nil), p.refunds...), sum
}

// refundOnce makes one refund operation of a payment made to the client's user, if there is
// one yet: a partial refund, a refund of all that is left, one over the cap, or two or three
// at once. Every draw comes from the client's refund generator.
func (c *client) refundOnce() {
	p, left := c.book.pickReceived(c.user, c.refundRng)
	if p == nil {
		return
	}
	rng := c.refundRng
	mk := func(kind string, amount int64) *refund {
		r := &refund{id: c.newRefundID(), of: p, user: c.user, amount: amount, kind: kind}
		c.book.addRefund(r)
		return r
	}
	k := rng.IntN(100)
	switch {
	case left <= 0 || (k >= 60 && k < 70):
		// More than can be left: at least one more than the clients know to be left.
		c.sendRefundOnce(mk("over_cap", max(left, 0)+1+rng.Int64N(1000)), rng)
	case k < 35:
		c.sendRefundOnce(mk("partial", 1+rng.Int64N(max(left/2, 1))), rng)
	case k < 50:
		c.sendRefundOnce(mk("all_left", 0), rng)
	case k < 60:
		c.sendRefundOnce(mk("rest", left), rng)
	default:
		// Two or three at once, each at another replica: together they may pass the cap.
		n := 2 + rng.IntN(2)
		rs := make([]*refund, n)
		for i := range rs {
			rs[i] = mk("concurrent", 1+left/3+rng.Int64N(max(left/2, 1)))
		}
		var wg sync.WaitGroup
		for i, r := range rs {
			wg.Add(1)
			go func() { defer wg.Done(); c.sendRefund(r, i, true) }()
		}
		wg.Wait()
	}
}

// sendRefundOnce sends r, and with one chance in ten each sends it twice at once or again
// after its answer (same refund_id). The first request of one refund in eight has a deadline
// of 2 to 30 ms.
func (c *client) sendRefundOnce(r *refund, rng *rand.Rand) {
	if rng.IntN(8) == 0 {
		hurry := between(rng, 2*time.Millisecond, 30*time.Millisecond)
		c.book.mu.Lock()
		r.hurry = hurry
		c.book.mu.Unlock()
	}
	switch k := rng.IntN(10); k {
	case 0:
		c.book.mu.Lock()
		r.together = true
		c.book.mu.Unlock()
		c.book.refundRetry("concurrent")
		var wg sync.WaitGroup
		wg.Add(2)
		// Either may reach the gateway first, so neither must be a fresh answer.
		go func() { defer wg.Done(); c.sendRefund(r, 0, false) }()
		go func() { defer wg.Done(); c.sendRefund(r, 1, false) }()
		wg.Wait()
	case 1:
		c.sendRefund(r, 0, true)
		c.book.refundRetry("sequential")
		c.sendRefund(r, 1, false)
	default:
		c.sendRefund(r, 0, true)
	}
}

// newRefundID returns a UUIDv4 drawn from the client's refund generator.
func (c *client) newRefundID() string {
	var b [16]byte
	for i := 0; i < 16; i += 8 {
		v := c.refundRng.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// sendRefund sends r until the gateway answers an outcome or a refusal, retrying ambiguous
// errors (and PROCESSING) with the same refund_id for up to cfg.RetryFor, each retry at the
// next replica. fresh says this is the refund's first send (its first request must not be
// answered as a replay).
func (c *client) sendRefund(r *refund, offset int, fresh bool) {
	deadline := time.Now().Add(c.cfg.RetryFor)
	for attempt := 1; ; attempt++ {
		if attempt > 1 {
			c.book.refundRetry("ambiguous")
		}
		answered, err := c.requestRefund(r, attempt, c.home+offset+attempt-1, fresh && attempt == 1)
		if answered {
			return
		}
		if connect.CodeOf(err) == connect.CodeUnauthenticated {
			if lerr := c.login(context.Background()); lerr != nil {
				c.book.refundError(lerr)
			}
		}
		if time.Now().After(deadline) {
			return
		}
		time.Sleep(min(50*time.Millisecond<<min(attempt, 5), time.Second))
	}
}

// requestRefund sends one RefundPayment for r to replica (modulo the replicas) and records it;
// it reports whether the gateway answered (an outcome or a refusal). An answer that describes
// another refund, a first request answered as a replay, a refund over the cap that succeeded,
// and any refusal but refund_exceeds_payment are violations.
func (c *client) requestRefund(r *refund, attempt, replica int, first bool) (bool, error) {
	b, p := c.book, r.of
	b.mu.Lock()
	r.requests++
	timeout := c.cfg.TxnTimeout + 5*time.Second
	if r.requests == 1 && r.hurry > 0 {
		timeout = r.hurry
	}
	b.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req := connect.NewRequest(&gatewayv1.RefundPaymentRequest{RefundId: r.id, PaymentId: p.id, Amount: r.amount, Reason: "chaos " + r.kind})
	req.Header().Set("Paygate-Attempt", strconv.Itoa(attempt))
	resp, err := c.clients().at(replica).RefundPayment(ctx, req)
	if err != nil {
		b.refundError(err)
		if leak := internalText(err.Error()); leak != "" {
			c.v.addf("refund %s: the answer shows the server's internal text %q: %v", r, leak, err)
		}
		if ambiguous(err) || connect.CodeOf(err) == connect.CodeUnauthenticated {
			b.mu.Lock()
			r.lost++
			b.mu.Unlock()
			return false, err
		}
		reason := connectReason(err)
		if reason != refundExceeds {
			c.v.addf("refund %s: unexpected refusal: %v", r, err)
		}
		b.mu.Lock()
		r.answers = append(r.answers, refundAnswer{refused: reason})
		b.mu.Unlock()
		return true, nil
	}
	got := resp.Msg.GetRefund()
	if got.GetPaymentId() != r.id || got.GetRefundOf() != p.id || got.GetFromAccount() != p.to || got.GetToAccount() != p.from ||
		got.GetCurrency() != "USD" || got.GetUsername() != r.user || (r.amount != 0 && got.GetAmount() != r.amount) ||
		got.GetAmount() <= 0 || got.GetAmount() > p.amount {
		c.v.addf("refund %s of %s (%s → %s %d): the answer describes another refund: %v", r, p.id, p.from, p.to, p.amount, got)
	}
	if first && resp.Msg.GetReplayed() {
		c.v.addf("refund %s: its first request was answered as a replay", r)
	}
	if after := resp.Msg.GetPayment(); after.GetRefundedAmount() < 0 || after.GetRefundedAmount() > p.amount {
		c.v.addf("refund %s: the refunded payment %s of %d is answered with refunded_amount %d", r, p.id, p.amount, after.GetRefundedAmount())
	}
	s := got.GetStatus()
	if s == gatewayv1.PaymentStatus_PAYMENT_STATUS_PROCESSING {
		b.mu.Lock()
		r.lost++
		b.mu.Unlock()
		return false, nil
	}
	if s == gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED && r.kind == "over_cap" {
		c.v.addf("refund %s: over the cap (more than the clients' refunds left of %d), yet it SUCCEEDED for %d", r, p.amount, got.GetAmount())
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	r.answers = append(r.answers, refundAnswer{status: s, amount: got.GetAmount(), replayed: resp.Msg.GetReplayed()})
	if s == gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED && !r.counted {
		r.counted = true
		p.refundedKnown += got.GetAmount()
	}
	return true, nil
}

// resolveRefunds finds the final outcome of every refund once the faults are over, as the
// refunder: GetPayment, and for a refund the gateway never recorded that never had an answer
// either (every request was lost), RefundPayment again with the same refund_id. A refund
// without an outcome or a refusal when ctx ends is a violation.
func resolveRefunds(ctx context.Context, clients []*client, b *book, v *violations, log *logger) {
	byUser := map[string]*client{}
	for _, c := range clients {
		byUser[c.user] = c
	}
	all := b.allRefunds()
	if len(all) > 0 {
		log.printf("resolving the %d refunds", len(all))
	}
	work := make(chan *refund)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range work {
				resolveRefund(ctx, byUser[r.user], r, b, v)
			}
		}()
	}
	for _, r := range all {
		work <- r
	}
	close(work)
	wg.Wait()
}

func resolveRefund(ctx context.Context, c *client, r *refund, b *book, v *violations) {
	var last error
	for attempt := 1; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := c.clients().at(c.home+attempt).GetPayment(cctx, connect.NewRequest(&gatewayv1.GetPaymentRequest{PaymentId: r.id}))
		cancel()
		switch {
		case err == nil && resp.Msg.GetPayment().GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_PROCESSING:
			b.mu.Lock()
			r.final = resp.Msg.GetPayment()
			b.mu.Unlock()
			return
		case connect.CodeOf(err) == connect.CodeNotFound:
			b.mu.Lock()
			answered := len(r.answers) > 0
			b.mu.Unlock()
			if answered {
				return // refused, never recorded (checkRefunds checks that no outcome was answered)
			}
			// Never recorded, never answered: sent again, as a client's queue would.
			b.refundRetry("after_faults")
			if ok, err := c.requestRefund(r, 100+attempt, c.home+attempt, false); ok {
				continue // look it up again
			} else if err != nil {
				last = err
			}
		case connect.CodeOf(err) == connect.CodeUnauthenticated:
			c.login(ctx)
			last = err
		case err != nil:
			last = err
		default:
			last = fmt.Errorf("still PROCESSING")
		}
		if !sleepCtx(ctx, 200*time.Millisecond) {
			v.addf("refund %s: no final outcome after the faults stopped: %v", r, last)
			return
		}
	}
}

// checkRefunds verifies the refunds against what the gateway recorded, after resolveRefunds:
//
//   - every recorded refund is the one sent: of its payment, from its payee back to its payer,
//     by the payee, for the amount asked (or, asked 0, for more than 0 and at most the
//     payment's amount), and never a refund over the cap that SUCCEEDED;
//   - every outcome a client was answered for a refund_id is its final outcome, for the same
//     amount; a refund answered refused is not recorded (unless one of its earlier requests
//     went unanswered: then it may have been admitted after the refusal, a note);
//   - per payment, the sum of its SUCCEEDED refunds is its refunded_amount, which never
//     exceeds its amount, as its payer reads it (GetPayment); a payment without refunds has
//     none; a payment that did not succeed has no succeeded refund.
//
// The ledgers' side (each account moved by its payments, refunds and entries; each refund at
// both banks or neither) is check's.
func checkRefunds(ctx context.Context, clients []*client, b *book, v *violations) {
	byUser := map[string]*client{}
	for _, c := range clients {
		byUser[c.user] = c
	}
	for _, r := range b.allRefunds() {
		p := r.of
		b.mu.Lock()
		final, answers, lost := r.final, append([]refundAnswer(nil), r.answers...), r.lost
		b.mu.Unlock()
		refused := ""
		for _, a := range answers {
			if a.refused != "" {
				refused = a.refused
			}
		}
		if final == nil {
			for _, a := range answers {
				if a.refused == "" {
					v.addf("refund %s: answered %v for %d, yet the gateway has no such refund", r, a.status, a.amount)
				}
			}
			continue
		}
		if final.GetRefundOf() != p.id || final.GetFromAccount() != p.to || final.GetToAccount() != p.from || final.GetUsername() != r.user ||
			(r.amount != 0 && final.GetAmount() != r.amount) || final.GetAmount() <= 0 || final.GetAmount() > p.amount {
			v.addf("refund %s of %s (%s → %s %d): recorded as a refund of %q, %s → %s %d by %q", r, p.id, p.from, p.to, p.amount,
				final.GetRefundOf(), final.GetFromAccount(), final.GetToAccount(), final.GetAmount(), final.GetUsername())
		}
		if leak := internalText(final.GetFailureMessage()); leak != "" {
			v.addf("refund %s: its failure message shows the server's internal text %q: %s", r, leak, final.GetFailureMessage())
		}
		if r.kind == "over_cap" && final.GetStatus() == gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
			v.addf("refund %s: over the cap, yet recorded SUCCEEDED for %d", r, final.GetAmount())
		}
		for _, a := range answers {
			if a.refused == "" && (a.status != final.GetStatus() || a.amount != final.GetAmount()) {
				v.addf("refund %s: a client was told %v for %d, the refund ended %v for %d", r, a.status, a.amount, final.GetStatus(), final.GetAmount())
			}
		}
		if refused != "" {
			if lost == 0 {
				v.addf("refund %s: refused (%s), yet recorded %v for %d", r, refused, final.GetStatus(), final.GetAmount())
			} else {
				b.mu.Lock()
				b.notes = append(b.notes, fmt.Sprintf("refund %s was refused (%s), and recorded (%v) by one of its %d earlier requests that had no answer",
					r, refused, final.GetStatus(), lost))
				b.mu.Unlock()
			}
		}
	}

	// Per payment: the refunds' sum is refunded_amount, as the payer reads it.
	work := make(chan *payment)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				checkRefunded(ctx, byUser[p.user], p, b, v)
			}
		}()
	}
	for _, p := range b.all() {
		work <- p
	}
	close(work)
	wg.Wait()
}

// checkRefunded checks one payment's refunded_amount against its refunds. A payment without
// refunds is checked against the outcome resolveAll read; one with refunds is read again.
func checkRefunded(ctx context.Context, c *client, p *payment, b *book, v *violations) {
	refunds, sum := b.refundsOf(p)
	b.mu.Lock()
	final := p.final
	b.mu.Unlock()
	if final == nil {
		return // reported by resolveAll
	}
	if len(refunds) > 0 {
		got, err := replicaPayment(ctx, c.clients().at(c.home), p.id)
		if err != nil {
			v.addf("payment %s: GetPayment after its refunds: %v", p.id, err)
			return
		}
		final = got
		b.mu.Lock()
		p.refunded = got
		b.mu.Unlock()
	}
	switch {
	case final.GetRefundedAmount() != sum:
		v.addf("payment %s of %d: refunded_amount %d, its %d refunds' succeeded ones add up to %d", p.id, p.amount,
			final.GetRefundedAmount(), len(refunds), sum)
	case sum > p.amount:
		v.addf("payment %s of %d: refunded %d, more than its amount", p.id, p.amount, sum)
	case sum > 0 && final.GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED:
		v.addf("payment %s ended %v, yet %d of it was refunded", p.id, final.GetStatus(), sum)
	}
}

// checkReplicaRefunds asks every gateway replica for every recorded refund (as its refunder)
// and checks that each answers its final outcome and amount.
func checkReplicaRefunds(ctx context.Context, clients []*client, b *book, v *violations) {
	byUser := map[string]*client{}
	for _, c := range clients {
		byUser[c.user] = c
	}
	work := make(chan *refund)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range work {
				b.mu.Lock()
				final := r.final
				b.mu.Unlock()
				if final == nil {
					continue
				}
				for i, pc := range byUser[r.user].clients().replicas {
					got, err := replicaPayment(ctx, pc, r.id)
					switch {
					case err != nil:
						v.addf("refund %s: replica %d: GetPayment: %v", r, i+1, err)
					case got.GetStatus() != final.GetStatus() || got.GetAmount() != final.GetAmount() || got.GetRefundOf() != final.GetRefundOf():
						v.addf("refund %s: replica %d answers %v for %d (of %q), another %v for %d (of %q)", r, i+1,
							got.GetStatus(), got.GetAmount(), got.GetRefundOf(), final.GetStatus(), final.GetAmount(), final.GetRefundOf())
					}
				}
			}
		}()
	}
	for _, r := range b.allRefunds() {
		work <- r
	}
	close(work)
	wg.Wait()
}

// refundMoves adds to want how the refunds that SUCCEEDED moved each account: from the
// refunded payment's payee back to its payer.
func refundMoves(b *book, want map[string]int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, r := range b.refunds {
		if r.final.GetStatus() == gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
			want[r.final.GetFromAccount()] -= r.final.GetAmount()
			want[r.final.GetToAccount()] += r.final.GetAmount()
		}
	}
}

// checkRefundsAtomic checks every refund at the banks as checkAtomic checks a payment: it is a
// transaction of its own, from the payee's bank to the payer's.
func checkRefundsAtomic(ctx context.Context, c *launch.System, b *book, v *violations) {
	work := make(chan *refund)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range work {
				b.mu.Lock()
				final := r.final
				b.mu.Unlock()
				checkTxn(ctx, c, "refund "+r.id, r.id, r.of.to, r.of.from, final, v)
			}
		}()
	}
	for _, r := range b.allRefunds() {
		work <- r
	}
	close(work)
	wg.Wait()
}

// fillRefundsLocked adds the refunds to the report. Called with b.mu held.
func (b *book) fillRefundsLocked(r *Report) {
	r.Refunds = len(b.refunds)
	for _, f := range b.refunds {
		r.RefundRequests += f.requests
		r.RefundAnswers += len(f.answers)
		if len(f.answers) > 0 && f.answers[0].replayed && !f.together {
			r.RefundsAnswerLost++
		}
		switch {
		case f.final != nil && f.final.GetStatus() == gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED:
			r.RefundOutcomes["succeeded"]++
			r.Refunded += f.final.GetAmount()
		case f.final != nil:
			r.RefundOutcomes["failed/"+f.final.GetFailureReason().String()]++
		case len(f.answers) > 0:
			r.RefundOutcomes["refused/"+f.answers[len(f.answers)-1].refused]++
		default:
			r.RefundOutcomes["unresolved"]++
		}
	}
	for _, p := range b.order {
		if p.refunded == nil || p.refunded.GetRefundedAmount() == 0 {
			continue
		}
		r.RefundedPayments++
		if p.refunded.GetRefundedAmount() == p.amount {
			r.RefundedInFull++
		}
	}
	for k, n := range b.refundKinds {
		r.RefundKinds[k] = n
	}
	for k, n := range b.refundRetries {
		r.RefundRetries[k] = n
	}
	for k, n := range b.refundErrors {
		r.RefundErrors[k] = n
	}
}

// refundSummary is the report's line about refunds.
func (r *Report) refundSummary() string {
	return fmt.Sprintf("refunds %d (requests %d, answers %d, recorded by a request whose answer was lost %d): succeeded %d for %s; payments refunded %d (in full %d)",
		r.Refunds, r.RefundRequests, r.RefundAnswers, r.RefundsAnswerLost, r.RefundOutcomes["succeeded"], money.Format(r.Refunded, "USD"),
		r.RefundedPayments, r.RefundedInFull)
}
