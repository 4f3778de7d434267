// Package domain holds the words every part of the controller speaks: the
// build and worker records and their states, platforms, log levels, ids,
// build access tokens, and the one rule for a build whose worker stopped
// responding. It imports nothing of the controller; store, the actors and
// httpapi all import it.
package domain

import (
	"encoding/json"
	"strings"
)

// BuildStatus is the state of a build (docs/API.md §5.1). No other value is
// ever stored or sent.
type BuildStatus string

// Build states.
const (
	StatusPending   BuildStatus = "pending"
	StatusAssigned  BuildStatus = "assigned"
	StatusBuilding  BuildStatus = "building"
	StatusCompleted BuildStatus = "completed"
	StatusFailed    BuildStatus = "failed"
)

// WorkerStatus is the state of a worker (docs/API.md §5.2).
type WorkerStatus string

// Worker states.
const (
	WorkerIdle     WorkerStatus = "idle"
	WorkerBuilding WorkerStatus = "building"
	WorkerOffline  WorkerStatus = "offline"
)

// LogLevel is the level of a build log line.
type LogLevel string

// Log levels.
const (
	LevelInfo  LogLevel = "info"
	LevelWarn  LogLevel = "warn"
	LevelError LogLevel = "error"
)

// Valid reports whether l is one of the three levels.
func (l LogLevel) Valid() bool { return l == LevelInfo || l == LevelWarn || l == LevelError }

// Platform is what a build targets.
type Platform string

// Platforms.
const (
	PlatformIOS     Platform = "ios"
	PlatformAndroid Platform = "android"
)

// ParsePlatform accepts exactly "ios" or "android".
func ParsePlatform(s string) (Platform, bool) {
	switch p := Platform(s); p {
	case PlatformIOS, PlatformAndroid:
		return p, true
	}
	return "", false
}

// ResultExt is the file extension of the platform's build result.
func (p Platform) ResultExt() string {
	if p == PlatformAndroid {
		return ".apk"
	}
	return ".ipa"
}

// Build is one build. Times are epoch milliseconds; nil means unset.
type Build struct {
	ID              string
	Platform        Platform
	Status          BuildStatus
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
	// RootBuildID is the first build of the build's retry chain: nil for a
	// submitted build; for a retry, the submitted build it descends from.
	RootBuildID *string
	// Assignment numbers the build's assignments (0: never assigned); what a
	// worker's VM is given (OTPs, VM and host tokens) belongs to one.
	Assignment int
	// VMReadyAt is when the current assignment's VM said it is ready.
	VMReadyAt *int64
	// AppName and AppVersion are expo.name and expo.version of the
	// project's app.json, and Label the submitter's label ("" when absent).
	AppName, AppVersion, Label string
	// Stage is what the running build's VM last said it is doing ("" when
	// unknown), cleared at each assignment.
	Stage string
	// PurgedAt is when retention took the build's files (their deletion
	// follows); nil while the build keeps them. A purged build's row and log
	// stay, its downloads and retries answer 410.
	PurgedAt *int64
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

// Worker is one worker.
type Worker struct {
	ID              string
	Name            string
	Capabilities    string // JSON object as sent
	Status          WorkerStatus
	RegisteredAt    int64
	LastSeenAt      int64
	BuildsCompleted int
	BuildsFailed    int
}

// LogEntry is one build log line.
type LogEntry struct {
	Seq       int64
	Timestamp int64
	Level     LogLevel
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

// PlatformsOf reads a worker's capabilities.platforms: an array limits the
// worker to the platforms it lists; anything else means any platform (nil).
func PlatformsOf(capabilities string) map[Platform]bool {
	var caps struct {
		Platforms json.RawMessage `json:"platforms"`
	}
	if json.Unmarshal([]byte(capabilities), &caps) != nil || len(caps.Platforms) == 0 {
		return nil
	}
	var list []any
	if json.Unmarshal(caps.Platforms, &list) != nil || list == nil { // not an array ({"platforms": null} too)
		return nil
	}
	set := map[Platform]bool{}
	for _, p := range list {
		if s, ok := p.(string); ok {
			set[Platform(s)] = true
		}
	}
	return set
}
