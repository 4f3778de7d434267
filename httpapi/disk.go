package httpapi

import (
	"errors"
	"log/slog"
	"math"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/expo-free-agent/controller/store/volume"
)

// DefaultMinFreeDisk is the free space below which the routes that store
// files refuse (--min-free-disk).
const DefaultMinFreeDisk = 1 << 30

// diskReadTTL is how long one reading of the volumes' free space serves.
const diskReadTTL = time.Second

// DiskConfig says which volumes are watched and how much of each must stay
// free. The database and the storage root may be on different volumes; both
// are read.
type DiskConfig struct {
	// MinFree is the floor in bytes: while either volume has less free,
	// submits, retries and uploads are refused with 507 (0: no floor).
	MinFree     int64
	DatabaseDir string // the database file's directory (its -wal grows there too)
	StorageDir  string // the storage root
	// FreeBytes reads a volume's free bytes (nil: volume.Free); tests
	// inject a nearly full volume through it.
	FreeBytes func(dir string) (int64, error)
}

// diskReading is the free space of the two volumes; -1 where unknown (the
// platform cannot say, or statfs failed: the failure is logged).
type diskReading struct {
	storage, database int64
}

// low reports whether a known reading is under min.
func (r diskReading) low(min int64) bool {
	under := func(n int64) bool { return n >= 0 && n < min }
	return min > 0 && (under(r.storage) || under(r.database))
}

// diskGuard decides whether there is room to accept new files: the one place
// that refuses a submit, retry or upload for want of space, and the source of
// /health's and /metrics' free-space figures. It reads the volumes at most
// once per diskReadTTL (by the injected clock), whatever the rate of
// requests, and logs when the floor is crossed either way.
type diskGuard struct {
	cfg DiskConfig
	now func() time.Time
	log *slog.Logger

	mu      sync.Mutex
	last    diskReading
	expires time.Time
	wasLow  bool
}

func newDiskGuard(cfg DiskConfig, now func() time.Time, log *slog.Logger) *diskGuard {
	if cfg.FreeBytes == nil {
		cfg.FreeBytes = volume.Free
	}
	return &diskGuard{cfg: cfg, now: now, log: log}
}

// read returns a reading no older than diskReadTTL.
func (g *diskGuard) read() diskReading {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	if now.Before(g.expires) {
		return g.last
	}
	g.last = diskReading{storage: g.free("storage", g.cfg.StorageDir), database: g.free("database", g.cfg.DatabaseDir)}
	g.expires = now.Add(diskReadTTL)
	if low := g.last.low(g.cfg.MinFree); low != g.wasLow {
		g.wasLow = low
		args := []any{"storage_free_bytes", g.last.storage, "database_free_bytes", g.last.database, "min_free_bytes", g.cfg.MinFree}
		if low {
			g.log.Warn("free disk space below --min-free-disk: submits, retries and uploads are refused (507)", args...)
		} else {
			g.log.Info("free disk space back above --min-free-disk: submits, retries and uploads accepted", args...)
		}
	}
	return g.last
}

// free is one volume's free bytes, or -1.
func (g *diskGuard) free(name, dir string) int64 {
	if dir == "" {
		return -1
	}
	n, err := g.cfg.FreeBytes(dir)
	if err != nil {
		if !errors.Is(err, volume.ErrUnsupported) {
			g.log.Error("reading free disk space", "volume", name, "err", err)
		}
		return -1
	}
	return n
}

// low reports whether either volume is under the floor now.
func (g *diskGuard) low() bool { return g.read().low(g.cfg.MinFree) }

// needsDisk guards a route that stores files: under the floor it answers
// 507 Insufficient storage before the body is read (and closes the
// connection, the body unread), so a full disk never takes a half-written
// upload and the database keeps the room its writes need.
func (s *Server) needsDisk(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if s.disk.low() {
			return closing(fail(http.StatusInsufficientStorage, msgInsufficientStorage))
		}
		return next(c)
	}
}

// healthJSON adds the free-space figures to /health's answer (§3.1).
func (r diskReading) healthJSON() (storage, database map[string]any) {
	orNull := func(n int64) any {
		if n < 0 {
			return nil
		}
		return n
	}
	return map[string]any{"exists": true, "free_bytes": orNull(r.storage)}, map[string]any{"free_bytes": orNull(r.database)}
}

// collectors are the free-space gauges of /metrics, read from the guard.
func (g *diskGuard) collectors() []prometheus.Collector {
	gauge := func(name string, read func(diskReading) int64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "controller_disk_free_bytes", Help: "Free bytes of the volume holding the database or the storage root (NaN where unknown).",
			ConstLabels: prometheus.Labels{"volume": name},
		}, func() float64 {
			if n := read(g.read()); n >= 0 {
				return float64(n)
			}
			return math.NaN()
		})
	}
	return []prometheus.Collector{
		gauge("storage", func(r diskReading) int64 { return r.storage }),
		gauge("database", func(r diskReading) int64 { return r.database }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "controller_disk_min_free_bytes", Help: "--min-free-disk: below it on either volume, submits, retries and uploads are refused (0: no floor).",
		}, func() float64 { return float64(g.cfg.MinFree) }),
	}
}
