package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/expo-free-agent/controller/actors/files"
	"github.com/expo-free-agent/controller/httpapi/certs"
	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

// The assignee's calls: a worker fetching what its build needs and reporting
// on it. Each route's access rule has already checked the key, the worker's
// claim and that it holds the :id build (callerOf(c).Build); the store
// re-checks the assignee inside the transaction of every write.

// workerSource is GET /api/builds/:id/source (§4.3).
func (s *Server) workerSource(c echo.Context) error {
	b := callerOf(c).Build
	return s.sendAssigneeFile(c, stored{rel: b.SourcePath, contentType: "application/zip", filename: b.ID + ".zip",
		notFound: msgSourceNotFound, failed: msgReadSourceFailed})
}

// workerCerts is GET /api/builds/:id/certs (§4.3).
func (s *Server) workerCerts(c echo.Context) error {
	b := callerOf(c).Build
	if b.CertsPath == nil {
		return fail(http.StatusNotFound, msgCertsNotFound)
	}
	return s.sendAssigneeFile(c, stored{rel: *b.CertsPath, contentType: "application/zip", filename: b.ID + "-certs.zip",
		notFound: msgCertsNotFound, failed: msgReadCertsFailed})
}

// sendAssigneeFile streams a build's file to its assignee, counting the
// download as a liveness signal.
func (s *Server) sendAssigneeFile(c echo.Context, f stored) error {
	fh, size, err := s.openStored(f)
	if err != nil {
		return err
	}
	defer fh.Close()
	if err := s.touch(c); err != nil {
		return err
	}
	s.stream(c, fh, size, f.contentType, f.filename)
	return nil
}

// touch records a liveness signal from the caller, the :id build's assignee,
// and that the worker was seen.
func (s *Server) touch(c echo.Context) error {
	cl := callerOf(c)
	if err := s.store.TouchBuild(c.Request().Context(), cl.BuildID, cl.WorkerID, s.now()); err != nil {
		return err
	}
	s.seen(c, cl.WorkerID)
	return nil
}

// certsSecure is GET /api/builds/:id/certs-secure (§4.4). The stored zip is
// read in place (io.ReaderAt) twice: certs.Check inflates every entry it uses
// to check the bundle before anything is answered, then WriteJSON inflates
// them again straight into the answer, which is byte for byte what c.JSON
// wrote of certs.Parse's Bundle, now with a Content-Length. Neither the zip
// nor an entry is held in memory. A failure while answering (a disk error, a
// client gone) can only cut the answer short: it is logged, and the short
// body (against its Content-Length) makes net/http close the connection.
func (s *Server) certsSecure(c echo.Context) error {
	b := callerOf(c).Build
	if b.CertsPath == nil {
		return fail(http.StatusNotFound, msgCertsNotFound)
	}
	zip, size, closeZip, err := s.openCertsZip(*b.CertsPath)
	if err != nil {
		return err
	}
	defer closeZip()
	answer, err := certs.Check(zip, size, s.cfg.CertsUnzipLimit)
	if err != nil {
		return err
	}
	if err := s.touch(c); err != nil {
		return err
	}
	indent := "" // as c.JSON indents
	if _, pretty := c.QueryParams()["pretty"]; c.Echo().Debug || pretty {
		indent = "  "
	}
	res := c.Response()
	res.Header().Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	res.Header().Set(echo.HeaderContentLength, strconv.FormatInt(answer.Len(indent), 10))
	res.WriteHeader(http.StatusOK)
	if _, err := answer.WriteJSON(res, indent); err != nil {
		s.log.Warn("certs-secure answer interrupted", "build_id", b.ID, "err", err)
	}
	return nil
}

// openCertsZip opens a stored certs zip for reading in place: 404 Certs not
// found when it is absent; files.ErrTooLarge (the route's 500) past
// --max-certs-size.
func (s *Server) openCertsZip(rel string) (io.ReaderAt, int64, func() error, error) {
	fh, size, err := s.files.Open(rel)
	if errors.Is(err, files.ErrFileNotFound) || errors.Is(err, files.ErrBadPath) {
		return nil, 0, nil, fail(http.StatusNotFound, msgCertsNotFound)
	}
	if err != nil {
		return nil, 0, nil, err
	}
	if size > s.cfg.MaxCertsSize {
		fh.Close()
		return nil, 0, nil, files.ErrTooLarge
	}
	if ra, ok := fh.(io.ReaderAt); ok { // *os.File is
		return ra, size, fh.Close, nil
	}
	defer fh.Close() // another File (a test's fault layer) is read into memory
	data, err := io.ReadAll(io.LimitReader(fh, s.cfg.MaxCertsSize))
	if err != nil {
		return nil, 0, nil, err
	}
	return bytes.NewReader(data), int64(len(data)), func() error { return nil }, nil
}

// postLogs is POST /api/builds/:id/logs (§4.5): one line or a batch. In a
// batch, lines that are not {level, message} with a valid level are skipped.
func (s *Server) postLogs(c echo.Context) error {
	var req struct {
		Level   string          `json:"level"`
		Message string          `json:"message"`
		Logs    json.RawMessage `json:"logs"`
	}
	got, err := readJSON(c, &req)
	if err != nil {
		return err
	}
	isBatch := got.sent("logs")
	var lines []store.LogInput
	switch {
	case !got.object:
		return fail(http.StatusBadRequest, msgInvalidLogBody)
	case isBatch:
		if !isArray(req.Logs) {
			return fail(http.StatusBadRequest, msgInvalidLogBody)
		}
		lines = batchLines(req.Logs)
	case !got.has("level") || !got.has("message") || got.wrongType("level") || got.wrongType("message"):
		return fail(http.StatusBadRequest, msgInvalidLogBody)
	case !domain.LogLevel(req.Level).Valid():
		return fail(http.StatusBadRequest, msgInvalidLogLevel)
	default:
		lines = []store.LogInput{{Level: domain.LogLevel(req.Level), Message: req.Message}}
	}
	cl := callerOf(c)
	n, err := s.store.AppendLogs(c.Request().Context(), cl.BuildID, cl.WorkerID, lines, s.now())
	if errors.Is(err, store.ErrBusy) || errors.Is(err, store.ErrTimeout) {
		// Nothing was stored: the worker may send the same lines again.
		c.Response().Header().Set("Retry-After", "1")
		return &apiError{status: http.StatusServiceUnavailable, msg: msgLogsBusy, cause: err}
	}
	if err != nil {
		return err
	}
	s.seen(c, cl.WorkerID)
	if isBatch {
		return c.JSON(http.StatusOK, map[string]any{"success": true, "count": n})
	}
	return c.JSON(http.StatusOK, map[string]any{"success": true})
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
	var lines []store.LogInput
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
	return lines
}

// batchLine reads one element of a batch (valid JSON).
func batchLine(el []byte) (store.LogInput, bool) {
	if !isObject(el) {
		return store.LogInput{}, false
	}
	var level, message json.RawMessage
	i := skipSpace(el, 1)
	for i < len(el) && el[i] == '"' {
		kend := skipValue(el, i)
		key := el[i+1 : kend-1]
		if bytes.IndexByte(key, '\\') >= 0 {
			return batchLineDecoded(el)
		}
		v := skipSpace(el, skipSpace(el, kend)+1) // after ':'
		vend := skipValue(el, v)
		switch string(key) {
		case "level":
			level = el[v:vend]
		case "message":
			message = el[v:vend]
		}
		i = skipSpace(el, vend)
		if i < len(el) && el[i] == ',' {
			i = skipSpace(el, i+1)
		}
	}
	return lineOf(level, message)
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

// heartbeat is POST /api/builds/:id/heartbeat (§4.6). In the minutes after
// the build completed, its last assignee's heartbeat is answered 200 with no
// change (§4.14).
func (s *Server) heartbeat(c echo.Context) error {
	if callerOf(c).AfterCompletion {
		return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
	}
	var req struct {
		Progress float64 `json:"progress"` // optional; null is no progress
	}
	got, err := readJSON(c, &req)
	if err != nil {
		return err
	}
	if !got.object {
		return fail(http.StatusBadRequest, msgInvalidJSON)
	}
	var progress *float64
	if got.has("progress") {
		if got.wrongType("progress") || req.Progress < 0 || req.Progress > 100 {
			return fail(http.StatusBadRequest, msgInvalidProgress)
		}
		progress = &req.Progress
	}
	cl, now := callerOf(c), s.now()
	if err := s.store.Heartbeat(c.Request().Context(), cl.BuildID, cl.WorkerID, progress, now); err != nil {
		return err
	}
	s.seen(c, cl.WorkerID)
	return c.JSON(http.StatusOK, map[string]any{"status": "ok", "timestamp": now})
}
