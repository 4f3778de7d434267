package test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/actors/clock"
	"github.com/expo-free-agent/controller/cmd/app"
)

// finishBuild submits a build with certs, hands it to a new worker and
// uploads its result (success) or a failure; it returns the build and the
// worker.
func finishBuild(t *testing.T, c *Controller, success bool) (Submitted, string) {
	t.Helper()
	b := c.Submit("ios", []byte("source-"+t.Name()), DefaultCerts(t))
	w := c.Register("mac-"+b.ID[:8], "ios")
	job := c.Poll(w)
	require.NotNil(t, job)
	require.Equal(t, b.ID, job["id"])
	var result []byte
	if success {
		result = []byte("IPA-BYTES-of-" + b.ID)
	}
	r := c.Upload(b.ID, w, success, result, "")
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	return b, w
}

// storedFiles lists the files under the storage root whose name holds id.
func storedFiles(t *testing.T, dir, id string) []string {
	t.Helper()
	var out []string
	for _, sub := range []string{"builds", "certs", "results"} {
		matches, err := filepath.Glob(filepath.Join(dir, "storage", sub, id+".*"))
		require.NoError(t, err)
		out = append(out, matches...)
	}
	return out
}

// storedSize sums the sizes of the files under the storage root whose name
// holds id.
func storedSize(t *testing.T, dir, id string) int64 {
	t.Helper()
	var n int64
	for _, p := range storedFiles(t, dir, id) {
		st, err := os.Stat(p)
		require.NoError(t, err)
		n += st.Size()
	}
	return n
}

// TestRetentionCollector: the collector runs under the supervisor at start
// and every hour of the injected clock. A purged build answers 410 Build
// files expired on its downloads and its retry; its row and log stay; the
// newest completed build and a running build keep their files.
func TestRetentionCollector(t *testing.T) {
	t.Parallel()
	c := Start(t, WithManualClock(), WithConfig(func(cfg *app.Config) { cfg.Retention = 2 * time.Hour }))
	gc := c.App.Retention
	require.NotNil(t, gc)
	eventually(t, 10*time.Second, func() bool { return gc.Passes() == 1 }, "the pass at start")

	old, oldWorker := finishBuild(t, c, true)
	failed, _ := finishBuild(t, c, false)
	c.Clock.Advance(time.Second)
	latest, _ := finishBuild(t, c, true)
	running := c.Submit("ios", []byte("src"), DefaultCerts(t))
	runner := c.Register("mac-runner", "ios")
	require.Equal(t, running.ID, c.Poll(runner)["id"])
	require.Len(t, storedFiles(t, c.Dir, old.ID), 3)
	purgedBytes := storedSize(t, c.Dir, old.ID) + storedSize(t, c.Dir, failed.ID)

	c.Clock.Advance(time.Hour) // the hourly pass: nothing is old enough yet
	eventually(t, 10*time.Second, func() bool { return gc.Passes() == 2 }, "the first hourly pass")
	require.NotContains(t, c.Status(old.ID), "files_purged_at")

	c.Clock.Advance(time.Hour + time.Minute)
	eventually(t, 10*time.Second, func() bool { return gc.Passes() == 3 }, "the second hourly pass")
	for _, b := range []Submitted{old, failed} {
		st := c.Status(b.ID)
		require.Contains(t, st, "files_purged_at", "a ninth field once purged")
		require.Len(t, st, 9)
		require.Empty(t, storedFiles(t, c.Dir, b.ID), "the files are gone")
		require.NotEmpty(t, c.LogMessages(b.ID), "the log stays")
	}
	require.Len(t, c.Status(latest.ID), 8, "the newest completed build is kept")
	require.Len(t, storedFiles(t, c.Dir, latest.ID), 3)
	require.Len(t, storedFiles(t, c.Dir, running.ID), 2, "a running build is never touched")
	require.Equal(t, "assigned", c.Status(running.ID)["status"])

	t.Run("Downloads", func(t *testing.T) {
		for _, path := range []string{"/download", "/download/result", "/download/source"} {
			for _, h := range []H{c.KeyH(), {"X-Build-Token": old.Token}} {
				r := c.Get("/api/builds/"+old.ID+path, h)
				require.Equal(t, http.StatusGone, r.Status, "%s: %s", path, r.Body)
				require.Equal(t, "Build files expired", r.Error(t))
			}
		}
		// The failed build never had a result: that answer is unchanged.
		r := c.Get("/api/builds/"+failed.ID+"/download", c.KeyH())
		require.Equal(t, http.StatusBadRequest, r.Status)
		require.Equal(t, "Build not completed", r.Error(t))
		r = c.Get("/api/builds/"+failed.ID+"/download/source", c.KeyH())
		require.Equal(t, http.StatusGone, r.Status)
		// The certs are only ever sent to the assignee of a running build, and
		// a purged build is finished: its worker is refused as before.
		r = c.Get("/api/builds/"+old.ID+"/certs", c.KeyH("X-Worker-Id", oldWorker))
		require.Equal(t, http.StatusForbidden, r.Status)
		require.Equal(t, "Worker not authorized for this build", r.Error(t))
		// The kept build still downloads.
		r = c.Get("/api/builds/"+latest.ID+"/download", c.KeyH())
		require.Equal(t, http.StatusOK, r.Status)
	})

	t.Run("Retry", func(t *testing.T) {
		for _, h := range []H{c.KeyH(), {"X-Build-Token": old.Token}} {
			r := c.PostJSON("/api/builds/"+old.ID+"/retry", nil, h)
			require.Equal(t, http.StatusGone, r.Status, "%s", r.Body)
			require.Equal(t, "Build files expired", r.Error(t))
		}
		r := c.PostJSON("/api/builds/"+latest.ID+"/retry", nil, c.KeyH())
		require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	})

	t.Run("Dashboard", func(t *testing.T) {
		s := signedIn(t, c)
		page := s.get(t, "/builds/"+old.ID)
		require.Equal(t, http.StatusOK, page.Status)
		require.Contains(t, string(page.Body), `id="build-files-purged">deleted by retention`)
		require.Contains(t, string(page.Body), `data-when="retriable" hidden>`, "no retry for a purged build")
		require.Contains(t, string(page.Body), `id="download-result" data-when="result" href="/builds/`+old.ID+`/download" download hidden>`)
		kept := s.get(t, "/builds/"+latest.ID)
		require.Contains(t, string(kept.Body), `data-when="retriable">`, "the kept build offers its retry")
		require.NotContains(t, string(kept.Body), "deleted by retention")
		r := s.get(t, "/builds/"+old.ID+"/download")
		require.Equal(t, http.StatusGone, r.Status)
		require.Contains(t, string(r.Body), "Build files expired")
		r = s.form(t, "/builds/"+old.ID+"/retry")
		require.Equal(t, http.StatusGone, r.Status)
		require.Contains(t, string(r.Body), "Build files expired")
	})

	t.Run("Metrics", func(t *testing.T) {
		fams := scrape(t, c, c.KeyH())
		require.Equal(t, 2.0, value(t, fams, "controller_retention_purged_builds_total", nil))
		require.Equal(t, float64(purgedBytes), value(t, fams, "controller_retention_purged_bytes_total", nil))
	})
}

// TestRetentionAtStart: builds that expired while the controller was down
// are purged by the pass at start; without a retention there is no collector.
func TestRetentionAtStart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c := StartIn(t, dir)
	require.Nil(t, c.App.Retention, "no retention, no collector")
	old, _ := finishBuild(t, c, false)
	finishBuild(t, c, true)
	c.Stop()

	later := clock.NewManual(time.Now().Add(31 * 24 * time.Hour))
	c = StartIn(t, dir, WithConfig(func(cfg *app.Config) { cfg.Clock, cfg.Retention = later, 30*24*time.Hour }))
	eventually(t, 10*time.Second, func() bool { return c.App.Retention.Passes() == 1 }, "the pass at start")
	require.Contains(t, c.Status(old.ID), "files_purged_at")
	require.Empty(t, storedFiles(t, dir, old.ID))
}

var gcLine = regexp.MustCompile(`^([0-9a-f-]{36})\t(\d+)$`)

// gcOutput splits gc's stdout into its build lines (id → bytes) and its
// total line.
func gcOutput(t *testing.T, out string) (map[string]string, string) {
	t.Helper()
	builds := map[string]string{}
	var total string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if m := gcLine.FindStringSubmatch(line); m != nil {
			builds[m[1]] = m[2]
		} else if strings.HasPrefix(line, "total: ") {
			total = line
		}
	}
	return builds, total
}

// TestBinaryGC: `controller gc --dry-run` lists what would go and changes
// nothing; `controller gc` runs one pass, beside a running controller, which
// then answers 410; without a retention gc refuses (exit 2).
func TestBinaryGC(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("binary test skipped in -short mode")
	}
	dir := t.TempDir()
	c := StartIn(t, dir)
	old, _ := finishBuild(t, c, true)
	failed, _ := finishBuild(t, c, false)
	latest, _ := finishBuild(t, c, true)
	size := func(id string) int64 { return storedSize(t, dir, id) }
	wantBytes := map[string]string{old.ID: fmt.Sprint(size(old.ID)), failed.ID: fmt.Sprint(size(failed.ID))}
	where := []string{"--db", c.App.Config.DBPath, "--storage", filepath.Join(dir, "storage")}

	code, out := runBinary(t, dir, append([]string{"gc", "--dry-run"}, where...)...)
	require.Equal(t, 2, code, "%s", out)
	require.Contains(t, out, "gc needs a retention")
	missing := filepath.Join(dir, "data", "typo.db")
	code, out = runBinary(t, dir, "gc", "--retention", "1ms", "--db", missing, "--storage", filepath.Join(dir, "storage"))
	require.Equal(t, 2, code, "%s", out)
	require.Contains(t, out, "no controller data at "+missing+" (check --db)")
	require.NoFileExists(t, missing, "a mistyped path creates nothing")

	code, out = runBinary(t, dir, append([]string{"gc", "--dry-run", "--retention", "1ms"}, where...)...)
	require.Equal(t, 0, code, "%s", out)
	builds, total := gcOutput(t, out)
	require.Equal(t, wantBytes, builds, "%s", out)
	require.Contains(t, total, "would delete the files of 2 builds, "+fmt.Sprint(size(old.ID)+size(failed.ID))+" bytes")
	require.Len(t, storedFiles(t, dir, old.ID), 3, "a dry run changes nothing")
	require.Equal(t, http.StatusOK, c.Get("/api/builds/"+old.ID+"/download", c.KeyH()).Status)

	// The controller keeps running: gc's short transactions wait for its
	// writes and it for theirs.
	code, out = runBinary(t, dir, append([]string{"gc", "--retention", "1ms"}, where...)...)
	require.Equal(t, 0, code, "%s", out)
	builds, total = gcOutput(t, out)
	require.Equal(t, wantBytes, builds, "%s", out)
	require.Contains(t, total, "deleted the files of 2 builds")
	require.Empty(t, storedFiles(t, dir, old.ID))
	require.Len(t, storedFiles(t, dir, latest.ID), 3)
	r := c.Get("/api/builds/"+old.ID+"/download", c.KeyH())
	require.Equal(t, http.StatusGone, r.Status)
	require.Equal(t, "Build files expired", r.Error(t))
	c.Submit("ios", []byte("after gc"), nil) // the controller still takes builds

	code, out = runBinary(t, dir, append([]string{"gc", "--retention", "1ms"}, where...)...)
	require.Equal(t, 0, code, "%s", out)
	_, total = gcOutput(t, out)
	require.Contains(t, total, "deleted the files of 0 builds, 0 bytes")
}
