package test

import (
	"bytes"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/expo-free-agent/controller/internal/testkit"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/cmd/app"
)

// fakeVolumes stands for the two volumes' free space, set by the test.
type fakeVolumes struct {
	storageDir, databaseDir string
	storage, database       atomic.Int64
}

func (v *fakeVolumes) free(dir string) (int64, error) {
	switch dir {
	case v.storageDir:
		return v.storage.Load(), nil
	case v.databaseDir:
		return v.database.Load(), nil
	}
	return 0, os.ErrNotExist
}

// withVolumes injects fakeVolumes with plenty of room on both, and the
// default floor (the harness turns it off).
func withVolumes(v *fakeVolumes) Option {
	return WithConfig(func(cfg *app.Config) {
		cfg.MinFreeDisk = app.Defaults().MinFreeDisk
		v.storageDir, v.databaseDir = cfg.StoragePath, filepath.Dir(cfg.DBPath)
		v.storage.Store(100 << 30)
		v.database.Store(100 << 30)
		cfg.FreeBytes = v.free
	})
}

// TestMinFreeDisk: while either volume has less free space than
// --min-free-disk (1 GiB by default), submits, retries, uploads and
// artifacts are refused with 507 Insufficient storage before their body is
// read, and store nothing; everything else works, /health says "degraded"
// with the free bytes and /metrics shows them. Once space is freed, the
// next reading (at most a second later) accepts them again.
func TestMinFreeDisk(t *testing.T) {
	t.Parallel()
	vol := &fakeVolumes{}
	c := Start(t, WithManualClock(), withVolumes(vol))
	done := c.Submit("ios", []byte("done"), nil)
	c.Clock.Advance(time.Millisecond) // queue order is submit time
	running := c.Submit("ios", []byte("running"), nil)
	w := c.Register("w")
	require.Equal(t, done.ID, c.Poll(w)["id"])
	require.Equal(t, http.StatusOK, c.Upload(done.ID, w, true, []byte("ipa"), "").Status)
	require.Equal(t, running.ID, c.Poll(w)["id"])

	h := c.Get("/health", nil)
	require.Equal(t, http.StatusOK, h.Status)
	hb := h.Object(t) // the whole answer's shape is TestHealth's
	require.Equal(t, "ok", hb["status"])
	require.Equal(t, map[string]any{"exists": true, "free_bytes": float64(100 << 30)}, hb["storage"])
	require.Equal(t, map[string]any{"free_bytes": databaseFree(100 << 30)}, hb["database"])
	require.Equal(t, float64(1<<30), hb["min_free_bytes"])

	dash := signedIn(t, c)
	refusals := func(t *testing.T, low string) {
		t.Helper()
		builds, files := len(c.Get("/api/builds", c.KeyH()).JSON(t).([]any)), storageFiles(t, filepath.Join(c.Dir, "storage"))
		status := c.Status(running.ID)["status"]
		for name, r := range map[string]Response{
			"submit": c.PostMultipart("/api/builds/submit", c.KeyH(), CLISubmitParts([]byte("src"), nil)...),
			"retry":  c.PostJSON("/api/builds/"+done.ID+"/retry", nil, c.KeyH()),
			"upload": c.Upload(running.ID, w, true, []byte("ipa"), ""),
			"artifact": c.PostMultipart("/api/builds/"+running.ID+"/artifact", c.KeyH("X-Worker-Id", w),
				Part{Name: "artifact", Filename: "app.ipa", Data: []byte("ipa")}),
		} {
			require.Equal(t, http.StatusInsufficientStorage, r.Status, "%s with %s low: %s", name, low, r.Body)
			require.Equal(t, "Insufficient storage", r.Error(t), name)
		}
		// The dashboard's retry is the same operation: refused as a page.
		r := dash.form(t, "/builds/"+done.ID+"/retry")
		require.Equal(t, http.StatusInsufficientStorage, r.Status, "dashboard retry with %s low", low)
		require.Contains(t, string(r.Body), "Insufficient storage")
		require.Len(t, c.Get("/api/builds", c.KeyH()).JSON(t).([]any), builds, "%s low: no build made", low)
		require.Equal(t, files, storageFiles(t, filepath.Join(c.Dir, "storage")), "%s low: no file stored", low)
		require.Equal(t, status, c.Status(running.ID)["status"], "%s low: the running build is untouched", low)

		// The credential is still checked first.
		r = c.PostMultipart("/api/builds/submit", nil, CLISubmitParts([]byte("src"), nil)...)
		require.Equal(t, http.StatusUnauthorized, r.Status)
		// What keeps builds moving still works: polls, logs, heartbeats, reads.
		require.NotNil(t, c.Poll(w), "the worker is given its build again")
		require.Equal(t, http.StatusOK, c.PostJSON("/api/builds/"+running.ID+"/logs",
			map[string]string{"level": "info", "message": "still building"}, c.KeyH("X-Worker-Id", w)).Status)
		require.Equal(t, http.StatusOK, c.PostJSON("/api/builds/"+running.ID+"/heartbeat?worker_id="+w, nil, c.KeyH()).Status)
		require.Equal(t, http.StatusOK, c.Get("/api/builds/"+done.ID+"/download", c.KeyH()).Status)

		h := c.Get("/health", nil)
		require.Equal(t, http.StatusOK, h.Status)
		require.Equal(t, "degraded", h.Object(t)["status"], "%s low", low)
	}

	t.Run("StorageLow", func(t *testing.T) {
		vol.storage.Store(512 << 20)
		require.Equal(t, "ok", c.Get("/health", nil).Object(t)["status"], "the last reading serves for a second")
		c.Clock.Advance(time.Second)
		refusals(t, "storage")
		require.Equal(t, float64(512<<20), c.Get("/health", nil).Object(t)["storage"].(map[string]any)["free_bytes"])
		fams := scrape(t, c, c.KeyH())
		require.Equal(t, float64(512<<20), value(t, fams, "controller_disk_free_bytes", map[string]string{"volume": "storage"}))
		if testkit.Postgres() {
			require.True(t, math.IsNaN(value(t, fams, "controller_disk_free_bytes", map[string]string{"volume": "database"})),
				"no database volume of its own")
		} else {
			require.Equal(t, float64(100<<30), value(t, fams, "controller_disk_free_bytes", map[string]string{"volume": "database"}))
		}
		require.Equal(t, float64(1<<30), value(t, fams, "controller_disk_min_free_bytes", nil))
		require.Contains(t, c.Logs(), "free disk space below --min-free-disk")
	})
	t.Run("DatabaseLow", func(t *testing.T) {
		testkit.SQLiteOnly(t, "the database's volume")
		vol.storage.Store(100 << 30)
		vol.database.Store(1<<30 - 1)
		c.Clock.Advance(time.Second)
		refusals(t, "database")
	})
	t.Run("Freed", func(t *testing.T) {
		vol.storage.Store(100 << 30)
		vol.database.Store(1 << 30) // exactly the floor is enough
		c.Clock.Advance(time.Second)
		require.Equal(t, "ok", c.Get("/health", nil).Object(t)["status"])
		c.Submit("android", []byte("after"), nil)
		require.Equal(t, http.StatusOK, c.PostJSON("/api/builds/"+done.ID+"/retry", nil, c.KeyH()).Status)
		require.Equal(t, http.StatusOK, c.Upload(running.ID, w, true, []byte("ipa"), "").Status)
		require.Equal(t, "completed", c.Status(running.ID)["status"])
		require.Contains(t, c.Logs(), "free disk space back above --min-free-disk")
	})
}

// TestMinFreeDiskOff: --min-free-disk 0 (the harness's setting) never
// refuses, and /health reports the real free bytes of both volumes.
func TestMinFreeDiskOff(t *testing.T) {
	t.Parallel()
	c := Start(t)
	h := c.Get("/health", nil).Object(t)
	require.Equal(t, "ok", h["status"])
	require.Zero(t, h["min_free_bytes"])
	require.Positive(t, h["storage"].(map[string]any)["free_bytes"])
	db := h["database"].(map[string]any)
	if testkit.Postgres() {
		require.Nil(t, db["free_bytes"], "the PostgreSQL server's disk is its own")
	} else {
		require.Positive(t, db["free_bytes"])
	}
	c.Submit("ios", []byte("s"), nil)
}

// requireTmpfs mounts a small tmpfs at dir or skips: mounting needs root
// (CI runs as root; a sandbox may forbid it).
func requireTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if !mountTmpfs(t, dir, size) {
		t.Skip("mount not permitted here (mounting a tmpfs needs root): this test needs a small volume of its own")
	}
}

// TestUploadFillsDisk: on a real small volume (tmpfs), a result upload that
// runs out of space half-way is answered 507 Insufficient storage, leaves no
// partial file and the build running; once space is freed the same upload
// succeeds — no restart, no stuck state.
func TestUploadFillsDisk(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	storage := filepath.Join(dir, "storage")
	requireTmpfs(t, storage, "4m")
	c := StartIn(t, dir) // no floor (the harness's setting): the real ENOSPC
	b := c.Submit("ios", []byte("src"), nil)
	w := c.Register("w")
	require.Equal(t, b.ID, c.Poll(w)["id"])

	filler := filepath.Join(storage, "filler")
	require.NoError(t, os.WriteFile(filler, make([]byte, 2<<20), 0o600))
	result := bytes.Repeat([]byte("R"), 3<<20) // more than is left
	r := c.Upload(b.ID, w, true, result, "")
	require.Equal(t, http.StatusInsufficientStorage, r.Status, "%s", r.Body)
	require.Equal(t, "Insufficient storage", r.Error(t))
	requireNoLeak(t, r)
	require.Equal(t, []string{"builds/" + b.ID + ".zip", "filler"}, storageFiles(t, storage), "no partial result")
	require.Equal(t, "assigned", c.Status(b.ID)["status"])

	require.NoError(t, os.Remove(filler))
	require.Equal(t, http.StatusOK, c.Upload(b.ID, w, true, result, "").Status)
	require.Equal(t, "completed", c.Status(b.ID)["status"])
	require.Equal(t, result, c.Get("/api/builds/"+b.ID+"/download", c.KeyH()).Body)
}

// TestMinFreeDiskRealVolume: the floor read from a real small volume
// (tmpfs): 4 MiB of 8 kept free; a filler leaves less, and submits are
// refused before anything is written; removing it lets them in again.
func TestMinFreeDiskRealVolume(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	storage := filepath.Join(dir, "storage")
	requireTmpfs(t, storage, "8m")
	c := StartIn(t, dir, WithManualClock(), WithConfig(func(cfg *app.Config) { cfg.MinFreeDisk = 4 << 20 }))
	c.Submit("ios", []byte("kept"), nil)
	filler := filepath.Join(storage, "filler")
	require.NoError(t, os.WriteFile(filler, make([]byte, 5<<20), 0o600))
	c.Clock.Advance(time.Second)

	h := c.Get("/health", nil).Object(t)
	require.Equal(t, "degraded", h["status"])
	require.Less(t, h["storage"].(map[string]any)["free_bytes"], float64(4<<20))
	r := c.PostMultipart("/api/builds/submit", c.KeyH(), CLISubmitParts([]byte("src"), nil)...)
	require.Equal(t, http.StatusInsufficientStorage, r.Status)
	require.Len(t, storageFiles(t, storage), 2, "the kept source and the filler, nothing else")

	require.NoError(t, os.Remove(filler))
	c.Clock.Advance(time.Second)
	require.Equal(t, "ok", c.Get("/health", nil).Object(t)["status"])
	c.Submit("ios", []byte("after"), nil)
}
