package launch

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// helperEnv makes the test binary act as a child process (see TestMain) instead of running
// the tests: its value says how.
const helperEnv = "LAUNCH_TEST_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helper(mode, os.Args[len(os.Args)-1]))
	}
	os.Exit(m.Run())
}

// helper is the child process: "exit" logs a line and exits 3; "serve ADDR" listens on ADDR
// and exits 0 on SIGTERM, logging "stopping"; "stubborn" ignores SIGTERM.
func helper(mode, arg string) int {
	fmt.Printf("helper %s pid %d\n", mode, os.Getpid())
	switch mode {
	case "exit":
		fmt.Println("cannot start: no such store")
		return 3
	case "serve":
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		fmt.Printf("serving %s\n", arg) // before the port is open: logged once it is
		ln, err := net.Listen("tcp", arg)
		if err != nil {
			fmt.Println(err)
			return 1
		}
		defer ln.Close()
		<-sig
		fmt.Println("stopping")
		return 0
	case "stubborn":
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("serving")
		time.Sleep(time.Minute)
		return 0
	}
	return 2
}

// helperSpec runs this test binary as a child in mode.
func helperSpec(t *testing.T, name, mode, arg, logPath string) Spec {
	t.Helper()
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return Spec{Name: name, Bin: bin, Args: []string{"-test.run=^$", arg}, LogPath: logPath,
		Env: append(os.Environ(), helperEnv+"="+mode)}
}

func dialReady(addr string) func(context.Context) error {
	return func(ctx context.Context) error {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	}
}

// TestProcRestartSamePort starts a server, stops it gracefully, starts it again on the same
// port, kills it, and checks that its log holds both runs and Tail their last lines.
func TestProcRestartSamePort(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	addr, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), "logs", "srv.log")
	spec := helperSpec(t, "srv", "serve", addr, logPath)

	p1, err := Start(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := p1.WaitReady(ctx, 10*time.Second, dialReady(addr)); err != nil {
		t.Fatal(err)
	}
	if err := p1.Stop(10 * time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if got := p1.State(); got != "exit status 0" {
		t.Errorf("state after a graceful stop: %q", got)
	}

	p2, err := Start(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := p2.WaitReady(ctx, 10*time.Second, dialReady(addr)); err != nil {
		t.Fatalf("restart on %s: %v", addr, err)
	}
	if err := p2.Kill(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if !p2.Exited() || p2.State() != "signal: killed" {
		t.Errorf("after Kill: exited %v, state %q", p2.Exited(), p2.State())
	}
	if got := p2.Grep("serving " + addr); len(got) != 2 {
		t.Errorf("log lines of the two runs serving %s: %q", addr, got)
	}
	want := fmt.Sprintf("stopping\nhelper serve pid %d\nserving %s", p2.Pid(), addr)
	if got := p2.Tail(3); got != want {
		t.Errorf("Tail(3) = %q, want %q", got, want)
	}
}

// TestWaitReadyExited checks that a process that exits while starting is an error with its
// log, and a readiness that never comes one after the timeout.
func TestWaitReadyExited(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p, err := Start(helperSpec(t, "bank9", "exit", "", filepath.Join(t.TempDir(), "bank9.log")))
	if err != nil {
		t.Fatal(err)
	}
	err = p.WaitReady(ctx, 10*time.Second, func(context.Context) error { return fmt.Errorf("not yet") })
	if err == nil || !strings.Contains(err.Error(), "bank9 exited while starting (exit status 3)") ||
		!strings.Contains(err.Error(), "cannot start: no such store") {
		t.Errorf("WaitReady of a process that exits: %v", err)
	}

	addr, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	p, err = Start(helperSpec(t, "srv", "serve", addr, filepath.Join(t.TempDir(), "srv.log")))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Kill(10 * time.Second)
	err = p.WaitReady(ctx, 200*time.Millisecond, func(context.Context) error { return fmt.Errorf("health: NOT_SERVING") })
	if err == nil || !strings.Contains(err.Error(), "srv not ready after 200ms (health: NOT_SERVING)") {
		t.Errorf("WaitReady past its timeout: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := p.WaitReady(cctx, time.Minute, dialReady(addr)); err != context.Canceled {
		t.Errorf("WaitReady with a cancelled context: %v", err)
	}
}

// TestStopKillsStubborn checks that Stop kills a process that ignores SIGTERM and says so.
func TestStopKillsStubborn(t *testing.T) {
	t.Parallel()
	logPath := filepath.Join(t.TempDir(), "stubborn.log")
	p, err := Start(helperSpec(t, "stubborn", "stubborn", "", logPath))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WaitReady(context.Background(), 10*time.Second, func(context.Context) error {
		if len(p.Grep("serving")) == 0 {
			return fmt.Errorf("no serving line")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	err = p.Stop(300 * time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "stubborn did not exit within 300ms of SIGTERM (killed)") {
		t.Errorf("Stop: %v", err)
	}
	if !p.Exited() {
		t.Error("still running after Stop")
	}
}

func TestStartErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := Start(Spec{Name: "gateway", Bin: filepath.Join(dir, "no-such-binary"), LogPath: filepath.Join(dir, "gateway.log")}); err == nil ||
		!strings.Contains(err.Error(), "start gateway") {
		t.Errorf("Start of a missing binary: %v", err)
	}
	for name, opts := range map[string]Options{
		"no directory": {Bin: "/bin/true"},
		"no accounts":  {Dir: t.TempDir(), Bin: "/bin/true", Banks: []string{"bank1"}, Users: "{}"},
		"no users":     {Dir: t.TempDir(), Bin: "/bin/true", Banks: []string{"bank1"}, Accounts: map[string]string{"bank1": "{}"}},
	} {
		if _, err := New(opts); err == nil {
			t.Errorf("New with %s: no error", name)
		}
	}
}

func TestFreePort(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 200 {
		addr, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		host, port, _ := net.SplitHostPort(addr)
		n, _ := strconv.Atoi(port)
		if host != "127.0.0.1" || n < portMin || n > portMax {
			t.Fatalf("FreePort() = %s, want 127.0.0.1 and a port in %d-%d", addr, portMin, portMax)
		}
		if seen[addr] {
			t.Fatalf("FreePort gave %s twice", addr)
		}
		seen[addr] = true
	}
}
