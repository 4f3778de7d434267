package testkit

import (
	"testing"
	"time"
)

// Eventually polls cond every few milliseconds until it holds, or fails the
// test when within has passed: the way tests wait for another goroutine or
// process, instead of a fixed sleep. msg and args say what was awaited.
func Eventually(t testing.TB, within time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("not within %s: "+msg, append([]any{within}, args...)...)
		case <-tick.C:
		}
	}
}
