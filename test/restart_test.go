package test

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/expo-free-agent/controller/internal/testkit"

	_ "github.com/mattn/go-sqlite3"
	"github.com/stretchr/testify/require"
)

// TestRestartKeepsEveryAcknowledgedBuild restarts the whole tree on the same
// data directory: every answered build is there with its files, in its queue
// position, and its token still works.
func TestRestartKeepsEveryAcknowledgedBuild(t *testing.T) {
	t.Parallel()
	c := Start(t)
	var subs []Submitted
	for i := 0; i < 6; i++ {
		var certs []byte
		if i%2 == 0 {
			certs = DefaultCerts(t)
		}
		subs = append(subs, c.Submit([]string{"ios", "android"}[i%2], []byte{byte('a' + i)}, certs))
	}
	c = c.Restart()
	for i, s := range subs {
		st := c.Get("/api/builds/"+s.ID+"/status", H{"X-Build-Token": s.Token})
		require.Equal(t, http.StatusOK, st.Status)
		require.Equal(t, "pending", st.Object(t)["status"])
		src := c.Get("/api/builds/"+s.ID+"/download/source", H{"X-Build-Token": s.Token})
		require.Equal(t, []byte{byte('a' + i)}, src.Body)
	}
	w := c.Register("after-restart")
	for _, s := range subs {
		job := c.Poll(w)
		require.Equal(t, s.ID, job["id"], "submit order survives the restart")
		require.Equal(t, http.StatusOK, c.Upload(s.ID, w, true, []byte("r"), "").Status)
	}
	require.Nil(t, c.Poll(w))
}

// TestRestartRecovery covers the three cases of §5.4: pending builds come
// back in submit order, running builds whose worker exists stay assigned and
// are re-delivered, running builds whose worker is gone become pending.
func TestRestartRecovery(t *testing.T) {
	t.Parallel()
	c := Start(t, WithManualClock(), timeouts(300*time.Second, time.Hour, 3))
	// Queue order is (submitted_at, id): the clock moves between submits.
	kept := c.Submit("ios", []byte("kept"), nil)
	c.Clock.Advance(time.Millisecond)
	orphan := c.Submit("ios", []byte("orphan"), nil)
	c.Clock.Advance(time.Millisecond)
	p1 := c.Submit("ios", []byte("p1"), nil)
	c.Clock.Advance(time.Millisecond)
	p2 := c.Submit("ios", []byte("p2"), nil)
	stays := c.Register("stays")
	goes := c.Register("goes")
	require.Equal(t, kept.ID, c.Poll(stays)["id"])
	require.Equal(t, orphan.ID, c.Poll(goes)["id"])
	c.Clock.Advance(290 * time.Second)
	c.Stop()

	// The worker row of "goes" disappears while the controller is down.
	db := testkit.OpenRaw(t, c.App.Config.DBPath)
	res, err := db.Exec(testkit.Q(`DELETE FROM workers WHERE id = ?`), goes)
	require.NoError(t, err)
	n, err := res.RowsAffected()
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
	require.NoError(t, db.Close())

	c = c.Restart()
	st := c.Status(orphan.ID)
	require.Equal(t, "pending", st["status"])
	require.Nil(t, st["worker_id"])
	msgs := c.LogMessages(orphan.ID)
	require.Equal(t, "Build requeued: worker gone at restart", msgs[len(msgs)-1])
	require.Equal(t, "assigned", c.Status(kept.ID)["status"])
	require.Equal(t, kept.ID, c.Poll(stays)["id"], "re-delivered to its worker")

	// Downtime does not count: liveness was reset to the start time.
	c.Clock.Advance(290 * time.Second)
	c.checkNow()
	require.Equal(t, "assigned", c.Status(kept.ID)["status"])

	// Pending builds in submit order, the requeued one at its original place.
	w := c.Register("new")
	for _, id := range []string{orphan.ID, p1.ID, p2.ID} {
		require.Equal(t, id, c.Poll(w)["id"])
		require.Equal(t, http.StatusOK, c.Upload(id, w, true, []byte("r"), "").Status)
	}
}

// TestRestartRemovesInterruptedTemporaries: temporary files left by an
// interrupted write are removed at start; committed files are kept.
func TestRestartRemovesInterruptedTemporaries(t *testing.T) {
	t.Parallel()
	c := Start(t)
	b := c.Submit("ios", []byte("keep me"), nil)
	c.Stop()
	for _, dir := range []string{"builds", "certs", "results"} {
		require.NoError(t, os.WriteFile(filepath.Join(c.Dir, "storage", dir, ".tmp-0123456789ab-999"), []byte("half"), 0o600))
	}
	c = c.Restart()
	eventually(t, 5*time.Second, func() bool {
		return len(storageFiles(t, filepath.Join(c.Dir, "storage"))) == 1
	}, "temporary files removed")
	require.Equal(t, []string{"builds/" + b.ID + ".zip"}, storageFiles(t, filepath.Join(c.Dir, "storage")))
}
