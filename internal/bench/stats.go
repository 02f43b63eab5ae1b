package bench

import (
	"math"
	"math/bits"
	"slices"
	"sync/atomic"
	"time"
)

// Latency percentiles are exact: every measured request's duration is kept (8 bytes each, so a
// five-minute run at 5,000 requests/s holds 12 MB) and the slice is sorted once at the end. A
// histogram library would bound memory but round every figure to its bucket; at the sizes a
// bench run reaches the exact answer is affordable, and the progress line, which needs a
// running p99 every second, uses the small bucketed liveHist below instead.

// Percentile returns the p-th percentile (0 < p ≤ 100) of sorted by the nearest-rank method:
// the smallest value such that at least p% of the values are ≤ it. It returns 0 for an empty
// slice.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := int(math.Ceil(p*float64(n)/100 - 1e-9)) // the epsilon absorbs 99.9/100*1000 = 999.0000000000001
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}

// Latency is a summary of request durations, in milliseconds in JSON.
type Latency struct {
	Count int     `json:"count"`
	Mean  float64 `json:"mean_ms"`
	Min   float64 `json:"min_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p99_9_ms"`
	Max   float64 `json:"max_ms"`
}

// Summarize sorts d in place and summarizes it.
func Summarize(d []time.Duration) Latency {
	slices.Sort(d)
	l := Latency{Count: len(d)}
	if len(d) == 0 {
		return l
	}
	var sum time.Duration
	for _, v := range d {
		sum += v
	}
	l.Mean = ms(sum / time.Duration(len(d)))
	l.Min = ms(d[0])
	l.P50 = ms(Percentile(d, 50))
	l.P90 = ms(Percentile(d, 90))
	l.P99 = ms(Percentile(d, 99))
	l.P999 = ms(Percentile(d, 99.9))
	l.Max = ms(d[len(d)-1])
	return l
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }

// liveHist is a lock-free log-linear histogram of durations for the progress line: 8 sub-buckets
// per power of two of nanoseconds, so a quantile is within 1/8 (12.5%) above the true value.
type liveHist struct {
	buckets [64 * 8]atomic.Int64
	n       atomic.Int64
}

const subBits = 3

func histBucket(ns int64) int {
	if ns < 1<<subBits {
		return int(max(ns, 0))
	}
	e := bits.Len64(uint64(ns)) - 1 // ns in [2^e, 2^(e+1))
	sub := int(ns>>(e-subBits)) & (1<<subBits - 1)
	return (e-subBits+1)<<subBits + sub
}

// histUpper returns the largest value of bucket i.
func histUpper(i int) int64 {
	if i < 1<<subBits {
		return int64(i)
	}
	e := i>>subBits + subBits - 1
	sub := int64(i & (1<<subBits - 1))
	lo := int64(1)<<e + sub<<(e-subBits)
	return lo + int64(1)<<(e-subBits) - 1
}

func (h *liveHist) add(d time.Duration) {
	h.buckets[histBucket(int64(d))].Add(1)
	h.n.Add(1)
}

// quantile returns an upper bound of the q-quantile (0 < q ≤ 1), or 0 with no values.
func (h *liveHist) quantile(q float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	want := int64(math.Ceil(q * float64(n)))
	var seen int64
	for i := range h.buckets {
		seen += h.buckets[i].Load()
		if seen >= want {
			return time.Duration(histUpper(i))
		}
	}
	return time.Duration(histUpper(len(h.buckets) - 1))
}
