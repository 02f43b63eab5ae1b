package gateway

import (
	"context"
	"testing"
	"time"
)

// BenchmarkAppendTrail writes the trail of one cross-bank payment (a prepare sent, a vote and an
// acknowledgement at each of two banks: six events) per op, in batches of 80 payments, as the
// trail recorder does under load. It reports the store's cost per payment.
func BenchmarkAppendTrail(b *testing.B) {
	s := openBenchStore(b, true)
	ids := benchIDs("trail", 80)
	batch := make([]trailEvent, 0, 6*len(ids))
	for _, id := range ids {
		for _, bank := range []string{"bank1", "bank2"} {
			batch = append(batch,
				trailEvent{PaymentID: id, At: benchNow, Kind: 2, Bank: bank},
				trailEvent{PaymentID: id, At: benchNow.Add(time.Millisecond), Kind: 3, Bank: bank, Vote: "yes"},
				trailEvent{PaymentID: id, At: benchNow.Add(2 * time.Millisecond), Kind: 6, Bank: bank})
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += len(ids) {
		if err := s.AppendTrail(context.Background(), batch); err != nil {
			b.Fatal(err)
		}
	}
}
