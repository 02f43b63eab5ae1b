package client_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/paygate/paygate/client"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
	"github.com/paygate/paygate/internal/rpcerr"
	"github.com/paygate/paygate/internal/rpcserver"
)

// fakeGateway is a PaymentService with the gateway's idempotency semantics and hooks to fail
// attempts, refuse tokens and go down (answering HTTP 503 to everything, health included).
type fakeGateway struct {
	gatewayv1connect.UnimplementedPaymentServiceHandler
	down atomic.Bool

	mu        sync.Mutex
	failFirst map[string]int // payment id → attempts to answer with Aborted first
	badToken  string
	applied   map[string]*gatewayv1.Payment
	order     map[string][]string // from account → ids in the order they were decided
	attempts  map[string][]string // payment id → Paygate-Attempt headers received
}

func newFake(t *testing.T) (*fakeGateway, string, *http.Client) {
	t.Helper()
	f := &fakeGateway{failFirst: map[string]int{}, applied: map[string]*gatewayv1.Payment{},
		order: map[string][]string{}, attempts: map[string][]string{}}
	mux := http.NewServeMux()
	mux.Handle(gatewayv1connect.NewPaymentServiceHandler(f))
	mux.Handle(grpchealth.NewHandler(grpchealth.NewStaticChecker()))
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		mux.ServeHTTP(w, r)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return f, srv.URL, srv.Client()
}

func (f *fakeGateway) ExecutePayment(_ context.Context, req *connect.Request[gatewayv1.ExecutePaymentRequest]) (*connect.Response[gatewayv1.ExecutePaymentResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := req.Msg
	if f.badToken != "" && req.Header().Get("Authorization") == "Bearer "+f.badToken {
		return nil, rpcerr.New(connect.CodeUnauthenticated, "token_expired", "token expired: log in again")
	}
	f.attempts[m.GetPaymentId()] = append(f.attempts[m.GetPaymentId()], req.Header().Get(rpcserver.AttemptHeader))
	if f.failFirst[m.GetPaymentId()] > 0 {
		f.failFirst[m.GetPaymentId()]--
		return nil, rpcerr.New(connect.CodeAborted, "payment_in_progress", "in progress")
	}
	if p, ok := f.applied[m.GetPaymentId()]; ok {
		return connect.NewResponse(&gatewayv1.ExecutePaymentResponse{Payment: p, Replayed: true}), nil
	}
	if m.GetToAccount() == "nobody-1" {
		return nil, rpcerr.New(connect.CodeNotFound, "unknown_bank", "no bank named nobody")
	}
	p := &gatewayv1.Payment{PaymentId: m.GetPaymentId(), FromAccount: m.GetFromAccount(), ToAccount: m.GetToAccount(),
		Amount: m.GetAmount(), Currency: m.GetCurrency(), Status: gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED,
		CreateTime: timestamppb.Now(), DecideTime: timestamppb.Now()}
	if m.GetAmount() > 10_000 {
		p.Status = gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED
		p.FailureReason = gatewayv1.FailureReason_FAILURE_REASON_INSUFFICIENT_FUNDS
		p.FailureMessage = "insufficient funds in " + m.GetFromAccount()
	}
	f.applied[m.GetPaymentId()] = p
	f.order[m.GetFromAccount()] = append(f.order[m.GetFromAccount()], m.GetPaymentId())
	return connect.NewResponse(&gatewayv1.ExecutePaymentResponse{Payment: p}), nil
}

func (f *fakeGateway) attemptsOf(id string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.attempts[id])
}

var fastRetry = client.RetryPolicy{InitialBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, MaxAttempts: 5}

func newTestClient(t *testing.T, url string, hc *http.Client, opts ...client.Option) *client.Client {
	t.Helper()
	opts = append([]client.Option{client.WithHTTPClient(hc), client.WithRetry(fastRetry), client.WithToken("good"),
		client.WithUsername("alice"), client.WithTimeout(5 * time.Second)}, opts...)
	c, err := client.New(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func req(from, to string, amount int64) client.PaymentRequest {
	return client.PaymentRequest{From: from, To: to, Amount: amount, Currency: "USD"}
}

func TestClientRetryPolicyBackoff(t *testing.T) {
	t.Parallel()
	p := client.RetryPolicy{InitialBackoff: 100 * time.Millisecond, MaxBackoff: 2 * time.Second, Multiplier: 2, Jitter: 0.5}
	for n := 1; n <= 20; n++ {
		full := min(100*time.Millisecond<<(n-1), 2*time.Second)
		if n > 10 {
			full = 2 * time.Second
		}
		for range 50 {
			d := p.Backoff(n)
			if d < full/2 || d > full {
				t.Fatalf("Backoff(%d) = %s, want within [%s, %s]", n, d, full/2, full)
			}
		}
	}
}

func TestClientPayRetriesAmbiguousFailuresWithTheSameID(t *testing.T) {
	t.Parallel()
	f, url, hc := newFake(t)
	c := newTestClient(t, url, hc)
	id := client.NewPaymentID()
	f.failFirst[id] = 2
	r, err := c.Pay(testCtx(t, 10*time.Second), client.PaymentRequest{ID: id, From: "bank1-1001", To: "bank2-2002", Amount: 500, Currency: "USD"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != client.StatusSucceeded || r.Attempts != 3 || r.ID != id {
		t.Fatalf("result = %+v, want succeeded after 3 attempts with id %s", r, id)
	}
	if got := f.attemptsOf(id); !slices.Equal(got, []string{"1", "2", "3"}) {
		t.Fatalf("Paygate-Attempt headers = %v, want [1 2 3]", got)
	}
}

func TestClientPayRefusalIsFinal(t *testing.T) {
	t.Parallel()
	f, url, hc := newFake(t)
	c := newTestClient(t, url, hc)
	r, err := c.Pay(testCtx(t, 10*time.Second), req("bank1-1001", "bank2-2002", 50_000))
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != client.StatusFailed || r.Reason != "insufficient_funds" || r.Attempts != 1 {
		t.Fatalf("result = %+v, want failed insufficient_funds after 1 attempt", r)
	}
	r, err = c.Pay(testCtx(t, 10*time.Second), req("bank1-1001", "nobody-1", 5))
	if err != nil || r.Status != client.StatusFailed || r.Reason != "unknown_bank" || len(f.attemptsOf(r.ID)) != 1 {
		t.Fatalf("result = %+v, %v; want failed unknown_bank after 1 attempt", r, err)
	}
	if _, err := c.Pay(testCtx(t, time.Second), req("bank1-1001", "bank1-1001", 5)); !errors.Is(err, client.ErrInvalidPayment) {
		t.Fatalf("paying an account to itself: %v, want ErrInvalidPayment", err)
	}
}

func TestClientPayOutcomeUnknownThenRetriedWithSameID(t *testing.T) {
	t.Parallel()
	f, url, hc := newFake(t)
	c := newTestClient(t, url, hc)
	f.down.Store(true)
	r, err := c.Pay(testCtx(t, 10*time.Second), req("bank1-1001", "bank2-2002", 100))
	if !errors.Is(err, client.ErrOutcomeUnknown) || r.ID == "" {
		t.Fatalf("Pay with the gateway down = %+v, %v; want ErrOutcomeUnknown with an id", r, err)
	}
	f.down.Store(false)
	again := r.Request
	again.ID = r.ID
	r2, err := c.Pay(testCtx(t, 10*time.Second), again)
	if err != nil || r2.Status != client.StatusSucceeded || r2.ID != r.ID {
		t.Fatalf("retry = %+v, %v", r2, err)
	}
}

func TestQueueOfflinePaymentsAreDeliveredOnceInAccountOrder(t *testing.T) {
	t.Parallel()
	f, url, hc := newFake(t)
	dir := t.TempDir()
	c := newTestClient(t, url, hc, client.WithQueue(dir), client.WithPayWait(5*time.Second))
	f.down.Store(true)
	ctx := testCtx(t, 60*time.Second)
	want := map[string][]string{}
	froms := []string{"bank1-1001", "bank2-2001", "bank3-3001"}
	for i := range 45 {
		from := froms[i%3]
		r, err := c.Pay(ctx, req(from, "bank9-9999", int64(1+i)))
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != client.StatusQueued || !strings.Contains(r.Message, "unreachable") {
			t.Fatalf("Pay %d with the gateway down = %+v, want queued (unreachable)", i, r)
		}
		want[from] = append(want[from], r.ID)
		if i%7 == 0 {
			f.mu.Lock()
			f.failFirst[r.ID] = 2 // ambiguous failures must not let later payments overtake
			f.mu.Unlock()
		}
	}
	pending, err := c.Queue().Pending(ctx)
	if err != nil || len(pending) != 45 {
		t.Fatalf("pending = %d, %v; want 45", len(pending), err)
	}
	f.down.Store(false)
	c.Kick()
	if err := c.Flush(ctx, nil); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for from, ids := range want {
		if !slices.Equal(f.order[from], ids) {
			t.Errorf("%s: decided in order %v, queued in order %v", from, f.order[from], ids)
		}
	}
	if len(f.applied) != 45 {
		t.Errorf("applied %d payments, want 45", len(f.applied))
	}
	stats, _ := c.Queue().Stats(ctx)
	if stats != (client.QueueStats{Succeeded: 45}) {
		t.Errorf("stats = %+v", stats)
	}
}

func TestQueueSurvivesTheProcessAndReportsOutcomesLater(t *testing.T) {
	t.Parallel()
	f, url, hc := newFake(t)
	dir := t.TempDir()
	ctx := testCtx(t, 30*time.Second)
	f.down.Store(true)
	first, err := client.New(url, client.WithHTTPClient(hc), client.WithRetry(fastRetry), client.WithToken("good"),
		client.WithUsername("alice"), client.WithQueue(dir))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 3 {
		r, err := first.Pay(ctx, req("bank1-1001", "bank2-2002", int64(10+i)))
		if err != nil || r.Status != client.StatusQueued {
			t.Fatalf("Pay = %+v, %v", r, err)
		}
		ids = append(ids, r.ID)
	}
	// A payment the bank will refuse, queued as well.
	r, err := first.Pay(ctx, req("bank1-1001", "bank2-2002", 99_999))
	if err != nil {
		t.Fatal(err)
	}
	refused := r.ID
	first.Close()

	f.down.Store(false)
	var mu sync.Mutex
	got := map[string]client.Result{}
	second := newTestClient(t, url, hc, client.WithQueue(dir), client.WithOutcomes(func(r client.Result) {
		mu.Lock()
		got[r.ID] = r
		mu.Unlock()
	}))
	if err := second.Flush(ctx, nil); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, id := range ids {
		if got[id].Status != client.StatusSucceeded {
			t.Errorf("outcome of %s = %+v, want succeeded", id, got[id])
		}
	}
	if o := got[refused]; o.Status != client.StatusFailed || o.Reason != "insufficient_funds" {
		t.Errorf("outcome of the refused payment = %+v, want failed insufficient_funds", o)
	}
	if un, _ := second.Queue().Unreported(ctx); len(un) != 0 {
		t.Errorf("unreported outcomes left: %d", len(un))
	}
	// Not retried after its outcome.
	time.Sleep(200 * time.Millisecond)
	if n := len(f.attemptsOf(refused)); n != 1 {
		t.Errorf("the refused payment was attempted %d times, want 1", n)
	}
}

func TestQueueRefusedTokenPausesUntilLogin(t *testing.T) {
	t.Parallel()
	f, url, hc := newFake(t)
	f.badToken = "expired"
	c := newTestClient(t, url, hc, client.WithQueue(t.TempDir()), client.WithToken("expired"))
	ctx := testCtx(t, 30*time.Second)
	r, err := c.Pay(ctx, req("bank1-1001", "bank2-2002", 10))
	if err != nil || r.Status != client.StatusQueued || !strings.Contains(r.Message, "login required") {
		t.Fatalf("Pay with an expired token = %+v, %v; want queued, login required", r, err)
	}
	if err := c.Flush(ctx, nil); !errors.Is(err, client.ErrLoginRequired) {
		t.Fatalf("Flush = %v, want ErrLoginRequired", err)
	}
	c.SetToken("good", "alice")
	if err := c.Flush(ctx, nil); err != nil {
		t.Fatal(err)
	}
	p, err := c.Queue().Get(ctx, r.ID)
	if err != nil || p.Status != client.StatusSucceeded {
		t.Fatalf("after login: %+v, %v", p, err)
	}
}

func TestQueueOneSenderPerDirectory(t *testing.T) {
	t.Parallel()
	_, url, hc := newFake(t)
	dir := t.TempDir()
	a := newTestClient(t, url, hc, client.WithQueue(dir))
	b := newTestClient(t, url, hc, client.WithQueue(dir))
	deadline := time.Now().Add(5 * time.Second)
	for !a.SenderState().Leader && !b.SenderState().Leader && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	if a.SenderState().Leader == b.SenderState().Leader {
		t.Fatalf("leaders: a %v, b %v; want exactly one", a.SenderState().Leader, b.SenderState().Leader)
	}
	// A payment made through the client that does not send is delivered by the other.
	follower := a
	if a.SenderState().Leader {
		follower = b
	}
	r, err := follower.Pay(testCtx(t, 10*time.Second), req("bank1-1001", "bank2-2002", 10))
	if err != nil || r.Status != client.StatusSucceeded {
		t.Fatalf("Pay through the follower = %+v, %v", r, err)
	}
}

// The real system in this process: the gateway stops, a payment is queued, the gateway comes
// back, and the payment is applied exactly once; money is conserved.
func TestClientQueueAgainstRealGatewayRestart(t *testing.T) {
	t.Parallel()
	sys := newSystem(t)
	before := sys.settledBalances(t)
	ctx := testCtx(t, 60*time.Second)
	c, err := client.New(sys.addr, client.WithTLSDir(certDir), client.WithQueue(t.TempDir()),
		client.WithRetry(client.RetryPolicy{InitialBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Login(ctx, "alice", "alice-pass-123"); err != nil {
		t.Fatal(err)
	}
	sys.stopGateway()
	r, err := c.Pay(ctx, req("bank1-1001", "bank2-2002", 2500))
	if err != nil || r.Status != client.StatusQueued {
		t.Fatalf("Pay with the gateway stopped = %+v, %v; want queued", r, err)
	}
	if err := sys.startGateway(); err != nil {
		t.Fatal(err)
	}
	sys.waitBanksServing(t)
	if err := c.Flush(ctx, nil); err != nil {
		t.Fatal(err)
	}
	p, err := c.GetPayment(ctx, r.ID)
	if err != nil || p.GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
		t.Fatalf("GetPayment = %v, %v", p, err)
	}
	after := sys.settledBalances(t)
	if total(after) != total(before) {
		t.Errorf("conservation: total %d before, %d after", total(before), total(after))
	}
	if d := after["bank1-1001"] - before["bank1-1001"]; d != -2500 {
		t.Errorf("bank1-1001 moved by %d, want -2500 (exactly once)", d)
	}
	if d := after["bank2-2002"] - before["bank2-2002"]; d != 2500 {
		t.Errorf("bank2-2002 moved by %d, want 2500 (exactly once)", d)
	}
}
