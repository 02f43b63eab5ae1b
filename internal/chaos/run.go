package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
	"github.com/paygate/paygate/internal/cluster"
	"github.com/paygate/paygate/internal/faultproxy"
	"github.com/paygate/paygate/internal/pki"
	"github.com/paygate/paygate/internal/rpcserver"
)

// The system under test: three banks; each user has an account at every bank.
var (
	bankNames = []string{"bank1", "bank2", "bank3"}
	userNames = []string{"ann", "ben", "cat", "dan", "eve", "fay", "gus", "hal"}
)

// openingBalance of every account, in minor units (500.00 USD).
const openingBalance = 50000

func accountOf(bank string, n int) string { return fmt.Sprintf("%s-%d", bank, n) }

// userAccounts returns the accounts of user i, one per bank.
func userAccounts(i int) []string {
	var out []string
	for bi, b := range bankNames {
		out = append(out, accountOf(b, (bi+1)*1000+i+1))
	}
	return out
}

func password(user string) string { return "chaos-" + user + "-pass-123" }

// fixtures returns the banks' account files and the users file.
func fixtures() (map[string]string, string) {
	type account struct {
		ID      string `json:"id"`
		Holder  string `json:"holder"`
		Balance string `json:"balance"`
	}
	type userFixture struct {
		Password string   `json:"password"`
		Accounts []string `json:"accounts"`
	}
	bal := fmt.Sprintf("%d.%02d", openingBalance/100, openingBalance%100)
	accounts := map[string]string{}
	for bi, b := range bankNames {
		var list []account
		for i, u := range userNames {
			list = append(list, account{ID: userAccounts(i)[bi], Holder: u, Balance: bal})
		}
		data, _ := json.Marshal(map[string]any{"currency": "USD", "accounts": list})
		accounts[b] = string(data)
	}
	users := map[string]userFixture{}
	for i, u := range userNames {
		users[u] = userFixture{Password: password(u), Accounts: userAccounts(i)}
	}
	data, _ := json.Marshal(users)
	return accounts, string(data)
}

// system is the running cluster with its proxies and the clients' HTTP client.
type system struct {
	c       *cluster.Cluster
	g       *guard
	proxies map[string]*faultproxy.Proxy
	http    *http.Client // client-role certificate
	url     string
}

func startSystem(t cluster.TB, cfg Config) (*system, error) {
	g := &guard{base: t}
	s := &system{g: g, proxies: map[string]*faultproxy.Proxy{}}
	accounts, users := fixtures()
	opts := cluster.Options{
		Banks:            bankNames,
		Accounts:         accounts,
		Users:            users,
		TxnTimeout:       cfg.TxnTimeout,
		ResolveAfter:     cfg.ResolveAfter,
		Bin:              cfg.Bin,
		BankAddrs:        map[string]string{},
		GatewayBankAddrs: map[string]string{},
	}
	err := try(func() {
		for _, b := range bankNames {
			addr := cluster.FreePort(g)
			p, err := faultproxy.New(addr)
			if err != nil {
				g.Fatal(err)
			}
			g.Cleanup(func() { p.Close() })
			s.proxies[b] = p
			opts.BankAddrs[b] = addr
			opts.GatewayBankAddrs[b] = p.Addr()
		}
		s.c = cluster.New(g, opts)
	})
	if err != nil {
		return nil, fmt.Errorf("chaos: start the system: %w", err)
	}
	tlsCfg, err := pki.ClientTLS(s.c.CertPath("ca.pem"), s.c.CertPath("client-cli.pem"), s.c.CertPath("client-cli-key.pem"))
	if err != nil {
		return nil, err
	}
	s.http = rpcserver.NewHTTPClient(tlsCfg)
	s.url = "https://" + s.c.GatewayAddr
	return s, nil
}

// Run runs one fault run and returns its report. The error is for a run that could not be
// made (the system did not start); invariant violations are in the report.
func Run(ctx context.Context, t cluster.TB, cfg Config) (*Report, error) {
	if cfg.Seed == 0 {
		cfg.Seed = uint64(time.Now().UnixNano())
	}
	if cfg.Progress == 0 {
		cfg.Progress = 10 * time.Second
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := &logger{w: cfg.Log, start: time.Now()}
	log.printf("chaos: seed %d (replay with the same seed), duration %s, %d clients, faults every %s-%s",
		cfg.Seed, cfg.Duration, cfg.Clients, cfg.FaultEveryMin, cfg.FaultEveryMax)
	rep := &Report{Seed: cfg.Seed, Duration: cfg.Duration, Kinds: map[string]int{}, Retries: map[string]int{},
		FailureReasons: map[string]int{}, ClientErrors: map[string]int{}, Faults: map[string]int{}}
	start := time.Now()
	s, err := startSystem(t, cfg)
	if err != nil {
		return nil, err
	}
	log.printf("system up: gateway %s, banks %v behind proxies, data in %s", s.c.GatewayAddr, s.c.BankAddrs, s.c.Dir)
	before, err := s.c.Audit(ctx)
	if err != nil {
		return nil, fmt.Errorf("chaos: first audit: %w", err)
	}
	v := &violations{}
	book := newBook()

	// Log every client in before the faults start.
	clients := make([]*client, cfg.Clients)
	for i := range clients {
		cl := &client{
			user: userNames[i], accounts: userAccounts(i), sys: s, cfg: cfg, book: book, v: v,
			rng: rand.New(rand.NewPCG(cfg.Seed, uint64(i+1))),
		}
		if err := cl.login(ctx); err != nil {
			return nil, fmt.Errorf("chaos: login %s: %w", cl.user, err)
		}
		clients[i] = cl
	}

	workStart := time.Now()
	runCtx, stopRun := context.WithTimeout(ctx, cfg.Duration)
	defer stopRun()
	var wg sync.WaitGroup
	for _, cl := range clients {
		wg.Add(1)
		go func() { defer wg.Done(); cl.run(runCtx) }()
	}
	faults := &scheduler{sys: s, cfg: cfg, log: log, v: v, counts: map[string]int{},
		rng: rand.New(rand.NewPCG(cfg.Seed, 0)), busy: map[string]bool{}}
	faultsDone := make(chan struct{})
	go func() {
		defer close(faultsDone)
		if !cfg.NoFaults {
			faults.run(runCtx)
		}
	}()
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		tick := time.NewTicker(cfg.Progress)
		defer tick.Stop()
		for {
			select {
			case <-runCtx.Done():
				return
			case <-tick.C:
				st := book.stats()
				log.printf("progress: %d payments, %d requests, %d final answers; faults %d %v",
					st.payments, st.requests, st.answers, faults.total(), faults.snapshot())
			}
		}
	}()

	<-runCtx.Done()
	rep.Duration = time.Since(workStart)
	<-progressDone
	<-faultsDone
	// An interrupt (ctx done) ends the workload early; the run still heals, quiesces and checks.
	ctx = context.WithoutCancel(ctx)
	log.printf("faults stopped: healing everything")
	healStart := time.Now()
	faults.healAll()
	wg.Wait()
	log.printf("clients stopped; resolving every accepted payment")

	if err := s.waitHealthy(cfg.SettleTimeout); err != nil {
		v.addf("system not healthy %s after the faults stopped: %v", cfg.SettleTimeout, err)
	}
	settleCtx, cancel := context.WithTimeout(ctx, cfg.SettleTimeout)
	resolveAll(settleCtx, clients, book, v, log)
	cancel()
	remaining := max(cfg.SettleTimeout-time.Since(healStart), 5*time.Second)
	after, err := s.c.WaitSettled(remaining)
	rep.Settled = time.Since(healStart)
	if err != nil {
		v.addf("not settled %s after the faults stopped: %v", cfg.SettleTimeout, err)
		after, err = s.c.Audit(ctx)
		if err != nil {
			return nil, fmt.Errorf("chaos: final audit: %w", err)
		}
	}
	log.printf("quiesced %s after the faults stopped; checking the invariants", rep.Settled.Round(100*time.Millisecond))
	check(ctx, s.c, before, after, book, v)

	maps.Copy(rep.Faults, faults.snapshot())
	book.fill(rep)
	rep.Violations = v.list()
	rep.Elapsed = time.Since(start)
	if !rep.OK() {
		s.g.failed.Store(true) // the cluster logs the processes' last lines when it stops
	}
	log.printf("done: %d payments, %d faults, %d violations", rep.Payments, faults.total(), len(rep.Violations))
	return rep, nil
}

// waitHealthy waits until every process serves and the gateway reports every bank SERVING.
func (s *system) waitHealthy(d time.Duration) error {
	for _, b := range bankNames {
		if err := s.c.WaitBankHealth(b, grpchealth.StatusServing, d); err != nil {
			return err
		}
	}
	return nil
}

// violations collects invariant violations from many goroutines.
type violations struct {
	mu    sync.Mutex
	items []string
}

func (v *violations) addf(format string, args ...any) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.items = append(v.items, fmt.Sprintf(format, args...))
}

func (v *violations) list() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.items)
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

// userClients are a logged-in user's gateway clients.
type userClients struct {
	token    string
	payments gatewayv1connect.PaymentServiceClient
}

func (s *system) login(ctx context.Context, user string) (*userClients, error) {
	auth := gatewayv1connect.NewAuthServiceClient(s.http, s.url, connect.WithGRPC())
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := auth.Login(ctx, connect.NewRequest(&gatewayv1.LoginRequest{Username: user, Password: password(user)}))
	if err != nil {
		return nil, err
	}
	tok := resp.Msg.GetToken()
	return &userClients{
		token: tok,
		payments: gatewayv1connect.NewPaymentServiceClient(s.http, s.url, connect.WithGRPC(),
			connect.WithInterceptors(cluster.Bearer(tok))),
	}, nil
}
