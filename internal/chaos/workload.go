package chaos

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/internal/rpcerr"
)

// payment is one intended payment and everything the clients saw of it.
type payment struct {
	id, user, from, to string
	amount             int64
	kind               string

	// Guarded by book.mu.
	requests int                       // ExecutePayment calls sent
	answers  []gatewayv1.PaymentStatus // final outcomes the gateway answered
	final    *gatewayv1.Payment        // the outcome read after quiescence
	// refundable: a client was answered SUCCEEDED, so its payee's client may refund it.
	refundable bool
	// refundedKnown is the sum of the refunds of it that clients were answered SUCCEEDED:
	// never more than what the gateway has refunded.
	refundedKnown int64
	refunds       []*refund          // the refunds sent of it
	refunded      *gatewayv1.Payment // with refunds: the payment read again after theirs were resolved
}

// book records every payment and every entry the clients sent.
type book struct {
	mu       sync.Mutex
	payments map[string]*payment
	order    []*payment
	retries  map[string]int
	errors   map[string]int
	kinds    map[string]int

	entries      []*entry
	entryRetries map[string]int
	entryErrors  map[string]int

	// received are the payments that can be refunded, by the user of their payee account.
	received      map[string][]*payment
	refunds       []*refund
	refundKinds   map[string]int
	refundRetries map[string]int
	refundErrors  map[string]int
	// journal is what check found in the banks' journals; notes are what it found worth
	// saying that is no violation.
	journal journalTotals
	notes   []string
}

// journalTotals sums the banks' journals.
type journalTotals struct {
	deposits, withdrawals int   // entries
	deposited, withdrawn  int64 // minor units
}

func newBook() *book {
	return &book{payments: map[string]*payment{}, retries: map[string]int{}, errors: map[string]int{}, kinds: map[string]int{},
		entryRetries: map[string]int{}, entryErrors: map[string]int{},
		received: map[string][]*payment{}, refundKinds: map[string]int{}, refundRetries: map[string]int{}, refundErrors: map[string]int{}}
}

// addEntry records e, which the client is about to send; it reports false, recording nothing,
// once the run has maxEntries entries.
func (b *book) addEntry(e *entry) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.entries) >= maxEntries {
		return false
	}
	b.entries = append(b.entries, e)
	return true
}

func (b *book) entryAnswered(e *entry, a entryAnswer) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e.answers = append(e.answers, a)
}

func (b *book) entryRetry(why string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.entryRetries[why]++
}

func (b *book) entryError(err error) {
	key := errorKey(err)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.entryErrors[key]++
}

func (b *book) allEntries() []*entry {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.entries)
}

// errorKey is the key errors are counted by: the Connect code, and the reason when there is one.
func errorKey(err error) string {
	key := connect.CodeOf(err).String()
	if r := rpcerr.Reason(err); r != "" {
		key += "/" + r
	}
	return key
}

// sent records a request for p, which makes p accepted.
func (b *book) sent(p *payment) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.payments[p.id]; !ok {
		b.payments[p.id] = p
		b.order = append(b.order, p)
		b.kinds[p.kind]++
	}
	p.requests++
}

func (b *book) answered(p *payment, s gatewayv1.PaymentStatus) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p.answers = append(p.answers, s)
	if s == gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
		b.succeededLocked(p)
	}
}

func (b *book) retry(why string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.retries[why]++
}

func (b *book) clientError(err error) {
	key := errorKey(err)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.errors[key]++
}

func (b *book) all() []*payment {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*payment(nil), b.order...)
}

type bookStats struct{ payments, requests, answers, entries, refunds int }

func (b *book) stats() bookStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	var s bookStats
	s.payments = len(b.order)
	for _, p := range b.order {
		s.requests += p.requests
		s.answers += len(p.answers)
	}
	s.entries = len(b.entries)
	s.refunds = len(b.refunds)
	return s
}

func (b *book) fill(r *Report) {
	b.mu.Lock()
	defer b.mu.Unlock()
	r.Payments = len(b.order)
	for _, p := range b.order {
		r.Requests += p.requests
		r.Answers += len(p.answers)
		switch p.final.GetStatus() {
		case gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED:
			r.Succeeded++
		case gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED:
			r.Failed++
			r.FailureReasons[p.final.GetFailureReason().String()]++
		}
	}
	for k, n := range b.retries {
		r.Retries[k] = n
	}
	for k, n := range b.errors {
		r.ClientErrors[k] = n
	}
	for k, n := range b.kinds {
		r.Kinds[k] = n
	}
	r.Entries = len(b.entries)
	for _, e := range b.entries {
		r.EntryRequests += e.requests
		r.EntryAnswers += len(e.answers)
		if len(e.answers) > 0 && e.answers[len(e.answers)-1].refused != "" {
			r.EntriesRefused[e.answers[len(e.answers)-1].refused]++
		}
		for _, a := range e.answers {
			if a.replayed {
				r.EntryReplays++
			}
		}
		if len(e.answers) > 0 && e.answers[0].replayed {
			r.EntriesAnswerLost++
		}
	}
	maps.Copy(r.EntryRetries, b.entryRetries)
	maps.Copy(r.EntryErrors, b.entryErrors)
	r.Deposits, r.Withdrawals = b.journal.deposits, b.journal.withdrawals
	r.Deposited, r.Withdrawn = b.journal.deposited, b.journal.withdrawn
	b.fillRefundsLocked(r)
	r.Notes = append(r.Notes, b.notes...)
}

// client is one user making payments one after another (sometimes two at once, for a
// concurrent duplicate), with its own random generator. With several gateway replicas, it
// sends to its home replica (home) first, each retry to the next one, and the second of two
// concurrent duplicates to another replica than the first.
type client struct {
	home     int
	user     string
	accounts []string
	sys      *system
	cfg      Config
	book     *book
	v        *violations
	rng      *rand.Rand // used by the client's own goroutine only
	// refundRng draws the client's refunds (whether to make one, of what, how much), apart
	// from rng so that a seed's payments and entries do not depend on what was refundable.
	refundRng *rand.Rand

	mu     sync.Mutex
	uc     *userClients
	mine   []*payment // payments this client sent, for late retries
	logins int        // logins so far: each goes to the next replica
}

func (c *client) login(ctx context.Context) error {
	c.mu.Lock()
	replica := c.home + c.logins
	c.logins++
	c.mu.Unlock()
	uc, err := c.sys.login(ctx, c.user, replica)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.uc = uc
	c.mu.Unlock()
	return nil
}

func (c *client) clients() *userClients {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.uc
}

// newID returns a UUIDv4 drawn from the client's generator, so that a replay uses the same ids.
func (c *client) newID() string {
	var b [16]byte
	for i := 0; i < 16; i += 8 {
		v := c.rng.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// plan draws the next payment.
func (c *client) plan() *payment {
	from := c.accounts[c.rng.IntN(len(c.accounts))]
	fromBank := bankIndex(from)
	p := &payment{id: c.newID(), user: c.user, from: from, amount: 1 + c.rng.Int64N(3000)}
	// The payee: same bank or another one; another user's account or the client's own. Money
	// only moves between users, so no account drains into a sink over a long run.
	bank := fromBank
	p.kind = "same_bank"
	if c.rng.IntN(10) < 7 {
		bank = (fromBank + 1 + c.rng.IntN(len(bankNames)-1)) % len(bankNames)
		p.kind = "cross_bank"
	}
	switch r := c.rng.IntN(20); {
	case r == 0:
		p.to = accountOf(bankNames[bank], (bank+1)*1000+999) // unknown payee
		p.kind = "unknown_payee"
	default:
		for {
			// Only users with a client: money paid to an idle user would never come back,
			// and over a long run the payers would drain into them.
			u := c.rng.IntN(c.cfg.Clients)
			p.to = userAccounts(u)[bank]
			if p.to != p.from {
				break
			}
		}
	}
	if c.rng.IntN(100) < 15 {
		p.amount = 3*openingBalance/5 + c.rng.Int64N(2*openingBalance) // often more than the account has
		if p.kind != "unknown_payee" {
			p.kind = "overdraft"
		}
	}
	return p
}

func bankIndex(account string) int {
	for i, b := range bankNames {
		if len(account) > len(b) && account[:len(b)] == b && account[len(b)] == '-' {
			return i
		}
	}
	return -1
}

// run makes payments, and now and then a deposit, a withdrawal or a refund, until ctx is done.
func (c *client) run(ctx context.Context) {
	for ctx.Err() == nil {
		// About one operation in refundEvery is a refund of a payment made to the client's
		// user (refunds.go), drawn from the refund generator only.
		if c.refundRng != nil && c.refundRng.IntN(refundEvery) == 0 {
			c.refundOnce()
			continue
		}
		// Now and then, send an old payment again: a late retry must replay, not pay twice.
		c.mu.Lock()
		n := len(c.mine)
		c.mu.Unlock()
		if n > 0 && c.rng.IntN(30) == 0 {
			c.mu.Lock()
			old := c.mine[c.rng.IntN(n)]
			c.mu.Unlock()
			c.book.retry("late")
			c.send(ctx, old, 0)
			continue
		}
		// About one operation in entryEvery is a deposit or a withdrawal, up to maxEntries.
		if c.rng.IntN(entryEvery) == 0 {
			if e := c.planEntry(); c.book.addEntry(e) {
				c.postEntry(ctx, e)
			}
			continue
		}
		p := c.plan()
		c.mu.Lock()
		c.mine = append(c.mine, p)
		c.mu.Unlock()
		switch r := c.rng.IntN(100); {
		case r < 8: // again after the answer (at the next replica, when there are several)
			c.send(ctx, p, 0)
			c.book.retry("sequential")
			c.send(ctx, p, 1)
		case r < 14: // twice at the same moment (at two replicas, when there are several)
			c.book.retry("concurrent")
			var both sync.WaitGroup
			both.Add(2)
			go func() { defer both.Done(); c.send(ctx, p, 0) }()
			go func() { defer both.Done(); c.send(ctx, p, 1) }()
			both.Wait()
		default:
			c.send(ctx, p, 0)
		}
	}
}

// ambiguous reports whether an error leaves the outcome unknown, so the client must send the
// same payment again.
func ambiguous(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeDeadlineExceeded, connect.CodeAborted, connect.CodeUnknown,
		connect.CodeInternal, connect.CodeCanceled:
		return true
	}
	return false
}

// send sends p until the gateway answers a final outcome, retrying ambiguous errors with the
// same payment_id for up to cfg.RetryFor. It does not stop when the run's ctx ends: a client
// keeps retrying what it started (that is what the quiescence phase waits for). The first
// attempt goes to replica home+offset, each retry to the next.
func (c *client) send(_ context.Context, p *payment, offset int) {
	deadline := time.Now().Add(c.cfg.RetryFor)
	for attempt := 1; ; attempt++ {
		if attempt > 1 {
			c.book.retry("ambiguous")
		}
		status, err := c.execute(p, attempt, c.home+offset+attempt-1)
		if err == nil && status != gatewayv1.PaymentStatus_PAYMENT_STATUS_PROCESSING {
			return
		}
		if err != nil && !ambiguous(err) && connect.CodeOf(err) != connect.CodeUnauthenticated {
			c.v.addf("payment %s (%s → %s, %d): unexpected refusal: %v", p.id, p.from, p.to, p.amount, err)
			return
		}
		if connect.CodeOf(err) == connect.CodeUnauthenticated {
			// A session lost in a crash would show here; log in again and go on.
			if lerr := c.login(context.Background()); lerr != nil {
				c.book.clientError(lerr)
			}
		}
		if time.Now().After(deadline) {
			return
		}
		time.Sleep(min(50*time.Millisecond<<min(attempt, 5), time.Second))
	}
}

// execute sends one ExecutePayment for p to replica (modulo the replicas) and records it.
func (c *client) execute(p *payment, attempt, replica int) (gatewayv1.PaymentStatus, error) {
	c.book.sent(p)
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.TxnTimeout+5*time.Second)
	defer cancel()
	req := connect.NewRequest(&gatewayv1.ExecutePaymentRequest{
		PaymentId: p.id, FromAccount: p.from, ToAccount: p.to, Amount: p.amount, Currency: "USD",
	})
	req.Header().Set("Paygate-Attempt", strconv.Itoa(attempt))
	resp, err := c.clients().at(replica).ExecutePayment(ctx, req)
	if err != nil {
		c.book.clientError(err)
		if leak := internalText(err.Error()); leak != "" {
			c.v.addf("payment %s: the answer shows the server's internal text %q: %v", p.id, leak, err)
		}
		return 0, err
	}
	got := resp.Msg.GetPayment()
	if got.GetPaymentId() != p.id || got.GetAmount() != p.amount || got.GetFromAccount() != p.from || got.GetToAccount() != p.to {
		c.v.addf("payment %s: the answer describes another payment: %v", p.id, got)
	}
	s := got.GetStatus()
	if s != gatewayv1.PaymentStatus_PAYMENT_STATUS_PROCESSING {
		c.book.answered(p, s)
	}
	return s, nil
}

// storeTexts are pieces of the stores' own error messages, which the error boundary keeps from
// callers (they get UNAVAILABLE "storage_unavailable" or INTERNAL "internal" instead).
var storeTexts = []string{"database or disk is full", "disk I/O error", "no space left on device", "SQLITE_", "sqlite"}

// internalText returns the first store error text found in s, or "".
func internalText(s string) string {
	for _, t := range storeTexts {
		if strings.Contains(s, t) {
			return t
		}
	}
	return ""
}

// resolveAll finds the final outcome of every accepted payment once the faults are over, as a
// client library would: GetPayment, and for a payment the gateway never recorded (every
// request was lost), ExecutePayment again with the same id. A payment without a final outcome
// when ctx ends is a violation.
func resolveAll(ctx context.Context, clients []*client, b *book, v *violations, log *logger) {
	byUser := map[string]*client{}
	for _, c := range clients {
		byUser[c.user] = c
	}
	work := make(chan *payment)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				resolve(ctx, byUser[p.user], p, b, v)
			}
		}()
	}
	all := b.all()
	for i, p := range all {
		work <- p
		if (i+1)%5000 == 0 {
			log.printf("resolving: %d of %d", i+1, len(all))
		}
	}
	close(work)
	wg.Wait()
}

func resolve(ctx context.Context, c *client, p *payment, b *book, v *violations) {
	var last error
	for attempt := 1; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := c.clients().at(c.home+attempt).GetPayment(cctx, connect.NewRequest(&gatewayv1.GetPaymentRequest{PaymentId: p.id}))
		cancel()
		switch {
		case err == nil && resp.Msg.GetPayment().GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_PROCESSING:
			b.mu.Lock()
			p.final = resp.Msg.GetPayment()
			b.mu.Unlock()
			return
		case connect.CodeOf(err) == connect.CodeNotFound:
			// Never admitted: the client sends it again, as its queue would.
			b.retry("after_faults")
			if _, err := c.execute(p, 100+attempt, c.home+attempt); err != nil {
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
			v.addf("payment %s (%s → %s, %d): no final outcome after the faults stopped: %v", p.id, p.from, p.to, p.amount, last)
			return
		}
	}
}
