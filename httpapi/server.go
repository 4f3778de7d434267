// Package httpapi is the controller's thin HTTP layer: Echo routes that
// validate input, make one call into an actor or the store, and encode the
// answer. It speaks the wire contract of docs/API.md exactly.
package httpapi

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/thejerf/suture/v4"

	"github.com/expo-free-agent/controller/actors"
	"github.com/expo-free-agent/controller/store"
)

// Queue is what the HTTP layer asks of the queue manager.
type Queue interface {
	Submit(ctx context.Context, nb store.NewBuild) error
	Poll(ctx context.Context, workerID string) (*actors.Job, error)
	Seen(ctx context.Context, workerID string) error
	Register(ctx context.Context, reg store.Registration) (store.Worker, bool, error)
	Cancel(ctx context.Context, buildID string) (store.Build, error)
	Finish(ctx context.Context, req actors.FinishRequest) (actors.FinishOutcome, error)
	Unregister(ctx context.Context, workerID string) (int, error)
	SaveSeen(ctx context.Context) error
	QueueMetrics
}

// Store is what the HTTP layer reads and writes directly (worker-scoped writes
// are conditional on the assignee inside the store's transaction).
type Store interface {
	GetBuild(ctx context.Context, id string) (store.Build, error)
	ListBuilds(ctx context.Context) ([]store.Build, error)
	RecentBuilds(ctx context.Context, limit int) ([]store.Build, error)
	RunningBuilds(ctx context.Context) ([]store.Build, error)
	PendingBuilds(ctx context.Context) ([]store.Build, error)
	BuildCounts(ctx context.Context) (store.Counts, error)
	Stats(ctx context.Context, onlineSince, dayStart int64) (store.Stats, error)
	LogPage(ctx context.Context, buildID string, after int64, limit int) ([]store.LogEntry, error)
	AppendLogs(ctx context.Context, buildID, workerID string, lines []store.LogInput, now int64) (int, error)
	TouchBuild(ctx context.Context, buildID, workerID string, now int64) error
	Heartbeat(ctx context.Context, buildID, workerID string, progress *float64, now int64) error
	RecordTelemetry(ctx context.Context, buildID, workerID string, now int64, line *store.LogInput, snap *store.CPUSnapshot) error
	GetWorker(ctx context.Context, id string) (store.Worker, error)
	ListWorkers(ctx context.Context) ([]store.Worker, error)
	AddDiagnostic(ctx context.Context, d store.Diagnostic) error
	Diagnostics(ctx context.Context, workerID string, limit int) ([]store.Diagnostic, error)
}

// Files is what the HTTP layer asks of the file storage service.
type Files interface {
	Stage(kind actors.Kind, r io.Reader, limit int64, progress func(int64)) (*actors.Staged, error)
	Open(rel string) (actors.File, int64, error)
	Copy(srcRel string, kind actors.Kind, id, ext string) (string, error)
	Delete(rel string) error
	ReadAll(rel string, limit int64) ([]byte, error)
	CheckWritable() error
}

// Config holds the HTTP layer's settings.
type Config struct {
	Addr            string // host:port; port 0 picks a free one
	APIKey          string
	BaseImageID     string
	MaxSourceSize   int64
	MaxCertsSize    int64
	MaxResultSize   int64
	CertsUnzipLimit int64
	DrainTimeout    time.Duration // graceful shutdown (default 30 s)
	HeaderTimeout   time.Duration // reading request headers (default 10 s)
	MetricsPublic   bool          // serve /metrics without the API key
	Clock           actors.Clock
}

// Defaults of the protocol (§6.2, §7).
const (
	DefaultMaxSourceSize = 500 << 20
	DefaultMaxCertsSize  = 50 << 20
	DefaultMaxResultSize = 1 << 30
	DefaultBaseImageID   = "ghcr.io/sethwebster/expo-free-agent-base:0.1.23"
	maxJSONBody          = 1 << 20
	maxTextPart          = 64 << 10
	headerTimeout        = 10 * time.Second
	idleTimeout          = 120 * time.Second
	statsCacheTTL        = 10 * time.Second
	onlineWindow         = 120 * time.Second
	healthTimeout        = 2 * time.Second
	livenessDuringUpload = 10 * time.Second
)

// Server is the HTTP server as a suture service.
type Server struct {
	cfg    Config
	queue  Queue
	store  Store
	files  Files
	log    *slog.Logger
	e      *echo.Echo
	keySum [sha256.Size]byte

	stats   statsCache
	metrics *metrics

	mu      sync.Mutex
	srv     *http.Server
	addr    net.Addr
	ready   chan struct{} // closed once listening the first time
	started chan error    // the first listen result
	once    sync.Once
	drained bool
}

// New builds the server and its routes; it does not listen.
func New(cfg Config, q Queue, st Store, files Files, log *slog.Logger) *Server {
	if cfg.MaxSourceSize <= 0 {
		cfg.MaxSourceSize = DefaultMaxSourceSize
	}
	if cfg.MaxCertsSize <= 0 {
		cfg.MaxCertsSize = DefaultMaxCertsSize
	}
	if cfg.MaxResultSize <= 0 {
		cfg.MaxResultSize = DefaultMaxResultSize
	}
	if cfg.CertsUnzipLimit <= 0 {
		cfg.CertsUnzipLimit = actors.DefaultCertsUnzipLimit
	}
	if cfg.BaseImageID == "" {
		cfg.BaseImageID = DefaultBaseImageID
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	if cfg.HeaderTimeout <= 0 {
		cfg.HeaderTimeout = headerTimeout
	}
	if cfg.Clock == nil {
		cfg.Clock = actors.SystemClock{}
	}
	s := &Server{cfg: cfg, queue: q, store: st, files: files, log: log,
		keySum: sha256.Sum256([]byte(cfg.APIKey)), ready: make(chan struct{}), started: make(chan error, 1)}
	s.metrics = newMetrics(st, q)
	s.e = s.routes()
	return s
}

// Handler returns the HTTP handler (for tests and benchmarks that bring their
// own server).
func (s *Server) Handler() http.Handler { return s.e }

// String names the service in supervisor logs.
func (s *Server) String() string { return "http-server" }

// Ready is closed once the server listens; Addr is then set.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Started delivers the result of the first attempt to listen: nil, or the
// bind error (so that the command can exit with a clear message).
func (s *Server) Started() <-chan error { return s.started }

// Addr is the address the server listens on, or nil before Ready.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Serve listens and serves until ctx ends, then shuts down gracefully within
// the drain timeout. A bind error is returned as the service's failure.
func (s *Server) Serve(ctx context.Context) error {
	s.mu.Lock()
	if s.drained {
		s.mu.Unlock()
		<-ctx.Done()
		return suture.ErrDoNotRestart
	}
	addr := s.cfg.Addr
	if s.addr != nil {
		addr = s.addr.String() // a restart keeps the port it had
	}
	s.mu.Unlock()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		s.once.Do(func() { s.started <- err })
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	srv := &http.Server{
		Handler:           s.e,
		ReadHeaderTimeout: s.cfg.HeaderTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.mu.Lock()
	s.srv, s.addr = srv, ln.Addr()
	s.mu.Unlock()
	// Addr is set before anyone is told the server listens.
	s.once.Do(func() { s.started <- nil })
	select {
	case <-s.ready:
	default:
		close(s.ready)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) { // Drain was called
			return suture.ErrDoNotRestart
		}
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			s.log.Warn("graceful shutdown incomplete; closing connections", "err", err)
			srv.Close()
		}
		<-errc
		return ctx.Err()
	}
}

// Drain stops accepting connections and waits, within ctx, for in-flight
// requests to finish. The server does not start again.
func (s *Server) Drain(ctx context.Context) error {
	s.mu.Lock()
	s.drained = true
	srv := s.srv
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	if err := srv.Shutdown(ctx); err != nil {
		srv.Close()
		return err
	}
	return nil
}

func (s *Server) now() int64 { return s.cfg.Clock.Now().UnixMilli() }

// route registers a handler with the auth class middleware and the fixed
// message of its 500 answer.
func (s *Server) route(e *echo.Echo, method, path string, h echo.HandlerFunc, failMessage string, mw ...echo.MiddlewareFunc) {
	withMsg := func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			c.Set(ctxFailMsg, failMessage)
			return next(c)
		}
	}
	all := append([]echo.MiddlewareFunc{withMsg, s.recoverPanics}, mw...)
	e.Add(method, path, h, all...)
}

func (s *Server) routes() *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort, e.Debug = true, true, false
	e.HTTPErrorHandler = s.errorHandler
	e.Use(s.logRequests, refuseOptions)
	key := s.requireKey

	// Developers (§2).
	for _, p := range []string{"/api/builds/submit", "/api/builds"} {
		s.route(e, http.MethodPost, p, s.submit, "Build submission failed", key)
	}
	s.route(e, http.MethodGet, "/api/builds", s.listBuilds, msgInternal, key)
	s.route(e, http.MethodGet, "/api/builds/active", s.activeBuilds, msgInternal, key)
	for _, p := range []string{"/api/builds/:id/status", "/api/builds/:id"} {
		s.route(e, http.MethodGet, p, s.buildStatus, msgInternal, s.requireKeyOrToken)
	}
	s.route(e, http.MethodGet, "/api/builds/:id/logs", s.getLogs, msgInternal, s.requireKeyOrToken)
	// A download's 500 is the result's message, or the source's for
	// /download/source (set before the auth check, which already reads the build).
	s.route(e, http.MethodGet, "/api/builds/:id/download", s.download, "Failed to read build result", s.requireKeyOrToken)
	s.route(e, http.MethodGet, "/api/builds/:id/download/:type", s.download, "Failed to read build result", sourceFailMsg, s.requireKeyOrToken)
	s.route(e, http.MethodPost, "/api/builds/:id/cancel", s.cancel, "Cancel failed", s.requireKeyOrToken)
	s.route(e, http.MethodPost, "/api/builds/:id/retry", s.retry, "Retry failed", s.requireKeyOrToken)

	// Workers (§4).
	s.route(e, http.MethodPost, "/api/workers/register", s.register, "Worker registration failed", key)
	s.route(e, http.MethodGet, "/api/workers/poll", s.poll, "Poll failed", key)
	s.route(e, http.MethodGet, "/api/builds/:id/source", s.workerSource, "Failed to read source file", key)
	s.route(e, http.MethodGet, "/api/builds/:id/certs", s.workerCerts, "Failed to read certs file", key)
	s.route(e, http.MethodGet, "/api/builds/:id/certs-secure", s.certsSecure, "Failed to process certs file", key)
	s.route(e, http.MethodPost, "/api/builds/:id/logs", s.postLogs, "Failed to add log", key)
	s.route(e, http.MethodPost, "/api/builds/:id/heartbeat", s.heartbeat, "Heartbeat failed", key)
	s.route(e, http.MethodPost, "/api/builds/:id/telemetry", s.telemetry, "Telemetry failed")
	for _, p := range []string{"/api/workers/upload", "/api/workers/result"} {
		s.route(e, http.MethodPost, p, s.upload, "Upload failed", key)
	}
	s.route(e, http.MethodPost, "/api/workers/:id/unregister", s.unregister, "Unregister failed", key)
	s.route(e, http.MethodPost, "/api/workers/unregister", s.unregister, "Unregister failed", key)
	s.route(e, http.MethodGet, "/api/workers/:id/stats", s.workerStats, "Failed to fetch stats", key)
	s.route(e, http.MethodPost, "/api/diagnostics/report", s.addDiagnostic, "Failed to save diagnostic report", key)
	s.route(e, http.MethodGet, "/api/diagnostics/:worker_id", s.listDiagnostics, "Failed to fetch diagnostic reports", key)
	s.route(e, http.MethodGet, "/api/diagnostics/:worker_id/latest", s.latestDiagnostic, "Failed to fetch diagnostic reports", key)

	// Public (§3).
	for _, p := range []string{"/health", "/api/health"} {
		s.route(e, http.MethodGet, p, s.health, msgInternal, cors)
	}
	for _, p := range []string{"/api/stats", "/api/stats/", "/public/stats"} {
		s.route(e, http.MethodGet, p, s.publicStats, msgInternal, cors)
	}
	s.dashboardRoutes(e)
	s.metricsRoute(e)
	return e
}

// sourceFailMsg makes /download/source fail with the source's message.
func sourceFailMsg(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if c.Param("type") == "source" {
			c.Set(ctxFailMsg, "Failed to read source file")
		}
		return next(c)
	}
}

// refuseOptions answers OPTIONS on a known path like any other wrong method
// (Echo would answer 204): 405 Method not allowed with the Allow header.
func refuseOptions(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if c.Request().Method == http.MethodOptions {
			if _, known := c.Get(echo.ContextKeyHeaderAllow).(string); known {
				return echo.ErrMethodNotAllowed
			}
		}
		return next(c)
	}
}

// cors lets the project's landing page read the public endpoints.
func cors(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		c.Response().Header().Set(echo.HeaderAccessControlAllowOrigin, "*")
		return next(c)
	}
}
