package gateway

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// TestMarkCompletedOneStatement: recording completions in batches of every size uses one
// statement text, so the writer's prepared-statement cache does not fill with one text per
// batch size (it is bounded, and hot statements met after it is full would run unprepared).
func TestMarkCompletedOneStatement(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := OpenStore(ctx, filepath.Join(t.TempDir(), "gateway.db"), false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var ids []string
	for range 60 {
		p := testPayment("bankA-1", "bankB-2", 1)
		p.CreatedAt, p.Deadline = time.Now(), time.Now().Add(time.Minute)
		if _, _, err := admitPayment(ctx, s, p); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Decide(ctx, p.PaymentID, decisionCommit, 0, "", false, time.Now(), decidedByRequest); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, p.PaymentID)
	}
	// Let the writer learn the statements of admission and decision first.
	if err := s.MarkCompleted(ctx, ids[:1], time.Now()); err != nil {
		t.Fatal(err)
	}
	before := s.db.PreparedStatements()
	for n, done := 2, 1; done+n <= len(ids); done, n = done+n, n+1 {
		if err := s.MarkCompleted(ctx, ids[done:done+n], time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.db.PreparedStatements(); got > before+1 {
		t.Fatalf("batches of %d sizes prepared %d statements; want at most one", 9, got-before)
	}
	for _, id := range ids[:46] {
		if p, err := s.Payment(ctx, id); err != nil || !p.Completed {
			t.Fatalf("payment %s = %+v, %v; want completed", id, p, err)
		}
	}
}
