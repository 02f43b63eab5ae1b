package chaos

import (
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	ok := DefaultConfig()
	ok.Bin = "/bin/paygate"
	if err := ok.Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	for name, mutate := range map[string]func(*Config){
		"no binary":           func(c *Config) { c.Bin = "" },
		"no duration":         func(c *Config) { c.Duration = 0 },
		"one client":          func(c *Config) { c.Clients = 1 },
		"too many clients":    func(c *Config) { c.Clients = len(userNames) + 1 },
		"interval min > max":  func(c *Config) { c.FaultEveryMin, c.FaultEveryMax = 2*time.Second, time.Second },
		"no txn timeout":      func(c *Config) { c.TxnTimeout = 0 },
		"no settle timeout":   func(c *Config) { c.SettleTimeout = 0 },
		"zero fault interval": func(c *Config) { c.FaultEveryMin = 0 },
		"disk too small":      func(c *Config) { c.DiskSize = 1 << 20 },
	} {
		c := ok
		mutate(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// plans draws n payments of client i from seed.
func plans(seed uint64, i, n int) []payment {
	c := &client{user: userNames[i], accounts: userAccounts(i), cfg: DefaultConfig(), rng: rand.New(rand.NewPCG(seed, uint64(i+1)))}
	out := make([]payment, n)
	for k := range out {
		out[k] = *c.plan()
	}
	return out
}

// TestWorkloadReplays checks that a seed determines the payments, that they are well formed,
// and that the mix has every kind.
func TestWorkloadReplays(t *testing.T) {
	t.Parallel()
	a, b := plans(7, 2, 500), plans(7, 2, 500)
	other := plans(8, 2, 500)
	same := 0
	kinds := map[string]int{}
	for k := range a {
		if a[k].id != b[k].id || a[k].from != b[k].from || a[k].to != b[k].to || a[k].amount != b[k].amount {
			t.Fatalf("payment %d differs between two draws of the same seed: %+v, %+v", k, a[k], b[k])
		}
		if a[k].id == other[k].id {
			same++
		}
		p := a[k]
		kinds[p.kind]++
		if p.from == p.to || p.amount <= 0 || bankIndex(p.from) < 0 || bankIndex(p.to) < 0 {
			t.Errorf("malformed payment %+v", p)
		}
		if !strings.HasPrefix(p.from, bankNames[bankIndex(p.from)]+"-") || len(p.id) != 36 {
			t.Errorf("malformed payment %+v", p)
		}
	}
	if same > 0 {
		t.Errorf("%d payment ids shared by two seeds", same)
	}
	for _, k := range []string{"same_bank", "cross_bank", "overdraft", "unknown_payee"} {
		if kinds[k] == 0 {
			t.Errorf("no %s payment in 500: %v", k, kinds)
		}
	}
}

func TestBetween(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		d := between(r, time.Second, 3*time.Second)
		if d < time.Second || d > 3*time.Second {
			t.Fatalf("between(1s, 3s) = %s", d)
		}
	}
	if d := between(r, time.Second, time.Second); d != time.Second {
		t.Errorf("between(1s, 1s) = %s", d)
	}
}

func TestReportString(t *testing.T) {
	t.Parallel()
	r := &Report{Seed: 42, Payments: 3, Faults: map[string]int{"kill_bank": 2, "net_drop": 1, "disk_full_gateway": 1},
		Entries: 9, EntryRequests: 12, EntryAnswers: 10, EntryReplays: 2, EntriesAnswerLost: 1, Deposits: 4, Deposited: 1050, Withdrawals: 3, Withdrawn: 7,
		EntriesRefused: map[string]int{"insufficient_funds": 2}, EntryRetries: map[string]int{"ambiguous": 3},
		Refunds: 7, RefundRequests: 9, RefundAnswers: 8, RefundsAnswerLost: 1, Refunded: 1234, RefundedPayments: 3, RefundedInFull: 1,
		RefundOutcomes: map[string]int{"succeeded": 4, "refused/refund_exceeds_payment": 2, "failed/FAILURE_REASON_INSUFFICIENT_FUNDS": 1},
		RefundKinds:    map[string]int{"over_cap": 2, "partial": 5}, RefundRetries: map[string]int{"sequential": 1},
		Notes: []string{"disk-full faults skipped: cannot mount"}, Violations: []string{"conservation: ..."}}
	s := r.String()
	for _, want := range []string{"seed 42", "payments 3", "faults 4", "kill_bank=2", "disk_full_gateway=1",
		"note: disk-full faults skipped: cannot mount", "invariant violations 1", "VIOLATION conservation",
		"entries 9 (requests 12, answers 10, replays 2, journaled by a request whose answer was lost 1): deposits 4 for 10.50 USD, withdrawals 3 for 0.07 USD",
		"entries refused: insufficient_funds=2", "same-id entry retries: ambiguous=3", "entry errors: none",
		"refunds 7 (requests 9, answers 8, recorded by a request whose answer was lost 1): succeeded 4 for 12.34 USD; payments refunded 3 (in full 1)",
		"refund outcomes: failed/FAILURE_REASON_INSUFFICIENT_FUNDS=1 refused/refund_exceeds_payment=2 succeeded=4",
		"refund kinds: over_cap=2 partial=5", "same-id refund retries: sequential=1", "refund errors: none"} {
		if !strings.Contains(s, want) {
			t.Errorf("report lacks %q:\n%s", want, s)
		}
	}
	if r.OK() {
		t.Error("a report with a violation is OK")
	}
}

func TestInternalText(t *testing.T) {
	t.Parallel()
	for s, want := range map[string]string{
		"unavailable: the server's storage is unavailable; retry later":         "",
		"unknown: gateway: admit payment x: database or disk is full (13)":      "database or disk is full",
		"internal: sqlite: step: disk I/O error":                                "disk I/O error",
		"bank bank2 unavailable: internal error in the bank's ledger":           "",
		"unavailable: write /data/gateway.db-wal: no space left on device (28)": "no space left on device",
	} {
		if got := internalText(s); got != want {
			t.Errorf("internalText(%q) = %q, want %q", s, got, want)
		}
	}
}

// TestEntryPlansReplay checks that a seed determines the deposits and withdrawals, that they
// are well formed, and that the mix has deposits, small withdrawals, withdrawals beyond what an
// account holds, and entries posted again.
func TestEntryPlansReplay(t *testing.T) {
	t.Parallel()
	draw := func(seed uint64) []entry {
		c := &client{user: userNames[1], accounts: userAccounts(1), cfg: DefaultConfig(), rng: rand.New(rand.NewPCG(seed, 2))}
		out := make([]entry, 400)
		for k := range out {
			out[k] = *c.planEntry()
		}
		return out
	}
	a, b, other := draw(7), draw(7), draw(8)
	var deposits, withdrawals, large, again, hurried int
	accounts := map[string]bool{}
	for k := range a {
		e := a[k]
		if e.id != b[k].id || e.account != b[k].account || e.kind != b[k].kind || e.amount != b[k].amount || e.again != b[k].again ||
			e.hurry != b[k].hurry {
			t.Fatalf("entry %d differs between two draws of the same seed: %v, %v", k, &e, &b[k])
		}
		if e.id == other[k].id {
			t.Errorf("entry %d: id %s drawn by two seeds", k, e.id)
		}
		if len(e.id) != 36 || bankIndex(e.account) < 0 || e.bank != bankNames[bankIndex(e.account)] || e.amount <= 0 {
			t.Errorf("malformed entry %v at %s", &e, e.bank)
		}
		accounts[e.account] = true
		switch {
		case e.kind == bankv1.EntryKind_ENTRY_KIND_DEPOSIT:
			deposits++
			if e.amount > maxEntryAmount {
				t.Errorf("deposit %v above %d", &e, maxEntryAmount)
			}
		case e.kind == bankv1.EntryKind_ENTRY_KIND_WITHDRAWAL && e.amount > maxEntryAmount:
			large++
			if e.amount < 3*openingBalance {
				t.Errorf("large withdrawal %v within what an account is likely to hold", &e)
			}
		case e.kind == bankv1.EntryKind_ENTRY_KIND_WITHDRAWAL:
			withdrawals++
		default:
			t.Errorf("entry %v of kind %v", &e, e.kind)
		}
		if e.again {
			again++
		}
		if e.hurry != 0 {
			hurried++
			if e.hurry < 2*time.Millisecond || e.hurry > 30*time.Millisecond {
				t.Errorf("entry %v: first deadline %s", &e, e.hurry)
			}
		}
	}
	if deposits == 0 || withdrawals == 0 || large == 0 || again == 0 || hurried == 0 {
		t.Errorf("in 400 entries: %d deposits, %d withdrawals, %d large withdrawals, %d posted again, %d hurried", deposits, withdrawals, large, again, hurried)
	}
	if len(accounts) < len(userNames)*len(bankNames)/2 {
		t.Errorf("400 entries touch only %d accounts", len(accounts))
	}
}

// TestCheckEntries checks the journal checks on a book and journals made by hand: a clean
// journal passes and gives each account's movement, and each kind of discrepancy is found.
func TestCheckEntries(t *testing.T) {
	t.Parallel()
	const (
		dep = bankv1.EntryKind_ENTRY_KIND_DEPOSIT
		wd  = bankv1.EntryKind_ENTRY_KIND_WITHDRAWAL
	)
	// The book: a deposit answered (then replayed), a withdrawal answered, a withdrawal refused,
	// a refused one with a lost request before, a deposit never answered.
	newEntries := func() []*entry {
		return []*entry{
			{id: "e1", bank: "bank1", account: "bank1-1001", kind: dep, amount: 500,
				answers: []entryAnswer{{balanceAfter: 50500}, {balanceAfter: 50500, replayed: true}}},
			{id: "e2", bank: "bank2", account: "bank2-2001", kind: wd, amount: 200, answers: []entryAnswer{{balanceAfter: 49800}}},
			{id: "e3", bank: "bank2", account: "bank2-2002", kind: wd, amount: 900000, answers: []entryAnswer{{refused: "insufficient_funds"}}},
			{id: "e4", bank: "bank3", account: "bank3-3001", kind: wd, amount: 700000, lost: 1, answers: []entryAnswer{{refused: "insufficient_funds"}}},
			{id: "e5", bank: "bank1", account: "bank1-1001", kind: dep, amount: 70, lost: 3},
		}
	}
	je := func(bank, id string, kind bankv1.EntryKind, account string, amount, after int64) journaled {
		return journaled{bank: bank, entry: &bankv1.Entry{EntryId: id, Kind: kind, AccountId: account, Amount: amount,
			Currency: "USD", BalanceAfter: after}}
	}
	clean := []journaled{
		je("bank1", "e1", dep, "bank1-1001", 500, 50500),
		je("bank1", "e5", dep, "bank1-1001", 70, 50570),
		je("bank2", "e2", wd, "bank2-2001", 200, 49800),
	}
	run := func(journal []journaled, mutate func([]*entry)) ([]string, map[string]int64, journalTotals, []string) {
		b := newBook()
		b.entries = newEntries()
		if mutate != nil {
			mutate(b.entries)
		}
		v := &violations{}
		moved, totals := checkEntries(b, journal, v)
		return v.list(), moved, totals, b.notes
	}

	got, moved, totals, notes := run(clean, nil)
	if len(got) != 0 || len(notes) != 0 {
		t.Fatalf("clean journal: violations %q, notes %q", got, notes)
	}
	if want := map[string]int64{"bank1-1001": 570, "bank2-2001": -200}; !maps.Equal(moved, want) {
		t.Errorf("moved %v, want %v", moved, want)
	}
	if want := (journalTotals{deposits: 2, withdrawals: 1, deposited: 570, withdrawn: 200}); totals != want {
		t.Errorf("totals %+v, want %+v", totals, want)
	}
	if _, _, _, notes := run(append(slices.Clone(clean), je("bank3", "e4", wd, "bank3-3001", 700000, 1000)), nil); len(notes) != 1 {
		t.Errorf("a refused entry journaled by a lost request: notes %q, want one", notes)
	}

	for name, tc := range map[string]struct {
		journal []journaled
		mutate  func([]*entry)
		want    string
	}{
		"answered entry missing": {journal: clean[1:], want: "entry e1 (deposit bank1-1001 500): answered journaled"},
		"another balance after": {journal: clean, want: "answered with balance after 49700, journaled with 49800",
			mutate: func(es []*entry) { es[1].answers[0].balanceAfter = 49700 }},
		"replay with another balance after": {journal: clean, want: "answered with balance after 50400",
			mutate: func(es []*entry) { es[0].answers[1].balanceAfter = 50400 }},
		"refused yet journaled": {journal: append(slices.Clone(clean), je("bank2", "e3", wd, "bank2-2002", 900000, 1)),
			want: "entry e3 (withdrawal bank2-2002 900000): refused (insufficient_funds), yet journaled"},
		"never sent": {journal: append(slices.Clone(clean), je("bank3", "x9", dep, "bank3-3002", 5, 50005)),
			want: "entry x9 (deposit bank3-3002 5) in the journal of bank3 was never sent"},
		"journaled twice": {journal: append(slices.Clone(clean), clean[2]), want: "entry e2 journaled 2 times"},
		"another amount": {journal: []journaled{clean[0], clean[1], je("bank2", "e2", wd, "bank2-2001", 201, 49799)},
			want: "journaled by bank2 as withdrawal bank2-2001 201 USD"},
		"another kind": {journal: []journaled{clean[0], clean[1], je("bank2", "e2", dep, "bank2-2001", 200, 49800)},
			want: "journaled by bank2 as deposit bank2-2001 200 USD"},
		"another bank": {journal: []journaled{clean[0], clean[1], je("bank3", "e2", wd, "bank2-2001", 200, 49800)},
			want: "journaled by bank3"},
		"negative balance after": {journal: []journaled{clean[0], clean[1], je("bank2", "e2", wd, "bank2-2001", 200, -1)},
			want: "balance after -1"},
	} {
		got, _, _, _ := run(tc.journal, tc.mutate)
		if !slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, tc.want) }) {
			t.Errorf("%s: violations %q, want one with %q", name, got, tc.want)
		}
	}
}

func TestOwnerOf(t *testing.T) {
	t.Parallel()
	for i := range userNames {
		for _, a := range userAccounts(i) {
			if got := ownerOf(a); got != i {
				t.Errorf("ownerOf(%s) = %d, want %d", a, got, i)
			}
		}
	}
	for _, a := range []string{"bank1-1999", "bank2-2000", "bank4-4001", "bank1-x", "bank1", ""} {
		if got := ownerOf(a); got != -1 {
			t.Errorf("ownerOf(%q) = %d, want -1", a, got)
		}
	}
}

// TestRefundDrawsApart checks that the refund generator is a stream of its own: drawing
// refunds does not change a seed's payments.
func TestRefundDrawsApart(t *testing.T) {
	t.Parallel()
	want := plans(7, 2, 50)
	c := &client{user: userNames[2], accounts: userAccounts(2), cfg: DefaultConfig(), rng: rand.New(rand.NewPCG(7, 3)),
		refundRng: rand.New(rand.NewPCG(7, refundStream+2))}
	for k := range want {
		c.newRefundID()
		c.refundRng.IntN(refundEvery)
		if got := c.plan(); got.id != want[k].id || got.amount != want[k].amount || got.to != want[k].to {
			t.Fatalf("payment %d with refund draws in between: %+v, want %+v", k, *got, want[k])
		}
	}
	if a, b := c.newRefundID(), c.newID(); a == b || len(a) != 36 {
		t.Errorf("refund id %q, payment id %q", a, b)
	}
}
