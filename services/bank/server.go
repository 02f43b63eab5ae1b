package bank

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/paygate/paygate/gen/paygate/bank/v1/bankv1connect"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
	"github.com/paygate/paygate/internal/metrics"
	"github.com/paygate/paygate/internal/pki"
	"github.com/paygate/paygate/internal/rpcerr"
	"github.com/paygate/paygate/internal/rpcserver"
	"github.com/paygate/paygate/internal/tracing"
)

// Policy is who may call each procedure of a bank: the gateway role only.
var Policy = rpcserver.Policy{
	bankv1connect.BankServicePrepareTransactionProcedure:   rpcserver.AccessGateway,
	bankv1connect.BankServiceCommitTransactionProcedure:    rpcserver.AccessGateway,
	bankv1connect.BankServiceAbortTransactionProcedure:     rpcserver.AccessGateway,
	bankv1connect.BankServiceBatchProcedure:                rpcserver.AccessGateway,
	bankv1connect.BankServiceFetchBankBalanceProcedure:     rpcserver.AccessGateway,
	bankv1connect.BankServiceGetAccountProcedure:           rpcserver.AccessGateway,
	bankv1connect.BankServiceListAccountsProcedure:         rpcserver.AccessGateway,
	bankv1connect.BankServiceGetTransactionProcedure:       rpcserver.AccessGateway,
	bankv1connect.BankServiceRedeemEnrollmentCodeProcedure: rpcserver.AccessGateway,
	bankv1connect.BankServiceOpenAccountProcedure:          rpcserver.AccessGateway,
	bankv1connect.BankServiceCloseAccountProcedure:         rpcserver.AccessGateway,
	bankv1connect.BankServicePostEntryProcedure:            rpcserver.AccessGateway,
	bankv1connect.BankServiceListEntriesProcedure:          rpcserver.AccessGateway,
	bankv1connect.BankServiceGetLedgerSummaryProcedure:     rpcserver.AccessGateway,
}

// ServerConfig configures a bank server: the bank, its listener and its TLS material, and how
// it resolves transactions left in doubt.
type ServerConfig struct {
	Config
	// Listen is the address to serve on (mTLS).
	Listen string
	// CAFile, CertFile, KeyFile: the bank's PKI material (bank role).
	CAFile, CertFile, KeyFile string
	// GatewayURLs are the base URLs of the coordinator's replicas, any of which answers
	// GetDecision, e.g. "https://127.0.0.1:8443". For each transaction in doubt the resolver
	// asks them in turn, starting with the one that answered last, and moves on only when one
	// cannot be reached. Empty disables the in-doubt resolver.
	GatewayURLs []string
	// ResolveAfter is the grace period past a prepared transaction's deadline after which the
	// bank asks the gateway for the decision (default 5s).
	ResolveAfter time.Duration
	// ResolveInterval is how often the bank looks for transactions in doubt (default 1s).
	ResolveInterval time.Duration
	// TracerProvider, when on (tracing.On), gives every call to the bank a span, parented by
	// the gateway's (which holds paygate's certificates), and its ledger writes spans under
	// it. Nil or no-op: no spans, no interceptor.
	TracerProvider trace.TracerProvider
	// Metrics, when set, receives the bank's RPC metrics (metrics.RPCInterceptor). Serving it
	// is the caller's business (metrics.Listen). Nil: no metrics.
	Metrics *prometheus.Registry
}

// Server is a running bank server.
type Server struct {
	cfg    ServerConfig
	bank   *Bank
	srv    *rpcserver.Server
	ln     net.Listener
	coords []coordinator
	// lastAnswered is the index in coords of the replica that answered last, where the next
	// question starts. Only the resolver's goroutine uses it.
	lastAnswered int
	logger       *slog.Logger
	cancel       context.CancelFunc
	wg           sync.WaitGroup
}

// NewServer opens the bank and prepares its server; Start serves.
func NewServer(ctx context.Context, cfg ServerConfig) (*Server, error) {
	if cfg.ResolveAfter == 0 {
		cfg.ResolveAfter = 5 * time.Second
	}
	if cfg.ResolveInterval == 0 {
		cfg.ResolveInterval = time.Second
	}
	if cfg.Listen == "" {
		return nil, errors.New("bank: config: --listen: address required")
	}
	if cfg.CAFile == "" || cfg.CertFile == "" || cfg.KeyFile == "" {
		return nil, errors.New("bank: config: --ca, --cert and --key are required")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	serverTLS, err := pki.ServerTLS(cfg.CAFile, cfg.CertFile, cfg.KeyFile, tls.RequireAndVerifyClientCert)
	if err != nil {
		return nil, fmt.Errorf("bank %s: %w", cfg.Name, err)
	}
	b, err := Open(ctx, cfg.Config)
	if err != nil {
		return nil, err
	}
	var interceptors []connect.Interceptor
	if cfg.Metrics != nil {
		interceptors = []connect.Interceptor{metrics.NewRPCInterceptor(cfg.Metrics, slices.Collect(maps.Keys(Policy)))}
		observeCommits(b.Ledger, cfg.Metrics)
	}
	serverTrace, err := tracing.ServerInterceptor(cfg.TracerProvider, true)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("bank %s: %w", cfg.Name, err)
	}
	clientTrace, err := tracing.ClientInterceptor(cfg.TracerProvider)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("bank %s: %w", cfg.Name, err)
	}
	b.Service.ledger = traceLedger(b.Service.ledger, cfg.Name, cfg.TracerProvider)
	srv, err := rpcserver.New(rpcserver.Config{Name: cfg.Name, Logger: logger, Policy: Policy, Interceptors: interceptors, Tracing: serverTrace, TLS: serverTLS})
	if err != nil {
		b.Close()
		return nil, err
	}
	srv.Handle(bankv1connect.NewBankServiceHandler(b.Service, srv.HandlerOptions()...))
	s := &Server{cfg: cfg, bank: b, srv: srv, logger: logger}
	if len(cfg.GatewayURLs) > 0 {
		clientTLS, err := pki.ClientTLS(cfg.CAFile, cfg.CertFile, cfg.KeyFile)
		if err != nil {
			b.Close()
			return nil, fmt.Errorf("bank %s: %w", cfg.Name, err)
		}
		// Only the gateway's certificate may answer GetDecision, at every address.
		hc := rpcserver.NewGatewayHTTPClient(clientTLS)
		for _, u := range cfg.GatewayURLs {
			s.coords = append(s.coords, coordinator{url: u,
				client: gatewayv1connect.NewCoordinatorServiceClient(hc, u, rpcserver.ClientOptions(clientTrace)...)})
		}
	}
	return s, nil
}

// Start listens and serves, and starts the in-doubt resolver.
func (s *Server) Start(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("bank %s: listen %s: %w", s.cfg.Name, s.cfg.Listen, err)
	}
	s.ln = ln
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.logger.Error("serve", "bank", s.cfg.Name, "error", err)
		}
	}()
	if len(s.coords) > 0 {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.resolveLoop(bg) }()
	}
	s.logger.Info("bank serving", "bank", s.cfg.Name, "addr", ln.Addr().String(), "ledger", s.cfg.LedgerLocation())
	return nil
}

// Addr is the listener's address once started.
func (s *Server) Addr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Shutdown stops accepting calls, waits for calls in flight until ctx ends, stops the resolver
// and closes the ledger.
func (s *Server) Shutdown(ctx context.Context) error {
	var errs []error
	if s.ln != nil {
		errs = append(errs, s.srv.Shutdown(ctx))
	}
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
	errs = append(errs, s.bank.Close())
	return errors.Join(errs...)
}

// Run serves a bank until ctx ends, then shuts down gracefully.
func Run(ctx context.Context, cfg ServerConfig) error {
	s, err := NewServer(ctx, cfg)
	if err != nil {
		return err
	}
	if err := s.Start(ctx); err != nil {
		s.bank.Close()
		return err
	}
	<-ctx.Done()
	s.logger.Info("bank shutting down", "bank", cfg.Name)
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return s.Shutdown(sctx)
}

// resolveCallTimeout bounds each GetDecision call, at each address.
const resolveCallTimeout = 5 * time.Second

// coordinator is one replica of the gateway that the resolver may ask.
type coordinator struct {
	url    string
	client gatewayv1connect.CoordinatorServiceClient
}

// resolveLoop finds prepared transactions whose deadline passed more than ResolveAfter ago and
// asks the coordinator for their decision. The bank never decides on its own: a transaction
// stays prepared (its holds in place) until the coordinator answers.
func (s *Server) resolveLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.ResolveInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.resolveRound(ctx)
	}
}

// resolveRound asks about every transaction in doubt once. An address that cannot be reached
// is logged once per round, not once per transaction.
func (s *Server) resolveRound(ctx context.Context) {
	txns, err := s.bank.Ledger.PreparedBefore(ctx, time.Now().Add(-s.cfg.ResolveAfter))
	if err != nil {
		if ctx.Err() == nil {
			s.logger.Warn("resolver: list prepared transactions", "bank", s.cfg.Name, "error", err)
		}
		return
	}
	unreachable := make(map[string]bool)
	for _, txn := range txns {
		if ctx.Err() != nil {
			return
		}
		s.resolve(ctx, txn.ID, txn.DecisionProof, unreachable)
	}
}

func (s *Server) resolve(ctx context.Context, id string, proof []byte, unreachable map[string]bool) {
	resp, url, err := s.askDecision(ctx, id, proof, unreachable)
	if err != nil {
		if url != "" && ctx.Err() == nil {
			s.logger.Warn("resolver: coordinator refused to decide; transaction stays prepared", "bank", s.cfg.Name,
				"gateway", url, "transaction_id", id, "error", err)
		}
		return
	}
	switch resp.Msg.GetDecision() {
	case gatewayv1.Decision_DECISION_COMMIT:
		err = s.bank.Ledger.Commit(ctx, id)
	case gatewayv1.Decision_DECISION_ABORT:
		err = s.bank.Ledger.Abort(ctx, id)
	default:
		s.logger.Error("resolver: coordinator answered no decision", "bank", s.cfg.Name, "gateway", url, "transaction_id", id)
		return
	}
	if err != nil {
		s.logger.Error("resolver: apply decision", "bank", s.cfg.Name, "transaction_id", id,
			"decision", resp.Msg.GetDecision().String(), "error", err)
		return
	}
	s.logger.Info("resolver: resolved transaction in doubt", "bank", s.cfg.Name, "transaction_id", id,
		"decision", resp.Msg.GetDecision().String(), "presumed", resp.Msg.GetPresumed(), "gateway", url)
}

// askDecision asks the coordinator's addresses in turn for the decision on id, starting with
// the one that answered last, and returns the first answer with the URL that gave it: a
// decision, or an error the coordinator answered with (a refusal such as not_a_participant),
// which another replica on the same database would repeat. It moves on only when an address
// cannot be reached (see unreachableErr), logging that address once per round; when none can
// be, the URL is empty.
func (s *Server) askDecision(ctx context.Context, id string, proof []byte, unreachable map[string]bool) (*connect.Response[gatewayv1.GetDecisionResponse], string, error) {
	var err error
	for i := range s.coords {
		k := (s.lastAnswered + i) % len(s.coords)
		c := s.coords[k]
		var resp *connect.Response[gatewayv1.GetDecisionResponse]
		resp, err = c.getDecision(ctx, id, proof)
		if ctx.Err() != nil {
			return nil, "", err
		}
		if err == nil || !unreachableErr(err) {
			s.lastAnswered = k
			return resp, c.url, err
		}
		if !unreachable[c.url] {
			unreachable[c.url] = true
			s.logger.Warn("resolver: coordinator unreachable; transactions stay prepared until an address answers", "bank", s.cfg.Name,
				"gateway", c.url, "transaction_id", id, "error", err)
		}
	}
	return nil, "", err
}

// getDecision is one GetDecision call, under its own deadline.
func (c coordinator) getDecision(ctx context.Context, id string, proof []byte) (*connect.Response[gatewayv1.GetDecisionResponse], error) {
	cctx, cancel := context.WithTimeout(ctx, resolveCallTimeout)
	defer cancel()
	return c.client.GetDecision(cctx, connect.NewRequest(&gatewayv1.GetDecisionRequest{TransactionId: id, Proof: proof}))
}

// unreachableErr reports whether err means the address did not answer: the call's deadline
// passed, or the transport failed (Unavailable without a paygate reason: connection refused,
// a failed TLS handshake, a connection reset). A gateway that answers with an error of its own
// carries a reason.
func unreachableErr(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeDeadlineExceeded:
		return true
	case connect.CodeUnavailable:
		return rpcerr.Reason(err) == ""
	}
	return false
}
