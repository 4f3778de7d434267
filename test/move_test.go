package test

import (
	"net/http"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/internal/testkit"
)

// TestMoveToPostgres follows docs/MIGRATION.md, SQLite → PostgreSQL: a
// single node on SQLite is stopped, `controller migrate` prepares the new
// database, `controller copy` moves everything, and two nodes on PostgreSQL
// sharing the old storage root serve every build as before: the finished
// build's result downloads, the running build is still its worker's, the
// queued build is handed out, the build token still opens its build.
func TestMoveToPostgres(t *testing.T) {
	t.Parallel()
	if !testkit.Postgres() {
		t.Skip("moves to PostgreSQL: runs in make test's PostgreSQL pass (" + testkit.EnvStore + "=postgres)")
	}
	if testing.Short() {
		t.Skip("binary test skipped in -short mode")
	}
	dir := t.TempDir()
	sqlite := filepath.Join(dir, "data", "controller.db")
	storage := filepath.Join(dir, "storage")
	bin := buildBinary(t, "controller")
	old := startBinary(t, bin, dir, "--db", sqlite, "--storage", storage)
	c := old.Client(t)
	done, running, queued := c.Submit("ios", []byte("src-done"), nil), c.Submit("ios", []byte("src-running"), nil),
		c.Submit("android", []byte("src-queued"), nil)
	w := c.Register("ios-worker", "ios")
	require.Equal(t, done.ID, c.Poll(w)["id"])
	require.Equal(t, http.StatusOK, c.Upload(done.ID, w, true, []byte("the ipa"), "").Status)
	require.Equal(t, running.ID, c.Poll(w)["id"])
	old.Kill() // an operator would stop it; a kill loses nothing either

	pg := testkit.PostgresURL(t)
	code, out := runBinary(t, dir, "migrate", "--db", pg)
	require.Equal(t, 0, code, "%s", out)
	require.Contains(t, out, "is at schema 0009_history_totals.sql (9 migrations)")
	require.NotContains(t, out, "efa:efa@", "the password is not printed")
	code, out = runBinary(t, dir, "copy", "--from", sqlite, "--to", pg)
	require.Equal(t, 0, code, "%s", out)
	require.Regexp(t, `builds +3`, out)
	code, out = runBinary(t, dir, "copy", "--from", sqlite, "--to", pg)
	require.Equal(t, 2, code, "a second copy into the same database: %s", out)
	require.Contains(t, out, "destination database is not empty")
	code, out = runBinary(t, dir, "backup", "--db", pg, filepath.Join(dir, "b.db"))
	require.Equal(t, 2, code, "%s", out)
	require.Contains(t, out, "back it up with PostgreSQL's own tools")

	bin2 := buildBinary(t, "controller")
	n1 := startBinary(t, bin2, t.TempDir(), "--db", pg, "--storage", storage).Client(t)
	n2 := startBinary(t, bin2, t.TempDir(), "--db", pg, "--storage", storage).Client(t)
	d := n2.Get("/api/builds/"+done.ID+"/download", n2.KeyH())
	require.Equal(t, http.StatusOK, d.Status)
	require.Equal(t, "the ipa", string(d.Body))
	require.Equal(t, running.ID, n1.Poll(w)["id"], "the running build is still its worker's")
	require.Equal(t, http.StatusOK, n2.Upload(running.ID, w, true, []byte("second ipa"), "").Status)
	droid := n1.Register("android-worker", "android")
	require.Equal(t, queued.ID, n2.Poll(droid)["id"])
	st := n1.Get("/api/builds/"+queued.ID+"/status", H{"X-Build-Token": queued.Token})
	require.Equal(t, http.StatusOK, st.Status, "the build token still opens its build: %s", st.Body)
	require.Equal(t, "assigned", st.Object(t)["status"])
}
