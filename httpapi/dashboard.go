package httpapi

import (
	"bytes"
	"context"
	"embed"
	"html/template"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/expo-free-agent/controller/internal/version"
	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

//go:embed web
var webFiles embed.FS

var pageTemplates = template.Must(template.New("").Funcs(template.FuncMap{
	"inc":     func(i int) int { return i + 1 },
	"ago":     agoHTML,
	"list":    func(v ...string) []string { return v },
	"version": func() string { return version.Get().Version }, // the footer's
}).ParseFS(webFiles, "web/*.html"))

const (
	dashboardCacheTTL   = 2 * time.Second
	dashboardBuildLimit = 100
	buildPageLogLines   = 2000
	// csrfPlaceholder stands for the session's form token in the shared,
	// signed-in rendering of the overview; each answer puts its own in.
	csrfPlaceholder = "@@CSRF@@"
	// nearTimeout: a running build unheard of for this share of the build
	// timeout is shown as near it.
	nearTimeout = 0.6
	// failureWindow is the window of the failed-build rate.
	failureWindow = time.Hour
)

// The overview (/) is public and shows no secret: no token, no key, no
// worker id (a worker id plus a build id opens keyless telemetry), no Apple
// field, no certificate content and no path. html/template escapes all text.

type dashBuild struct {
	ID, ShortID, Platform, Status, Worker    string
	AppName, AppVersion, Label               string
	SubmittedAt, StartedAt, CompletedAt      int64 // ms; 0: not yet
	Duration, Error, SHA256, Size, ResultExt string
	Attempts                                 int
	Cancelled, Running, Finished, HasResult  bool
	// Retriable: finished, with its files (retention has not taken them).
	Retriable                                  bool
	FilesPurgedAt                              int64 // ms retention took the files; 0: kept
	Progress                                   int   // percent, -1: none reported
	LastHeardAt                                int64 // ms of the last liveness, 0: none
	Heard                                      string
	NearTimeout                                bool
	TimeoutIn                                  string
	OriginalBuildID, OriginalShort, WorkerName string
	Stage                                      string // a running build's last reported stage
}

// Title is what people recognise the build by: its app's name (and
// version), else its short id.
func (b dashBuild) Title() string {
	switch {
	case b.AppName != "" && b.AppVersion != "":
		return b.AppName + " " + b.AppVersion
	case b.AppName != "":
		return b.AppName
	}
	return b.ShortID
}

type dashWorker struct {
	ID, Name, Status, Platforms, Generation string
	LastSeenAt                              int64
	Completed, Failed                       int
	CurrentBuild                            *dashBuild
	Online                                  bool
}

type dashboardView struct {
	GeneratedAt                        int64
	Pending, Active, Completed, Failed int
	OnlineWorkers                      int
	Trouble                            []troubleItem
	FailedLastHour, FinishedLastHour   int
	Queue                              []dashBuild
	QueueMore                          int // queued builds not listed
	Running                            []dashBuild
	Builds                             []dashBuild
	Workers                            []dashWorker
	BuildLimit                         int
	TotalBuilds                        int
	// SignedIn shows the actions; CSRF is then csrfPlaceholder.
	SignedIn bool
	CSRF     string
}

// dashboardData is what one overview reads.
type dashboardData struct {
	counts                   store.Counts
	facts                    store.Facts
	workers                  []domain.Worker
	recent, pending, running []domain.Build
	at                       time.Time // the clock when it was read
}

// dashboardCache is the last overview, shared by every viewer: the data and
// its two renderings (anonymous and signed-in) are reused while the database
// has not changed (store.Version) and are younger than dashboardCacheTTL, so
// a hundred open dashboards cost what one does: one read and one rendering
// per change, at most one per dashboardCacheTTL.
type dashboardCache struct {
	mu       sync.Mutex
	valid    bool
	version  uint64
	at       time.Time
	data     dashboardData
	rendered [2][]byte // the fragment: [0] anonymous, [1] signed in
	// reads counts the snapshots read, for the test of the cost.
	reads int
}

// dashboardData returns the shared snapshot, reading it again when the
// database changed or it aged. Every query is bounded: the counts are kept
// by the store, only the first dashboardBuildLimit pending and newest builds
// are read, and the facts read the queue and the last hour, so the cost does
// not grow with the history. Call with c.mu held.
func (s *Server) dashboardData(ctx context.Context) (dashboardData, error) {
	c := &s.dash
	if c.valid && c.version == s.store.Version() && s.cfg.Clock.Now().Sub(c.at) < dashboardCacheTTL {
		return c.data, nil
	}
	if err := s.queue.SaveSeen(ctx); err != nil {
		s.log.Warn("dashboard: saving last-seen times", "err", err)
	}
	version := s.store.Version() // after SaveSeen's own commit
	d := dashboardData{at: s.cfg.Clock.Now()}
	var err error
	if d.counts, err = s.store.BuildCounts(ctx); err != nil {
		return d, err
	}
	if d.facts, err = s.store.DashboardFacts(ctx, d.at.Add(-failureWindow).UnixMilli()); err != nil {
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
	c.valid, c.version, c.at, c.data, c.rendered = true, version, d.at, d, [2][]byte{}
	c.reads++
	return d, nil
}

// overviewFragment is the live part of the overview for a viewer, rendered
// once per snapshot and variant; a signed-in viewer's form token is put
// into the shared rendering.
func (s *Server) overviewFragment(c echo.Context) ([]byte, error) {
	cl := callerOf(c)
	variant := 0
	if cl.Kind == Session {
		variant = 1
	}
	s.dash.mu.Lock()
	d, err := s.dashboardData(c.Request().Context())
	if err != nil {
		s.dash.mu.Unlock()
		return nil, err
	}
	out := s.dash.rendered[variant]
	if out == nil {
		v := s.overviewView(d)
		if variant == 1 {
			v.SignedIn, v.CSRF = true, csrfPlaceholder
		}
		var buf bytes.Buffer
		if err := pageTemplates.ExecuteTemplate(&buf, "fragment.html", v); err != nil {
			s.dash.mu.Unlock()
			return nil, err
		}
		out = buf.Bytes()
		s.dash.rendered[variant] = out
	}
	s.dash.mu.Unlock()
	if variant == 1 {
		// Only the attribute is replaced, quotes included: escaped data
		// (a worker named "@@CSRF@@") can never contain a bare quote.
		out = bytes.ReplaceAll(out, []byte(`name="csrf" value="`+csrfPlaceholder+`"`),
			[]byte(`name="csrf" value="`+template.HTMLEscapeString(cl.CSRF)+`"`))
	}
	return out, nil
}

// overviewView turns a snapshot into what the overview shows.
func (s *Server) overviewView(d dashboardData) *dashboardView {
	now := d.at.UnixMilli()
	counts := d.counts
	v := &dashboardView{GeneratedAt: now, Pending: counts.Pending, Active: counts.Active(),
		Completed: counts.Completed, Failed: counts.Failed, BuildLimit: dashboardBuildLimit,
		TotalBuilds:    counts.Pending + counts.Active() + counts.Completed + counts.Failed,
		FailedLastHour: d.facts.Failed, FinishedLastHour: d.facts.Completed + d.facts.Failed}
	v.QueueMore = max(0, counts.Pending-len(d.pending))
	names := make(map[string]string, len(d.workers))
	for _, w := range d.workers {
		names[w.ID] = w.Name
	}
	for _, b := range d.pending {
		v.Queue = append(v.Queue, s.toDashBuild(b, names, now))
	}
	for _, b := range d.running {
		v.Running = append(v.Running, s.toDashBuild(b, names, now))
	}
	for _, b := range d.recent {
		v.Builds = append(v.Builds, s.toDashBuild(b, names, now))
	}
	v.Workers, v.OnlineWorkers = s.dashWorkers(d, v.Running)
	v.Trouble = s.trouble(d, v)
	return v
}

// online reports whether a worker counts as online at now.
func online(w domain.Worker, now time.Time) bool {
	return w.Status != domain.WorkerOffline && w.LastSeenAt >= now.Add(-onlineWindow).UnixMilli()
}

// dashWorkers are the worker rows and how many workers are online.
func (s *Server) dashWorkers(d dashboardData, running []dashBuild) ([]dashWorker, int) {
	current := map[string]*dashBuild{}
	for i, b := range d.running {
		if b.WorkerID != nil {
			current[*b.WorkerID] = &running[i]
		}
	}
	var (
		rows []dashWorker
		n    int
	)
	for _, w := range d.workers {
		dw := dashWorker{ID: w.ID, Name: w.Name, Status: string(w.Status), LastSeenAt: w.LastSeenAt,
			Platforms: platformsText(w.Capabilities), Completed: w.BuildsCompleted, Failed: w.BuildsFailed,
			CurrentBuild: current[w.ID], Online: online(w, d.at), Generation: "key"}
		if d.facts.TokenWorkers[w.ID] {
			dw.Generation = "token"
		}
		if dw.Online {
			n++
		}
		rows = append(rows, dw)
	}
	return rows, n
}

func (s *Server) toDashBuild(b domain.Build, names map[string]string, now int64) dashBuild {
	d := dashBuild{ID: b.ID, ShortID: short(b.ID), Platform: string(b.Platform), Status: string(b.Status),
		SubmittedAt: b.SubmittedAt, Attempts: b.Attempts, Cancelled: b.Cancelled, Running: b.Running(),
		Finished: b.Finished(), AppName: b.AppName, AppVersion: b.AppVersion, Label: b.Label,
		ResultExt: b.Platform.ResultExt(), Progress: -1,
		HasResult: b.Status == domain.StatusCompleted && b.ResultPath != nil && b.PurgedAt == nil,
		Retriable: b.Finished() && b.PurgedAt == nil}
	if b.PurgedAt != nil {
		d.FilesPurgedAt = *b.PurgedAt
	}
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
		d.StartedAt = *b.StartedAt
		end := now
		if b.CompletedAt != nil {
			end = *b.CompletedAt
		}
		d.Duration = fmtDuration(end - *b.StartedAt)
	}
	if b.CompletedAt != nil {
		d.CompletedAt = *b.CompletedAt
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
	if b.OriginalBuildID != nil {
		d.OriginalBuildID, d.OriginalShort = *b.OriginalBuildID, short(*b.OriginalBuildID)
	}
	if b.Running() {
		if b.Progress != nil {
			d.Progress = int(min(100, max(0, *b.Progress)))
		}
		heard := b.SubmittedAt
		if b.StartedAt != nil {
			heard = *b.StartedAt
		}
		if b.LastActivityAt != nil {
			heard = max(heard, *b.LastActivityAt)
		}
		d.LastHeardAt, d.Heard, d.Stage = heard, fmtDuration(now-heard), b.Stage
		left := s.cfg.BuildTimeout.Milliseconds() - (now - heard)
		d.NearTimeout = float64(now-heard) >= nearTimeout*float64(s.cfg.BuildTimeout.Milliseconds())
		d.TimeoutIn = fmtDuration(left)
	}
	return d
}

func (s *Server) render(c echo.Context, name string, data any) error {
	return s.renderStatus(c, http.StatusOK, name, data)
}

// renderStatus answers with a page; pages are never cached.
func (s *Server) renderStatus(c echo.Context, status int, name string, data any) error {
	var buf bytes.Buffer
	if err := pageTemplates.ExecuteTemplate(&buf, name, data); err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.Blob(status, "text/html; charset=utf-8", buf.Bytes())
}

// Viewer is what every dashboard page's header shows of the viewer.
type Viewer struct {
	SignedIn bool   // a session: actions and sign-out are shown
	CSRF     string // the session's form token
	Public   bool   // --dashboard-public
}

func (s *Server) viewerOf(c echo.Context) Viewer {
	cl := callerOf(c)
	return Viewer{SignedIn: cl.Kind == Session, CSRF: cl.CSRF, Public: s.cfg.DashboardPublic}
}

type overviewPage struct {
	Viewer
	GeneratedAt int64
	Fragment    template.HTML
}

// dashboardPage is GET /: the whole page, which works without JavaScript
// (a <noscript> refresh) and with it swaps in /dashboard/fragment every few
// seconds.
func (s *Server) dashboardPage(c echo.Context) error {
	frag, err := s.overviewFragment(c)
	if err != nil {
		return err
	}
	return s.render(c, "index.html", overviewPage{Viewer: s.viewerOf(c), GeneratedAt: s.cfg.Clock.Now().UnixMilli(),
		Fragment: template.HTML(frag)}) //nolint:gosec // rendered by html/template
}

// dashboardFragment is the live part of the page, for the page's script.
func (s *Server) dashboardFragment(c echo.Context) error {
	frag, err := s.overviewFragment(c)
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.Blob(http.StatusOK, "text/html; charset=utf-8", frag)
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

// DashboardReads is how many overview snapshots the server has read (for
// the test that many viewers cost one read per change).
func (s *Server) DashboardReads() int {
	s.dash.mu.Lock()
	defer s.dash.mu.Unlock()
	return s.dash.reads
}
