package test

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/expo-free-agent/controller/internal/testkit"

	"github.com/stretchr/testify/require"
)

// TestBackupUnderTraffic: `controller backup` (the binary, another process)
// snapshots the database while the controller serves submits and log
// lines. The backup passes integrity_check, and a controller started on it
// and on a copy of the storage root taken after it serves every build that
// was acknowledged before the backup began, files included.
func TestBackupUnderTraffic(t *testing.T) {
	t.Parallel()
	testkit.SQLiteOnly(t, "controller backup copies the SQLite file")
	bin := buildBinary(t, "controller")
	c := Start(t)
	running := c.Submit("ios", []byte("running"), nil)
	w := c.Register("w")
	require.Equal(t, running.ID, c.Poll(w)["id"])

	var (
		mu    sync.Mutex
		acked []string
		errs  []error
		stop  atomic.Bool
		wg    sync.WaitGroup
	)
	record := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	for i := range 3 {
		wg.Add(1)
		go func() { // submits: the files and the rows the backup must hold
			defer wg.Done()
			for n := 0; !stop.Load(); n++ {
				r := c.PostMultipart("/api/builds/submit", c.KeyH(), CLISubmitParts([]byte(fmt.Sprintf("src %d/%d", i, n)), nil)...)
				if r.Status != http.StatusOK {
					record(fmt.Errorf("submit: %d %s", r.Status, r.Body))
					return
				}
				var out struct{ ID string }
				if err := json.Unmarshal(r.Body, &out); err != nil || out.ID == "" {
					record(fmt.Errorf("submit answer %s: %v", r.Body, err))
					return
				}
				mu.Lock()
				acked = append(acked, out.ID)
				mu.Unlock()
			}
		}()
	}
	wg.Add(1)
	go func() { // log lines: many small commits beside the submits
		defer wg.Done()
		for !stop.Load() {
			r := c.PostJSON("/api/builds/"+running.ID+"/logs", map[string]string{"level": "info", "message": "compiling"},
				c.KeyH("X-Worker-Id", w))
			if r.Status != http.StatusOK {
				record(fmt.Errorf("logs: %d %s", r.Status, r.Body))
				return
			}
		}
	}()
	ackedNow := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), acked...)
	}
	eventually(t, 30*time.Second, func() bool { return len(ackedNow()) >= 10 }, "the writers commit builds")

	before := ackedNow()
	dest := filepath.Join(t.TempDir(), "controller-backup.db")
	var out, stderr bytes.Buffer
	cmd := exec.Command(bin, "backup", "--db", c.App.Config.DBPath, dest)
	cmd.Stdout, cmd.Stderr = &out, &stderr
	err := cmd.Run()
	during := len(ackedNow()) - len(before)
	stop.Store(true)
	wg.Wait()
	require.NoError(t, err, "backup: %s%s", out.String(), stderr.String())
	require.Empty(t, errs, "the controller served throughout")
	require.Contains(t, out.String(), "integrity_check: ok")
	require.Contains(t, out.String(), "builds: ")
	t.Logf("builds acknowledged while the backup ran: %d", during)

	// The copy passes SQLite's own check, read independently.
	db, err := sql.Open("sqlite3", "file:"+dest+"?mode=ro")
	require.NoError(t, err)
	var check string
	require.NoError(t, db.QueryRow(`PRAGMA integrity_check`).Scan(&check))
	require.NoError(t, db.Close())
	require.Equal(t, "ok", check)

	// Restore onto a "new machine": the database, then the storage root
	// copied after it, as docs/DEPLOYMENT.md says.
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "data"), 0o750))
	copyFile(t, dest, filepath.Join(dir, "data", "controller.db"))
	copyTree(t, filepath.Join(c.Dir, "storage"), filepath.Join(dir, "storage"))
	c.Stop()
	restored := StartIn(t, dir)
	for i, id := range before {
		st := restored.Get("/api/builds/"+id+"/status", restored.KeyH())
		require.Equal(t, http.StatusOK, st.Status, "build %s was acknowledged before the backup began", id)
		if i%5 == 0 {
			src := restored.Get("/api/builds/"+id+"/download/source", restored.KeyH())
			require.Equal(t, http.StatusOK, src.Status, "its source is in the storage copy")
		}
	}
	require.Contains(t, restored.LogMessages(running.ID), "compiling", "log lines committed before the backup are in it")
	restored.Submit("android", []byte("after the restore"), nil)
}

// TestBackupRefusesExistingFile: the backup never replaces a file, and says
// so with exit status 2 (a mistake to mend, not worth retrying).
func TestBackupRefusesExistingFile(t *testing.T) {
	t.Parallel()
	testkit.SQLiteOnly(t, "controller backup copies the SQLite file")
	bin := buildBinary(t, "controller")
	c := Start(t)
	c.Submit("ios", []byte("s"), nil)
	dest := filepath.Join(t.TempDir(), "taken.db")
	require.NoError(t, os.WriteFile(dest, []byte("an older backup"), 0o600))
	for _, tc := range []struct {
		name string
		args []string
		msg  string
	}{
		{"Exists", []string{"backup", "--db", c.App.Config.DBPath, dest}, "name a new file"},
		{"NoFile", []string{"backup", "--db", c.App.Config.DBPath}, "name exactly one file"},
		{"NoDatabase", []string{"backup", "--db", filepath.Join(t.TempDir(), "none.db"), dest + "2"}, "no database at"},
	} {
		var stderr bytes.Buffer
		cmd := exec.Command(bin, tc.args...)
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		require.True(t, errors.As(err, &ee), "%s: %v", tc.name, err)
		require.Equal(t, 2, ee.ExitCode(), tc.name)
		require.Contains(t, stderr.String(), tc.msg, tc.name)
	}
	b, err := os.ReadFile(dest)
	require.NoError(t, err)
	require.Equal(t, "an older backup", string(b))
	require.NoFileExists(t, dest+"2")
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(to, b, 0o600))
}

// copyTree copies the regular files under from to to, as rsync -a would.
func copyTree(t *testing.T, from, to string) {
	t.Helper()
	require.NoError(t, filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(from, p)
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o750)
		}
		copyFile(t, p, filepath.Join(to, rel))
		return nil
	}))
}
