package bank

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestPGBatchesAtOnceDoNotDeadlock: two gateway replicas send a bank batches at the same time,
// whose items touch the same accounts in opposite orders. Each batch locks all its accounts up
// front, in id order, so the batches wait for each other instead of deadlocking (a deadlock is
// only noticed after PostgreSQL's deadlock_timeout, a second by default, and then retried).
func TestPGBatchesAtOnceDoNotDeadlock(t *testing.T) {
	ctx := context.Background()
	var accounts []Account
	for i := range 4 {
		accounts = append(accounts, usd(fmt.Sprintf("bank1-%d", i+1), 1_000_000))
	}
	l, dbURL := openTestPGLedger(t, accounts...)
	dl := time.Now().Add(time.Hour)
	const rounds = 20
	for r := range rounds {
		var wg sync.WaitGroup
		for b := range 2 {
			// Batch 0 touches bank1-1 then bank1-4, batch 1 bank1-4 then bank1-1: the same rows,
			// in opposite orders, item by item.
			first, second := "bank1-1", "bank1-4"
			if b == 1 {
				first, second = second, first
			}
			items := []PrepareItem{
				{TxnID: fmt.Sprintf("r%d-b%d-1", r, b), Legs: []Leg{debit(first, 1)}, Deadline: dl},
				{TxnID: fmt.Sprintf("r%d-b%d-2", r, b), Legs: []Leg{debit(second, 1)}, Deadline: dl},
			}
			var completions []Completion
			if r > 0 {
				// Complete the previous round's prepares of the other batch too.
				o := 1 - b
				completions = []Completion{
					{TxnID: fmt.Sprintf("r%d-b%d-2", r-1, o), Outcome: Committed},
					{TxnID: fmt.Sprintf("r%d-b%d-1", r-1, o), Outcome: Committed},
				}
			}
			wg.Go(func() {
				_, votes, errs, err := l.Batch(ctx, completions, items, time.Now())
				if err != nil {
					t.Error(err)
					return
				}
				for i := range items {
					if errs[i] != nil || !votes[i].Yes {
						t.Errorf("prepare %s: %v %+v", items[i].TxnID, errs[i], votes[i])
					}
				}
			})
		}
		wg.Wait()
	}
	// PostgreSQL counts the deadlocks it broke in the database's statistics, which a backend
	// reports when it goes idle: poll for a moment.
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var deadlocks int64
	for range 20 {
		if _, err := conn.Exec(ctx, `SELECT pg_stat_clear_snapshot()`); err != nil {
			t.Fatal(err)
		}
		if err := conn.QueryRow(ctx, `SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()`).Scan(&deadlocks); err != nil {
			t.Fatal(err)
		}
		if deadlocks > 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if deadlocks > 0 {
		t.Fatalf("%d deadlocks between batches sent at once", deadlocks)
	}
}
