package bank

import (
	"bytes"
	"context"
	"errors"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	"github.com/paygate/paygate/internal/rpcerr"
)

var enrollmentCodeFormat = regexp.MustCompile(`^[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){3}$`)

func held(id, holder string) Account {
	a := usd(id, 1000)
	a.Holder = holder
	return a
}

func issue(t *testing.T, l testLedger, id string, ttl time.Duration) EnrollmentCode {
	t.Helper()
	c, err := l.IssueEnrollmentCode(context.Background(), id, ttl, t0)
	if err != nil {
		t.Fatalf("issue a code for %s: %v", id, err)
	}
	return c
}

// wantRefused checks that a redemption was refused with ErrEnrollmentRefused for cause.
func wantRefused(t *testing.T, err error, cause string) {
	t.Helper()
	if !errors.Is(err, ErrEnrollmentRefused) {
		t.Fatalf("redeem: %v; want ErrEnrollmentRefused (%s)", err, cause)
	}
	if got := EnrollmentRefusalCause(err); !strings.Contains(got, cause) {
		t.Fatalf("refusal cause %q; want one mentioning %q", got, cause)
	}
}

func TestEnrollmentCodeFormat(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 200 {
		c, err := newEnrollmentCode()
		if err != nil {
			t.Fatal(err)
		}
		if !enrollmentCodeFormat.MatchString(c) {
			t.Fatalf("code %q: want four groups of four Crockford base32 characters", c)
		}
		if seen[c] {
			t.Fatalf("code %q drawn twice", c)
		}
		seen[c] = true
	}
	for _, tt := range []struct{ in, want string }{
		{"K7QX-3MZD-9TRA-WP4C", "K7QX3MZD9TRAWP4C"},
		{" k7qx 3mzd-9tra wp4c ", "K7QX3MZD9TRAWP4C"},
		{"IL0O-ilo0", "1100" + "1100"},
	} {
		if got := NormalizeEnrollmentCode(tt.in); got != tt.want {
			t.Errorf("NormalizeEnrollmentCode(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestEnrollmentStoresOnlyHash issues a code and looks for it in the ledger's files: only its
// hash is there.
func TestEnrollmentStoresOnlyHash(t *testing.T) {
	t.Parallel()
	l, path := openTestLedger(t, held("bank1-1", "erin"))
	c := issue(t, l, "bank1-1", 0)
	if c.Holder != "erin" || c.AccountID != "bank1-1" || !c.ExpiresAt.Equal(t0.Add(DefaultEnrollmentTTL)) {
		t.Fatalf("issued %+v; want erin's bank1-1, expiring after %s", c, DefaultEnrollmentTTL)
	}
	st, ok, err := l.EnrollmentStatus(context.Background(), "bank1-1")
	if err != nil || !ok {
		t.Fatalf("status: %v %v", ok, err)
	}
	if !bytes.Equal(st.CodeHash, enrollmentHash("bank1-1", c.Code)) || len(st.CodeHash) != 32 {
		t.Fatalf("stored %x; want the SHA-256 of the account and the code", st.CodeHash)
	}
	// The same code for another account hashes differently: the hash is bound to the account.
	if bytes.Equal(enrollmentHash("bank1-2", c.Code), st.CodeHash) {
		t.Fatal("the hash does not depend on the account")
	}
	plain := NormalizeEnrollmentCode(c.Code)
	for _, f := range []string{path, path + "-wal"} {
		data, err := os.ReadFile(f)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			t.Fatal(err)
		}
		for _, form := range []string{c.Code, plain, strings.ToLower(plain)} {
			if bytes.Contains(data, []byte(form)) {
				t.Fatalf("%s holds the code %q in clear", f, form)
			}
		}
	}
}

func TestEnrollmentRedeemOnceForOneUsername(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	forEachLedger(t, []Account{held("bank1-1", "erin")}, func(t *testing.T, l testLedger, _ reopenFunc) {
		c := issue(t, l, "bank1-1", time.Hour)

		// Case, spaces and hyphens do not matter.
		typed := strings.ToLower(strings.ReplaceAll(c.Code, "-", " "))
		a, err := l.RedeemEnrollmentCode(ctx, "bank1-1", typed, "erin2", t0.Add(time.Minute))
		if err != nil {
			t.Fatalf("redeem: %v", err)
		}
		if a.ID != "bank1-1" || a.Holder != "erin" {
			t.Fatalf("redeem returned %+v", a)
		}
		st, _, _ := l.EnrollmentStatus(ctx, "bank1-1")
		if st.RedeemedBy != "erin2" || !st.RedeemedAt.Equal(t0.Add(time.Minute)) {
			t.Fatalf("status after redeeming: %+v", st)
		}

		// The same username again (a retried registration) gets the same answer, even past the
		// expiry: the code was redeemed in time.
		for _, at := range []time.Time{t0.Add(2 * time.Minute), t0.Add(2 * time.Hour)} {
			if a2, err := l.RedeemEnrollmentCode(ctx, "bank1-1", c.Code, "erin2", at); err != nil || a2.ID != a.ID {
				t.Fatalf("redeem again for the same username at %s: %+v, %v", at, a2, err)
			}
		}
		// Anyone else is refused, and the binding stays.
		_, err = l.RedeemEnrollmentCode(ctx, "bank1-1", c.Code, "mallory", t0.Add(3*time.Minute))
		wantRefused(t, err, "another username")
		if st, _, _ := l.EnrollmentStatus(ctx, "bank1-1"); st.RedeemedBy != "erin2" || st.Failures != 0 {
			t.Fatalf("status after another username tried: %+v", st)
		}
	})
}

func TestEnrollmentExpiry(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	forEachLedger(t, []Account{held("bank1-1", "erin"), held("bank1-2", "frank")}, func(t *testing.T, l testLedger, _ reopenFunc) {
		c1 := issue(t, l, "bank1-1", time.Hour)
		c2 := issue(t, l, "bank1-2", time.Hour)
		_, err := l.RedeemEnrollmentCode(ctx, "bank1-1", c1.Code, "erin", t0.Add(time.Hour))
		wantRefused(t, err, "expired")
		if _, err := l.RedeemEnrollmentCode(ctx, "bank1-2", c2.Code, "frank", t0.Add(time.Hour-time.Nanosecond)); err != nil {
			t.Fatalf("redeem just before the expiry: %v", err)
		}
		for _, ttl := range []time.Duration{-time.Second, MaxEnrollmentTTL + time.Second} {
			if _, err := l.IssueEnrollmentCode(ctx, "bank1-1", ttl, t0); !errors.Is(err, ErrInvalidArgument) {
				t.Errorf("issue with ttl %s: %v; want ErrInvalidArgument", ttl, err)
			}
		}
	})
}

func TestEnrollmentFailuresBurnTheCode(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	forEachLedger(t, []Account{held("bank1-1", "erin"), held("bank1-2", "frank")}, func(t *testing.T, l testLedger, _ reopenFunc) {
		at := t0.Add(time.Minute)

		// Four wrong codes, then the right one still works.
		c := issue(t, l, "bank1-1", 0)
		for i := range MaxEnrollmentFailures - 1 {
			_, err := l.RedeemEnrollmentCode(ctx, "bank1-1", "AAAA-AAAA-AAAA-AAAA", "erin", at)
			wantRefused(t, err, "wrong code")
			if st, _, _ := l.EnrollmentStatus(ctx, "bank1-1"); st.Failures != i+1 {
				t.Fatalf("failures = %d after %d wrong codes", st.Failures, i+1)
			}
		}
		if _, err := l.RedeemEnrollmentCode(ctx, "bank1-1", c.Code, "erin", at); err != nil {
			t.Fatalf("the right code after %d wrong ones: %v", MaxEnrollmentFailures-1, err)
		}

		// Five wrong codes burn it: the right one is refused, and is no longer even compared.
		c = issue(t, l, "bank1-2", 0)
		for range MaxEnrollmentFailures {
			_, err := l.RedeemEnrollmentCode(ctx, "bank1-2", "AAAA-AAAA-AAAA-AAAA", "frank", at)
			wantRefused(t, err, "wrong code")
		}
		_, err := l.RedeemEnrollmentCode(ctx, "bank1-2", c.Code, "frank", at)
		wantRefused(t, err, "burned")
		if st, _, _ := l.EnrollmentStatus(ctx, "bank1-2"); st.Failures != MaxEnrollmentFailures || st.RedeemedBy != "" {
			t.Fatalf("status of a burned code: %+v", st)
		}

		// A new code replaces the burned one, with a fresh budget.
		c2 := issue(t, l, "bank1-2", 0)
		if !c2.Replaced {
			t.Errorf("the new code does not say it replaced one")
		}
		if _, err := l.RedeemEnrollmentCode(ctx, "bank1-2", c2.Code, "frank", at); err != nil {
			t.Fatalf("the new code: %v", err)
		}
	})
}

// TestEnrollmentConcurrentWrongCodes checks that failures are counted under concurrency: of
// many wrong codes sent at once, the code is burned after exactly MaxEnrollmentFailures.
func TestEnrollmentConcurrentWrongCodes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	forEachLedger(t, []Account{held("bank1-1", "erin")}, func(t *testing.T, l testLedger, _ reopenFunc) {
		c := issue(t, l, "bank1-1", 0)
		var wg sync.WaitGroup
		for range 30 {
			wg.Go(func() {
				_, err := l.RedeemEnrollmentCode(ctx, "bank1-1", "AAAA-AAAA-AAAA-AAAA", "mallory", t0)
				if !errors.Is(err, ErrEnrollmentRefused) {
					t.Errorf("wrong code: %v", err)
				}
			})
		}
		wg.Wait()
		st, _, _ := l.EnrollmentStatus(ctx, "bank1-1")
		if st.Failures != MaxEnrollmentFailures {
			t.Fatalf("failures = %d after 30 wrong codes; want %d", st.Failures, MaxEnrollmentFailures)
		}
		_, err := l.RedeemEnrollmentCode(ctx, "bank1-1", c.Code, "erin", t0)
		wantRefused(t, err, "burned")
	})
}

func TestEnrollmentReplaceAndRefusals(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	closed := held("bank1-9", "zoe")
	closed.Closed = true
	forEachLedger(t, []Account{held("bank1-1", "erin"), closed}, func(t *testing.T, l testLedger, _ reopenFunc) {

		old := issue(t, l, "bank1-1", 0)
		fresh := issue(t, l, "bank1-1", 0)
		if !fresh.Replaced || fresh.Code == old.Code {
			t.Fatalf("second code %+v; want a new code replacing the first", fresh)
		}
		_, err := l.RedeemEnrollmentCode(ctx, "bank1-1", old.Code, "erin", t0)
		wantRefused(t, err, "wrong code")
		if _, err := l.RedeemEnrollmentCode(ctx, "bank1-1", fresh.Code, "erin", t0); err != nil {
			t.Fatalf("the new code: %v", err)
		}

		if _, err := l.IssueEnrollmentCode(ctx, "bank1-404", 0, t0); !errors.Is(err, ErrUnknownAccount) {
			t.Errorf("issue for an unknown account: %v; want ErrUnknownAccount", err)
		}
		if _, err := l.IssueEnrollmentCode(ctx, "bank1-9", 0, t0); !errors.Is(err, ErrAccountClosed) {
			t.Errorf("issue for a closed account: %v; want ErrAccountClosed", err)
		}
		_, err = l.RedeemEnrollmentCode(ctx, "bank1-404", fresh.Code, "erin", t0)
		wantRefused(t, err, "unknown account")
		_, err = l.RedeemEnrollmentCode(ctx, "bank1-9", fresh.Code, "zoe", t0)
		wantRefused(t, err, "no code")
	})
}

// TestServiceRedeemEnrollmentCode checks the RPC: one refusal whatever the cause, with the same
// message, and the cause in the bank's log but never the code.
func TestServiceRedeemEnrollmentCode(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, l, logs := newTestService(t, held("bank1-1", "erin"), held("bank1-2", "frank"))
	c := issue(t, l, "bank1-1", 0)
	redeem := func(account, code, user string) (*connect.Response[bankv1.RedeemEnrollmentCodeResponse], error) {
		return s.RedeemEnrollmentCode(ctx, connect.NewRequest(&bankv1.RedeemEnrollmentCodeRequest{AccountId: account, Code: code, Username: user}))
	}
	var messages []string
	for _, tt := range []struct{ account, code string }{
		{"bank1-1", "AAAA-AAAA-AAAA-AAAA"}, // wrong code
		{"bank1-2", c.Code},                // no code issued
		{"bank1-404", c.Code},              // unknown account
	} {
		_, err := redeem(tt.account, tt.code, "erin")
		if connect.CodeOf(err) != connect.CodePermissionDenied || rpcerr.Reason(err) != ErrorReasonEnrollmentRefused {
			t.Fatalf("redeem %s: %v; want permission_denied %s", tt.account, err, ErrorReasonEnrollmentRefused)
		}
		var ce *connect.Error
		errors.As(err, &ce)
		messages = append(messages, strings.ReplaceAll(ce.Message(), tt.account, "ACCOUNT"))
	}
	for _, m := range messages[1:] {
		if m != messages[0] {
			t.Errorf("refusals differ: %q and %q; the answer must not tell the cause", messages[0], m)
		}
	}
	resp, err := redeem("bank1-1", c.Code, "erin")
	if err != nil || resp.Msg.GetAccount().GetAccountId() != "bank1-1" || resp.Msg.GetAccount().GetHolder() != "erin" {
		t.Fatalf("redeem with the code: %v, %v", resp, err)
	}
	out := logs.String()
	for _, want := range []string{"wrong code", "no code issued", "unknown account", "enrollment code redeemed"} {
		if !strings.Contains(out, want) {
			t.Errorf("the log does not say %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, c.Code) || strings.Contains(out, NormalizeEnrollmentCode(c.Code)) {
		t.Errorf("the log holds the code:\n%s", out)
	}
}
