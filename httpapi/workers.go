package httpapi

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/expo-free-agent/controller/actors"
	"github.com/expo-free-agent/controller/store"
)

// register is POST /api/workers/register (§4.1).
func (s *Server) register(c echo.Context) error {
	raw, err := readBody(c, maxJSONBody)
	if err != nil {
		return err
	}
	v, err := parseJSON(raw)
	if err != nil {
		return err
	}
	m := object(v)
	name, _ := str(m, "name")
	_, capsIsObject := m["capabilities"].(map[string]any)
	if name == "" || !capsIsObject {
		return fail(http.StatusBadRequest, "Name and capabilities required")
	}
	caps, ok := verbatimJSON(rawField(raw, "capabilities"))
	if !ok {
		return fail(http.StatusBadRequest, "Name and capabilities required")
	}
	reg := store.Registration{Name: name, Capabilities: caps}
	if idv, ok := str(m, "id"); ok {
		if id, ok := store.ParseID(idv); ok {
			reg.ID = id
		}
	}
	w, created, err := s.queue.Register(c.Request().Context(), reg)
	if err != nil {
		return internal(failMsg(c), err)
	}
	status := "re-registered"
	if created {
		status = "registered"
	}
	return c.JSON(http.StatusOK, map[string]string{"id": w.ID, "status": status, "baseImageId": s.cfg.BaseImageID})
}

type jobJSON struct {
	ID          string  `json:"id"`
	Platform    string  `json:"platform"`
	SourceURL   string  `json:"source_url"`
	CertsURL    *string `json:"certs_url"`
	BaseImageID string  `json:"baseImageId"`
}

// poll is GET /api/workers/poll (§4.2).
func (s *Server) poll(c echo.Context) error {
	raw := c.QueryParam("worker_id")
	if raw == "" {
		return fail(http.StatusBadRequest, "worker_id required")
	}
	wid, ok := store.ParseID(raw)
	if !ok {
		return fail(http.StatusNotFound, msgWorkerNotFound)
	}
	job, err := s.queue.Poll(c.Request().Context(), wid)
	if errors.Is(err, store.ErrWorkerNotFound) {
		return fail(http.StatusNotFound, msgWorkerNotFound)
	}
	if err != nil {
		return internal(failMsg(c), err)
	}
	if job == nil {
		return c.JSON(http.StatusOK, map[string]any{"job": nil})
	}
	out := jobJSON{ID: job.BuildID, Platform: job.Platform, SourceURL: "/api/builds/" + job.BuildID + "/source",
		BaseImageID: s.cfg.BaseImageID}
	if job.HasCerts {
		u := "/api/builds/" + job.BuildID + "/certs"
		out.CertsURL = &u
	}
	return c.JSON(http.StatusOK, map[string]any{"job": out})
}

// assignedBuild resolves :id for a worker-scoped request: 404 Build not
// found, then notMine (403) unless the claimed worker is the current assignee.
func (s *Server) assignedBuild(c echo.Context, workerID, notMine string) (store.Build, error) {
	b, err := s.loadBuild(c)
	if err != nil {
		return store.Build{}, err
	}
	if !b.AssignedTo(workerID) {
		return store.Build{}, fail(http.StatusForbidden, notMine)
	}
	return b, nil
}

// workerWriteError maps the store's answer to a worker-scoped write.
func workerWriteError(c echo.Context, err error, notMine string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound):
		return fail(http.StatusNotFound, msgBuildNotFound)
	case errors.Is(err, store.ErrNotAssignee):
		return fail(http.StatusForbidden, notMine)
	default:
		return internal(failMsg(c), err)
	}
}

// seen tells the queue manager a worker made an accepted request. Failure is
// only logged: the request itself succeeded.
func (s *Server) seen(c echo.Context, workerID string) {
	if err := s.queue.Seen(c.Request().Context(), workerID); err != nil {
		s.log.Warn("recording worker presence", "err", err)
	}
}

const msgWorkerNotAuthorized = "Worker not authorized for this build"

// workerSource is GET /api/builds/:id/source (§4.3).
func (s *Server) workerSource(c echo.Context) error { return s.workerFile(c, false) }

// workerCerts is GET /api/builds/:id/certs (§4.3).
func (s *Server) workerCerts(c echo.Context) error { return s.workerFile(c, true) }

func (s *Server) workerFile(c echo.Context, certs bool) error {
	wh := c.Request().Header.Get(headerWorkerID)
	if wh == "" {
		return fail(http.StatusUnauthorized, msgMissingWorkerID)
	}
	wid := claimedID(wh)
	b, err := s.assignedBuild(c, wid, msgWorkerNotAuthorized)
	if err != nil {
		return err
	}
	rel, notFound, filename := b.SourcePath, "Source file not found", b.ID+".zip"
	if certs {
		notFound, filename = "Certs not found", b.ID+"-certs.zip"
		if b.CertsPath == nil {
			return fail(http.StatusNotFound, notFound)
		}
		rel = *b.CertsPath
	}
	f, size, err := s.openStored(rel, notFound, failMsg(c))
	if err != nil {
		return err
	}
	defer f.Close()
	if err := s.store.TouchBuild(c.Request().Context(), b.ID, wid, s.now()); err != nil {
		return workerWriteError(c, err, msgWorkerNotAuthorized)
	}
	s.seen(c, wid)
	s.stream(c, f, size, "application/zip", filename)
	return nil
}

// certsSecure is GET /api/builds/:id/certs-secure (§4.4).
func (s *Server) certsSecure(c echo.Context) error {
	b, wid, err := s.workerAndBuildHeaders(c)
	if err != nil {
		return err
	}
	if b.CertsPath == nil {
		return fail(http.StatusNotFound, "Certs not found")
	}
	data, err := s.files.ReadAll(*b.CertsPath, s.cfg.MaxCertsSize)
	if errors.Is(err, actors.ErrFileNotFound) || errors.Is(err, actors.ErrBadPath) {
		return fail(http.StatusNotFound, "Certs not found")
	}
	if err != nil {
		return internal(failMsg(c), err)
	}
	bundle, err := actors.ParseCerts(data, s.cfg.CertsUnzipLimit)
	if err != nil {
		return internal(failMsg(c), err)
	}
	if err := s.store.TouchBuild(c.Request().Context(), b.ID, wid, s.now()); err != nil {
		return workerWriteError(c, err, "Worker not assigned to this build")
	}
	s.seen(c, wid)
	return c.JSON(http.StatusOK, bundle)
}

// workerAndBuildHeaders applies checks 2–7 of §4.4 (the key is already
// checked): X-Worker-Id, X-Build-Id, the :id, their agreement, the build and
// its assignee.
func (s *Server) workerAndBuildHeaders(c echo.Context) (store.Build, string, error) {
	h := c.Request().Header
	wh, bh := h.Get(headerWorkerID), h.Get(headerBuildID)
	if wh == "" {
		return store.Build{}, "", fail(http.StatusUnauthorized, msgMissingWorkerID)
	}
	if bh == "" {
		return store.Build{}, "", fail(http.StatusUnauthorized, msgMissingBuildID)
	}
	id, err := buildID(c)
	if err != nil {
		return store.Build{}, "", err
	}
	if claimedID(bh) != id {
		return store.Build{}, "", fail(http.StatusForbidden, "X-Build-Id header does not match build ID in URL")
	}
	wid := claimedID(wh)
	b, err := s.assignedBuild(c, wid, "Worker not assigned to this build")
	return b, wid, err
}

var logLevels = map[string]bool{store.LevelInfo: true, store.LevelWarn: true, store.LevelError: true}

const msgInvalidLogBody = "Invalid body. Expected { level, message } or { logs: [...] }"

// postLogs is POST /api/builds/:id/logs (§4.5): one line or a batch.
func (s *Server) postLogs(c echo.Context) error {
	wh := c.Request().Header.Get(headerWorkerID)
	if wh == "" {
		return fail(http.StatusUnauthorized, msgMissingWorkerID)
	}
	wid := claimedID(wh)
	b, err := s.assignedBuild(c, wid, msgWorkerNotAuthorized)
	if err != nil {
		return err
	}
	v, err := readJSON(c)
	if err != nil {
		return err
	}
	m := object(v)
	if m == nil {
		return fail(http.StatusBadRequest, msgInvalidLogBody)
	}
	var lines []store.LogInput
	batch, isBatch := m["logs"]
	if isBatch {
		arr, ok := batch.([]any)
		if !ok {
			return fail(http.StatusBadRequest, msgInvalidLogBody)
		}
		lines = make([]store.LogInput, 0, len(arr))
		for _, el := range arr {
			o := object(el)
			level, lok := str(o, "level")
			msg, mok := str(o, "message")
			if lok && mok && logLevels[level] {
				lines = append(lines, store.LogInput{Level: level, Message: msg})
			}
		}
	} else {
		level, lok := str(m, "level")
		msg, mok := str(m, "message")
		if !lok || !mok {
			return fail(http.StatusBadRequest, msgInvalidLogBody)
		}
		if !logLevels[level] {
			return fail(http.StatusBadRequest, "Invalid log level. Must be: info, warn, or error")
		}
		lines = []store.LogInput{{Level: level, Message: msg}}
	}
	n, err := s.store.AppendLogs(c.Request().Context(), b.ID, wid, lines, s.now())
	if err != nil {
		return workerWriteError(c, err, msgWorkerNotAuthorized)
	}
	s.seen(c, wid)
	if isBatch {
		return c.JSON(http.StatusOK, map[string]any{"success": true, "count": n})
	}
	return c.JSON(http.StatusOK, map[string]any{"success": true})
}

const msgNotAssignedToWorker = "Build not assigned to this worker"

// heartbeat is POST /api/builds/:id/heartbeat (§4.6).
func (s *Server) heartbeat(c echo.Context) error {
	q := c.QueryParam("worker_id")
	if q == "" {
		return fail(http.StatusBadRequest, "worker_id required")
	}
	wid := claimedID(q)
	b, err := s.assignedBuild(c, wid, msgNotAssignedToWorker)
	if err != nil {
		return err
	}
	v, err := readJSON(c)
	if err != nil {
		return err
	}
	m := object(v)
	if m == nil {
		return fail(http.StatusBadRequest, msgInvalidJSON)
	}
	var progress *float64
	if pv, present := m["progress"]; present && pv != nil {
		p, ok := number(m, "progress")
		if !ok || p < 0 || p > 100 {
			return fail(http.StatusBadRequest, "progress must be a number between 0 and 100")
		}
		progress = &p
	}
	now := s.now()
	if err := s.store.Heartbeat(c.Request().Context(), b.ID, wid, progress, now); err != nil {
		return workerWriteError(c, err, msgNotAssignedToWorker)
	}
	s.seen(c, wid)
	return c.JSON(http.StatusOK, map[string]any{"status": "ok", "timestamp": now})
}

// telemetry is POST /api/builds/:id/telemetry (§4.7): with the key, checks 1–7
// of certs-secure; without it (the host's CPU monitor), the claimed worker and
// build must name the current assignment, and every identity failure is 401
// Missing X-API-Key header.
func (s *Server) telemetry(c echo.Context) error {
	keyless := c.Request().Header.Get(headerAPIKey) == ""
	var (
		b   store.Build
		wid string
		err error
	)
	if keyless {
		b, wid, err = s.workerAndBuildHeaders(c)
		if err != nil {
			var ae *apiError
			if errors.As(err, &ae) && ae.status < 500 {
				return fail(http.StatusUnauthorized, msgMissingKey)
			}
			return err
		}
	} else {
		if err := s.checkKey(c); err != nil {
			return err
		}
		if b, wid, err = s.workerAndBuildHeaders(c); err != nil {
			return err
		}
	}
	raw, err := readBody(c, maxJSONBody)
	if err != nil {
		return err
	}
	line, snap, err := parseTelemetry(raw, b.ID, wid)
	if err != nil {
		return err
	}
	if err := s.store.RecordTelemetry(c.Request().Context(), b.ID, wid, s.now(), line, snap); err != nil {
		if keyless && (errors.Is(err, store.ErrNotAssignee) || errors.Is(err, store.ErrNotFound)) {
			return fail(http.StatusUnauthorized, msgMissingKey)
		}
		return workerWriteError(c, err, "Worker not assigned to this build")
	}
	s.seen(c, wid)
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// parseTelemetry validates a telemetry body and returns what it leaves behind:
// a log line (every type but cpu_snapshot) and/or a CPU snapshot.
func parseTelemetry(raw []byte, buildID, workerID string) (*store.LogInput, *store.CPUSnapshot, error) {
	v, err := parseJSON(raw)
	if err != nil {
		return nil, nil, err
	}
	bad := fail(http.StatusBadRequest, "Invalid telemetry data")
	m := object(v)
	typ, ok := str(m, "type")
	if !ok || typ == "" {
		return nil, nil, bad
	}
	if ts, present := m["timestamp"]; present && ts != nil {
		if _, ok := ts.(string); !ok {
			return nil, nil, bad
		}
	}
	data := map[string]any{}
	if dv, present := m["data"]; present && dv != nil {
		if data = object(dv); data == nil {
			return nil, nil, bad
		}
	}
	switch typ {
	case "monitor_started":
		return &store.LogInput{Level: store.LevelInfo, Message: "[VM] Monitor started"}, nil, nil
	case "heartbeat":
		return &store.LogInput{Level: store.LevelInfo, Message: vmHeartbeatLine(data)}, nil, nil
	case "cpu_snapshot":
		cpu, cok := number(data, "cpu_percent")
		mem, mok := number(data, "memory_mb")
		if !cok || !mok || cpu < 0 || cpu > 1000 || mem < 0 || mem > 1e6 {
			return nil, nil, nil // ignored, still 200
		}
		return nil, &store.CPUSnapshot{BuildID: buildID, WorkerID: workerID, CPUPercent: cpu, MemoryMB: mem}, nil
	default:
		compact, ok := compactJSON(rawField(raw, "data"))
		if !ok || compact == "null" {
			compact = "{}"
		}
		return &store.LogInput{Level: store.LevelInfo, Message: "[VM] " + typ + ": " + cutRunes(compact, 1000)}, nil, nil
	}
}

// vmHeartbeatLine formats a VM heartbeat, leaving out the missing parts.
func vmHeartbeatLine(data map[string]any) string {
	metrics := object(data["metrics"])
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

// uploadFields are the text parts of an upload.
type uploadFields struct {
	buildID, workerID, success, errorMessage string
	seen                                     map[string]bool
}

// upload is POST /api/workers/upload (§4.8). The text parts come first in
// every client, so the ownership checks run when the file part begins and a
// refused file is never stored; the file streams to a temporary file and is
// committed by the queue manager only for the current assignee.
func (s *Server) upload(c echo.Context) error {
	mr, err := multipartReader(c, s.cfg.MaxResultSize+1<<20)
	if err != nil {
		return err
	}
	f := uploadFields{seen: map[string]bool{}}
	var (
		result    *actors.Staged
		checked   *uploadTarget
		sawResult bool
	)
	defer func() { result.Discard() }()
	for {
		p, err := nextPart(mr)
		if err != nil {
			return err
		}
		if p == nil {
			break
		}
		name := p.FormName()
		switch {
		case name == "result" && !sawResult:
			sawResult = true
			br := bufio.NewReaderSize(p, 512)
			if _, err := br.Peek(1); err == io.EOF {
				continue // zero bytes: no file
			} else if err != nil {
				return bodyReadError(err)
			}
			if checked, err = s.uploadChecks(c, f, true); err != nil {
				return closing(err)
			}
			result, err = s.stageFile(c, br, actors.KindResult, s.cfg.MaxResultSize, "Result file too large",
				s.livenessDuringUpload(c, checked))
			if err != nil {
				return err
			}
		case !f.seen[name] && (name == "build_id" || name == "worker_id" || name == "success" || name == "error_message"):
			f.seen[name] = true
			v, err := readTextPart(p)
			if err != nil {
				return err
			}
			switch name {
			case "build_id":
				f.buildID = v
			case "worker_id":
				f.workerID = v
			case "success":
				f.success = v
			case "error_message":
				f.errorMessage = v
			}
		default:
			if err := drainPart(p); err != nil {
				return err
			}
		}
	}
	if checked == nil {
		if checked, err = s.uploadChecks(c, f, false); err != nil {
			return err
		}
	}
	if checked.noop {
		return c.JSON(http.StatusOK, map[string]string{"status": "success"})
	}
	req := actors.FinishRequest{BuildID: checked.buildID, WorkerID: checked.workerID,
		Success: f.success == "true", ErrorMessage: f.errorMessage, Result: result}
	result = nil // the queue manager consumes it
	out, err := s.queue.Finish(c.Request().Context(), req)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return fail(http.StatusNotFound, msgBuildNotFound)
	case errors.Is(err, actors.ErrFinished):
		return fail(http.StatusConflict, "Build already finished")
	case errors.Is(err, store.ErrNotAssignee):
		return fail(http.StatusForbidden, msgNotAssignedToWorker)
	case err != nil:
		return internal(failMsg(c), err)
	case out == actors.FinishFailed:
		return c.JSON(http.StatusOK, map[string]string{"status": "failed"})
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "success"})
}

// uploadTarget is an upload that passed checks 6–9.
type uploadTarget struct {
	buildID, workerID string
	noop              bool
}

// uploadChecks applies checks 6–9 of §4.8 and records the worker as seen.
func (s *Server) uploadChecks(c echo.Context, f uploadFields, hasFile bool) (*uploadTarget, error) {
	if f.buildID == "" || f.workerID == "" {
		return nil, fail(http.StatusBadRequest, "build_id and worker_id required")
	}
	ctx := c.Request().Context()
	bid, ok := store.ParseID(f.buildID)
	if !ok {
		return nil, fail(http.StatusNotFound, msgBuildNotFound)
	}
	b, err := s.store.GetBuild(ctx, bid)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fail(http.StatusNotFound, msgBuildNotFound)
	} else if err != nil {
		return nil, internal(failMsg(c), err)
	}
	wid, ok := store.ParseID(f.workerID)
	if !ok {
		return nil, fail(http.StatusNotFound, msgWorkerNotFound)
	}
	if _, err := s.store.GetWorker(ctx, wid); errors.Is(err, store.ErrWorkerNotFound) {
		return nil, fail(http.StatusNotFound, msgWorkerNotFound)
	} else if err != nil {
		return nil, internal(failMsg(c), err)
	}
	s.seen(c, wid)
	noop, err := actors.CheckUpload(b, wid, f.success == "true", hasFile)
	switch {
	case errors.Is(err, actors.ErrFinished):
		return nil, fail(http.StatusConflict, "Build already finished")
	case errors.Is(err, store.ErrNotAssignee):
		return nil, fail(http.StatusForbidden, msgNotAssignedToWorker)
	}
	return &uploadTarget{buildID: bid, workerID: wid, noop: noop}, nil
}

// closing marks an answer given before the body was read to its end, so the
// connection is closed after it.
func closing(err error) error {
	var ae *apiError
	if errors.As(err, &ae) {
		cp := *ae
		cp.closeConn = true
		return &cp
	}
	return err
}

// livenessDuringUpload refreshes the build's liveness while the assignee's
// result streams in, so a long upload is not cut off by the build timeout.
func (s *Server) livenessDuringUpload(c echo.Context, t *uploadTarget) func(int64) {
	last := s.cfg.Clock.Now()
	return func(int64) {
		now := s.cfg.Clock.Now()
		if now.Sub(last) < livenessDuringUpload {
			return
		}
		last = now
		if err := s.store.TouchBuild(c.Request().Context(), t.buildID, t.workerID, now.UnixMilli()); err != nil {
			s.log.Debug("liveness during upload", "build_id", t.buildID, "err", err)
		}
	}
}

// unregister is POST /api/workers/:id/unregister and POST
// /api/workers/unregister (§4.9).
func (s *Server) unregister(c echo.Context) error {
	raw := c.Param("id")
	if c.Path() == "/api/workers/:id/unregister" {
		if raw == "" { // "/api/workers//unregister": an empty id is not a UUID
			return fail(http.StatusNotFound, msgWorkerNotFound)
		}
	} else if raw = c.QueryParam("worker_id"); raw == "" {
		raw = c.Request().Header.Get(headerWorkerID)
	}
	if raw == "" {
		v, err := readJSON(c)
		if err != nil {
			return err
		}
		raw, _ = str(object(v), "worker_id")
	}
	if raw == "" {
		return fail(http.StatusBadRequest, "worker_id required")
	}
	wid, ok := store.ParseID(raw)
	if !ok {
		return fail(http.StatusNotFound, msgWorkerNotFound)
	}
	n, err := s.queue.Unregister(c.Request().Context(), wid)
	if errors.Is(err, store.ErrWorkerNotFound) {
		return fail(http.StatusNotFound, msgWorkerNotFound)
	}
	if err != nil {
		return internal(failMsg(c), err)
	}
	return c.JSON(http.StatusOK, map[string]any{"success": true, "message": "Worker unregistered", "builds_reassigned": n})
}

// loadWorker resolves a worker id parameter: 404 Worker not found for a
// non-UUID or an unknown id.
func (s *Server) loadWorker(c echo.Context, param string) (store.Worker, error) {
	wid, ok := store.ParseID(c.Param(param))
	if !ok {
		return store.Worker{}, fail(http.StatusNotFound, msgWorkerNotFound)
	}
	w, err := s.store.GetWorker(c.Request().Context(), wid)
	if errors.Is(err, store.ErrWorkerNotFound) {
		return store.Worker{}, fail(http.StatusNotFound, msgWorkerNotFound)
	}
	if err != nil {
		return store.Worker{}, internal(failMsg(c), err)
	}
	return w, nil
}

// workerStats is GET /api/workers/:id/stats (§4.10).
func (s *Server) workerStats(c echo.Context) error {
	w, err := s.loadWorker(c, "id")
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{
		"totalBuilds":      w.BuildsCompleted + w.BuildsFailed,
		"successfulBuilds": w.BuildsCompleted,
		"failedBuilds":     w.BuildsFailed,
		"workerName":       w.Name,
		"status":           w.Status,
		"uptime":           formatUptime(s.cfg.Clock.Now().Sub(time.UnixMilli(w.RegisteredAt))),
	})
}

// formatUptime renders a duration as "Nd Nh", "Nh Nm", "Nm Ns" or "Ns".
func formatUptime(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	secs := int64(d / time.Second)
	days, hours, mins := secs/86400, secs/3600%24, secs/60%60
	switch {
	case secs >= 86400:
		return fmt.Sprintf("%dd %dh", days, hours)
	case secs >= 3600:
		return fmt.Sprintf("%dh %dm", secs/3600, mins)
	case secs >= 60:
		return fmt.Sprintf("%dm %ds", secs/60, secs%60)
	default:
		return fmt.Sprintf("%ds", secs)
	}
}

var diagnosticStatuses = map[string]bool{"healthy": true, "warning": true, "critical": true}

// addDiagnostic is POST /api/diagnostics/report (§4.11).
func (s *Server) addDiagnostic(c echo.Context) error {
	raw, err := readBody(c, maxJSONBody)
	if err != nil {
		return err
	}
	v, err := parseJSON(raw)
	if err != nil {
		return err
	}
	m := object(v)
	for _, k := range []string{"worker_id", "status", "duration_ms", "checks"} {
		if m[k] == nil {
			return fail(http.StatusBadRequest, "Missing required fields: worker_id, status, duration_ms, checks")
		}
	}
	duration, ok := number(m, "duration_ms")
	if !ok {
		return fail(http.StatusBadRequest, "Missing required fields: worker_id, status, duration_ms, checks")
	}
	status, _ := str(m, "status")
	if !diagnosticStatuses[status] {
		return fail(http.StatusBadRequest, "Invalid status. Must be: healthy, warning, or critical")
	}
	rawWorker, _ := str(m, "worker_id")
	wid, ok := store.ParseID(rawWorker)
	if !ok {
		return fail(http.StatusNotFound, msgWorkerNotFound)
	}
	if _, err := s.store.GetWorker(c.Request().Context(), wid); errors.Is(err, store.ErrWorkerNotFound) {
		return fail(http.StatusNotFound, msgWorkerNotFound)
	} else if err != nil {
		return internal(failMsg(c), err)
	}
	if _, isArray := m["checks"].([]any); !isArray {
		return fail(http.StatusBadRequest, "checks must be an array")
	}
	checks, ok := verbatimJSON(rawField(raw, "checks"))
	if !ok {
		return fail(http.StatusBadRequest, "checks must be an array")
	}
	autoFixed, _ := m["auto_fixed"].(bool)
	d := store.Diagnostic{ID: uuid.NewString(), WorkerID: wid, Status: status, RunAt: s.now(),
		DurationMS: truncateMillis(duration), AutoFixed: autoFixed, Checks: checks}
	err = s.store.AddDiagnostic(c.Request().Context(), d)
	if errors.Is(err, store.ErrWorkerNotFound) {
		return fail(http.StatusNotFound, msgWorkerNotFound)
	}
	if err != nil {
		return internal(failMsg(c), err)
	}
	return c.JSON(http.StatusOK, map[string]string{"id": d.ID, "status": "stored"})
}

// truncateMillis truncates a duration to an integer, clamped to int64 (a
// float64 beyond it would otherwise convert to an arbitrary value).
func truncateMillis(f float64) int64 {
	switch {
	case f >= math.MaxInt64:
		return math.MaxInt64
	case f <= math.MinInt64:
		return math.MinInt64
	}
	return int64(f)
}

type diagnosticJSON struct {
	ID         string          `json:"id"`
	WorkerID   string          `json:"worker_id"`
	Status     string          `json:"status"`
	RunAt      int64           `json:"run_at"`
	DurationMS int64           `json:"duration_ms"`
	AutoFixed  bool            `json:"auto_fixed"`
	Checks     json.RawMessage `json:"checks"`
}

func toDiagnosticJSON(d store.Diagnostic) diagnosticJSON {
	return diagnosticJSON{ID: d.ID, WorkerID: d.WorkerID, Status: d.Status, RunAt: d.RunAt,
		DurationMS: d.DurationMS, AutoFixed: d.AutoFixed, Checks: json.RawMessage(d.Checks)}
}

// diagnostics loads up to limit reports: 404 Worker not found.
func (s *Server) diagnostics(c echo.Context, limit int) (string, []store.Diagnostic, error) {
	wid, ok := store.ParseID(c.Param("worker_id"))
	if !ok {
		return "", nil, fail(http.StatusNotFound, msgWorkerNotFound)
	}
	reports, err := s.store.Diagnostics(c.Request().Context(), wid, limit)
	if errors.Is(err, store.ErrWorkerNotFound) {
		return "", nil, fail(http.StatusNotFound, msgWorkerNotFound)
	}
	if err != nil {
		return "", nil, internal(failMsg(c), err)
	}
	return wid, reports, nil
}

// listDiagnostics is GET /api/diagnostics/:worker_id (§4.11).
func (s *Server) listDiagnostics(c echo.Context) error {
	limit, err := strconv.Atoi(c.QueryParam("limit"))
	if err != nil || limit < 1 || limit > 100 {
		limit = 10
	}
	wid, reports, err := s.diagnostics(c, limit)
	if err != nil {
		return err
	}
	out := make([]diagnosticJSON, len(reports))
	for i, d := range reports {
		out[i] = toDiagnosticJSON(d)
	}
	return c.JSON(http.StatusOK, map[string]any{"worker_id": wid, "reports": out})
}

// latestDiagnostic is GET /api/diagnostics/:worker_id/latest (§4.11).
func (s *Server) latestDiagnostic(c echo.Context) error {
	_, reports, err := s.diagnostics(c, 1)
	if err != nil {
		return err
	}
	if len(reports) == 0 {
		return fail(http.StatusNotFound, "No diagnostic reports found")
	}
	return c.JSON(http.StatusOK, toDiagnosticJSON(reports[0]))
}
