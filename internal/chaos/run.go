package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"

	"github.com/paygate/paygate/gen/paygate/bank/v1/bankv1connect"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
	"github.com/paygate/paygate/internal/faultproxy"
	"github.com/paygate/paygate/internal/launch"
	"github.com/paygate/paygate/services/bank"
	"github.com/paygate/paygate/services/gateway"
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
	bal := json.RawMessage(strconv.Quote(fmt.Sprintf("%d.%02d", openingBalance/100, openingBalance%100)))
	accounts := map[string]string{}
	for bi, b := range bankNames {
		f := bank.AccountsFile{Currency: "USD"}
		for i, u := range userNames {
			f.Accounts = append(f.Accounts, bank.AccountFixture{ID: userAccounts(i)[bi], Holder: u, Balance: bal})
		}
		data, _ := json.Marshal(f)
		accounts[b] = string(data)
	}
	users := map[string]gateway.UserFixture{}
	for i, u := range userNames {
		users[u] = gateway.UserFixture{Password: password(u), Accounts: userAccounts(i)}
	}
	data, _ := json.Marshal(users)
	return accounts, string(data)
}

// system is the running system with its proxies and the clients' HTTP client.
type system struct {
	c       *launch.System
	proxies map[string]*faultproxy.Proxy
	http    *http.Client // client-role certificate
	url     string       // the first gateway replica's
	urls    []string     // every replica's, url first
	// entries are the banks' clients for the workload's deposits and withdrawals, through the
	// proxies (entryBanks).
	entries map[string]bankv1connect.BankServiceClient
	// noDisks says why the processes' data directories are not on a tmpfs of their own (the
	// disk-full faults are then skipped); empty when they are.
	noDisks string
}

// startSystem starts the system in dir. The system is returned even with an error, for close.
func startSystem(ctx context.Context, dir string, cfg Config) (*system, error) {
	s := &system{proxies: map[string]*faultproxy.Proxy{}}
	accounts, users := fixtures()
	opts := launch.Options{
		Dir:              dir,
		Bin:              cfg.Bin,
		Banks:            bankNames,
		Accounts:         accounts,
		Users:            users,
		Clients:          []string{"cli"},
		TxnTimeout:       cfg.TxnTimeout,
		ResolveAfter:     cfg.ResolveAfter,
		BcryptCost:       4,
		LogFormat:        "json",
		LogLevel:         "debug",
		BankAddrs:        map[string]string{},
		GatewayBankAddrs: map[string]string{},
		Gateways:         cfg.gateways(),
	}
	if cfg.DatabaseURL != "" {
		gw, banks, err := launch.SystemDatabases(ctx, cfg.DatabaseURL, bankNames)
		if err != nil {
			return s, err
		}
		// The run audits the money its own payments move: stores of an earlier run (or of a
		// replay of this seed, whose payments would be replays) would make it report nonsense.
		urls := []string{gw}
		for _, b := range bankNames {
			urls = append(urls, banks[b])
		}
		used, err := launch.UsedDatabases(ctx, urls...)
		if err != nil {
			return s, err
		}
		if len(used) > 0 {
			return s, fmt.Errorf("databases %s hold the stores of an earlier run: give a fresh name (or drop them)", strings.Join(used, ", "))
		}
		opts.GatewayDatabaseURL = gw
		opts.BankDatabaseURL = func(b string) string { return banks[b] }
		opts.LeaseTTL = cfg.LeaseTTL
		if opts.LeaseTTL == 0 {
			opts.LeaseTTL = 2 * time.Second
		}
	}
	if cfg.DatabaseURL != "" {
		s.noDisks = "the stores are on PostgreSQL, off the processes' disks"
	} else if err := launch.TmpfsAvailable(); err != nil {
		s.noDisks = err.Error()
	} else {
		opts.DataDisks = map[string]int64{launch.GatewayName: cfg.DiskSize}
		for _, b := range bankNames {
			opts.DataDisks[b] = cfg.DiskSize
		}
	}
	for _, b := range bankNames {
		addr, err := launch.FreePort()
		if err != nil {
			return s, err
		}
		p, err := faultproxy.New(addr)
		if err != nil {
			return s, err
		}
		s.proxies[b] = p
		opts.BankAddrs[b] = addr
		opts.GatewayBankAddrs[b] = p.Addr()
	}
	var err error
	if s.c, err = launch.New(opts); err != nil {
		return s, err
	}
	if s.entries, err = s.entryBanks(); err != nil {
		return s, err
	}
	if err := s.c.Start(ctx); err != nil {
		return s, err
	}
	s.http = s.c.UserHTTP()
	s.url = "https://" + s.c.GatewayAddr
	for _, a := range s.c.GatewayAddrs {
		s.urls = append(s.urls, "https://"+a)
	}
	return s, nil
}

// close stops the processes and the proxies. After a failed run (failed set) it first writes
// the last lines of every process's log to w, and keeps a copy of the stores of the data disks.
func (s *system) close(failed bool, w io.Writer) {
	if s.c != nil {
		s.c.KillAll()
		if failed && w != nil {
			for _, name := range s.c.Names() {
				if p := s.c.Proc(name); p != nil {
					fmt.Fprintf(w, "---- last lines of %s (%s)\n%s\n", p.Name, p.LogPath, p.Tail(40))
				}
			}
		}
		if err := s.c.Close(failed); err != nil && w != nil {
			fmt.Fprintf(w, "%v\n", err)
		}
	}
	for _, p := range s.proxies {
		p.Close()
	}
}

// TB is what Run uses of the test that runs it: the system lives in t.TempDir() unless
// Config.Dir is set. *testing.T satisfies it; a program passes nil and sets Config.Dir.
type TB interface {
	TempDir() string
}

// Run runs one fault run and returns its report. The error is for a run that could not be
// made (the system did not start); invariant violations are in the report. The system lives in
// cfg.Dir, or in t.TempDir() when that is empty, and its processes are stopped before Run
// returns.
func Run(ctx context.Context, t TB, cfg Config) (rep *Report, err error) {
	if cfg.Seed == 0 {
		cfg.Seed = uint64(time.Now().UnixNano())
	}
	if cfg.Progress == 0 {
		cfg.Progress = 10 * time.Second
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	dir := cfg.Dir
	if dir == "" {
		if t == nil {
			return nil, errors.New("chaos: no directory for the system (Config.Dir)")
		}
		dir = t.TempDir()
	}
	log := &logger{w: cfg.Log, start: time.Now()}
	log.printf("chaos: seed %d (replay with the same seed), duration %s, %d clients, faults every %s-%s",
		cfg.Seed, cfg.Duration, cfg.Clients, cfg.FaultEveryMin, cfg.FaultEveryMax)
	rep = &Report{Seed: cfg.Seed, Duration: cfg.Duration, Kinds: map[string]int{}, Retries: map[string]int{},
		FailureReasons: map[string]int{}, ClientErrors: map[string]int{}, Faults: map[string]int{},
		EntriesRefused: map[string]int{}, EntryRetries: map[string]int{}, EntryErrors: map[string]int{},
		RefundOutcomes: map[string]int{}, RefundKinds: map[string]int{}, RefundRetries: map[string]int{}, RefundErrors: map[string]int{},
		Backend: "sqlite", Gateways: cfg.gateways()}
	if cfg.DatabaseURL != "" {
		rep.Backend = "postgres"
	}
	start := time.Now()
	s, err := startSystem(ctx, dir, cfg)
	// The processes stop before Run returns; after a violation or an error, the last lines
	// of their logs go to cfg.Log and the stores of the data disks are kept.
	defer func() { s.close(err != nil || rep == nil || !rep.OK(), cfg.Log) }()
	if err != nil {
		return nil, fmt.Errorf("chaos: start the system: %w", err)
	}
	log.printf("system up: gateway %s, banks %v behind proxies, data in %s (%s)", s.c.GatewayList(), s.c.BankAddrs, s.c.Dir, rep.Backend)
	if s.noDisks != "" && !cfg.NoFaults {
		note := "disk-full faults skipped: " + s.noDisks
		log.printf("%s", note)
		rep.Notes = append(rep.Notes, note)
	} else if !cfg.NoFaults {
		log.printf("each process's data directory is a %d MiB tmpfs of its own, for the disk-full faults", cfg.DiskSize>>20)
	}
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
			home: i, user: userNames[i], accounts: userAccounts(i), sys: s, cfg: cfg, book: book, v: v,
			rng:       rand.New(rand.NewPCG(cfg.Seed, uint64(i+1))),
			refundRng: rand.New(rand.NewPCG(cfg.Seed, uint64(refundStream+i))),
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
				log.printf("progress: %d payments, %d requests, %d final answers; %d entries; %d refunds; faults %d %v",
					st.payments, st.requests, st.answers, st.entries, st.refunds, faults.total(), faults.snapshot())
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
	log.printf("clients stopped; resolving every accepted payment, every entry and every refund")

	if err := s.waitHealthy(cfg.SettleTimeout); err != nil {
		v.addf("system not healthy %s after the faults stopped: %v", cfg.SettleTimeout, err)
	}
	settleCtx, cancel := context.WithTimeout(ctx, cfg.SettleTimeout)
	resolveAll(settleCtx, clients, book, v, log)
	resolveRefunds(settleCtx, clients, book, v, log)
	resolveEntries(settleCtx, directBanks(s.c), book, v, log)
	cancel()
	remaining := max(cfg.SettleTimeout-time.Since(healStart), 5*time.Second)
	after, err := s.c.WaitSettled(ctx, remaining)
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
	checkRefunds(ctx, clients, book, v)
	if len(s.urls) > 1 {
		checkReplicas(ctx, clients, book, v, log)
		checkReplicaRefunds(ctx, clients, book, v)
	}

	maps.Copy(rep.Faults, faults.snapshot())
	book.fill(rep)
	rep.Violations = v.list()
	rep.Elapsed = time.Since(start)
	log.printf("done: %d payments, %d faults, %d violations", rep.Payments, faults.total(), len(rep.Violations))
	return rep, nil
}

// directBanks returns a BankService client of each bank, straight to it (not through its
// proxy), with the gateway's certificate.
func directBanks(c *launch.System) map[string]bankv1connect.BankServiceClient {
	out := map[string]bankv1connect.BankServiceClient{}
	for _, b := range bankNames {
		out[b] = c.Bank(b)
	}
	return out
}

// waitHealthy waits until every process serves and every gateway replica reports every bank
// SERVING.
func (s *system) waitHealthy(d time.Duration) error {
	for _, g := range s.c.GatewayNames() {
		for _, b := range bankNames {
			if err := s.c.WaitReplicaBankHealth(context.Background(), g, b, grpchealth.StatusServing, d); err != nil {
				return err
			}
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

// userClients are a logged-in user's gateway clients: payments is the first replica's,
// replicas every replica's (payments first). The session is good at every replica.
type userClients struct {
	token    string
	payments gatewayv1connect.PaymentServiceClient
	replicas []gatewayv1connect.PaymentServiceClient
}

// at returns the payments client of replica i (modulo the number of replicas).
func (u *userClients) at(i int) gatewayv1connect.PaymentServiceClient {
	return u.replicas[i%len(u.replicas)]
}

// login logs user in at replica (modulo the number of replicas).
func (s *system) login(ctx context.Context, user string, replica int) (*userClients, error) {
	auth := gatewayv1connect.NewAuthServiceClient(s.http, s.urls[replica%len(s.urls)], connect.WithGRPC())
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := auth.Login(ctx, connect.NewRequest(&gatewayv1.LoginRequest{Username: user, Password: password(user)}))
	if err != nil {
		return nil, err
	}
	tok := resp.Msg.GetToken()
	bearer := connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+tok)
			return next(ctx, req)
		}
	})
	uc := &userClients{token: tok}
	for _, u := range s.urls {
		uc.replicas = append(uc.replicas, gatewayv1connect.NewPaymentServiceClient(s.http, u, connect.WithGRPC(), connect.WithInterceptors(bearer)))
	}
	uc.payments = uc.replicas[0]
	return uc, nil
}
