package client

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
	"github.com/paygate/paygate/internal/pki"
	"github.com/paygate/paygate/internal/rpcerr"
	"github.com/paygate/paygate/internal/rpcserver"
)

// Payment is a payment as the gateway reports it.
type Payment = gatewayv1.Payment

// Balances is the user's money: every account, grouped by bank, and totals per currency.
type Balances = gatewayv1.FetchBalanceResponse

// Event is one change of a payment in the gateway's event log: its Seq (the same on every
// replica, and only growing), EventId, Type ("payment.created", "payment.succeeded",
// "payment.failed", "payment.refunded"; for a refund "refund.created", "refund.succeeded",
// "refund.failed") and the Payment as of the change.
type Event = gatewayv1.Event

// Errors of this package. Errors from the gateway are *connect.Error values; use
// connect.CodeOf and Reason to inspect them.
var (
	// ErrInvalidPayment reports a payment refused before it was sent or queued.
	ErrInvalidPayment = errors.New("client: invalid payment")
	// ErrNotLoggedIn reports a call that needs a token on a client that has none.
	ErrNotLoggedIn = errors.New("client: not logged in")
	// ErrLoginRequired reports that the gateway refused the token (expired, revoked): the
	// queue is paused until Login or SetToken gives the client a new one.
	ErrLoginRequired = errors.New("client: the gateway refused the token; log in again")
	// ErrNoQueue reports a queue operation on a client made without WithQueue.
	ErrNoQueue = errors.New("client: no queue (use WithQueue)")
	// ErrOutcomeUnknown reports a payment, on a client without a queue, whose attempts all
	// failed ambiguously: it may or may not have been applied. Pay again with the same ID
	// (Result.ID) to learn its outcome; it is never applied twice.
	ErrOutcomeUnknown = errors.New("client: payment outcome unknown")
	// ErrNotGateway reports a server at the gateway's address whose certificate, though signed
	// by the trusted CA, does not name the gateway: it was sent nothing. It is the same error
	// value as the TLS layer's, so errors.Is works on every call's error.
	ErrNotGateway = pki.ErrUnexpectedServer
)

// Client calls the paygate gateway for one user. It is safe for concurrent use. Close it when
// done: that stops the queue's sender and closes connections.
type Client struct {
	cfg  config
	http *http.Client
	rep  *replicas

	mu       sync.Mutex
	token    string
	username string

	queue  *Queue
	sender *sender
}

// New returns a client of the gateway at addr ("127.0.0.1:8443" or "https://127.0.0.1:8443"),
// or of the gateway's replicas at several addresses separated by commas
// ("10.0.0.1:8443,10.0.0.2:8443"): a call that cannot reach one address is made at the next
// (see "Several gateway replicas" in the package documentation, and NewMulti).
// It needs a client certificate (WithTLSFiles, WithTLSDir, WithTLSConfig or WithHTTPClient).
// With the TLS options the client talks only to a server whose certificate, signed by the
// trusted CA, names the gateway (spiffe://paygate/gateway); any other server fails the TLS
// handshake before it is sent anything, with an error wrapping ErrNotGateway.
// New does not connect: the first call does. With WithQueue it opens the queue and, unless
// WithoutSender is given, starts the background sender.
func New(addr string, opts ...Option) (*Client, error) {
	return NewMulti([]string{addr}, opts...)
}

// NewMulti is New for the addresses of several replicas of the gateway, in order of
// preference: calls start with the first and move on to the next when one cannot be reached.
// Each element is one address, HOST:PORT or https://HOST:PORT (or, as for New, a
// comma-separated list of them); an address given twice is an error.
func NewMulti(addrs []string, opts ...Option) (*Client, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.tlsErr != nil {
		return nil, fmt.Errorf("client: %w", cfg.tlsErr)
	}
	urls, err := parseAddrs(addrs)
	if err != nil {
		return nil, err
	}
	hc := cfg.httpClient
	if hc == nil {
		if cfg.tls == nil {
			return nil, errors.New("client: no client certificate: use WithTLSFiles or WithTLSDir")
		}
		// Only the gateway's certificate is accepted: a server that is not the gateway fails
		// the handshake before any request (a password, a token) is sent to it.
		hc = rpcserver.NewGatewayHTTPClient(cfg.tls)
	}
	c := &Client{cfg: cfg, http: hc, token: cfg.token, username: cfg.username}
	c.rep = &replicas{connectTimeout: cfg.connectTimeout, failback: cfg.failback, log: cfg.logger}
	traceCalls, err := cfg.tracingInterceptor()
	if err != nil {
		return nil, err
	}
	interceptors := []connect.Interceptor{traceCalls, authInterceptor{c}}
	if cfg.logger.Enabled(context.Background(), slog.LevelDebug) {
		interceptors = append(interceptors, callLogInterceptor{cfg.logger})
	}
	copts := []connect.ClientOption{connect.WithGRPC(), connect.WithInterceptors(interceptors...)}
	for _, u := range urls {
		c.rep.eps = append(c.rep.eps, newEndpoint(hc, u, copts))
	}
	if cfg.queueDir != "" {
		q, err := OpenQueue(cfg.queueDir)
		if err != nil {
			return nil, err
		}
		c.queue = q
		c.sender = newSender(c)
		if !cfg.noSender {
			c.sender.start()
		}
	}
	return c, nil
}

func baseURL(addr string) (string, error) {
	addr = strings.TrimSuffix(strings.TrimSpace(addr), "/")
	if addr == "" {
		return "", errors.New("client: empty gateway address")
	}
	if strings.HasPrefix(addr, "https://") {
		return addr, nil
	}
	if strings.Contains(addr, "://") {
		return "", fmt.Errorf("client: gateway address %q: only https:// is supported", addr)
	}
	return "https://" + addr, nil
}

// Close stops the background sender (a payment being sent is left in the queue and sent
// again later, with the same id), closes the queue and the idle connections.
func (c *Client) Close() error {
	var err error
	if c.sender != nil {
		c.sender.stop()
	}
	if c.queue != nil {
		err = c.queue.Close()
	}
	c.http.CloseIdleConnections()
	return err
}

// Queue returns the client's queue, or nil without WithQueue.
func (c *Client) Queue() *Queue { return c.queue }

// Token returns the bearer token the client sends, "" before Login.
func (c *Client) Token() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.token
}

// Username returns the user the client acts for, "" when unknown.
func (c *Client) Username() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.username
}

// SetToken replaces the token (and the user it belongs to) and resumes a queue paused by
// ErrLoginRequired.
func (c *Client) SetToken(token, username string) {
	c.mu.Lock()
	c.token, c.username = token, username
	c.mu.Unlock()
	if c.sender != nil {
		c.sender.resume()
	}
}

// authInterceptor adds the bearer token to every call that needs one.
type authInterceptor struct{ c *Client }

func (a authInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if tok := a.c.Token(); tok != "" && req.Spec().Procedure != gatewayv1connect.AuthServiceLoginProcedure {
			req.Header().Set("Authorization", "Bearer "+tok)
		}
		if n, ok := ctx.Value(attemptKey{}).(int); ok {
			req.Header().Set(rpcserver.AttemptHeader, strconv.Itoa(n))
		}
		return next(ctx, req)
	}
}

func (a authInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		if tok := a.c.Token(); tok != "" {
			conn.RequestHeader().Set("Authorization", "Bearer "+tok)
		}
		return conn
	}
}

func (a authInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

type attemptKey struct{}

// withAttempt makes the call carry its attempt number in the Paygate-Attempt header, which
// the gateway's logging interceptor records (retry=true from the second attempt).
func withAttempt(ctx context.Context, n int) context.Context {
	return context.WithValue(ctx, attemptKey{}, n)
}

// callCtx bounds one call by the client's timeout.
func (c *Client) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.cfg.timeout)
}

// Session is what Login returns.
type Session struct {
	Username   string
	Token      string
	ExpireTime time.Time
	// Role is the user's role: RoleCustomer or RoleAdmin ("" from a gateway that does not say).
	Role string
	// SecondFactor says the session passed the second factor (LoginWithCode with a right
	// code): an admin's session may call AdminService only then.
	SecondFactor bool
	// PasswordChangeRequired says the password is an initial one, set by an admin: every call
	// but ChangePassword and Logout is refused until ChangePassword replaces it.
	PasswordChangeRequired bool
}

// Login signs in and makes the client send the new token from now on. A queue paused by
// ErrLoginRequired resumes. An admin who means to call AdminService signs in with
// LoginWithCode instead.
func (c *Client) Login(ctx context.Context, username, password string) (Session, error) {
	return c.login(ctx, &gatewayv1.LoginRequest{Username: username, Password: password})
}

func (c *Client) login(ctx context.Context, req *gatewayv1.LoginRequest) (Session, error) {
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	var resp *connect.Response[gatewayv1.LoginResponse]
	err := c.call(ctx, sendOnce, func(ctx context.Context, ep *endpoint) (err error) {
		resp, err = ep.auth.Login(ctx, connect.NewRequest(req))
		return err
	})
	if err != nil {
		return Session{}, fmt.Errorf("login: %w", err)
	}
	m := resp.Msg
	s := Session{Username: m.GetUsername(), Token: m.GetToken(), ExpireTime: m.GetExpireTime().AsTime(),
		Role: m.GetRole(), SecondFactor: m.GetSecondFactor(), PasswordChangeRequired: m.GetPasswordChangeRequired()}
	if s.Username == "" {
		s.Username = req.GetUsername()
	}
	c.SetToken(s.Token, s.Username)
	c.cfg.logger.Info("logged in", "user", s.Username, "expires", s.ExpireTime, "role", s.Role, "second_factor", s.SecondFactor)
	return s, nil
}

// Logout revokes the client's token at the gateway and forgets it.
func (c *Client) Logout(ctx context.Context) error {
	if c.Token() == "" {
		return ErrNotLoggedIn
	}
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	err := c.call(ctx, idempotent, func(ctx context.Context, ep *endpoint) error {
		_, err := ep.auth.Logout(ctx, connect.NewRequest(&gatewayv1.LogoutRequest{}))
		return err
	})
	if err != nil && connect.CodeOf(err) != connect.CodeUnauthenticated {
		return fmt.Errorf("logout: %w", err)
	}
	c.mu.Lock()
	c.token = ""
	c.mu.Unlock()
	return nil
}

// Enrollment is an account to link at registration and the one-time enrollment code that the
// account's bank issued for it and sent to its holder, e.g.
// Enrollment{Account: "bank1-1004", Code: "K7QX-3MZD-9TRA-WP4C"}. Case, spaces and hyphens in
// the code do not matter.
type Enrollment struct {
	Account string
	Code    string
}

// Register creates a user with password and links the accounts, each proven by its enrollment
// code: the account's bank checks the code and binds it to username, so a code works for one
// username only (trying again with the same username is fine). A refused account (unknown,
// linked already, or a wrong, used or expired code) fails the whole registration with
// PermissionDenied, reason "enrollment_refused", and nothing is created; a taken username is
// AlreadyExists, reason "username_taken"; too many refused attempts are ResourceExhausted,
// reason "register_throttled". It returns the linked account ids; it does not log in.
func (c *Client) Register(ctx context.Context, username, password string, accounts ...Enrollment) ([]string, error) {
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	req := &gatewayv1.RegisterRequest{Username: username, Password: password}
	for _, a := range accounts {
		req.Accounts = append(req.Accounts, &gatewayv1.AccountEnrollment{AccountId: a.Account, EnrollmentCode: a.Code})
	}
	var resp *connect.Response[gatewayv1.RegisterResponse]
	err := c.call(ctx, sendOnce, func(ctx context.Context, ep *endpoint) (err error) {
		resp, err = ep.auth.Register(ctx, connect.NewRequest(req))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("register: %w", err)
	}
	return resp.Msg.GetAccountIds(), nil
}

// Balance returns the user's accounts at every bank and totals per currency. A bank that
// cannot be reached is reported as unavailable; the other banks still answer.
func (c *Client) Balance(ctx context.Context) (*Balances, error) {
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	var resp *connect.Response[gatewayv1.FetchBalanceResponse]
	err := c.call(ctx, idempotent, func(ctx context.Context, ep *endpoint) (err error) {
		resp, err = ep.balance.FetchBalance(ctx, connect.NewRequest(&gatewayv1.FetchBalanceRequest{}))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("balance: %w", err)
	}
	return resp.Msg, nil
}

// GetPayment returns one of the user's payments. Another user's payment is NotFound, like a
// payment that does not exist.
func (c *Client) GetPayment(ctx context.Context, id string) (*Payment, error) {
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	var resp *connect.Response[gatewayv1.GetPaymentResponse]
	err := c.call(ctx, idempotent, func(ctx context.Context, ep *endpoint) (err error) {
		resp, err = ep.payments.GetPayment(ctx, connect.NewRequest(&gatewayv1.GetPaymentRequest{PaymentId: id}))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("get payment %s: %w", id, err)
	}
	return resp.Msg.GetPayment(), nil
}

// HistoryQuery selects a page of the user's payments.
type HistoryQuery struct {
	// PageSize is the most payments per page: 0 means 20, at most 100.
	PageSize int
	// PageToken is the NextPageToken of the previous page; "" for the first page.
	PageToken string
	// Status keeps only payments with this status; unspecified keeps all.
	Status gatewayv1.PaymentStatus
	// Received lists the payments others made to the user's accounts (refunds of the user's
	// payments among them), shown without who paid (Username ""), instead of those the user
	// made. A page token belongs to its listing: it fetches no page of the other one.
	Received bool
}

// HistoryPage is one page of payments, newest first.
type HistoryPage struct {
	Payments []*Payment
	// NextPageToken fetches the next page; "" on the last page.
	NextPageToken string
}

// History returns one page of the user's payments, newest first: those the user made, or
// with q.Received those others made to the user's accounts.
func (c *Client) History(ctx context.Context, q HistoryQuery) (HistoryPage, error) {
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	var resp *connect.Response[gatewayv1.ListPaymentsResponse]
	err := c.call(ctx, idempotent, func(ctx context.Context, ep *endpoint) (err error) {
		resp, err = ep.payments.ListPayments(ctx, connect.NewRequest(&gatewayv1.ListPaymentsRequest{
			PageSize: int32(q.PageSize), PageToken: q.PageToken, Status: q.Status, Received: q.Received,
		}))
		return err
	})
	if err != nil {
		return HistoryPage{}, fmt.Errorf("history: %w", err)
	}
	return HistoryPage{Payments: resp.Msg.GetPayments(), NextPageToken: resp.Msg.GetNextPageToken()}, nil
}

// AllHistory iterates over all the user's payments, newest first, fetching pages of pageSize
// as needed. It stops at the first error, which it yields.
func (c *Client) AllHistory(ctx context.Context, pageSize int) iter.Seq2[*Payment, error] {
	return c.allHistory(ctx, HistoryQuery{PageSize: pageSize})
}

// AllReceived iterates over all the payments others made to the user's accounts (see
// HistoryQuery.Received), newest first, fetching pages of pageSize as needed. It stops at the
// first error, which it yields.
func (c *Client) AllReceived(ctx context.Context, pageSize int) iter.Seq2[*Payment, error] {
	return c.allHistory(ctx, HistoryQuery{PageSize: pageSize, Received: true})
}

// allHistory iterates over the listing of q from its first page.
func (c *Client) allHistory(ctx context.Context, q HistoryQuery) iter.Seq2[*Payment, error] {
	return func(yield func(*Payment, error) bool) {
		for {
			page, err := c.History(ctx, q)
			if err != nil {
				yield(nil, err)
				return
			}
			for _, p := range page.Payments {
				if !yield(p, nil) {
					return
				}
			}
			if page.NextPageToken == "" {
				return
			}
			q.PageToken = page.NextPageToken
		}
	}
}

// EventPage is one page of the user's events, oldest first.
type EventPage struct {
	Events []*Event
	// NextAfter is the after of the next page: the last event's Seq, or the query's after
	// when the page is empty.
	NextAfter int64
	// HasMore says whether more events follow now.
	HasMore bool
}

// ListEvents returns the user's events with a Seq above after (0: from the oldest kept),
// oldest first, at most pageSize of them (0 means 100, at most 500): every change of the
// payments the user pays and of those paid to the user's accounts.
func (c *Client) ListEvents(ctx context.Context, after int64, pageSize int) (EventPage, error) {
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	var resp *connect.Response[gatewayv1.ListEventsResponse]
	err := c.call(ctx, idempotent, func(ctx context.Context, ep *endpoint) (err error) {
		resp, err = ep.payments.ListEvents(ctx, connect.NewRequest(&gatewayv1.ListEventsRequest{After: after, PageSize: int32(pageSize)}))
		return err
	})
	if err != nil {
		return EventPage{}, fmt.Errorf("list events: %w", err)
	}
	return EventPage{Events: resp.Msg.GetEvents(), NextAfter: resp.Msg.GetNextAfter(), HasMore: resp.Msg.GetHasMore()}, nil
}

// Watch streams the changes of the user's payments (those the user pays and those paid to the
// user's accounts) from now on, as they happen, until ctx is done: WatchFrom(ctx, -1), yielding
// each event's payment. Use WatchFrom to see the events themselves.
func (c *Client) Watch(ctx context.Context) iter.Seq2[*Payment, error] {
	return func(yield func(*Payment, error) bool) {
		for ev, err := range c.WatchFrom(ctx, -1) {
			if !yield(ev.GetPayment(), err) {
				return
			}
		}
	}
}

// EventsAfterHeader is the response header of WatchPayments that says after which seq the
// stream starts: the request's after, or for a stream from now the last seq given so far.
const EventsAfterHeader = "Paygate-Events-After"

// WatchFrom streams the user's events with a Seq above after (after < 0: only those from now
// on), oldest first, then every new one as it happens, until ctx is done.
//
// When the stream breaks because its gateway address stopped answering (a replica stopped or
// is shutting down) WatchFrom connects at once to the next address, if there is another; when
// every address failed, or the stream broke otherwise, it connects again after a backoff. Each
// reconnection asks for the events after the last one yielded, so across gateway restarts and
// failovers every event is yielded once, in order, none missing (with after < 0, from the seq
// the first stream started at). It yields an error and stops when the gateway refuses the
// stream (for example ErrLoginRequired).
func (c *Client) WatchFrom(ctx context.Context, after int64) iter.Seq2[*Event, error] {
	return func(yield func(*Event, error) bool) {
		failures := 0
		for ctx.Err() == nil {
			stopped := false
			err := c.call(ctx, idempotent, func(ctx context.Context, ep *endpoint) error {
				req := &gatewayv1.WatchPaymentsRequest{}
				if after >= 0 {
					req.After = &after
				}
				stream, err := ep.payments.WatchPayments(ctx, connect.NewRequest(req))
				if err != nil {
					return err
				}
				defer stream.Close()
				if after < 0 {
					// A stream from now says in its headers where now is in the log: from
					// there a reconnection asks for what came after, even before the first
					// event (the headers come at once; a stream that failed has none).
					if v, err := strconv.ParseInt(stream.ResponseHeader().Get(EventsAfterHeader), 10, 64); err == nil && v >= 0 {
						after = v
					}
				}
				c.cfg.logger.Debug("watch: following", "after", after)
				for stream.Receive() {
					failures = 0
					msg := stream.Msg()
					ev := msg.GetEvent()
					if ev == nil {
						// A gateway without the event log: the payment only.
						ev = &Event{Payment: msg.GetPayment()}
					} else if ev.GetSeq() <= after {
						continue // seen before (a gateway never sends it again; no harm)
					} else {
						after = ev.GetSeq()
					}
					if !yield(ev, nil) {
						stopped = true
						return nil
					}
				}
				return stream.Err()
			})
			if stopped || ctx.Err() != nil {
				return
			}
			switch classify(err) {
			case classAuth:
				yield(nil, fmt.Errorf("watch: %w: %w", ErrLoginRequired, err))
				return
			case classDefinitive:
				if connect.CodeOf(err) != connect.CodeResourceExhausted {
					yield(nil, fmt.Errorf("watch: %w", err))
					return
				}
			}
			failures++
			c.cfg.logger.Debug("watch: reconnecting", "error", err, "attempt", failures, "after", after)
			if !sleepCtx(ctx, c.cfg.retry.Backoff(failures)) {
				return
			}
		}
	}
}

// Ping checks that the gateway answers its health service with SERVING: with several
// addresses, that one of them does (it is where the next call starts).
func (c *Client) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, min(c.cfg.timeout, 5*time.Second))
	defer cancel()
	err := c.call(ctx, idempotent, func(ctx context.Context, ep *endpoint) error {
		resp, err := ep.health.Check(ctx, &grpchealth.CheckRequest{})
		if err == nil && resp.Status != grpchealth.StatusServing {
			err = errNotServing{resp.Status}
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	return nil
}

// Reason returns the machine-readable reason of a gateway error ("insufficient_funds",
// "payment_id_reused", "invalid_token"...), or "" when it has none.
func Reason(err error) string { return rpcerr.Reason(err) }

// RequestID returns the request id of the gateway call that err answered, or "" when err did
// not come from a paygate server. Quote it when reporting a failure: the server's log line of
// the call (and the audit entry of an admin call) carries the same id.
func RequestID(err error) string {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return ""
	}
	for _, d := range ce.Details() {
		v, verr := d.Value()
		if verr != nil {
			continue
		}
		if info, ok := v.(*errdetails.ErrorInfo); ok && info.GetDomain() == rpcerr.Domain {
			if id := info.GetMetadata()[rpcserver.RequestIDMetadataKey]; id != "" {
				return id
			}
		}
	}
	return ce.Meta().Get(rpcserver.RequestIDHeader)
}

// errClass is what a failed attempt means for its payment.
type errClass int

const (
	// classDefinitive: the gateway refused the payment for good; retrying cannot help.
	classDefinitive errClass = iota
	// classRetry: the gateway answered but could not decide now; retry the same id later.
	classRetry
	// classOffline: the gateway could not be reached; retry after it answers its health probe.
	classOffline
	// classAuth: the token was refused; pause until the user logs in again.
	classAuth
)

// classify sorts a failed call. Definitive: InvalidArgument, PermissionDenied, AlreadyExists,
// NotFound, FailedPrecondition, OutOfRange, Unimplemented. Unauthenticated pauses. Unavailable
// without a paygate reason is a transport failure (nothing answered); everything else
// (DeadlineExceeded, Aborted "payment_in_progress", Canceled, Unavailable "bank_unavailable",
// ResourceExhausted, Internal, Unknown) is ambiguous and retried with the same payment_id.
func classify(err error) errClass {
	switch connect.CodeOf(err) {
	case connect.CodeUnauthenticated:
		return classAuth
	case connect.CodeInvalidArgument, connect.CodePermissionDenied, connect.CodeAlreadyExists,
		connect.CodeNotFound, connect.CodeFailedPrecondition, connect.CodeOutOfRange, connect.CodeUnimplemented:
		return classDefinitive
	case connect.CodeUnavailable:
		if rpcerr.Reason(err) == "" {
			return classOffline
		}
	}
	return classRetry
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func logErr(err error) slog.Attr {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return slog.String("error", ce.Code().String()+": "+ce.Message())
	}
	return slog.String("error", err.Error())
}
