package sqlitedb

import (
	"sync/atomic"
	"time"
)

// Observer takes one measurement. A Prometheus histogram (prometheus.Observer) is one, so that
// this package needs no metrics library.
type Observer interface {
	Observe(float64)
}

// CommitMetrics observe a DB's write transactions as they commit.
type CommitMetrics struct {
	// Updates observes how many updates each committed transaction carried: the updates group
	// commit took together (those that failed were rolled back to their savepoint, inside the
	// same transaction), or 1 when an update ran alone.
	Updates Observer
	// Seconds observes how long each Commit took, in seconds: the sync that makes it durable.
	Seconds Observer
}

// commitHook holds a DB's CommitMetrics; the zero value observes nothing.
type commitHook struct {
	m atomic.Pointer[CommitMetrics]
}

// SetCommitMetrics makes db observe its commits with m from now on (nil: stop). Both fields of m
// must be set. Safe to call while updates run.
func (db *DB) SetCommitMetrics(m *CommitMetrics) {
	db.commits.m.Store(m)
}

// observeCommit records a commit of n updates that started at start (a zero start when the
// caller did not time it because no metrics were set).
func (h *commitHook) observeCommit(n int, start time.Time) {
	m := h.m.Load()
	if m == nil || start.IsZero() {
		return
	}
	m.Seconds.Observe(time.Since(start).Seconds())
	m.Updates.Observe(float64(n))
}

// commitStart is the time a commit starts, or the zero time when nothing observes commits, so
// that a DB without metrics does not read the clock.
func (h *commitHook) commitStart() time.Time {
	if h.m.Load() == nil {
		return time.Time{}
	}
	return time.Now()
}
