package domain

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// The longest texts stored from a client, in bytes. A longer one is cut, at
// a character boundary, and ends with a marker saying how much was cut: it is
// never refused, so a real worker's chatty build does not fail.
const (
	MaxLogMessage   = 16 << 10 // a build log line (POST logs, telemetry, the controller's own)
	MaxErrorMessage = 4 << 10  // a build's error message (upload's error_message)
	MaxWorkerName   = 256      // a worker's name
	MaxStage        = 256      // a VM's reported stage (telemetry heartbeat)
)

// Clip returns s as valid UTF-8 (invalid bytes replaced by U+FFFD) without
// NUL characters (also U+FFFD: PostgreSQL's text cannot hold them, and a text
// reads the same on both engines and survives a copy between them), of at
// most max bytes plus the marker " … [N bytes cut]" when it had to be cut.
func Clip(s string, max int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if strings.IndexByte(s, 0) >= 0 {
		s = strings.ReplaceAll(s, "\x00", "\uFFFD")
	}
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + " … [" + strconv.Itoa(len(s)-cut) + " bytes cut]"
}
