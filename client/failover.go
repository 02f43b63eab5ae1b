package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptrace"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"

	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
	"github.com/paygate/paygate/internal/rpcerr"
)

// Failover between the gateway's replicas. Every replica serves every call (they share one
// database), so a call that cannot reach one address is made at the next. The rules:
//
//   - A call starts with the address that answered last (sticky); at first, the first one.
//     After WithFailback on another address, a call starts with the first address again, so
//     the order of the list is a preference.
//   - It moves on to the next address only when this one did not answer: a transport failure
//     (connection refused or reset, a failed TLS handshake, a server that is not the gateway,
//     a connection lost mid-call: errors without a paygate reason, see unreachable), no
//     connection within WithConnectTimeout, or the gateway's own Unavailable "shutting_down".
//     Any other answer, an error with a reason included, ends the call: another replica on
//     the same database would answer the same.
//   - A call that may have changed something and is not idempotent (Login, Register) moves on
//     only if its request was not sent: it never reaches two replicas.
//   - Each address is tried at most once per call, all within the call's context and timeout.

// DefaultConnectTimeout bounds connecting to one gateway address (TCP and TLS) when there are
// others to try. See WithConnectTimeout.
const DefaultConnectTimeout = 5 * time.Second

// DefaultFailback is how long a client stays with an address other than the first before it
// tries the first ones again. See WithFailback.
const DefaultFailback = time.Minute

// ReasonShuttingDown is the reason of the gateway's Unavailable error for a replica that is
// shutting down: the client takes it to another replica.
const ReasonShuttingDown = "shutting_down"

// endpoint is one gateway address and the Connect clients bound to it.
type endpoint struct {
	url      string
	auth     gatewayv1connect.AuthServiceClient
	payments gatewayv1connect.PaymentServiceClient
	balance  gatewayv1connect.BalanceServiceClient
	admin    gatewayv1connect.AdminServiceClient
	webhooks gatewayv1connect.WebhookServiceClient
	health   *grpchealth.Client
}

func newEndpoint(hc *http.Client, url string, opts []connect.ClientOption) *endpoint {
	return &endpoint{
		url:      url,
		auth:     gatewayv1connect.NewAuthServiceClient(hc, url, opts...),
		payments: gatewayv1connect.NewPaymentServiceClient(hc, url, opts...),
		balance:  gatewayv1connect.NewBalanceServiceClient(hc, url, opts...),
		admin:    gatewayv1connect.NewAdminServiceClient(hc, url, opts...),
		webhooks: gatewayv1connect.NewWebhookServiceClient(hc, url, opts...),
		health:   grpchealth.NewClient(hc, url, connect.WithGRPC()),
	}
}

// replicas is the gateway's addresses and which one the next call starts with.
type replicas struct {
	eps            []*endpoint
	connectTimeout time.Duration
	failback       time.Duration
	log            *slog.Logger

	mu sync.Mutex
	// preferred is the index of the address the next call starts with: the one that answered
	// last, or the one after an address that just failed.
	preferred int
	// since is when preferred moved off the first address, or when the first address was last
	// tried again; failback counts from it.
	since time.Time
}

// parseAddrs turns addresses, each possibly a comma-separated list, into base URLs.
func parseAddrs(addrs []string) ([]string, error) {
	var urls []string
	for _, list := range addrs {
		for _, a := range strings.Split(list, ",") {
			if strings.TrimSpace(a) == "" {
				continue
			}
			u, err := baseURL(a)
			if err != nil {
				return nil, err
			}
			if slices.Contains(urls, u) {
				return nil, fmt.Errorf("client: gateway address %q given twice", strings.TrimSpace(a))
			}
			urls = append(urls, u)
		}
	}
	if len(urls) == 0 {
		return nil, errors.New("client: empty gateway address")
	}
	return urls, nil
}

// order returns the indexes of the addresses in the order a call tries them.
func (r *replicas) order(now time.Time) []int {
	r.mu.Lock()
	start := r.preferred
	if start != 0 && r.failback > 0 && now.Sub(r.since) >= r.failback {
		// Try the first addresses again, at most once per failback period while they fail.
		start, r.since = 0, now
	}
	r.mu.Unlock()
	out := make([]int, len(r.eps))
	for i := range out {
		out[i] = (start + i) % len(r.eps)
	}
	return out
}

// answered records that address k answered: the next call starts there.
func (r *replicas) answered(k int, now time.Time) {
	r.mu.Lock()
	from := r.preferred
	if from != k {
		r.preferred, r.since = k, now
	}
	r.mu.Unlock()
	if from != k {
		r.log.Info("gateway: now using "+r.eps[k].url, "gateway", r.eps[k].url, "previous", r.eps[from].url)
	}
}

// failed records that address k did not answer: if the next call would have started there,
// it starts with the next address instead.
func (r *replicas) failed(k int, now time.Time) {
	if len(r.eps) == 1 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.preferred == k {
		r.preferred, r.since = (k+1)%len(r.eps), now
	}
}

// callKind says whether a call may be sent to a second replica after it reached a first.
type callKind int

const (
	// idempotent calls may be sent again to another replica: reads, Logout, ExecutePayment
	// (the payment_id makes a resend the same payment), WatchPayments and health checks.
	idempotent callKind = iota
	// sendOnce calls (Login, Register) move to another replica only if their request was not
	// sent to this one.
	sendOnce
)

// errNoConnection cancels an attempt at an address that did not connect within the connect
// timeout.
var errNoConnection = errors.New("no connection")

// errNotServing is a health check answered with another status than SERVING: the replica is
// up but does not serve, so Ping asks the next one.
type errNotServing struct{ status grpchealth.Status }

func (e errNotServing) Error() string { return "gateway is " + e.status.String() }

// progress is what an attempt at one address got to, from the HTTP client's trace.
type progress struct {
	connected atomic.Bool // a connection to the address was obtained
	sent      atomic.Bool // the request's headers were written to it
}

// call makes one call at the gateway, with failover: f makes it at ep under ctx and returns
// its error. call returns f's error at the first address that answered; when none did, an
// Unavailable error without a reason: with a single address its error (given that code if
// connect-go coded the transport failure otherwise), with several one naming every address's
// failure. ctx bounds the whole call, every address included.
func (c *Client) call(ctx context.Context, kind callKind, f func(context.Context, *endpoint) error) error {
	r := c.rep
	order := r.order(time.Now())
	var failures []error
	for i, k := range order {
		ep := r.eps[k]
		// The last address of the round has the rest of the call's time to connect; the others
		// a share of it, so that one dead address that does not refuse leaves time for the others.
		limit := time.Duration(0)
		if left := len(order) - i; left > 1 {
			limit = r.connectTimeout
			if dl, ok := ctx.Deadline(); ok {
				limit = min(limit, time.Until(dl)/time.Duration(left))
			}
		}
		pr, noConn, err := tryAt(ctx, ep, limit, f)
		now := time.Now()
		if err == nil {
			r.answered(k, now)
			return nil
		}
		if ctx.Err() != nil {
			// The call's time is over (or its caller gave up): no other address is tried. An
			// address that could not even connect in that time is not where to start next.
			if !pr.connected.Load() && errors.Is(ctx.Err(), context.DeadlineExceeded) {
				r.failed(k, now)
			}
			return err
		}
		if noConn {
			err = connect.NewError(connect.CodeUnavailable, fmt.Errorf("no connection to %s within %s", ep.url, limit.Round(time.Millisecond)))
		}
		if !unreachable(err) {
			r.answered(k, now)
			return err
		}
		err = asUnavailable(err)
		r.failed(k, now)
		failures = append(failures, &addrError{url: ep.url, err: err})
		if kind == sendOnce && pr.sent.Load() {
			// It may have reached the gateway: sending it again could do it twice.
			c.cfg.logger.Warn("gateway: call failed after it was sent; not sent to another address", "gateway", ep.url, logErr(err))
			return err
		}
		if i+1 < len(order) {
			next := r.eps[order[i+1]].url
			c.cfg.logger.Info("gateway unreachable; trying the next address", "gateway", ep.url, "next", next, logErr(err))
		}
	}
	if len(failures) == 1 {
		return failures[0].(*addrError).err
	}
	return connect.NewError(connect.CodeUnavailable, &unreachableError{failures: failures})
}

// tryAt makes f at ep. With limit > 0, an attempt that has no connection after limit is
// canceled (noConn). pr says how far the attempt got.
func tryAt(ctx context.Context, ep *endpoint, limit time.Duration, f func(context.Context, *endpoint) error) (pr *progress, noConn bool, err error) {
	pr = &progress{}
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var timer *time.Timer
	trace := &httptrace.ClientTrace{
		GotConn: func(httptrace.GotConnInfo) {
			pr.connected.Store(true)
			if timer != nil {
				timer.Stop()
			}
		},
		WroteHeaders: func() { pr.sent.Store(true) },
	}
	if limit > 0 {
		timer = time.AfterFunc(limit, func() {
			if !pr.connected.Load() {
				cancel(errNoConnection)
			}
		})
		defer timer.Stop()
	}
	err = f(httptrace.WithClientTrace(actx, trace), ep)
	noConn = err != nil && errors.Is(context.Cause(actx), errNoConnection)
	return pr, noConn, err
}

// unreachable reports whether err, the error of a call whose context is not done, means that
// the address did not answer, so that another replica may: a replica that is shutting down, a
// health check not SERVING, or a transport failure. Every error the gateway answers with
// carries a paygate reason; one without a reason, with a code that transport failures get,
// comes from the HTTP client or a proxy: Unavailable (connection refused, a failed TLS
// handshake, a server that is not the gateway, a proxy's HTTP 502/503/504), Canceled
// (connect-go's code for a connection reset or a broken pipe), Unknown and Internal (a
// connection closed or a stream reset mid-answer), DeadlineExceeded (a dial timeout).
func unreachable(err error) bool {
	var ns errNotServing
	if errors.As(err, &ns) {
		return true
	}
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return false
	}
	if reason := rpcerr.Reason(err); reason != "" {
		return reason == ReasonShuttingDown && ce.Code() == connect.CodeUnavailable
	}
	switch ce.Code() {
	case connect.CodeUnavailable, connect.CodeCanceled, connect.CodeUnknown, connect.CodeInternal, connect.CodeDeadlineExceeded:
		return true
	}
	return false
}

// asUnavailable gives a transport failure that connect-go coded otherwise (Canceled for a
// reset connection, Unknown or Internal for one closed mid-answer) the code Unavailable, which
// says that nothing answered: classify then treats it as the gateway being unreachable.
func asUnavailable(err error) error {
	var ce *connect.Error
	if errors.As(err, &ce) && ce.Code() != connect.CodeUnavailable {
		if inner := ce.Unwrap(); inner != nil {
			return connect.NewError(connect.CodeUnavailable, inner)
		}
		return connect.NewError(connect.CodeUnavailable, errors.New(ce.Message()))
	}
	return err
}

// addrError is the failure of one address.
type addrError struct {
	url string
	err error
}

func (e *addrError) Error() string { return e.url + ": " + message(e.err) }
func (e *addrError) Unwrap() error { return e.err }

// unreachableError is the failure of a call at every address.
type unreachableError struct{ failures []error }

func (e *unreachableError) Error() string {
	parts := make([]string, len(e.failures))
	for i, f := range e.failures {
		parts[i] = f.Error()
	}
	return "no gateway address answered: " + strings.Join(parts, "; ")
}

func (e *unreachableError) Unwrap() []error { return e.failures }

// message is err's text without the "unavailable: " of a Connect error's code.
func message(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Message()
	}
	return err.Error()
}

// Addresses returns the gateway's addresses that the client was given, as base URLs
// ("https://127.0.0.1:8443"), in order.
func (c *Client) Addresses() []string {
	out := make([]string, len(c.rep.eps))
	for i, ep := range c.rep.eps {
		out[i] = ep.url
	}
	return out
}

// ActiveAddress returns the base URL of the address the next call starts with: the one that
// answered last (the first address before any call).
func (c *Client) ActiveAddress() string {
	c.rep.mu.Lock()
	defer c.rep.mu.Unlock()
	return c.rep.eps[c.rep.preferred].url
}
