package gateway

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/paygate/paygate/internal/sqlitedb"
)

// TestMigrationCanonicalisesPaymentIDs: opening a store written before payment ids were
// canonical rewrites the ids of finished payments to their canonical spelling, and leaves alone
// an unfinished one (its banks know the old spelling) and one whose canonical spelling is taken.
func TestMigrationCanonicalisesPaymentIDs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "gateway.db")
	old, err := sqlitedb.OpenWith(ctx, path, migrations[:1], sqlitedb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	done := strings.ToUpper(newPaymentID())
	unfinished := strings.ToUpper(newPaymentID())
	ulid := "01arz3ndektsv4rrffq69g5fav"
	clash := strings.ToUpper(newPaymentID())
	insert := func(id string, completed int) {
		t.Helper()
		if _, err := old.Write.ExecContext(ctx, `INSERT INTO payments (payment_id, username, from_account, to_account, amount,
			currency, fingerprint, decision, completed, created_at, deadline) VALUES (?, 'alice', 'a-1', 'b-2', 1, 'USD', X'01', 1, ?, 1, 2)`,
			id, completed); err != nil {
			t.Fatal(err)
		}
	}
	insert(done, 1)
	insert(unfinished, 0)
	insert(ulid, 1)
	insert(clash, 1)
	insert(strings.ToLower(clash), 1)
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	s, err := OpenStore(ctx, path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, tc := range []struct {
		id      string
		present bool
	}{
		{done, false}, {strings.ToLower(done), true},
		{unfinished, true}, {strings.ToLower(unfinished), false},
		{ulid, false}, {strings.ToUpper(ulid), true},
		{clash, true}, {strings.ToLower(clash), true},
	} {
		_, err := s.Payment(ctx, tc.id)
		if got := err == nil; got != tc.present || (err != nil && !errors.Is(err, ErrNotFound)) {
			t.Errorf("payment %s: present %v (%v); want %v", tc.id, got, err, tc.present)
		}
	}
}
