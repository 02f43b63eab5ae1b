package webhook

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/paygate/paygate/client/webhook"
)

const (
	testSecret    = "whsec_test-secret-1"
	testOldSecret = "whsec_test-secret-0"
)

var testEvent = []byte(`{"id":"evt_1","type":"payment.succeeded","payment_id":"p-1","amount":2500}`)

// allowOnly is a test policy: it allows exactly the given addresses, and applies DefaultPolicy
// to every other (which refuses all of loopback, where the tests' servers are).
func allowOnly(addrs ...string) AddressPolicy {
	return func(a netip.Addr) error {
		for _, s := range addrs {
			if a == netip.MustParseAddr(s) {
				return nil
			}
		}
		return DefaultPolicy(a)
	}
}

// server is a test endpoint that counts its requests.
type server struct {
	*httptest.Server
	hits atomic.Int32
}

// newServer starts an endpoint on ip (127.0.0.1 if ""), with TLS or not, that counts requests
// and then calls h. It stops when the test ends.
func newServer(t *testing.T, ip string, useTLS bool, h http.HandlerFunc) *server {
	t.Helper()
	if ip == "" {
		ip = "127.0.0.1"
	}
	s := &server{}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		h(w, r)
	}))
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("listen on %s: %v", ip, err)
	}
	s.Listener.Close()
	s.Listener = l
	s.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshakes that tests fail on purpose
	if useTLS {
		s.StartTLS()
	} else {
		s.Start()
	}
	t.Cleanup(s.Close)
	return s
}

// roots returns a pool with the TLS test servers' certificate.
func (s *server) roots() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(s.Certificate())
	return pool
}

// request returns a delivery of testEvent to url.
func request(url string) Request {
	return Request{URL: url, Body: testEvent, Secrets: []string{testSecret}, EventID: "evt_1", EventType: "payment.succeeded"}
}

// deliver calls Deliver with a context the test bounds.
func deliver(t *testing.T, c *http.Client, r Request) Attempt {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return Deliver(ctx, c, r)
}

// wantFailure fails the test unless a failed with a message and retryability as given.
func wantFailure(t *testing.T, a Attempt, msg string, retryable bool) {
	t.Helper()
	if a.Success || a.Err == nil {
		t.Fatalf("attempt = %+v, want a failure", a)
	}
	if a.Err.Error() != msg {
		t.Errorf("error = %q, want %q", a.Err, msg)
	}
	if a.Retryable != retryable {
		t.Errorf("retryable = %v, want %v (error %q)", a.Retryable, retryable, a.Err)
	}
}

func TestDeliverSigned(t *testing.T) {
	t.Parallel()
	type received struct {
		header http.Header
		body   []byte
		method string
	}
	got := make(chan received, 1)
	srv := newServer(t, "", true, func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("read the body: %v", err)
		}
		got <- received{r.Header.Clone(), body, r.Method}
		w.WriteHeader(http.StatusNoContent)
	})
	c := NewClient(Options{Policy: allowOnly("127.0.0.1"), RootCAs: srv.roots()})
	req := request(srv.URL + "/hook")
	req.Secrets = []string{testOldSecret, testSecret}
	req.UserAgent = "paygate-webhooks/v1.2.3"
	a := deliver(t, c, req)
	if !a.Success || a.Err != nil || a.StatusCode != http.StatusNoContent || a.Retryable || a.Latency <= 0 {
		t.Fatalf("attempt = %+v, want a success", a)
	}
	r := <-got
	if r.method != http.MethodPost || string(r.body) != string(testEvent) {
		t.Fatalf("received %s %q", r.method, r.body)
	}
	for _, secret := range []string{testOldSecret, testSecret} {
		if err := webhook.Verify(secret, r.header.Get(webhook.SignatureHeader), r.body, 0); err != nil {
			t.Errorf("Verify with %s: %v", secret, err)
		}
	}
	if err := webhook.Verify("whsec_another", r.header.Get(webhook.SignatureHeader), r.body, 0); !errors.Is(err, webhook.ErrSignature) {
		t.Errorf("Verify with another secret = %v", err)
	}
	for name, want := range map[string]string{
		"Content-Type":  "application/json",
		"User-Agent":    "paygate-webhooks/v1.2.3",
		EventIDHeader:   "evt_1",
		EventTypeHeader: "payment.succeeded",
	} {
		if v := r.header.Get(name); v != want {
			t.Errorf("%s = %q, want %q", name, v, want)
		}
	}

	// The signature's timestamp is Request.Now, and the default User-Agent names paygate.
	req = request(srv.URL)
	req.Now = time.Now().Add(-time.Hour)
	if a := deliver(t, c, req); !a.Success {
		t.Fatalf("attempt = %+v", a)
	}
	r = <-got
	if err := webhook.Verify(testSecret, r.header.Get(webhook.SignatureHeader), r.body, 0); !errors.Is(err, webhook.ErrTimestamp) {
		t.Errorf("Verify of a request signed an hour ago = %v, want ErrTimestamp", err)
	}
	if ua := r.header.Get("User-Agent"); !strings.HasPrefix(ua, "paygate-webhooks/") {
		t.Errorf("User-Agent = %q", ua)
	}
}

// HTTP/2 over TLS is negotiated when the endpoint offers it, with the same guards.
func TestDeliverHTTP2(t *testing.T) {
	t.Parallel()
	protos := make(chan int, 2)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if webhook.Verify(testSecret, r.Header.Get(webhook.SignatureHeader), body, 0) != nil {
			http.Error(w, "bad signature", http.StatusBadRequest)
		}
		protos <- r.ProtoMajor
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	c := NewClient(Options{Policy: allowOnly("127.0.0.1"), RootCAs: pool})
	if a := deliver(t, c, request(srv.URL)); !a.Success {
		t.Fatalf("attempt = %+v", a)
	}
	if p := <-protos; p != 2 {
		t.Fatalf("the request came over HTTP/%d, want HTTP/2", p)
	}
	refused := NewClient(Options{RootCAs: pool}) // DefaultPolicy
	if a := deliver(t, refused, request(srv.URL)); a.Success || a.Err.Error() != "address refused: loopback" {
		t.Fatalf("with DefaultPolicy: attempt = %+v", a)
	}
}

func TestDeliverStatus(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		status         int
		success, retry bool
		gone           bool
		msg            string
	}{
		{200, true, false, false, ""},
		{202, true, false, false, ""},
		{299, true, false, false, ""},
		{304, false, true, false, "HTTP 304"},
		{400, false, true, false, "HTTP 400"},
		{404, false, true, false, "HTTP 404"},
		{410, false, false, true, "410 Gone: the endpoint says it no longer exists"},
		{500, false, true, false, "HTTP 500"},
		{503, false, true, false, "HTTP 503"},
	} {
		t.Run(fmt.Sprint(tt.status), func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, "", true, func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.status)
				fmt.Fprintf(w, "answer %d", tt.status)
			})
			c := NewClient(Options{Policy: allowOnly("127.0.0.1"), RootCAs: srv.roots()})
			a := deliver(t, c, request(srv.URL))
			if a.StatusCode != tt.status || a.Success != tt.success || a.Retryable != tt.retry || a.Gone != tt.gone {
				t.Fatalf("attempt = %+v", a)
			}
			if tt.success != (a.Err == nil) || (a.Err != nil && a.Err.Error() != tt.msg) {
				t.Fatalf("error = %v, want %q", a.Err, tt.msg)
			}
			if want := fmt.Sprintf("answer %d", tt.status); tt.status != 304 && a.Response != want {
				t.Errorf("response = %q, want %q", a.Response, want)
			}
		})
	}
}

func TestDeliverTimeout(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := newServer(t, "", true, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // then the server notices when the client goes away
		select {                    // until the client gives up, or the test ends
		case <-r.Context().Done():
		case <-release:
		}
	})
	t.Cleanup(func() { close(release) }) // before the server's Close
	c := NewClient(Options{Policy: allowOnly("127.0.0.1"), RootCAs: srv.roots(), Timeout: 300 * time.Millisecond})
	a := deliver(t, c, request(srv.URL))
	wantFailure(t, a, "timeout", true)
	if a.StatusCode != 0 {
		t.Errorf("status = %d", a.StatusCode)
	}
}

// A response that never ends: Deliver reads MaxResponseBytes of it and closes the connection,
// so that the server's writes fail; it never reads the whole stream.
func TestDeliverBoundedResponse(t *testing.T) {
	t.Parallel()
	const stream = 512 << 20 // the server stops by itself after this much
	type outcome struct {
		written int64
		err     error
	}
	done := make(chan outcome, 1)
	srv := newServer(t, "", true, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		chunk := []byte(strings.Repeat("é", 16<<10)) // 32 KiB of two-byte characters
		var o outcome
		for o.written < stream && o.err == nil {
			var n int
			n, o.err = w.Write(chunk)
			o.written += int64(n)
		}
		done <- o
	})
	c := NewClient(Options{Policy: allowOnly("127.0.0.1"), RootCAs: srv.roots(), Timeout: time.Minute, MaxResponseBytes: 64 << 10})
	a := deliver(t, c, request(srv.URL))
	if !a.Success || a.Err != nil {
		t.Fatalf("attempt = %+v, want a success", a.Err)
	}
	if !utf8.ValidString(a.Response) || len(a.Response) != SnippetBytes || a.Response != strings.Repeat("é", SnippetBytes/2) {
		t.Errorf("response: %d bytes, valid UTF-8 %v", len(a.Response), utf8.ValidString(a.Response))
	}
	select {
	case o := <-done:
		if o.err == nil {
			t.Fatalf("the server wrote its whole stream (%d bytes): the client read it all", o.written)
		}
		t.Logf("the server wrote %d bytes before %v", o.written, o.err)
	case <-time.After(30 * time.Second):
		t.Fatal("the server is still writing: the client did not close the connection")
	}
}

func TestReadBounded(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		body  string
		limit int64
		want  string
	}{
		{"", 100, ""},
		{"ok", 100, "ok"},
		{"ok", 1, "o"},
		{strings.Repeat("a", 2000), 64 << 10, strings.Repeat("a", SnippetBytes)},
		{strings.Repeat("a", SnippetBytes-1) + "é", 64 << 10, strings.Repeat("a", SnippetBytes-1)}, // é cut in two
		{strings.Repeat("a", SnippetBytes-2) + "é", 64 << 10, strings.Repeat("a", SnippetBytes-2) + "é"},
		{strings.Repeat("a", SnippetBytes-3) + "😀", 64 << 10, strings.Repeat("a", SnippetBytes-3)},
		{"a\xffb", 100, "a\uFFFDb"},
	} {
		if got := readBounded(strings.NewReader(tt.body), tt.limit); got != tt.want {
			t.Errorf("readBounded(%.20q..., %d) = %.20q... (%d bytes), want %d bytes", tt.body, tt.limit, got, len(got), len(tt.want))
		}
	}
}

func TestDeliverRefusesLoopback(t *testing.T) {
	t.Parallel()
	srv := newServer(t, "", true, func(w http.ResponseWriter, r *http.Request) {})
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	c := NewClient(Options{RootCAs: srv.roots()}) // DefaultPolicy
	for _, tt := range []struct {
		url       string
		retryable bool // a name's resolution may change; a literal does not
	}{
		{"https://127.0.0.1:" + port + "/", false},
		{"https://[::1]:" + port + "/", false},
		{"https://[::ffff:127.0.0.1]:" + port + "/", false},
		{"https://localhost:" + port + "/", true}, // a name that resolves to loopback: refused when dialing
	} {
		a := deliver(t, c, request(tt.url))
		wantFailure(t, a, "address refused: loopback", tt.retryable)
		var ae *AddressError
		if !errors.As(a.Err, &ae) || !ae.Addr.IsLoopback() {
			t.Errorf("%s: the error does not wrap the AddressError: %#v", tt.url, a.Err)
		}
	}
	if n := srv.hits.Load(); n != 0 {
		t.Fatalf("the loopback server got %d requests", n)
	}
	// The same server with a policy that allows it, to show that the refusals above are the
	// policy's.
	ok := NewClient(Options{Policy: AllowAll, RootCAs: srv.roots()})
	if a := deliver(t, ok, request("https://127.0.0.1:"+port+"/")); !a.Success {
		t.Fatalf("with AllowAll: %+v", a)
	}
}

// An allowed server redirects to one the policy refuses: to an IP literal (refused by the
// guard) and to a name (refused by the dial guard, after DNS).
func TestDeliverRedirectToRefusedAddress(t *testing.T) {
	t.Parallel()
	// 127.0.0.2 is refused: a literal redirect to it.
	refused := newServer(t, "127.0.0.2", true, func(w http.ResponseWriter, r *http.Request) {})
	allowed := newServer(t, "127.0.0.1", true, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, refused.URL+"/internal", http.StatusTemporaryRedirect)
	})
	c := NewClient(Options{Policy: allowOnly("127.0.0.1"), AllowHTTP: true, RootCAs: allowed.roots(), MaxRedirects: DefaultMaxRedirects})
	a := deliver(t, c, request(allowed.URL))
	// (The https to http downgrade would be refused too; the address is checked first.)
	wantFailure(t, a, "redirect refused: address refused: loopback", true)
	if a.StatusCode != http.StatusTemporaryRedirect || allowed.hits.Load() != 1 || refused.hits.Load() != 0 {
		t.Fatalf("status %d, hits %d then %d", a.StatusCode, allowed.hits.Load(), refused.hits.Load())
	}

	// 127.0.0.2 is allowed and 127.0.0.1 refused: a redirect to "localhost", which resolves to
	// 127.0.0.1 (and ::1); only the dial guard sees that.
	internal := newServer(t, "127.0.0.1", false, func(w http.ResponseWriter, r *http.Request) {})
	_, port, _ := net.SplitHostPort(internal.Listener.Addr().String())
	front := newServer(t, "127.0.0.2", false, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://localhost:"+port+"/internal", http.StatusPermanentRedirect)
	})
	c = NewClient(Options{Policy: allowOnly("127.0.0.2"), AllowHTTP: true, MaxRedirects: DefaultMaxRedirects})
	a = deliver(t, c, request(front.URL))
	wantFailure(t, a, "address refused: loopback", true)
	if front.hits.Load() != 1 || internal.hits.Load() != 0 {
		t.Fatalf("hits %d then %d", front.hits.Load(), internal.hits.Load())
	}
}

func TestDeliverRedirects(t *testing.T) {
	t.Parallel()
	// A 307 and a 308 are followed, with the body and the signature.
	var final *server
	final = newServer(t, "", true, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || webhook.Verify(testSecret, r.Header.Get(webhook.SignatureHeader), body, 0) != nil {
			http.Error(w, "not the signed event", http.StatusBadRequest)
			return
		}
		switch r.URL.Path {
		case "/a":
			http.Redirect(w, r, "/b", http.StatusTemporaryRedirect)
		case "/b":
			http.Redirect(w, r, final.URL+"/c", http.StatusPermanentRedirect)
		default:
			fmt.Fprint(w, "received at ", r.URL.Path)
		}
	})
	c := NewClient(Options{Policy: allowOnly("127.0.0.1"), RootCAs: final.roots(), MaxRedirects: DefaultMaxRedirects})
	if a := deliver(t, c, request(final.URL+"/a")); !a.Success || a.Response != "received at /c" {
		t.Fatalf("attempt = %+v", a)
	}

	// More than MaxRedirects.
	loop := newServer(t, "", true, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/again", http.StatusTemporaryRedirect)
	})
	c = NewClient(Options{Policy: allowOnly("127.0.0.1"), RootCAs: loop.roots(), MaxRedirects: 3})
	a := deliver(t, c, request(loop.URL))
	wantFailure(t, a, "redirect refused: more than 3 redirects", true)
	if a.StatusCode != http.StatusTemporaryRedirect || loop.hits.Load() != 4 {
		t.Fatalf("status %d after %d requests, want 307 after 4", a.StatusCode, loop.hits.Load())
	}
	// None, with MaxRedirects 0.
	loop.hits.Store(0)
	c = NewClient(Options{Policy: allowOnly("127.0.0.1"), RootCAs: loop.roots()})
	a = deliver(t, c, request(loop.URL))
	wantFailure(t, a, "redirect refused: redirects are not followed; register the final URL", true)
	if loop.hits.Load() != 1 {
		t.Fatalf("%d requests, want 1", loop.hits.Load())
	}

	// A 302 would turn the POST into a GET without the event.
	target := newServer(t, "", true, func(w http.ResponseWriter, r *http.Request) {})
	found := newServer(t, "", true, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL, http.StatusFound)
	})
	c = NewClient(Options{Policy: allowOnly("127.0.0.1"), RootCAs: found.roots(), MaxRedirects: DefaultMaxRedirects})
	a = deliver(t, c, request(found.URL))
	wantFailure(t, a, "redirect refused: a 302 redirect would resend the event as a GET without its body; use 307 or 308, or register the final URL", true)
	if target.hits.Load() != 0 {
		t.Fatal("the 302's target got a request")
	}

	// From https to http, even with http allowed.
	plain := newServer(t, "", false, func(w http.ResponseWriter, r *http.Request) {})
	downgrade := newServer(t, "", true, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, plain.URL, http.StatusTemporaryRedirect)
	})
	c = NewClient(Options{Policy: allowOnly("127.0.0.1"), AllowHTTP: true, RootCAs: downgrade.roots(), MaxRedirects: DefaultMaxRedirects})
	a = deliver(t, c, request(downgrade.URL))
	wantFailure(t, a, "redirect refused: from https to http", true)
	if plain.hits.Load() != 0 {
		t.Fatal("the http target got a request")
	}

	// To a URL with credentials.
	creds := newServer(t, "", true, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "https://user:pass@"+r.Host+"/x", http.StatusTemporaryRedirect)
	})
	c = NewClient(Options{Policy: allowOnly("127.0.0.1"), RootCAs: creds.roots(), MaxRedirects: DefaultMaxRedirects})
	a = deliver(t, c, request(creds.URL))
	if a.Success || !strings.HasPrefix(a.Err.Error(), "redirect refused: webhook URL: has user information") || creds.hits.Load() != 1 {
		t.Fatalf("attempt = %+v after %d requests", a, creds.hits.Load())
	}
}

func TestDeliverRefusesHTTP(t *testing.T) {
	t.Parallel()
	plain := newServer(t, "", false, func(w http.ResponseWriter, r *http.Request) {})
	c := NewClient(Options{Policy: allowOnly("127.0.0.1")})
	a := deliver(t, c, request(plain.URL))
	wantFailure(t, a, "webhook URL: the scheme must be https", false)
	var ue *URLError
	if !errors.As(a.Err, &ue) || ue.Reason != ReasonURLScheme {
		t.Errorf("the error does not wrap the URLError: %#v", a.Err)
	}
	if plain.hits.Load() != 0 {
		t.Fatal("the http server got a request")
	}
	c = NewClient(Options{Policy: allowOnly("127.0.0.1"), AllowHTTP: true})
	if a := deliver(t, c, request(plain.URL)); !a.Success {
		t.Fatalf("with AllowHTTP: %+v", a)
	}
}

func TestDeliverNetworkErrors(t *testing.T) {
	t.Parallel()
	// Nothing listens at a port that was just closed.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	c := NewClient(Options{Policy: allowOnly("127.0.0.1")})
	wantFailure(t, deliver(t, c, request("https://"+closed+"/")), "connection refused", true)

	// A certificate of an authority the client does not know.
	srv := newServer(t, "", true, func(w http.ResponseWriter, r *http.Request) {})
	wantFailure(t, deliver(t, c, request(srv.URL)), "TLS: certificate signed by an unknown authority", true)
	// The right authority, the wrong name (the test certificate is for example.com and the
	// loopback addresses; "localhost" resolves, with AllowAll, to one of them).
	c = NewClient(Options{Policy: AllowAll, RootCAs: srv.roots()})
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	wantFailure(t, deliver(t, c, request("https://localhost:"+port+"/")), "TLS: certificate is not valid for the host name", true)

	// An http server where https is expected.
	plain := newServer(t, "", false, func(w http.ResponseWriter, r *http.Request) {})
	wantFailure(t, deliver(t, c, request(strings.Replace(plain.URL, "http:", "https:", 1))), "TLS: the server did not answer with TLS", true)

	// A server that closes the connection without answering.
	hangup := newServer(t, "", true, func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	})
	c = NewClient(Options{Policy: allowOnly("127.0.0.1"), RootCAs: hangup.roots()})
	wantFailure(t, deliver(t, c, request(hangup.URL)), "connection closed by the server", true)

	// A canceled context.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	a := Deliver(ctx, c, request(hangup.URL))
	wantFailure(t, a, "canceled", true)
}

func TestDeliverRefusesBadRequests(t *testing.T) {
	t.Parallel()
	srv := newServer(t, "", true, func(w http.ResponseWriter, r *http.Request) {})
	c := NewClient(Options{Policy: allowOnly("127.0.0.1"), RootCAs: srv.roots()})
	for name, mutate := range map[string]func(*Request){
		"no secret":         func(r *Request) { r.Secrets = nil },
		"an empty secret":   func(r *Request) { r.Secrets = []string{testSecret, ""} },
		"no event id":       func(r *Request) { r.EventID = "" },
		"a newline in id":   func(r *Request) { r.EventID = "evt_1\r\nX-Injected: 1" },
		"bad event type":    func(r *Request) { r.EventType = "payment\x00" },
		"an invalid URL":    func(r *Request) { r.URL = "https://user:pw@" + strings.TrimPrefix(srv.URL, "https://") },
		"a refused literal": func(r *Request) { r.URL = "https://169.254.169.254/latest/meta-data/" },
	} {
		r := request(srv.URL)
		mutate(&r)
		if a := deliver(t, c, r); a.Success || a.Retryable || a.Err == nil {
			t.Errorf("%s: attempt = %+v, want a final failure", name, a)
		}
	}
	// A client that is not NewClient's is refused: it would have none of the guards.
	if a := deliver(t, http.DefaultClient, request(srv.URL)); a.Success || a.Retryable || a.Err == nil {
		t.Errorf("with http.DefaultClient: attempt = %+v", a)
	}
	if n := srv.hits.Load(); n != 0 {
		t.Fatalf("the server got %d requests", n)
	}
}

// The client's transport is its own, with the settings that the guards rely on.
func TestNewClientTransport(t *testing.T) {
	t.Parallel()
	c := NewClient(Options{})
	g, err := guardOf(c)
	if err != nil {
		t.Fatal(err)
	}
	tr := g.base
	switch {
	case tr == http.DefaultTransport:
		t.Error("the client uses http.DefaultTransport")
	case tr.Proxy != nil:
		t.Error("the transport has a proxy, which would connect on its behalf, unchecked")
	case tr.TLSClientConfig == nil || tr.TLSClientConfig.MinVersion < tls.VersionTLS12:
		t.Error("TLS below 1.2 is allowed")
	case tr.TLSClientConfig.InsecureSkipVerify:
		t.Error("certificates are not verified")
	case tr.Protocols == nil || tr.Protocols.UnencryptedHTTP2():
		t.Error("unencrypted HTTP/2 is allowed")
	case !tr.DisableCompression:
		t.Error("responses are decompressed")
	case tr.MaxResponseHeaderBytes <= 0 || tr.ResponseHeaderTimeout <= 0 || tr.TLSHandshakeTimeout <= 0 || tr.MaxIdleConnsPerHost <= 0:
		t.Error("an unbounded header size, wait or idle pool")
	case c.Timeout != DefaultTimeout || g.maxResponse != DefaultMaxResponseBytes || g.policy == nil:
		t.Errorf("defaults: timeout %s, max response %d", c.Timeout, g.maxResponse)
	}
}
