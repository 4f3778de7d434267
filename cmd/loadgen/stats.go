package main

import (
	"math"
	"slices"
	"time"
)

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted, which must be in ascending order: the smallest value such that at
// least p% of the values are at most it. An empty slice gives 0.
func percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}

// mergeSorted concatenates per-goroutine latency records and sorts them.
func mergeSorted(parts ...[]time.Duration) []time.Duration {
	total := 0
	for _, p := range parts {
		total += len(p)
	}
	all := make([]time.Duration, 0, total)
	for _, p := range parts {
		all = append(all, p...)
	}
	slices.Sort(all)
	return all
}

// ms converts a duration to fractional milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// perSecond is n events over d, 0 when d is not positive.
func perSecond(n float64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return n / d.Seconds()
}

// mbPerSecond is bytes over d in decimal megabytes per second (as dd).
func mbPerSecond(bytes int64, d time.Duration) float64 { return perSecond(float64(bytes)/1e6, d) }

// addLatency adds <name>_p50 and <name>_p99 in milliseconds.
func (r *Result) addLatency(name string, sorted []time.Duration) {
	r.add(name+"_p50", ms(percentile(sorted, 50)), "ms")
	r.add(name+"_p99", ms(percentile(sorted, 99)), "ms")
}
