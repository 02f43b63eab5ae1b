package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/paygate/paygate/client/webhook"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/internal/cluster"
)

// listenProc is a running `paygate listen`.
type listenProc struct {
	t        *testing.T
	cmd      *exec.Cmd
	out, err *lockedBuffer
	done     chan struct{}
	// url is where it receives, as its "listening on URL" line says.
	url string
}

var listeningLine = regexp.MustCompile(`listening on (http://\S+) `)

// startListen runs `paygate listen args...` with env (and none of the test process's PAYGATE_
// variables), and waits until it says where it listens. It is killed at the end of the test
// if it still runs.
func startListen(t *testing.T, bin string, env []string, args ...string) *listenProc {
	t.Helper()
	p := &listenProc{t: t, out: &lockedBuffer{}, err: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, append([]string{"listen"}, args...)...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PAYGATE_") {
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	p.cmd.Env = append(p.cmd.Env, env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.err
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	deadline := time.After(30 * time.Second)
	for {
		if m := listeningLine.FindStringSubmatch(p.err.String()); m != nil {
			p.url = m[1]
			return p
		}
		select {
		case <-p.done:
			t.Fatalf("paygate listen exited (%v) before listening:\nstdout:\n%s\nstderr:\n%s", p.cmd.ProcessState, p.out, p.err)
		case <-deadline:
			t.Fatalf("paygate listen did not say where it listens within 30s:\nstderr:\n%s", p.err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// interrupt sends SIGINT, as Ctrl-C does, and returns the exit code.
func (p *listenProc) interrupt() int {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		p.t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.t.Fatalf("paygate listen did not stop within 30s of SIGINT:\nstderr:\n%s", p.err)
	}
	return p.cmd.ProcessState.ExitCode()
}

// waitOutput waits until stdout (or stderr, with fromStderr) contains want.
func (p *listenProc) waitOutput(want string, fromStderr bool, within time.Duration) {
	p.t.Helper()
	b := p.out
	if fromStderr {
		b = p.err
	}
	deadline := time.Now().Add(within)
	for !strings.Contains(b.String(), want) {
		if time.Now().After(deadline) {
			p.t.Fatalf("no %q within %s\nstdout:\n%s\nstderr:\n%s", want, within, p.out, p.err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// post sends body to the listener with the given signature header ("" for none) and returns
// the status code.
func (p *listenProc) post(body []byte, signature string) int {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url+"paygate/webhook", bytes.NewReader(body))
	if err != nil {
		p.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if signature != "" {
		req.Header.Set(webhook.SignatureHeader, signature)
	}
	req.Header.Set("Paygate-Event-Id", "evt_7")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// testEventBody is an event as the gateway sends it: the Event in protojson.
func testEventBody(t *testing.T, id string, seq int64) []byte {
	t.Helper()
	body, err := protojson.Marshal(&gatewayv1.Event{Seq: seq, EventId: id, Type: "payment.succeeded", CreateTime: timestamppb.Now(),
		Payment: &gatewayv1.Payment{PaymentId: "0198c2d4-7f1e-7c3a-9b61-2f0e8d5a4c11", FromAccount: "bank1-1001", ToAccount: "bank2-2002",
			Amount: 500, Currency: "USD", Status: gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED}})
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// TestListenNoRegister: `paygate listen --no-register --secret S` answers a request signed
// with S 200 and prints its event on one line; it answers 400 to a request signed with another
// secret, without a signature, with a changed body or signed too long ago, and says why on
// stderr without ever printing the secret; a redelivered event is marked again; SIGINT stops
// it with exit code 0. With --json it prints the bodies as they came; with --forward-to it
// passes each verified event, signature included, to the application and answers with the
// application's status.
func TestListenNoRegister(t *testing.T) {
	t.Parallel()
	bin := cluster.Binary(t)
	const secret = "whsec_listen-test-secret-0123456789"
	addr := cluster.FreePort(t)
	p := startListen(t, bin, nil, "--no-register", "--secret", secret, "--addr", addr)
	if want := "http://" + addr + "/"; p.url != want {
		t.Errorf("listens on %s, want %s", p.url, want)
	}

	body := testEventBody(t, "evt_7", 7)
	if code := p.post(body, webhook.Sign(secret, time.Now(), body)); code != http.StatusOK {
		t.Errorf("correctly signed: status %d, want 200", code)
	}
	p.waitOutput("evt_7", false, 10*time.Second)
	line := regexp.MustCompile(`(?m)^\d\d:\d\d:\d\d  evt_7  payment\.succeeded  0198c2d4-7f1e-7c3a-9b61-2f0e8d5a4c11  succeeded  5\.00 USD$`)
	if !line.MatchString(p.out.String()) {
		t.Errorf("stdout does not have the event's line %s:\n%s", line, p.out)
	}

	refused := []struct {
		name, signature, why string
		body                 []byte
	}{
		{"another secret", webhook.Sign("whsec_another", time.Now(), body), "signature does not match", body},
		{"no signature", "", "no valid signature header", body},
		{"changed body", webhook.Sign(secret, time.Now(), body), "signature does not match", bytes.Replace(body, []byte("500"), []byte("900"), 1)},
		{"signed an hour ago", webhook.Sign(secret, time.Now().Add(-time.Hour), body), "timestamp outside the tolerance", body},
	}
	for _, r := range refused {
		before := strings.Count(p.err.String(), "rejected POST /paygate/webhook")
		if code := p.post(r.body, r.signature); code != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400", r.name, code)
		}
		// The line reaches the test's buffer through a pipe, maybe after the answer.
		deadline := time.Now().Add(10 * time.Second)
		for strings.Count(p.err.String(), "rejected POST /paygate/webhook") == before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		lines := strings.Split(strings.TrimSpace(p.err.String()), "\n")
		if n := strings.Count(p.err.String(), "rejected POST /paygate/webhook"); n != before+1 || !strings.Contains(lines[len(lines)-1], r.why) {
			t.Errorf("%s: %d rejection lines on stderr, want %d, the last saying %q:\n%s", r.name, n, before+1, r.why, p.err)
		}
	}
	if n := strings.Count(p.out.String(), "\n"); n != 1 {
		t.Errorf("stdout has %d lines, want the one verified event's:\n%s", n, p.out)
	}

	// The gateway delivers at least once: the same event again is printed, marked.
	if code := p.post(body, webhook.Sign(secret, time.Now(), body)); code != http.StatusOK {
		t.Errorf("redelivery: status %d, want 200", code)
	}
	p.waitOutput("(again)", false, 10*time.Second)

	if code := p.interrupt(); code != 0 {
		t.Errorf("exit code %d after SIGINT, want 0\nstderr:\n%s", code, p.err)
	}
	if strings.Contains(p.out.String()+p.err.String(), secret) {
		t.Errorf("the secret was printed:\nstdout:\n%s\nstderr:\n%s", p.out, p.err)
	}

	t.Run("json and forward-to", func(t *testing.T) {
		t.Parallel()
		// The application answers 503 to the first event and 204 to the next, verifying each
		// with the secret: the signature must have come along.
		var calls atomic.Int32
		app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, err := webhook.ReadVerified(r, secret, 0); err != nil {
				http.Error(w, err.Error(), http.StatusUnauthorized)
				return
			}
			if r.Header.Get("Paygate-Event-Id") != "evt_7" {
				http.Error(w, "no Paygate-Event-Id", http.StatusBadRequest)
				return
			}
			if calls.Add(1) == 1 {
				http.Error(w, "down for a moment", http.StatusServiceUnavailable)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		}))
		t.Cleanup(app.Close)
		p := startListen(t, bin, []string{secretEnv + "=" + secret}, "--no-register", "--json", "--addr", cluster.FreePort(t), "--forward-to", app.URL)
		if code := p.post(body, webhook.Sign(secret, time.Now(), body)); code != http.StatusServiceUnavailable {
			t.Errorf("first forward: status %d, want the application's 503", code)
		}
		if code := p.post(body, webhook.Sign(secret, time.Now(), body)); code != http.StatusNoContent {
			t.Errorf("second forward: status %d, want the application's 204", code)
		}
		if code := p.post(body, webhook.Sign("whsec_another", time.Now(), body)); code != http.StatusBadRequest {
			t.Errorf("forged: status %d, want 400", code)
		}
		if n := calls.Load(); n != 2 {
			t.Errorf("the application got %d requests, want the 2 verified ones", n)
		}
		deadline := time.Now().Add(10 * time.Second)
		for strings.Count(p.out.String(), string(body)+"\n") < 2 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if got, want := strings.Count(p.out.String(), string(body)+"\n"), 2; got != want {
			t.Errorf("--json printed the body %d times, want %d:\n%s", got, want, p.out)
		}
		if code := p.interrupt(); code != 0 {
			t.Errorf("exit code %d after SIGINT, want 0", code)
		}
	})
}

// TestListenUsage: the secret's sources and the flags that do not go together are usage
// errors (exit 2) that say what to give.
func TestListenUsage(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte("not-a-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--no-register", "--addr", "127.0.0.1:0"}, "needs the endpoint's signing secret"},
		{[]string{"--no-register", "--secret", "abc"}, "not a signing secret (they start with whsec_)"},
		{[]string{"--no-register", "--secret-file", secretFile}, "not a signing secret"},
		{[]string{"--no-register", "--secret", "whsec_a", "--secret-file", secretFile}, "not both"},
		{[]string{"--no-register", "--secret", "whsec_a", "--events", "payment.failed"}, "not with --no-register"},
		{[]string{"--secret", "whsec_a"}, "are for --no-register"},
		{[]string{"--events", "payment.lost"}, `unknown event type "payment.lost"`},
		{[]string{"--forward-to", "localhost:3000"}, "want an http:// or https:// URL"},
	} {
		code, _, errOut := runCmd(t, append([]string{"listen"}, tc.args...)...)
		if code != exitUsage || !strings.Contains(errOut, tc.want) {
			t.Errorf("listen %v: exit %d, stderr %q; want exit %d saying %q", tc.args, code, errOut, exitUsage, tc.want)
		}
	}
}
