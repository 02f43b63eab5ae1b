//go:build crashpoints

package crashpoint

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// configure makes name@n the configured point for the test and records what would be killed.
func configure(t *testing.T, name string, n int64) *[]string {
	t.Helper()
	oldTarget, oldHit, oldKill, oldLimit := target, targetHit, kill, holdLimit
	var killed []string
	target, targetHit = name, n
	hits.Store(0)
	kill = func(name string) { killed = append(killed, name) }
	t.Cleanup(func() {
		target, targetHit, kill, holdLimit = oldTarget, oldHit, oldKill, oldLimit
		hits.Store(0)
	})
	return &killed
}

func TestHitCountsToTheConfiguredHit(t *testing.T) {
	killed := configure(t, "test.point", 3)
	Hit("test.other")
	Hit("test.point")
	Hit("test.point")
	if len(*killed) != 0 {
		t.Fatalf("killed at %v before the third hit", *killed)
	}
	Hit("test.point")
	Hit("test.point")
	if len(*killed) != 1 || (*killed)[0] != "test.point" {
		t.Fatalf("killed %v, want once at test.point", *killed)
	}
}

func TestHoldMarksOnlyTheConfiguredHit(t *testing.T) {
	killed := configure(t, "test.hold", 2)
	holdLimit = 50 * time.Millisecond
	ctx := context.Background()
	first := Hold(ctx, "test.hold")
	if first != ctx {
		t.Fatal("the first hit was marked; the second is configured")
	}
	HitHeld(first, "test.hold")
	second := Hold(ctx, "test.hold")
	if second == ctx {
		t.Fatal("the configured hit was not marked")
	}
	// Another point's HitHeld with the marked context does nothing.
	HitHeld(second, "test.other")
	if len(*killed) != 0 {
		t.Fatalf("killed %v by another point's HitHeld", *killed)
	}
	start := time.Now()
	Held(second)
	if waited := time.Since(start); waited < holdLimit {
		t.Errorf("Held returned after %s; it must wait up to %s for the crash", waited, holdLimit)
	}
	start = time.Now()
	Held(first)
	if waited := time.Since(start); waited >= holdLimit {
		t.Errorf("Held waited %s for an unmarked context", waited)
	}
	HitHeld(second, "test.hold")
	if len(*killed) != 1 || (*killed)[0] != "test.hold" {
		t.Fatalf("killed %v, want once at test.hold", *killed)
	}
}

// TestHitSendsSIGKILL runs this test binary again with PAYGATE_CRASH_AT set and checks that the
// child dies of SIGKILL at the point.
func TestHitSendsSIGKILL(t *testing.T) {
	if os.Getenv("CRASHPOINT_TEST_CHILD") == "1" {
		Hit("test.child")
		os.Exit(0) // not reached
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHitSendsSIGKILL$")
	cmd.Env = append(os.Environ(), "CRASHPOINT_TEST_CHILD=1", "PAYGATE_CRASH_AT=test.child")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("child: %v\n%s", err, out)
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, want SIGKILL\n%s", err, out)
	}
}
