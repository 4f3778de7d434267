package httpapi

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/expo-free-agent/controller/actors/queue"
	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

type buildPageView struct {
	Viewer
	Build       dashBuild
	Logs        []pageLog
	LastSeq     int64
	Finished    bool
	GeneratedAt int64
}

type pageLog struct {
	Seq       int64  `json:"seq"`
	Time      string `json:"time"`
	Timestamp int64  `json:"timestamp"`
	Level     string `json:"level"`
	Message   string `json:"message"`
}

func toPageLogs(entries []domain.LogEntry) []pageLog {
	out := make([]pageLog, len(entries))
	for i, e := range entries {
		out[i] = pageLog{Seq: e.Seq, Time: time.UnixMilli(e.Timestamp).UTC().Format("15:04:05.000"),
			Timestamp: e.Timestamp, Level: string(e.Level), Message: e.Message}
	}
	return out
}

// buildPage is GET /builds/:id: one build with its log, which the page's
// script then follows; a signed-in operator gets its actions.
func (s *Server) buildPage(c echo.Context) error {
	b, err := s.loadBuild(c)
	if err != nil {
		return err
	}
	// The page shows the first lines; its script fetches the rest page by page.
	entries, more, err := s.store.LogPage(c.Request().Context(), b.ID, 0, buildPageLogLines)
	if err != nil {
		return err
	}
	names, err := s.workerNames(c, b)
	if err != nil {
		return err
	}
	now := s.cfg.Clock.Now()
	v := buildPageView{Viewer: s.viewerOf(c), Build: s.toDashBuild(b, names, now.UnixMilli()), Logs: toPageLogs(entries),
		Finished: b.Finished() && !more, GeneratedAt: now.UnixMilli()}
	if n := len(entries); n > 0 {
		v.LastSeq = entries[n-1].Seq
	}
	return s.render(c, "build.html", v)
}

// workerNames names the build's worker, for toDashBuild: one row, not the
// fleet (a build page polls it while the build runs). A worker that is gone
// is left out (shown as "(unknown worker)").
func (s *Server) workerNames(c echo.Context, b domain.Build) (map[string]string, error) {
	names := map[string]string{}
	if b.WorkerID == nil {
		return names, nil
	}
	w, err := s.store.GetWorker(c.Request().Context(), *b.WorkerID)
	switch {
	case errors.Is(err, store.ErrWorkerNotFound):
	case err != nil:
		return nil, err
	default:
		names[w.ID] = w.Name
	}
	return names, nil
}

// buildPageLogs is GET /builds/:id/logs.json?after=<seq>: the log lines after
// a sequence number and the build's state, for the build page's script.
func (s *Server) buildPageLogs(c echo.Context) error {
	b, err := s.loadBuild(c)
	if err != nil {
		return err
	}
	after, _ := strconv.ParseInt(c.QueryParam("after"), 10, 64)
	entries, more, err := s.store.LogPage(c.Request().Context(), b.ID, after, logPageSize)
	if err != nil {
		return err
	}
	names, err := s.workerNames(c, b)
	if err != nil {
		return err
	}
	d := s.toDashBuild(b, names, s.cfg.Clock.Now().UnixMilli())
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusOK, map[string]any{
		"status": d.Status, "worker": d.Worker, "duration": d.Duration, "attempts": d.Attempts,
		"error": d.Error, "sha256": d.SHA256, "finished": b.Finished(), "more": more, "logs": toPageLogs(entries),
		"resultExt": b.Platform.ResultExt(), "progress": d.Progress, "lastHeardAt": d.LastHeardAt,
		"hasResult": d.HasResult, "retriable": d.Retriable, "stage": d.Stage,
	})
}

// buildLogText is GET /builds/:id/log.txt: the whole log as a text file,
// one line per entry, streamed page by page in bounded memory.
func (s *Server) buildLogText(c echo.Context) error {
	b, err := s.loadBuild(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	page, more, err := s.store.LogPage(ctx, b.ID, 0, logPageSize)
	if err != nil {
		return err
	}
	w := c.Response()
	w.Header().Set(echo.HeaderContentType, "text/plain; charset=utf-8")
	w.Header().Set(echo.HeaderContentDisposition, `attachment; filename="`+b.ID+`.log"`)
	w.Header().Set(echo.HeaderCacheControl, "no-store")
	w.WriteHeader(http.StatusOK)
	buf := make([]byte, 0, 64<<10)
	for {
		for _, e := range page {
			buf = time.UnixMilli(e.Timestamp).UTC().AppendFormat(buf, "2006-01-02T15:04:05.000Z")
			buf = append(append(append(append(buf, ' '), e.Level...), ' '), e.Message...)
			buf = append(buf, '\n')
		}
		if _, err := w.Write(buf); err != nil {
			return nil // the client went away
		}
		buf = buf[:0]
		if !more {
			return nil
		}
		if page, more, err = s.store.LogPage(ctx, b.ID, page[len(page)-1].Seq, logPageSize); err != nil {
			// The status is sent: the file ends early.
			s.log.Error("streaming a log file", "build_id", b.ID, "err", err)
			return nil
		}
	}
}

// dashboardCancel is POST /builds/:id/cancel: the API's cancel (the queue
// manager's), then back to the build page.
func (s *Server) dashboardCancel(c echo.Context) error {
	id, err := s.cancelBuild(c)
	if err != nil {
		return err
	}
	return c.Redirect(http.StatusSeeOther, "/builds/"+id)
}

// dashboardRetry is POST /builds/:id/retry: the admin's retry, then on to
// the new build's page.
func (s *Server) dashboardRetry(c echo.Context) error {
	id, err := buildID(c)
	if err != nil {
		return err
	}
	out, err := s.queue.RetryWith(c.Request().Context(), id, queue.RetryOptions{})
	if err != nil {
		return err
	}
	return c.Redirect(http.StatusSeeOther, "/builds/"+out.ID)
}

// dashboardUnregister is POST /workers/:id/unregister: the API's unregister
// (its build, if any, is requeued), then back to the overview's workers.
func (s *Server) dashboardUnregister(c echo.Context) error {
	wid, ok := domain.ParseID(c.Param("id"))
	if !ok {
		return fail(http.StatusNotFound, msgWorkerNotFound)
	}
	if _, err := s.queue.Unregister(c.Request().Context(), wid); err != nil {
		return err
	}
	return c.Redirect(http.StatusSeeOther, "/#workers")
}

// errorPage is the HTML answer of a dashboard page's error.
type errorPage struct {
	Viewer
	Status  int
	Title   string
	Message string
}

// pageError answers a dashboard page's error as HTML: the sign-in form for
// a caller who must sign in (401), else a page with the status and message.
func (s *Server) pageError(c echo.Context, a answer) error {
	if a.status == http.StatusUnauthorized && a.msg == msgSignInRequired {
		v := signInView{Next: "/"}
		if req := c.Request(); req.Method == http.MethodGet {
			v.Next = safeNext(req.URL.RequestURI())
			v.Reload = req.Header.Get("Sec-Fetch-Site") == "cross-site"
		}
		return s.renderStatus(c, a.status, "signin.html", v)
	}
	return s.renderStatus(c, a.status, "error.html", errorPage{Viewer: s.viewerOf(c), Status: a.status,
		Title: http.StatusText(a.status), Message: a.msg})
}
