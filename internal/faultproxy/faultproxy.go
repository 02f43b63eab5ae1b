// Package faultproxy is a TCP proxy for fault tests: it listens on a loopback port, forwards
// every connection to a target address, and can be switched at runtime to add latency, drop
// connections, reset them, or swallow everything (a blackhole). It works at layer 4, so TLS
// passes through untouched and the peers still authenticate each other end to end.
//
// The gateway is pointed at a proxy instead of a bank (`--bank bank1=<proxy address>`), and a
// test changes the proxy's mode to make the network between them misbehave (etcd's bridge and
// raft's partitioned transports play the same role in their test suites).
package faultproxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Mode is what the proxy does with connections.
type Mode int

const (
	// Pass forwards bytes both ways.
	Pass Mode = iota
	// Latency forwards bytes both ways, each chunk (and each new upstream dial) after a delay.
	Latency
	// Drop closes every open connection (FIN) and every new one as soon as it is accepted.
	Drop
	// Reset closes every open connection with a TCP RST (SO_LINGER 0), and resets every new
	// one as soon as it is accepted.
	Reset
	// Blackhole accepts connections and reads from them but never forwards or answers anything;
	// open connections stop forwarding too. Connections that saw the blackhole have lost bytes
	// and are closed when the proxy leaves this mode.
	Blackhole
)

var modeNames = [...]string{"pass", "latency", "drop", "reset", "blackhole"}

func (m Mode) String() string {
	if m >= 0 && int(m) < len(modeNames) {
		return modeNames[m]
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// ParseMode parses a mode's name.
func ParseMode(s string) (Mode, error) {
	for i, n := range modeNames {
		if n == s {
			return Mode(i), nil
		}
	}
	return Pass, fmt.Errorf("faultproxy: unknown mode %q", s)
}

// ErrClosed is returned by operations on a closed proxy.
var ErrClosed = errors.New("faultproxy: closed")

// Stats counts what a proxy did.
type Stats struct {
	Accepted int64 // connections accepted
	Dropped  int64 // connections closed by Drop (open ones and new ones)
	Reset    int64 // connections reset by Reset
	Swallow  int64 // connections that lost bytes to Blackhole
}

// Proxy is a TCP proxy with a switchable fault mode. Its methods are safe for concurrent use.
type Proxy struct {
	ln     net.Listener
	target string
	dialer net.Dialer

	mu      sync.Mutex
	mode    Mode
	latency time.Duration
	conns   map[*pair]struct{}
	closed  bool
	stats   Stats

	wg sync.WaitGroup
}

// pair is one proxied connection: the accepted client side and the dialled upstream side
// (nil while blackholed or before the dial).
type pair struct {
	client   net.Conn
	upstream net.Conn
	poisoned bool // lost bytes to a blackhole: must never forward again
	once     sync.Once
	done     chan struct{}
}

// New starts a proxy on 127.0.0.1 with a free port, forwarding to target ("host:port").
func New(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	p := &Proxy{ln: ln, target: target, conns: map[*pair]struct{}{}, dialer: net.Dialer{Timeout: 5 * time.Second}}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr returns the proxy's listening address ("127.0.0.1:port").
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target returns the address the proxy forwards to.
func (p *Proxy) Target() string { return p.target }

// Mode returns the current mode and latency.
func (p *Proxy) Mode() (Mode, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode, p.latency
}

// Stats returns the counters so far.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// SetMode switches the proxy to mode m. latency is the delay of Latency mode (ignored by the
// others). Drop and Reset act on the open connections at once; leaving Blackhole closes the
// connections that lost bytes to it.
func (p *Proxy) SetMode(m Mode, latency time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.mode, p.latency = m, latency
	for c := range p.conns {
		switch {
		case m == Drop:
			p.stats.Dropped++
			c.close(false)
		case m == Reset:
			p.stats.Reset++
			c.close(true)
		case m == Blackhole:
			if !c.poisoned {
				p.stats.Swallow++
			}
			c.poisoned = true
		case c.poisoned:
			c.close(false)
		}
	}
}

// Close stops listening and closes every connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	p.closed = true
	err := p.ln.Close()
	for c := range p.conns {
		c.close(false)
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		conn, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		c := &pair{client: conn, done: make(chan struct{})}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			conn.Close()
			return
		}
		p.stats.Accepted++
		mode, latency := p.mode, p.latency
		switch mode {
		case Drop:
			p.stats.Dropped++
			p.mu.Unlock()
			conn.Close()
			continue
		case Reset:
			p.stats.Reset++
			p.mu.Unlock()
			c.close(true)
			continue
		case Blackhole:
			p.stats.Swallow++
			c.poisoned = true
		}
		p.conns[c] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.serve(c, mode, latency)
	}
}

// serve dials the target (unless blackholed) and pumps bytes both ways until either side ends.
func (p *Proxy) serve(c *pair, mode Mode, latency time.Duration) {
	defer p.wg.Done()
	defer func() {
		c.close(false)
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
	}()
	if mode == Blackhole {
		io.Copy(io.Discard, c.client)
		return
	}
	if mode == Latency && !c.sleep(latency) {
		return
	}
	up, err := p.dialer.Dial("tcp", p.target)
	if err != nil {
		return
	}
	p.mu.Lock()
	select {
	case <-c.done: // dropped or reset while dialling
		p.mu.Unlock()
		up.Close()
		return
	default:
	}
	c.upstream = up
	if p.mode == Blackhole {
		c.poisoned = true
	}
	p.mu.Unlock()
	var both sync.WaitGroup
	both.Add(2)
	go func() { defer both.Done(); p.pump(c, up, c.client) }()
	go func() { defer both.Done(); p.pump(c, c.client, up) }()
	both.Wait()
}

// pump copies src to dst chunk by chunk, applying the mode at each chunk.
func (p *Proxy) pump(c *pair, dst, src net.Conn) {
	defer c.close(false)
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			mode, latency, poisoned := p.mode, p.latency, c.poisoned
			p.mu.Unlock()
			if mode == Latency && !poisoned && !c.sleep(latency) {
				return
			}
			if !poisoned {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// sleep waits d or until the pair is closed; it reports whether the pair is still open.
func (c *pair) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.done:
		return false
	}
}

// close closes both sides once; with rst the kernel sends RST instead of FIN.
func (c *pair) close(rst bool) {
	c.once.Do(func() {
		close(c.done)
		for _, conn := range []net.Conn{c.client, c.upstream} {
			if conn == nil {
				continue
			}
			if tc, ok := conn.(*net.TCPConn); ok && rst {
				tc.SetLinger(0)
			}
			conn.Close()
		}
	})
}
