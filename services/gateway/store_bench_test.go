package gateway

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// The coordinator's durable writes on the hot path of a payment, one each: Admit (insert the
// payment row), Decide (the compare-and-set that is the commit point) and Complete (phase two
// acknowledged). Each benchmark runs serially (one sync per write) and from 32 × GOMAXPROCS
// callers (64 on two cores, as `paygate bench` drives the gateway) with group commit on and off.

func openBenchStore(b *testing.B, group bool) Store {
	b.Helper()
	s, err := OpenStore(context.Background(), filepath.Join(b.TempDir(), "gateway.db"), !group)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

var benchNow = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func benchPayment(id string) paymentRecord {
	return paymentRecord{
		PaymentID: id, Username: "alice", From: "bank1-1001", To: "bank2-2001", Amount: 1234, Currency: "USD",
		Fingerprint: paymentFingerprint("alice", "bank1-1001", "bank2-2001", 1234, "USD"),
		CreatedAt:   benchNow, Deadline: benchNow.Add(30 * time.Second),
	}
}

func benchIDs(prefix string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%08d-0000-4000-8000-000000000000", prefix, i)
	}
	return ids
}

// admitAll admits, and with decide also decides (commit), every payment in ids, concurrently so
// that large b.N set up quickly.
func admitAll(b *testing.B, s Store, ids []string, decide bool) {
	b.Helper()
	var next atomic.Int64
	errs := make(chan error, 64)
	for range 64 {
		go func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(len(ids)) {
					errs <- nil
					return
				}
				if _, _, err := admitPayment(context.Background(), s, benchPayment(ids[i])); err != nil {
					errs <- err
					return
				}
				if decide {
					if _, err := s.Decide(context.Background(), ids[i], decisionCommit, 0, "", false, benchNow, decidedByRequest); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	for range 64 {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
}

// runStoreBench runs op on b.N distinct payment ids, after setup, serially and in parallel with
// group commit on and off.
func runStoreBench(b *testing.B, setup func(b *testing.B, s Store, ids []string), op func(s Store, id string) error) {
	for _, c := range []struct {
		name     string
		group    bool
		parallel bool
	}{{"serial", true, false}, {"parallel/group=true", true, true}, {"parallel/group=false", false, true}} {
		b.Run(c.name, func(b *testing.B) {
			s := openBenchStore(b, c.group)
			ids := benchIDs(fmt.Sprintf("%08x", b.N), b.N)
			if setup != nil {
				setup(b, s, ids)
			}
			var seq atomic.Int64
			b.ReportAllocs()
			b.ResetTimer()
			if !c.parallel {
				for _, id := range ids {
					if err := op(s, id); err != nil {
						b.Fatal(err)
					}
				}
			} else {
				b.SetParallelism(32)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := op(s, ids[seq.Add(1)-1]); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
		})
	}
}

func BenchmarkStoreAdmit(b *testing.B) {
	runStoreBench(b, nil, func(s Store, id string) error {
		_, inserted, err := admitPayment(context.Background(), s, benchPayment(id))
		if err == nil && !inserted {
			err = fmt.Errorf("%s not inserted", id)
		}
		return err
	})
}

func BenchmarkStoreDecide(b *testing.B) {
	runStoreBench(b,
		func(b *testing.B, s Store, ids []string) { admitAll(b, s, ids, false) },
		func(s Store, id string) error {
			p, err := s.Decide(context.Background(), id, decisionCommit, 0, "", false, benchNow, decidedByRequest)
			if err == nil && p.Decision != decisionCommit {
				err = fmt.Errorf("%s decided %v", id, p.Decision)
			}
			return err
		})
}

func BenchmarkStoreComplete(b *testing.B) {
	runStoreBench(b,
		func(b *testing.B, s Store, ids []string) { admitAll(b, s, ids, true) },
		func(s Store, id string) error {
			return s.MarkCompleted(context.Background(), []string{id}, benchNow)
		})
}
