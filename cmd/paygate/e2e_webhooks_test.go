package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/paygate/paygate/client/webhook"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
	"github.com/paygate/paygate/internal/cluster"
)

// whSink is a merchant's webhook receiver in an end-to-end test: a plain HTTP server on
// 127.0.0.1 that can be taken down (its listener closed) and brought up again on the same
// port, made to answer 503, and made slow. It verifies every request's signature with the
// secret of the endpoint its path names, and counts the requests in flight per endpoint.
type whSink struct {
	t    *testing.T
	addr string

	mu       sync.Mutex
	srv      *http.Server
	secrets  map[string]string // by path
	got      []whGot
	bad      []string
	inFlight map[string]int
	maxIn    map[string]int

	failing atomic.Bool  // answer 503
	delay   atomic.Int64 // nanoseconds to wait before answering
}

// whGot is a request the sink accepted (answered 200).
type whGot struct {
	path    string
	eventID string
	event   *gatewayv1.Event
	body    string
	at      time.Time
}

func newWHSink(t *testing.T) *whSink {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &whSink{t: t, addr: ln.Addr().String(), secrets: map[string]string{}, inFlight: map[string]int{}, maxIn: map[string]int{}}
	s.serve(ln)
	t.Cleanup(s.down)
	return s
}

func (s *whSink) url(path string) string { return "http://" + s.addr + path }

func (s *whSink) serve(ln net.Listener) {
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second}
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
	go srv.Serve(ln)
}

// down closes the listener and every connection: the endpoint is unreachable.
func (s *whSink) down() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

// up listens again on the same address.
func (s *whSink) up() {
	var ln net.Listener
	var err error
	for range 50 {
		if ln, err = net.Listen("tcp", s.addr); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		s.t.Fatalf("receiver: listen again on %s: %v", s.addr, err)
	}
	s.serve(ln)
}

func (s *whSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body := make([]byte, 0, 1024)
	buf := make([]byte, 4096)
	for {
		n, err := r.Body.Read(buf)
		body = append(body, buf[:n]...)
		if err != nil {
			break
		}
	}
	s.mu.Lock()
	s.inFlight[r.URL.Path]++
	s.maxIn[r.URL.Path] = max(s.maxIn[r.URL.Path], s.inFlight[r.URL.Path])
	secret := s.secrets[r.URL.Path]
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inFlight[r.URL.Path]--
		s.mu.Unlock()
	}()
	if d := time.Duration(s.delay.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
	}
	if s.failing.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	var ev gatewayv1.Event
	err := webhook.Verify(secret, r.Header.Get(webhook.SignatureHeader), body, 5*time.Minute)
	if err == nil {
		err = protojson.Unmarshal(body, &ev)
	}
	if err == nil && (r.Header.Get("Content-Type") != "application/json" || r.Header.Get("Paygate-Event-Id") != ev.GetEventId()) {
		err = errors.New("wrong Content-Type or Paygate-Event-Id")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.bad = append(s.bad, fmt.Sprintf("%s: %v", r.URL.Path, err))
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	s.got = append(s.got, whGot{path: r.URL.Path, eventID: ev.GetEventId(), event: &ev, body: string(body), at: time.Now()})
}

// received returns the requests accepted at path.
func (s *whSink) received(path string) []whGot {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []whGot
	for _, g := range s.got {
		if g.path == path {
			out = append(out, g)
		}
	}
	return out
}

// busy reports whether a request is in flight at path.
func (s *whSink) busy(path string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inFlight[path] > 0
}

// webhooksOf returns a WebhookService client of u's at the gateway at addr.
func webhooksOf(c *cluster.Cluster, addr string, u *cluster.User) gatewayv1connect.WebhookServiceClient {
	return gatewayv1connect.NewWebhookServiceClient(c.CertHTTP(c.ClientCert("cli")), "https://"+addr,
		connect.WithGRPC(), connect.WithInterceptors(cluster.Bearer(u.Token)))
}

// whArgs are the gateway flags of the webhook end-to-end tests: endpoints on loopback over
// plain HTTP, a short backoff and timeout.
var whArgs = []string{"--webhook-allow-private", "--webhook-allow-http", "--webhook-backoff-min", "100ms",
	"--webhook-backoff-max", "400ms", "--webhook-timeout", "2s"}

// TestWebhooksEndToEnd is webhook delivery's promise on real processes (SQLite): see
// runWebhooksEndToEnd.
func TestWebhooksEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real processes")
	}
	t.Parallel()
	c := cluster.New(t, cluster.Options{Backend: cluster.SQLite, GatewayArgs: whArgs})
	runWebhooksEndToEnd(t, c)
}

// TestWebhooksEndToEndReplicas is TestWebhooksEndToEnd on PostgreSQL with two gateway
// replicas, both delivering: still one request at a time per endpoint.
func TestWebhooksEndToEndReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real processes")
	}
	t.Parallel()
	c := cluster.New(t, cluster.Options{Gateways: 2, GatewayArgs: whArgs})
	runWebhooksEndToEnd(t, c)
}

// runWebhooksEndToEnd: bob registers an endpoint for payment.succeeded (and one for every
// event, to check the order per payment); alice pays him, some payments succeed and some fail;
// the receiver is down for a while (its listener closed), then answers 503, then is up but
// slow; the first gateway is killed (SIGKILL) while a request is in flight and started again.
// At the end the receiver has a payment.succeeded for every succeeded payment and for no
// other (duplicates only with the same event_id and body), each request verified with
// client/webhook.Verify against the endpoint's secret; the every-event endpoint got each
// payment's created before its decision; no endpoint ever had two requests at once;
// ListWebhookDeliveries shows failed attempts followed by the success; and the ledger is
// audited.
func runWebhooksEndToEnd(t *testing.T, c *cluster.Cluster) {
	before := audit(t, c)
	alice, bob := login(t, c, "alice"), login(t, c, "bob")
	wb := webhooksOf(c, c.GatewayAddr, bob)
	sink := newWHSink(t)
	ctx := ctxT(t, 3*time.Minute)

	create := func(path string, types ...string) string {
		resp, err := wb.CreateWebhookEndpoint(ctx, connect.NewRequest(&gatewayv1.CreateWebhookEndpointRequest{Url: sink.url(path), EventTypes: types}))
		if err != nil {
			t.Fatalf("create endpoint: %v", err)
		}
		sink.mu.Lock()
		sink.secrets[path] = resp.Msg.GetSecret()
		sink.mu.Unlock()
		return resp.Msg.GetEndpoint().GetEndpointId()
	}
	succEP := create("/succeeded", "payment.succeeded")
	create("/all", "*")

	var mu sync.Mutex
	outcome := map[string]gatewayv1.PaymentStatus{} // by payment id
	payMany := func(n int) {
		t.Helper()
		for i := range n {
			id := newID()
			amount := int64(100 + i)
			if i%4 == 3 {
				amount = 1e12 // insufficient funds: fails
			}
			resp, err := pay(ctx, alice, id, "bank1-1001", "bank2-2002", amount)
			if err != nil {
				t.Fatalf("pay: %v", err)
			}
			mu.Lock()
			outcome[id] = resp.GetPayment().GetStatus()
			mu.Unlock()
		}
	}
	waitSucceeded := func(within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			missing := 0
			seen := map[string]bool{}
			for _, g := range sink.received("/succeeded") {
				seen[g.event.GetPayment().GetPaymentId()] = true
			}
			mu.Lock()
			for id, st := range outcome {
				if st == gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED && !seen[id] {
					missing++
				}
			}
			mu.Unlock()
			if missing == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d succeeded payments have no payment.succeeded at the receiver", missing)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	// Up.
	payMany(6)
	waitSucceeded(20 * time.Second)
	// Down for a while: attempts fail (connection refused) and are retried.
	sink.down()
	payMany(6)
	time.Sleep(time.Second)
	// Answering 503.
	sink.up()
	sink.failing.Store(true)
	payMany(4)
	time.Sleep(time.Second)
	// Up but slow; the first gateway is killed while a request is in flight.
	sink.failing.Store(false)
	sink.delay.Store(int64(200 * time.Millisecond))
	payMany(6)
	deadline := time.Now().Add(20 * time.Second)
	for !sink.busy("/succeeded") && !sink.busy("/all") {
		if time.Now().After(deadline) {
			t.Fatal("no request in flight to kill the gateway during")
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.Kill("gateway")
	c.StartGateway()
	sink.delay.Store(0)
	alice, bob = login(t, c, "alice"), login(t, c, "bob")
	wb = webhooksOf(c, c.GatewayAddr, bob)
	payMany(4)
	waitSucceeded(60 * time.Second)

	// Every succeeded payment has its payment.succeeded, and only those; copies are the same
	// event.
	byEvent := map[string]string{}
	for _, g := range sink.received("/succeeded") {
		if g.event.GetType() != "payment.succeeded" {
			t.Errorf("the payment.succeeded endpoint got a %s", g.event.GetType())
		}
		id := g.event.GetPayment().GetPaymentId()
		mu.Lock()
		st, ok := outcome[id]
		mu.Unlock()
		if !ok || st != gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
			t.Errorf("payment.succeeded for %s, which is %v", id, st)
		}
		if g.event.GetPayment().GetUsername() != "" {
			t.Errorf("the payee was shown the payer's username: %v", g.event)
		}
		if prev, ok := byEvent[g.eventID]; ok && prev != g.body {
			t.Errorf("event %s delivered twice with different bodies", g.eventID)
		}
		byEvent[g.eventID] = g.body
	}
	// Order per payment at the every-event endpoint: created before the decision.
	whWaitFor(t, 30*time.Second, "every event at the every-event endpoint", func() bool {
		types := map[string]int{}
		for _, g := range sink.received("/all") {
			types[g.event.GetPayment().GetPaymentId()] |= map[string]int{"payment.created": 1, "payment.succeeded": 2, "payment.failed": 2}[g.event.GetType()]
		}
		mu.Lock()
		defer mu.Unlock()
		for id := range outcome {
			if types[id] != 3 {
				return false
			}
		}
		return true
	})
	first := map[string]string{} // payment id -> type of the first event received
	for _, g := range sink.received("/all") {
		id := g.event.GetPayment().GetPaymentId()
		if _, ok := first[id]; !ok {
			first[id] = g.event.GetType()
		}
	}
	for id, typ := range first {
		if typ != "payment.created" {
			t.Errorf("payment %s: the every-event endpoint got %s first", id, typ)
		}
	}
	sink.mu.Lock()
	bad, maxIn := sink.bad, sink.maxIn
	sink.mu.Unlock()
	if len(bad) > 0 {
		t.Errorf("requests refused by the receiver: %v", bad)
	}
	for path, n := range maxIn {
		if n > 1 {
			t.Errorf("endpoint %s had %d requests at once; want one at a time", path, n)
		}
	}

	// The delivery log: a delivery made while the receiver was down shows its failed attempts,
	// then the success.
	var ds []*gatewayv1.WebhookDelivery
	for tok := ""; ; {
		resp, err := wb.ListWebhookDeliveries(ctx, connect.NewRequest(&gatewayv1.ListWebhookDeliveriesRequest{EndpointId: succEP, PageSize: 7, PageToken: tok}))
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, resp.Msg.GetDeliveries()...)
		if tok = resp.Msg.GetNextPageToken(); tok == "" {
			break
		}
	}
	retried := 0
	var refused, unavailable bool
	for _, d := range ds {
		if d.GetStatus() != gatewayv1.WebhookDeliveryStatus_WEBHOOK_DELIVERY_STATUS_SUCCEEDED {
			t.Errorf("delivery %s is %v", d.GetDeliveryId(), d.GetStatus())
			continue
		}
		at := d.GetAttempts()
		if len(at) == 0 || at[len(at)-1].GetHttpStatus() != 200 {
			t.Errorf("delivery %s: attempts %v; want the last a 200", d.GetDeliveryId(), at)
			continue
		}
		if len(at) > 1 {
			retried++
		}
		for _, a := range at[:len(at)-1] {
			refused = refused || strings.Contains(a.GetError(), "connection refused")
			unavailable = unavailable || a.GetHttpStatus() == 503
		}
	}
	if want := countStatus(&mu, outcome, gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED); len(ds) != want {
		t.Errorf("%d deliveries listed; want one per succeeded payment, %d", len(ds), want)
	}
	if retried == 0 || !refused || !unavailable {
		t.Errorf("%d deliveries retried; a refused connection seen %v, a 503 seen %v: want both", retried, refused, unavailable)
	}
	t.Logf("%d payments, %d deliveries of payment.succeeded (%d retried), %d requests at the receiver",
		len(outcome), len(ds), retried, len(sink.received("/succeeded"))+len(sink.received("/all")))
	checkSettled(t, c, before, 30*time.Second)
}

// countStatus counts the payments of outcome with status st.
func countStatus(mu *sync.Mutex, outcome map[string]gatewayv1.PaymentStatus, st gatewayv1.PaymentStatus) int {
	mu.Lock()
	defer mu.Unlock()
	n := 0
	for _, s := range outcome {
		if s == st {
			n++
		}
	}
	return n
}

// whWaitFor polls cond until it holds or d passes.
func whWaitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
