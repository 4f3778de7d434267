package httpapi

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/expo-free-agent/controller/actors/files"
	"github.com/expo-free-agent/controller/httpapi/certs"
	"github.com/expo-free-agent/controller/store"
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
	raw, err := readJSONBody(c)
	if err != nil {
		return err
	}
	lines, isBatch, refusal := logBody(raw)
	if refusal != "" {
		return fail(http.StatusBadRequest, refusal)
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
