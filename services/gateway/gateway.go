package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/crypto/bcrypt"

	"github.com/paygate/paygate/gen/paygate/bank/v1/bankv1connect"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
	"github.com/paygate/paygate/internal/metrics"
	"github.com/paygate/paygate/internal/pki"
	"github.com/paygate/paygate/internal/rpcserver"
	"github.com/paygate/paygate/internal/webhook"
)

// Config configures a gateway. Zero durations take the defaults in DefaultConfig.
type Config struct {
	// Listen is the API listener's address (mTLS: a client certificate is required).
	Listen string
	// WebListen is the web listener's address (server TLS only, user-facing services); empty
	// disables it.
	WebListen string
	// WebHandler serves the web listener's requests that no service claims: the dashboard
	// (cmd/paygate passes web.Handler). Nil answers them 404.
	WebHandler http.Handler
	// Banks maps each bank's name to its base URL, e.g. "bank1" → "https://127.0.0.1:9001".
	Banks map[string]string
	// UsersFile is user_details.json, imported on first start.
	UsersFile string
	// DataDir holds gateway.db, the SQLite store, when DatabaseURL is empty.
	DataDir string
	// DatabaseURL, when set (postgres://...), keeps the gateway's store in PostgreSQL instead,
	// where any number of gateway replicas may share it (see docs/SCALING.md).
	DatabaseURL string
	// LeaseTTL is how long a replica's lease on the payments it drives lasts without renewal,
	// on a PostgreSQL store (default 10s): a replica that dies has its payments taken over by
	// another after this long.
	LeaseTTL time.Duration
	// CAFile, CertFile and KeyFile are the gateway's PKI material (gateway role).
	CAFile, CertFile, KeyFile string

	// TxnTimeout bounds the time from admission to decision (default 30s).
	TxnTimeout time.Duration
	// TokenTTL is how long a login token is valid (default 12h).
	TokenTTL time.Duration
	// BankCallTimeout bounds balance and account look-ups at banks (default 5s).
	BankCallTimeout time.Duration
	// HealthInterval is the period of bank health probes (default 1s).
	HealthInterval time.Duration
	// RecoveryInterval is the period of the recovery loop (default 1s).
	RecoveryInterval time.Duration
	// BcryptCost is the cost of password hashes (default bcrypt.DefaultCost).
	BcryptCost int
	// NoBatching sends every prepare, commit and abort as its own call. Batching concurrent
	// messages to the same bank is on by default; turning it off is for measuring what it buys.
	NoBatching bool
	// NoGroupCommit gives every write to the gateway's store its own transaction and sync.
	NoGroupCommit bool
	// LoginFailuresBurst failed logins are allowed per user and per address before throttling,
	// then one every LoginFailureEvery (defaults 5 and 10s).
	LoginFailuresBurst int
	LoginFailureEvery  time.Duration
	// MaxSessionsPerUser bounds a user's live (unexpired, not logged out) sessions; a login
	// beyond it is refused with too_many_sessions (default 100).
	MaxSessionsPerUser int
	// MaxWatchersPerUser bounds a user's open WatchPayments streams; one more is refused with
	// too_many_watchers (default 16).
	MaxWatchersPerUser int

	// WebhookAllowPrivate lets webhook endpoints be at private, loopback and link-local
	// addresses (development, tests, or endpoints on the operator's own network); by default
	// only public addresses are, checked at registration and on every connection.
	WebhookAllowPrivate bool
	// WebhookAllowHTTP lets webhook endpoints be plain http:// URLs; by default only https.
	WebhookAllowHTTP bool
	// WebhookTimeout bounds one webhook attempt (default 10s).
	WebhookTimeout time.Duration
	// WebhookRetryFor is how long a delivery is retried after its first attempt (default 72h).
	WebhookRetryFor time.Duration
	// WebhookBackoffMin and WebhookBackoffMax are the wait after a delivery's first failed
	// attempt and the longest wait, doubling in between, with jitter (defaults 30s and 6h).
	WebhookBackoffMin, WebhookBackoffMax time.Duration
	// WebhookRootCAs verifies the endpoints' certificates; nil is the system's roots. For tests.
	WebhookRootCAs *x509.CertPool
	// testWebhookPolicy replaces the address policy that WebhookAllowPrivate chooses, in tests
	// (one loopback address allowed, another not).
	testWebhookPolicy webhook.AddressPolicy
	// EventRetention is how long events, and ended webhook deliveries, are kept; 0 keeps them
	// forever. DefaultConfig sets 30 days. Events not fanned out to webhooks yet are kept.
	EventRetention time.Duration

	// Metrics, when set, receives the gateway's metrics: its RPCs (metrics.RPCInterceptor on
	// both listeners), payments and their phases, and its banks' health. Serving it is the
	// caller's business (metrics.Listen). Nil: no metrics.
	Metrics *prometheus.Registry

	// TracerProvider, when on (tracing.On), traces the gateway: a span for every call to its
	// listeners and to the banks, and the spans of each payment (see tracing.go). Nil or
	// no-op: no spans, no interceptor.
	TracerProvider trace.TracerProvider

	Logger *slog.Logger
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Listen:             "127.0.0.1:8443",
		TxnTimeout:         30 * time.Second,
		TokenTTL:           12 * time.Hour,
		BankCallTimeout:    5 * time.Second,
		HealthInterval:     time.Second,
		RecoveryInterval:   time.Second,
		BcryptCost:         bcrypt.DefaultCost,
		LoginFailuresBurst: 5,
		LoginFailureEvery:  10 * time.Second,
		MaxSessionsPerUser: 100,
		MaxWatchersPerUser: 16,
		LeaseTTL:           DefaultLeaseTTL,
		WebhookTimeout:     webhook.DefaultTimeout,
		WebhookRetryFor:    webhook.DefaultHorizon,
		WebhookBackoffMin:  webhook.DefaultBase,
		WebhookBackoffMax:  webhook.DefaultMax,
		EventRetention:     DefaultEventRetention,
	}
}

// DefaultEventRetention is how long events are kept unless configured.
const DefaultEventRetention = 30 * 24 * time.Hour

func (c *Config) applyDefaults() {
	d := DefaultConfig()
	if c.TxnTimeout == 0 {
		c.TxnTimeout = d.TxnTimeout
	}
	if c.TokenTTL == 0 {
		c.TokenTTL = d.TokenTTL
	}
	if c.BankCallTimeout == 0 {
		c.BankCallTimeout = d.BankCallTimeout
	}
	if c.HealthInterval == 0 {
		c.HealthInterval = d.HealthInterval
	}
	if c.RecoveryInterval == 0 {
		c.RecoveryInterval = d.RecoveryInterval
	}
	if c.BcryptCost == 0 {
		c.BcryptCost = d.BcryptCost
	}
	if c.LoginFailuresBurst == 0 {
		c.LoginFailuresBurst = d.LoginFailuresBurst
	}
	if c.LoginFailureEvery == 0 {
		c.LoginFailureEvery = d.LoginFailureEvery
	}
	if c.MaxSessionsPerUser == 0 {
		c.MaxSessionsPerUser = d.MaxSessionsPerUser
	}
	if c.MaxWatchersPerUser == 0 {
		c.MaxWatchersPerUser = d.MaxWatchersPerUser
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = d.LeaseTTL
	}
	if c.WebhookTimeout == 0 {
		c.WebhookTimeout = d.WebhookTimeout
	}
	if c.WebhookRetryFor == 0 {
		c.WebhookRetryFor = d.WebhookRetryFor
	}
	if c.WebhookBackoffMin == 0 {
		c.WebhookBackoffMin = d.WebhookBackoffMin
	}
	if c.WebhookBackoffMax == 0 {
		c.WebhookBackoffMax = d.WebhookBackoffMax
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports the first problem with c.
func (c *Config) Validate() error {
	var errs []error
	if c.Listen == "" {
		errs = append(errs, errors.New("--listen: address required"))
	}
	if len(c.Banks) == 0 {
		errs = append(errs, errors.New("--bank: at least one NAME=ADDR required"))
	}
	for name, u := range c.Banks {
		if name == "" || strings.ContainsAny(name, "=/ ") {
			errs = append(errs, fmt.Errorf("--bank: bad bank name %q", name))
		}
		if !strings.HasPrefix(u, "https://") {
			errs = append(errs, fmt.Errorf("--bank %s: address %q must be https://HOST:PORT", name, u))
		}
	}
	if c.UsersFile == "" {
		errs = append(errs, errors.New("--users: users file required"))
	}
	if c.DataDir == "" && c.DatabaseURL == "" {
		errs = append(errs, errors.New("--data: data directory required (or --database-url)"))
	}
	if c.LeaseTTL < 0 {
		errs = append(errs, errors.New("--lease-ttl: must be positive"))
	}
	if c.CAFile == "" || c.CertFile == "" || c.KeyFile == "" {
		errs = append(errs, errors.New("--ca, --cert and --key are required"))
	}
	if c.TxnTimeout < 0 || c.TokenTTL < 0 || c.BankCallTimeout < 0 {
		errs = append(errs, errors.New("timeouts must be positive"))
	}
	if c.BcryptCost != 0 && (c.BcryptCost < bcrypt.MinCost || c.BcryptCost > bcrypt.MaxCost) {
		errs = append(errs, fmt.Errorf("bcrypt cost %d out of range", c.BcryptCost))
	}
	if c.MaxSessionsPerUser < 0 {
		errs = append(errs, fmt.Errorf("--max-sessions-per-user %d: want at least 1", c.MaxSessionsPerUser))
	}
	if c.WebhookTimeout < 0 || c.WebhookRetryFor < 0 || c.WebhookBackoffMin < 0 || c.WebhookBackoffMax < 0 {
		errs = append(errs, errors.New("--webhook-timeout, --webhook-retry-for, --webhook-backoff-min and --webhook-backoff-max must be positive"))
	}
	if c.WebhookBackoffMax != 0 && c.WebhookBackoffMax < c.WebhookBackoffMin {
		errs = append(errs, fmt.Errorf("--webhook-backoff-max %s: less than --webhook-backoff-min %s", c.WebhookBackoffMax, c.WebhookBackoffMin))
	}
	if c.EventRetention < 0 {
		errs = append(errs, errors.New("--event-retention: must be positive, or 0 to keep events forever"))
	}
	if c.MaxWatchersPerUser < 0 {
		errs = append(errs, fmt.Errorf("--max-watchers-per-user %d: want at least 1", c.MaxWatchersPerUser))
	}
	return errors.Join(errs...)
}

// Gateway is a running payment gateway.
type Gateway struct {
	cfg    Config
	logger *slog.Logger
	store  Store
	banks  map[string]bankv1connect.BankServiceClient
	coord  *Coordinator
	health *bankHealth
	events *broker
	// eventSeq numbers the store's event log and says how far it is numbered (eventseq.go).
	eventSeq *eventSequencer
	// eventHub reads the log once for all the payment streams (events_api.go).
	eventHub *eventHub
	// webhooks fans events out to webhook endpoints and delivers them (webhooks_delivery.go).
	webhooks *webhookEngine
	throttle attemptBudget
	// registerThrottle limits refused registrations per address and per account.
	registerThrottle attemptBudget
	sessions         sessionCache
	owners           ownerCache
	now              func() time.Time

	healthClients map[string]*grpchealth.Client

	api, web *rpcserver.Server
	apiLn    net.Listener
	webLn    net.Listener

	cancel context.CancelFunc
	wg     sync.WaitGroup
	// stopBatchers ends the batching participants' senders and waits for them.
	stopBatchers func()
	batchers     sync.WaitGroup
	// draining is closed when Shutdown starts; long-lived streams end on it.
	draining     chan struct{}
	drainingOnce sync.Once

	// refusals bounds what refused admin calls write to the audit log (refusalBudget).
	refusals     *refusalLimiter
	refusalsOnce sync.Once
}

// Policy is who may call each procedure of the gateway.
var Policy = rpcserver.Policy{
	gatewayv1connect.AuthServiceLoginProcedure:              rpcserver.AccessClient,
	gatewayv1connect.AuthServiceRegisterProcedure:           rpcserver.AccessClient,
	gatewayv1connect.AuthServiceLogoutProcedure:             rpcserver.AccessUser,
	gatewayv1connect.AuthServiceChangePasswordProcedure:     rpcserver.AccessUser,
	gatewayv1connect.PaymentServiceExecutePaymentProcedure:  rpcserver.AccessUser,
	gatewayv1connect.PaymentServiceGetPaymentProcedure:      rpcserver.AccessUser,
	gatewayv1connect.PaymentServiceListPaymentsProcedure:    rpcserver.AccessUser,
	gatewayv1connect.PaymentServiceWatchPaymentsProcedure:   rpcserver.AccessUser,
	gatewayv1connect.PaymentServiceListEventsProcedure:      rpcserver.AccessUser,
	gatewayv1connect.PaymentServiceRefundPaymentProcedure:   rpcserver.AccessUser,
	gatewayv1connect.BalanceServiceFetchBalanceProcedure:    rpcserver.AccessUser,
	gatewayv1connect.CoordinatorServiceGetDecisionProcedure: rpcserver.AccessBank,

	gatewayv1connect.WebhookServiceCreateWebhookEndpointProcedure:  rpcserver.AccessUser,
	gatewayv1connect.WebhookServiceListWebhookEndpointsProcedure:   rpcserver.AccessUser,
	gatewayv1connect.WebhookServiceDeleteWebhookEndpointProcedure:  rpcserver.AccessUser,
	gatewayv1connect.WebhookServiceEnableWebhookEndpointProcedure:  rpcserver.AccessUser,
	gatewayv1connect.WebhookServiceDisableWebhookEndpointProcedure: rpcserver.AccessUser,
	gatewayv1connect.WebhookServiceRotateWebhookSecretProcedure:    rpcserver.AccessUser,
	gatewayv1connect.WebhookServiceListWebhookDeliveriesProcedure:  rpcserver.AccessUser,
	gatewayv1connect.WebhookServiceRedeliverWebhookProcedure:       rpcserver.AccessUser,
}

// BankHealthService is the name under which the gateway's health service reports a bank:
// "bank/<name>".
func BankHealthService(bank string) string { return "bank/" + bank }

// New opens the store, imports users on first start and prepares the clients of the banks. It
// serves nothing until Start.
func New(ctx context.Context, cfg Config) (*Gateway, error) {
	cfg.applyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	g := &Gateway{cfg: cfg, logger: cfg.Logger, now: time.Now, events: newBroker(), draining: make(chan struct{})}
	store, err := openStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	g.store = store
	g.eventSeq = newEventSequencer(store, g.logger)
	g.eventHub = newEventHub(store, g.eventSeq, g.logger)
	g.webhooks = newWebhookEngine(cfg, store, g.eventSeq, g.logger)
	g.now = store.Now // sessions expire by the store's clock, the same for every replica
	g.throttle = newThrottle(store, "login", cfg.LoginFailureEvery, cfg.LoginFailuresBurst)
	g.registerThrottle = newThrottle(store, "register", cfg.LoginFailureEvery, 4*cfg.LoginFailuresBurst)
	// A failure from here on undoes what New started: the batchers' goroutines and the store.
	ok := false
	defer func() {
		if ok {
			return
		}
		if g.stopBatchers != nil {
			g.stopBatchers()
		}
		store.Close()
	}()
	if err := g.importUsers(ctx, cfg.UsersFile); err != nil {
		return nil, err
	}

	clientTLS, err := pki.ClientTLS(cfg.CAFile, cfg.CertFile, cfg.KeyFile)
	if err != nil {
		return nil, err
	}
	// One HTTP client per bank, each accepting only that bank's certificate: a server at a
	// bank's address that is not that bank fails the handshake before it is sent anything.
	bankHTTP := make(map[string]*http.Client, len(cfg.Banks))
	for name := range cfg.Banks {
		hc, err := rpcserver.NewBankHTTPClient(clientTLS, name)
		if err != nil {
			return nil, fmt.Errorf("gateway: %w", err)
		}
		bankHTTP[name] = hc
	}
	g.banks = make(map[string]bankv1connect.BankServiceClient, len(cfg.Banks))
	participants := make(map[string]participant, len(cfg.Banks))
	var names []string
	batchCtx, stopBatchers := context.WithCancel(context.WithoutCancel(ctx))
	g.stopBatchers = func() { stopBatchers(); g.batchers.Wait() }
	var pm *paymentMetrics
	var clientRPC connect.Interceptor // counts the calls to the banks
	if cfg.Metrics != nil {
		pm = newPaymentMetrics(cfg.Metrics, slices.Sorted(maps.Keys(cfg.Banks)))
		clientRPC = metrics.NewRPCClientInterceptor(cfg.Metrics, bankProcedures())
		g.registerMetrics(cfg.Metrics)
		g.webhooks.metrics = newWebhookMetrics(cfg.Metrics, store, g.logger)
	}
	apiTrace, webTrace, clientTrace, err := tracingInterceptors(cfg.TracerProvider)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	bankOpts := rpcserver.ClientOptions(clientRPC, clientTrace)
	for name, url := range cfg.Banks {
		// rpcserver.ClientOptions forward the request id of the call a bank call is made for
		// (a payment's prepare carries the payment's id into the bank's log line). A batched
		// call carries several payments: it is made in the context of the batch's first
		// live payment (see (*batcher).send), so it forwards that payment's id.
		c := bankv1connect.NewBankServiceClient(bankHTTP[name], url, bankOpts...)
		g.banks[name] = c
		if cfg.NoBatching {
			participants[name] = c
		} else {
			bp := newBatchingParticipant(batchCtx, &g.batchers, c)
			bp.metrics = pm.bankCallsOf(name)
			participants[name] = bp
		}
		names = append(names, name)
	}
	sort.Strings(names)

	serverTLS, err := pki.ServerTLS(cfg.CAFile, cfg.CertFile, cfg.KeyFile, tls.RequireAndVerifyClientCert)
	if err != nil {
		return nil, err
	}
	var interceptors []connect.Interceptor
	if cfg.Metrics != nil {
		interceptors = []connect.Interceptor{metrics.NewRPCInterceptor(cfg.Metrics, slices.Collect(maps.Keys(Policy)))}
	}
	g.api, err = rpcserver.New(rpcserver.Config{Name: "gateway", Logger: g.logger, Policy: Policy, Authenticate: g.authenticator, AuthorizeAdmin: g.authorizeAdmin, OnAdminRefused: g.auditRefusal, Interceptors: interceptors, Tracing: apiTrace, MapError: mapError, TLS: serverTLS})
	if err != nil {
		return nil, err
	}
	g.health = newBankHealth(names, g.logger, func(bank string, up bool) {
		st := grpchealth.StatusNotServing
		if up {
			st = grpchealth.StatusServing
		}
		g.api.Health().SetStatus(BankHealthService(bank), st)
		pm.setBankUp(bank, up)
		if g.web != nil {
			g.web.Health().SetStatus(BankHealthService(bank), st)
		}
	})
	proofKey, err := store.Secret(ctx, proofKeyName, 32)
	if err != nil {
		return nil, err
	}
	tracer := coordinatorTracer(cfg.TracerProvider)
	g.coord = newCoordinator(traceStore(store, tracer), participants, g.health, g.events, g.logger, cfg.TxnTimeout, proofKey)
	g.coord.tracer = tracer
	g.coord.metrics = pm
	g.mount(g.api, true)

	if cfg.WebListen != "" {
		webTLS, err := pki.ServerTLS(cfg.CAFile, cfg.CertFile, cfg.KeyFile, tls.NoClientCert)
		if err != nil {
			return nil, err
		}
		g.web, err = rpcserver.New(rpcserver.Config{Name: "gateway-web", Logger: g.logger, Policy: Policy, Authenticate: g.authenticator, AuthorizeAdmin: g.authorizeAdmin, OnAdminRefused: g.auditRefusal, Interceptors: interceptors, Tracing: webTrace, MapError: mapError, TLS: webTLS})
		if err != nil {
			return nil, err
		}
		g.mount(g.web, false)
		if cfg.WebHandler != nil {
			g.web.HandleFallback(cfg.WebHandler) // the dashboard
		}
	}
	for _, name := range names {
		pm.setBankUp(name, true)
		g.api.Health().SetStatus(BankHealthService(name), grpchealth.StatusServing)
		if g.web != nil {
			g.web.Health().SetStatus(BankHealthService(name), grpchealth.StatusServing)
		}
	}
	g.healthClients = make(map[string]*grpchealth.Client, len(names))
	for name, url := range cfg.Banks {
		g.healthClients[name] = grpchealth.NewClient(bankHTTP[name], url, bankOpts...)
	}
	ok = true
	return g, nil
}

// openStore opens the store cfg names: PostgreSQL at DatabaseURL, or SQLite under DataDir.
func openStore(ctx context.Context, cfg Config) (Store, error) {
	if cfg.DatabaseURL != "" {
		s, err := OpenPGStore(ctx, cfg.DatabaseURL, PGStoreOptions{LeaseTTL: cfg.LeaseTTL, Logger: cfg.Logger})
		if err != nil {
			return nil, err
		}
		return s, nil
	}
	s, err := OpenStore(ctx, filepath.Join(cfg.DataDir, "gateway.db"), cfg.NoGroupCommit)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// mount registers the gateway's services on srv; the coordinator service only on the API
// listener (banks never call the web listener).
func (g *Gateway) mount(srv *rpcserver.Server, withCoordinator bool) {
	opts := srv.HandlerOptions()
	srv.Handle(gatewayv1connect.NewAuthServiceHandler(g, opts...))
	srv.Handle(gatewayv1connect.NewPaymentServiceHandler(g, opts...))
	srv.Handle(gatewayv1connect.NewBalanceServiceHandler(g, opts...))
	srv.Handle(gatewayv1connect.NewWebhookServiceHandler(&webhookService{g: g}, opts...))
	srv.Handle(gatewayv1connect.NewAdminServiceHandler(&adminService{g: g}, opts...))
	if withCoordinator {
		srv.Handle(gatewayv1connect.NewCoordinatorServiceHandler(g, opts...))
	}
}

func (g *Gateway) authenticator(ctx context.Context, req rpcserver.Request) (context.Context, string, error) {
	ctx, p, err := g.authenticate(ctx, req.Header().Get("Authorization"))
	return ctx, p.Username, err
}

// setCallUser names the user in the call's log line, for calls that are not AccessUser.
func setCallUser(ctx context.Context, username string) { rpcserver.CallInfoFrom(ctx).SetUser(username) }

// addCallAttrs adds attributes to the call's log line.
func addCallAttrs(ctx context.Context, attrs ...slog.Attr) { rpcserver.CallInfoFrom(ctx).Add(attrs...) }

// Start listens on the configured addresses and starts serving and the background loops.
func (g *Gateway) Start(ctx context.Context) error {
	var err error
	g.apiLn, err = net.Listen("tcp", g.cfg.Listen)
	if err != nil {
		return fmt.Errorf("gateway: listen %s: %w", g.cfg.Listen, err)
	}
	if g.web != nil {
		g.webLn, err = net.Listen("tcp", g.cfg.WebListen)
		if err != nil {
			g.apiLn.Close()
			g.apiLn = nil
			return fmt.Errorf("gateway: listen %s: %w", g.cfg.WebListen, err)
		}
	}
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	g.cancel = cancel
	// The trail's writer runs until Shutdown has written the last events, after the loops.
	g.coord.trail.start()
	g.serve(g.api, g.apiLn)
	if g.web != nil {
		g.serve(g.web, g.webLn)
	}
	g.wg.Add(8)
	go func() { defer g.wg.Done(); g.health.probe(bg, g.healthClients, g.cfg.HealthInterval) }()
	go func() { defer g.wg.Done(); g.coord.Recover(bg, g.cfg.RecoveryInterval) }()
	go func() { defer g.wg.Done(); g.expireSessions(bg) }()
	go func() { defer g.wg.Done(); g.coord.keepLease(bg) }()
	go func() { defer g.wg.Done(); g.coord.listen(bg) }()
	go func() { defer g.wg.Done(); g.eventSeq.run(bg) }()
	go func() { defer g.wg.Done(); g.eventHub.run(bg) }()
	go func() { defer g.wg.Done(); g.webhooks.run(bg) }()
	g.logger.Info("gateway serving", "api", g.apiLn.Addr().String(), "web", g.WebAddr(), "banks", len(g.banks), "txn_timeout", g.cfg.TxnTimeout)
	return nil
}

func (g *Gateway) serve(srv *rpcserver.Server, ln net.Listener) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			g.logger.Error("serve", "error", err)
		}
	}()
}

func (g *Gateway) expireSessions(ctx context.Context) {
	t := time.NewTicker(10 * time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if n, err := g.store.DeleteExpiredSessions(ctx, g.now()); err == nil && n > 0 {
				g.logger.Debug("deleted expired sessions", "sessions", n)
			}
		}
	}
}

// Addr is the API listener's address once started.
func (g *Gateway) Addr() string {
	if g.apiLn == nil {
		return ""
	}
	return g.apiLn.Addr().String()
}

// WebAddr is the web listener's address once started, or "".
func (g *Gateway) WebAddr() string {
	if g.webLn == nil {
		return ""
	}
	return g.webLn.Addr().String()
}

// Shutdown stops accepting calls, lets calls in flight finish until ctx ends, stops the
// background loops and the phase twos still running, writes the payments' trail events
// still queued, hands the replica's unfinished payments back and closes the store, in that
// order.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.drainingOnce.Do(func() { close(g.draining) })
	var errs []error
	if g.apiLn != nil {
		errs = append(errs, g.api.Shutdown(ctx))
	}
	if g.webLn != nil {
		errs = append(errs, g.web.Shutdown(ctx))
	}
	if g.cancel != nil {
		g.cancel()
	}
	g.wg.Wait()
	g.coord.WaitBackground()
	g.stopBatchers()
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	errs = append(errs, g.coord.trail.close(hctx))
	errs = append(errs, g.coord.handBack(hctx))
	cancel()
	errs = append(errs, g.store.Close())
	return errors.Join(errs...)
}

// Run starts a gateway and serves until ctx ends, then shuts down gracefully.
func Run(ctx context.Context, cfg Config) error {
	g, err := New(ctx, cfg)
	if err != nil {
		return err
	}
	if err := g.Start(ctx); err != nil {
		g.Shutdown(context.Background()) // closes the store and stops the batchers
		return err
	}
	<-ctx.Done()
	g.logger.Info("gateway shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return g.Shutdown(sctx)
}
