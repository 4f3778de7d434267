package httpapi

import (
	"bytes"
	"context"
	"embed"
	"html/template"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/expo-free-agent/controller/internal/version"
	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
	"github.com/labstack/echo/v4"
)

//go:embed web
var webFiles embed.FS

var pageTemplates = template.Must(template.New("").Funcs(template.FuncMap{
	"inc":     func(i int) int { return i + 1 },
	"version": func() string { return version.Get().Version }, // the footer's
}).ParseFS(webFiles, "web/*.html"))

const (
	dashboardCacheTTL   = 2 * time.Second
	dashboardBuildLimit = 100
	buildPageLogLines   = 2000
)

// The dashboard (§3.3) is public and shows no secret: no token, no key, no
// worker id (a worker id plus a build id opens keyless telemetry), no Apple
// field, no certificate content and no path. html/template escapes all text.

type dashBuild struct {
	ID, ShortID, Platform, Status, Worker string
	Submitted, Started, Completed         string
	Duration, Error, SHA256, Size         string
	Attempts                              int
	Cancelled, Running                    bool
}

type dashWorker struct {
	Name, Status, LastSeen, Platforms, Uptime string
	Completed, Failed                         int
	CurrentBuild, CurrentBuildShort           string
}

type dashQueued struct {
	ID, ShortID, Platform, Submitted, Waiting string
	Attempts                                  int
}

type dashboardView struct {
	Generated                          string
	Pending, Active, Completed, Failed int
	OnlineWorkers                      int
	Queue                              []dashQueued
	QueueMore                          int // queued builds not listed
	Builds                             []dashBuild
	Workers                            []dashWorker
	BuildLimit                         int
	TotalBuilds                        int
}

// dashboardData is what one dashboard view reads.
type dashboardData struct {
	counts                   store.Counts
	workers                  []domain.Worker
	recent, pending, running []domain.Build
}

// dashboardCache is the last dashboardData, shared by every viewer: it is
// reused while the database has not changed (store.Version) and is younger
// than dashboardCacheTTL, so a hundred open dashboards cost what one does.
type dashboardCache struct {
	mu      sync.Mutex
	valid   bool
	version uint64
	at      time.Time
	data    dashboardData
}

// dashboardData returns the shared snapshot, reading it again when the
// database changed. Every query is bounded: the counts are kept by the
// store, and only the first dashboardBuildLimit pending and newest builds
// are read, so the cost does not grow with the queue or the history.
func (s *Server) dashboardData(ctx context.Context) (dashboardData, error) {
	c := &s.dash
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.valid && c.version == s.store.Version() && time.Since(c.at) < dashboardCacheTTL {
		return c.data, nil
	}
	if err := s.queue.SaveSeen(ctx); err != nil {
		s.log.Warn("dashboard: saving last-seen times", "err", err)
	}
	version := s.store.Version() // after SaveSeen's own commit
	var (
		d   dashboardData
		err error
	)
	if d.counts, err = s.store.BuildCounts(ctx); err != nil {
		return d, err
	}
	if d.workers, err = s.store.ListWorkers(ctx); err != nil {
		return d, err
	}
	if d.recent, err = s.store.RecentBuilds(ctx, dashboardBuildLimit); err != nil {
		return d, err
	}
	if d.pending, err = s.store.FirstPending(ctx, dashboardBuildLimit); err != nil {
		return d, err
	}
	if d.running, err = s.store.RunningBuilds(ctx); err != nil {
		return d, err
	}
	c.valid, c.version, c.at, c.data = true, version, time.Now(), d
	return d, nil
}

func (s *Server) dashboardView(c echo.Context) (*dashboardView, error) {
	d, err := s.dashboardData(c.Request().Context())
	if err != nil {
		return nil, err
	}
	now := s.cfg.Clock.Now()
	counts := d.counts
	v := &dashboardView{Generated: fmtTime(now.UnixMilli()), Pending: counts.Pending, Active: counts.Active(),
		Completed: counts.Completed, Failed: counts.Failed, BuildLimit: dashboardBuildLimit,
		TotalBuilds: counts.Pending + counts.Active() + counts.Completed + counts.Failed}
	v.QueueMore = max(0, counts.Pending-len(d.pending))
	for _, b := range d.pending {
		v.Queue = append(v.Queue, dashQueued{ID: b.ID, ShortID: short(b.ID), Platform: string(b.Platform),
			Submitted: fmtTime(b.SubmittedAt), Waiting: fmtDuration(now.UnixMilli() - b.SubmittedAt), Attempts: b.Attempts})
	}
	names := make(map[string]string, len(d.workers))
	for _, w := range d.workers {
		names[w.ID] = w.Name
	}
	for _, b := range d.recent {
		v.Builds = append(v.Builds, toDashBuild(b, names, now.UnixMilli()))
	}
	v.Workers, v.OnlineWorkers = dashWorkers(d, now)
	return v, nil
}

// dashWorkers are the worker rows and how many workers are online.
func dashWorkers(d dashboardData, now time.Time) ([]dashWorker, int) {
	current := map[string]string{}
	for _, b := range d.running {
		if b.WorkerID != nil {
			current[*b.WorkerID] = b.ID
		}
	}
	var (
		rows   []dashWorker
		online int
	)
	for _, w := range d.workers {
		dw := dashWorker{Name: w.Name, Status: string(w.Status), LastSeen: fmtTime(w.LastSeenAt) + " (" +
			fmtDuration(now.UnixMilli()-w.LastSeenAt) + " ago)", Platforms: platformsText(w.Capabilities),
			Completed: w.BuildsCompleted, Failed: w.BuildsFailed,
			Uptime: formatUptime(now.Sub(time.UnixMilli(w.RegisteredAt)))}
		if id, ok := current[w.ID]; ok {
			dw.CurrentBuild, dw.CurrentBuildShort = id, short(id)
		}
		if w.Status != domain.WorkerOffline && w.LastSeenAt >= now.Add(-onlineWindow).UnixMilli() {
			online++
		}
		rows = append(rows, dw)
	}
	return rows, online
}

func toDashBuild(b domain.Build, names map[string]string, now int64) dashBuild {
	d := dashBuild{ID: b.ID, ShortID: short(b.ID), Platform: string(b.Platform), Status: string(b.Status),
		Submitted: fmtTime(b.SubmittedAt), Attempts: b.Attempts, Cancelled: b.Cancelled, Running: b.Running()}
	if b.Cancelled {
		d.Status = "cancelled"
	}
	if b.WorkerID != nil {
		if n, ok := names[*b.WorkerID]; ok {
			d.Worker = n
		} else {
			d.Worker = "(unknown worker)"
		}
	}
	if b.StartedAt != nil {
		d.Started = fmtTime(*b.StartedAt)
		end := now
		if b.CompletedAt != nil {
			end = *b.CompletedAt
		}
		d.Duration = fmtDuration(end - *b.StartedAt)
	}
	if b.CompletedAt != nil {
		d.Completed = fmtTime(*b.CompletedAt)
	}
	if b.Status == domain.StatusFailed && b.ErrorMessage != nil {
		d.Error = *b.ErrorMessage
	}
	if b.ResultSHA256 != nil {
		d.SHA256 = *b.ResultSHA256
	}
	if b.ResultSize != nil {
		d.Size = fmtBytes(*b.ResultSize)
	}
	return d
}

func (s *Server) render(c echo.Context, name string, data any) error {
	var buf bytes.Buffer
	if err := pageTemplates.ExecuteTemplate(&buf, name, data); err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.Blob(http.StatusOK, "text/html; charset=utf-8", buf.Bytes())
}

// dashboardPage is GET /: the whole page, which works without JavaScript
// (a <noscript> refresh) and with it swaps in /dashboard/fragment every few
// seconds.
func (s *Server) dashboardPage(c echo.Context) error {
	v, err := s.dashboardView(c)
	if err != nil {
		return err
	}
	return s.render(c, "index.html", v)
}

// dashboardFragment is the live part of the page, for the page's script.
func (s *Server) dashboardFragment(c echo.Context) error {
	v, err := s.dashboardView(c)
	if err != nil {
		return err
	}
	return s.render(c, "fragment.html", v)
}

// dashboardAsset serves the embedded script and style sheet.
func (s *Server) dashboardAsset(c echo.Context) error {
	name := c.Param("name")
	types := map[string]string{"dashboard.js": "text/javascript; charset=utf-8", "dashboard.css": "text/css; charset=utf-8"}
	ct, ok := types[name]
	if !ok {
		return fail(http.StatusNotFound, msgNotFound)
	}
	b, err := webFiles.ReadFile("web/" + name)
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "public, max-age=300")
	return c.Blob(http.StatusOK, ct, b)
}

type buildPageView struct {
	Build     dashBuild
	Logs      []pageLog
	LastSeq   int64
	Finished  bool
	Generated string
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

// buildPage is GET /builds/:id: one build with its whole log, which the
// page's script then follows.
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
	names, err := s.workerNames(c)
	if err != nil {
		return err
	}
	now := s.cfg.Clock.Now()
	v := buildPageView{Build: toDashBuild(b, names, now.UnixMilli()), Logs: toPageLogs(entries),
		Finished: b.Finished() && !more, Generated: fmtTime(now.UnixMilli())}
	if n := len(entries); n > 0 {
		v.LastSeq = entries[n-1].Seq
	}
	return s.render(c, "build.html", v)
}

func (s *Server) workerNames(c echo.Context) (map[string]string, error) {
	workers, err := s.store.ListWorkers(c.Request().Context())
	if err != nil {
		return nil, err
	}
	names := make(map[string]string, len(workers))
	for _, w := range workers {
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
	names, err := s.workerNames(c)
	if err != nil {
		return err
	}
	d := toDashBuild(b, names, s.cfg.Clock.Now().UnixMilli())
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusOK, map[string]any{
		"status": d.Status, "worker": d.Worker, "duration": d.Duration, "attempts": d.Attempts,
		"error": d.Error, "sha256": d.SHA256, "finished": b.Finished(), "more": more, "logs": toPageLogs(entries),
		"resultExt": b.Platform.ResultExt(),
	})
}
