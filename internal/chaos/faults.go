package chaos

import (
	"context"
	"maps"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/paygate/paygate/internal/faultproxy"
	"github.com/paygate/paygate/internal/launch"
)

// scheduler injects faults at random times until its ctx ends. At most one fault acts on a
// target (a process, or the link to one bank) at a time; faults on different targets overlap.
type scheduler struct {
	sys *system
	cfg Config
	log *logger
	v   *violations
	rng *rand.Rand // the scheduler's goroutine only: heal times are drawn when a fault starts

	mu     sync.Mutex
	busy   map[string]bool
	counts map[string]int
	heals  sync.WaitGroup
}

// between returns a random duration in [lo, hi].
func between(r *rand.Rand, lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(r.Int64N(int64(hi-lo)+1))
}

func (s *scheduler) count(kind string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts[kind]++
}

func (s *scheduler) snapshot() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.counts)
}

func (s *scheduler) total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.counts {
		n += c
	}
	return n
}

// claim marks target busy; it reports false if a fault already acts on it.
func (s *scheduler) claim(target string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.busy[target] {
		return false
	}
	s.busy[target] = true
	return true
}

func (s *scheduler) release(target string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.busy, target)
}

var proxyModes = []faultproxy.Mode{faultproxy.Latency, faultproxy.Drop, faultproxy.Reset, faultproxy.Blackhole}

// processes returns the names of the processes faults act on: the gateway replicas, then the
// banks (with one gateway, the order of the first profile, so that its seeds replay).
func (s *scheduler) processes() []string {
	return append(s.sys.c.GatewayNames(), bankNames...)
}

func (s *scheduler) run(ctx context.Context) {
	processes := s.processes()
	for {
		if !sleepCtx(ctx, between(s.rng, s.cfg.FaultEveryMin, s.cfg.FaultEveryMax)) {
			return
		}
		s.watch()
		// Draw every choice before looking at what is busy, so that a replay draws the same
		// sequence whatever the timing.
		kind := s.rng.IntN(4)
		proc := processes[s.rng.IntN(len(processes))]
		bank := bankNames[s.rng.IntN(len(bankNames))]
		mode := proxyModes[s.rng.IntN(len(proxyModes))]
		latency := between(s.rng, 20*time.Millisecond, 400*time.Millisecond)
		killFor := between(s.rng, 200*time.Millisecond, 2*time.Second)
		// Pauses and network faults last up to twice the transaction timeout, so that some
		// outlast a deadline plus the banks' grace period: the timeout, presumed-abort and
		// in-doubt (GetDecision) paths run too, not only the happy path with delays.
		longest := max(2*s.cfg.TxnTimeout, 4*time.Second)
		pauseFor := between(s.rng, 500*time.Millisecond, longest)
		proxyFor := between(s.rng, 500*time.Millisecond, longest)
		fullFor := between(s.rng, 500*time.Millisecond, longest)
		switch kind {
		case 0:
			if s.claim(proc) {
				s.count("kill_" + s.role(proc))
				s.log.printf("fault: SIGKILL %s, restart after %s", proc, killFor)
				s.async(proc, func() { s.kill(proc, killFor) })
			}
		case 1:
			if s.claim(proc) {
				s.count("pause_" + s.role(proc))
				s.log.printf("fault: SIGSTOP %s for %s", proc, pauseFor)
				s.async(proc, func() { s.pause(proc, pauseFor) })
			}
		case 2:
			target := "link-" + bank
			if s.claim(target) {
				s.count("net_" + mode.String())
				p := s.sys.proxies[bank]
				if mode == faultproxy.Latency {
					s.log.printf("fault: gateway → %s %s +%s for %s", bank, mode, latency, proxyFor)
				} else {
					s.log.printf("fault: gateway → %s %s for %s", bank, mode, proxyFor)
				}
				s.async(target, func() {
					p.SetMode(mode, latency)
					time.Sleep(proxyFor)
					p.SetMode(faultproxy.Pass, 0)
				})
			}
		case 3:
			// The disk fault claims the process: a process is not killed or paused while its
			// disk is full (a restart on a full disk is a different fault: it cannot start).
			disk := s.sys.c.Disk(proc)
			if disk == nil && len(s.sys.c.GatewayNames()) > 1 {
				// No disks to fill (the PostgreSQL profile): a fault of a gateway replica
				// instead, killed or paused, so that replicas see as many faults as banks.
				names := s.sys.c.GatewayNames()
				replica, pause := names[s.rng.IntN(len(names))], s.rng.IntN(2) == 0
				if !s.claim(replica) {
					break
				}
				if pause {
					s.count("pause_gateway")
					s.log.printf("fault: SIGSTOP %s for %s", replica, pauseFor)
					s.async(replica, func() { s.pause(replica, pauseFor) })
				} else {
					s.count("kill_gateway")
					s.log.printf("fault: SIGKILL %s, restart after %s", replica, killFor)
					s.async(replica, func() { s.kill(replica, killFor) })
				}
				break
			}
			if disk != nil && s.claim(proc) {
				s.count("disk_full_" + s.role(proc))
				s.log.printf("fault: disk of %s full for %s", proc, fullFor)
				s.async(proc, func() { s.diskFull(proc, disk, fullFor) })
			}
		}
	}
}

func (s *scheduler) role(proc string) string {
	if s.sys.c.IsGateway(proc) {
		return "gateway"
	}
	return "bank"
}

// async runs a fault and its heal in a goroutine, then frees the target.
func (s *scheduler) async(target string, f func()) {
	s.heals.Add(1)
	go func() {
		defer s.heals.Done()
		defer s.release(target)
		f()
	}()
}

// pause stops proc with SIGSTOP and continues it after d.
func (s *scheduler) pause(proc string, d time.Duration) {
	if err := s.sys.c.Pause(proc); err != nil {
		s.v.addf("pause %s: %v", proc, err)
	}
	time.Sleep(d)
	if err := s.sys.c.Resume(proc); err != nil {
		s.v.addf("resume %s: %v", proc, err)
	}
}

// kill sends SIGKILL to proc and starts it again after d, waiting until it serves.
func (s *scheduler) kill(proc string, d time.Duration) {
	if err := s.sys.c.Kill(proc); err != nil {
		s.v.addf("kill %s: %v", proc, err)
	}
	time.Sleep(d)
	s.restart(proc)
}

func (s *scheduler) restart(proc string) {
	if _, err := s.sys.c.Restart(context.Background(), proc); err != nil {
		s.v.addf("restart %s: %v", proc, err)
	}
}

// diskFull fills proc's disk, leaves it full for d, and frees it.
func (s *scheduler) diskFull(proc string, disk *launch.Disk, d time.Duration) {
	if err := disk.Fill(); err != nil {
		s.v.addf("fill the disk of %s: %v", proc, err)
	}
	time.Sleep(d)
	if err := disk.Free(); err != nil {
		s.v.addf("free the disk of %s: %v", proc, err)
	}
}

// watch restarts a process that exited although no fault killed it, and reports it: a
// process must not die on its own.
func (s *scheduler) watch() {
	for _, name := range s.processes() {
		if !s.claim(name) {
			continue
		}
		if p := s.sys.c.Proc(name); p != nil && p.Exited() {
			s.v.addf("%s exited on its own (see %s)", name, p.LogPath)
			s.restart(name)
		}
		s.release(name)
	}
}

// healAll waits for the faults in progress to heal, then makes sure every process runs and
// every link passes.
func (s *scheduler) healAll() {
	s.heals.Wait()
	for _, p := range s.sys.proxies {
		p.SetMode(faultproxy.Pass, 0)
	}
	for _, name := range s.processes() {
		if d := s.sys.c.Disk(name); d != nil {
			if err := d.Free(); err != nil {
				s.v.addf("free the disk of %s: %v", name, err)
			}
		}
	}
	s.watch()
}
