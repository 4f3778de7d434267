package store

import "strings"

// Build states. No other value is ever stored or sent.
const (
	StatusPending   = "pending"
	StatusAssigned  = "assigned"
	StatusBuilding  = "building"
	StatusCompleted = "completed"
	StatusFailed    = "failed"
)

// Worker states.
const (
	WorkerIdle     = "idle"
	WorkerBuilding = "building"
	WorkerOffline  = "offline"
)

// Log levels.
const (
	LevelInfo  = "info"
	LevelWarn  = "warn"
	LevelError = "error"
)

// Platforms.
const (
	PlatformIOS     = "ios"
	PlatformAndroid = "android"
)

// Build is one build row. Times are epoch milliseconds; nil means unset.
type Build struct {
	ID              string
	Platform        string
	Status          string
	WorkerID        *string
	SubmittedAt     int64
	StartedAt       *int64
	CompletedAt     *int64
	LastActivityAt  *int64
	ErrorMessage    *string
	Attempts        int
	Cancelled       bool
	Progress        *float64
	SourcePath      string
	CertsPath       *string
	ResultPath      *string
	ResultSize      *int64
	ResultSHA256    *string
	TokenHash       []byte
	OriginalBuildID *string
}

// Running reports whether the build has a current assignee.
func (b Build) Running() bool {
	return b.Status == StatusAssigned || b.Status == StatusBuilding
}

// Finished reports whether the build reached a final state.
func (b Build) Finished() bool {
	return b.Status == StatusCompleted || b.Status == StatusFailed
}

// AssignedTo reports whether workerID is the build's current assignee.
func (b Build) AssignedTo(workerID string) bool {
	return b.Running() && b.WorkerID != nil && *b.WorkerID == workerID
}

// Worker is one worker row.
type Worker struct {
	ID              string
	Name            string
	Capabilities    string // JSON object as sent
	Status          string
	RegisteredAt    int64
	LastSeenAt      int64
	BuildsCompleted int
	BuildsFailed    int
}

// LogEntry is one build log line.
type LogEntry struct {
	Seq       int64
	Timestamp int64
	Level     string
	Message   string
}

// Diagnostic is one worker self-check report.
type Diagnostic struct {
	ID         string
	WorkerID   string
	Status     string
	RunAt      int64
	DurationMS int64
	AutoFixed  bool
	Checks     string // JSON array, verbatim
}

// CPUSnapshot is one host CPU sample sent through telemetry.
type CPUSnapshot struct {
	BuildID    string
	WorkerID   string
	Timestamp  int64
	CPUPercent float64
	MemoryMB   float64
}

// ParseID validates a canonical UUID (8-4-4-4-12 hex digits, any case) and
// returns it lowered. Anything else — braces, urn prefixes, missing hyphens,
// dots, slashes, percent escapes — is refused, so an id that passes is safe to
// use in a file name.
func ParseID(s string) (string, bool) {
	if len(s) != 36 {
		return "", false
	}
	for i := 0; i < 36; i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return "", false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return "", false
			}
		}
	}
	return strings.ToLower(s), true
}
