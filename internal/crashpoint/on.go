//go:build crashpoints

package crashpoint

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
)

// Enabled reports whether this binary was built with crash points.
const Enabled = true

var (
	target    string
	targetHit int64 = 1
	hits      atomic.Int64
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

// Hit kills the process with SIGKILL when name is the configured crash point and this is the
// configured hit.
func Hit(name string) {
	if target == "" || name != target {
		return
	}
	if hits.Add(1) != targetHit {
		return
	}
	fmt.Fprintf(os.Stderr, "crashpoint: %s reached, killing process %d\n", name, os.Getpid())
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // SIGKILL is not deliverable late; never return
}
