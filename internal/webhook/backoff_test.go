package webhook

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// fixed returns a rnd function that always returns f.
func fixed(f float64) func() float64 { return func() float64 { return f } }

func TestScheduleNext(t *testing.T) {
	t.Parallel()
	var s Schedule // the defaults
	// With rnd at 0, the wait is half the exponential value; just below 1, almost all of it.
	wantFull := []time.Duration{30 * time.Second, time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute,
		16 * time.Minute, 32 * time.Minute, 64 * time.Minute, 128 * time.Minute, 256 * time.Minute, 6 * time.Hour, 6 * time.Hour}
	for i, full := range wantFull {
		attempt := i + 1
		if got := s.Next(attempt, fixed(0)); got != full/2 {
			t.Errorf("Next(%d, 0) = %s, want %s", attempt, got, full/2)
		}
		if got := s.Next(attempt, fixed(math.Nextafter(1, 0))); got < full-time.Millisecond || got >= full {
			t.Errorf("Next(%d, ~1) = %s, want just under %s", attempt, got, full)
		}
		if got := s.Next(attempt, fixed(0.5)); got != full/2+full/4 {
			t.Errorf("Next(%d, 0.5) = %s, want %s", attempt, got, full/2+full/4)
		}
	}
	// Far attempts stay at the cap, without overflowing.
	for _, attempt := range []int{40, 63, 64, 1000, math.MaxInt} {
		if got := s.Next(attempt, fixed(0)); got != DefaultMax/2 {
			t.Errorf("Next(%d, 0) = %s, want %s", attempt, got, DefaultMax/2)
		}
	}
	// An attempt of 0 or less is the first; a bad rnd is 0.
	for _, attempt := range []int{0, -5} {
		if got := s.Next(attempt, fixed(0)); got != DefaultBase/2 {
			t.Errorf("Next(%d, 0) = %s, want %s", attempt, got, DefaultBase/2)
		}
	}
	for _, f := range []float64{-1, 1, 2, math.NaN(), math.Inf(1)} {
		if got := s.Next(1, fixed(f)); got != DefaultBase/2 {
			t.Errorf("Next(1, %v) = %s, want %s", f, got, DefaultBase/2)
		}
	}
	// Own values.
	own := Schedule{Base: time.Second, Max: 5 * time.Second}
	for attempt, full := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 4: 5 * time.Second, 9: 5 * time.Second} {
		if got := own.Next(attempt, fixed(0)); got != full/2 {
			t.Errorf("own Next(%d, 0) = %s, want %s", attempt, got, full/2)
		}
	}
	// The default random source stays in [d/2, d).
	for range 1000 {
		if got := s.Next(3, nil); got < time.Minute || got >= 2*time.Minute {
			t.Fatalf("Next(3, nil) = %s, want in [1m, 2m)", got)
		}
	}
}

// TestScheduleAttemptsOverTheHorizon counts the attempts of an event that always fails, as the
// delivery loop would make them, with the jitter at both ends and at random: DisableAfterFailures
// must be reached before the event is given up, and the count must stay reasonable.
func TestScheduleAttemptsOverTheHorizon(t *testing.T) {
	t.Parallel()
	var s Schedule
	first := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	count := func(rnd func() float64) int {
		attempts, now := 1, first
		for {
			next := now.Add(s.Next(attempts, rnd))
			if s.GiveUp(first, next) {
				return attempts
			}
			if next.Sub(first) >= DefaultHorizon {
				t.Fatalf("an attempt at %s, past the horizon", next.Sub(first))
			}
			attempts, now = attempts+1, next
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for name, rnd := range map[string]func() float64{"shortest": fixed(0), "longest": fixed(math.Nextafter(1, 0)), "random": r.Float64} {
		n := count(rnd)
		t.Logf("%s waits: %d attempts", name, n)
		if n < DisableAfterFailures || n > 40 {
			t.Errorf("%s waits: %d attempts in %s, want between %d and 40", name, n, DefaultHorizon, DisableAfterFailures)
		}
	}
}

func TestGiveUp(t *testing.T) {
	t.Parallel()
	first := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	var s Schedule
	if s.GiveUp(first, first.Add(DefaultHorizon-time.Second)) {
		t.Error("GiveUp before the horizon")
	}
	if !s.GiveUp(first, first.Add(DefaultHorizon)) {
		t.Error("not GiveUp at the horizon")
	}
	if own := (Schedule{Horizon: time.Hour}); !own.GiveUp(first, first.Add(time.Hour)) || own.GiveUp(first, first.Add(59*time.Minute)) {
		t.Error("GiveUp ignores Horizon")
	}
}

func TestShouldDisable(t *testing.T) {
	t.Parallel()
	since := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		failures int
		after    time.Duration
		want     bool
	}{
		{DisableAfterFailures, DisableAfterFailingFor, true},
		{1000, DisableAfterFailingFor + time.Hour, true},
		{DisableAfterFailures - 1, 10 * DisableAfterFailingFor, false}, // few attempts, however long
		{100000, DisableAfterFailingFor - time.Second, false},          // a busy endpoint's short outage
		{0, 0, false},
	} {
		if got := ShouldDisable(tt.failures, since, since.Add(tt.after)); got != tt.want {
			t.Errorf("ShouldDisable(%d, after %s) = %v, want %v", tt.failures, tt.after, got, tt.want)
		}
	}
}
