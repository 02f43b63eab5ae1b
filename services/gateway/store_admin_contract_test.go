package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/paygate/paygate/internal/pgdb"
	"github.com/paygate/paygate/internal/pgdb/pgtest"
	"github.com/paygate/paygate/internal/sqlitedb"
)

// The contract tests of the store's admin port (adminStore) and of the fields the admin
// interface added to users, sessions and payments, on both stores (see forEachStore).

// saExec runs a statement on s's database directly, bypassing the store (to tamper with it).
// Placeholders are written "?"; they become $1, $2, … on PostgreSQL.
func saExec(t *testing.T, s Store, query string, args ...any) {
	t.Helper()
	var err error
	switch s := s.(type) {
	case *SQLiteStore:
		_, err = s.db.Write.ExecContext(context.Background(), query, args...)
	case *PGStore:
		n := 0
		var b strings.Builder
		for _, r := range query {
			if r == '?' {
				n++
				fmt.Fprintf(&b, "$%d", n)
				continue
			}
			b.WriteRune(r)
		}
		_, err = s.pool.Exec(context.Background(), b.String(), args...)
	default:
		t.Fatalf("no database behind %T", s)
	}
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

// saUser is a user of role with accounts.
func saUser(name, role string, accounts ...string) userRecord {
	return userRecord{Username: name, PasswordHash: "h-" + name, Role: role, Accounts: accounts}
}

func saCreate(t *testing.T, s Store, users ...userRecord) {
	t.Helper()
	if err := s.CreateUsers(context.Background(), users, time.Now()); err != nil {
		t.Fatal(err)
	}
}

func saNames(us []userRecord) []string {
	out := make([]string, len(us))
	for i, u := range us {
		out[i] = u.Username
	}
	return out
}

// TestStoreUserAdminFields: CreateUsers writes the admin fields and the creation time, and User
// and ListUsers read them back.
func TestStoreUserAdminFields(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		now := time.Now()
		in := userRecord{Username: "root", PasswordHash: "h", Role: RoleAdmin, Disabled: true, MustChangePassword: true,
			TOTPSecret: "JBSWY3DPEHPK3PXP", TOTPLastStep: 42, Accounts: []string{"bankA-1"}}
		if err := s.CreateUsers(ctx, []userRecord{in, saUser("plain", RoleCustomer)}, now); err != nil {
			t.Fatal(err)
		}
		u, err := s.User(ctx, "root")
		if err != nil {
			t.Fatal(err)
		}
		if u.Role != RoleAdmin || !u.Disabled || !u.MustChangePassword || u.TOTPSecret != in.TOTPSecret ||
			u.TOTPLastStep != 42 || u.CreatedAt.UnixNano() != now.UnixNano() || !slices.Equal(u.Accounts, in.Accounts) {
			t.Fatalf("User(root) = %+v\nwant the fields of %+v created at %v", u, in, now)
		}
		if u, err := s.User(ctx, "plain"); err != nil || u.Disabled || u.MustChangePassword || u.TOTPSecret != "" || u.TOTPLastStep != 0 {
			t.Fatalf("User(plain) = %+v, %v; want no admin fields set", u, err)
		}
		list, err := s.ListUsers(ctx, "root", "", "", 10)
		if err != nil || len(list) != 1 || list[0].TOTPSecret != in.TOTPSecret || !list[0].Disabled ||
			!list[0].MustChangePassword || list[0].TOTPLastStep != 42 || list[0].CreatedAt.UnixNano() != now.UnixNano() {
			t.Fatalf("ListUsers(root) = %+v, %v", list, err)
		}
	})
}

func TestStoreListUsers(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		saCreate(t, s,
			saUser("alice", RoleCustomer, "bankB-2", "bankA-1"),
			saUser("Alfred", RoleAdmin),
			saUser("bob", RoleCustomer, "bankC-3"),
			saUser("carol", RoleAdmin, "bankA-9"),
			saUser("malia", RoleCustomer),
			saUser("x%_y", RoleCustomer),
		)
		all, err := s.ListUsers(ctx, "", "", "", 100)
		if err != nil {
			t.Fatal(err)
		}
		// Username order is bytewise: upper case first.
		if got, want := saNames(all), []string{"Alfred", "alice", "bob", "carol", "malia", "x%_y"}; !slices.Equal(got, want) {
			t.Fatalf("all users %v, want %v", got, want)
		}
		if !slices.Equal(all[1].Accounts, []string{"bankA-1", "bankB-2"}) || all[0].Accounts != nil || all[1].PasswordHash != "h-alice" {
			t.Fatalf("accounts of Alfred %v, alice %v (%+v)", all[0].Accounts, all[1].Accounts, all[1])
		}
		for _, tc := range []struct {
			query, role, after string
			limit              int
			want               []string
		}{
			{query: "AL", want: []string{"Alfred", "alice", "malia"}}, // case-insensitive
			{query: "li", want: []string{"alice", "malia"}},
			{query: "lia", role: RoleCustomer, want: []string{"malia"}},
			{role: RoleAdmin, want: []string{"Alfred", "carol"}},
			{role: "nobody", want: nil},
			{query: "%", want: []string{"x%_y"}}, // no wildcards
			{query: "_", want: []string{"x%_y"}},
			{query: "zzz", want: nil},
			{limit: 2, want: []string{"Alfred", "alice"}},
			{after: "alice", limit: 2, want: []string{"bob", "carol"}},
			{after: "carol", limit: 2, want: []string{"malia", "x%_y"}},
			{after: "x%_y", limit: 2, want: nil},
			{after: "b", query: "a", want: []string{"carol", "malia"}},
			{query: "a\x00", want: nil},
		} {
			limit := tc.limit
			if limit == 0 {
				limit = 100
			}
			got, err := s.ListUsers(ctx, tc.query, tc.role, tc.after, limit)
			if err != nil || !slices.Equal(saNames(got), tc.want) {
				t.Errorf("ListUsers(%q, %q, %q, %d) = %v, %v; want %v", tc.query, tc.role, tc.after, limit, saNames(got), err, tc.want)
			}
		}
		// Paging through every user, two at a time, finds each once.
		var paged []string
		after := ""
		for {
			page, err := s.ListUsers(ctx, "", "", after, 2)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			paged = append(paged, saNames(page)...)
			after = page[len(page)-1].Username
		}
		if !slices.Equal(paged, saNames(all)) {
			t.Fatalf("paged %v, want %v", paged, saNames(all))
		}
	})
}

func TestStoreUpdateUser(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		saCreate(t, s, saUser("root", RoleAdmin), saUser("alice", RoleCustomer, "bankA-1"))
		now := time.Now()
		live := sessionRecord{Username: "alice", CertFingerprint: "fp", ExpiresAt: now.Add(time.Hour)}
		for _, tok := range []string{"a1", "a2", "a3"} {
			if err := s.CreateSession(ctx, tok, live, now, 0); err != nil {
				t.Fatal(err)
			}
		}
		expired := sessionRecord{Username: "alice", ExpiresAt: now.Add(-time.Minute)}
		if err := s.CreateSession(ctx, "old", expired, now.Add(-time.Hour), 0); err != nil {
			t.Fatal(err)
		}
		if err := s.RevokeSession(ctx, "a3", now); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateSession(ctx, "r1", sessionRecord{Username: "root", ExpiresAt: now.Add(time.Hour)}, now, 0); err != nil {
			t.Fatal(err)
		}

		// Disable alice and end her sessions: the two live ones are revoked (the revoked and
		// the expired one are not counted), and her sessions show it.
		before, after, revoked, err := s.UpdateUser(ctx, "alice", func(u *userRecord) error {
			u.Disabled = true
			u.Username, u.Accounts, u.CreatedAt = "mallory", []string{"bankZ-1"}, time.Unix(1, 0) // not changed by UpdateUser
			return nil
		}, true, now)
		if err != nil || revoked != 2 {
			t.Fatalf("disable alice: revoked %d, %v; want 2", revoked, err)
		}
		if before.Username != "alice" || before.Disabled || !slices.Equal(before.Accounts, []string{"bankA-1"}) {
			t.Fatalf("before = %+v", before)
		}
		if after.Username != "alice" || !after.Disabled || !slices.Equal(after.Accounts, []string{"bankA-1"}) ||
			!after.CreatedAt.Equal(before.CreatedAt) || after.PasswordHash != "h-alice" {
			t.Fatalf("after = %+v", after)
		}
		for _, tok := range []string{"a1", "a2", "a3"} {
			if got, err := s.Session(ctx, tok); err != nil || !got.Revoked || !got.UserDisabled {
				t.Fatalf("alice's session %s after disabling: %+v, %v; want revoked, user disabled", tok, got, err)
			}
		}
		if got, err := s.Session(ctx, "r1"); err != nil || got.Revoked || got.UserDisabled {
			t.Fatalf("root's session: %+v, %v; want untouched", got, err)
		}
		u, err := s.User(ctx, "alice")
		if err != nil || !u.Disabled || !slices.Equal(u.Accounts, []string{"bankA-1"}) || !u.CreatedAt.Equal(before.CreatedAt) {
			t.Fatalf("alice stored as %+v, %v", u, err)
		}
		if _, err := s.User(ctx, "mallory"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("a renamed user exists: %v", err)
		}

		// Every field UpdateUser writes, without revoking sessions.
		_, after, revoked, err = s.UpdateUser(ctx, "alice", func(u *userRecord) error {
			u.Disabled, u.MustChangePassword, u.PasswordHash, u.Role = false, true, "h2", RoleAdmin
			u.TOTPSecret, u.TOTPLastStep = "SECRET", 9
			return nil
		}, false, now)
		if err != nil || revoked != 0 {
			t.Fatalf("update alice: revoked %d, %v", revoked, err)
		}
		want := userRecord{Username: "alice", PasswordHash: "h2", Role: RoleAdmin, Accounts: []string{"bankA-1"},
			MustChangePassword: true, TOTPSecret: "SECRET", TOTPLastStep: 9, CreatedAt: before.CreatedAt}
		u, err = s.User(ctx, "alice")
		if err != nil || !saSameUser(u, want) || !saSameUser(after, want) {
			t.Fatalf("alice stored as %+v (returned %+v), %v; want %+v", u, after, err, want)
		}
		if got, err := s.Session(ctx, "a1"); err != nil || !got.Revoked || got.UserDisabled || !got.MustChangePassword || got.Role != RoleAdmin {
			t.Fatalf("alice's session a1: %+v, %v", got, err)
		}

		// fn's refusal is returned as it is, and changes nothing (sessions included).
		refusal := errors.New("no")
		if _, _, _, err := s.UpdateUser(ctx, "root", func(u *userRecord) error { u.PasswordHash = "x"; return refusal }, true, now); err != refusal {
			t.Fatalf("refused update: %v, want fn's error itself", err)
		}
		if u, err := s.User(ctx, "root"); err != nil || u.PasswordHash != "h-root" {
			t.Fatalf("root after a refused update: %+v, %v", u, err)
		}
		if got, err := s.Session(ctx, "r1"); err != nil || got.Revoked {
			t.Fatalf("root's session after a refused update: %+v, %v", got, err)
		}
		if _, _, _, err := s.UpdateUser(ctx, "nobody", func(*userRecord) error { return nil }, true, now); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown user: %v, want ErrNotFound", err)
		}

		// Two enabled admins (root, alice): one may be demoted, the other then not, nor
		// disabled; other changes of the last admin are allowed.
		demote := func(u *userRecord) error { u.Role = RoleCustomer; return nil }
		disable := func(u *userRecord) error { u.Disabled = true; return nil }
		if _, _, _, err := s.UpdateUser(ctx, "alice", demote, false, now); err != nil {
			t.Fatalf("demote alice (root is an admin too): %v", err)
		}
		for name, fn := range map[string]func(*userRecord) error{"demote": demote, "disable": disable} {
			if _, _, _, err := s.UpdateUser(ctx, "root", fn, true, now); !errors.Is(err, ErrLastAdmin) {
				t.Fatalf("%s the last admin: %v, want ErrLastAdmin", name, err)
			}
		}
		if u, err := s.User(ctx, "root"); err != nil || !enabledAdmin(u) {
			t.Fatalf("root after refusals: %+v, %v", u, err)
		}
		if got, err := s.Session(ctx, "r1"); err != nil || got.Revoked {
			t.Fatalf("the last admin's session was revoked by a refused update: %+v, %v", got, err)
		}
		if _, _, _, err := s.UpdateUser(ctx, "root", func(u *userRecord) error { u.PasswordHash = "h3"; return nil }, true, now); err != nil {
			t.Fatalf("new password of the last admin: %v", err)
		}
		// A disabled admin does not count; enabling one again does.
		saCreate(t, s, userRecord{Username: "zed", PasswordHash: "h", Role: RoleAdmin, Disabled: true})
		if _, _, _, err := s.UpdateUser(ctx, "root", disable, false, now); !errors.Is(err, ErrLastAdmin) {
			t.Fatalf("disable root beside a disabled admin: %v, want ErrLastAdmin", err)
		}
		if _, _, _, err := s.UpdateUser(ctx, "zed", func(u *userRecord) error { u.Disabled = false; return nil }, false, now); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := s.UpdateUser(ctx, "root", disable, false, now); err != nil {
			t.Fatalf("disable root beside an enabled admin: %v", err)
		}
	})
}

// saSameUser compares users, their creation times as instants.
func saSameUser(a, b userRecord) bool {
	return a.Username == b.Username && a.PasswordHash == b.PasswordHash && a.Role == b.Role &&
		slices.Equal(a.Accounts, b.Accounts) && a.Disabled == b.Disabled && a.MustChangePassword == b.MustChangePassword &&
		a.TOTPSecret == b.TOTPSecret && a.TOTPLastStep == b.TOTPLastStep && a.CreatedAt.Equal(b.CreatedAt)
}

// TestStorePGConcurrentDemotion: two replicas each demoting one of the two enabled admins at
// the same moment leave one of them: one update succeeds, the other is refused with
// ErrLastAdmin. fn takes a while, so that without the store's locks both would read two admins
// before either writes.
func TestStorePGConcurrentDemotion(t *testing.T) {
	t.Parallel()
	a, b, _ := ctReplicas(t, 10*time.Second, 10*time.Second)
	ctx := context.Background()
	saCreate(t, a, saUser("ann", RoleAdmin), saUser("ben", RoleAdmin))
	slow := func(change func(*userRecord)) func(*userRecord) error {
		return func(u *userRecord) error {
			time.Sleep(20 * time.Millisecond)
			change(u)
			return nil
		}
	}
	for round := range 5 {
		var errs [2]error
		start := make(chan struct{})
		var wg sync.WaitGroup
		demote := slow(func(u *userRecord) { u.Role = RoleCustomer })
		disable := slow(func(u *userRecord) { u.Disabled = true })
		wg.Go(func() { <-start; _, _, _, errs[0] = a.UpdateUser(ctx, "ann", demote, true, time.Now()) })
		wg.Go(func() { <-start; _, _, _, errs[1] = b.UpdateUser(ctx, "ben", disable, true, time.Now()) })
		close(start)
		wg.Wait()
		ok := 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case !errors.Is(err, ErrLastAdmin):
				t.Fatalf("round %d: %v, want nil or ErrLastAdmin", round, err)
			}
		}
		admins, err := a.ListUsers(ctx, "", RoleAdmin, "", 10)
		if err != nil {
			t.Fatal(err)
		}
		enabled := 0
		for _, u := range admins {
			if !u.Disabled {
				enabled++
			}
		}
		if ok != 1 || enabled != 1 {
			t.Fatalf("round %d: %d updates succeeded (%v), %d enabled admins left; want 1 and 1", round, ok, errs, enabled)
		}
		// Both admins again for the next round.
		for _, name := range []string{"ann", "ben"} {
			if _, _, _, err := a.UpdateUser(ctx, name, func(u *userRecord) error { u.Role, u.Disabled = RoleAdmin, false; return nil }, false, time.Now()); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestStoreUseTOTPStep(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		saCreate(t, s, saUser("root", RoleAdmin))
		for _, tc := range []struct {
			step int64
			want bool
		}{{100, true}, {100, false}, {99, false}, {101, true}, {103, true}, {102, false}, {103, false}} {
			if got, err := s.UseTOTPStep(ctx, "root", tc.step); err != nil || got != tc.want {
				t.Fatalf("UseTOTPStep(%d) = %v, %v; want %v", tc.step, got, err, tc.want)
			}
		}
		if u, err := s.User(ctx, "root"); err != nil || u.TOTPLastStep != 103 {
			t.Fatalf("root's last step: %+v, %v; want 103", u, err)
		}
		if _, err := s.UseTOTPStep(ctx, "nobody", 1); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown user: %v, want ErrNotFound", err)
		}
		// Concurrent uses of one step: exactly one is accepted.
		var wg sync.WaitGroup
		var mu sync.Mutex
		accepted := 0
		for range 8 {
			wg.Go(func() {
				ok, err := s.UseTOTPStep(ctx, "root", 200)
				if err != nil {
					t.Error(err)
				}
				if ok {
					mu.Lock()
					accepted++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if accepted != 1 {
			t.Fatalf("a step used concurrently was accepted %d times, want once", accepted)
		}
	})
}

func TestStoreLinkAccount(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		saCreate(t, s, saUser("alice", RoleCustomer, "bankA-1"), saUser("bob", RoleCustomer))
		if err := s.LinkAccount(ctx, "alice", "bankB-2"); err != nil {
			t.Fatal(err)
		}
		if a, err := s.Accounts(ctx, "alice"); err != nil || !slices.Equal(a, []string{"bankA-1", "bankB-2"}) {
			t.Fatalf("alice's accounts: %v, %v", a, err)
		}
		if o, err := s.AccountOwner(ctx, "bankB-2"); err != nil || o != "alice" {
			t.Fatalf("owner of bankB-2: %q, %v", o, err)
		}
		for _, user := range []string{"alice", "bob"} {
			err := s.LinkAccount(ctx, user, "bankB-2")
			if !errors.Is(err, ErrAccountLinked) || err.Error() != ErrAccountLinked.Error()+": bankB-2" {
				t.Fatalf("link a linked account to %s: %v, want ErrAccountLinked naming it", user, err)
			}
		}
		if err := s.LinkAccount(ctx, "nobody", "bankC-3"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("link to an unknown user: %v, want ErrNotFound", err)
		}
		if _, err := s.AccountOwner(ctx, "bankC-3"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("an account linked to an unknown user: %v", err)
		}
		if err := s.UnlinkAccount(ctx, "bob", "bankB-2"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unlink another user's account: %v, want ErrNotFound", err)
		}
		if err := s.UnlinkAccount(ctx, "alice", "bankB-2"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.AccountOwner(ctx, "bankB-2"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("owner of an unlinked account: %v", err)
		}
		if err := s.UnlinkAccount(ctx, "alice", "bankB-2"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unlink again: %v, want ErrNotFound", err)
		}
		// Once unlinked, the account may be linked to another user.
		if err := s.LinkAccount(ctx, "bob", "bankB-2"); err != nil {
			t.Fatal(err)
		}
		if u, err := s.User(ctx, "bob"); err != nil || !slices.Equal(u.Accounts, []string{"bankB-2"}) {
			t.Fatalf("bob: %+v, %v", u, err)
		}
	})
}

// saAuditRecord is the nth test entry of the audit log.
func saAuditRecord(n int, actor string) auditRecord {
	return auditRecord{Actor: actor, ActorCert: "spiffe://paygate/admin/" + actor, Peer: "10.0.0.1",
		Action: "DisableUser", Target: fmt.Sprintf("user:u%d", n), Outcome: "ok", RequestID: fmt.Sprintf("req-%d", n),
		Before: `{"disabled":false}`, After: `{"disabled":true}`}
}

// saAppend appends n entries, of actors root and ops in turn, and returns them as stored.
func saAppend(t *testing.T, s Store, n int) []auditRecord {
	t.Helper()
	var out []auditRecord
	for i := range n {
		actor := []string{"root", "ops"}[i%2]
		r, err := s.AppendAudit(context.Background(), saAuditRecord(i+1, actor))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func saSeqs(rs []auditRecord) []int64 {
	out := make([]int64, len(rs))
	for i, r := range rs {
		out[i] = r.Seq
	}
	return out
}

func TestStoreAuditLog(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		if v, err := verifyAudit(ctx, s); err != nil || !v.OK || v.Entries != 0 {
			t.Fatalf("verify an empty log: %+v, %v", v, err)
		}
		start := s.Now()
		appended := saAppend(t, s, 5)
		for i, r := range appended {
			want := saAuditRecord(i+1, r.Actor)
			if r.Seq != int64(i+1) || r.Actor != want.Actor || r.Target != want.Target || r.Before != want.Before ||
				r.After != want.After || r.RequestID != want.RequestID || r.ActorCert != want.ActorCert || r.Peer != want.Peer {
				t.Fatalf("entry %d appended as %+v", i+1, r)
			}
			if i == 0 && r.PrevHash != nil {
				t.Fatalf("first entry's PrevHash %x, want nil", r.PrevHash)
			}
			if i > 0 && (!bytes.Equal(r.PrevHash, appended[i-1].Hash) || !r.At.After(appended[i-1].At) && !r.At.Equal(appended[i-1].At)) {
				t.Fatalf("entry %d (%v, prev %x) does not follow entry %d (%v, hash %x)", i+1, r.At, r.PrevHash, i, appended[i-1].At, appended[i-1].Hash)
			}
			if !bytes.Equal(r.Hash, auditHash(r.PrevHash, r)) || len(r.Hash) != 32 {
				t.Fatalf("entry %d's hash %x, want auditHash of it", i+1, r.Hash)
			}
			if d := r.At.Sub(start); d < -time.Second || d > 10*time.Second {
				t.Fatalf("entry %d at %v, %v from the store's clock", i+1, r.At, d)
			}
		}
		// What is read is what was appended.
		scanned, err := s.ScanAudit(ctx, 0, 100)
		if err != nil || len(scanned) != 5 {
			t.Fatalf("scan: %d entries, %v", len(scanned), err)
		}
		for i := range scanned {
			if !saSameAudit(scanned[i], appended[i]) {
				t.Fatalf("scanned %+v\nappended %+v", scanned[i], appended[i])
			}
		}
		for _, tc := range []struct {
			after int64
			limit int
			want  []int64
		}{{0, 2, []int64{1, 2}}, {2, 2, []int64{3, 4}}, {4, 2, []int64{5}}, {5, 2, []int64{}}} {
			got, err := s.ScanAudit(ctx, tc.after, tc.limit)
			if err != nil || !slices.Equal(saSeqs(got), tc.want) {
				t.Errorf("ScanAudit(%d, %d) = %v, %v; want %v", tc.after, tc.limit, saSeqs(got), err, tc.want)
			}
		}
		for _, tc := range []struct {
			actor  string
			before int64
			limit  int
			want   []int64
		}{
			{"", 0, 10, []int64{5, 4, 3, 2, 1}},
			{"", 0, 2, []int64{5, 4}},
			{"", 4, 2, []int64{3, 2}},
			{"", 2, 10, []int64{1}},
			{"", 1, 10, []int64{}},
			{"root", 0, 10, []int64{5, 3, 1}},
			{"ops", 0, 10, []int64{4, 2}},
			{"root", 5, 1, []int64{3}},
			{"nobody", 0, 10, []int64{}},
		} {
			got, err := s.ListAudit(ctx, tc.actor, tc.before, tc.limit)
			if err != nil || !slices.Equal(saSeqs(got), tc.want) {
				t.Errorf("ListAudit(%q, %d, %d) = %v, %v; want %v", tc.actor, tc.before, tc.limit, saSeqs(got), err, tc.want)
			}
		}
		if got, err := s.ListAudit(ctx, "", 0, 1); err != nil || len(got) != 1 || !saSameAudit(got[0], appended[4]) {
			t.Fatalf("newest entry %+v, %v; want %+v", got, err, appended[4])
		}
		if v, err := verifyAudit(ctx, s); err != nil || !v.OK || v.Entries != 5 || v.FirstBroken != 0 || v.Problem != "" {
			t.Fatalf("verify: %+v, %v; want ok, 5 entries", v, err)
		}

		// Changing one entry in the database breaks the chain at it.
		saExec(t, s, `UPDATE audit_log SET target = 'user:somebody-else' WHERE seq = 2`)
		v, err := verifyAudit(ctx, s)
		if err != nil || v.OK || v.FirstBroken != 2 || v.Entries != 2 || !strings.Contains(v.Problem, "hash") {
			t.Fatalf("verify after editing entry 2: %+v, %v; want broken at 2", v, err)
		}
	})
}

func saSameAudit(a, b auditRecord) bool {
	return a.Seq == b.Seq && a.At.Equal(b.At) && a.Actor == b.Actor && a.ActorCert == b.ActorCert && a.Peer == b.Peer &&
		a.Action == b.Action && a.Target == b.Target && a.Outcome == b.Outcome && a.Reason == b.Reason &&
		a.RequestID == b.RequestID && a.Before == b.Before && a.After == b.After && bytes.Equal(a.PrevHash, b.PrevHash) &&
		bytes.Equal(a.Hash, b.Hash)
}

// TestStoreAuditTampering: every kind of change to the middle of the log is found at the first
// entry it breaks.
func TestStoreAuditTampering(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		tamper  func(t *testing.T, s Store, log []auditRecord)
		broken  int64
		entries int64
	}{
		{"outcome changed", func(t *testing.T, s Store, _ []auditRecord) {
			saExec(t, s, `UPDATE audit_log SET outcome = 'permission_denied' WHERE seq = 3`)
		}, 3, 3},
		{"time changed", func(t *testing.T, s Store, _ []auditRecord) {
			saExec(t, s, `UPDATE audit_log SET at = at + 1 WHERE seq = 4`)
		}, 4, 4},
		{"entry deleted", func(t *testing.T, s Store, _ []auditRecord) {
			saExec(t, s, `DELETE FROM audit_log WHERE seq = 3`)
		}, 4, 3},
		{"entry rehashed after a change", func(t *testing.T, s Store, log []auditRecord) {
			// The changed entry's own hash is right again: the next entry's link is not.
			r := log[1]
			r.Before = `{}`
			saExec(t, s, `UPDATE audit_log SET before = ?, hash = ? WHERE seq = 2`, r.Before, auditHash(r.PrevHash, r))
		}, 3, 3},
		{"first entry linked to something", func(t *testing.T, s Store, log []auditRecord) {
			r := log[0]
			r.PrevHash = bytes.Repeat([]byte{1}, 32)
			saExec(t, s, `UPDATE audit_log SET prev_hash = ?, hash = ? WHERE seq = 1`, r.PrevHash, auditHash(r.PrevHash, r))
		}, 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			forEachStore(t, func(t *testing.T, s Store) {
				log := saAppend(t, s, 5)
				tc.tamper(t, s, log)
				v, err := verifyAudit(context.Background(), s)
				if err != nil || v.OK || v.FirstBroken != tc.broken || v.Entries != tc.entries || v.Problem == "" {
					t.Fatalf("verify: %+v, %v; want broken at %d after %d entries", v, err, tc.broken, tc.entries)
				}
			})
		})
	}
}

// TestStoreAuditConcurrent: concurrent appends form one gapless chain, longer than one page of
// verifyAudit; on PostgreSQL they come from two replicas.
func TestStoreAuditConcurrent(t *testing.T) {
	t.Parallel()
	check := func(t *testing.T, stores ...Store) {
		const writers, each = 8, 126 // 1008 entries
		ctx := context.Background()
		var mu sync.Mutex
		var got []auditRecord
		var wg sync.WaitGroup
		for w := range writers {
			s := stores[w%len(stores)]
			wg.Go(func() {
				for i := range each {
					r, err := s.AppendAudit(ctx, saAuditRecord(w*each+i, fmt.Sprint("w", w)))
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					got = append(got, r)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		slices.SortFunc(got, func(a, b auditRecord) int { return int(a.Seq - b.Seq) })
		for i, r := range got {
			if r.Seq != int64(i+1) {
				t.Fatalf("appends returned seq %d at position %d: seqs have gaps or repeats", r.Seq, i+1)
			}
		}
		v, err := verifyAudit(ctx, stores[0])
		if err != nil || !v.OK || v.Entries != writers*each {
			t.Fatalf("verify: %+v, %v; want ok with %d entries", v, err, writers*each)
		}
		scanned, err := stores[len(stores)-1].ScanAudit(ctx, 0, -1)
		if err != nil || len(scanned) != len(got) {
			t.Fatalf("scan: %d entries, %v", len(scanned), err)
		}
		for i := range scanned {
			if !saSameAudit(scanned[i], got[i]) {
				t.Fatalf("entry %d stored as %+v, AppendAudit returned %+v", i+1, scanned[i], got[i])
			}
		}
	}
	t.Run("one store", func(t *testing.T) {
		t.Parallel()
		forEachStore(t, func(t *testing.T, s Store) { check(t, s) })
	})
	t.Run("postgres replicas", func(t *testing.T) {
		t.Parallel()
		a, b, _ := ctReplicas(t, 10*time.Second, 10*time.Second)
		check(t, a, b)
	})
}

func TestStoreTrail(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		p, q := newPaymentID(), newPaymentID()
		at := time.Unix(0, time.Now().UnixNano())
		ev := func(id string, kind int32, bank string) trailEvent {
			at = at.Add(time.Millisecond)
			return trailEvent{PaymentID: id, At: at, Kind: kind, Bank: bank, Replica: "r1"}
		}
		first := []trailEvent{ev(p, 1, ""), ev(p, 2, "bankA"), ev(q, 1, ""), ev(p, 2, "bankB")}
		vote := ev(p, 3, "bankA")
		vote.Vote, vote.Detail = "no", "insufficient funds"
		decided := ev(p, 5, "")
		decided.Decision, decided.DecidedBy = "abort", int32(decidedByRequest)
		retry := ev(p, 7, "bankB")
		retry.Attempt = 3
		if err := s.AppendTrail(ctx, first); err != nil {
			t.Fatal(err)
		}
		if err := s.AppendTrail(ctx, []trailEvent{vote, decided, retry}); err != nil {
			t.Fatal(err)
		}
		if err := s.AppendTrail(ctx, nil); err != nil {
			t.Fatal(err)
		}
		want := []trailEvent{first[0], first[1], first[3], vote, decided, retry}
		got, err := s.Trail(ctx, p)
		if err != nil || len(got) != len(want) {
			t.Fatalf("trail of p: %+v, %v; want %d events", got, err, len(want))
		}
		for i := range want {
			if !saSameEvent(got[i], want[i]) {
				t.Fatalf("event %d: %+v, want %+v", i, got[i], want[i])
			}
		}
		if got, err := s.Trail(ctx, q); err != nil || len(got) != 1 || !saSameEvent(got[0], first[2]) {
			t.Fatalf("trail of q: %+v, %v", got, err)
		}
		if got, err := s.Trail(ctx, newPaymentID()); err != nil || len(got) != 0 {
			t.Fatalf("trail of an unknown payment: %+v, %v", got, err)
		}
		// Events keep the order they were appended in, whatever their times; an event without
		// a time gets the store's clock.
		early := trailEvent{PaymentID: q, At: at.Add(-time.Hour), Kind: 6, Bank: "bankA"}
		undated := trailEvent{PaymentID: q, Kind: 10}
		if err := s.AppendTrail(ctx, []trailEvent{early, undated}); err != nil {
			t.Fatal(err)
		}
		got, err = s.Trail(ctx, q)
		if err != nil || len(got) != 3 || got[1].Kind != 6 || !got[1].At.Equal(early.At) || got[2].Kind != 10 {
			t.Fatalf("trail of q: %+v, %v", got, err)
		}
		if d := time.Since(got[2].At); d < -time.Second || d > 10*time.Second {
			t.Fatalf("an undated event is dated %v", got[2].At)
		}
	})
}

func saSameEvent(a, b trailEvent) bool {
	return a.PaymentID == b.PaymentID && a.At.Equal(b.At) && a.Kind == b.Kind && a.Bank == b.Bank && a.Vote == b.Vote &&
		a.Decision == b.Decision && a.DecidedBy == b.DecidedBy && a.Attempt == b.Attempt && a.Replica == b.Replica &&
		a.Detail == b.Detail
}

func TestStoreSearchPayments(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		// Banks "bank-a" and "bank-a-b" (a bank's name ends at the account's last '-').
		specs := []struct{ user, from, to string }{
			{"alice", "bank-a-1", "bank-b-1"},   // 0
			{"alice", "bank-b-1", "bank-a-b-2"}, // 1
			{"bob", "bank-a-b-2", "bank-c-1"},   // 2
			{"bob", "bank-c-1", "bank-a-7"},     // 3
			{"carol", "BANK-A-1", "bank-c-1"},   // 4
			{"carol", "bank%-1", "bank_-2"},     // 5
		}
		var ps []paymentRecord
		for i, sp := range specs {
			ps = append(ps, ctAdmit(t, s, ctPayment(sp.user, sp.from, sp.to, int64(i+1))))
			time.Sleep(time.Millisecond) // distinct creation times on both stores' clocks
		}
		if _, err := s.Decide(ctx, ps[1].PaymentID, decisionCommit, 0, "", false, s.Now(), decidedByRequest); err != nil {
			t.Fatal(err)
		}
		for _, i := range []int{2, 4} {
			if _, err := s.Decide(ctx, ps[i].PaymentID, decisionAbort, int32(10+i), "no", false, s.Now(), decidedByRequest); err != nil {
				t.Fatal(err)
			}
		}
		ids := func(idx ...int) []string {
			// Newest first: the highest index first.
			slices.Sort(idx)
			slices.Reverse(idx)
			out := []string{}
			for _, i := range idx {
				out = append(out, ps[i].PaymentID)
			}
			return out
		}
		none, commit, abort := decisionNone, decisionCommit, decisionAbort
		for _, tc := range []struct {
			name string
			q    paymentQuery
			want []string
		}{
			{"all", paymentQuery{}, ids(0, 1, 2, 3, 4, 5)},
			{"user", paymentQuery{Username: "bob"}, ids(2, 3)},
			{"account", paymentQuery{Account: "bank-c-1"}, ids(2, 3, 4)},
			{"account and user", paymentQuery{Account: "bank-c-1", Username: "carol"}, ids(4)},
			{"bank", paymentQuery{Bank: "bank-a"}, ids(0, 3)},
			{"bank with a dash", paymentQuery{Bank: "bank-a-b"}, ids(1, 2)},
			{"bank is case-sensitive", paymentQuery{Bank: "BANK-A"}, ids(4)},
			{"bank prefix only", paymentQuery{Bank: "bank"}, ids()},
			{"bank holding %", paymentQuery{Bank: "bank%"}, ids(5)},
			{"bank holding _", paymentQuery{Bank: "bank_"}, ids(5)},
			{"bank wildcard", paymentQuery{Bank: "%"}, ids()},
			{"no such bank", paymentQuery{Bank: "bank-z"}, ids()},
			{"undecided", paymentQuery{Decision: &none}, ids(0, 3, 5)},
			{"committed", paymentQuery{Decision: &commit}, ids(1)},
			{"aborted", paymentQuery{Decision: &abort}, ids(2, 4)},
			{"failure reason", paymentQuery{FailureReason: 14}, ids(4)},
			{"created from", paymentQuery{CreatedAfter: ps[3].CreatedAt}, ids(3, 4, 5)},
			{"created before", paymentQuery{CreatedBefore: ps[2].CreatedAt}, ids(0, 1)},
			{"created between", paymentQuery{CreatedAfter: ps[1].CreatedAt, CreatedBefore: ps[4].CreatedAt}, ids(1, 2, 3)},
			{"limit", paymentQuery{Limit: 2}, ids(4, 5)},
			{"after", paymentQuery{After: &pageCursor{ps[3].CreatedAt.UnixNano(), ps[3].PaymentID}}, ids(0, 1, 2)},
			{"user holding NUL", paymentQuery{Username: "bob\x00"}, ids()},
		} {
			if tc.q.Limit == 0 {
				tc.q.Limit = 100
			}
			got, err := s.SearchPayments(ctx, tc.q)
			if err != nil || !slices.Equal(append([]string{}, ctIDs(got)...), tc.want) {
				t.Errorf("%s: %v, %v; want %v", tc.name, ctIDs(got), err, tc.want)
			}
		}
		// Paging two at a time, also through payments created at the same moment (ordered by
		// id then), finds each payment once, newest first.
		var paged []paymentRecord
		var after *pageCursor
		for {
			page, err := s.SearchPayments(ctx, paymentQuery{After: after, Limit: 2})
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			paged = append(paged, page...)
			last := page[len(page)-1]
			after = &pageCursor{last.CreatedAt.UnixNano(), last.PaymentID}
		}
		if got, want := ctIDs(paged), ids(0, 1, 2, 3, 4, 5); !slices.Equal(got, want) {
			t.Fatalf("paged %v, want %v", got, want)
		}
		// Rows read by SearchPayments carry every field.
		if got := paged[4]; got.Decision != decisionCommit || got.DecidedBy != decidedByRequest || got.DecidedAt.IsZero() ||
			got.From != "bank-b-1" || got.Amount != 2 {
			t.Fatalf("payment 1 read by SearchPayments: %+v", got)
		}
	})
}

// TestStoreSearchPaymentsSameTime: payments created at the same instant are ordered, and paged,
// by id. (SQLite only: it keeps the creation time it is given.)
func TestStoreSearchPaymentsSameTime(t *testing.T) {
	t.Parallel()
	s, err := OpenStore(context.Background(), t.TempDir()+"/gateway.db", false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	at := time.Now()
	var want []string
	for range 5 {
		p := ctPayment("alice", "bankA-1", "bankB-1", 1)
		p.CreatedAt, p.Deadline = at, at.Add(time.Minute)
		ctAdmit(t, s, p)
		want = append(want, p.PaymentID)
	}
	slices.Sort(want)
	slices.Reverse(want)
	var got []string
	var after *pageCursor
	for {
		page, err := s.SearchPayments(context.Background(), paymentQuery{After: after, Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		got = append(got, ctIDs(page)...)
		last := page[len(page)-1]
		after = &pageCursor{last.CreatedAt.UnixNano(), last.PaymentID}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("paged %v, want %v", got, want)
	}
}

func TestStoreInDoubt(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		mk := func(deadline time.Duration) paymentRecord {
			p := ctPayment("alice", "bankA-1", "bankB-1", 1)
			p.Deadline = p.CreatedAt.Add(deadline)
			return ctAdmit(t, s, p)
		}
		late, early, middle, done := mk(3*time.Minute), mk(time.Minute), mk(2*time.Minute), mk(30*time.Second)
		ctDecide(t, s, middle.PaymentID, decisionCommit)
		ctDecide(t, s, done.PaymentID, decisionAbort)
		if err := s.MarkCompleted(ctx, []string{done.PaymentID}, s.Now()); err != nil {
			t.Fatal(err)
		}
		got, err := s.InDoubt(ctx, 10)
		if want := []string{early.PaymentID, middle.PaymentID, late.PaymentID}; err != nil || !slices.Equal(ctIDs(got), want) {
			t.Fatalf("in doubt: %v, %v; want %v (undecided, and decided but not completed, by deadline)", ctIDs(got), err, want)
		}
		if got[1].Decision != decisionCommit || got[1].DecidedBy != decidedByRequest {
			t.Fatalf("in-doubt decided payment: %+v", got[1])
		}
		if got, err := s.InDoubt(ctx, 2); err != nil || !slices.Equal(ctIDs(got), []string{early.PaymentID, middle.PaymentID}) {
			t.Fatalf("in doubt, at most 2: %v, %v", ctIDs(got), err)
		}
	})
}

// TestStorePGInDoubtEveryReplica: InDoubt lists the unfinished payments of every replica, not
// only those of the one asked (unlike Unfinished).
func TestStorePGInDoubtEveryReplica(t *testing.T) {
	t.Parallel()
	a, b, _ := ctReplicas(t, 10*time.Second, 10*time.Second)
	ctx := context.Background()
	pa := ctAdmit(t, a, ctPayment("alice", "bankA-1", "bankB-1", 1))
	pb := ctAdmit(t, b, ctPayment("alice", "bankA-1", "bankB-1", 2))
	for _, s := range []*PGStore{a, b} {
		got, err := s.InDoubt(ctx, 10)
		if err != nil || !slices.Equal(ctIDs(got), []string{pa.PaymentID, pb.PaymentID}) {
			t.Fatalf("in doubt on %s: %v, %v; want both replicas' payments", s.Owner(), ctIDs(got), err)
		}
	}
	if own, err := a.Unfinished(ctx, nil, 10); err != nil || !slices.Equal(ctIDs(own), []string{pa.PaymentID}) {
		t.Fatalf("a's unfinished: %v, %v", ctIDs(own), err)
	}
}

// TestStoreDecidedBy: the decision's compare-and-set records who decided, and only when it
// decides; every read of a payment returns it with the completion time.
func TestStoreDecidedBy(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		p := ctAdmit(t, s, ctPayment("alice", "bankA-1", "bankB-1", 1))
		if p.DecidedBy != decidedByUnknown || !p.CompletedAt.IsZero() {
			t.Fatalf("admitted payment: %+v", p)
		}
		got, err := s.Decide(ctx, p.PaymentID, decisionAbort, 2, "late", false, s.Now(), decidedByTimeoutMonitor)
		if err != nil || got.DecidedBy != decidedByTimeoutMonitor {
			t.Fatalf("decide: %+v, %v; want decided by the timeout monitor", got, err)
		}
		// A later Decide changes nothing, decided_by included.
		again, err := s.Decide(ctx, p.PaymentID, decisionCommit, 0, "", false, s.Now(), decidedByRequest)
		if err != nil || again.Decision != decisionAbort || again.DecidedBy != decidedByTimeoutMonitor {
			t.Fatalf("decide again: %+v, %v; want the first decision and decider", again, err)
		}
		if got := stored(t, s, p.PaymentID); got.DecidedBy != decidedByTimeoutMonitor || !got.CompletedAt.IsZero() {
			t.Fatalf("stored %+v", got)
		}
		before := s.Now()
		if err := s.MarkCompleted(ctx, []string{p.PaymentID}, s.Now()); err != nil {
			t.Fatal(err)
		}
		got = stored(t, s, p.PaymentID)
		if d := got.CompletedAt.Sub(before); !got.Completed || d < -time.Second || d > 10*time.Second {
			t.Fatalf("completed payment: %+v; want completed at about %v", got, before)
		}
		list, err := s.ListPayments(ctx, "alice", nil, nil, 10)
		if err != nil || len(list) != 1 || list[0].DecidedBy != decidedByTimeoutMonitor || !list[0].CompletedAt.Equal(got.CompletedAt) {
			t.Fatalf("ListPayments: %+v, %v", list, err)
		}
		found, err := s.SearchPayments(ctx, paymentQuery{Username: "alice", Limit: 10})
		if err != nil || len(found) != 1 || found[0].DecidedBy != decidedByTimeoutMonitor || !found[0].CompletedAt.Equal(got.CompletedAt) {
			t.Fatalf("SearchPayments: %+v, %v", found, err)
		}

		// A presumed abort records its decider, and is completed when recorded.
		id := newPaymentID()
		pa, err := s.Decide(ctx, id, decisionAbort, 2, "no decision", true, s.Now(), decidedByGetDecision)
		if err != nil || pa.DecidedBy != decidedByGetDecision || !pa.Completed || pa.CompletedAt.IsZero() {
			t.Fatalf("presumed abort: %+v, %v", pa, err)
		}
		if pa, err := s.Decide(ctx, id, decisionAbort, 2, "again", true, s.Now(), decidedByRecovery); err != nil || pa.DecidedBy != decidedByGetDecision {
			t.Fatalf("presumed abort again: %+v, %v", pa, err)
		}
		// So does a commit, by recovery.
		q := ctAdmit(t, s, ctPayment("alice", "bankA-1", "bankB-1", 1))
		if c, err := s.Decide(ctx, q.PaymentID, decisionCommit, 0, "", false, s.Now(), decidedByRecovery); err != nil || c.DecidedBy != decidedByRecovery {
			t.Fatalf("commit by recovery: %+v, %v", c, err)
		}
		if got, _, err := s.Claim(ctx, q.PaymentID); err != nil || got.DecidedBy != decidedByRecovery {
			t.Fatalf("Claim: %+v, %v", got, err)
		}
	})
}

// TestStoreSessionAdminFields: a session keeps whether its login passed the second factor, and
// is read with its user's disabled and must-change-password flags.
func TestStoreSessionAdminFields(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		saCreate(t, s, userRecord{Username: "root", PasswordHash: "h", Role: RoleAdmin, MustChangePassword: true},
			saUser("alice", RoleCustomer))
		now := time.Now()
		exp := now.Add(time.Hour)
		if err := s.CreateSession(ctx, "2fa", sessionRecord{Username: "root", ExpiresAt: exp, SecondFactor: true}, now, 5); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateSession(ctx, "pw", sessionRecord{Username: "root", ExpiresAt: exp}, now, 0); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateSession(ctx, "alice", sessionRecord{Username: "alice", ExpiresAt: exp, SecondFactor: true}, now, 0); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			token                  string
			second, must, disabled bool
			role                   string
		}{{"2fa", true, true, false, RoleAdmin}, {"pw", false, true, false, RoleAdmin}, {"alice", true, false, false, RoleCustomer}} {
			got, err := s.Session(ctx, tc.token)
			if err != nil || got.SecondFactor != tc.second || got.MustChangePassword != tc.must || got.UserDisabled != tc.disabled || got.Role != tc.role {
				t.Fatalf("session %s: %+v, %v", tc.token, got, err)
			}
		}
		// The user's flags are read with the session, as they are now.
		if _, _, _, err := s.UpdateUser(ctx, "alice", func(u *userRecord) error {
			u.Disabled, u.MustChangePassword = true, true
			return nil
		}, false, now); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Session(ctx, "alice"); err != nil || !got.UserDisabled || !got.MustChangePassword || got.Revoked || !got.SecondFactor {
			t.Fatalf("session of a disabled user: %+v, %v", got, err)
		}
	})
}

// TestStoreAdminTextWithNUL: names holding a NUL byte are not found; audit entries and trail
// details holding one are stored (PostgreSQL keeps a replacement character), and the chain
// verifies.
func TestStoreAdminTextWithNUL(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		saCreate(t, s, saUser("alice", RoleCustomer, "bankA-1"))
		bad := "ali\x00ce"
		if _, _, _, err := s.UpdateUser(ctx, bad, func(*userRecord) error { return nil }, true, time.Now()); !errors.Is(err, ErrNotFound) {
			t.Errorf("UpdateUser: %v, want ErrNotFound", err)
		}
		if _, err := s.UseTOTPStep(ctx, bad, 1); !errors.Is(err, ErrNotFound) {
			t.Errorf("UseTOTPStep: %v, want ErrNotFound", err)
		}
		if err := s.LinkAccount(ctx, bad, "bankB-1"); !errors.Is(err, ErrNotFound) {
			t.Errorf("LinkAccount: %v, want ErrNotFound", err)
		}
		if err := s.UnlinkAccount(ctx, "alice", "bankA-1\x00"); !errors.Is(err, ErrNotFound) {
			t.Errorf("UnlinkAccount: %v, want ErrNotFound", err)
		}
		if got, err := s.Trail(ctx, bad); err != nil || len(got) != 0 {
			t.Errorf("Trail: %v, %v", got, err)
		}
		if got, err := s.ListAudit(ctx, bad, 0, 10); err != nil || len(got) != 0 {
			t.Errorf("ListAudit: %v, %v", got, err)
		}
		rec := saAuditRecord(1, "root")
		rec.Target = "user:" + bad
		stored, err := s.AppendAudit(ctx, rec)
		if err != nil || (stored.Target != rec.Target && stored.Target != "user:ali\uFFFDce") {
			t.Fatalf("AppendAudit: %+v, %v", stored, err)
		}
		if v, err := verifyAudit(ctx, s); err != nil || !v.OK || v.Entries != 1 {
			t.Fatalf("verify: %+v, %v", v, err)
		}
		id := newPaymentID()
		if err := s.AppendTrail(ctx, []trailEvent{{PaymentID: id, At: time.Now(), Kind: 4, Detail: "bank said \x00"}}); err != nil {
			t.Fatalf("AppendTrail: %v", err)
		}
		if got, err := s.Trail(ctx, id); err != nil || len(got) != 1 || (got[0].Detail != "bank said \x00" && got[0].Detail != "bank said \uFFFD") {
			t.Fatalf("Trail: %+v, %v", got, err)
		}
	})
}

// TestStorePGAdminRefusesNULText: PostgreSQL refuses names it cannot store in writes.
func TestStorePGAdminRefusesNULText(t *testing.T) {
	t.Parallel()
	s := ctOpenPG(t, pgtest.NewDatabase(t, "paygate_store_"), 10*time.Second)
	ctx := context.Background()
	saCreate(t, s, saUser("alice", RoleCustomer))
	if err := s.LinkAccount(ctx, "alice", "bankA-\x001"); !errors.Is(err, errNULText) {
		t.Fatalf("LinkAccount: %v, want errNULText", err)
	}
	if _, _, _, err := s.UpdateUser(ctx, "alice", func(u *userRecord) error { u.PasswordHash = "a\x00"; return nil }, false, time.Now()); !errors.Is(err, errNULText) {
		t.Fatalf("UpdateUser: %v, want errNULText", err)
	}
	if err := s.AppendTrail(ctx, []trailEvent{{PaymentID: "x\x00", At: time.Now()}}); !errors.Is(err, errNULText) {
		t.Fatalf("AppendTrail: %v, want errNULText", err)
	}
}

// TestStoreAdminMigration: a store written before the admin interface is opened with its rows
// given the new columns' defaults: users enabled without a second factor, sessions without it,
// decisions by an unknown decider.
func TestStoreAdminMigration(t *testing.T) {
	t.Parallel()
	const (
		user     = `INSERT INTO users (username, password_hash, role, created_at) VALUES ('old', 'h', 'admin', 1)`
		session  = `INSERT INTO sessions (token_hash, username, cert_fingerprint, created_at, expires_at) VALUES (?, 'old', 'fp', 1, ?)`
		payment  = `INSERT INTO payments (payment_id, username, from_account, to_account, amount, currency, fingerprint, decision, completed, created_at, deadline, decided_at, completed_at) VALUES (?, 'old', 'a-1', 'b-2', 1, 'USD', ?, 1, ?, 1, 2, 3, 4)`
		finished = true
		// A presumed abort as recorded before completed_at was set with it.
		presumed = `INSERT INTO payments (payment_id, username, from_account, to_account, amount, currency, fingerprint, decision, presumed, completed, created_at, deadline, decided_at) VALUES (?, '', '', '', 0, '', ?, 2, ?, ?, 5, 5, 5)`
	)
	id, pid := newPaymentID(), newPaymentID()
	expires := time.Now().Add(time.Hour).UnixNano()
	check := func(t *testing.T, s Store) {
		ctx := context.Background()
		u, err := s.User(ctx, "old")
		if err != nil || u.Disabled || u.MustChangePassword || u.TOTPSecret != "" || u.TOTPLastStep != 0 || u.CreatedAt.UnixNano() != 1 {
			t.Fatalf("old user: %+v, %v", u, err)
		}
		if got, err := s.Session(ctx, "tok"); err != nil || got.SecondFactor || got.UserDisabled || got.Role != RoleAdmin {
			t.Fatalf("old session: %+v, %v", got, err)
		}
		p, err := s.Payment(ctx, id)
		if err != nil || p.DecidedBy != decidedByUnknown || p.CompletedAt.UnixNano() != 4 || p.DecidedAt.UnixNano() != 3 {
			t.Fatalf("old payment: %+v, %v", p, err)
		}
		p, err = s.Payment(ctx, pid)
		if err != nil || !p.Completed || !p.CompletedAt.IsZero() || !p.Presumed || p.Decision != decisionAbort || p.DecidedBy != decidedByUnknown {
			t.Fatalf("old presumed abort: %+v, %v", p, err)
		}
		if v, err := verifyAudit(ctx, s); err != nil || !v.OK || v.Entries != 0 {
			t.Fatalf("verify a new audit log: %+v, %v", v, err)
		}
	}
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		path := t.TempDir() + "/gateway.db"
		old, err := sqlitedb.OpenWith(ctx, path, migrations[:2], sqlitedb.Options{})
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range []struct {
			sql  string
			args []any
		}{{user, nil}, {session, []any{tokenHash("tok"), expires}}, {payment, []any{id, []byte{1}, finished}},
			{presumed, []any{pid, []byte{}, true, true}}} {
			if _, err := old.Write.ExecContext(ctx, q.sql, q.args...); err != nil {
				t.Fatal(err)
			}
		}
		if err := old.Close(); err != nil {
			t.Fatal(err)
		}
		s, err := OpenStore(ctx, path, false)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		check(t, s)
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		url := pgtest.NewDatabase(t, "paygate_store_")
		first, err := pgMigrations.ReadFile("pgmigrations/0001_gateway.sql")
		if err != nil {
			t.Fatal(err)
		}
		pool, err := pgdb.Open(ctx, url, fstest.MapFS{"m/0001_gateway.sql": {Data: first}}, "m", pgMigrationLockKey)
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range []struct {
			sql  string
			args []any
		}{
			{user, nil},
			{`INSERT INTO sessions (token_hash, username, cert_fingerprint, created_at, expires_at) VALUES ($1, 'old', 'fp', 1, $2)`, []any{tokenHash("tok"), expires}},
			{`INSERT INTO payments (payment_id, username, from_account, to_account, amount, currency, fingerprint, decision, completed, created_at, deadline, decided_at, completed_at) VALUES ($1, 'old', 'a-1', 'b-2', 1, 'USD', $2, 1, $3, 1, 2, 3, 4)`, []any{id, []byte{1}, finished}},
			{`INSERT INTO payments (payment_id, username, from_account, to_account, amount, currency, fingerprint, decision, presumed, completed, created_at, deadline, decided_at) VALUES ($1, '', '', '', 0, '', $2, 2, $3, $4, 5, 5, 5)`, []any{pid, []byte{}, true, true}},
		} {
			if _, err := pool.Exec(ctx, q.sql, q.args...); err != nil {
				pool.Close()
				t.Fatal(err)
			}
		}
		pool.Close()
		check(t, ctOpenPG(t, url, 10*time.Second))
	})
}

// TestStorePGPaymentRowFits: a payment row read on PostgreSQL has at most 16 columns, as many as
// pgx describes without allocating (see pgPaymentColumns).
func TestStorePGPaymentRowFits(t *testing.T) {
	t.Parallel()
	s := ctOpenPG(t, pgtest.NewDatabase(t, "paygate_store_"), 10*time.Second)
	rows, err := s.pool.Query(context.Background(), `SELECT `+pgPaymentColumns+` FROM payments LIMIT 0`)
	if err != nil {
		t.Fatal(err)
	}
	n := len(rows.FieldDescriptions())
	rows.Close()
	if n > 16 {
		t.Fatalf("a payment row has %d columns, want at most 16", n)
	}
}
