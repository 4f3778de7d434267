package store

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestWALSync: the WAL is synced through dataSync (fdatasync on Linux),
// follows the file when it is recreated, and reports a missing file or a
// closed descriptor as an error, never as success.
func TestWALSync(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.db-wal")
	w := &walFile{path: path}
	t.Cleanup(func() { w.Close() })
	require.Error(t, w.Sync(), "no WAL file yet")

	require.NoError(t, os.WriteFile(path, []byte("frames"), 0o600))
	require.NoError(t, w.Sync())
	first := w.f

	require.NoError(t, os.Remove(path))
	require.NoError(t, os.WriteFile(path, []byte("new frames"), 0o600))
	require.NoError(t, w.Sync())
	require.NotSame(t, first, w.f, "a recreated WAL is opened anew")

	f, err := os.Open(path)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.Error(t, dataSync(f), "a closed descriptor is an error")
}
