package bank

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/paygate/paygate/internal/sqlitedb"
)

// The hot paths of a bank: Prepare and Commit, each one durable write (WAL, synchronous=FULL).
// The serial benchmarks show the cost of one call alone, a sync each; the parallel ones run
// 32 × GOMAXPROCS callers (64 on two cores, as `paygate bench` drives a bank) with group commit
// on and off, so the difference is what sharing one transaction and one sync buys.

// openBenchLedger opens a ledger of bank1 with a payer holding plenty and a payee. With group
// false every write is its own transaction and sync.
func openBenchLedger(b *testing.B, group bool) *Ledger {
	b.Helper()
	l, err := OpenLedger(context.Background(), filepath.Join(b.TempDir(), "bank1.db"), "bank1",
		sqlitedb.Options{NoGroupCommit: !group})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	if err := l.ImportAccounts(context.Background(), []Account{usd("bank1-1", math.MaxInt64/2), usd("bank1-2", 0)}); err != nil {
		b.Fatal(err)
	}
	return l
}

var benchLegs = []Leg{debit("bank1-1", 1), credit("bank1-2", 1)}

// benchPrepare prepares txn; it may run on any goroutine, so it reports failures with Error.
func benchPrepare(b *testing.B, l *Ledger, txn string) bool {
	v, err := l.Prepare(context.Background(), txn, benchLegs, deadline, t0)
	if err != nil || !v.Yes {
		b.Error(txn, v, err)
		return false
	}
	return true
}

func reportRate(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkLedgerPrepare is one prepare (a hold and a pending credit) at a time.
func BenchmarkLedgerPrepare(b *testing.B) {
	l := openBenchLedger(b, true)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if !benchPrepare(b, l, fmt.Sprintf("p%d", i)) {
			b.FailNow()
		}
	}
	reportRate(b)
}

// BenchmarkLedgerCommit is one commit of a prepared transaction at a time; the prepares are made
// before the clock starts.
func BenchmarkLedgerCommit(b *testing.B) {
	l := openBenchLedger(b, true)
	ids := prepareMany(b, l, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if err := l.Commit(context.Background(), ids[i]); err != nil {
			b.Fatal(err)
		}
	}
	reportRate(b)
}

func prepareMany(b *testing.B, l *Ledger, n int) []string {
	b.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("c%d", i)
	}
	// Prepared concurrently, so that setting up a large b.N takes little time.
	var next atomic.Int64
	done := make(chan struct{})
	for range 64 {
		go func() {
			defer func() { done <- struct{}{} }()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) || !benchPrepare(b, l, ids[i]) {
					return
				}
			}
		}()
	}
	for range 64 {
		<-done
	}
	if b.Failed() {
		b.FailNow()
	}
	return ids
}

// BenchmarkLedgerPrepareParallel is prepares from 64 concurrent callers (on two cores).
func BenchmarkLedgerPrepareParallel(b *testing.B) {
	for _, group := range []bool{true, false} {
		b.Run(fmt.Sprintf("group=%v", group), func(b *testing.B) {
			l := openBenchLedger(b, group)
			var seq atomic.Int64
			b.ReportAllocs()
			b.SetParallelism(32)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if !benchPrepare(b, l, fmt.Sprintf("p%d", seq.Add(1))) {
						return
					}
				}
			})
			reportRate(b)
		})
	}
}

// BenchmarkLedgerCommitParallel is commits from 64 concurrent callers (on two cores).
func BenchmarkLedgerCommitParallel(b *testing.B) {
	for _, group := range []bool{true, false} {
		b.Run(fmt.Sprintf("group=%v", group), func(b *testing.B) {
			l := openBenchLedger(b, group)
			ids := prepareMany(b, l, b.N)
			var seq atomic.Int64
			b.ReportAllocs()
			b.SetParallelism(32)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := l.Commit(context.Background(), ids[seq.Add(1)-1]); err != nil {
						b.Error(err)
						return
					}
				}
			})
			reportRate(b)
		})
	}
}

// BenchmarkLedgerPrepareCommitParallel is a bank's share of a payment, prepare then commit, from
// 64 concurrent callers (on two cores).
func BenchmarkLedgerPrepareCommitParallel(b *testing.B) {
	for _, group := range []bool{true, false} {
		b.Run(fmt.Sprintf("group=%v", group), func(b *testing.B) {
			l := openBenchLedger(b, group)
			var seq atomic.Int64
			b.ReportAllocs()
			b.SetParallelism(32)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					txn := fmt.Sprintf("pc%d", seq.Add(1))
					if !benchPrepare(b, l, txn) {
						return
					}
					if err := l.Commit(context.Background(), txn); err != nil {
						b.Error(err)
						return
					}
				}
			})
			reportRate(b)
		})
	}
}

// benchBatch is the number of items of a batch in the batch benchmarks.
const benchBatch = 32

// benchIDs returns n transaction ids like the gateway's: random UUIDs.
func benchIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = uuid.NewString()
	}
	return ids
}

// itemMeter reports what a batch benchmark costs per item: wall time, allocations and the CPU time
// of the whole process (the ledger's writer goroutine and SQLite included), which is what limits
// a bank's throughput.
type itemMeter struct {
	b       *testing.B
	items   int
	cpu     time.Duration
	cpuOK   bool
	mallocs uint64
}

// startItems resets the benchmark's timer and starts measuring b.N batches of items each.
func startItems(b *testing.B, items int) *itemMeter {
	m := &itemMeter{b: b, items: b.N * items}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m.mallocs = ms.Mallocs
	b.ReportAllocs()
	b.ResetTimer()
	m.cpu, m.cpuOK = processCPU()
	return m
}

func (m *itemMeter) stop() {
	cpu, ok := processCPU()
	m.b.StopTimer()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	n := float64(m.items)
	m.b.ReportMetric(float64(m.b.Elapsed().Nanoseconds())/n, "ns/item")
	m.b.ReportMetric(float64(ms.Mallocs-m.mallocs)/n, "allocs/item")
	if ok && m.cpuOK {
		m.b.ReportMetric(float64((cpu-m.cpu).Nanoseconds())/n, "cpu-ns/item")
	}
}

// prepareBatches prepares the ids in batches of benchBatch, each one Batch of prepares.
func prepareBatches(b *testing.B, l *Ledger, ids []string) {
	b.Helper()
	items := make([]PrepareItem, benchBatch)
	for start := 0; start < len(ids); start += benchBatch {
		batch := ids[start:min(start+benchBatch, len(ids))]
		for i, id := range batch {
			items[i] = PrepareItem{TxnID: id, Legs: benchLegs, Deadline: deadline}
		}
		_, votes, errs, err := l.Batch(context.Background(), nil, items[:len(batch)], t0)
		if err != nil {
			b.Fatal(err)
		}
		for i := range batch {
			if errs[i] != nil || !votes[i].Yes {
				b.Fatal(batch[i], votes[i], errs[i])
			}
		}
	}
}

// BenchmarkLedgerBatchPrepares is batches of 32 prepares, one Batch (one write) each.
func BenchmarkLedgerBatchPrepares(b *testing.B) {
	l := openBenchLedger(b, true)
	ids := benchIDs(b.N * benchBatch)
	m := startItems(b, benchBatch)
	for n := range b.N {
		prepareBatches(b, l, ids[n*benchBatch:(n+1)*benchBatch])
	}
	m.stop()
}

// BenchmarkLedgerBatchCommits is batches of 32 commits, one Batch (one write) each; the
// prepares are made before the clock starts.
func BenchmarkLedgerBatchCommits(b *testing.B) {
	l := openBenchLedger(b, true)
	ids := benchIDs(b.N * benchBatch)
	prepareBatches(b, l, ids)
	items := make([]Completion, benchBatch)
	m := startItems(b, benchBatch)
	for n := range b.N {
		for i, id := range ids[n*benchBatch : (n+1)*benchBatch] {
			items[i] = Completion{TxnID: id, Outcome: Committed}
		}
		errs, _, _, err := l.Batch(context.Background(), items, nil, t0)
		if err != nil {
			b.Fatal(err)
		}
		for i, err := range errs {
			if err != nil {
				b.Fatal(items[i].TxnID, err)
			}
		}
	}
	m.stop()
}
