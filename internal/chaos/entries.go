package chaos

import (
	"context"
	"fmt"
	"time"

	"connectrpc.com/connect"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	"github.com/paygate/paygate/gen/paygate/bank/v1/bankv1connect"
	"github.com/paygate/paygate/internal/pki"
	"github.com/paygate/paygate/internal/rpcerr"
	"github.com/paygate/paygate/internal/rpcserver"
	"github.com/paygate/paygate/services/bank"
)

// Deposits and withdrawals. About one operation in entryEvery of each client is an entry
// posted straight to a bank (BankService.PostEntry) with the gateway's certificate, through the
// same fault proxy as the gateway's own calls to that bank: on a random account of any user, for
// a small random amount, with a fresh entry_id. A call that fails ambiguously is sent again with
// the same entry_id until it has an answer or the workload ends; after the faults, every entry
// still without an answer is posted once more (which replays it, or journals it now), so that
// every entry the workload ever sent has an answer before the journals are checked.
const (
	// entryEvery: one operation in entryEvery is an entry, the others payments.
	entryEvery = 20
	// maxEntries bounds the entries of one run; past it, the draws are made but not sent (so
	// that a replay draws the same payments).
	maxEntries = 2000
	// maxEntryAmount bounds an ordinary entry, in minor units (20.00 USD).
	maxEntryAmount = 2000
	// entryAttemptTimeout is the deadline of one PostEntry call.
	entryAttemptTimeout = 5 * time.Second
	// entryActor and the reasons are what the journal records of who made an entry and why.
	entryActor = "chaos"
)

// entry is one intended deposit or withdrawal and everything the workload saw of it.
type entry struct {
	id, account, bank string
	kind              bankv1.EntryKind
	amount            int64
	// again: once journaled, the entry is posted once more, which must replay it.
	again bool
	// hurry, when not 0, is the deadline of the entry's first request: a few milliseconds, so
	// that the bank sometimes journals the entry after its caller gave up, and the retry must
	// find it journaled (a replay), not journal it twice.
	hurry time.Duration

	// Guarded by book.mu.
	requests int           // PostEntry calls sent
	lost     int           // calls without an answer (ambiguous errors)
	answers  []entryAnswer // the answers, in order
}

// entryAnswer is one answer of the bank to PostEntry.
type entryAnswer struct {
	// refused is the reason of a refusal ("insufficient_funds", or the code of an unexpected
	// one): nothing was journaled. Empty for an entry journaled.
	refused      string
	balanceAfter int64
	replayed     bool
}

func (e *entry) String() string {
	return fmt.Sprintf("%s (%s %s %d)", e.id, kindName(e.kind), e.account, e.amount)
}

func kindName(k bankv1.EntryKind) string {
	switch k {
	case bankv1.EntryKind_ENTRY_KIND_DEPOSIT:
		return "deposit"
	case bankv1.EntryKind_ENTRY_KIND_WITHDRAWAL:
		return "withdrawal"
	}
	return k.String()
}

// entryBanks returns a BankService client of each bank through its fault proxy, with the
// gateway's certificate and its check of the bank's identity, as the gateway itself calls it.
func (s *system) entryBanks() (map[string]bankv1connect.BankServiceClient, error) {
	tlsCfg, err := pki.ClientTLS(s.c.CertPath("ca.pem"), s.c.CertPath("gateway.pem"), s.c.CertPath("gateway-key.pem"))
	if err != nil {
		return nil, err
	}
	out := map[string]bankv1connect.BankServiceClient{}
	for _, b := range bankNames {
		hc, err := rpcserver.NewBankHTTPClient(tlsCfg, b)
		if err != nil {
			return nil, err
		}
		out[b] = bankv1connect.NewBankServiceClient(hc, "https://"+s.proxies[b].Addr(), connect.WithGRPC())
	}
	return out, nil
}

// planEntry draws the next entry: a deposit or a withdrawal on any user's account at any bank,
// of up to maxEntryAmount; one withdrawal in eight is for more than an account is likely to
// hold (the bank refuses it, insufficient_funds). One entry in ten is posted again after its
// answer; the first request of one in four has a deadline of 2 to 30 ms.
func (c *client) planEntry() *entry {
	accounts := userAccounts(c.rng.IntN(len(userNames)))
	e := &entry{id: c.newID(), account: accounts[c.rng.IntN(len(accounts))], kind: bankv1.EntryKind_ENTRY_KIND_DEPOSIT,
		amount: 1 + c.rng.Int64N(maxEntryAmount)}
	e.bank = bankNames[bankIndex(e.account)]
	if c.rng.IntN(2) == 0 {
		e.kind = bankv1.EntryKind_ENTRY_KIND_WITHDRAWAL
		if c.rng.IntN(8) == 0 {
			e.amount = 3*openingBalance + c.rng.Int64N(openingBalance)
		}
	}
	e.again = c.rng.IntN(10) == 0
	if c.rng.IntN(4) == 0 {
		e.hurry = between(c.rng, 2*time.Millisecond, 30*time.Millisecond)
	}
	return e
}

// postEntry posts e until the bank answers, retrying ambiguous errors with the same entry_id
// until ctx (the workload) ends; then, if it was journaled and e.again, posts it once more.
func (c *client) postEntry(ctx context.Context, e *entry) {
	banks := c.sys.entries
	if !c.postUntilAnswered(ctx, banks[e.bank], e, "ambiguous") || !e.again {
		return
	}
	c.book.mu.Lock()
	journaled := e.answers[0].refused == ""
	c.book.mu.Unlock()
	if journaled {
		c.book.entryRetry("again")
		c.postUntilAnswered(ctx, banks[e.bank], e, "ambiguous")
	}
}

// postUntilAnswered sends e to bc until it has an answer (it reports true) or ctx ends; each
// retry is counted as why.
func (c *client) postUntilAnswered(ctx context.Context, bc bankv1connect.BankServiceClient, e *entry, why string) bool {
	for attempt := 1; ; attempt++ {
		if attempt > 1 {
			c.book.entryRetry(why)
		}
		if postOnce(bc, e, c.book, c.v) {
			return true
		}
		if !sleepCtx(ctx, min(50*time.Millisecond<<min(attempt, 5), time.Second)) {
			return false
		}
	}
}

// postOnce sends one PostEntry for e, records it and its answer, and reports whether it was
// answered. An answer that describes another entry, a fresh entry answered as a replay, a
// journaled entry refused on a replay, or any refusal but a withdrawal's insufficient_funds is
// a violation.
func postOnce(bc bankv1connect.BankServiceClient, e *entry, b *book, v *violations) bool {
	b.mu.Lock()
	e.requests++
	timeout := entryAttemptTimeout
	if e.requests == 1 && e.hurry > 0 {
		timeout = e.hurry
	}
	journaled := false
	for _, a := range e.answers {
		journaled = journaled || a.refused == ""
	}
	b.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	resp, err := bc.PostEntry(ctx, connect.NewRequest(&bankv1.PostEntryRequest{
		EntryId: e.id, Kind: e.kind, AccountId: e.account, Amount: e.amount, Currency: "USD",
		Actor: entryActor, Reason: "chaos " + kindName(e.kind),
	}))
	if err != nil {
		b.entryError(err)
		if leak := internalText(err.Error()); leak != "" {
			v.addf("entry %s: the answer shows the server's internal text %q: %v", e, leak, err)
		}
		if ambiguous(err) {
			b.mu.Lock()
			e.lost++
			b.mu.Unlock()
			return false
		}
		reason := connectReason(err)
		switch {
		case reason == bank.ErrorReasonInsufficientFunds && e.kind == bankv1.EntryKind_ENTRY_KIND_WITHDRAWAL && !journaled:
		case journaled:
			v.addf("entry %s: journaled, then refused on a replay: %v", e, err)
		default:
			v.addf("entry %s: unexpected refusal: %v", e, err)
		}
		b.entryAnswered(e, entryAnswer{refused: reason})
		return true
	}
	got := resp.Msg.GetEntry()
	if got.GetEntryId() != e.id || got.GetKind() != e.kind || got.GetAccountId() != e.account || got.GetAmount() != e.amount ||
		got.GetCurrency() != "USD" {
		v.addf("entry %s: the answer describes another entry: %v", e, got)
	}
	b.mu.Lock()
	fresh := e.requests == 1
	b.mu.Unlock()
	if fresh && resp.Msg.GetReplayed() {
		v.addf("entry %s: its first request was answered as a replay", e)
	}
	b.entryAnswered(e, entryAnswer{balanceAfter: got.GetBalanceAfter(), replayed: resp.Msg.GetReplayed()})
	return true
}

// connectReason is err's ErrorInfo reason, or its code when it has none.
func connectReason(err error) string {
	if r := rpcerr.Reason(err); r != "" {
		return r
	}
	return connect.CodeOf(err).String()
}

// resolveEntries posts every entry still without an answer once the faults are over, straight
// to its bank (banks), retrying errors until ctx ends: the bank replays an entry an earlier
// request journaled, journals one no request reached, or refuses it. An entry without an answer
// when ctx ends is a violation.
func resolveEntries(ctx context.Context, banks map[string]bankv1connect.BankServiceClient, b *book, v *violations, log *logger) {
	var open []*entry
	for _, e := range b.allEntries() {
		b.mu.Lock()
		answered := len(e.answers) > 0
		b.mu.Unlock()
		if !answered {
			open = append(open, e)
		}
	}
	if len(open) > 0 {
		log.printf("posting again the %d entries without an answer", len(open))
	}
	for _, e := range open {
		for {
			b.entryRetry("after_faults")
			if postOnce(banks[e.bank], e, b, v) {
				break
			}
			if !sleepCtx(ctx, 200*time.Millisecond) {
				v.addf("entry %s: no answer after the faults stopped", e)
				break
			}
		}
	}
}

// journaled is one entry of a bank's journal.
type journaled struct {
	bank  string
	entry *bankv1.Entry
}

// readJournals reads every bank's whole journal (ListEntries, every page), retrying errors for
// a few seconds per page.
func readJournals(ctx context.Context, banks map[string]bankv1connect.BankServiceClient) ([]journaled, error) {
	var out []journaled
	for _, name := range bankNames {
		token := ""
		for {
			var (
				resp *connect.Response[bankv1.ListEntriesResponse]
				err  error
			)
			for range 20 {
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				resp, err = banks[name].ListEntries(cctx, connect.NewRequest(&bankv1.ListEntriesRequest{PageSize: bank.MaxPageSize, PageToken: token}))
				cancel()
				if err == nil || ctx.Err() != nil {
					break
				}
				time.Sleep(250 * time.Millisecond)
			}
			if err != nil {
				return nil, fmt.Errorf("list the entries of %s: %w", name, err)
			}
			for _, e := range resp.Msg.GetEntries() {
				out = append(out, journaled{bank: name, entry: e})
			}
			if token = resp.Msg.GetNextPageToken(); token == "" {
				break
			}
		}
	}
	return out, nil
}
