package bank

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
	"github.com/paygate/paygate/internal/identity"
	"github.com/paygate/paygate/internal/pki"
	"github.com/paygate/paygate/internal/rpcerr"
	"github.com/paygate/paygate/internal/rpcserver"
)

// fakeCoordinator is a CoordinatorService on 127.0.0.1 with the gateway's certificate that
// answers GetDecision with answer and records what it was asked.
type fakeCoordinator struct {
	gatewayv1connect.UnimplementedCoordinatorServiceHandler

	answer func(id string) (gatewayv1.Decision, error)
	srv    *rpcserver.Server
	url    string

	mu     sync.Mutex
	asked  []string
	proofs map[string][]byte
}

// startFakeCoordinator serves a fake coordinator on addr ("127.0.0.1:0" for a free port) until
// stop or the end of the test.
func startFakeCoordinator(t *testing.T, certDir, addr string, answer func(string) (gatewayv1.Decision, error)) *fakeCoordinator {
	t.Helper()
	f := pki.LeafFiles(certDir, identity.Identity{Role: identity.RoleGateway})
	tlsCfg, err := pki.ServerTLS(pki.CAFile(certDir), f.Cert, f.Key, tls.RequireAndVerifyClientCert)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := rpcserver.New(rpcserver.Config{Name: "fake-gateway", TLS: tlsCfg, Policy: rpcserver.Policy{
		gatewayv1connect.CoordinatorServiceGetDecisionProcedure: rpcserver.AccessBank,
	}})
	if err != nil {
		t.Fatal(err)
	}
	c := &fakeCoordinator{answer: answer, srv: srv, proofs: map[string][]byte{}}
	srv.Handle(gatewayv1connect.NewCoordinatorServiceHandler(c, srv.HandlerOptions()...))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.url = "https://" + ln.Addr().String()
	go srv.Serve(ln) //nolint:errcheck // ends with stop
	t.Cleanup(c.stop)
	return c
}

func (c *fakeCoordinator) GetDecision(_ context.Context, req *connect.Request[gatewayv1.GetDecisionRequest]) (*connect.Response[gatewayv1.GetDecisionResponse], error) {
	id := req.Msg.GetTransactionId()
	c.mu.Lock()
	c.asked = append(c.asked, id)
	c.proofs[id] = req.Msg.GetProof()
	c.mu.Unlock()
	d, err := c.answer(id)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gatewayv1.GetDecisionResponse{Decision: d}), nil
}

func (c *fakeCoordinator) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	c.srv.Shutdown(ctx) //nolint:errcheck // a stopped test server
}

func (c *fakeCoordinator) questions() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.asked)
}

func (c *fakeCoordinator) hostPort() string { return strings.TrimPrefix(c.url, "https://") }

func answerAll(d gatewayv1.Decision) func(string) (gatewayv1.Decision, error) {
	return func(string) (gatewayv1.Decision, error) { return d, nil }
}

// closedPort returns an address on 127.0.0.1 that nothing listens on (until a test serves it).
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// With several gateway replicas, the resolver asks them in turn: it moves past an address that
// cannot be reached, starts with the one that answered last, and takes a refusal as the answer.
func TestBankResolverTriesGatewayReplicasInTurn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	certDir := filepath.Join(dir, "certs")
	if err := pki.Generate(certDir, pki.Options{Hosts: []string{"127.0.0.1"}, Banks: []string{"bank1"}}); err != nil {
		t.Fatal(err)
	}
	accounts := filepath.Join(dir, "bank1_server_accounts.json")
	if err := os.WriteFile(accounts, []byte(`{"bank1-1001": 1000.0}`), 0o600); err != nil {
		t.Fatal(err)
	}

	// A: nothing listens yet. B: a replica that commits.
	addrA := closedPort(t)
	b := startFakeCoordinator(t, certDir, "127.0.0.1:0", answerAll(gatewayv1.Decision_DECISION_COMMIT))
	urlA := "https://" + addrA

	logs := &syncBuffer{}
	bf := pki.LeafFiles(certDir, identity.Identity{Role: identity.RoleBank, Name: "bank1"})
	s, err := NewServer(ctx, ServerConfig{
		Config:       Config{Name: "bank1", DataDir: dir, AccountsFile: accounts, Logger: slog.New(slog.NewJSONHandler(logs, nil))},
		Listen:       "127.0.0.1:0",
		CAFile:       pki.CAFile(certDir),
		CertFile:     bf.Cert,
		KeyFile:      bf.Key,
		GatewayURLs:  []string{urlA, b.url},
		ResolveAfter: time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(context.Background()) }) //nolint:errcheck // never started

	proof := []byte("proof-bytes-never-logged-7f3a")
	past := time.Now().Add(-time.Hour)
	prepare := func(id string) {
		t.Helper()
		v, err := s.Ledger().PrepareItem(ctx, PrepareItem{TxnID: id, Legs: []Leg{debit("bank1-1001", 1)}, Deadline: past, DecisionProof: proof}, past.Add(-time.Minute))
		if err != nil || !v.Yes {
			t.Fatalf("prepare %s: %+v, %v", id, v, err)
		}
	}
	wantState := func(id string, want State) {
		t.Helper()
		tr, err := s.Ledger().Transaction(ctx, id)
		if err != nil || tr.State != want {
			t.Fatalf("transaction %s is %s (%v); want %s\nlogs:\n%s", id, tr.State, err, want, logs)
		}
	}
	wantAsked := func(c *fakeCoordinator, want ...string) {
		t.Helper()
		if got := c.questions(); !slices.Equal(got, want) {
			t.Fatalf("%s was asked about %q; want %q", c.url, got, want)
		}
	}
	// unreachable counts the WARN lines saying url could not be reached, from line from on.
	unreachable := func(url string, from int) int {
		n := 0
		for i, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
			var rec map[string]any
			if i < from || json.Unmarshal([]byte(line), &rec) != nil {
				continue
			}
			if rec["level"] == "WARN" && rec["gateway"] == url && strings.Contains(rec["msg"].(string), "coordinator unreachable") {
				n++
			}
		}
		return n
	}
	lines := func() int { return strings.Count(logs.String(), "\n") }

	// A is down: the resolver moves on to B, which commits.
	prepare("t1")
	s.resolveRound(ctx)
	wantState("t1", Committed)
	wantAsked(b, "t1")
	if n := unreachable(urlA, 0); n != 1 {
		t.Fatalf("%d WARN lines about %s; want 1\nlogs:\n%s", n, urlA, logs)
	}
	if !slices.Equal(b.proofs["t1"], proof) {
		t.Fatalf("B got the proof %q; want %q", b.proofs["t1"], proof)
	}

	// A comes back, answering ABORT for everything but t5, which it refuses: the resolver keeps
	// asking B, which answered last.
	a := startFakeCoordinator(t, certDir, addrA, func(id string) (gatewayv1.Decision, error) {
		if id == "t5" {
			return 0, rpcerr.New(connect.CodePermissionDenied, "not_a_participant", "the bank cannot show the transaction was sent to it")
		}
		return gatewayv1.Decision_DECISION_ABORT, nil
	})
	prepare("t2")
	s.resolveRound(ctx)
	wantState("t2", Committed)
	wantAsked(a)
	wantAsked(b, "t1", "t2")

	// B stops: the resolver moves to A, and stays there.
	b.stop()
	prepare("t3")
	prepare("t4")
	s.resolveRound(ctx)
	wantState("t3", Aborted)
	wantAsked(a, "t3", "t4")
	wantState("t4", Aborted)
	wantAsked(b, "t1", "t2")

	// B comes back; A refuses t5. A refusal is an answer: B is not asked about t5.
	b = startFakeCoordinator(t, certDir, b.hostPort(), answerAll(gatewayv1.Decision_DECISION_COMMIT))
	prepare("t5")
	s.resolveRound(ctx)
	wantState("t5", Prepared)
	wantAsked(a, "t3", "t4", "t5")
	wantAsked(b)

	// Both down: each address is logged once in the round, not once per transaction.
	a.stop()
	b.stop()
	prepare("t6")
	from := lines()
	s.resolveRound(ctx)
	wantState("t5", Prepared)
	wantState("t6", Prepared)
	if na, nb := unreachable(urlA, from), unreachable(b.url, from); na != 1 || nb != 1 {
		t.Fatalf("one round with both addresses down logged %s %d times and %s %d times; want once each\nlogs:\n%s", urlA, na, b.url, nb, logs)
	}

	for _, secret := range []string{string(proof), base64.StdEncoding.EncodeToString(proof)} {
		if strings.Contains(logs.String(), secret) {
			t.Fatalf("the logs show the decision proof:\n%s", logs)
		}
	}
}

// The resolver moves on only when an address does not answer.
func TestBankResolverUnreachableErr(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{connect.NewError(connect.CodeUnavailable, errors.New("dial tcp 127.0.0.1:1: connect: connection refused")), true},
		{connect.NewError(connect.CodeDeadlineExceeded, context.DeadlineExceeded), true},
		{rpcerr.New(connect.CodeDeadlineExceeded, "deadline_exceeded", "the call's deadline passed"), true},
		{rpcerr.New(connect.CodeUnavailable, "storage_unavailable", "the server's storage is unavailable"), false},
		{rpcerr.New(connect.CodePermissionDenied, "not_a_participant", "not sent to this bank"), false},
		{rpcerr.New(connect.CodeInvalidArgument, "invalid_argument", "transaction_id"), false},
		{connect.NewError(connect.CodeInternal, errors.New("internal error")), false},
	} {
		if got := unreachableErr(tt.err); got != tt.want {
			t.Errorf("unreachableErr(%v) = %v; want %v", tt.err, got, tt.want)
		}
	}
}
