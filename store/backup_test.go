package store_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/expo-free-agent/controller/internal/testkit"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

// TestBackupUnderWrites: a backup taken while writers keep committing holds
// every build acknowledged before it began, passes integrity_check, is one
// self-contained file, and opens as a working store.
func TestBackupUnderWrites(t *testing.T) {
	t.Parallel()
	testkit.SQLiteOnly(t, "controller backup copies the SQLite file")
	d := newTestDB(t)
	ctx := t.Context()
	b, w := d.running(t, "w", t0)

	var (
		mu    sync.Mutex
		acked []string // builds whose CreateBuild returned nil
		wg    sync.WaitGroup
		stop  atomic.Bool
	)
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; !stop.Load(); n++ {
				id := uuid.NewString()
				err := d.s.CreateBuild(context.Background(), store.NewBuild{ID: id, Platform: domain.PlatformAndroid,
					SourcePath: "builds/" + id + ".zip", TokenHash: tokenHash(id), SubmittedAt: t0 + int64(n)})
				if err == nil {
					mu.Lock()
					acked = append(acked, id)
					mu.Unlock()
				}
				_, _ = d.s.AppendLogs(context.Background(), b, w, []store.LogInput{{Level: domain.LevelInfo, Message: "line"}}, t0)
			}
		}()
	}
	// Let the writers commit something first.
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 20 {
			break
		}
		runtime.Gosched()
	}
	mu.Lock()
	before := append([]string(nil), acked...)
	mu.Unlock()

	dest := filepath.Join(t.TempDir(), "backup.db")
	rep, err := store.Backup(ctx, d.path, dest)
	stop.Store(true)
	wg.Wait()
	require.NoError(t, err)
	require.Equal(t, "ok", rep.Integrity)
	require.Equal(t, dest, rep.Path)
	require.GreaterOrEqual(t, rep.Builds, len(before)+1)
	require.Equal(t, 1, rep.Workers)
	require.NotEmpty(t, rep.Schema)
	entries, err := os.ReadDir(filepath.Dir(dest))
	require.NoError(t, err)
	require.Len(t, entries, 1, "one file, no temporary and no -wal beside it")
	st, err := os.Stat(dest)
	require.NoError(t, err)
	require.Equal(t, st.Size(), rep.Size)

	// Restored: a store opens on a copy and has every acknowledged build.
	restored := filepath.Join(t.TempDir(), "data", "controller.db")
	require.NoError(t, os.MkdirAll(filepath.Dir(restored), 0o750))
	raw, err := os.ReadFile(dest)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(restored, raw, 0o600))
	s, err := store.Open(ctx, restored)
	require.NoError(t, err)
	defer s.Close()
	for _, id := range before {
		_, err := s.GetBuild(ctx, id)
		require.NoError(t, err, "build %s was acknowledged before the backup began", id)
	}
	got, err := s.GetBuild(ctx, b)
	require.NoError(t, err)
	require.Equal(t, domain.StatusBuilding, got.Status, "its worker's log lines moved it to building")
	require.NoError(t, s.ProbeWrite(ctx), "the restored database takes writes")
}

func TestBackupRefusals(t *testing.T) {
	t.Parallel()
	testkit.SQLiteOnly(t, "controller backup copies the SQLite file")
	d := newTestDB(t)
	d.build(t, t0)
	dir := t.TempDir()

	t.Run("DestinationExists", func(t *testing.T) {
		t.Parallel()
		dest := filepath.Join(t.TempDir(), "taken.db")
		require.NoError(t, os.WriteFile(dest, []byte("keep me"), 0o600))
		_, err := store.Backup(t.Context(), d.path, dest)
		require.ErrorIs(t, err, store.ErrBackupExists)
		require.Contains(t, err.Error(), dest)
		b, rerr := os.ReadFile(dest)
		require.NoError(t, rerr)
		require.Equal(t, "keep me", string(b), "an existing file is never replaced")
	})
	t.Run("NoDatabase", func(t *testing.T) {
		t.Parallel()
		dest := filepath.Join(t.TempDir(), "b.db")
		_, err := store.Backup(t.Context(), filepath.Join(dir, "missing.db"), dest)
		require.ErrorIs(t, err, store.ErrNotADatabase)
		require.NoFileExists(t, dest)
		require.NoFileExists(t, filepath.Join(dir, "missing.db"), "the missing database is not created")
	})
	t.Run("ForeignDatabase", func(t *testing.T) {
		t.Parallel()
		other := filepath.Join(t.TempDir(), "other.db")
		db, err := sql.Open("sqlite3", other)
		require.NoError(t, err)
		_, err = db.Exec(`CREATE TABLE notes (x)`)
		require.NoError(t, err)
		require.NoError(t, db.Close())
		dest := filepath.Join(t.TempDir(), "b.db")
		_, err = store.Backup(t.Context(), other, dest)
		require.ErrorIs(t, err, store.ErrForeignDatabase)
		require.NoFileExists(t, dest)
	})
	t.Run("MissingDirectory", func(t *testing.T) {
		t.Parallel()
		dest := filepath.Join(t.TempDir(), "no", "such", "dir", "b.db")
		_, err := store.Backup(t.Context(), d.path, dest)
		require.ErrorIs(t, err, store.ErrInternal)
		requireNoDriverError(t, err)
	})
}

// TestBackupOfStoppedDatabase: with no controller running (no -wal, no
// -shm), the backup still reads the database; beside it, it leaves at most
// SQLite's own -wal and -shm (a read-only connection cannot remove them),
// and the controller opens it as before.
func TestBackupOfStoppedDatabase(t *testing.T) {
	t.Parallel()
	testkit.SQLiteOnly(t, "controller backup copies the SQLite file")
	path := filepath.Join(t.TempDir(), "controller.db")
	s, err := store.Open(t.Context(), path)
	require.NoError(t, err)
	require.NoError(t, s.CreateBuild(t.Context(), store.NewBuild{ID: id(1), Platform: domain.PlatformIOS,
		SourcePath: "builds/" + id(1) + ".zip", TokenHash: tokenHash("t"), SubmittedAt: t0}))
	require.NoError(t, s.Close())
	rep, err := store.Backup(t.Context(), path, filepath.Join(t.TempDir(), "b.db"))
	require.NoError(t, err)
	require.Equal(t, 1, rep.Builds)
	entries, err := os.ReadDir(filepath.Dir(path))
	require.NoError(t, err)
	for _, e := range entries {
		require.Contains(t, []string{"controller.db", "controller.db-wal", "controller.db-shm"}, e.Name())
	}
	s, err = store.Open(t.Context(), path)
	require.NoError(t, err)
	_, err = s.GetBuild(t.Context(), id(1))
	require.NoError(t, err)
	require.NoError(t, s.Close())
}
