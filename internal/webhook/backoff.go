package webhook

import (
	"math/rand/v2"
	"time"
)

// Defaults of Schedule.
const (
	// DefaultBase is the wait after the first failed attempt: long enough for a restarting
	// endpoint to come back, short enough that a blip costs the merchant half a minute.
	DefaultBase = 30 * time.Second
	// DefaultMax caps the wait between attempts. Doubling from 30 s reaches it after ten
	// attempts (about 8.5 hours of waiting); then one attempt every 3 to 6 hours. An event
	// thus gets 21 to 33 attempts over DefaultHorizon, depending on the jitter, and an
	// endpoint fixed on the second day still gets its events within hours.
	DefaultMax = 6 * time.Hour
	// DefaultHorizon is how long an event is retried after its first attempt: three days
	// covers a weekend's outage.
	DefaultHorizon = 72 * time.Hour
)

// Schedule is the retry schedule of an event's deliveries: exponential backoff from Base,
// doubling, capped at Max, with "equal" jitter, until Horizon after the first attempt. The
// zero value is the defaults.
type Schedule struct {
	Base    time.Duration // the wait after the first failure; 0 is DefaultBase
	Max     time.Duration // the longest wait; 0 is DefaultMax
	Horizon time.Duration // how long after the first attempt to stop; 0 is DefaultHorizon
}

// withDefaults returns s with its zero fields set to their defaults.
func (s Schedule) withDefaults() Schedule {
	if s.Base <= 0 {
		s.Base = DefaultBase
	}
	if s.Max <= 0 {
		s.Max = DefaultMax
	}
	if s.Max < s.Base {
		s.Max = s.Base
	}
	if s.Horizon <= 0 {
		s.Horizon = DefaultHorizon
	}
	return s
}

// Next returns the wait after failed attempt number attempt (1 for the first): d = Base ·
// 2^(attempt-1), at most Max, and then a random duration in [d/2, d) with rnd (nil is
// math/rand/v2's Float64; a seeded *rand.Rand's Float64 for tests).
//
// The jitter is "equal" jitter, half fixed and half random, rather than "full" jitter (0 to
// d): it spreads the retries of the many events that failed together when an endpoint went
// down, so that they do not all arrive the moment it comes back, and still keeps at least d/2
// between two attempts of one event, which full jitter does not (it may retry at once, against
// an endpoint that has just failed).
func (s Schedule) Next(attempt int, rnd func() float64) time.Duration {
	s = s.withDefaults()
	if rnd == nil {
		rnd = rand.Float64
	}
	d := s.Base
	for i := 1; i < attempt && d < s.Max; i++ {
		d *= 2 // no overflow: d < Max before, so 2d < 2·Max
	}
	d = min(d, s.Max)
	f := rnd()
	if f < 0 || f >= 1 || f != f {
		f = 0
	}
	half := d / 2
	return half + time.Duration(f*float64(d-half))
}

// GiveUp reports whether an event first attempted at first is past the horizon at now. The
// delivery loop asks it with the time of the attempt it would schedule, so that no attempt is
// made after the horizon:
//
//	next := now.Add(s.Next(attempt, nil))
//	if s.GiveUp(first, next) { /* the event failed for good */ }
func (s Schedule) GiveUp(first, now time.Time) bool {
	s = s.withDefaults()
	return now.Sub(first) >= s.Horizon
}

// When to disable an endpoint that keeps failing: when its last DisableAfterFailures attempts
// (of any of its events) all failed and it has had no success for DisableAfterFailingFor.
// Both must hold: a count alone would disable a busy endpoint after a few minutes' outage
// (hundreds of events fail at once), a duration alone an endpoint that was down when its one
// event of the week came. With the default Schedule, an event that exhausts its retries has
// made at least 21 attempts over three days, so in practice an endpoint is disabled when an event
// fails for good and nothing else got through meanwhile. A 410 Gone answer disables it at once
// (Attempt.Gone). Disabling keeps the endpoint and its failed events; the merchant is told,
// fixes it and enables it again, and may ask for the failed events again.
const (
	DisableAfterFailures   = 15
	DisableAfterFailingFor = DefaultHorizon
)

// ShouldDisable reports whether an endpoint should be disabled: consecutiveFailures failed
// attempts since its last success, the first of them at failingSince.
func ShouldDisable(consecutiveFailures int, failingSince, now time.Time) bool {
	return consecutiveFailures >= DisableAfterFailures && now.Sub(failingSince) >= DisableAfterFailingFor
}
