// Package chaos runs randomized fault runs against a whole paygate system of real processes:
// three banks and a gateway, each with its own SQLite store, the gateway reaching every bank
// through a faultproxy. Concurrent clients make random payments (same bank, across banks,
// overdrafts, unknown payees, retries with the same payment_id, sequential, concurrent and
// late), refund payments made to them (partly, in full, over the cap, several at once, retried
// with the same refund_id), and post deposits and withdrawals, while a scheduler injects
// faults at random times: SIGKILL and restart of any process,
// SIGSTOP/SIGCONT pauses, latency, dropped connections, resets and blackholes between the
// gateway and the banks, and a full disk under the gateway's or a bank's store (each process's
// data directory is a small tmpfs, filled with a filler file and emptied again; where a tmpfs
// cannot be mounted, that fault is skipped and the run says so). When the run's duration is over, every fault is healed, the system
// is left to quiesce, and the invariants of the design are checked against the ledgers.
//
// The PostgreSQL profile (Config.DatabaseURL) puts the gateway and the banks on PostgreSQL
// databases and runs several gateway replicas on the gateway's (Config.Gateways): the clients
// spread over the replicas and send a retry to the next one, the faults kill, pause and restart
// replicas like any other process (there are no disk faults, the stores being off the
// processes' disks), and the checks add one: every replica answers GetPayment with the same
// outcome for every payment.
//
// Every random choice (the workload of each client and the fault schedule) comes from
// math/rand/v2 generators seeded from Config.Seed, so a run is replayed with the same seed:
// the same payments and the same faults in the same order at the same offsets. The
// interleaving of processes is up to the machine, so a replay reproduces the run's inputs,
// not its exact timing.
package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/paygate/paygate/internal/money"
)

// Config is a fault run.
type Config struct {
	// Duration is how long clients make new payments and faults are injected.
	Duration time.Duration
	// Seed seeds every random choice; 0 picks one from the clock (Run reports it).
	Seed uint64
	// Clients is the number of concurrent clients; each logs in as its own user.
	Clients int
	// FaultEveryMin and FaultEveryMax bound the random interval between two faults.
	FaultEveryMin, FaultEveryMax time.Duration
	// NoFaults runs the workload without faults (a baseline).
	NoFaults bool
	// TxnTimeout is the gateway's --txn-timeout; ResolveAfter the banks' --resolve-after.
	TxnTimeout, ResolveAfter time.Duration
	// RetryFor bounds how long a client retries one payment on ambiguous errors during the run.
	RetryFor time.Duration
	// SettleTimeout bounds the quiescence after the faults stop: every payment decided and no
	// hold left.
	SettleTimeout time.Duration
	// Bin is the paygate binary; required.
	Bin string
	// Dir is the directory of the system (certificates, fixtures, stores, logs); a program
	// sets it, a test may leave it to Run's t.TempDir().
	Dir string
	// Log receives the seed, progress lines and the fault timeline; nil discards them.
	Log io.Writer
	// Progress is the interval of progress lines; 0 means 10s.
	Progress time.Duration
	// DiskSize is the size in bytes of the tmpfs under each process's data directory, which the
	// disk-full faults fill. It must hold the stores of the whole run: about 256 MiB per half
	// hour of the default workload.
	DiskSize int64
	// DatabaseURL, postgres://.../NAME, runs the PostgreSQL profile: the gateway replicas use
	// database NAME and each bank NAME_<bank> on the same server, created if missing. A run
	// needs databases of its own (a fresh NAME; it refuses databases that hold stores
	// already): it audits the money moved by the payments it made, and a replay of its seed on
	// the same databases would find its payments made already.
	DatabaseURL string
	// Gateways is the number of gateway replicas; 0 means 2 on PostgreSQL and 1 on SQLite,
	// which allows only one.
	Gateways int
	// LeaseTTL is the gateways' --lease-ttl on PostgreSQL; 0 means 2s, so that a killed
	// replica's payments are taken over well within a transaction's retries.
	LeaseTTL time.Duration
}

// gateways returns the number of gateway replicas the run starts.
func (c Config) gateways() int {
	switch {
	case c.Gateways > 0:
		return c.Gateways
	case c.DatabaseURL != "":
		return 2
	}
	return 1
}

// DefaultConfig returns the short profile's settings.
func DefaultConfig() Config {
	return Config{
		Duration:      2 * time.Minute,
		Clients:       6,
		FaultEveryMin: time.Second,
		FaultEveryMax: 5 * time.Second,
		TxnTimeout:    3 * time.Second,
		ResolveAfter:  time.Second,
		RetryFor:      30 * time.Second,
		SettleTimeout: 90 * time.Second,
		Progress:      10 * time.Second,
		DiskSize:      256 << 20,
	}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	switch {
	case c.Duration <= 0:
		return errors.New("chaos: duration must be positive")
	case c.Clients < 2 || c.Clients > len(userNames):
		return fmt.Errorf("chaos: clients must be between 2 and %d", len(userNames))
	case c.FaultEveryMin <= 0 || c.FaultEveryMax < c.FaultEveryMin:
		return errors.New("chaos: fault interval must be positive and min ≤ max")
	case c.TxnTimeout <= 0 || c.ResolveAfter <= 0 || c.RetryFor <= 0 || c.SettleTimeout <= 0:
		return errors.New("chaos: timeouts must be positive")
	case c.DiskSize < 16<<20:
		return errors.New("chaos: the disk size must be at least 16 MiB")
	case c.Bin == "":
		return errors.New("chaos: the paygate binary is required")
	case c.Gateways < 0 || c.Gateways > 8:
		return errors.New("chaos: gateways must be between 1 and 8")
	case c.Gateways > 1 && c.DatabaseURL == "":
		return errors.New("chaos: gateway replicas share a PostgreSQL database: give one (--database-url)")
	case c.LeaseTTL < 0:
		return errors.New("chaos: the lease TTL must be positive")
	}
	return nil
}

// Report is what a run did and found.
type Report struct {
	Seed     uint64
	Backend  string        // "sqlite" or "postgres"
	Gateways int           // gateway replicas
	Duration time.Duration // the workload's duration
	Elapsed  time.Duration // the whole run, quiescence and checks included
	Settled  time.Duration // from the end of the faults until every payment was decided and settled

	Payments  int // distinct payment_ids the clients sent
	Requests  int // ExecutePayment calls, retries included
	Answers   int // ExecutePayment calls answered with a final outcome
	Succeeded int // payments whose final outcome is SUCCEEDED
	Failed    int // ... FAILED
	// Kinds counts the payments by kind (same_bank, cross_bank, overdraft, unknown_payee).
	Kinds map[string]int
	// Retries counts repeated sends of one payment_id by why: "sequential" (sent again after
	// the answer), "concurrent" (twice at once), "late" (an old payment sent again later),
	// "ambiguous" (after an ambiguous error).
	Retries map[string]int
	// FailureReasons counts the FAILED payments by reason.
	FailureReasons map[string]int
	// ClientErrors counts the errors clients got, by Connect code (and reason when there is one).
	ClientErrors map[string]int
	// Entries counts the deposits and withdrawals the clients sent (distinct entry_ids),
	// EntryRequests the PostEntry calls (retries included), EntryAnswers the calls answered
	// (journaled or refused), EntryReplays the answers that were replays of an entry journaled
	// already, EntriesAnswerLost the entries whose first answer was a replay: an earlier
	// request journaled them, and its answer was lost (an error or a deadline).
	Entries, EntryRequests, EntryAnswers, EntryReplays, EntriesAnswerLost int
	// Deposits and Withdrawals count the entries in the banks' journals after the run;
	// Deposited and Withdrawn are their sums, in minor units.
	Deposits, Withdrawals int
	Deposited, Withdrawn  int64
	// EntriesRefused counts the entries whose answer was a refusal, by reason
	// (insufficient_funds for a withdrawal above the account's available balance).
	EntriesRefused map[string]int
	// EntryRetries counts repeated sends of one entry_id by why: "ambiguous" (after an
	// ambiguous error), "again" (after the answer), "after_faults" (an entry without an answer
	// when the workload ended).
	EntryRetries map[string]int
	// EntryErrors counts the errors PostEntry calls got, by Connect code (and reason).
	EntryErrors map[string]int
	// Refunds counts the refunds the clients sent (distinct refund_ids), RefundRequests the
	// RefundPayment calls (retries included), RefundAnswers the calls answered with an outcome
	// or a refusal, RefundsAnswerLost the refunds whose first answer was a replay (a request
	// recorded them, and its answer was lost; refunds sent twice at once are not counted). Refunded is the sum of the succeeded refunds, in
	// minor units; RefundedPayments the payments with something refunded, RefundedInFull those
	// refunded in full.
	Refunds, RefundRequests, RefundAnswers, RefundsAnswerLost, RefundedPayments, RefundedInFull int
	Refunded                                                                                    int64
	// RefundOutcomes counts the refunds by how they ended: "succeeded", "failed/<reason>"
	// (the payee's account could not afford it), "refused/<reason>" (nothing recorded:
	// refund_exceeds_payment for one over the cap), "unresolved" (a violation).
	RefundOutcomes map[string]int
	// RefundKinds counts the refunds by kind: partial, all_left (amount 0), rest (the amount
	// left, given), over_cap, concurrent (two or three of one payment at once).
	RefundKinds map[string]int
	// RefundRetries counts repeated sends of one refund_id by why: "ambiguous",
	// "concurrent" (twice at once), "sequential" (again after the answer), "after_faults".
	RefundRetries map[string]int
	// RefundErrors counts the errors RefundPayment calls got, by Connect code (and reason).
	RefundErrors map[string]int
	// Faults counts the injected faults by kind.
	Faults map[string]int
	// Notes say what the run could not do here, e.g. a fault kind it skipped and why.
	Notes []string
	// Violations are the invariant violations found; a correct system has none.
	Violations []string
}

// OK reports whether the run found no violation.
func (r *Report) OK() bool { return len(r.Violations) == 0 }

// String formats the report for people.
func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d\n", r.Seed)
	if r.Backend != "" {
		fmt.Fprintf(&b, "backend %s, %d gateway replica(s)\n", r.Backend, r.Gateways)
	}
	fmt.Fprintf(&b, "workload %s, whole run %s, quiesced %s after the faults stopped\n",
		r.Duration.Round(time.Second), r.Elapsed.Round(time.Second), r.Settled.Round(100*time.Millisecond))
	fmt.Fprintf(&b, "payments %d (requests %d, final answers %d): succeeded %d, failed %d\n",
		r.Payments, r.Requests, r.Answers, r.Succeeded, r.Failed)
	writeCounts(&b, "kinds", r.Kinds)
	writeCounts(&b, "same-id retries", r.Retries)
	writeCounts(&b, "failure reasons", r.FailureReasons)
	writeCounts(&b, "client errors", r.ClientErrors)
	fmt.Fprintf(&b, "entries %d (requests %d, answers %d, replays %d, journaled by a request whose answer was lost %d): deposits %d for %s, withdrawals %d for %s\n",
		r.Entries, r.EntryRequests, r.EntryAnswers, r.EntryReplays, r.EntriesAnswerLost,
		r.Deposits, money.Format(r.Deposited, "USD"), r.Withdrawals, money.Format(r.Withdrawn, "USD"))
	writeCounts(&b, "entries refused", r.EntriesRefused)
	writeCounts(&b, "same-id entry retries", r.EntryRetries)
	writeCounts(&b, "entry errors", r.EntryErrors)
	fmt.Fprintf(&b, "%s\n", r.refundSummary())
	writeCounts(&b, "refund outcomes", r.RefundOutcomes)
	writeCounts(&b, "refund kinds", r.RefundKinds)
	writeCounts(&b, "same-id refund retries", r.RefundRetries)
	writeCounts(&b, "refund errors", r.RefundErrors)
	total := 0
	for _, n := range r.Faults {
		total += n
	}
	fmt.Fprintf(&b, "faults %d\n", total)
	writeCounts(&b, "faults by kind", r.Faults)
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	fmt.Fprintf(&b, "invariant violations %d\n", len(r.Violations))
	for _, v := range r.Violations {
		fmt.Fprintf(&b, "  VIOLATION %s\n", v)
	}
	return b.String()
}

func writeCounts(b *strings.Builder, title string, m map[string]int) {
	fmt.Fprintf(b, "%s:", title)
	if len(m) == 0 {
		b.WriteString(" none\n")
		return
	}
	for _, k := range sortedKeys(m) {
		fmt.Fprintf(b, " %s=%d", k, m[k])
	}
	b.WriteString("\n")
}

// logger writes timestamped lines to a writer, safely from many goroutines.
type logger struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
}

func (l *logger) printf(format string, args ...any) {
	if l.w == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, "[%7.1fs] %s\n", time.Since(l.start).Seconds(), fmt.Sprintf(format, args...))
}

// sleepCtx sleeps d or until ctx is done; it reports whether the whole d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
