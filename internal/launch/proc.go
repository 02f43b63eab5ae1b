package launch

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Spec says how to run one process.
type Spec struct {
	// Name names the process in errors ("gateway", "bank1").
	Name string
	// Bin is the executable and Args its arguments.
	Bin  string
	Args []string
	// Env is the process's whole environment; nil gives it this process's (os.Environ).
	Env []string
	// LogPath is the file the process's standard output and error are appended to; its
	// directory is made if needed. Starting again with the same LogPath keeps what earlier
	// runs logged.
	LogPath string
	// StopWithParent asks the kernel to send the process SIGTERM when the thread that started
	// it ends, so that it does not outlive a program that is killed (Linux only).
	StopWithParent bool
}

// Proc is one running (or exited) process.
type Proc struct {
	Name    string
	LogPath string

	cmd  *exec.Cmd
	done chan struct{}
}

// Start starts the process spec describes. It returns once the process runs; WaitReady waits
// until it serves.
func Start(spec Spec) (*Proc, error) {
	if err := os.MkdirAll(filepath.Dir(spec.LogPath), 0o755); err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	f, err := os.OpenFile(spec.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	cmd := exec.Command(spec.Bin, spec.Args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = spec.Env
	if spec.StopWithParent {
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	p := &Proc{Name: spec.Name, LogPath: spec.LogPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// Pid returns the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits for the process to exit, up to d, and reports whether it did.
func (p *Proc) Wait(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.done:
		return true
	case <-t.C:
		return false
	}
}

// State describes how the process ended ("exit status 1", "signal: killed"), or "running".
func (p *Proc) State() string {
	if !p.Exited() {
		return "running"
	}
	return p.cmd.ProcessState.String()
}

// signal sends sig; a process that has exited already is not an error.
func (p *Proc) signal(sig os.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("%s: send %s: %w", p.Name, sig, err)
	}
	return nil
}

// Kill sends SIGKILL (after SIGCONT, so that a paused process does not stay paused) and waits
// up to d for the process to exit.
func (p *Proc) Kill(d time.Duration) error {
	if p.Exited() {
		return nil
	}
	p.signal(syscall.SIGCONT)
	if err := p.signal(syscall.SIGKILL); err != nil {
		return err
	}
	if !p.Wait(d) {
		return fmt.Errorf("%s did not exit after SIGKILL", p.Name)
	}
	return nil
}

// Stop sends SIGTERM (a graceful shutdown) and waits up to d for the process to exit. A
// process still running then is killed, and Stop says so in its error.
func (p *Proc) Stop(d time.Duration) error {
	if p.Exited() {
		return nil
	}
	if err := p.signal(syscall.SIGTERM); err != nil {
		return err
	}
	if p.Wait(d) {
		return nil
	}
	p.Kill(10 * time.Second)
	return fmt.Errorf("%s did not exit within %s of SIGTERM (killed)", p.Name, d)
}

// Pause stops the process with SIGSTOP; Resume continues it with SIGCONT.
func (p *Proc) Pause() error  { return p.signal(syscall.SIGSTOP) }
func (p *Proc) Resume() error { return p.signal(syscall.SIGCONT) }

// WaitReady calls ready every 50ms until it returns nil, and returns nil then. It fails, with
// the last lines of the log, when the process exits first or ready has not succeeded within d,
// and returns ctx's error when ctx ends first.
func (p *Proc) WaitReady(ctx context.Context, d time.Duration, ready func(context.Context) error) error {
	deadline := time.Now().Add(d)
	var last error
	for {
		if p.Exited() {
			return fmt.Errorf("%s exited while starting (%s):\n%s", p.Name, p.State(), p.Tail(40))
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		last = ready(cctx)
		cancel()
		if last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s (%v):\n%s", p.Name, d, last, p.Tail(40))
		}
		select {
		case <-ctx.Done():
		case <-p.done:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Tail returns the last n lines of the log, or why it cannot be read.
func (p *Proc) Tail(n int) string { return tail(p.LogPath, n) }

func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Grep returns the log lines that contain every one of subs, from every run of the process
// that wrote to its log file.
func (p *Proc) Grep(subs ...string) []string {
	f, err := os.Open(p.LogPath)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}
