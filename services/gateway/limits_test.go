package gateway

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
)

// A user has at most MaxSessionsPerUser live sessions: one more login is refused until a
// session is logged out or expires. Other users are not affected.
func TestLoginSessionCap(t *testing.T) {
	t.Parallel()
	clk := newFakeClock()
	e := newEnv(t, envOptions{
		config:      func(c *Config) { c.MaxSessionsPerUser = 3; c.TokenTTL = time.Hour },
		beforeStart: func(g *Gateway) { g.now = clk.Now },
	})
	ctx := context.Background()
	p := protocols[0]
	var alice []*clients
	for range 3 {
		alice = append(alice, e.login(t, p, "alice", "alice-pass-123"))
	}
	_, err := e.anon(p).auth.Login(ctx, loginReq("alice", "alice-pass-123"))
	wantErr(t, err, connect.CodeResourceExhausted, "too_many_sessions")
	var ce *connect.Error
	if !errors.As(err, &ce) || !strings.Contains(ce.Message(), "log out of other sessions") {
		t.Errorf("message of %v: want it to say to log out of other sessions", err)
	}
	// The refused login left no session: the three still work, and bob may log in.
	for i, c := range alice {
		if _, err := c.balance.FetchBalance(ctx, connect.NewRequest(&gatewayv1.FetchBalanceRequest{})); err != nil {
			t.Fatalf("session %d after the refused login: %v", i, err)
		}
	}
	e.login(t, p, "bob", "bob-pass-456")

	// Logging out frees a slot, once.
	if _, err := alice[0].auth.Logout(ctx, connect.NewRequest(&gatewayv1.LogoutRequest{})); err != nil {
		t.Fatal(err)
	}
	alice[0] = e.login(t, p, "alice", "alice-pass-123")
	_, err = e.anon(p).auth.Login(ctx, loginReq("alice", "alice-pass-123"))
	wantErr(t, err, connect.CodeResourceExhausted, "too_many_sessions")

	// Expired sessions do not count, even before they are deleted.
	clk.Advance(time.Hour)
	for range 3 {
		e.login(t, p, "alice", "alice-pass-123")
	}
	_, err = e.anon(p).auth.Login(ctx, loginReq("alice", "alice-pass-123"))
	wantErr(t, err, connect.CodeResourceExhausted, "too_many_sessions")
}

// Concurrent logins cannot overshoot the cap: the count and the insert are one transaction.
func TestLoginSessionCapConcurrent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{config: func(c *Config) { c.MaxSessionsPerUser = 5 }})
	ctx := context.Background()
	const n = 40
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			_, errs[i] = e.anon(protocols[i%2]).auth.Login(ctx, loginReq("carol", "carol-pass-789"))
		})
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case connect.CodeOf(err) != connect.CodeResourceExhausted:
			t.Errorf("login: %v; want success or too_many_sessions", err)
		}
	}
	if ok != 5 {
		t.Errorf("%d of %d concurrent logins succeeded, want exactly the cap of 5", ok, n)
	}
	var live int
	if err := e.gw.store.(*SQLiteStore).db.Read.QueryRowContext(ctx, `SELECT count(*) FROM sessions WHERE username = 'carol'`).Scan(&live); err != nil || live != 5 {
		t.Errorf("carol has %d sessions stored (%v), want 5", live, err)
	}
}

// The store refuses a session over the cap with ErrTooManySessions and stores nothing.
func TestStoreCreateSessionCap(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := OpenStore(ctx, t.TempDir()+"/gateway.db", false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.CreateUsers(ctx, []userRecord{{Username: "u", PasswordHash: "x", Role: "customer"}}, time.Now()); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	rec := sessionRecord{Username: "u", CertFingerprint: "f", ExpiresAt: now.Add(time.Hour)}
	for i := range 2 {
		if err := s.CreateSession(ctx, "tok-"+string(rune('a'+i)), rec, now, 2); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CreateSession(ctx, "tok-c", rec, now, 2); !errors.Is(err, ErrTooManySessions) {
		t.Fatalf("third session: %v; want ErrTooManySessions", err)
	}
	if _, err := s.Session(ctx, "tok-c"); !errors.Is(err, ErrNotFound) {
		t.Errorf("the refused session was stored: %v", err)
	}
	if err := s.RevokeSession(ctx, "tok-a", now); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateSession(ctx, "tok-c", rec, now, 2); err != nil {
		t.Fatalf("after a logout: %v", err)
	}
	if err := s.CreateSession(ctx, "tok-d", rec, now, 0); err != nil {
		t.Fatalf("no limit: %v", err)
	}
}

// openWatch opens a WatchPayments stream and waits until the gateway has answered it; the
// error is the gateway's refusal, if any.
func openWatch(ctx context.Context, c *clients) (*connect.ServerStreamForClient[gatewayv1.WatchPaymentsResponse], error) {
	stream, err := c.payments.WatchPayments(ctx, connect.NewRequest(&gatewayv1.WatchPaymentsRequest{}))
	if err != nil {
		return nil, err
	}
	stream.ResponseHeader() // returns once the gateway has answered
	if err := stream.Err(); err != nil {
		stream.Close()
		return nil, err
	}
	return stream, nil
}

// A user has at most MaxWatchersPerUser WatchPayments streams open; the slot of a stream is
// released when it ends. Other users are not affected.
func TestWatchPaymentsCap(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{config: func(c *Config) { c.MaxWatchersPerUser = 2 }})
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			user := map[string][2]string{"grpc": {"alice", "alice-pass-123"}, "connect": {"bob", "bob-pass-456"}}[p.name]
			other := map[string][2]string{"grpc": {"carol", "carol-pass-789"}, "connect": {"dave", "dave-pass-000"}}[p.name]
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			u := e.login(t, p, user[0], user[1])
			var open []*connect.ServerStreamForClient[gatewayv1.WatchPaymentsResponse]
			for i := range 2 {
				s, err := openWatch(ctx, u)
				if err != nil {
					t.Fatalf("stream %d: %v", i, err)
				}
				open = append(open, s)
			}
			waitFor(t, 5*time.Second, "two watchers", func() bool { return e.gw.events.watcherCount(user[0]) == 2 })

			// A third stream is refused at once, even from another session of the user.
			again := e.login(t, p, user[0], user[1])
			stream, err := again.payments.WatchPayments(ctx, connect.NewRequest(&gatewayv1.WatchPaymentsRequest{}))
			if err == nil {
				for stream.Receive() {
					t.Fatalf("the stream over the cap received %v", stream.Msg())
				}
				err = stream.Err()
				stream.Close()
			}
			wantErr(t, err, connect.CodeResourceExhausted, "too_many_watchers")

			// Another user is not affected.
			o, err := openWatch(ctx, e.login(t, p, other[0], other[1]))
			if err != nil {
				t.Fatalf("another user's stream: %v", err)
			}
			defer o.Close()

			// Ending a stream releases its slot.
			open[0].Close()
			waitFor(t, 5*time.Second, "the closed stream's slot to be released", func() bool {
				e.gw.events.mu.Lock()
				defer e.gw.events.mu.Unlock()
				return e.gw.events.streams[user[0]] == 1
			})
			s, err := openWatch(ctx, again)
			if err != nil {
				t.Fatalf("a stream after one ended: %v", err)
			}
			open[0] = s
			for _, s := range open {
				s.Close()
			}
			waitFor(t, 5*time.Second, "every slot to be released", func() bool {
				e.gw.events.mu.Lock()
				defer e.gw.events.mu.Unlock()
				_, ok := e.gw.events.streams[user[0]]
				return !ok
			})
		})
	}
}

// broker.watch counts a watch from watch to cancel, and calling cancel twice frees one slot.
func TestBrokerWatchSlots(t *testing.T) {
	t.Parallel()
	b := newBroker()
	_, cancel1, err := b.watch("u", 2)
	if err != nil {
		t.Fatal(err)
	}
	_, cancel2, err := b.watch("u", 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.watch("u", 2); !errors.Is(err, errTooManyWatchers) {
		t.Fatalf("third watch: %v; want errTooManyWatchers", err)
	}
	if _, c, err := b.watch("v", 2); err != nil {
		t.Fatalf("another user: %v", err)
	} else {
		c()
	}
	cancel1()
	cancel1()
	_, cancel3, err := b.watch("u", 2)
	if err != nil {
		t.Fatalf("watch after one stream ended: %v", err)
	}
	if _, _, err := b.watch("u", 2); !errors.Is(err, errTooManyWatchers) {
		t.Fatalf("a second cancel freed a second slot: %v", err)
	}
	cancel2()
	cancel3()
	if n := len(b.streams); n != 0 {
		t.Errorf("%d users still counted after every cancel", n)
	}
}
