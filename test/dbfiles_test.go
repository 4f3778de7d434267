package test

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/expo-free-agent/controller/internal/testkit"

	"github.com/stretchr/testify/require"
)

// dbFiles are the database and its WAL and shared-memory files.
func dbFiles(c *Controller) []string {
	db := c.App.Config.DBPath
	return []string{db, db + "-wal", db + "-shm"}
}

// TestDeletedDatabase: the database file deleted under a running controller.
// SQLite would keep committing into the unlinked file, and those commits
// vanish at the next start; so /health turns 503 and every write is refused
// — a submit is answered 500 and leaves nothing, neither files nor a queued
// build.
func TestDeletedDatabase(t *testing.T) {
	t.Parallel()
	testkit.SQLiteOnly(t, "the database file")
	c := Start(t)
	kept := c.Submit("ios", []byte("kept"), nil)
	for _, f := range dbFiles(c) {
		require.NoError(t, os.Remove(f))
	}
	h := c.Get("/health", nil)
	require.Equal(t, http.StatusServiceUnavailable, h.Status, "%s", h.Body)
	require.Equal(t, "Database unavailable", h.Object(t)["error"])

	r := c.PostMultipart("/api/builds/submit", c.KeyH(), Part{Name: "source", Filename: "s.zip", Data: []byte("lost")},
		Part{Name: "platform", Data: []byte("ios")})
	require.Equal(t, http.StatusInternalServerError, r.Status, "%s", r.Body)
	require.Equal(t, "Build submission failed", r.Error(t))
	requireNoLeak(t, r)
	require.Equal(t, []string{"builds/" + kept.ID + ".zip"}, storageFiles(t, filepath.Join(c.Dir, "storage")),
		"the refused submit left no file")
	reg := c.PostJSON("/api/workers/register", map[string]any{"name": "w", "capabilities": map[string]any{}}, c.KeyH())
	require.Equal(t, http.StatusInternalServerError, reg.Status)
	// Reads still see the (deleted) file: exactly the one build answered before.
	list := c.Get("/api/builds", c.KeyH()).JSON(t).([]any)
	require.Len(t, list, 1)
}

// chattr sets or clears the immutable attribute. It reports false where the
// tool or the file system does not support it.
func chattr(t *testing.T, flag string, files ...string) bool {
	t.Helper()
	out, err := exec.Command("chattr", append([]string{flag}, files...)...).CombinedOutput()
	if err != nil {
		t.Logf("chattr %s: %v: %s", flag, err, out)
		return false
	}
	return true
}

// TestReadOnlyDatabase: the database files made immutable under a running
// controller. SQLite writes to its memory-mapped -shm file on every read and
// write; on an immutable file that write raises SIGBUS, which would kill the
// process (here: the test binary). The controller must answer errors, stay
// up, and recover when the files are writable again.
func TestReadOnlyDatabase(t *testing.T) {
	t.Parallel()
	testkit.SQLiteOnly(t, "the database file")
	c := Start(t)
	b := c.Submit("ios", []byte("src"), nil)
	files := dbFiles(c)
	if !chattr(t, "+i", files...) {
		if os.Getenv("CI") != "" {
			t.Fatal("chattr +i is needed (root, an ext4-like file system); CI must run this test")
		}
		t.Skip("chattr +i is not available here (needs root and a file system with attributes)")
	}
	t.Cleanup(func() { chattr(t, "-i", files...) })

	r := c.PostMultipart("/api/builds/submit", c.KeyH(), Part{Name: "source", Filename: "s.zip", Data: []byte("x")},
		Part{Name: "platform", Data: []byte("ios")})
	require.Equal(t, http.StatusInternalServerError, r.Status, "%s", r.Body)
	require.Equal(t, "Build submission failed", r.Error(t))
	st := c.Get("/api/builds/"+b.ID+"/status", c.KeyH())
	require.Equal(t, http.StatusInternalServerError, st.Status)
	require.Equal(t, "Internal server error", st.Error(t))
	h := c.Get("/health", nil)
	require.Equal(t, http.StatusServiceUnavailable, h.Status)
	require.Equal(t, "Database unavailable", h.Object(t)["error"])
	require.Contains(t, c.Logs(), "immutable", "the log says why")

	require.True(t, chattr(t, "-i", files...))
	require.Equal(t, http.StatusOK, c.Get("/health", nil).Status)
	require.Equal(t, "pending", c.Status(b.ID)["status"])
	c.Submit("android", []byte("after"), nil)
}

// mountTmpfs mounts a small tmpfs at dir (root only), unmounted at cleanup.
// It reports false where mounting is not allowed.
func mountTmpfs(t *testing.T, dir, size string) bool {
	t.Helper()
	require.NoError(t, os.MkdirAll(dir, 0o755))
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Logf("mount tmpfs: %v: %s", err, out)
		return false
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return true
}

// fill writes a file until the volume is full and returns its path.
func fill(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "filler")
	f, err := os.Create(p)
	require.NoError(t, err)
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			return p // ENOSPC
		}
	}
}

// TestFullDisk: the database's volume and then the storage's volume fill up
// (each a small tmpfs of its own; --min-free-disk off, so the writes really
// meet ENOSPC). /health says so (503) and a submit is refused with 507
// Insufficient storage and changes nothing; once space is freed, both work
// again without a restart.
func TestFullDisk(t *testing.T) {
	t.Parallel()
	testkit.SQLiteOnly(t, "the database file")
	dir := t.TempDir()
	data, storage := filepath.Join(dir, "data"), filepath.Join(dir, "storage")
	if !mountTmpfs(t, data, "8m") || !mountTmpfs(t, storage, "8m") {
		if os.Getenv("CI") != "" {
			t.Fatal("mounting a tmpfs is needed (root); CI must run this test")
		}
		t.Skip("cannot mount a tmpfs here (needs root)")
	}
	c := StartIn(t, dir) // no floor (the harness's setting)
	c.Submit("ios", []byte("kept"), nil)
	submit := func() Response {
		return c.PostMultipart("/api/builds/submit", c.KeyH(), Part{Name: "source", Filename: "s.zip", Data: []byte("new")},
			Part{Name: "platform", Data: []byte("ios")})
	}
	builds := func() int { return len(c.Get("/api/builds", c.KeyH()).JSON(t).([]any)) }
	for _, vol := range []struct {
		name, dir, health string
	}{{"Database", data, "Database unavailable"}, {"Storage", storage, "Storage not writable"}} {
		before, files := builds(), storageFiles(t, storage)
		filler := fill(t, vol.dir)
		h := c.Get("/health", nil)
		require.Equal(t, http.StatusServiceUnavailable, h.Status, "%s full: %s", vol.name, h.Body)
		require.Equal(t, vol.health, h.Object(t)["error"])
		r := submit()
		require.Equal(t, http.StatusInsufficientStorage, r.Status, "%s full: %s", vol.name, r.Body)
		require.Equal(t, "Insufficient storage", r.Error(t))
		requireNoLeak(t, r)
		require.Equal(t, before, builds(), "%s full: the refused submit changed nothing", vol.name)
		after := slices.DeleteFunc(storageFiles(t, storage), func(f string) bool { return f == "filler" })
		require.Equal(t, files, after, "%s full: no file left", vol.name)

		require.NoError(t, os.Remove(filler))
		require.Equal(t, http.StatusOK, c.Get("/health", nil).Status, "%s freed: healthy again", vol.name)
		c.Submit("ios", []byte("after"), nil)
		require.Equal(t, before+1, builds())
	}
}
