package gateway

import (
	"context"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"
)

// batcherGoroutines counts the goroutines of the gateway's bank batchers.
func batcherGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "gateway.(*batcher[")
}

// TestRunFailingToListenLeavesNothingRunning: a gateway that cannot take its address stops
// what New started (the bank batchers' goroutines) and closes its store before Run returns.
func TestRunFailingToListenLeavesNothingRunning(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	e := newEnv(t, envOptions{})
	cfg := e.gw.cfg
	cfg.DataDir = t.TempDir()
	cfg.Listen = busy.Addr().String()
	before := batcherGoroutines()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := Run(ctx, cfg); err == nil || !strings.Contains(err.Error(), "listen") {
		t.Fatalf("Run on a busy address = %v; want a listen error", err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for batcherGoroutines() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := batcherGoroutines() - before; n > 0 {
		t.Fatalf("%d batcher goroutines still running after Run failed", n)
	}
}
