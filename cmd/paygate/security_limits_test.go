package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/internal/cluster"
	"github.com/paygate/paygate/internal/rpcerr"
	"github.com/paygate/paygate/internal/rpcserver"
)

// limitCases returns TestSecurityMatrix's cases for budgets and caps that hold under concurrency.
func limitCases(t *testing.T, m *secMatrix) []secCase {
	c, ctx := m.c, m.ctx
	return []secCase{
		// A username as long as a request may be is refused, and the gateway's log line of the
		// call holds only its start: a hostile client cannot write a megabyte of log per call.
		{"login with a 1 MiB username", func(t *testing.T) {
			gw := c.Proc("gateway")
			before := fileSize(t, gw.LogPath)
			auth := c.Clients().Auth
			// Just under the request size limit: read, then refused by validation.
			_, err := auth.Login(ctx(), connect.NewRequest(&gatewayv1.LoginRequest{
				Username: strings.Repeat("m", rpcserver.DefaultReadMaxBytes-64), Password: "whatever-password"}))
			wantCode(t, err, connect.CodeInvalidArgument, rpcserver.ReasonInvalidArgument)
			// A whole mebibyte: over the limit, refused before it is decoded.
			_, err = auth.Login(ctx(), connect.NewRequest(&gatewayv1.LoginRequest{
				Username: strings.Repeat("m", 1<<20), Password: "whatever-password"}))
			wantCode(t, err, connect.CodeResourceExhausted, "")

			grown, longest := logGrowth(t, gw.LogPath, before)
			t.Logf("the gateway logged %d bytes during the calls, the longest line %d bytes", grown, longest)
			if longest > 4096 || grown > 64<<10 {
				t.Errorf("the gateway logged %d bytes (longest line %d) for two logins; want the username clipped", grown, longest)
			}
			lines := c.GrepLog("gateway", `"procedure":"/paygate.gateway.v1.AuthService/Login"`, `"code":"invalid_argument"`, `mmmm…(+`)
			if len(lines) == 0 {
				t.Errorf("no clipped log line of the refused login")
			}
		}},
		// One user's live sessions are capped (default 100); logging out frees a slot.
		{"over the session cap", func(t *testing.T) {
			var mine []*cluster.User
			defer func() {
				for _, u := range mine {
					if u == nil {
						continue
					}
					if _, err := u.Auth.Logout(ctx(), connect.NewRequest(&gatewayv1.LogoutRequest{})); err != nil {
						t.Errorf("logout: %v", err)
					}
				}
			}()
			const limit = 100 // the gateway's default
			var err error
			for len(mine) <= limit {
				var u *cluster.User
				if u, err = loginPatiently(c, "carol"); err != nil {
					break
				}
				mine = append(mine, u)
			}
			wantCode(t, err, connect.CodeResourceExhausted, "too_many_sessions")
			if !strings.Contains(err.Error(), "log out of other sessions") {
				t.Errorf("refusal %v: want it to say to log out of other sessions", err)
			}
			t.Logf("refused after %d new sessions", len(mine))
			if len(mine) == 0 {
				t.Fatal("carol could not log in at all")
			}
			// The sessions still work; logging out of one lets a new login in.
			if _, err := mine[0].Balance.FetchBalance(ctx(), connect.NewRequest(&gatewayv1.FetchBalanceRequest{})); err != nil {
				t.Fatalf("a session under the cap: %v", err)
			}
			if _, err := mine[0].Auth.Logout(ctx(), connect.NewRequest(&gatewayv1.LogoutRequest{})); err != nil {
				t.Fatal(err)
			}
			if mine[0], err = loginPatiently(c, "carol"); err != nil {
				t.Fatalf("login after a logout: %v", err)
			}
		}},
		// One user's WatchPayments streams are capped (default 16); a closed stream frees its
		// slot.
		{"over the watcher cap", func(t *testing.T) {
			const limit = 16 // the gateway's default
			u, err := loginPatiently(c, "carol")
			if err != nil {
				t.Fatalf("login carol: %v", err)
			}
			defer u.Auth.Logout(ctx(), connect.NewRequest(&gatewayv1.LogoutRequest{}))
			var open []*watchStream
			defer func() {
				for _, w := range open {
					w.close()
				}
			}()
			for range limit {
				open = append(open, startWatch(t, u))
			}
			for i, w := range open {
				if err := w.refusal(); err != nil {
					t.Fatalf("stream %d of %d: %v", i+1, limit, err)
				}
			}
			over := startWatch(t, u)
			defer over.close()
			wantCode(t, over.refusal(), connect.CodeResourceExhausted, "too_many_watchers")
			// Another user still watches.
			o := startWatch(t, m.bob)
			defer o.close()
			if err := o.refusal(); err != nil {
				t.Fatalf("bob's stream while carol is at the cap: %v", err)
			}

			// Closing a stream frees its slot (once the gateway has seen the stream end).
			open[0].close()
			deadline := time.Now().Add(10 * time.Second)
			for {
				w := startWatch(t, u)
				err := w.refusal()
				if err == nil {
					open[0] = w
					break
				}
				w.close()
				if rpcerr.Reason(err) != "too_many_watchers" || time.Now().After(deadline) {
					t.Fatalf("a stream after one was closed: %v", err)
				}
				time.Sleep(50 * time.Millisecond)
			}
			again := startWatch(t, u)
			defer again.close()
			wantCode(t, again.refusal(), connect.CodeResourceExhausted, "too_many_watchers")
		}},
	}
}

// loginPatiently logs user in, waiting out a login throttle that earlier cases' failed logins
// from this address may have set off (successful logins do not count against it).
func loginPatiently(c *cluster.Cluster, user string) (*cluster.User, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		u, err := c.Login(user, passwords[user])
		if err == nil || rpcerr.Reason(err) != "login_throttled" || time.Now().After(deadline) {
			return u, err
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// watchStream is a WatchPayments stream read by a goroutine, which reports how the stream
// ended.
type watchStream struct {
	stream  *connect.ServerStreamForClient[gatewayv1.WatchPaymentsResponse]
	cancel  context.CancelFunc
	started time.Time
	ended   chan error
}

// startWatch opens a WatchPayments stream of u.
func startWatch(t *testing.T, u *cluster.User) *watchStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	s, err := u.Payments.WatchPayments(ctx, connect.NewRequest(&gatewayv1.WatchPaymentsRequest{}))
	if err != nil {
		cancel()
		t.Fatalf("WatchPayments: %v", err)
	}
	w := &watchStream{stream: s, cancel: cancel, started: time.Now(), ended: make(chan error, 1)}
	go func() {
		for s.Receive() {
		}
		w.ended <- s.Err()
	}()
	return w
}

// refusal returns the error that ended the stream at once, or nil when the stream is still
// open a moment after it started and the gateway answered.
func (w *watchStream) refusal() error {
	w.stream.ResponseHeader() // returns once the gateway has answered
	select {
	case err := <-w.ended:
		w.ended <- err // for a later look
		if err == nil {
			err = errors.New("the stream ended without an error")
		}
		return err
	case <-time.After(time.Until(w.started.Add(300 * time.Millisecond))):
		return nil
	}
}

func (w *watchStream) close() {
	w.cancel()
	w.stream.Close()
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// logGrowth returns how many bytes were appended to the log at path since offset, and the
// length of the longest line among them.
func logGrowth(t *testing.T, path string, offset int64) (grown int64, longest int) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data = data[offset:]
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 4<<20), 4<<20)
	for sc.Scan() {
		longest = max(longest, len(sc.Bytes()))
	}
	return int64(len(data)), longest
}

// The caps are flags with PAYGATE_ variables; a cap below 1 is a usage error.
func TestLimitFlags(t *testing.T) {
	code, _, errOut := runCmd(t, "gateway", "--certs", t.TempDir(), "--bank", "bank1=127.0.0.1:1", "--max-sessions-per-user", "0")
	if code != exitUsage || !strings.Contains(errOut, "--max-sessions-per-user 0") {
		t.Errorf("--max-sessions-per-user 0: exit %d: %s", code, errOut)
	}
	t.Setenv("PAYGATE_MAX_WATCHERS_PER_USER", "-1")
	code, _, errOut = runCmd(t, "gateway", "--certs", t.TempDir(), "--bank", "bank1=127.0.0.1:1")
	if code != exitUsage || !strings.Contains(errOut, "--max-watchers-per-user -1") {
		t.Errorf("PAYGATE_MAX_WATCHERS_PER_USER=-1: exit %d: %s", code, errOut)
	}
}
