package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/paygate/paygate/client"
	"github.com/paygate/paygate/client/webhook"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/internal/cluster"
)

// hookReceiver is a webhook endpoint in the test: it verifies every request with each of its
// secrets (all must match, so that a rotation's two signatures are checked), records the
// events, and answers with status.
type hookReceiver struct {
	t      *testing.T
	srv    *httptest.Server
	status atomic.Int32

	mu       sync.Mutex
	secrets  []string
	got      []hookRequest
	rejected []string
}

// hookRequest is one request a hookReceiver verified.
type hookRequest struct {
	eventID, eventType, paymentID string
	// signatures is how many v1 signatures the header carried.
	signatures int
	// answered is the status it was answered with.
	answered int
}

func newHookReceiver(t *testing.T) *hookReceiver {
	h := &hookReceiver{t: t}
	h.status.Store(http.StatusOK)
	h.srv = httptest.NewServer(h)
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "read", http.StatusBadRequest)
		return
	}
	header := r.Header.Get(webhook.SignatureHeader)
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.secrets) == 0 {
		err = errors.New("no secret yet")
	}
	for _, s := range h.secrets {
		if err == nil {
			err = webhook.Verify(s, header, body, 0)
		}
	}
	if err != nil {
		h.rejected = append(h.rejected, err.Error())
		http.Error(w, "bad signature", http.StatusBadRequest)
		return
	}
	var ev gatewayv1.Event
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(body, &ev); err != nil {
		h.rejected = append(h.rejected, "not an event: "+err.Error())
		http.Error(w, "bad event", http.StatusBadRequest)
		return
	}
	if got := r.Header.Get("Paygate-Event-Id"); got != ev.GetEventId() {
		h.rejected = append(h.rejected, fmt.Sprintf("Paygate-Event-Id %q, body's %q", got, ev.GetEventId()))
	}
	status := int(h.status.Load())
	h.got = append(h.got, hookRequest{eventID: ev.GetEventId(), eventType: ev.GetType(), paymentID: ev.GetPayment().GetPaymentId(),
		signatures: strings.Count(header, "v1="), answered: status})
	w.WriteHeader(status)
}

func (h *hookReceiver) setSecrets(s ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.secrets = s
}

// requests returns the verified requests about payment id.
func (h *hookReceiver) requests(paymentID string) []hookRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []hookRequest
	for _, r := range h.got {
		if r.paymentID == paymentID {
			out = append(out, r)
		}
	}
	return out
}

// waitFor waits until the receiver verified a request about paymentID that ok accepts.
func (h *hookReceiver) waitFor(paymentID string, within time.Duration, ok func(hookRequest) bool) hookRequest {
	h.t.Helper()
	deadline := time.Now().Add(within)
	for {
		for _, r := range h.requests(paymentID) {
			if ok(r) {
				return r
			}
		}
		if time.Now().After(deadline) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.t.Fatalf("no matching request about %s within %s; got %+v, rejected %q", paymentID, within, h.got, h.rejected)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (h *hookReceiver) checkNoRejections() {
	h.t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.rejected) > 0 {
		h.t.Errorf("the receiver refused %d requests: %q", len(h.rejected), h.rejected)
	}
}

// payOne makes a payment of amount cents from alice's bank1-1001 to bob's bank2-2001 with the
// cluster's clients and checks that it succeeded; it returns its id.
func payOne(t *testing.T, u *cluster.User, amount int64) string {
	t.Helper()
	id := newID()
	resp, err := pay(ctxT(t, 30*time.Second), u, id, "bank1-1001", "bank2-2001", amount)
	if err != nil {
		t.Fatalf("pay: %v", err)
	}
	if resp.GetPayment().GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
		t.Fatalf("payment %s: %v, want succeeded", id, resp.GetPayment().GetStatus())
	}
	return id
}

type createdJSON struct {
	Endpoint webhookEndpointJSON `json:"endpoint"`
	Secret   string              `json:"secret"`
}

type deliveriesJSON struct {
	Deliveries    []webhookDeliveryJSON `json:"deliveries"`
	NextPageToken string                `json:"next_page_token"`
}

// deliveryOf returns the delivery of the event of type typ about paymentID in ds.
func deliveryOf(ds []webhookDeliveryJSON, paymentID, typ string) (webhookDeliveryJSON, bool) {
	for _, d := range ds {
		if d.PaymentID == paymentID && d.EventType == typ {
			return d, true
		}
	}
	return webhookDeliveryJSON{}, false
}

// TestWebhooksCLI runs the webhook commands and the Go client's webhook methods against a real
// cluster (banks and gateway as processes). First with a gateway that refuses private and
// plain-http URLs, as in production: paygate listen and webhooks create say why, with the
// reason and the flags, and exit 1. Then with a gateway run as 'paygate dev' runs it (loopback
// http allowed, short backoff): create (secret printed once, event filter honoured), list,
// deliveries while the endpoint fails and after it recovers, redeliver, rotate-secret with the
// previous secret kept (requests carry both signatures), disable and enable (events kept and
// delivered), delete; paygate listen registering itself, printing a real payment's events
// and deleting its endpoint on SIGINT. It ends with the ledger audit.
func TestWebhooksCLI(t *testing.T) {
	t.Parallel()
	c := cluster.New(t, cluster.Options{})
	before := audit(t, c)
	alice := newCLIUser(t, c)
	alice.login("alice")

	t.Run("refused by a strict gateway", func(t *testing.T) {
		out, errOut, code := alice.run("listen", "--for", "20s")
		if code != exitFailure {
			t.Fatalf("listen: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, exitFailure, out, errOut)
		}
		for _, want := range []string{"the gateway refused the endpoint http://127.0.0.1:", "(invalid_webhook_url)",
			"--webhook-allow-private --webhook-allow-http", "paygate listen --no-register"} {
			if !strings.Contains(errOut, want) {
				t.Errorf("listen's error does not say %q:\n%s", want, errOut)
			}
		}
		_, errOut, code = alice.run("webhooks", "create", "--url", "https://127.0.0.1:9/hook")
		if code != exitFailure || !strings.Contains(errOut, "(webhook_address_refused)") || !strings.Contains(errOut, "--webhook-allow-private") ||
			!strings.Contains(errOut, "invalid_argument") {
			t.Errorf("create at a loopback address: exit %d, stderr:\n%s\nwant exit 1 naming invalid_argument, the reason and the flag", code, errOut)
		}
		_, errOut, code = alice.run("webhooks", "create", "--url", "http://shop.example/hook")
		if code != exitFailure || !strings.Contains(errOut, "(invalid_webhook_url)") || !strings.Contains(errOut, "--webhook-allow-http") {
			t.Errorf("create with http: exit %d, stderr:\n%s\nwant exit 1 naming the reason and the flag", code, errOut)
		}
		_, errOut, code = alice.run("webhooks", "create")
		if code != exitUsage || !strings.Contains(errOut, "--url is required") {
			t.Errorf("create without --url: exit %d, stderr %q; want exit 2", code, errOut)
		}
		_, errOut, code = alice.run("webhooks", "create", "--url", "https://shop.example/hook", "--events", "payment.lost")
		if code != exitUsage || !strings.Contains(errOut, `unknown event type "payment.lost"`) {
			t.Errorf("create with an unknown event type: exit %d, stderr %q; want exit 2", code, errOut)
		}
		if out := alice.must(0, "webhooks", "list"); !strings.Contains(out, "no webhook endpoints") {
			t.Errorf("list after refusals:\n%s\nwant no endpoints", out)
		}
	})

	// The gateway as 'paygate dev' runs it, and retrying within a second.
	c.Stop("gateway")
	c.StartGateway("PAYGATE_WEBHOOK_ALLOW_PRIVATE=true", "PAYGATE_WEBHOOK_ALLOW_HTTP=true",
		"PAYGATE_WEBHOOK_BACKOFF_MIN=200ms", "PAYGATE_WEBHOOK_BACKOFF_MAX=500ms")
	u := login(t, c, "alice")

	t.Run("endpoints and deliveries", func(t *testing.T) {
		rcv := newHookReceiver(t)
		rcv.status.Store(http.StatusServiceUnavailable) // failing until told otherwise
		var created createdJSON
		lastJSON(t, alice.must(0, "webhooks", "create", "--url", rcv.srv.URL+"/hook", "--events", "payment.succeeded", "--json"), &created)
		ep := created.Endpoint
		if !strings.HasPrefix(created.Secret, "whsec_") || !strings.HasPrefix(ep.EndpointID, "we_") || ep.Status != "enabled" ||
			strings.Join(ep.EventTypes, ",") != "payment.succeeded" || ep.URL != rcv.srv.URL+"/hook" {
			t.Fatalf("create --json: %+v", created)
		}
		rcv.setSecrets(created.Secret)

		// A second endpoint, for all events, in text: the secret once, with the warning.
		other := newHookReceiver(t)
		text := alice.must(0, "webhooks", "create", "--url", other.srv.URL+"/all")
		m := regexp.MustCompile(`(?m)^signing secret\s+(whsec_\S+)$`).FindStringSubmatch(text)
		otherID := regexp.MustCompile(`(?m)^endpoint\s+(we_\S+)$`).FindStringSubmatch(text)
		if m == nil || otherID == nil || !strings.Contains(text, "shown this once") {
			t.Fatalf("create's text output has no endpoint, secret or warning:\n%s", text)
		}
		other.setSecrets(m[1])

		list := alice.must(0, "webhooks", "list")
		checkAligned(t, list, 3)
		if !strings.Contains(list, ep.EndpointID) || !strings.Contains(list, "payment.succeeded") || strings.Count(list, "enabled") != 2 {
			t.Errorf("list:\n%s\nwant both endpoints, enabled", list)
		}

		// A payment while the endpoint fails: the delivery is pending, with 503 attempts.
		p1 := payOne(t, u, 100)
		rcv.waitFor(p1, 15*time.Second, func(r hookRequest) bool { return r.answered == http.StatusServiceUnavailable })
		var ds deliveriesJSON
		deadline := time.Now().Add(15 * time.Second)
		for {
			lastJSON(t, alice.must(0, "webhooks", "deliveries", ep.EndpointID, "--status", "pending", "--json"), &ds)
			if d, ok := deliveryOf(ds.Deliveries, p1, "payment.succeeded"); ok && len(d.Attempts) >= 1 && d.Attempts[len(d.Attempts)-1].HTTPStatus == 503 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no pending delivery of %s with a 503 attempt: %+v", p1, ds)
			}
			time.Sleep(100 * time.Millisecond)
		}
		table := alice.must(0, "webhooks", "deliveries", ep.EndpointID)
		checkAligned(t, table, 2)
		if !strings.Contains(table, "DELIVERY") || !strings.Contains(table, p1) || !strings.Contains(table, "503") {
			t.Errorf("deliveries table:\n%s\nwant the pending delivery with its 503", table)
		}

		// The endpoint recovers: the delivery succeeds on a later attempt.
		rcv.status.Store(http.StatusOK)
		rcv.waitFor(p1, 15*time.Second, func(r hookRequest) bool { return r.answered == http.StatusOK })
		var d1 webhookDeliveryJSON
		deadline = time.Now().Add(15 * time.Second)
		for {
			lastJSON(t, alice.must(0, "webhooks", "deliveries", ep.EndpointID, "--json"), &ds)
			var ok bool
			if d1, ok = deliveryOf(ds.Deliveries, p1, "payment.succeeded"); ok && d1.Status == "succeeded" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("delivery of %s did not succeed: %+v", p1, ds)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if len(d1.Attempts) < 2 || d1.Attempts[len(d1.Attempts)-1].HTTPStatus != 200 {
			t.Errorf("succeeded delivery's attempts: %+v, want 503s then a 200", d1.Attempts)
		}
		// The filter: the endpoint of payment.succeeded got no payment.created; the other got both.
		for _, r := range rcv.requests(p1) {
			if r.eventType != "payment.succeeded" {
				t.Errorf("the payment.succeeded endpoint got %s", r.eventType)
			}
		}
		other.waitFor(p1, 15*time.Second, func(r hookRequest) bool { return r.eventType == "payment.created" })
		other.waitFor(p1, 15*time.Second, func(r hookRequest) bool { return r.eventType == "payment.succeeded" })

		// Redeliver: one more attempt now, manual, answered 200.
		n := len(rcv.requests(p1))
		out := alice.must(0, "webhooks", "redeliver", d1.DeliveryID)
		if !strings.Contains(out, "redelivered "+d1.DeliveryID) || !strings.Contains(out, "200 in") {
			t.Errorf("redeliver:\n%s", out)
		}
		if got := len(rcv.requests(p1)); got != n+1 {
			t.Errorf("the receiver got %d requests about %s after redeliver, want %d", got, p1, n+1)
		}
		lastJSON(t, alice.must(0, "webhooks", "deliveries", ep.EndpointID, "--json"), &ds)
		if d, _ := deliveryOf(ds.Deliveries, p1, "payment.succeeded"); len(d.Attempts) != len(d1.Attempts)+1 || !d.Attempts[len(d.Attempts)-1].Manual {
			t.Errorf("after redeliver, attempts %+v; want one more, manual", d.Attempts)
		}
		// A redelivery the endpoint refuses exits 1.
		rcv.status.Store(http.StatusInternalServerError)
		if out, errOut, code := alice.run("webhooks", "redeliver", d1.DeliveryID); code != exitFailure || !strings.Contains(out, "500") || !strings.Contains(errOut, "did not accept it") {
			t.Errorf("redeliver to a failing endpoint: exit %d, stdout %q, stderr %q; want exit 1 showing the 500", code, out, errOut)
		}
		rcv.status.Store(http.StatusOK)

		// Rotate, keeping the old secret for an hour: requests carry both signatures, and
		// each verifies.
		var rotated createdJSON
		lastJSON(t, alice.must(0, "webhooks", "rotate-secret", "--keep-previous", "1h", ep.EndpointID, "--json"), &rotated)
		if !strings.HasPrefix(rotated.Secret, "whsec_") || rotated.Secret == created.Secret || rotated.Endpoint.PreviousSecretExpireTime == nil {
			t.Fatalf("rotate-secret --json: %+v", rotated)
		}
		if until := time.Until(*rotated.Endpoint.PreviousSecretExpireTime); until < 55*time.Minute || until > 65*time.Minute {
			t.Errorf("previous secret expires in %s, want about 1h", until)
		}
		rcv.setSecrets(created.Secret, rotated.Secret)
		p2 := payOne(t, u, 200)
		if r := rcv.waitFor(p2, 15*time.Second, func(r hookRequest) bool { return r.answered == 200 }); r.signatures != 2 {
			t.Errorf("after rotate with --keep-previous: %d signatures, want 2", r.signatures)
		}
		if list := alice.must(0, "webhooks", "list"); !regexp.MustCompile(ep.EndpointID + `.*\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s*$`).MatchString(strings.Split(list, "\n")[1]) {
			t.Errorf("list does not show until when the previous secret signs:\n%s", list)
		}
		// Rotate again without keeping: the old ones stop at once.
		text = alice.must(0, "webhooks", "rotate-secret", ep.EndpointID)
		m = regexp.MustCompile(`(?m)^signing secret\s+(whsec_\S+)$`).FindStringSubmatch(text)
		if m == nil || !strings.Contains(text, "no longer signs") || !strings.Contains(text, "shown this once") {
			t.Fatalf("rotate-secret text:\n%s", text)
		}
		rcv.setSecrets(m[1])

		// Disabled, events are kept for it; enabled, they are delivered.
		if out := alice.must(0, "webhooks", "disable", ep.EndpointID); !strings.Contains(out, "disabled "+ep.EndpointID) {
			t.Errorf("disable: %q", out)
		}
		if list := alice.must(0, "webhooks", "list"); !strings.Contains(list, "disabled (disabled_by_user)") {
			t.Errorf("list after disable:\n%s", list)
		}
		p3 := payOne(t, u, 300)
		other.waitFor(p3, 15*time.Second, func(r hookRequest) bool { return r.eventType == "payment.succeeded" })
		time.Sleep(1500 * time.Millisecond) // more than the delivery loop's poll and the backoff
		if got := rcv.requests(p3); len(got) != 0 {
			t.Errorf("a disabled endpoint got %+v", got)
		}
		alice.must(0, "webhooks", "enable", ep.EndpointID)
		if r := rcv.waitFor(p3, 15*time.Second, func(r hookRequest) bool { return r.answered == 200 }); r.signatures != 1 {
			t.Errorf("after rotate without --keep-previous: %d signatures, want 1", r.signatures)
		}

		// Delete: gone from the list; deleting again is refused.
		if out := alice.must(0, "webhooks", "delete", ep.EndpointID); !strings.Contains(out, "deleted "+ep.EndpointID) {
			t.Errorf("delete: %q", out)
		}
		if list := alice.must(0, "webhooks", "list"); strings.Contains(list, ep.EndpointID) {
			t.Errorf("list after delete still has %s:\n%s", ep.EndpointID, list)
		}
		if _, errOut, code := alice.run("webhooks", "delete", ep.EndpointID); code != exitFailure || !strings.Contains(errOut, "not_found") {
			t.Errorf("delete again: exit %d, stderr %q; want exit 1, not_found", code, errOut)
		}
		rcv.checkNoRejections()
		other.checkNoRejections()
		// Another user sees none of alice's endpoints.
		bob := newCLIUser(t, c)
		bob.login("bob")
		if list := bob.must(0, "webhooks", "list"); !strings.Contains(list, "no webhook endpoints") {
			t.Errorf("bob's list:\n%s", list)
		}
		for _, args := range [][]string{{"deliveries", otherID[1]}, {"disable", otherID[1]}, {"delete", otherID[1]}} {
			if _, errOut, code := bob.run(append([]string{"webhooks"}, args...)...); code != exitFailure || !strings.Contains(errOut, "not_found") {
				t.Errorf("bob: webhooks %v of alice's endpoint: exit %d, stderr %q; want exit 1, not_found", args, code, errOut)
			}
		}
	})

	t.Run("go client", func(t *testing.T) {
		cl := c.NewClient()
		ctx := ctxT(t, time.Minute)
		if _, _, err := cl.CreateWebhookEndpoint(ctx, "https://shop.example/hook"); !errors.Is(err, client.ErrNotLoggedIn) {
			t.Fatalf("CreateWebhookEndpoint before Login: %v, want ErrNotLoggedIn", err)
		}
		if _, err := cl.Login(ctx, "alice", passwords["alice"]); err != nil {
			t.Fatal(err)
		}
		ep, secret, err := cl.CreateWebhookEndpoint(ctx, "https://shop.example/hook")
		if err != nil {
			t.Fatal(err)
		}
		if got := ep.GetEventTypes(); len(got) != 1 || got[0] != client.AllEventTypes || !strings.HasPrefix(secret, "whsec_") {
			t.Errorf("CreateWebhookEndpoint without types: %v, secret %q; want [*] and a secret", got, secret)
		}
		_, _, err = cl.CreateWebhookEndpoint(ctx, "ftp://shop.example/hook")
		if connect.CodeOf(err) != connect.CodeInvalidArgument || client.Reason(err) != client.ReasonInvalidWebhookURL {
			t.Errorf("CreateWebhookEndpoint(ftp): %v (reason %q), want InvalidArgument %s", err, client.Reason(err), client.ReasonInvalidWebhookURL)
		}
		eps, err := cl.ListWebhookEndpoints(ctx)
		if err != nil || len(eps) == 0 || eps[len(eps)-1].GetEndpointId() != ep.GetEndpointId() {
			t.Fatalf("ListWebhookEndpoints: %v, %v; want the new endpoint last (oldest first)", eps, err)
		}
		if _, err := cl.DisableWebhookEndpoint(ctx, ep.GetEndpointId()); err != nil {
			t.Fatal(err)
		}
		got, err := cl.EnableWebhookEndpoint(ctx, ep.GetEndpointId())
		if err != nil || got.GetStatus() != gatewayv1.WebhookEndpointStatus_WEBHOOK_ENDPOINT_STATUS_ENABLED {
			t.Fatalf("EnableWebhookEndpoint: %v, %v", got, err)
		}
		if _, _, err := cl.RotateWebhookSecret(ctx, ep.GetEndpointId(), 25*time.Hour); connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("RotateWebhookSecret(25h): %v, want InvalidArgument", err)
		}
		n := 0
		for _, err := range cl.AllWebhookDeliveries(ctx, ep.GetEndpointId(), client.WebhookDeliveryQuery{PageSize: 1}) {
			if err != nil {
				t.Fatal(err)
			}
			n++
		}
		if err := cl.DeleteWebhookEndpoint(ctx, ep.GetEndpointId()); err != nil {
			t.Fatal(err)
		}
		if _, err := cl.ListWebhookDeliveries(ctx, ep.GetEndpointId(), client.WebhookDeliveryQuery{}); connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("ListWebhookDeliveries of a deleted endpoint: %v, want NotFound", err)
		}
		if _, err := cl.RedeliverWebhook(ctx, "wd_nonexistent"); connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("RedeliverWebhook(wd_nonexistent): %v, want NotFound", err)
		}
	})

	t.Run("listen", func(t *testing.T) {
		p := startListen(t, c.Bin, alice.env())
		m := regexp.MustCompile(`endpoint (we_\S+) \(deleted at exit`).FindStringSubmatch(p.err.String())
		if m == nil {
			t.Fatalf("listen does not name its endpoint:\n%s", p.err)
		}
		id := m[1]
		if list := alice.must(0, "webhooks", "list"); !strings.Contains(list, id) || !strings.Contains(list, p.url) {
			t.Errorf("list while listening:\n%s\nwant %s at %s", list, id, p.url)
		}
		pid := payOne(t, u, 150)
		p.waitOutput(pid+"  succeeded  1.50 USD", false, 20*time.Second)
		for _, typ := range []string{"payment.created", "payment.succeeded"} {
			if !regexp.MustCompile(`(?m)^\d\d:\d\d:\d\d  evt_\d+  ` + regexp.QuoteMeta(typ) + `\s+` + pid + `  `).MatchString(p.out.String()) {
				t.Errorf("listen did not print the %s event of %s:\n%s", typ, pid, p.out)
			}
		}
		if code := p.interrupt(); code != 0 {
			t.Errorf("listen: exit %d after SIGINT, want 0\nstderr:\n%s", code, p.err)
		}
		if !strings.Contains(p.err.String(), "deleted endpoint "+id) {
			t.Errorf("listen did not say it deleted %s:\n%s", id, p.err)
		}
		if list := alice.must(0, "webhooks", "list"); strings.Contains(list, id) {
			t.Errorf("the temporary endpoint %s is left after SIGINT:\n%s", id, list)
		}
		if strings.Contains(p.err.String(), "rejected") {
			t.Errorf("listen rejected requests of the gateway:\n%s", p.err)
		}

		// --print-secret and --forward-to: the application gets each event with the
		// gateway's signature, verifies it with the printed secret, and its answer is the
		// gateway's: refused once, the event comes again.
		app := newHookReceiver(t)
		app.status.Store(http.StatusServiceUnavailable)
		p = startListen(t, c.Bin, alice.env(), "--events", "payment.succeeded", "--print-secret", "--forward-to", app.srv.URL+"/app")
		m = regexp.MustCompile(`signing secret of (we_\S+): (whsec_\S+)`).FindStringSubmatch(p.err.String())
		if m == nil {
			t.Fatalf("listen --print-secret printed no secret:\n%s", p.err)
		}
		app.setSecrets(m[2])
		pid = payOne(t, u, 175)
		app.waitFor(pid, 20*time.Second, func(r hookRequest) bool { return r.answered == http.StatusServiceUnavailable })
		app.status.Store(http.StatusOK)
		app.waitFor(pid, 20*time.Second, func(r hookRequest) bool { return r.answered == http.StatusOK })
		p.waitOutput(pid+"  succeeded  1.75 USD  -> 503", false, 10*time.Second)
		p.waitOutput(pid+"  succeeded  1.75 USD  -> 200  (again)", false, 10*time.Second)
		for _, r := range app.requests(pid) {
			if r.eventType != "payment.succeeded" {
				t.Errorf("listen --events payment.succeeded forwarded a %s event", r.eventType)
			}
		}
		app.checkNoRejections()
		if code := p.interrupt(); code != 0 || !strings.Contains(p.err.String(), "deleted endpoint "+m[1]) {
			t.Errorf("listen --forward-to: exit %d after SIGINT, want 0 and its endpoint deleted:\n%s", code, p.err)
		}
	})

	checkSettled(t, c, before, 20*time.Second)
}

// TestWebhooksUsage: the webhook commands' usage errors say what is wrong and exit 2, before
// anything is sent.
func TestWebhooksUsage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"webhooks", "delete"}, "want ENDPOINT_ID, got 0 argument(s)"},
		{[]string{"webhooks", "enable", "a", "b"}, "want ENDPOINT_ID, got 2 argument(s)"},
		{[]string{"webhooks", "deliveries", "we_x", "--status", "lost"}, `--status "lost": want pending, succeeded or failed`},
		{[]string{"webhooks", "deliveries", "we_x", "--limit", "101"}, "--limit 101: want 1 to 100"},
		{[]string{"webhooks", "rotate-secret", "--keep-previous", "25h", "we_x"}, "--keep-previous 25h0m0s: want 0 to 24h"},
		{[]string{"webhooks", "create", "--url", "https://x.example", "--events", ""}, "--events: give event types"},
		{[]string{"webhooks", "list", "extra"}, "unexpected arguments: extra"},
	} {
		code, _, errOut := runCmd(t, tc.args...)
		if code != exitUsage || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d saying %q", tc.args, code, errOut, exitUsage, tc.want)
		}
	}
}
