package client

import (
	"crypto/tls"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"time"

	"github.com/paygate/paygate/internal/pki"
	"go.opentelemetry.io/otel/trace"
)

// Option configures a Client; pass options to New.
type Option func(*config)

type config struct {
	tls        *tls.Config
	tlsErr     error
	httpClient *http.Client
	retry      RetryPolicy
	logger     *slog.Logger
	timeout    time.Duration
	token      string
	username   string
	queueDir   string
	payWait    time.Duration
	onOutcome  func(Result)
	noSender   bool
	pollEvery  time.Duration
	// tracerProvider makes the client's spans (WithTracerProvider); nil: otel's global one.
	tracerProvider trace.TracerProvider

	connectTimeout time.Duration
	failback       time.Duration
}

func defaultConfig() config {
	return config{
		retry:     DefaultRetryPolicy(),
		logger:    slog.New(slog.DiscardHandler),
		timeout:   DefaultTimeout,
		payWait:   DefaultPayWait,
		pollEvery: time.Second,

		connectTimeout: DefaultConnectTimeout,
		failback:       DefaultFailback,
	}
}

// Defaults of the options.
const (
	// DefaultTimeout bounds each call to the gateway (one attempt of a payment included).
	DefaultTimeout = 30 * time.Second
	// DefaultPayWait is how long Pay waits for a queued payment's outcome before it returns
	// StatusQueued and leaves the payment to the background sender.
	DefaultPayWait = 15 * time.Second
)

// WithTLSFiles makes the client present the certificate certFile with its key keyFile and
// trust the gateway's certificate only if caFile's authority signed it and it names the gateway
// (spiffe://paygate/gateway). These are the files `paygate certs` makes: ca.pem, client-cli.pem
// and client-cli-key.pem.
func WithTLSFiles(caFile, certFile, keyFile string) Option {
	return func(c *config) {
		c.tls, c.tlsErr = pki.ClientTLS(caFile, certFile, keyFile)
	}
}

// WithTLSDir is WithTLSFiles for the usual names in a directory made by `paygate certs` (or
// .paygate/certs of `paygate dev`): ca.pem, client-cli.pem and client-cli-key.pem.
func WithTLSDir(dir string) Option {
	return WithTLSFiles(filepath.Join(dir, "ca.pem"), filepath.Join(dir, "client-cli.pem"), filepath.Join(dir, "client-cli-key.pem"))
}

// WithTLSConfig uses a TLS configuration made elsewhere. It must present a client certificate
// signed by the gateway's authority. The client adds its own check that the server's
// certificate names the gateway (spiffe://paygate/gateway).
func WithTLSConfig(cfg *tls.Config) Option {
	return func(c *config) { c.tls, c.tlsErr = cfg, nil }
}

// WithHTTPClient uses hc for every call instead of an HTTP/2 client built from the TLS options.
// hc must speak HTTP/2 over TLS with a client certificate. The client cannot check whom hc
// reaches: hc's TLS configuration must check that the server's certificate names the gateway
// (spiffe://paygate/gateway) itself, or the password of Login may go to another server.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *config) { c.httpClient = hc }
}

// WithRetry sets how failed attempts are retried. Zero fields of p take the defaults of
// DefaultRetryPolicy.
func WithRetry(p RetryPolicy) Option {
	return func(c *config) { c.retry = p.withDefaults() }
}

// WithLogger makes the client log its attempts, retries and queue activity to l (at DEBUG and
// INFO; failures at WARN). By default nothing is logged. Tokens and passwords are never logged.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) {
		if l != nil {
			c.logger = l
		}
	}
}

// WithTimeout bounds each call to the gateway, one attempt of a payment included (default
// DefaultTimeout), at all its addresses together when it moves from one to the next. A call
// whose context has an earlier deadline keeps it.
func WithTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.timeout = d
		}
	}
}

// WithConnectTimeout bounds how long a call waits for a connection (TCP and TLS) to one
// gateway address when there are others left to try (default DefaultConnectTimeout): an
// address that does not refuse but never connects (a stopped machine, a dropped route) then
// leaves time for the next. Each of those addresses gets at most its share of the call's time
// left; the last address tried has all of it. With a single address it has no effect.
func WithConnectTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.connectTimeout = d
		}
	}
}

// WithFailback sets how long the client keeps starting its calls with an address other than
// the first before it tries the addresses before it again (default DefaultFailback); while
// they stay unreachable, at most once per d. A negative d never goes back: the client stays
// with the address that answered last.
func WithFailback(d time.Duration) Option {
	return func(c *config) {
		if d != 0 {
			c.failback = d
		}
	}
}

// WithToken makes the client send token, from an earlier Login, as its bearer token.
// Use WithUsername as well when the client has a queue, so that queued payments are recorded as
// that user's.
func WithToken(token string) Option {
	return func(c *config) { c.token = token }
}

// WithUsername names the user the token of WithToken belongs to. Login sets it by itself.
func WithUsername(name string) Option {
	return func(c *config) { c.username = name }
}

// WithQueue gives the client a durable offline queue in dir (created with mode 0700 if
// needed), normally the user's state directory. Pay then records each payment there before its
// first attempt, and a background sender delivers what could not be delivered at once. See the
// package documentation, "The offline queue".
func WithQueue(dir string) Option {
	return func(c *config) { c.queueDir = dir }
}

// WithPayWait sets how long Pay, with a queue, waits for a payment's outcome before returning
// StatusQueued (default DefaultPayWait). When the gateway cannot be reached at all, Pay returns
// at once.
func WithPayWait(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.payWait = d
		}
	}
}

// WithOutcomes makes the client call f with the outcome of every queued payment that its
// sender settles and that no Pay call is waiting for: the payments queued while the gateway was
// unreachable, including those queued by an earlier process. f runs on the sender's goroutine
// (keep it short), before the outcome is recorded as reported: if the process dies in between,
// a later client reports it again, so f sees every outcome at least once.
func WithOutcomes(f func(Result)) Option {
	return func(c *config) { c.onOutcome = f }
}

// WithoutSender opens the queue without starting the background sender: the client can list
// the queue and add to it, and another process (or a later one) delivers.
func WithoutSender() Option {
	return func(c *config) { c.noSender = true }
}

// RetryPolicy says how attempts that failed ambiguously (the gateway unreachable, a deadline
// passed, a bank briefly unavailable, the payment still in progress) are retried: the same
// payment_id again after a jittered, exponentially growing delay.
type RetryPolicy struct {
	// InitialBackoff is the delay before the first retry (default 200ms).
	InitialBackoff time.Duration
	// MaxBackoff caps the delay between attempts, and the period of the health probe while the
	// gateway is unreachable (default 30s).
	MaxBackoff time.Duration
	// Multiplier grows the delay after each attempt (default 2).
	Multiplier float64
	// Jitter is the fraction of each delay that is random, up to 1 (default 0.5; negative for
	// none): with 0.5 a delay of 2s becomes between 1s and 2s. Jitter keeps many clients that
	// lost the gateway at once from coming back at once.
	Jitter float64
	// MaxAttempts bounds the attempts of Pay on a client without a queue (default 8). With
	// several gateway addresses, one attempt tries them in turn until one answers; each call
	// counts in Result.Attempts. The queue's sender never gives up: it retries until the
	// payment has an outcome.
	MaxAttempts int
}

// DefaultRetryPolicy returns the defaults: 200ms, doubling, up to 30s, half jitter, 8
// attempts without a queue.
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{InitialBackoff: 200 * time.Millisecond, MaxBackoff: 30 * time.Second, Multiplier: 2, Jitter: 0.5, MaxAttempts: 8}
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	d := DefaultRetryPolicy()
	if p.InitialBackoff <= 0 {
		p.InitialBackoff = d.InitialBackoff
	}
	if p.MaxBackoff <= 0 {
		p.MaxBackoff = d.MaxBackoff
	}
	if p.MaxBackoff < p.InitialBackoff {
		p.MaxBackoff = p.InitialBackoff
	}
	if p.Multiplier < 1 {
		p.Multiplier = d.Multiplier
	}
	switch {
	case p.Jitter == 0:
		p.Jitter = d.Jitter
	case p.Jitter < 0:
		p.Jitter = 0
	case p.Jitter > 1:
		p.Jitter = 1
	}
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = d.MaxAttempts
	}
	return p
}

// Backoff returns the delay after failed attempt number attempt (1 for the first attempt):
// InitialBackoff × Multiplier^(attempt-1), capped at MaxBackoff, of which the Jitter fraction is
// random.
func (p RetryPolicy) Backoff(attempt int) time.Duration {
	p = p.withDefaults()
	d := float64(p.InitialBackoff)
	for i := 1; i < attempt && d < float64(p.MaxBackoff); i++ {
		d *= p.Multiplier
	}
	if d > float64(p.MaxBackoff) {
		d = float64(p.MaxBackoff)
	}
	fixed := d * (1 - p.Jitter)
	return time.Duration(fixed + rand.Float64()*(d-fixed))
}
