package faultproxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// echoServer answers every line it reads with the same line.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

func newProxy(t *testing.T) *Proxy {
	t.Helper()
	p, err := New(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func dial(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.Addr(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip writes a line and reads it back within d.
func roundTrip(c net.Conn, d time.Duration) (string, error) {
	c.SetDeadline(time.Now().Add(d))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return "", err
	}
	return bufio.NewReader(c).ReadString('\n')
}

func TestPass(t *testing.T) {
	t.Parallel()
	p := newProxy(t)
	c := dial(t, p)
	if got, err := roundTrip(c, 2*time.Second); err != nil || got != "ping\n" {
		t.Fatalf("round trip: %q, %v", got, err)
	}
	if s := p.Stats(); s.Accepted != 1 {
		t.Errorf("accepted %d, want 1", s.Accepted)
	}
}

func TestLatency(t *testing.T) {
	t.Parallel()
	p := newProxy(t)
	p.SetMode(Latency, 100*time.Millisecond)
	c := dial(t, p)
	start := time.Now()
	if got, err := roundTrip(c, 5*time.Second); err != nil || got != "ping\n" {
		t.Fatalf("round trip: %q, %v", got, err)
	}
	// The dial, the request and the answer are each delayed.
	if el := time.Since(start); el < 200*time.Millisecond {
		t.Errorf("round trip took %s, want at least 200ms", el)
	}
	p.SetMode(Pass, 0)
	if got, err := roundTrip(c, 2*time.Second); err != nil || got != "ping\n" {
		t.Fatalf("after latency: %q, %v", got, err)
	}
}

func TestDrop(t *testing.T) {
	t.Parallel()
	p := newProxy(t)
	c := dial(t, p)
	if _, err := roundTrip(c, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	p.SetMode(Drop, 0)
	if _, err := roundTrip(c, 2*time.Second); err == nil {
		t.Fatal("open connection still works after Drop")
	}
	c2 := dial(t, p)
	if _, err := roundTrip(c2, 2*time.Second); err == nil {
		t.Fatal("new connection works while dropping")
	}
	p.SetMode(Pass, 0)
	c3 := dial(t, p)
	if _, err := roundTrip(c3, 2*time.Second); err != nil {
		t.Fatalf("after Drop healed: %v", err)
	}
	if s := p.Stats(); s.Dropped < 2 {
		t.Errorf("dropped %d, want ≥ 2", s.Dropped)
	}
}

func TestReset(t *testing.T) {
	t.Parallel()
	p := newProxy(t)
	c := dial(t, p)
	if _, err := roundTrip(c, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	p.SetMode(Reset, 0)
	_, err := roundTrip(c, 2*time.Second)
	if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("open connection after Reset: %v, want connection reset", err)
	}
	// A new connection is reset at once: the dial or the first exchange fails.
	c2, err := net.DialTimeout("tcp", p.Addr(), 2*time.Second)
	if err == nil {
		defer c2.Close()
		_, err = roundTrip(c2, 2*time.Second)
	}
	if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("new connection while resetting: %v, want connection reset", err)
	}
	p.SetMode(Pass, 0)
	if _, err := roundTrip(dial(t, p), 2*time.Second); err != nil {
		t.Fatalf("after Reset healed: %v", err)
	}
}

func TestBlackhole(t *testing.T) {
	t.Parallel()
	p := newProxy(t)
	c := dial(t, p)
	if _, err := roundTrip(c, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	p.SetMode(Blackhole, 0)
	var ne net.Error
	if _, err := roundTrip(c, 300*time.Millisecond); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("open connection in a blackhole: %v, want a timeout", err)
	}
	c2 := dial(t, p) // accepted, but nothing comes back
	if _, err := roundTrip(c2, 300*time.Millisecond); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("new connection in a blackhole: %v, want a timeout", err)
	}
	p.SetMode(Pass, 0)
	// The swallowed connections lost bytes: they are closed, and new ones work.
	if _, err := roundTrip(c, 2*time.Second); err == nil {
		t.Fatal("a connection that lost bytes to the blackhole still works")
	}
	if got, err := roundTrip(dial(t, p), 2*time.Second); err != nil || got != "ping\n" {
		t.Fatalf("after the blackhole: %q, %v", got, err)
	}
	if s := p.Stats(); s.Swallow != 2 {
		t.Errorf("swallowed %d, want 2", s.Swallow)
	}
}

func TestClose(t *testing.T) {
	t.Parallel()
	p, err := New(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, p)
	if _, err := roundTrip(c, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := roundTrip(c, 2*time.Second); err == nil {
		t.Fatal("connection works after Close")
	}
	if err := p.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close: %v, want ErrClosed", err)
	}
}

func TestParseMode(t *testing.T) {
	t.Parallel()
	for m := Pass; m <= Blackhole; m++ {
		got, err := ParseMode(m.String())
		if err != nil || got != m {
			t.Errorf("ParseMode(%q) = %v, %v", m.String(), got, err)
		}
	}
	if _, err := ParseMode("flaky"); err == nil {
		t.Error("ParseMode(flaky) succeeded")
	}
}
