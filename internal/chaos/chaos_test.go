package chaos

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"
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
		Notes: []string{"disk-full faults skipped: cannot mount"}, Violations: []string{"conservation: ..."}}
	s := r.String()
	for _, want := range []string{"seed 42", "payments 3", "faults 4", "kill_bank=2", "disk_full_gateway=1",
		"note: disk-full faults skipped: cannot mount", "invariant violations 1", "VIOLATION conservation"} {
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
