package httpapi

import (
	"bytes"
	"encoding/json"

	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

// Reading the body of POST /api/builds/:id/logs (§4.5). Workers post lines
// all the time, in batches of up to thousands: the body is walked once, by
// the rules decodeStrict applies to any body (exact keys, the last of
// duplicate keys, null as absent, a value of the wrong type refused), and
// read by the general decoder only where a key is escaped. logBodyDecoded is
// the same reading through decodeStrict; the tests hold the two equal.

// logBody reads a log body (valid JSON in valid UTF-8, readJSONBody): the
// lines, whether it was a batch, or the refusal's message.
func logBody(raw []byte) (lines []store.LogInput, isBatch bool, refusal string) {
	var level, message, logs json.RawMessage
	object, ok := objectMembers(raw, func(key, val []byte) {
		switch string(key) {
		case "logs":
			logs, isBatch = val, true
		case "level":
			level = val
		case "message":
			message = val
		}
	})
	if !ok {
		return logBodyDecoded(raw)
	}
	if !object {
		return nil, false, msgInvalidLogBody
	}
	if isBatch {
		if !isArray(logs) {
			return nil, true, msgInvalidLogBody
		}
		return batchLines(logs), true, ""
	}
	lvl, ok1 := jsonString(level)
	msg, ok2 := jsonString(message)
	if !ok1 || !ok2 { // absent, null or not a string
		return nil, false, msgInvalidLogBody
	}
	if !domain.LogLevel(lvl).Valid() {
		return nil, false, msgInvalidLogLevel
	}
	return []store.LogInput{{Level: domain.LogLevel(lvl), Message: msg}}, false, ""
}

// logBodyDecoded is logBody through decodeStrict.
func logBodyDecoded(raw []byte) (lines []store.LogInput, isBatch bool, refusal string) {
	var req struct {
		Level   string          `json:"level"`
		Message string          `json:"message"`
		Logs    json.RawMessage `json:"logs"`
	}
	got := decodeStrict(raw, &req)
	isBatch = got.sent("logs")
	switch {
	case !got.object:
		return nil, false, msgInvalidLogBody
	case isBatch:
		if !isArray(req.Logs) {
			return nil, true, msgInvalidLogBody
		}
		return batchLines(req.Logs), true, ""
	case !got.has("level") || !got.has("message") || got.wrongType("level") || got.wrongType("message"):
		return nil, false, msgInvalidLogBody
	case !domain.LogLevel(req.Level).Valid():
		return nil, false, msgInvalidLogLevel
	}
	return []store.LogInput{{Level: domain.LogLevel(req.Level), Message: req.Message}}, false, ""
}

// batchLines keeps the well-formed lines of a batch: objects whose exact
// keys "level" and "message" are strings (the last of duplicate keys
// counts, as in decodeStrict), with a valid level. It is decodeStrict's rule
// for one struct, written out because a batch holds up to thousands of
// elements: the general decoder's reflection and bookkeeping were a fifth
// of the controller's CPU under a live-log load. arr is a JSON array from a
// valid JSON text made valid UTF-8 (readJSON), so it is walked in one pass
// without checking its syntax again; an element with an escaped key takes
// the general decoder.
func batchLines(arr json.RawMessage) []store.LogInput {
	// A line takes some 60 bytes of JSON or more: room for that many, so
	// that a batch does not grow its slice line by line.
	lines := make([]store.LogInput, 0, min(len(arr)/64+1, 2048))
	i := skipSpace(arr, 1) // after '['
	for i < len(arr) && arr[i] != ']' {
		end := skipValue(arr, i)
		if l, ok := batchLine(arr[i:end]); ok {
			lines = append(lines, l)
		}
		i = skipSpace(arr, end)
		if i < len(arr) && arr[i] == ',' {
			i = skipSpace(arr, i+1)
		}
	}
	if len(lines) == 0 {
		return nil
	}
	return lines
}

// batchLine reads one element of a batch (valid JSON).
func batchLine(el []byte) (store.LogInput, bool) {
	var level, message json.RawMessage
	object, ok := objectMembers(el, func(key, val []byte) {
		switch string(key) {
		case "level":
			level = val
		case "message":
			message = val
		}
	})
	if !ok {
		return batchLineDecoded(el)
	}
	if !object {
		return store.LogInput{}, false
	}
	return lineOf(level, message)
}

// objectMembers calls member with each key of the JSON object obj and its
// value, in order; obj is valid JSON in valid UTF-8, space around it
// allowed. It reports whether obj is an object, and not ok (having called
// member for the keys before it) at a key with an escape, which only the
// general decoder reads.
func objectMembers(obj []byte, member func(key, val []byte)) (object, ok bool) {
	i := skipSpace(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return false, true
	}
	i = skipSpace(obj, i+1)
	for i < len(obj) && obj[i] == '"' {
		kend := skipValue(obj, i)
		key := obj[i+1 : kend-1]
		if bytes.IndexByte(key, '\\') >= 0 {
			return true, false
		}
		v := skipSpace(obj, skipSpace(obj, kend)+1) // after ':'
		vend := skipValue(obj, v)
		member(key, obj[v:vend])
		i = skipSpace(obj, vend)
		if i < len(obj) && obj[i] == ',' {
			i = skipSpace(obj, i+1)
		}
	}
	return true, true
}

// batchLineDecoded is batchLine through the general decoder.
func batchLineDecoded(el []byte) (store.LogInput, bool) {
	var m map[string]json.RawMessage
	if json.Unmarshal(el, &m) != nil {
		return store.LogInput{}, false
	}
	return lineOf(m["level"], m["message"])
}

func lineOf(rawLevel, rawMessage json.RawMessage) (store.LogInput, bool) {
	var level domain.LogLevel
	switch string(rawLevel) { // the levels as sent, without a copy
	case `"info"`:
		level = domain.LevelInfo
	case `"warn"`:
		level = domain.LevelWarn
	case `"error"`:
		level = domain.LevelError
	default:
		s, ok := jsonString(rawLevel)
		if !ok || !domain.LogLevel(s).Valid() {
			return store.LogInput{}, false
		}
		level = domain.LogLevel(s)
	}
	message, ok := jsonString(rawMessage)
	if !ok {
		return store.LogInput{}, false
	}
	return store.LogInput{Level: level, Message: message}, true
}

// jsonString decodes a raw JSON string; anything else (absent, null, a
// number, an object) is not one. raw comes from a valid JSON text made valid
// UTF-8 (readJSON): a string without escapes is its own text.
func jsonString(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	if len(raw) >= 2 && raw[len(raw)-1] == '"' && bytes.IndexByte(raw[1:len(raw)-1], '\\') < 0 {
		return string(raw[1 : len(raw)-1]), true
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// skipSpace returns the index of the first byte at or after i that is not
// JSON white space.
func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipValue returns the index just after the JSON value that starts at i,
// in valid JSON.
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		for i++; i < len(b); i++ {
			switch b[i] {
			case '\\':
				i++
			case '"':
				return i + 1
			}
		}
		return i
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipValue(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	default: // a number, true, false, null
		for i < len(b) && b[i] != ',' && b[i] != ']' && b[i] != '}' && b[i] != ' ' && b[i] != '\t' && b[i] != '\n' && b[i] != '\r' {
			i++
		}
		return i
	}
}
