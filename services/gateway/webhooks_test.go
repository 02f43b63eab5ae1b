package gateway

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/paygate/paygate/client/webhook"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
	"github.com/paygate/paygate/internal/rpcerr"
	iwebhook "github.com/paygate/paygate/internal/webhook"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// webhookClient returns a WebhookService client of c's user.
func (e *env) webhookClient(c *clients) gatewayv1connect.WebhookServiceClient {
	return gatewayv1connect.NewWebhookServiceClient(e.cliHTTP, e.url, connect.WithInterceptors(bearer("Bearer "+c.token)))
}

// receiver is a webhook endpoint of a test: it records what it is sent, answering with the
// status that status returns (200 when nil).
type receiver struct {
	srv *httptest.Server

	mu       sync.Mutex
	requests []receivedHook
	status   func(n int) int
	inFlight int
	maxIn    int
}

// receivedHook is one request a receiver got.
type receivedHook struct {
	eventID, signature string
	body               []byte
	at                 time.Time
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.inFlight++
		r.maxIn = max(r.maxIn, r.inFlight)
		n := len(r.requests)
		r.requests = append(r.requests, receivedHook{eventID: req.Header.Get("Paygate-Event-Id"),
			signature: req.Header.Get(webhook.SignatureHeader), body: body, at: time.Now()})
		status := r.status
		r.mu.Unlock()
		code := 200
		if status != nil {
			code = status(n)
		}
		r.mu.Lock()
		r.inFlight--
		r.mu.Unlock()
		w.WriteHeader(code)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) got() []receivedHook {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]receivedHook(nil), r.requests...)
}

// fastWebhooks is the configuration of a test's webhooks: loopback endpoints over plain HTTP,
// short backoff.
func fastWebhooks(c *Config) {
	c.WebhookAllowPrivate, c.WebhookAllowHTTP = true, true
	c.WebhookBackoffMin, c.WebhookBackoffMax = 50*time.Millisecond, 200*time.Millisecond
	c.WebhookTimeout = time.Second
}

func TestWebhookEndpointsAPI(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{config: fastWebhooks})
	p := protocols[1]
	alice, bob := e.login(t, p, "alice", "alice-pass-123"), e.login(t, p, "bob", "bob-pass-456")
	wa, wb := e.webhookClient(alice), e.webhookClient(bob)
	ctx := context.Background()
	rcv := newReceiver(t)

	created, err := wb.CreateWebhookEndpoint(ctx, connect.NewRequest(&gatewayv1.CreateWebhookEndpointRequest{
		Url: rcv.srv.URL + "/hooks", EventTypes: []string{"payment.succeeded"}}))
	if err != nil {
		t.Fatal(err)
	}
	ep, secret := created.Msg.GetEndpoint(), created.Msg.GetSecret()
	if !strings.HasPrefix(ep.GetEndpointId(), "we_") || len(ep.GetEndpointId()) != 29 || !strings.HasPrefix(secret, "whsec_") ||
		ep.GetStatus() != gatewayv1.WebhookEndpointStatus_WEBHOOK_ENDPOINT_STATUS_ENABLED {
		t.Fatalf("created %v, secret %q", ep, secret)
	}

	// Another user's endpoint looks missing, for every procedure.
	id := ep.GetEndpointId()
	for name, call := range map[string]func() error{
		"delete": func() error {
			_, err := wa.DeleteWebhookEndpoint(ctx, connect.NewRequest(&gatewayv1.DeleteWebhookEndpointRequest{EndpointId: id}))
			return err
		},
		"enable": func() error {
			_, err := wa.EnableWebhookEndpoint(ctx, connect.NewRequest(&gatewayv1.EnableWebhookEndpointRequest{EndpointId: id}))
			return err
		},
		"disable": func() error {
			_, err := wa.DisableWebhookEndpoint(ctx, connect.NewRequest(&gatewayv1.DisableWebhookEndpointRequest{EndpointId: id}))
			return err
		},
		"rotate": func() error {
			_, err := wa.RotateWebhookSecret(ctx, connect.NewRequest(&gatewayv1.RotateWebhookSecretRequest{EndpointId: id}))
			return err
		},
		"list": func() error {
			_, err := wa.ListWebhookDeliveries(ctx, connect.NewRequest(&gatewayv1.ListWebhookDeliveriesRequest{EndpointId: id}))
			return err
		},
	} {
		if err := call(); connect.CodeOf(err) != connect.CodeNotFound || rpcerr.Reason(err) != reasonWebhookEndpointNotFound {
			t.Errorf("alice's %s of bob's endpoint: %v; want NOT_FOUND %s", name, err, reasonWebhookEndpointNotFound)
		}
	}
	if list, err := wa.ListWebhookEndpoints(ctx, connect.NewRequest(&gatewayv1.ListWebhookEndpointsRequest{})); err != nil || len(list.Msg.GetEndpoints()) != 0 {
		t.Fatalf("alice's endpoints: %v, %v; want none", list, err)
	}

	// alice pays bob twice (one succeeds, one fails): bob's endpoint gets the succeeded one.
	p1, p2 := newPaymentID(), newPaymentID()
	alice.pay(t, p1, "bank1-1001", "bank2-2002", 20)
	alice.pay(t, p2, "bank1-1001", "bank2-2002", 1e12)
	waitFor(t, 10*time.Second, "the delivery", func() bool { return len(rcv.got()) >= 1 })
	h := rcv.got()[0]
	if err := webhook.Verify(secret, h.signature, h.body, time.Minute); err != nil {
		t.Fatalf("signature: %v", err)
	}
	var ev gatewayv1.Event
	if err := protojson.Unmarshal(h.body, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.GetType() != "payment.succeeded" || ev.GetPayment().GetPaymentId() != p1 || ev.GetPayment().GetUsername() != "" || h.eventID != ev.GetEventId() {
		t.Fatalf("bob was sent %v (event id header %q); want payment.succeeded of %s without the payer's name", &ev, h.eventID, p1)
	}
	var raw map[string]any
	if err := json.Unmarshal(h.body, &raw); err != nil || raw["eventId"] == nil {
		t.Fatalf("body %s: want protojson with eventId", h.body)
	}

	ds, err := wb.ListWebhookDeliveries(ctx, connect.NewRequest(&gatewayv1.ListWebhookDeliveriesRequest{EndpointId: id}))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(ds.Msg.GetDeliveries()); n != 1 {
		t.Fatalf("%d deliveries; want 1: %v", n, ds.Msg)
	}
	d := ds.Msg.GetDeliveries()[0]
	waitFor(t, 5*time.Second, "the delivery's success", func() bool {
		ds, err := wb.ListWebhookDeliveries(ctx, connect.NewRequest(&gatewayv1.ListWebhookDeliveriesRequest{EndpointId: id}))
		if err != nil {
			t.Fatal(err)
		}
		d = ds.Msg.GetDeliveries()[0]
		return d.GetStatus() == gatewayv1.WebhookDeliveryStatus_WEBHOOK_DELIVERY_STATUS_SUCCEEDED
	})
	if len(d.GetAttempts()) != 1 || d.GetAttempts()[0].GetHttpStatus() != 200 || d.GetEventId() != ev.GetEventId() || d.GetPaymentId() != p1 {
		t.Fatalf("delivery %v", d)
	}

	// Redelivery: a manual attempt, answered with it; alice cannot redeliver bob's.
	if _, err := wa.RedeliverWebhook(ctx, connect.NewRequest(&gatewayv1.RedeliverWebhookRequest{DeliveryId: d.GetDeliveryId()})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("alice redelivers bob's delivery: %v; want NOT_FOUND", err)
	}
	rd, err := wb.RedeliverWebhook(ctx, connect.NewRequest(&gatewayv1.RedeliverWebhookRequest{DeliveryId: d.GetDeliveryId()}))
	if err != nil {
		t.Fatal(err)
	}
	if at := rd.Msg.GetDelivery().GetAttempts(); len(at) != 2 || !at[1].GetManual() || at[1].GetHttpStatus() != 200 {
		t.Fatalf("redelivered: %v", rd.Msg.GetDelivery())
	}
	if got := rcv.got(); len(got) != 2 || got[1].eventID != h.eventID {
		t.Fatalf("receiver got %d requests; want the event twice", len(got))
	}

	// Rotation with a grace period: both secrets sign; the old one alone verifies too.
	rot, err := wb.RotateWebhookSecret(ctx, connect.NewRequest(&gatewayv1.RotateWebhookSecretRequest{EndpointId: id, PreviousSecretTtl: durationpb.New(time.Hour)}))
	if err != nil {
		t.Fatal(err)
	}
	if rot.Msg.GetSecret() == secret || rot.Msg.GetEndpoint().GetPreviousSecretExpireTime() == nil {
		t.Fatalf("rotated: %v", rot.Msg)
	}
	if _, err := wb.RedeliverWebhook(ctx, connect.NewRequest(&gatewayv1.RedeliverWebhookRequest{DeliveryId: d.GetDeliveryId()})); err != nil {
		t.Fatal(err)
	}
	h3 := rcv.got()[2]
	for _, s := range []string{secret, rot.Msg.GetSecret()} {
		if err := webhook.Verify(s, h3.signature, h3.body, time.Minute); err != nil {
			t.Fatalf("after rotation, signature with %.10s...: %v", s, err)
		}
	}

	// Disabled: events are kept, and delivered once enabled.
	dis, err := wb.DisableWebhookEndpoint(ctx, connect.NewRequest(&gatewayv1.DisableWebhookEndpointRequest{EndpointId: id}))
	if err != nil || dis.Msg.GetEndpoint().GetDisabledReason() != disabledByUser {
		t.Fatalf("disable: %v, %v", dis, err)
	}
	if _, err := wb.RedeliverWebhook(ctx, connect.NewRequest(&gatewayv1.RedeliverWebhookRequest{DeliveryId: d.GetDeliveryId()})); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("redeliver to a disabled endpoint: %v; want FAILED_PRECONDITION", err)
	}
	p3 := newPaymentID()
	alice.pay(t, p3, "bank1-1001", "bank2-2002", 5)
	waitFor(t, 5*time.Second, "the delivery while disabled", func() bool {
		ds, err := wb.ListWebhookDeliveries(ctx, connect.NewRequest(&gatewayv1.ListWebhookDeliveriesRequest{EndpointId: id}))
		return err == nil && len(ds.Msg.GetDeliveries()) == 2
	})
	time.Sleep(300 * time.Millisecond)
	if n := len(rcv.got()); n != 3 {
		t.Fatalf("a disabled endpoint was sent something: %d requests", n)
	}
	if _, err := wb.EnableWebhookEndpoint(ctx, connect.NewRequest(&gatewayv1.EnableWebhookEndpointRequest{EndpointId: id})); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the delivery after enabling", func() bool { return len(rcv.got()) == 4 })

	// Refusals: bad URLs, private addresses without the flag (see TestWebhookSSRF), too many.
	for _, u := range []string{"ftp://example.com/", "https://user:pw@example.com/", "not a url", "https://example.com/#x"} {
		_, err := wa.CreateWebhookEndpoint(ctx, connect.NewRequest(&gatewayv1.CreateWebhookEndpointRequest{Url: u, EventTypes: []string{"*"}}))
		if connect.CodeOf(err) != connect.CodeInvalidArgument || rpcerr.Reason(err) != reasonInvalidWebhookURL {
			t.Errorf("create %q: %v; want INVALID_ARGUMENT %s", u, err, reasonInvalidWebhookURL)
		}
	}
	for i := range maxWebhookEndpoints {
		if _, err := wa.CreateWebhookEndpoint(ctx, connect.NewRequest(&gatewayv1.CreateWebhookEndpointRequest{
			Url: rcv.srv.URL + "/a", EventTypes: []string{"*"}})); err != nil {
			t.Fatalf("endpoint %d: %v", i, err)
		}
	}
	_, err = wa.CreateWebhookEndpoint(ctx, connect.NewRequest(&gatewayv1.CreateWebhookEndpointRequest{Url: rcv.srv.URL, EventTypes: []string{"*"}}))
	if connect.CodeOf(err) != connect.CodeResourceExhausted || rpcerr.Reason(err) != reasonTooManyWebhookEndpoints {
		t.Fatalf("endpoint %d: %v; want RESOURCE_EXHAUSTED", maxWebhookEndpoints+1, err)
	}
	if _, err := wb.DeleteWebhookEndpoint(ctx, connect.NewRequest(&gatewayv1.DeleteWebhookEndpointRequest{EndpointId: id})); err != nil {
		t.Fatal(err)
	}
	if _, err := wb.ListWebhookDeliveries(ctx, connect.NewRequest(&gatewayv1.ListWebhookDeliveriesRequest{EndpointId: id})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("deliveries of a deleted endpoint: %v", err)
	}
	e.audit(t, ctx)
}

// listDeliveries returns the deliveries of endpoint id, newest first.
func listDeliveries(t *testing.T, w gatewayv1connect.WebhookServiceClient, id string) []*gatewayv1.WebhookDelivery {
	t.Helper()
	ds, err := w.ListWebhookDeliveries(context.Background(), connect.NewRequest(&gatewayv1.ListWebhookDeliveriesRequest{EndpointId: id, PageSize: 100}))
	if err != nil {
		t.Fatal(err)
	}
	return ds.Msg.GetDeliveries()
}

// createEndpoint creates an endpoint of w's user at url for every event type.
func createEndpoint(t *testing.T, w gatewayv1connect.WebhookServiceClient, url string) (*gatewayv1.WebhookEndpoint, string) {
	t.Helper()
	resp, err := w.CreateWebhookEndpoint(context.Background(), connect.NewRequest(&gatewayv1.CreateWebhookEndpointRequest{Url: url, EventTypes: []string{"payment.succeeded"}}))
	if err != nil {
		t.Fatalf("create endpoint %s: %v", url, err)
	}
	return resp.Msg.GetEndpoint(), resp.Msg.GetSecret()
}

// TestWebhookSSRF: without --webhook-allow-private and --webhook-allow-http, endpoints at
// private, loopback and link-local literals are refused at registration, and a name that
// resolves to loopback is refused when connecting: the attempt records the refusal and the
// receiver gets nothing.
func TestWebhookSSRF(t *testing.T) {
	t.Parallel()
	rcv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(rcv.Close)
	var hits atomic.Int64
	rcv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) })
	roots := x509.NewCertPool()
	roots.AddCert(rcv.Certificate())
	e := newEnv(t, envOptions{config: func(c *Config) { c.WebhookRootCAs = roots }})
	p := protocols[0]
	alice, bob := e.login(t, p, "alice", "alice-pass-123"), e.login(t, p, "bob", "bob-pass-456")
	wb := e.webhookClient(bob)
	ctx := context.Background()
	for u, reason := range map[string]string{
		"http://127.0.0.1/hook":       reasonInvalidWebhookURL, // plain http
		"https://127.0.0.1/hook":      reasonWebhookAddressRefused,
		"https://10.0.0.1/hook":       reasonWebhookAddressRefused,
		"https://[::1]:8443/hook":     reasonWebhookAddressRefused,
		"https://169.254.169.254/":    reasonWebhookAddressRefused,
		"https://192.168.1.10/hook":   reasonWebhookAddressRefused,
		"https://[::ffff:10.0.0.1]/x": reasonWebhookAddressRefused,
	} {
		_, err := wb.CreateWebhookEndpoint(ctx, connect.NewRequest(&gatewayv1.CreateWebhookEndpointRequest{Url: u, EventTypes: []string{"*"}}))
		if connect.CodeOf(err) != connect.CodeInvalidArgument || rpcerr.Reason(err) != reason {
			t.Errorf("create %s: %v; want INVALID_ARGUMENT %s", u, err, reason)
		}
	}
	_, port, _ := net.SplitHostPort(rcv.Listener.Addr().String())
	ep, _ := createEndpoint(t, wb, "https://localhost:"+port+"/hook")
	alice.pay(t, newPaymentID(), "bank1-1001", "bank2-2002", 7)
	var d *gatewayv1.WebhookDelivery
	waitFor(t, 10*time.Second, "the refused attempt", func() bool {
		ds := listDeliveries(t, wb, ep.GetEndpointId())
		if len(ds) == 1 && len(ds[0].GetAttempts()) > 0 {
			d = ds[0]
			return true
		}
		return false
	})
	a := d.GetAttempts()[0]
	if a.GetHttpStatus() != 0 || !strings.Contains(a.GetError(), "address refused: loopback") || hits.Load() != 0 {
		t.Fatalf("attempt to localhost: %v (receiver hit %d times); want the address refused, nothing sent", a, hits.Load())
	}
	if d.GetStatus() != gatewayv1.WebhookDeliveryStatus_WEBHOOK_DELIVERY_STATUS_PENDING {
		t.Fatalf("delivery %v: want it pending (DNS answers change)", d)
	}
	e.audit(t, ctx)
}

// allowOnly is an address policy that allows one address.
func allowOnly(addr string) iwebhook.AddressPolicy {
	allowed := netip.MustParseAddr(addr)
	return func(a netip.Addr) error {
		if a == allowed {
			return nil
		}
		return &iwebhook.AddressError{Addr: a, Class: "loopback"}
	}
}

// TestWebhookRetriesAndRedirects: a receiver that answers after the timeout is retried with
// backoff (the waits between attempts grow), then succeeds once it answers in time; a receiver
// that redirects to an address the policy refuses has the redirect refused, and the target is
// sent nothing.
func TestWebhookRetriesAndRedirects(t *testing.T) {
	t.Parallel()
	// The slow receiver answers the first event it sees only after the gateway's timeout, five
	// times; the others at once.
	var slowMu sync.Mutex
	var slowFirst string
	var slowHits int
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		slowMu.Lock()
		if slowFirst == "" {
			slowFirst = r.Header.Get("Paygate-Event-Id")
		}
		if r.Header.Get("Paygate-Event-Id") == slowFirst {
			slowHits++
		}
		late := r.Header.Get("Paygate-Event-Id") == slowFirst && slowHits <= 5
		slowMu.Unlock()
		if late {
			select { // past the gateway's timeout
			case <-time.After(2 * time.Second):
			case <-r.Context().Done():
			}
		}
	}))
	t.Cleanup(slow.Close)
	var targetHits atomic.Int64
	target := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { targetHits.Add(1) }))
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("no 127.0.0.2: %v", err)
	}
	target.Listener = ln
	target.Start()
	t.Cleanup(target.Close)
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+"/internal", http.StatusTemporaryRedirect)
	}))
	t.Cleanup(redirector.Close)
	var goneHits atomic.Int64
	gone := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		goneHits.Add(1)
		w.WriteHeader(http.StatusGone)
	}))
	t.Cleanup(gone.Close)

	reg := prometheus.NewRegistry()
	e := newEnv(t, envOptions{config: func(c *Config) {
		c.Metrics = reg
		c.WebhookAllowHTTP = true
		c.testWebhookPolicy = allowOnly("127.0.0.1")
		c.WebhookTimeout = 300 * time.Millisecond
		c.WebhookBackoffMin, c.WebhookBackoffMax = 200*time.Millisecond, 2*time.Second
	}})
	p := protocols[1]
	alice, bob := e.login(t, p, "alice", "alice-pass-123"), e.login(t, p, "bob", "bob-pass-456")
	wb := e.webhookClient(bob)
	slowEP, _ := createEndpoint(t, wb, slow.URL+"/hook")
	redirEP, _ := createEndpoint(t, wb, redirector.URL+"/hook")
	goneEP, _ := createEndpoint(t, wb, gone.URL+"/hook")
	alice.pay(t, newPaymentID(), "bank1-1001", "bank2-2002", 9)
	alice.pay(t, newPaymentID(), "bank1-1001", "bank2-2002", 8)

	var d *gatewayv1.WebhookDelivery
	waitFor(t, 20*time.Second, "the slow receiver's delivery to succeed", func() bool {
		ds := listDeliveries(t, wb, slowEP.GetEndpointId())
		slowMu.Lock()
		first := slowFirst
		slowMu.Unlock()
		for _, x := range ds {
			if x.GetEventId() == first && x.GetStatus() == gatewayv1.WebhookDeliveryStatus_WEBHOOK_DELIVERY_STATUS_SUCCEEDED {
				d = x
				return len(ds) == 2
			}
		}
		return false
	})
	at := d.GetAttempts()
	if len(at) != 6 {
		t.Fatalf("%d attempts; want 5 timeouts and a success: %v", len(at), at)
	}
	for i, a := range at[:5] {
		if a.GetHttpStatus() != 0 || a.GetError() != "timeout" || a.GetManual() {
			t.Fatalf("attempt %d: %v; want a timeout", i, a)
		}
	}
	if at[5].GetHttpStatus() != 200 || at[5].GetError() != "" {
		t.Fatalf("last attempt: %v", at[5])
	}
	var gaps []time.Duration
	for i := 1; i < len(at); i++ {
		gaps = append(gaps, at[i].GetAttemptTime().AsTime().Sub(at[i-1].GetAttemptTime().AsTime()))
	}
	t.Logf("gaps between attempts: %v", gaps)
	// Waits of [100ms, 200ms), [200, 400), [400, 800), [800, 1600), [1s, 2s), after a 300ms timeout.
	if gaps[0] < 400*time.Millisecond || gaps[3] <= gaps[0] || gaps[4] <= gaps[1] || gaps[4] < 1300*time.Millisecond {
		t.Fatalf("gaps between attempts %v: want them growing with the backoff", gaps)
	}

	// 410 Gone: the delivery failed at once, the endpoint is disabled, and the second event is
	// kept for it (pending) and not sent.
	ds := listDeliveries(t, wb, goneEP.GetEndpointId())
	if len(ds) != 2 || ds[1].GetStatus() != gatewayv1.WebhookDeliveryStatus_WEBHOOK_DELIVERY_STATUS_FAILED ||
		len(ds[1].GetAttempts()) != 1 || ds[1].GetAttempts()[0].GetHttpStatus() != http.StatusGone ||
		ds[0].GetStatus() != gatewayv1.WebhookDeliveryStatus_WEBHOOK_DELIVERY_STATUS_PENDING || goneHits.Load() != 1 {
		t.Fatalf("after a 410: deliveries %v, %d requests; want the first failed, the second pending and unsent", ds, goneHits.Load())
	}
	eps, err := wb.ListWebhookEndpoints(context.Background(), connect.NewRequest(&gatewayv1.ListWebhookEndpointsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, ep := range eps.Msg.GetEndpoints() {
		disabled := ep.GetStatus() == gatewayv1.WebhookEndpointStatus_WEBHOOK_ENDPOINT_STATUS_DISABLED
		if (ep.GetEndpointId() == goneEP.GetEndpointId()) != disabled || (disabled && ep.GetDisabledReason() != disabledByFailing) {
			t.Errorf("endpoint %s (%s): %v %q", ep.GetEndpointId(), ep.GetUrl(), ep.GetStatus(), ep.GetDisabledReason())
		}
	}

	ds = listDeliveries(t, wb, redirEP.GetEndpointId())
	if len(ds) != 2 || len(ds[1].GetAttempts()) == 0 {
		t.Fatalf("redirecting endpoint's deliveries: %v", ds)
	}
	a := ds[1].GetAttempts()[0]
	if a.GetHttpStatus() != http.StatusTemporaryRedirect || !strings.Contains(a.GetError(), "redirect refused: address refused") || targetHits.Load() != 0 {
		t.Fatalf("redirect to a refused address: %v (target hit %d times); want it refused", a, targetHits.Load())
	}
	// The metrics: five timeouts retried and two successes at the slow endpoint, at least one
	// refused redirect retried; the redirecting endpoint's two deliveries and the disabled
	// one's second pending.
	m := e.gw.webhooks.metrics
	if got := testutil.ToFloat64(m.attempts[webhookOutcomeSucceeded]); got != 2 {
		t.Errorf("succeeded attempts %v; want 2", got)
	}
	if got := testutil.ToFloat64(m.attempts[webhookOutcomeRetry]); got < 6 {
		t.Errorf("retried attempts %v; want at least 6", got)
	}
	want := `
# HELP paygate_webhook_deliveries_pending Webhook deliveries not delivered yet (of every replica): counted in the store on each scrape (bounded by 2s).
# TYPE paygate_webhook_deliveries_pending gauge
paygate_webhook_deliveries_pending 3
# HELP paygate_webhook_endpoints_disabled Webhook endpoints disabled, by their users or for failing: counted in the store on each scrape.
# TYPE paygate_webhook_endpoints_disabled gauge
paygate_webhook_endpoints_disabled 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "paygate_webhook_deliveries_pending", "paygate_webhook_endpoints_disabled"); err != nil {
		t.Error(err)
	}
	e.audit(t, context.Background())
}

// TestWebhookDisabledForFailing: an endpoint that answers 500 to everything has each delivery
// retried for the retry period and then failed, and once it has failed 15 times in a row over
// a whole retry period it is disabled ("failing"): what is still pending stays pending and is
// not sent.
func TestWebhookDisabledForFailing(t *testing.T) {
	t.Parallel()
	var hits atomic.Int64
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.WriteHeader(http.StatusInternalServerError)
	}))
	t.Cleanup(rcv.Close)
	e := newEnv(t, envOptions{config: func(c *Config) {
		fastWebhooks(c)
		c.WebhookRetryFor = 500 * time.Millisecond
	}})
	p := protocols[0]
	alice, bob := e.login(t, p, "alice", "alice-pass-123"), e.login(t, p, "bob", "bob-pass-456")
	wb := e.webhookClient(bob)
	ep, _ := createEndpoint(t, wb, rcv.URL+"/hook")
	var disabled *gatewayv1.WebhookEndpoint
	for i := 0; disabled == nil; i++ {
		if i == 100 {
			t.Fatalf("endpoint not disabled after %d payments and %d requests", i, hits.Load())
		}
		alice.pay(t, newPaymentID(), "bank1-1001", "bank2-2002", 3)
		time.Sleep(100 * time.Millisecond)
		eps, err := wb.ListWebhookEndpoints(context.Background(), connect.NewRequest(&gatewayv1.ListWebhookEndpointsRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		if x := eps.Msg.GetEndpoints()[0]; x.GetStatus() == gatewayv1.WebhookEndpointStatus_WEBHOOK_ENDPOINT_STATUS_DISABLED {
			disabled = x
		}
	}
	if disabled.GetDisabledReason() != disabledByFailing {
		t.Fatalf("disabled: %v; want reason %q", disabled, disabledByFailing)
	}
	// Nothing more is sent; a payment after it is kept pending.
	alice.pay(t, newPaymentID(), "bank1-1001", "bank2-2002", 3)
	time.Sleep(300 * time.Millisecond) // let an attempt in flight end
	n := hits.Load()
	time.Sleep(500 * time.Millisecond)
	if hits.Load() != n {
		t.Fatalf("a disabled endpoint was sent %d more requests", hits.Load()-n)
	}
	var failed, pending, attempts int
	for _, d := range listDeliveries(t, wb, ep.GetEndpointId()) {
		attempts += len(d.GetAttempts())
		switch d.GetStatus() {
		case gatewayv1.WebhookDeliveryStatus_WEBHOOK_DELIVERY_STATUS_FAILED:
			failed++
		case gatewayv1.WebhookDeliveryStatus_WEBHOOK_DELIVERY_STATUS_PENDING:
			pending++
		}
	}
	if failed == 0 || pending == 0 || attempts < iwebhook.DisableAfterFailures {
		t.Fatalf("%d failed, %d pending deliveries, %d attempts; want some failed for good, the rest pending, at least %d attempts",
			failed, pending, attempts, iwebhook.DisableAfterFailures)
	}
	e.audit(t, context.Background())
}
