package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/thejerf/suture/v4"

	"github.com/expo-free-agent/controller/actors/clock"
	"github.com/expo-free-agent/controller/actors/files"
	"github.com/expo-free-agent/controller/actors/liveness"
	"github.com/expo-free-agent/controller/actors/queue"
	"github.com/expo-free-agent/controller/actors/retention"
	"github.com/expo-free-agent/controller/actors/webhooks"
	"github.com/expo-free-agent/controller/httpapi"
	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/supervisor"
)

// Store is everything the services ask of the database; *store.Store is it.
type Store interface {
	queue.Store
	liveness.Store
	httpapi.Store
}

// App is a constructed controller: its store, services and supervision tree.
type App struct {
	Config  Config
	Log     *slog.Logger
	Store   *store.Store
	Files   *files.Store
	Queue   *queue.Manager
	Monitor *liveness.Monitor
	HTTP    *httpapi.Server
	// Webhooks is the webhook sender; nil when no webhook URL is configured.
	Webhooks *webhooks.Sender
	// Retention is the retention collector; nil when everything is kept.
	Retention *retention.Collector
	Tree      *suture.Supervisor
}

// NewLogger returns the server logger for the configured format and level.
func NewLogger(cfg Config, w io.Writer) *slog.Logger {
	level := map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo,
		"warn": slog.LevelWarn, "error": slog.LevelError}[cfg.LogLevel]
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// New opens the database (applying migrations) and the storage root and
// constructs every service. It starts nothing; Run does. The API key must
// already be resolved.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*App, error) {
	if cfg.Clock == nil {
		cfg.Clock = clock.System{}
	}
	if err := cfg.checkWebhooks(); err != nil {
		return nil, configError{err.Error()}
	}
	// The port first: a second controller started on the same port (and,
	// likely, the same database) stops here, before its start-up recovery
	// touches the first one's builds.
	addr := net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port))
	ln, err := listen(addr)
	if err != nil {
		return nil, err
	}
	st, err := store.Open(ctx, cfg.DBPath)
	if err != nil {
		ln.Close()
		return nil, err // a sentence that names the file
	}
	// The storage root next (a database that is not ours was refused before
	// anything was created): a mistake there stops the start before the
	// recovery changes any build.
	if err := prepareStorage(cfg.StoragePath); err != nil {
		ln.Close()
		st.Close()
		return nil, err
	}
	// The webhook receivers are data that every event's transaction reads
	// (docs/API.md §3.5): set before the recovery, whose requeues are events.
	dropped, err := st.SetWebhookURLs(ctx, cfg.WebhookURLs)
	if err != nil {
		ln.Close()
		st.Close()
		return nil, fmt.Errorf("configure webhooks: %w", err)
	}
	if dropped > 0 {
		log.Warn("undelivered webhooks dropped: their URL is no longer configured", "count", dropped)
	}
	// Recovery after a (re)start, before anything can read or write: builds of
	// vanished workers go back to pending and downtime never counts against
	// a running build's liveness.
	requeued, err := st.Recover(ctx, cfg.Clock.Now().UnixMilli())
	if err != nil {
		ln.Close()
		st.Close()
		return nil, fmt.Errorf("recover database: %w", err)
	}
	for _, id := range requeued {
		log.Warn("build requeued: worker gone at restart", "build_id", id)
	}
	fs, err := files.New(cfg.StoragePath, cfg.Files, log.With("service", "file-storage"))
	if err != nil {
		ln.Close()
		st.Close()
		return nil, fmt.Errorf("cannot open the storage directory %s: %w", cfg.StoragePath, err)
	}
	fs.WithCatalog(st) // at start, files no build refers to are removed (a kill -9 between file and row)
	var db Store = st
	if cfg.WrapStore != nil {
		db = cfg.WrapStore(st)
	}
	var hooks *webhooks.Sender // nil: webhooks off
	if len(cfg.WebhookURLs) > 0 {
		hooks = webhooks.New(st, cfg.Clock, log.With("service", "webhook-sender"), webhooks.Config{Secret: cfg.WebhookSecret})
		db = kickingStore{Store: db, kick: hooks.Kick}
	}
	builds := httpapi.NewBuildObserver() // build timings, served on /metrics
	q := queue.New(db, fs, cfg.Clock, log.With("service", "queue-manager"),
		queue.Config{MaxAttempts: cfg.MaxAttempts, MaxWaiters: cfg.MaxWaiters, Observer: builds,
			OTPTTL: cfg.OTPTTL, Shared: st.Shared()})
	mon := liveness.New(db, q, cfg.Clock, log.With("service", "liveness-monitor"),
		liveness.Config{BuildTimeout: cfg.BuildTimeout, WorkerTimeout: cfg.WorkerTimeout, Interval: cfg.MonitorInterval})
	srv := httpapi.New(httpapi.Config{
		Addr:            addr,
		Listener:        ln,
		APIKey:          cfg.APIKey,
		WorkerKey:       cfg.WorkerKey,
		BaseImageID:     cfg.BaseImageID,
		BaseImageV2:     cfg.BaseImageV2,
		WorkerTokenTTL:  cfg.WorkerTokenTTL,
		OTPTTL:          cfg.OTPTTL,
		VMTokenTTL:      cfg.VMTokenTTL,
		MaxSourceSize:   cfg.MaxSourceSize,
		MaxCertsSize:    cfg.MaxCertsSize,
		MaxResultSize:   cfg.MaxResultSize,
		MaxStreams:      cfg.MaxStreams,
		Builds:          builds,
		DrainTimeout:    cfg.DrainTimeout,
		HeaderTimeout:   cfg.HeaderTimeout,
		BodyReadTimeout: cfg.BodyReadTimeout,
		MetricsPublic:   cfg.MetricsPublic,
		DashboardPublic: cfg.DashboardPublic,
		BuildTimeout:    cfg.BuildTimeout,
		WorkerTimeout:   cfg.WorkerTimeout,
		Disk: httpapi.DiskConfig{MinFree: cfg.MinFreeDisk, DatabaseDir: databaseDir(cfg.DBPath), StorageDir: fs.Root(),
			FreeBytes: cfg.FreeBytes},
		Clock: cfg.Clock,
	}, q, db, fs, log.With("service", "http"))
	services := supervisor.Services{Queue: q, Monitor: mon, Files: fs, HTTP: srv}
	// Other nodes' changes (PostgreSQL): the queue reloads, and the webhook
	// sender looks at the outbox (their events, which this node's sender
	// also delivers if theirs cannot: at least once).
	changed := q.Changed
	if hooks != nil {
		changed = func(c []store.BuildChange, all bool) { q.Changed(c, all); hooks.Kick() }
	}
	if l := st.Listener(changed); l != nil { // never a nil *Listener in an interface
		services.Notifications = l
	}
	if hooks != nil { // never a nil *Sender in an interface
		services.Webhooks = hooks
		srv.ReportWebhooks(hooks)
	}
	var gc *retention.Collector // nil: everything is kept
	if cfg.Retention > 0 {
		gc = retention.New(st, fs, cfg.Clock, log.With("service", "retention-collector"),
			retention.Config{Retention: cfg.Retention})
		services.Retention = gc
		srv.ReportRetention(gc)
	}
	tree := supervisor.New(log, services, supervisor.Options{FailureBackoff: cfg.FailureBackoff})
	return &App{Config: cfg, Log: log, Store: st, Files: fs, Queue: q, Monitor: mon, HTTP: srv, Webhooks: hooks,
		Retention: gc, Tree: tree}, nil
}

// databaseDir is the directory whose volume holds the database (the disk
// guard watches it), "" for PostgreSQL: its server watches its own disk.
func databaseDir(db string) string {
	if store.IsPostgresURL(db) {
		return ""
	}
	return filepath.Dir(db)
}

// listen binds the API port. Its errors say what to do; a port that is
// not allowed (below 1024 without the privilege) is a configuration error,
// while a port in use or an address not (yet) on this machine may mend
// with a restart (docs/TROUBLESHOOTING.md).
func listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	switch {
	case err == nil:
		return ln, nil
	case errors.Is(err, syscall.EADDRINUSE):
		return nil, fmt.Errorf("cannot listen on %s: address already in use (another controller running? choose another --port)", addr)
	case errors.Is(err, syscall.EACCES):
		return nil, configError{fmt.Sprintf("cannot listen on %s: permission denied (ports below 1024 need privileges: "+
			"choose --port 1024 or above, behind a proxy)", addr)}
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return nil, fmt.Errorf("cannot listen on %s: address not available (--host must be an address of this machine, or 0.0.0.0)", addr)
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err // without "listen tcp <addr>:"
	}
	var se *os.SyscallError
	if errors.As(err, &se) {
		err = se.Err
	}
	return nil, fmt.Errorf("cannot listen on %s: %v (check --host and --port)", addr, err)
}

// Run serves until ctx ends, then shuts down in order: the HTTP server stops
// accepting and drains in-flight requests (30 s at most), the actors stop
// (the queue manager saves last-seen times), and the database is closed. A
// failure to listen is returned at once.
func (a *App) Run(ctx context.Context) error {
	treeCtx, stopTree := context.WithCancel(context.WithoutCancel(ctx))
	defer stopTree()
	done := a.Tree.ServeBackground(treeCtx)
	var runErr error
	select {
	case err := <-a.HTTP.Started():
		if err != nil {
			runErr = fmt.Errorf("cannot listen: %w", err)
		} else {
			a.Log.Info("listening", "addr", a.HTTP.Addr().String(), "max_connections", a.HTTP.MaxConns())
		}
	case err := <-done:
		runErr = fmt.Errorf("supervision tree stopped: %w", err)
		done = nil
	case <-ctx.Done():
	}
	if runErr == nil && done != nil {
		select {
		case <-ctx.Done():
		case err := <-done:
			runErr = fmt.Errorf("supervision tree stopped: %w", err)
			done = nil
		}
	}
	drain := a.Config.DrainTimeout
	if drain <= 0 {
		drain = httpapi.DefaultDrainTimeout
	}
	dctx, cancel := context.WithTimeout(context.Background(), drain)
	if err := a.HTTP.Drain(dctx); err != nil {
		a.Log.Warn("drain incomplete", "err", err)
	}
	cancel()
	stopTree()
	if done != nil {
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			a.Log.Warn("supervision tree stopped with an error", "err", err)
		}
	}
	if err := a.Store.Close(); err != nil {
		a.Log.Warn("closing the database", "err", err)
	}
	return runErr
}

// prepareStorage creates the storage root and checks, by creating and
// removing a file there, that the controller may write in it. A failure is
// a configuration mistake (exit 2) named in one sentence.
func prepareStorage(root string) error {
	if err := os.MkdirAll(root, 0o750); err != nil {
		return configError{fmt.Sprintf("cannot create the storage directory %s: %s "+
			"(create it writable for the controller's user, or choose another --storage)", root, pathReason(err))}
	}
	probe, err := os.CreateTemp(root, ".controller-write-check-*")
	if err != nil {
		return configError{fmt.Sprintf("cannot write in the storage directory %s: %s "+
			"(make it writable for the controller's user, or choose another --storage)", root, pathReason(err))}
	}
	probe.Close()
	return os.Remove(probe.Name())
}

// pathReason is the reason of a file-system error without the path it
// repeats.
func pathReason(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}
