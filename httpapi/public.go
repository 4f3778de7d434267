package httpapi

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/expo-free-agent/controller/internal/version"
	"github.com/labstack/echo/v4"
)

// health is GET /health (§3.1): the real queue from the database; 503
// Database unavailable when the database cannot be written (its file deleted
// or replaced, read-only, on a full volume, failing writes, or not answering
// within 2 s) and 503 Storage not writable when the storage root refuses a
// new file. A 200 says "degraded" instead of "ok" while either volume has
// less free space than --min-free-disk, and names the running build (version
// and revision). The database's write probe (a commit and an fsync) and the
// free-space reading run at most once per second whatever the rate of
// requests; the other checks run on every request.
func (s *Server) health(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), healthTimeout)
	defer cancel()
	if msg := s.healthFailure(ctx); msg != "" {
		return c.JSON(http.StatusServiceUnavailable, map[string]string{"status": "error", "error": msg})
	}
	counts, err := s.store.BuildCounts(ctx)
	if err != nil {
		s.log.Error("health: database unavailable", "err", err)
		return c.JSON(http.StatusServiceUnavailable, map[string]string{"status": "error", "error": msgDatabaseUnavailable})
	}
	active := counts.Active()
	disk := s.disk.read()
	status := "ok"
	if disk.low(s.cfg.Disk.MinFree) {
		status = "degraded" // still serving; submits, retries and uploads get 507
	}
	storage, database := disk.healthJSON()
	build := version.Get()
	return c.JSON(http.StatusOK, map[string]any{
		"status":         status,
		"queue":          map[string]int{"pending": counts.Pending, "active": active, "total": counts.Pending + active},
		"storage":        storage,
		"database":       database,
		"min_free_bytes": s.cfg.Disk.MinFree,
		"version":        build.Version,
		"revision":       build.Revision,
	})
}

// healthFailure returns the 503 message of /health, or "".
func (s *Server) healthFailure(ctx context.Context) string {
	if err := s.store.CheckFiles(); err != nil {
		s.log.Error("health: database unavailable", "err", err)
		return msgDatabaseUnavailable
	}
	if err := s.probes.writeDB(ctx, s.store); err != nil {
		s.log.Error("health: database unavailable", "err", err)
		return msgDatabaseUnavailable
	}
	if err := s.files.CheckWritable(); err != nil {
		s.log.Error("health: storage not writable", "err", err)
		return msgStorageNotWritable
	}
	return ""
}

// healthProbes rate-limits the database write probe of /health.
type healthProbes struct {
	mu      sync.Mutex
	err     error // the last outcome
	expires time.Time
}

// writeDB returns the outcome of a write probe no older than healthProbeTTL.
func (h *healthProbes) writeDB(ctx context.Context, st Store) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if time.Now().Before(h.expires) {
		return h.err
	}
	h.err = st.ProbeWrite(ctx)
	h.expires = time.Now().Add(healthProbeTTL)
	return h.err
}

// statsJSON is the public statistics answer (§3.2).
type statsJSON struct {
	NodesOnline      int     `json:"nodesOnline"`
	BuildsQueued     int     `json:"buildsQueued"`
	ActiveBuilds     int     `json:"activeBuilds"`
	BuildsToday      int     `json:"buildsToday"`
	TotalBuilds      int     `json:"totalBuilds"`
	TotalBuildTimeMS int64   `json:"totalBuildTimeMs"`
	TotalCPUCycles   float64 `json:"totalCpuCycles"`
}

// statsCache holds the last computed statistics for 10 s, for every path.
type statsCache struct {
	mu      sync.Mutex
	value   statsJSON
	expires time.Time
}

// publicStats is GET /api/stats (§3.2), computed from real data only.
func (s *Server) publicStats(c echo.Context) error {
	s.stats.mu.Lock()
	defer s.stats.mu.Unlock()
	now := s.cfg.Clock.Now()
	if now.Before(s.stats.expires) {
		return c.JSON(http.StatusOK, s.stats.value)
	}
	if err := s.queue.SaveSeen(c.Request().Context()); err != nil {
		s.log.Warn("stats: saving last-seen times", "err", err) // figures may lag by one sweep
	}
	day := now.UTC().Truncate(24 * time.Hour)
	st, err := s.store.Stats(c.Request().Context(), now.Add(-onlineWindow).UnixMilli(), day.UnixMilli())
	if err != nil {
		return err
	}
	s.stats.value = statsJSON{NodesOnline: st.NodesOnline, BuildsQueued: st.BuildsQueued,
		ActiveBuilds: st.ActiveBuilds, BuildsToday: st.BuildsToday, TotalBuilds: st.TotalBuilds,
		TotalBuildTimeMS: st.TotalBuildTimeMS, TotalCPUCycles: st.TotalCPUCycles}
	s.stats.expires = now.Add(statsCacheTTL)
	return c.JSON(http.StatusOK, s.stats.value)
}
