package domain

// DefaultMaxAttempts is how many build timeouts a build survives by default:
// the third timeout fails it.
const DefaultMaxAttempts = 3

// TimeoutOutcome is what the build timeout does to a build.
type TimeoutOutcome int

// The outcomes of a build timeout.
const (
	TimeoutNone     TimeoutOutcome = iota // the build was not (or no longer) expired
	TimeoutRequeued                       // back to pending at its place, attempts raised
	TimeoutFailed                         // attempts used up: failed
)

// TimeoutDecision is what DecideTimeout rules for one timeout.
type TimeoutDecision struct {
	Outcome TimeoutOutcome // TimeoutRequeued or TimeoutFailed
	Attempt int            // this timeout's number, the build's new attempts count
}

// DecideTimeout is the build-timeout rule (docs/API.md §5.3): timeout number
// n = attempts+1 requeues the build while n < maxAttempts and fails it at
// n = maxAttempts. The store applies it inside the timeout transaction; the
// queue manager acts on its outcome.
func DecideTimeout(attempts, maxAttempts int) TimeoutDecision {
	n := attempts + 1
	if n < maxAttempts {
		return TimeoutDecision{Outcome: TimeoutRequeued, Attempt: n}
	}
	return TimeoutDecision{Outcome: TimeoutFailed, Attempt: n}
}
