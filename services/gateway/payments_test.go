package gateway

import (
	"context"
	"encoding/base64"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
)

const (
	statusProcessing = gatewayv1.PaymentStatus_PAYMENT_STATUS_PROCESSING
	statusSucceeded  = gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED
	statusFailed     = gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED
)

func TestExecutePaymentOutcomes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	alice := e.login(t, protocols[0], "alice", "alice-pass-123")
	tests := []struct {
		name     string
		from, to string
		amount   int64
		status   gatewayv1.PaymentStatus
		reason   gatewayv1.FailureReason
	}{
		{"across banks", "bank1-1001", "bank2-2002", 2500, statusSucceeded, 0},
		{"within a bank", "bank1-1001", "bank1-1002", 1500, statusSucceeded, 0},
		{"between own accounts", "bank2-2001", "bank1-1001", 100, statusSucceeded, 0},
		{"insufficient funds", "bank1-1001", "bank2-2002", 10_000_000, statusFailed, gatewayv1.FailureReason_FAILURE_REASON_INSUFFICIENT_FUNDS},
		{"unknown payee", "bank1-1001", "bank2-9999", 100, statusFailed, gatewayv1.FailureReason_FAILURE_REASON_UNKNOWN_ACCOUNT},
		{"wrong currency", "bank1-1001", "bank3-3001", 100, statusFailed, gatewayv1.FailureReason_FAILURE_REASON_CURRENCY_MISMATCH},
	}
	for _, tt := range tests {
		ctx := context.Background()
		before := e.audit(t, ctx)
		req := &gatewayv1.ExecutePaymentRequest{PaymentId: newPaymentID(), FromAccount: tt.from, ToAccount: tt.to, Amount: tt.amount, Currency: "USD"}
		if tt.name == "wrong currency" {
			req.Currency = "EUR"
		}
		resp, err := alice.payments.ExecutePayment(ctx, connect.NewRequest(req))
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		got := resp.Msg.GetPayment()
		if got.GetStatus() != tt.status || got.GetFailureReason() != tt.reason || resp.Msg.GetReplayed() {
			t.Fatalf("%s: payment = %v; want %v %v", tt.name, got, tt.status, tt.reason)
		}
		if tt.status == statusFailed && got.GetFailureMessage() == "" {
			t.Errorf("%s: failed payment without a message", tt.name)
		}
		after := e.audit(t, ctx)
		var wantFrom, wantTo int64
		if tt.status == statusSucceeded {
			wantFrom, wantTo = -tt.amount, tt.amount
		}
		if d := after.accounts[tt.from].GetBalance() - before.accounts[tt.from].GetBalance(); d != wantFrom {
			t.Errorf("%s: %s changed by %d, want %d", tt.name, tt.from, d, wantFrom)
		}
		if a, ok := before.accounts[tt.to]; ok {
			if d := after.accounts[tt.to].GetBalance() - a.GetBalance(); d != wantTo {
				t.Errorf("%s: %s changed by %d, want %d", tt.name, tt.to, d, wantTo)
			}
		}
	}
	// Refused before anything is recorded.
	refusals := []struct {
		name     string
		from, to string
		amount   int64
		code     connect.Code
		reason   string
	}{
		{"another user's account", "bank2-2002", "bank1-1001", 100, connect.CodePermissionDenied, "not_account_owner"},
		{"unknown payer", "bank1-9999", "bank1-1001", 100, connect.CodePermissionDenied, "not_account_owner"},
		{"unknown bank", "bank1-1001", "bank9-1", 100, connect.CodeNotFound, "unknown_bank"},
		{"zero amount", "bank1-1001", "bank2-2002", 0, connect.CodeInvalidArgument, ""},
		{"negative amount", "bank1-1001", "bank2-2002", -5, connect.CodeInvalidArgument, ""},
		{"to itself", "bank1-1001", "bank1-1001", 5, connect.CodeInvalidArgument, ""},
	}
	for _, tt := range refusals {
		_, err := alice.tryPay(context.Background(), newPaymentID(), tt.from, tt.to, tt.amount)
		if connect.CodeOf(err) != tt.code {
			t.Errorf("%s: err = %v; want %v", tt.name, err, tt.code)
		}
		if tt.reason != "" {
			wantErr(t, err, tt.code, tt.reason)
		}
	}
	_, err := alice.tryPay(context.Background(), "not-a-uuid", "bank1-1001", "bank2-2002", 5)
	wantErr(t, err, connect.CodeInvalidArgument, "")
	e.assertSettled(t)
}

func TestGetPayment(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			alice := e.login(t, p, "alice", "alice-pass-123")
			bob := e.login(t, p, "bob", "bob-pass-456")
			carol := e.login(t, p, "carol", "carol-pass-789")
			id := newPaymentID()
			paid := alice.pay(t, id, "bank1-1001", "bank2-2002", 777)

			resp, err := alice.payments.GetPayment(ctx, connect.NewRequest(&gatewayv1.GetPaymentRequest{PaymentId: id}))
			if err != nil {
				t.Fatalf("GetPayment: %v", err)
			}
			got := resp.Msg.GetPayment()
			if got.GetPaymentId() != id || got.GetStatus() != statusSucceeded || got.GetAmount() != 777 ||
				got.GetFromAccount() != "bank1-1001" || got.GetToAccount() != "bank2-2002" || got.GetCurrency() != "USD" ||
				got.GetUsername() != "alice" || got.GetCreateTime() == nil || got.GetDecideTime() == nil {
				t.Fatalf("GetPayment = %v", got)
			}
			if !got.GetCreateTime().AsTime().Equal(paid.GetCreateTime().AsTime()) {
				t.Errorf("create_time %v differs from ExecutePayment's %v", got.GetCreateTime().AsTime(), paid.GetCreateTime().AsTime())
			}

			// Its payee (bank2-2002 is bob's) sees it too, without who paid.
			resp, err = bob.payments.GetPayment(ctx, connect.NewRequest(&gatewayv1.GetPaymentRequest{PaymentId: id}))
			if err != nil {
				t.Fatalf("GetPayment by the payee: %v", err)
			}
			if got := resp.Msg.GetPayment(); got.GetPaymentId() != id || got.GetAmount() != 777 || got.GetUsername() != "" {
				t.Fatalf("GetPayment by the payee = %v, want the payment without its username", got)
			}

			// Another user's payment looks exactly like a missing one.
			_, errOther := carol.payments.GetPayment(ctx, connect.NewRequest(&gatewayv1.GetPaymentRequest{PaymentId: id}))
			wantErr(t, errOther, connect.CodeNotFound, "payment_not_found")
			missing := newPaymentID()
			_, errMissing := carol.payments.GetPayment(ctx, connect.NewRequest(&gatewayv1.GetPaymentRequest{PaymentId: missing}))
			wantErr(t, errMissing, connect.CodeNotFound, "payment_not_found")
			if a, b := connect.CodeOf(errOther), connect.CodeOf(errMissing); a != b {
				t.Errorf("codes differ: %v vs %v", a, b)
			}
			e.assertSettled(t)
		})
	}
}

// listAll pages through a user's payments and returns their ids in the order received.
func listAll(t *testing.T, c *clients, status gatewayv1.PaymentStatus, pageSize int32) ([]string, int) {
	t.Helper()
	var ids []string
	token := ""
	pages := 0
	for {
		resp, err := c.payments.ListPayments(context.Background(), connect.NewRequest(&gatewayv1.ListPaymentsRequest{
			PageSize: pageSize, PageToken: token, Status: status,
		}))
		if err != nil {
			t.Fatalf("ListPayments page %d: %v", pages+1, err)
		}
		pages++
		for _, p := range resp.Msg.GetPayments() {
			if p.GetUsername() != c.username {
				t.Fatalf("%s sees %s's payment %s", c.username, p.GetUsername(), p.GetPaymentId())
			}
			if status != 0 && p.GetStatus() != status {
				t.Fatalf("status filter %v returned %v", status, p)
			}
			ids = append(ids, p.GetPaymentId())
		}
		if pageSize > 0 && len(resp.Msg.GetPayments()) > int(pageSize) {
			t.Fatalf("page of %d payments, page_size %d", len(resp.Msg.GetPayments()), pageSize)
		}
		token = resp.Msg.GetNextPageToken()
		if token == "" {
			return ids, pages
		}
		if pages > 100 {
			t.Fatal("ListPayments does not end")
		}
	}
}

func TestListPayments(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			// Each subtest has its own payer so that the listings do not mix.
			payer := map[string]struct{ user, password, from, to string }{
				"grpc":    {"alice", "alice-pass-123", "bank1-1001", "bank2-2002"},
				"connect": {"carol", "carol-pass-789", "bank3-3002", "bank2-2002"},
			}[p.name]
			u := e.login(t, p, payer.user, payer.password)
			dave := e.login(t, p, "dave", "dave-pass-000")
			var all, succeeded, failed []string // in creation order
			for i := range 8 {
				id := newPaymentID()
				amount := int64(100 + i)
				if i%3 == 2 {
					amount = 100_000_000 // more than the payer has
				}
				got := u.pay(t, id, payer.from, payer.to, amount)
				all = append(all, id)
				if got.GetStatus() == statusSucceeded {
					succeeded = append(succeeded, id)
				} else {
					failed = append(failed, id)
				}
			}
			if len(failed) != 2 || len(succeeded) != 6 {
				t.Fatalf("%d succeeded, %d failed; want 6 and 2", len(succeeded), len(failed))
			}
			// dave pays too; the payer never sees it.
			dave.pay(t, newPaymentID(), "bank1-1003", "bank1-1001", 1)

			newestFirst := func(ids []string) []string { r := slices.Clone(ids); slices.Reverse(r); return r }
			for _, tt := range []struct {
				status gatewayv1.PaymentStatus
				size   int32
				want   []string
				pages  int
			}{
				{0, 3, newestFirst(all), 3},
				{0, 8, newestFirst(all), 1},
				{0, 7, newestFirst(all), 2},
				{0, 1, newestFirst(all), 8},
				{0, 0, newestFirst(all), 1}, // default page size
				{statusSucceeded, 4, newestFirst(succeeded), 2},
				{statusFailed, 1, newestFirst(failed), 2},
				{statusProcessing, 5, nil, 1},
			} {
				got, pages := listAll(t, u, tt.status, tt.size)
				if !slices.Equal(got, tt.want) {
					t.Errorf("status %v, page size %d: got %v, want %v", tt.status, tt.size, got, tt.want)
				}
				if pages != tt.pages {
					t.Errorf("status %v, page size %d: %d pages, want %d", tt.status, tt.size, pages, tt.pages)
				}
			}
			daveIDs, _ := listAll(t, dave, 0, 100)
			for _, id := range daveIDs {
				if slices.Contains(all, id) {
					t.Errorf("dave sees payment %s", id)
				}
			}

			// Bad page tokens.
			first, err := u.payments.ListPayments(ctx, connect.NewRequest(&gatewayv1.ListPaymentsRequest{PageSize: 2}))
			if err != nil {
				t.Fatal(err)
			}
			for name, req := range map[string]*gatewayv1.ListPaymentsRequest{
				"garbage":         {PageToken: "%%%not-base64%%%"},
				"not json":        {PageToken: base64.RawURLEncoding.EncodeToString([]byte("hello"))},
				"other status":    {PageToken: first.Msg.GetNextPageToken(), Status: statusFailed},
				"too long":        {PageToken: string(make([]byte, 300))},
				"negative size":   {PageSize: -1},
				"size over limit": {PageSize: 101},
			} {
				_, err := u.payments.ListPayments(ctx, connect.NewRequest(req))
				if connect.CodeOf(err) != connect.CodeInvalidArgument {
					t.Errorf("%s: err = %v; want InvalidArgument", name, err)
				}
			}
			_, err = u.payments.ListPayments(ctx, connect.NewRequest(&gatewayv1.ListPaymentsRequest{PageToken: "%%%"}))
			wantErr(t, err, connect.CodeInvalidArgument, "invalid_page_token")
		})
	}
	t.Cleanup(func() { e.assertSettled(t) })
}

func TestWatchPayments(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			// Each subtest has its own pair of users.
			users := map[string][2]struct{ name, password, from, to string }{
				"grpc":    {{"alice", "alice-pass-123", "bank1-1001", "bank2-2002"}, {"bob", "bob-pass-456", "bank2-2002", "bank1-1001"}},
				"connect": {{"carol", "carol-pass-789", "bank3-3002", "bank1-1003"}, {"dave", "dave-pass-000", "bank1-1003", "bank3-3002"}},
			}[p.name]
			me, other := users[0], users[1]
			mine := e.login(t, p, me.name, me.password)
			theirs := e.login(t, p, other.name, other.password)

			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			stream, err := mine.payments.WatchPayments(ctx, connect.NewRequest(&gatewayv1.WatchPaymentsRequest{}))
			if err != nil {
				t.Fatalf("WatchPayments: %v", err)
			}
			defer stream.Close()
			waitFor(t, 5*time.Second, "the watcher to subscribe", func() bool { return e.gw.events.watcherCount(me.name) == 1 })

			// The other user pays me, then I pay: my stream shows both payments' changes, in
			// order, the one paid to me without its payer's username.
			theirID := newPaymentID()
			theirs.pay(t, theirID, other.from, other.to, 10)
			id := newPaymentID()
			mine.pay(t, id, me.from, me.to, 20)

			type change struct {
				id, user string
				status   gatewayv1.PaymentStatus
			}
			var got []change
			var lastSeq int64
			for len(got) < 4 && stream.Receive() {
				pm, ev := stream.Msg().GetPayment(), stream.Msg().GetEvent()
				if ev.GetSeq() <= lastSeq || ev.GetPayment().GetPaymentId() != pm.GetPaymentId() {
					t.Fatalf("event %v after seq %d", ev, lastSeq)
				}
				lastSeq = ev.GetSeq()
				got = append(got, change{pm.GetPaymentId(), pm.GetUsername(), pm.GetStatus()})
			}
			if err := stream.Err(); err != nil {
				t.Fatalf("stream: %v", err)
			}
			want := []change{{theirID, "", statusProcessing}, {theirID, "", statusSucceeded}, {id, me.name, statusProcessing}, {id, me.name, statusSucceeded}}
			if !slices.Equal(got, want) {
				t.Fatalf("changes = %v; want %v", got, want)
			}
		})
	}
	t.Cleanup(func() { e.assertSettled(t) })
}

// TestWatchPaymentsAnswersBeforeFirstEvent checks that WatchPayments answers (sends its
// response headers) as soon as the subscription is in place, so that a client's call returns and
// the client knows that it will not miss later changes.
func TestWatchPaymentsAnswersBeforeFirstEvent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			u := e.login(t, p, "bob", "bob-pass-456")
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			stream, err := u.payments.WatchPayments(ctx, connect.NewRequest(&gatewayv1.WatchPaymentsRequest{}))
			if err != nil {
				// Without headers sent at once, the call blocks until the first change.
				t.Fatalf("WatchPayments with no change to report: %v", err)
			}
			stream.Close()
		})
	}
}

// watcherCount returns how many WatchPayments streams of username are open.
func (b *broker) watcherCount(username string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.streams[username]
}

func TestFetchBalance(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			bob := e.login(t, p, "bob", "bob-pass-456")
			resp, err := bob.balance.FetchBalance(context.Background(), connect.NewRequest(&gatewayv1.FetchBalanceRequest{}))
			if err != nil {
				t.Fatal(err)
			}
			m := resp.Msg
			if len(m.GetBanks()) != 2 || m.GetBanks()[0].GetBank() != "bank2" || m.GetBanks()[1].GetBank() != "bank3" {
				t.Fatalf("banks = %v", m.GetBanks())
			}
			want := map[string]int64{"bank2-2002": 80000, "bank3-3001": 45075}
			for _, b := range m.GetBanks() {
				if b.GetStatus() != gatewayv1.BankStatus_BANK_STATUS_AVAILABLE {
					t.Errorf("%s: %v", b.GetBank(), b.GetStatus())
				}
				for _, a := range b.GetAccounts() {
					if a.GetBalance() != want[a.GetAccountId()] || a.GetAvailable() != a.GetBalance() || a.GetCurrency() != "USD" {
						t.Errorf("account %v; want balance %d", a, want[a.GetAccountId()])
					}
				}
			}
			if len(m.GetTotals()) != 1 || m.GetTotals()[0].GetCurrency() != "USD" || m.GetTotals()[0].GetBalance() != 80000+45075 || m.GetTotals()[0].GetPartial() {
				t.Fatalf("totals = %v", m.GetTotals())
			}
		})
	}
}

// listReceived pages through the payments others made to c's accounts and returns them in the
// order received, failing the test unless each is shown without who paid.
func listReceived(t *testing.T, c *clients, status gatewayv1.PaymentStatus, pageSize int32) []*gatewayv1.Payment {
	t.Helper()
	var out []*gatewayv1.Payment
	token := ""
	for pages := 1; ; pages++ {
		resp, err := c.payments.ListPayments(context.Background(), connect.NewRequest(&gatewayv1.ListPaymentsRequest{
			PageSize: pageSize, PageToken: token, Status: status, Received: true,
		}))
		if err != nil {
			t.Fatalf("ListPayments received, page %d: %v", pages, err)
		}
		for _, p := range resp.Msg.GetPayments() {
			if p.GetUsername() != "" {
				t.Fatalf("%s received %s showing its payer %q", c.username, p.GetPaymentId(), p.GetUsername())
			}
		}
		if len(resp.Msg.GetPayments()) > int(pageSize) {
			t.Fatalf("page of %d payments, page_size %d", len(resp.Msg.GetPayments()), pageSize)
		}
		out = append(out, resp.Msg.GetPayments()...)
		if token = resp.Msg.GetNextPageToken(); token == "" {
			return out
		}
		if pages > 100 {
			t.Fatal("ListPayments received does not end")
		}
	}
}

// TestListReceivedPayments: ListPayments with received lists what others paid to the caller's
// accounts, newest first, without who paid, refunds of the caller's payments among them, with
// their refunded amounts; never the caller's own payments nor others' to other accounts; and a
// page token of one listing is refused by the other.
func TestListReceivedPayments(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	p := protocols[0]
	ctx := context.Background()
	alice := e.login(t, p, "alice", "alice-pass-123")
	bob := e.login(t, p, "bob", "bob-pass-456")
	carol := e.login(t, p, "carol", "carol-pass-789")
	dave := e.login(t, p, "dave", "dave-pass-000")

	var want []string // bob's received, in creation order
	paid := alice.pay(t, newPaymentID(), "bank1-1001", "bank2-2002", 5000)
	want = append(want, paid.GetPaymentId())
	want = append(want, dave.pay(t, newPaymentID(), "bank1-1003", "bank2-2002", 100).GetPaymentId())
	failed := carol.pay(t, newPaymentID(), "bank3-3002", "bank3-3001", 100_000_000) // beyond carol's balance
	if failed.GetStatus() != statusFailed {
		t.Fatalf("payment beyond the balance = %v", failed)
	}
	want = append(want, failed.GetPaymentId())
	want = append(want, carol.pay(t, newPaymentID(), "bank3-3002", "bank3-3001", 200).GetPaymentId())
	bob.pay(t, newPaymentID(), "bank2-2002", "bank3-3001", 300)   // his own, to his own account
	alice.pay(t, newPaymentID(), "bank1-1001", "bank1-1002", 400) // to carol
	refund := bob.mustRefund(t, newPaymentID(), paid.GetPaymentId(), 1500).GetRefund()
	slices.Reverse(want)

	got := listReceived(t, bob, 0, 3)
	var ids []string
	for _, q := range got {
		ids = append(ids, q.GetPaymentId())
		if q.GetPaymentId() == paid.GetPaymentId() && q.GetRefundedAmount() != 1500 {
			t.Errorf("bob received %v, want refunded_amount 1500", q)
		}
	}
	if !slices.Equal(ids, want) {
		t.Fatalf("bob received %v, want newest first %v", ids, want)
	}
	var succeeded []string
	for _, id := range want {
		if id != failed.GetPaymentId() {
			succeeded = append(succeeded, id)
		}
	}
	ids = nil
	for _, q := range listReceived(t, bob, statusSucceeded, 1) {
		ids = append(ids, q.GetPaymentId())
	}
	if !slices.Equal(ids, succeeded) {
		t.Fatalf("bob received, succeeded: %v, want %v", ids, succeeded)
	}
	// alice received bob's refund of her payment.
	back := listReceived(t, alice, 0, 10)
	if len(back) != 1 || back[0].GetPaymentId() != refund.GetPaymentId() || back[0].GetRefundOf() != paid.GetPaymentId() ||
		back[0].GetAmount() != 1500 {
		t.Fatalf("alice received %v, want bob's refund %s", back, refund.GetPaymentId())
	}
	if got := listReceived(t, dave, 0, 10); len(got) != 0 {
		t.Fatalf("dave received %v", got)
	}

	// A page token belongs to its listing.
	recv, err := bob.payments.ListPayments(ctx, connect.NewRequest(&gatewayv1.ListPaymentsRequest{PageSize: 1, Received: true}))
	if err != nil || recv.Msg.GetNextPageToken() == "" {
		t.Fatalf("first received page: %v, %v", recv, err)
	}
	made, err := alice.payments.ListPayments(ctx, connect.NewRequest(&gatewayv1.ListPaymentsRequest{PageSize: 1}))
	if err != nil || made.Msg.GetNextPageToken() == "" {
		t.Fatalf("first page: %v, %v", made, err)
	}
	_, err = bob.payments.ListPayments(ctx, connect.NewRequest(&gatewayv1.ListPaymentsRequest{PageToken: recv.Msg.GetNextPageToken()}))
	wantErr(t, err, connect.CodeInvalidArgument, "invalid_page_token")
	_, err = alice.payments.ListPayments(ctx, connect.NewRequest(&gatewayv1.ListPaymentsRequest{PageToken: made.Msg.GetNextPageToken(), Received: true}))
	wantErr(t, err, connect.CodeInvalidArgument, "invalid_page_token")
	_, err = bob.payments.ListPayments(ctx, connect.NewRequest(&gatewayv1.ListPaymentsRequest{
		PageToken: recv.Msg.GetNextPageToken(), Received: true, Status: statusSucceeded}))
	wantErr(t, err, connect.CodeInvalidArgument, "invalid_page_token")
	e.assertSettled(t)
}
