//go:build crashpoints

package crashpoint

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// Enabled reports whether this binary was built with crash points.
const Enabled = true

var (
	target    string
	targetHit int64 = 1
	hits      atomic.Int64

	// kill ends the process; tests of this package replace it.
	kill = func(name string) {
		fmt.Fprintf(os.Stderr, "crashpoint: %s reached, killing process %d\n", name, os.Getpid())
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // SIGKILL is not deliverable late; never return
	}
	// holdLimit bounds how long Held waits for the crash, so that a hold point whose HitHeld
	// is never reached (a bug of the caller) does not stop the store for good.
	holdLimit = time.Minute
)

func init() {
	spec := os.Getenv("PAYGATE_CRASH_AT")
	if spec == "" {
		return
	}
	name, n, found := strings.Cut(spec, "@")
	if found {
		v, err := strconv.ParseInt(n, 10, 64)
		if err != nil || v < 1 {
			fmt.Fprintf(os.Stderr, "crashpoint: bad PAYGATE_CRASH_AT %q\n", spec)
			os.Exit(2)
		}
		targetHit = v
	}
	target = name
}

// reached counts a hit of name and reports whether it is the configured hit of the configured
// point.
func reached(name string) bool {
	if target == "" || name != target {
		return false
	}
	return hits.Add(1) == targetHit
}

// Hit kills the process with SIGKILL when name is the configured crash point and this is the
// configured hit.
func Hit(name string) {
	if reached(name) {
		kill(name)
	}
}

type holdKey struct{}

// Hold counts a hit of the hold point name and, when it is the configured point and hit,
// returns ctx marked with it: the commit of a store transaction carrying a write made under the
// returned ctx waits in Held, and HitHeld with the same ctx and name kills the process. Otherwise
// it returns ctx.
func Hold(ctx context.Context, name string) context.Context {
	if !reached(name) {
		return ctx
	}
	fmt.Fprintf(os.Stderr, "crashpoint: %s: holding the commit of the next write until the crash\n", name)
	return context.WithValue(ctx, holdKey{}, name)
}

// Held is called by a store before it commits a transaction that carries a write made under
// ctx. If Hold marked ctx, it waits for the crash (at most holdLimit), so that the write is
// never durable.
func Held(ctx context.Context) {
	name, ok := ctx.Value(holdKey{}).(string)
	if !ok {
		return
	}
	time.Sleep(holdLimit)
	fmt.Fprintf(os.Stderr, "crashpoint: %s: the commit was held %s and the crash did not come; committing\n", name, holdLimit)
}

// HitHeld kills the process when Hold marked ctx with name.
func HitHeld(ctx context.Context, name string) {
	if held, ok := ctx.Value(holdKey{}).(string); ok && held == name {
		kill(name)
	}
}

// traceFile is where Trace appends, from PAYGATE_TRACE_FILE; nil when unset.
var traceFile = func() *os.File {
	path := os.Getenv("PAYGATE_TRACE_FILE")
	if path == "" {
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		fmt.Fprintf(os.Stderr, "crashpoint: trace file: %v\n", err)
		os.Exit(2)
	}
	return f
}()

// Trace appends one line "<unix nanoseconds> <pid> <event> <id>" to the file named by
// PAYGATE_TRACE_FILE, when it is set, in one write: several processes may share the file
// (O_APPEND), and a line is never torn. Tests read it to check what processes did when, e.g.
// that no two gateway replicas ever prepared one payment at the same time.
func Trace(event, id string) {
	if traceFile == nil {
		return
	}
	fmt.Fprintf(traceFile, "%d %d %s %s\n", time.Now().UnixNano(), os.Getpid(), event, id)
}
