package httpapi

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
)

// health is GET /health (§3.1): the real queue from the database, 503 when the
// database does not answer within 2 s or the storage root is not writable.
func (s *Server) health(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), healthTimeout)
	defer cancel()
	counts, err := s.store.BuildCounts(ctx)
	if err != nil {
		s.log.Error("health: database unavailable", "err", err)
		return c.JSON(http.StatusServiceUnavailable, map[string]string{"status": "error", "error": "Database unavailable"})
	}
	if err := s.files.CheckWritable(); err != nil {
		s.log.Error("health: storage not writable", "err", err)
		return c.JSON(http.StatusServiceUnavailable, map[string]string{"status": "error", "error": "Storage not writable"})
	}
	active := counts.Active()
	return c.JSON(http.StatusOK, map[string]any{
		"status":  "ok",
		"queue":   map[string]int{"pending": counts.Pending, "active": active, "total": counts.Pending + active},
		"storage": map[string]bool{"exists": true},
	})
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
