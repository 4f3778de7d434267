// Package httpapi is the controller's thin HTTP layer: Echo routes that
// resolve the caller, validate input, make one call into an actor or the
// store, and encode the answer. It speaks the wire contract of docs/API.md
// exactly.
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
	"github.com/prometheus/client_golang/prometheus"
	"github.com/thejerf/suture/v4"

	"github.com/expo-free-agent/controller/actors/clock"
	"github.com/expo-free-agent/controller/actors/files"
	"github.com/expo-free-agent/controller/actors/queue"
	"github.com/expo-free-agent/controller/httpapi/certs"
	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

// Queue is what the HTTP layer asks of the queue manager.
type Queue interface {
	Submit(ctx context.Context, sub queue.Submission) (queue.Submitted, error)
	RetryWith(ctx context.Context, originalID string, opts queue.RetryOptions) (queue.Submitted, error)
	PollWait(ctx context.Context, workerID string, wait time.Duration) (*queue.Job, error)
	Release()
	Abandon(ctx context.Context, buildID, workerID, reason string) (domain.TimeoutOutcome, error)
	Seen(ctx context.Context, workerID string) error
	Register(ctx context.Context, reg store.Registration) (domain.Worker, bool, error)
	Cancel(ctx context.Context, buildID string) (domain.Build, error)
	Finish(ctx context.Context, req queue.FinishRequest) (queue.FinishOutcome, error)
	Unregister(ctx context.Context, workerID string) (int, error)
	SaveSeen(ctx context.Context) error
	QueueMetrics
}

// Store is what the HTTP layer reads and writes directly (worker-scoped writes
// are conditional on the assignee inside the store's transaction).
type Store interface {
	CheckFiles() error
	ProbeWrite(ctx context.Context) error
	GetBuild(ctx context.Context, id string) (domain.Build, error)
	BuildPage(ctx context.Context, q store.BuildQuery) ([]domain.Build, bool, error)
	RecentBuilds(ctx context.Context, limit int) ([]domain.Build, error)
	RunningBuilds(ctx context.Context) ([]domain.Build, error)
	FirstPending(ctx context.Context, limit int) ([]domain.Build, error)
	Version() uint64
	BuildCounts(ctx context.Context) (store.Counts, error)
	DashboardFacts(ctx context.Context, since int64) (store.Facts, error)
	Stats(ctx context.Context, onlineSince, dayStart int64) (store.Stats, error)
	LogPage(ctx context.Context, buildID string, after int64, limit int) ([]domain.LogEntry, bool, error)
	Subscribe(buildID string) *store.Subscription
	AppendLogs(ctx context.Context, buildID, workerID string, lines []store.LogInput, now int64) (int, error)
	TouchBuild(ctx context.Context, buildID, workerID string, now int64) error
	Heartbeat(ctx context.Context, buildID, workerID string, progress *float64, now int64) error
	RecordTelemetry(ctx context.Context, buildID, workerID string, now int64, line *store.LogInput, snap *domain.CPUSnapshot) error
	GetWorker(ctx context.Context, id string) (domain.Worker, error)
	ListWorkers(ctx context.Context) ([]domain.Worker, error)
	AddDiagnostic(ctx context.Context, d domain.Diagnostic) error
	Diagnostics(ctx context.Context, workerID string, limit int) ([]domain.Diagnostic, error)
	// The newer worker generation's tokens.
	WorkerByToken(ctx context.Context, digest []byte, now int64) (string, int64, error)
	RotateWorkerToken(ctx context.Context, workerID string, old []byte, next store.TokenGrant, now, graceUntil int64) error
	IssueOTP(ctx context.Context, buildID, workerID string, otp store.TokenGrant) error
	RedeemOTP(ctx context.Context, buildID string, otp []byte, vm store.TokenGrant, now int64) error
	BuildByAssignmentToken(ctx context.Context, buildID, presented string, now int64) (domain.Build, store.AssignmentTokenKind, error)
	MarkVMReady(ctx context.Context, buildID string, assignment int, hostToken string, now int64) (int64, error)
	VMStatus(ctx context.Context, buildID string) (bool, int64, string, error)
}

// Files is what the HTTP layer asks of the file storage service.
type Files interface {
	Stage(kind files.Kind, r io.Reader, limit int64, progress func(int64)) (*files.Staged, error)
	Open(rel string) (files.File, int64, error)
	CheckWritable() error
}

// The HTTP layer's defaults: the limits of §6.2, the base image of §4.1, and
// the timings of §5.4.
const (
	DefaultMaxSourceSize = 500 << 20
	DefaultMaxCertsSize  = 50 << 20
	DefaultMaxResultSize = 1 << 30
	DefaultBaseImageID   = "ghcr.io/sethwebster/expo-free-agent-base:0.1.23"
	// DefaultBaseImageV2 is the image of jobs handed to token polls: the
	// newer VM scripts, which speak the one-time-password flow (§4.15).
	DefaultBaseImageV2 = "ghcr.io/sethwebster/expo-free-agent-base:0.1.31"
	// Token lifetimes (§4.12, §4.13).
	DefaultWorkerTokenTTL  = time.Hour
	DefaultOTPTTL          = 10 * time.Minute
	DefaultVMTokenTTL      = 6 * time.Hour
	DefaultDrainTimeout    = 30 * time.Second // graceful shutdown
	DefaultHeaderTimeout   = 10 * time.Second // reading request headers
	DefaultBodyReadTimeout = 30 * time.Second // a request body that sends nothing for this long is cut off
	descriptorReserve      = 256              // descriptors kept free of connections (database, files, logs)
	minConnections         = 64

	maxJSONBody   = 1 << 20
	maxTextPart   = 64 << 10
	maxPartHeader = 8 << 10 // the headers of one multipart part

	tokenRotationGrace   = 5 * time.Minute  // a rotated worker token stays valid this long
	afterCompletionGrace = 10 * time.Minute // the last assignee's heartbeats after a success

	// Keyless telemetry (§4.7): per build, 50 at once, then 5 per second.
	keylessTelemetryInterval = 200 * time.Millisecond
	keylessTelemetryBurst    = 50
	rateLimitKeys            = 10000 // builds or chains a limiter remembers

	// Retries by a build-token holder (§2.8): per retry chain, 3 at once,
	// then one per 10 s.
	retryEvery           = 10 * time.Second
	retryBurst           = 3
	idleTimeout          = 120 * time.Second
	statsCacheTTL        = 10 * time.Second
	onlineWindow         = 120 * time.Second
	healthTimeout        = 2 * time.Second
	healthProbeTTL       = time.Second
	livenessDuringUpload = 10 * time.Second
)

// Config holds the HTTP layer's settings; zero values take the defaults.
type Config struct {
	Addr string // host:port; port 0 picks a free one
	// Listener, if set, is bound already (the command binds before it opens
	// the database, so that a port in use fails the start at once): the
	// first Serve serves it instead of listening on Addr.
	Listener        net.Listener
	APIKey          string
	WorkerKey       string // optional: opens the worker routes only (§4.17)
	BaseImageID     string
	BaseImageV2     string // the image of jobs handed to token polls
	WorkerTokenTTL  time.Duration
	OTPTTL          time.Duration
	VMTokenTTL      time.Duration
	MaxSourceSize   int64
	MaxCertsSize    int64
	MaxResultSize   int64
	CertsUnzipLimit int64
	DrainTimeout    time.Duration
	HeaderTimeout   time.Duration
	BodyReadTimeout time.Duration
	// MaxConns bounds the open connections (default: the descriptor limit
	// less a reserve for the database and files, at least 64).
	MaxConns int
	// MaxStreams bounds the live log streams open at once (§2.9).
	MaxStreams    int
	MetricsPublic bool // serve /metrics without the API key
	// DashboardPublic opens the dashboard's build pages, history and logs
	// to anyone, as they were before sign-in existed; results and actions
	// still need a session.
	DashboardPublic bool
	// BuildTimeout and WorkerTimeout are the liveness monitor's, for the
	// dashboard's warnings (builds near their timeout).
	BuildTimeout, WorkerTimeout time.Duration
	// Disk is the floor of free space and the volumes it watches.
	Disk DiskConfig
	// Builds is the queue manager's observer, served on /metrics (a fresh,
	// empty one if nil).
	Builds *BuildObserver
	Clock  clock.Clock
}

// Server is the HTTP server as a suture service.
type Server struct {
	cfg    Config
	queue  Queue
	store  Store
	files  Files
	log    *slog.Logger
	e      *echo.Echo
	table  []*route
	keySum [sha256.Size]byte
	// workerKeySum is the worker key's digest (unused without a worker key).
	workerKeySum [sha256.Size]byte

	stats   statsCache
	retries *rateLimiter // the pace of build-token retries, per retry chain
	probes  healthProbes
	disk    *diskGuard // free space: the 507 of the routes that store files
	streams streamGate // the live logs open
	// streamConns are the live logs served on connections taken over from
	// the HTTP server, which its shutdown neither ends nor waits for.
	streamConns streamConns
	closing     chan struct{} // closed when the server starts to shut down: live logs end
	closed      sync.Once
	dash        dashboardCache
	// sessions are the signed-in dashboards; signIns paces sign-in
	// attempts per client address.
	sessions *sessions
	signIns  *rateLimiter
	// keylessTelemetry bounds what keyless telemetry may write per build.
	keylessTelemetry *rateLimiter
	metrics          *metrics

	mu      sync.Mutex
	srv     *http.Server
	addr    net.Addr
	ready   chan struct{} // closed once listening the first time
	started chan error    // the first listen result
	once    sync.Once
	drained bool
}

// New builds the server and its routes; it does not listen.
func New(cfg Config, q Queue, st Store, fs Files, log *slog.Logger) *Server {
	orDefault(&cfg.MaxSourceSize, DefaultMaxSourceSize)
	orDefault(&cfg.MaxCertsSize, DefaultMaxCertsSize)
	orDefault(&cfg.MaxResultSize, DefaultMaxResultSize)
	orDefault(&cfg.CertsUnzipLimit, certs.DefaultUnzipLimit)
	orDefault(&cfg.DrainTimeout, DefaultDrainTimeout)
	orDefault(&cfg.HeaderTimeout, DefaultHeaderTimeout)
	orDefault(&cfg.BodyReadTimeout, DefaultBodyReadTimeout)
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = DefaultMaxStreams
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = max(minConnections, descriptorLimit()-descriptorReserve)
	}
	if cfg.BaseImageID == "" {
		cfg.BaseImageID = DefaultBaseImageID
	}
	if cfg.BaseImageV2 == "" {
		cfg.BaseImageV2 = DefaultBaseImageV2
	}
	orDefault(&cfg.WorkerTokenTTL, DefaultWorkerTokenTTL)
	orDefault(&cfg.OTPTTL, DefaultOTPTTL)
	orDefault(&cfg.VMTokenTTL, DefaultVMTokenTTL)
	orDefault(&cfg.BuildTimeout, 300*time.Second)
	orDefault(&cfg.WorkerTimeout, 300*time.Second)
	if cfg.Clock == nil {
		cfg.Clock = clock.System{}
	}
	s := &Server{cfg: cfg, queue: q, store: st, files: fs, log: log,
		keySum: sha256.Sum256([]byte(cfg.APIKey)), workerKeySum: sha256.Sum256([]byte(cfg.WorkerKey)),
		ready: make(chan struct{}), started: make(chan error, 1), closing: make(chan struct{})}
	s.streams.max = int64(cfg.MaxStreams)
	s.retries = newRateLimiter(retryEvery, retryBurst, rateLimitKeys, cfg.Clock.Now)
	s.metrics = newMetrics(st, q)
	s.disk = newDiskGuard(cfg.Disk, cfg.Clock.Now, log)
	s.metrics.reg.MustRegister(s.disk.collectors()...)
	if cfg.Builds == nil {
		cfg.Builds = NewBuildObserver()
	}
	s.metrics.reg.MustRegister(cfg.Builds.queueWait, cfg.Builds.duration)
	s.metrics.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "controller_log_streams_open", Help: "Live log streams (Server-Sent Events) open now.",
	}, func() float64 { return float64(s.streams.open.Load()) }))
	s.sessions = newSessions(cfg.Clock.Now)
	s.signIns = newRateLimiter(signInEvery, signInBurst, rateLimitKeys, cfg.Clock.Now)
	s.keylessTelemetry = newRateLimiter(keylessTelemetryInterval, keylessTelemetryBurst, rateLimitKeys, cfg.Clock.Now)
	s.table = s.routes()
	s.e = s.echo()
	return s
}

func orDefault[T int64 | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// Handler returns the HTTP handler (for tests and benchmarks that bring their
// own server).
func (s *Server) Handler() http.Handler { return s.e }

// String names the service in supervisor logs.
func (s *Server) String() string { return "http-server" }

// MaxConns is how many connections the server holds at once (docs/API.md
// §6.2): the descriptor limit, which Go raises to the hard limit at start,
// less a reserve for the database and files.
func (s *Server) MaxConns() int { return s.cfg.MaxConns }

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
	tcp := s.cfg.Listener
	s.cfg.Listener = nil // served once; a restart listens again
	s.mu.Unlock()
	if tcp == nil {
		var err error
		if tcp, err = net.Listen("tcp", addr); err != nil {
			s.once.Do(func() { s.started <- err })
			return fmt.Errorf("listen on %s: %w", addr, err)
		}
	}
	ln := newLimitListener(tcp, s.cfg.MaxConns)
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
		s.release()
		sctx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			s.log.Warn("graceful shutdown incomplete; closing connections", "err", err)
			srv.Close()
		}
		<-errc
		s.streamConns.wait()
		return ctx.Err()
	}
}

// Drain stops accepting connections and waits, within ctx, for in-flight
// requests to finish. The server does not start again.
func (s *Server) Drain(ctx context.Context) error {
	s.release()
	s.mu.Lock()
	s.drained = true
	srv := s.srv
	if s.cfg.Listener != nil { // bound but never served
		s.cfg.Listener.Close()
		s.cfg.Listener = nil
	}
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	defer s.streamConns.wait()
	if err := srv.Shutdown(ctx); err != nil {
		srv.Close()
		return err
	}
	return nil
}

func (s *Server) now() int64 { return clock.Millis(s.cfg.Clock) }

// release ends what holds requests open — held polls, live logs — so that a
// shutdown does not wait for them.
func (s *Server) release() {
	s.queue.Release()
	s.closed.Do(func() { close(s.closing) })
	s.streamConns.release()
}

// seen tells the queue manager a worker made an accepted request. Failure is
// only logged: the request itself succeeded.
func (s *Server) seen(c echo.Context, workerID string) {
	if err := s.queue.Seen(c.Request().Context(), workerID); err != nil {
		s.log.Warn("recording worker presence", "err", err)
	}
}
