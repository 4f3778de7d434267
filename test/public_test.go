package test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/internal/version"
)

func TestHealth(t *testing.T) {
	t.Parallel()
	vol := &fakeVolumes{}
	c := Start(t, withVolumes(vol))
	build := version.Get()
	for _, p := range []string{"/health", "/api/health"} {
		r := c.Get(p, nil)
		require.Equal(t, http.StatusOK, r.Status)
		require.Equal(t, "*", r.Header.Get("Access-Control-Allow-Origin"))
		require.Equal(t, map[string]any{"status": "ok",
			"queue":          map[string]any{"pending": 0.0, "active": 0.0, "total": 0.0},
			"storage":        map[string]any{"exists": true, "free_bytes": float64(100 << 30)},
			"database":       map[string]any{"free_bytes": databaseFree(100 << 30)},
			"min_free_bytes": float64(1 << 30), "version": build.Version, "revision": build.Revision}, r.Object(t))
	}
	c.Submit("ios", []byte("a"), nil)
	c.Submit("ios", []byte("b"), nil)
	w := c.Register("w")
	c.Poll(w)
	// The Swift app's connectivity check sends the key to /health.
	r := c.Get("/health", c.KeyH())
	require.Equal(t, http.StatusOK, r.Status)
	require.Equal(t, map[string]any{"pending": 1.0, "active": 1.0, "total": 2.0}, r.Object(t)["queue"])
	require.NotContains(t, string(r.Body), c.Dir, "no path")

	// Storage not writable: 503 with the fixed shape.
	root := filepath.Join(c.Dir, "storage")
	moved := filepath.Join(c.Dir, "storage-moved")
	require.NoError(t, os.Rename(root, moved))
	r = c.Get("/health", nil)
	require.Equal(t, http.StatusServiceUnavailable, r.Status)
	require.Equal(t, map[string]any{"status": "error", "error": "Storage not writable"}, r.Object(t))
	require.NoError(t, os.Rename(moved, root))
	require.Equal(t, http.StatusOK, c.Get("/health", nil).Status)
}

func TestHealthDatabaseUnavailable(t *testing.T) {
	t.Parallel()
	c := Start(t)
	require.NoError(t, c.App.Store.Close())
	r := c.Get("/health", nil)
	require.Equal(t, http.StatusServiceUnavailable, r.Status)
	require.Equal(t, map[string]any{"status": "error", "error": "Database unavailable"}, r.Object(t))
}

func TestStats(t *testing.T) {
	t.Parallel()
	c := Start(t, WithManualClock())
	r := c.Get("/api/stats", nil)
	require.Equal(t, http.StatusOK, r.Status)
	require.Equal(t, "*", r.Header.Get("Access-Control-Allow-Origin"))
	zero := map[string]any{"nodesOnline": 0.0, "buildsQueued": 0.0, "activeBuilds": 0.0, "buildsToday": 0.0,
		"totalBuilds": 0.0, "totalBuildTimeMs": 0.0, "totalCpuCycles": 0.0}
	require.Equal(t, zero, r.Object(t))

	a := c.Submit("ios", []byte("a"), nil)
	c.Clock.Advance(time.Millisecond) // queue order is (submitted_at, id)
	c.Submit("ios", []byte("b"), nil)
	w := c.Register("w")
	require.Equal(t, a.ID, c.Poll(w)["id"])
	// Cached for 10 s, one cache for every path.
	for _, p := range []string{"/api/stats", "/api/stats/", "/public/stats"} {
		require.Equal(t, zero, c.Get(p, nil).Object(t), p)
	}
	// A keyless CPU snapshot feeds totalCpuCycles.
	tr := c.PostJSON("/api/builds/"+a.ID+"/telemetry", map[string]any{"type": "cpu_snapshot",
		"data": map[string]any{"cpu_percent": 50, "memory_mb": 1024}}, H{"X-Worker-Id": w, "X-Build-Id": a.ID})
	require.Equal(t, http.StatusOK, tr.Status, "%s", tr.Body)
	c.Clock.Advance(4 * time.Second)
	require.Equal(t, http.StatusOK, c.Upload(a.ID, w, true, []byte("ipa"), "").Status)
	c.Clock.Advance(7 * time.Second)
	got := c.Get("/public/stats", nil).Object(t)
	require.Equal(t, map[string]any{"nodesOnline": 1.0, "buildsQueued": 1.0, "activeBuilds": 0.0, "buildsToday": 1.0,
		"totalBuilds": 1.0, "totalBuildTimeMs": 4000.0, "totalCpuCycles": 2.0}, got)
}

func TestRoutingErrors(t *testing.T) {
	t.Parallel()
	c := Start(t)
	r := c.Get("/definitely/not/here", nil)
	require.Equal(t, http.StatusNotFound, r.Status)
	require.Equal(t, "Not found", r.Error(t))
	r = c.Do(http.MethodPost, "/nope", strings.NewReader("{"), c.KeyH())
	require.Equal(t, http.StatusNotFound, r.Status)
	require.Equal(t, "Not found", r.Error(t))
	for _, tc := range []struct{ method, path, allow string }{
		{http.MethodDelete, "/api/builds", "GET, POST"},
		{http.MethodPut, "/health", "GET"},
		{http.MethodOptions, "/api/builds/submit", "POST"},
		{http.MethodGet, "/api/workers/register", "POST"},
	} {
		r := c.Do(tc.method, tc.path, nil, nil)
		require.Equal(t, http.StatusMethodNotAllowed, r.Status, tc.method+" "+tc.path)
		require.Equal(t, "Method not allowed", r.Error(t))
		require.Equal(t, tc.allow, r.Header.Get("Allow"))
	}
	// No CORS headers outside the public read endpoints.
	require.Empty(t, c.Get("/api/builds", c.KeyH()).Header.Get("Access-Control-Allow-Origin"))
	require.Empty(t, c.Get("/", nil).Header.Get("Access-Control-Allow-Origin"))
}

func TestJSONBodyRules(t *testing.T) {
	t.Parallel()
	c := Start(t)
	// Unparsable JSON, whatever the content type.
	r := c.Do(http.MethodPost, "/api/workers/register", strings.NewReader("{nope"), c.KeyH("Content-Type", "text/plain"))
	require.Equal(t, http.StatusBadRequest, r.Status)
	require.Equal(t, "Invalid JSON body", r.Error(t))
	// Valid JSON without a content type is decoded.
	r = c.Do(http.MethodPost, "/api/workers/register", strings.NewReader(`{"name":"n","capabilities":{}}`), c.KeyH())
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	// Over 1 MiB.
	big := `{"name":"` + strings.Repeat("x", 1<<20) + `","capabilities":{}}`
	r = c.Do(http.MethodPost, "/api/workers/register", strings.NewReader(big), c.KeyH("Content-Type", "application/json"))
	require.Equal(t, http.StatusRequestEntityTooLarge, r.Status)
	require.Equal(t, "Request body too large", r.Error(t))
	// Empty means {}.
	r = c.Do(http.MethodPost, "/api/workers/register", nil, c.KeyH("Content-Type", "application/json"))
	require.Equal(t, http.StatusBadRequest, r.Status)
	require.Equal(t, "Name and capabilities required", r.Error(t))
}

func TestDashboard(t *testing.T) {
	t.Parallel()
	c := Start(t)
	empty := c.Get("/", nil)
	require.Equal(t, http.StatusOK, empty.Status)
	require.Equal(t, "text/html; charset=utf-8", empty.Header.Get("Content-Type"))
	require.Contains(t, string(empty.Body), "No builds yet")

	b := c.Submit("ios", []byte("x"), DefaultCerts(t))
	w := c.Register(`<script>alert("w")</script>`)
	c.Poll(w)
	c.PostJSON("/api/builds/"+b.ID+"/logs", map[string]string{"level": "info", "message": "<b>compiling</b>"}, c.KeyH("X-Worker-Id", w))
	page := string(c.Get("/?demo=true", nil).Body)
	require.Contains(t, page, b.ID)
	require.Contains(t, page, "&lt;script&gt;", "names are escaped")
	require.NotContains(t, page, "<script>alert")
	require.NotContains(t, page, w, "no worker ids")
	require.NotContains(t, page, b.Token, "no tokens")
	require.NotContains(t, page, c.Key, "no key")
	require.NotContains(t, page, c.Dir, "no paths")
	require.NotContains(t, page, "P12-BYTES")
	require.NotContains(t, page, "demo")

	// Build page with the log, escaped; feed for the live follow (signed
	// in: here with the admin key).
	bp := c.Get("/builds/"+b.ID, c.KeyH())
	require.Equal(t, http.StatusOK, bp.Status)
	require.Contains(t, string(bp.Body), "&lt;b&gt;compiling&lt;/b&gt;")
	require.NotContains(t, string(bp.Body), w)
	feed := c.Get("/builds/"+b.ID+"/logs.json?after=1", c.KeyH())
	require.Equal(t, http.StatusOK, feed.Status)
	fm := feed.Object(t)
	require.Equal(t, "building", fm["status"])
	logs := fm["logs"].([]any)
	require.Equal(t, "<b>compiling</b>", logs[len(logs)-1].(map[string]any)["message"])
	require.NotContains(t, string(feed.Body), w)
	require.Equal(t, http.StatusNotFound, c.Get("/builds/nope", c.KeyH()).Status)
	// Cancelled builds say so.
	c.PostJSON("/api/builds/"+b.ID+"/cancel", nil, c.KeyH())
	require.Contains(t, string(c.Get("/dashboard/fragment", nil).Body), ">cancelled<")
}

func TestDashboardListsTheFirstHundredQueued(t *testing.T) {
	t.Parallel()
	c := Start(t)
	for i := 0; i < 102; i++ {
		c.Submit("ios", []byte("s"), nil)
	}
	page := string(c.Get("/", nil).Body)
	require.Contains(t, page, "… and 2 more.")
	require.Equal(t, 100, strings.Count(page, `<tr data-build=`)-100, "100 queued rows beside the 100 newest builds")
}
