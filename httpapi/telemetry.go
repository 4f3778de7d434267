package httpapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

// telemetryRequest is the body of POST telemetry.
type telemetryRequest struct {
	Type      string          `json:"type"`
	Timestamp string          `json:"timestamp"` // optional; a string when sent
	Data      json.RawMessage `json:"data"`      // optional; an object when sent
}

// telemetry is POST /api/builds/:id/telemetry (§4.7). With the key, the
// caller is checked like certs-secure's; without it (the host's CPU
// monitor), the claimed worker and build must name the current assignment,
// and every identity failure is 401 Missing X-API-Key header (the access
// rule telemetryCaller).
func (s *Server) telemetry(c echo.Context) error {
	cl := callerOf(c)
	if cl.AfterCompletion { // §4.14: the host may report once more while the artifact lands
		return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
	}
	if cl.Keyless { // anyone who can read a build's status can name its assignee
		if ok, wait := s.keylessTelemetry.allow(cl.BuildID); !ok {
			return tooMany(c, msgTooManyRequests, wait)
		}
	}
	var req telemetryRequest
	got, err := readJSON(c, &req)
	if err != nil {
		return err
	}
	line, snap, err := parseTelemetry(req, got, cl.BuildID, cl.WorkerID)
	if err != nil {
		return err
	}
	if err := s.store.RecordTelemetry(c.Request().Context(), cl.BuildID, cl.WorkerID, s.now(), line, snap); err != nil {
		return err
	}
	s.seen(c, cl.WorkerID)
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// parseTelemetry validates a telemetry body and returns what it leaves behind:
// a log line (every type but cpu_snapshot) and/or a CPU snapshot.
func parseTelemetry(req telemetryRequest, got fields, buildID, workerID string) (*store.LogInput, *domain.CPUSnapshot, error) {
	bad := fail(http.StatusBadRequest, msgInvalidTelemetry)
	if req.Type == "" || got.wrongType("timestamp") || (got.has("data") && !isObject(req.Data)) {
		return nil, nil, bad
	}
	data := map[string]any{}
	if got.has("data") {
		dec := json.NewDecoder(bytes.NewReader(req.Data))
		dec.UseNumber() // numbers are logged exactly as sent
		if dec.Decode(&data) != nil {
			return nil, nil, bad
		}
	}
	switch req.Type {
	case "monitor_started":
		return &store.LogInput{Level: domain.LevelInfo, Message: "[VM] Monitor started"}, nil, nil
	case "heartbeat":
		stage, _ := data["stage"].(string)
		return &store.LogInput{Level: domain.LevelInfo, Message: vmHeartbeatLine(data), Stage: stage}, nil, nil
	case "cpu_snapshot":
		cpu, cok := number(data["cpu_percent"])
		mem, mok := number(data["memory_mb"])
		if !cok || !mok || cpu < 0 || cpu > 1000 || mem < 0 || mem > 1e6 {
			return nil, nil, nil // ignored, still 200
		}
		return nil, &domain.CPUSnapshot{BuildID: buildID, WorkerID: workerID, CPUPercent: cpu, MemoryMB: mem}, nil
	default:
		compact, ok := compactJSON(req.Data)
		if !ok || compact == "null" {
			compact = "{}"
		}
		return &store.LogInput{Level: domain.LevelInfo, Message: "[VM] " + req.Type + ": " + cutRunes(compact, 1000)}, nil, nil
	}
}

// number returns v if it is a JSON number (decoded with UseNumber).
func number(v any) (float64, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, false
	}
	f, err := n.Float64()
	return f, err == nil
}

// vmHeartbeatLine formats a VM heartbeat, leaving out the missing parts.
func vmHeartbeatLine(data map[string]any) string {
	metrics, _ := data["metrics"].(map[string]any)
	var parts []string
	add := func(label string, v any, suffix string) {
		if v == nil {
			return
		}
		parts = append(parts, label+": "+scalar(v)+suffix)
	}
	add("Stage", data["stage"], "")
	add("CPU", metrics["cpu_percent"], "%")
	add("Memory", metrics["memory_mb"], " MB")
	add("Disk", metrics["disk_percent"], "%")
	add("Processes", metrics["processes"], "")
	if len(parts) == 0 {
		return "[VM] Heartbeat"
	}
	return "[VM] " + strings.Join(parts, " | ")
}

// scalar prints a JSON value as it was sent (numbers exactly, strings bare).
func scalar(v any) string {
	switch t := v.(type) {
	case string:
		return t
	case json.Number:
		return t.String()
	default:
		b, _ := json.Marshal(t)
		return string(b)
	}
}

func cutRunes(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n])
}
