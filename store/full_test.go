package store_test

import (
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/expo-free-agent/controller/internal/testkit"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

// TestFullDatabase: a database that cannot grow (SQLITE_FULL, what SQLite
// answers on a full volume) refuses writes with ErrFull and no driver
// error, and a refused write changes nothing; as soon as it can grow again
// the same writes succeed — the one write connection is not left inside a
// failed transaction.
func TestFullDatabase(t *testing.T) {
	t.Parallel()
	testkit.SQLiteOnly(t, "SQLITE_FULL and the WAL's fsync")
	d := newTestDB(t)
	ctx := t.Context()
	b, w := d.running(t, "w", t0)
	pages, err := store.PageCount(ctx, d.s)
	require.NoError(t, err)
	require.NoError(t, store.LimitPages(ctx, d.s, pages))

	// untilFull repeats write until it fails (the free pages are used up
	// first) and checks that the failing one wrote nothing.
	untilFull := func(name string, write func(i int) error) {
		t.Helper()
		for i := range 200 {
			before := d.dump(t)
			err := write(i)
			if err == nil {
				continue
			}
			require.ErrorIs(t, err, store.ErrFull, name)
			requireNoDriverError(t, err)
			require.Equal(t, before, d.dump(t), "%s: the refused write changed nothing", name)
			return
		}
		t.Fatalf("%s: the capped database never filled", name)
	}
	line := []store.LogInput{{Level: domain.LevelInfo, Message: strings.Repeat("x", 16<<10)}}
	untilFull("AppendLogs", func(int) error {
		_, err := d.s.AppendLogs(ctx, b, w, line, t0+1)
		return err
	})
	untilFull("CreateBuild", func(i int) error {
		return d.s.CreateBuild(ctx, store.NewBuild{ID: id(100 + i), Platform: domain.PlatformIOS,
			SourcePath: "builds/" + id(100+i) + ".zip", TokenHash: tokenHash("t"), SubmittedAt: t0 + 2})
	})
	require.Equal(t, domain.StatusAssigned, d.get(t, b).Status, "the running build is untouched")

	// Space freed: the same writes succeed on the same connection.
	require.NoError(t, store.LimitPages(ctx, d.s, 0))
	_, err = d.s.AppendLogs(ctx, b, w, line, t0+3)
	require.NoError(t, err)
	d.createBuild(t, id(999), t0+4, domain.PlatformAndroid)
	require.Equal(t, domain.StatusPending, d.get(t, id(999)).Status)
	require.NoError(t, d.s.ProbeWrite(ctx))
}

// TestFullVolumeAtFsync: an fsync of the WAL refused for want of space (as
// some file systems do) is ErrFull too, never a driver error.
func TestFullVolumeAtFsync(t *testing.T) {
	t.Parallel()
	testkit.SQLiteOnly(t, "SQLITE_FULL and the WAL's fsync")
	d := newTestDB(t)
	store.FailSyncs(d.s, &os.PathError{Op: "fsync", Path: d.path + "-wal", Err: syscall.ENOSPC})
	err := d.s.ProbeWrite(t.Context())
	require.ErrorIs(t, err, store.ErrFull)
	requireNoDriverError(t, err)
}
