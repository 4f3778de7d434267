package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/expo-free-agent/controller/actors"
	"github.com/expo-free-agent/controller/store"
)

// submitted is the answer to submit and retry.
type submitted struct {
	ID              string `json:"id"`
	Status          string `json:"status"`
	SubmittedAt     int64  `json:"submitted_at"`
	AccessToken     string `json:"access_token"`
	OriginalBuildID string `json:"original_build_id,omitempty"`
}

// submit is POST /api/builds/submit (§2.1): source and certs stream to
// temporary files; nothing is kept unless the whole request is valid; the
// answer follows the fsync of the files and the commit of the row.
func (s *Server) submit(c echo.Context) error {
	mr, err := multipartReader(c, s.cfg.MaxSourceSize+s.cfg.MaxCertsSize+1<<20)
	if err != nil {
		return err
	}
	var (
		source, certs                    *actors.Staged
		platform                         string
		sawSource, sawCerts, sawPlatform bool
	)
	defer func() { source.Discard(); certs.Discard() }() // no-ops once committed
	for {
		p, err := nextPart(mr)
		if err != nil {
			return err
		}
		if p == nil {
			break
		}
		switch name := p.FormName(); {
		case name == "source" && !sawSource:
			sawSource = true
			if source, err = s.stageFile(c, p, actors.KindSource, s.cfg.MaxSourceSize, "Source file too large", nil); err != nil {
				return err
			}
		case name == "certs" && !sawCerts:
			sawCerts = true
			if certs, err = s.stageFile(c, p, actors.KindCerts, s.cfg.MaxCertsSize, "Certs file too large", nil); err != nil {
				return err
			}
		case name == "platform" && !sawPlatform:
			sawPlatform = true
			if platform, err = readTextPart(p); err != nil {
				return err
			}
		default: // profile, appleId, applePassword and anything else: read and dropped
			if err := drainPart(p); err != nil {
				return err
			}
		}
	}
	if source == nil {
		return fail(http.StatusBadRequest, "Source file required")
	}
	if platform != store.PlatformIOS && platform != store.PlatformAndroid {
		return fail(http.StatusBadRequest, "Valid platform required (ios|android)")
	}
	id := uuid.NewString()
	return s.createBuild(c, id, platform, nil, func() (string, *string, error) {
		src, err := source.Commit(id, ".zip")
		if err != nil {
			return src, nil, err
		}
		if certs == nil {
			return src, nil, nil
		}
		crt, err := certs.Commit(id, ".zip")
		return src, &crt, err
	})
}

// createBuild places the files (place returns their relative paths), commits
// the build through the queue manager and answers; on failure the placed
// files are removed again.
func (s *Server) createBuild(c echo.Context, id, platform string, original *string, place func() (string, *string, error)) error {
	token, hash, err := newToken()
	if err != nil {
		return internal(failMsg(c), err)
	}
	src, crt, err := place()
	if err == nil {
		nb := store.NewBuild{ID: id, Platform: platform, SubmittedAt: s.now(), SourcePath: src,
			CertsPath: crt, TokenHash: hash, OriginalBuildID: original}
		if err = s.queue.Submit(c.Request().Context(), nb); err == nil {
			out := submitted{ID: id, Status: store.StatusPending, SubmittedAt: nb.SubmittedAt, AccessToken: token}
			if original != nil {
				out.OriginalBuildID = *original
			}
			return c.JSON(http.StatusOK, out)
		}
	}
	for _, rel := range []*string{&src, crt} {
		if rel != nil && *rel != "" {
			if derr := s.files.Delete(*rel); derr != nil {
				s.log.Error("removing the files of a failed submit", "build_id", id, "err", derr)
			}
		}
	}
	return internal(failMsg(c), err)
}

// stageFile streams one file part to a temporary file. A zero-byte part
// counts as absent (nil). Answers: 413 tooLargeMsg past limit, 413 Request
// body too large past the body cap, 400 Invalid multipart body for a broken
// stream, and the route's 500 for a disk failure.
func (s *Server) stageFile(c echo.Context, p io.Reader, kind actors.Kind, limit int64, tooLargeMsg string, progress func(int64)) (*actors.Staged, error) {
	pr := &partReader{r: p}
	st, err := s.files.Stage(kind, pr, limit, progress)
	switch {
	case err == nil && st.Size == 0:
		st.Discard()
		return nil, nil
	case err == nil:
		s.metrics.bytesIn.WithLabelValues(kindName(kind)).Add(float64(st.Size))
		return st, nil
	case errors.Is(err, actors.ErrTooLarge):
		return nil, tooLarge(tooLargeMsg)
	case pr.err != nil:
		return nil, bodyReadError(pr.err)
	default:
		return nil, internal(failMsg(c), err)
	}
}

// isoMillis formats epoch milliseconds as ISO-8601 UTC with milliseconds.
func isoMillis(ms int64) string {
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z")
}

type listItem struct {
	ID          string  `json:"id"`
	Status      string  `json:"status"`
	CreatedAt   string  `json:"createdAt"`
	CompletedAt *string `json:"completedAt,omitempty"`
}

// listBuilds is GET /api/builds (§2.2): an array, newest first; completedAt
// only on finished builds.
func (s *Server) listBuilds(c echo.Context) error {
	builds, err := s.store.ListBuilds(c.Request().Context())
	if err != nil {
		return internal(failMsg(c), err)
	}
	out := make([]listItem, len(builds))
	for i, b := range builds {
		out[i] = listItem{ID: b.ID, Status: b.Status, CreatedAt: isoMillis(b.SubmittedAt)}
		if b.Finished() && b.CompletedAt != nil {
			t := isoMillis(*b.CompletedAt)
			out[i].CompletedAt = &t
		}
	}
	return c.JSON(http.StatusOK, out)
}

type activeItem struct {
	ID        string  `json:"id"`
	Status    string  `json:"status"`
	Platform  string  `json:"platform"`
	WorkerID  *string `json:"worker_id"`
	StartedAt *int64  `json:"started_at"`
}

// activeBuilds is GET /api/builds/active (§2.3).
func (s *Server) activeBuilds(c echo.Context) error {
	builds, err := s.store.RunningBuilds(c.Request().Context())
	if err != nil {
		return internal(failMsg(c), err)
	}
	out := make([]activeItem, len(builds))
	for i, b := range builds {
		out[i] = activeItem{ID: b.ID, Status: b.Status, Platform: b.Platform, WorkerID: b.WorkerID, StartedAt: b.StartedAt}
	}
	return c.JSON(http.StatusOK, map[string]any{"builds": out})
}

// loadBuild resolves :id to a build: 404 Build not found for a non-UUID or
// an unknown id.
func (s *Server) loadBuild(c echo.Context) (store.Build, error) {
	id, err := buildID(c)
	if err != nil {
		return store.Build{}, err
	}
	b, err := s.store.GetBuild(c.Request().Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return store.Build{}, fail(http.StatusNotFound, msgBuildNotFound)
	}
	if err != nil {
		return store.Build{}, internal(failMsg(c), err)
	}
	return b, nil
}

type statusJSON struct {
	ID           string  `json:"id"`
	Status       string  `json:"status"`
	Platform     string  `json:"platform"`
	WorkerID     *string `json:"worker_id"`
	SubmittedAt  int64   `json:"submitted_at"`
	StartedAt    *int64  `json:"started_at"`
	CompletedAt  *int64  `json:"completed_at"`
	ErrorMessage *string `json:"error_message"`
}

// buildStatus is GET /api/builds/:id/status (§2.4): exactly eight fields.
func (s *Server) buildStatus(c echo.Context) error {
	b, err := s.loadBuild(c)
	if err != nil {
		return err
	}
	out := statusJSON{ID: b.ID, Status: b.Status, Platform: b.Platform, WorkerID: b.WorkerID,
		SubmittedAt: b.SubmittedAt, StartedAt: b.StartedAt, CompletedAt: b.CompletedAt}
	if b.Status == store.StatusFailed {
		out.ErrorMessage = b.ErrorMessage
	}
	return c.JSON(http.StatusOK, out)
}

type logJSON struct {
	Timestamp int64  `json:"timestamp"`
	Level     string `json:"level"`
	Message   string `json:"message"`
}

// logPageSize is how many log entries are read and encoded at a time, so
// that a log of any length streams in bounded memory.
const logPageSize = 1000

// getLogs is GET /api/builds/:id/logs (§2.5): the whole log, in order,
// streamed page by page.
func (s *Server) getLogs(c echo.Context) error {
	id, err := buildID(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	page, err := s.store.LogPage(ctx, id, 0, logPageSize)
	if errors.Is(err, store.ErrNotFound) {
		return fail(http.StatusNotFound, msgBuildNotFound)
	}
	if err != nil {
		return internal(failMsg(c), err)
	}
	w := c.Response()
	w.Header().Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	fmt.Fprintf(w, `{"build_id":%q,"logs":[`, id)
	first := true
	for {
		for _, e := range page {
			if !first {
				w.Write([]byte{','})
			}
			first = false
			if err := enc.Encode(logJSON{Timestamp: e.Timestamp, Level: e.Level, Message: e.Message}); err != nil {
				return nil // the client went away
			}
		}
		if len(page) < logPageSize {
			break
		}
		if page, err = s.store.LogPage(ctx, id, page[len(page)-1].Seq, logPageSize); err != nil {
			// The status is sent: end the body early; the client sees broken JSON.
			s.log.Error("streaming logs", "build_id", id, "err", err)
			return nil
		}
	}
	w.Write([]byte("]}\n"))
	return nil
}

// download is GET /api/builds/:id/download[/:type] (§2.6).
func (s *Server) download(c echo.Context) error {
	b, err := s.loadBuild(c)
	if err != nil {
		return err
	}
	switch c.Param("type") {
	case "", "result":
		if b.Status != store.StatusCompleted {
			return fail(http.StatusBadRequest, "Build not completed")
		}
		if b.ResultPath == nil {
			return fail(http.StatusNotFound, "Build result not found")
		}
		return s.sendFile(c, *b.ResultPath, echo.MIMEOctetStream, b.ID+actors.ResultExt(b.Platform),
			"Build result not found", "Failed to read build result")
	case "source":
		return s.sendFile(c, b.SourcePath, "application/zip", b.ID+".zip",
			"Source file not found", "Failed to read source file")
	default:
		return fail(http.StatusBadRequest, "Invalid file type")
	}
}

var copyBufPool = sync.Pool{New: func() any { b := make([]byte, actors.ChunkSize); return &b }}

// sendFile streams a stored file with its length and an attachment name.
func (s *Server) sendFile(c echo.Context, rel, contentType, filename, notFoundMsg, failMessage string) error {
	f, size, err := s.openStored(rel, notFoundMsg, failMessage)
	if err != nil {
		return err
	}
	defer f.Close()
	s.stream(c, f, size, contentType, filename)
	return nil
}

// openStored opens a stored file: 404 notFoundMsg when it is absent, 500
// failMessage when it cannot be read.
func (s *Server) openStored(rel, notFoundMsg, failMessage string) (actors.File, int64, error) {
	f, size, err := s.files.Open(rel)
	if errors.Is(err, actors.ErrFileNotFound) || errors.Is(err, actors.ErrBadPath) {
		return nil, 0, fail(http.StatusNotFound, notFoundMsg)
	}
	if err != nil {
		return nil, 0, internal(failMessage, err)
	}
	return f, size, nil
}

// stream writes an open file as a 200 attachment through a 64 KiB buffer.
func (s *Server) stream(c echo.Context, f io.Reader, size int64, contentType, filename string) {
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, contentType)
	h.Set(echo.HeaderContentLength, strconv.FormatInt(size, 10))
	h.Set(echo.HeaderContentDisposition, `attachment; filename="`+filename+`"`)
	c.Response().WriteHeader(http.StatusOK)
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	n, err := io.CopyBuffer(c.Response(), io.LimitReader(f, size), *bp)
	s.metrics.bytesOut.WithLabelValues(downloadKind(c)).Add(float64(n))
	if err != nil {
		s.log.Warn("download interrupted", "route", c.Path(), "err", err)
	}
}

// downloadKind names what a download route sends, for the metrics.
func downloadKind(c echo.Context) string {
	p := c.Path()
	switch {
	case strings.HasSuffix(p, "/certs"):
		return "certs"
	case strings.HasSuffix(p, "/source"), c.Param("type") == "source":
		return "source"
	default:
		return "result"
	}
}

// cancel is POST /api/builds/:id/cancel (§2.7); the body is ignored.
func (s *Server) cancel(c echo.Context) error {
	id, err := buildID(c)
	if err != nil {
		return err
	}
	_, err = s.queue.Cancel(c.Request().Context(), id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return fail(http.StatusNotFound, msgBuildNotFound)
	case errors.Is(err, store.ErrConflict):
		return fail(http.StatusBadRequest, "Build already finished")
	case err != nil:
		return internal(failMsg(c), err)
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "cancelled"})
}

// retry is POST /api/builds/:id/retry (§2.8): a new build with copies of the
// original's source and certs.
func (s *Server) retry(c echo.Context) error {
	b, err := s.loadBuild(c)
	if err != nil {
		return err
	}
	if !b.Finished() {
		return fail(http.StatusConflict, "Build is still in progress")
	}
	id := uuid.NewString()
	gone := fail(http.StatusBadRequest, "Original build source no longer available. Please submit a new build.")
	var placeErr error
	err = s.createBuild(c, id, b.Platform, &b.ID, func() (string, *string, error) {
		src, err := s.files.Copy(b.SourcePath, actors.KindSource, id, ".zip")
		if err != nil {
			placeErr = err
			return src, nil, err
		}
		if b.CertsPath == nil {
			return src, nil, nil
		}
		crt, err := s.files.Copy(*b.CertsPath, actors.KindCerts, id, ".zip")
		placeErr = err
		return src, &crt, err
	})
	if errors.Is(placeErr, actors.ErrFileNotFound) || errors.Is(placeErr, actors.ErrBadPath) {
		return gone
	}
	return err
}
