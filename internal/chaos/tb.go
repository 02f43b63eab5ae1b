package chaos

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"

	"github.com/paygate/paygate/internal/cluster"
)

// fatalError is what guard's Fatal panics with; try turns it back into an error.
type fatalError struct{ msg string }

// guard wraps the TB a run was given: a cluster helper that fails (a restart that does not
// come up) panics with fatalError instead of ending the goroutine, so that a fault goroutine
// can report it as a finding and the run can go on to heal and check.
type guard struct {
	base   cluster.TB
	failed atomic.Bool
}

func (g *guard) Helper()                         {}
func (g *guard) Fatal(args ...any)               { panic(fatalError{fmt.Sprint(args...)}) }
func (g *guard) Fatalf(format string, a ...any)  { panic(fatalError{fmt.Sprintf(format, a...)}) }
func (g *guard) Logf(format string, args ...any) { g.base.Logf(format, args...) }
func (g *guard) Cleanup(f func())                { g.base.Cleanup(f) }
func (g *guard) TempDir() string                 { return g.base.TempDir() }
func (g *guard) Failed() bool                    { return g.failed.Load() || g.base.Failed() }

// try runs f and returns the failure a cluster helper reported through guard, if any.
func try(f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			fe, ok := r.(fatalError)
			if !ok {
				panic(r)
			}
			err = errors.New(fe.msg)
		}
	}()
	f()
	return nil
}

// ProcessTB is a cluster.TB for programs (the `paygate chaos` command): temporary directories
// under one root, log lines to a writer, cleanups run by Close, and Fatal as a panic (Run
// recovers it).
type ProcessTB struct {
	root string
	log  io.Writer

	mu       sync.Mutex
	cleanups []func()
	failed   bool
	n        int
}

// NewProcessTB returns a ProcessTB whose temporary directories are made under root.
func NewProcessTB(root string, log io.Writer) *ProcessTB { return &ProcessTB{root: root, log: log} }

func (p *ProcessTB) Helper()                        {}
func (p *ProcessTB) Fatal(args ...any)              { p.SetFailed(); panic(fatalError{fmt.Sprint(args...)}) }
func (p *ProcessTB) Fatalf(format string, a ...any) { p.Fatal(fmt.Sprintf(format, a...)) }
func (p *ProcessTB) Logf(format string, args ...any) {
	if p.log != nil {
		fmt.Fprintf(p.log, format+"\n", args...)
	}
}

// Cleanup registers f to run at Close, last registered first.
func (p *ProcessTB) Cleanup(f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cleanups = append(p.cleanups, f)
}

// TempDir makes a new directory under the root.
func (p *ProcessTB) TempDir() string {
	p.mu.Lock()
	p.n++
	n := p.n
	p.mu.Unlock()
	dir := fmt.Sprintf("%s/%03d", p.root, n)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		p.Fatal(err)
	}
	return dir
}

// Failed reports whether SetFailed or Fatal was called.
func (p *ProcessTB) Failed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failed
}

// SetFailed marks the run failed (the cluster then logs the processes' last lines at Close).
func (p *ProcessTB) SetFailed() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failed = true
}

// Close runs the cleanups: the cluster's processes are stopped.
func (p *ProcessTB) Close() {
	p.mu.Lock()
	fs := p.cleanups
	p.cleanups = nil
	p.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

func (f fatalError) String() string { return f.msg }
