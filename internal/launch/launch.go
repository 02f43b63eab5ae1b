// Package launch runs paygate servers as processes of the paygate binary: one process per
// bank and one gateway, each with its own SQLite store, talking mutual TLS with certificates
// made for the run. It is what `paygate bench` and `paygate chaos` start their systems with,
// and what the end-to-end test harness (internal/cluster) wraps for tests.
//
// Proc is one process: started with its arguments and environment, its output appended to a
// log file that is kept across restarts, waited for until it is ready, stopped gracefully
// (SIGTERM) or killed (SIGKILL), paused and resumed. System is a whole paygate system in one
// directory (certificates, fixtures, stores, logs) whose processes can be stopped and started
// again on the same ports. Every failure is returned as an error.
package launch

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// ModuleRoot returns the directory of this module's go.mod, searched from the working
// directory up.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("launch: go.mod not found above the working directory")
		}
		dir = parent
	}
}

var (
	buildMu   sync.Mutex
	buildDone = map[string]string{}
)

// Build builds the paygate command of this module once per process and set of build tags
// (e.g. "crashpoints"), into a temporary directory, and returns the binary's path.
func Build(tags ...string) (string, error) {
	key := strings.Join(tags, ",")
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := buildDone[key]; ok {
		return p, nil
	}
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "paygate-bin-")
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "paygate")
	args := []string{"build", "-o", out}
	if key != "" {
		args = append(args, "-tags", key)
	}
	args = append(args, "./cmd/paygate")
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build paygate: %v\n%s", err, b)
	}
	buildDone[key] = out
	return out, nil
}

// Ports handed out by FreePort: from below the kernel's ephemeral range (32768 and up by
// default on Linux), so that an outgoing connection cannot take one before its server binds it.
const (
	portMin = 20000
	portMax = 31999
)

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// FreePort returns a loopback address ("127.0.0.1:port") with a port that was free a moment
// ago. Ports come from 20000-31999, below the kernel's ephemeral range, so that an outgoing
// connection cannot take one before its server binds it, and no port is handed out twice in a
// process, so that two servers of one process never get the same one.
func FreePort() (string, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 1000 {
		port := portMin + rand.IntN(portMax-portMin+1)
		if portsGiven[port] {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		ln.Close()
		portsGiven[port] = true
		return ln.Addr().String(), nil
	}
	return "", fmt.Errorf("launch: no free port found in %d-%d", portMin, portMax)
}
