package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/peterbourgon/ff/v3/ffcli"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/paygate/paygate/client"
	"github.com/paygate/paygate/client/webhook"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
)

// paygate listen: a local webhook receiver for development. It registers a temporary endpoint
// at the gateway for itself (or, with --no-register, receives for an endpoint registered
// elsewhere), verifies every request's signature, prints the events, and optionally forwards
// them to a local application.

func init() { register(newListenCommand) }

// Defaults of --addr. Registering, the port does not matter (the endpoint is registered with
// the port the listener got), so a free one is taken and several listens can run at once;
// without registering, the URL registered elsewhere names the port, so it must be a known one.
const (
	listenAddrRegister   = "127.0.0.1:0"
	listenAddrNoRegister = "127.0.0.1:8787"
)

// Bounds of the receiver.
const (
	// forwardTimeout bounds one forward to --forward-to. The gateway gives an attempt 10 s.
	forwardTimeout = 9 * time.Second
	// cleanupTimeout bounds deleting the temporary endpoint and the server's shutdown at exit.
	cleanupTimeout = 10 * time.Second
	// maxForwardAnswer is how much of the application's answer is passed back to the gateway.
	maxForwardAnswer = 4 << 10
)

// secretEnv is the environment variable that gives --no-register its secret, the name a
// receiver reads it from in the examples of package client/webhook.
const secretEnv = "PAYGATE_WEBHOOK_SECRET"

func newListenCommand(e *env) *ffcli.Command {
	fs := newFlagSet(e, "listen")
	cf := clientFlags{e: e}
	cf.register(fs)
	addr := fs.String("addr", "", "where to listen, HOST:PORT (default "+listenAddrRegister+", a free port, when registering; "+listenAddrNoRegister+" with --no-register)")
	events := fs.String("events", client.AllEventTypes, "comma-separated event types to register the endpoint for, or * for all")
	noRegister := fs.Bool("no-register", false, "do not register an endpoint: receive for one registered elsewhere, verifying with --secret, --secret-file or "+secretEnv)
	secret := fs.String("secret", "", "with --no-register: the endpoint's signing secret, whsec_...")
	secretFile := fs.String("secret-file", "", "with --no-register: a file holding the endpoint's signing secret")
	printSecretFlag := fs.Bool("print-secret", false, "print the temporary endpoint's signing secret on stderr (for the application of --forward-to)")
	forwardTo := fs.String("forward-to", "", "also POST each verified event, with its headers, to this `URL` (a local application), and answer the gateway with its status")
	duration := fs.Duration("for", 0, "stop after this long (default: until Ctrl-C)")
	return &ffcli.Command{
		Name:       "listen",
		ShortUsage: "paygate listen [--events TYPE,...] [--forward-to URL] | --no-register --secret whsec_... [--addr HOST:PORT] [flags]",
		ShortHelp:  "receive your webhooks on this machine and print each verified event",
		LongHelp: "A webhook receiver for development. By default it listens on a free port of\n" +
			"127.0.0.1, registers http://127.0.0.1:PORT/ as a temporary endpoint of the\n" +
			"logged-in user for --events (default *, all), and prints every event the gateway\n" +
			"delivers, one line each: time, event id, type, payment, its status and amount\n" +
			"(--json: the body as received). Ctrl-C deletes the endpoint and stops it. The\n" +
			"gateway must allow loopback http:// URLs: run it with --webhook-allow-private\n" +
			"--webhook-allow-http, as 'paygate dev' does.\n" +
			"\n" +
			"With --no-register it only receives, on --addr (default " + listenAddrNoRegister + "), for an\n" +
			"endpoint you registered yourself ('paygate webhooks create'), verifying with its\n" +
			"secret: --secret-file or " + secretEnv + " (or --secret, which other users of the\n" +
			"machine can read in the process list).\n" +
			"\n" +
			"Every request's Paygate-Signature is verified: a request that fails gets 400 and\n" +
			"a line on stderr saying why; a verified one gets 200 (with --forward-to, the\n" +
			"application's answer, so that the gateway retries what it refuses). An event\n" +
			"delivered again (delivery is at least once) is marked '(again)'.\n" +
			"\n" +
			"Example:\n" +
			"  paygate listen --events payment.succeeded,payment.failed\n" +
			"  listening on http://127.0.0.1:41234/ for events payment.succeeded,payment.failed: endpoint we_01JD8ZQ3K4M5N6P7Q8R9S0T1V2 (deleted at exit; Ctrl-C to stop)\n" +
			"  21:04:05  evt_42  payment.succeeded  0198c2d4-7f1e-7c3a-9b61-2f0e8d5a4c11  succeeded  5.00 USD",
		FlagSet: fs,
		Options: ffOptions(),
		Exec: func(ctx context.Context, args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			set := map[string]bool{}
			fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
			l := &listener{e: e, cf: &cf, asJSON: cf.json, seen: map[string]bool{}}
			if *forwardTo != "" {
				u, err := url.Parse(*forwardTo)
				if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
					return usageErrorf("--forward-to %q: want an http:// or https:// URL", *forwardTo)
				}
				l.forwardTo = u.String()
				l.forward = &http.Client{Timeout: forwardTimeout, CheckRedirect: func(*http.Request, []*http.Request) error {
					return http.ErrUseLastResponse // the gateway does not follow them either (but 307/308)
				}}
			}
			if *duration > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, *duration)
				defer cancel()
			}
			if *noRegister {
				if set["events"] || set["print-secret"] {
					return usageErrorf("--events and --print-secret are for the endpoint listen registers: not with --no-register")
				}
				s, err := readListenSecret(*secret, *secretFile)
				if err != nil {
					return err
				}
				l.secret = s
				if *addr == "" {
					*addr = listenAddrNoRegister
				}
				return l.run(ctx, *addr, nil, nil)
			}
			if *secret != "" || *secretFile != "" {
				return usageErrorf("--secret and --secret-file are for --no-register: the endpoint listen registers gets its own secret")
			}
			types, err := parseEventTypes(*events)
			if err != nil {
				return err
			}
			if *addr == "" {
				*addr = listenAddrRegister
			}
			return l.run(ctx, *addr, types, printSecretFlag)
		},
	}
}

// readListenSecret returns the secret of --no-register: --secret, else --secret-file, else
// PAYGATE_WEBHOOK_SECRET.
func readListenSecret(flagValue, file string) (string, error) {
	s, from := flagValue, "--secret"
	switch {
	case flagValue != "" && file != "":
		return "", usageErrorf("give --secret or --secret-file, not both")
	case file != "":
		data, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("--secret-file: %w", err)
		}
		s, from = strings.TrimSpace(string(data)), "--secret-file "+file
	case s == "":
		s, from = strings.TrimSpace(os.Getenv(secretEnv)), secretEnv
	}
	if s == "" {
		return "", usageErrorf("--no-register needs the endpoint's signing secret: --secret whsec_..., --secret-file FILE or %s", secretEnv)
	}
	if !strings.HasPrefix(s, "whsec_") {
		// The whole string, prefix included, is the HMAC key: without it nothing would verify.
		return "", usageErrorf("%s: not a signing secret (they start with whsec_)", from)
	}
	return s, nil
}

// listener is one run of paygate listen.
type listener struct {
	e      *env
	cf     *clientFlags
	asJSON bool
	secret string

	forwardTo string
	forward   *http.Client

	mu   sync.Mutex // serializes output and seen
	seen map[string]bool
}

// run listens on addr and serves until ctx is done. With types, it first registers a temporary
// endpoint for them (and deletes it at the end); printSecret then says whether to print its
// secret.
func (l *listener) run(ctx context.Context, addr string, types []string, printSecret *bool) (err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	defer ln.Close()
	// Connections wait in the listener's backlog until Serve: none is answered before the
	// secret is known.
	srv := &http.Server{Handler: l, ReadHeaderTimeout: 10 * time.Second}
	local := receiverURL(ln.Addr().(*net.TCPAddr))
	what := "any endpoint whose secret this is"
	if types != nil {
		c, ep, err := l.registerEndpoint(ctx, local, types)
		if err != nil {
			return err
		}
		defer c.Close()
		defer func() {
			if derr := l.deleteEndpoint(c, ep.GetEndpointId()); derr != nil && err == nil {
				err = derr
			}
		}()
		what = "events " + strings.Join(types, ",") + ": endpoint " + ep.GetEndpointId() + " (deleted at exit"
		if printSecret != nil && *printSecret {
			fmt.Fprintf(l.e.stderr, "signing secret of %s: %s\n", ep.GetEndpointId(), l.secret)
		}
	} else {
		what += " (no endpoint registered"
	}
	fwd := ""
	if l.forwardTo != "" {
		fwd = ", forwarding to " + l.forwardTo
	}
	fmt.Fprintf(l.e.stderr, "listening on %s for %s%s; Ctrl-C to stop)\n", local, what, fwd)

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	return nil
}

// receiverURL is the URL at which the gateway reaches the receiver listening at a: http on
// loopback (a wildcard address is reached at 127.0.0.1), path "/".
func receiverURL(a *net.TCPAddr) string {
	host := a.IP.String()
	if a.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, fmt.Sprint(a.Port)) + "/"
}

// registerEndpoint creates the temporary endpoint at local for types as the logged-in user and
// keeps its secret.
func (l *listener) registerEndpoint(ctx context.Context, local string, types []string) (*client.Client, *client.WebhookEndpoint, error) {
	_, c, err := l.cf.connectLoggedIn()
	if err != nil {
		return nil, nil, err
	}
	// Not canceled by Ctrl-C: an endpoint created as the command stops would be left behind
	// without its id. Once it is made, run sees ctx done and deletes it.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	ep, secret, err := c.CreateWebhookEndpoint(cctx, local, types...)
	if err != nil {
		c.Close()
		switch client.Reason(err) {
		case client.ReasonWebhookAddressRefused, client.ReasonInvalidWebhookURL:
			return nil, nil, fmt.Errorf("the gateway refused the endpoint %s: %w\n"+
				"  paygate listen registers a loopback http:// URL, which the gateway accepts only when it runs\n"+
				"  with --webhook-allow-private --webhook-allow-http (as 'paygate dev' does). Otherwise register\n"+
				"  a URL that reaches this machine ('paygate webhooks create') and run\n"+
				"  'paygate listen --no-register --secret whsec_... --addr HOST:PORT'", local, withReason(err))
		}
		return nil, nil, webhookFailure(err)
	}
	l.secret = secret
	return c, ep, nil
}

// deleteEndpoint deletes the temporary endpoint at exit, with a context of its own (the
// command's is done by then).
func (l *listener) deleteEndpoint(c *client.Client, id string) error {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	if err := c.DeleteWebhookEndpoint(ctx, id); err != nil && connect.CodeOf(err) != connect.CodeNotFound {
		return fmt.Errorf("%w\n  the temporary endpoint is left: delete it with 'paygate webhooks delete %s'", webhookFailure(err), id)
	}
	fmt.Fprintf(l.e.stderr, "deleted endpoint %s\n", id)
	return nil
}

// ServeHTTP verifies one request and prints its event.
func (l *listener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		l.rejected(r, "only POST is a delivery")
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "only POST", http.StatusMethodNotAllowed)
		return
	}
	body, err := webhook.ReadVerified(r, l.secret, 0)
	if err != nil {
		// The webhook package's errors say what failed, never the secret or the signatures.
		l.rejected(r, err.Error())
		if errors.Is(err, webhook.ErrBodyTooLarge) {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "signature verification failed", http.StatusBadRequest)
		return
	}
	status, answer := http.StatusOK, []byte("ok\n")
	forwarded := ""
	if l.forward != nil {
		status, answer, forwarded = l.forwardEvent(r, body)
	}
	l.printEvent(body, forwarded)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	w.Write(answer)
}

// rejected prints why a request was refused, on stderr.
func (l *listener) rejected(r *http.Request, why string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.e.stderr, "%s  rejected %s %s from %s: %s\n", time.Now().Format(time.TimeOnly), r.Method, r.URL.Path, r.RemoteAddr, why)
}

// forwardEvent POSTs a verified body with its headers to --forward-to and returns the status
// and the start of the body to answer the gateway with, and a note for the event's line.
func (l *listener) forwardEvent(r *http.Request, body []byte) (int, []byte, string) {
	ctx, cancel := context.WithTimeout(r.Context(), forwardTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.forwardTo, bytes.NewReader(body))
	if err != nil {
		return http.StatusBadGateway, []byte("forward failed\n"), "  -> forward failed: " + err.Error()
	}
	for name, values := range r.Header {
		if strings.HasPrefix(name, "Paygate-") || name == "Content-Type" || name == "User-Agent" {
			req.Header[name] = values
		}
	}
	resp, err := l.forward.Do(req)
	if err != nil {
		return http.StatusBadGateway, []byte("forward failed\n"), "  -> forward failed: " + err.Error()
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, maxForwardAnswer))
	return resp.StatusCode, answer, fmt.Sprintf("  -> %d", resp.StatusCode)
}

// printEvent prints a verified event: its body with --json, else a line.
func (l *listener) printEvent(body []byte, note string) {
	var ev gatewayv1.Event
	perr := protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(body, &ev)
	l.mu.Lock()
	defer l.mu.Unlock()
	again := ev.GetEventId() != "" && l.seen[ev.GetEventId()]
	if ev.GetEventId() != "" {
		l.seen[ev.GetEventId()] = true
	}
	if l.asJSON {
		// The body as it came, which is one line of JSON; one spread over lines is compacted so
		// that each event stays one line.
		line := bytes.TrimSpace(body)
		if bytes.ContainsAny(line, "\r\n") {
			var b bytes.Buffer
			if json.Compact(&b, line) == nil {
				line = b.Bytes()
			} else {
				line = bytes.Join(bytes.Fields(line), []byte(" "))
			}
		}
		fmt.Fprintf(l.e.stdout, "%s\n", line)
		return
	}
	now := time.Now().Format(time.TimeOnly)
	if perr != nil {
		fmt.Fprintf(l.e.stdout, "%s  verified a body that is not an event (%d bytes)%s\n", now, len(body), note)
		return
	}
	fmt.Fprintln(l.e.stdout, now+"  "+webhookEventLine(&ev)+note+map[bool]string{true: "  (again)"}[again])
}

// webhookEventLine is an event as paygate listen prints it: "evt_42  payment.succeeded
// 0198c2d4-...  succeeded  5.00 USD".
func webhookEventLine(ev *gatewayv1.Event) string {
	p := ev.GetPayment()
	s := fmt.Sprintf("%s  %-17s  %s  %-10s %s %s", ev.GetEventId(), ev.GetType(), p.GetPaymentId(), statusName(p.GetStatus()),
		client.FormatAmount(p.GetAmount(), p.GetCurrency()), p.GetCurrency())
	if p.GetStatus() == gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED {
		s += "  " + client.FailureReasonName(p.GetFailureReason())
	}
	if p.GetRefundOf() != "" {
		s += "  refund of " + p.GetRefundOf()
	}
	return s
}
