package store_test

import (
	"crypto/sha256"
	"database/sql"
	"os"
	"path/filepath"
	"testing"

	"github.com/expo-free-agent/controller/internal/testkit"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/store"
)

// fileState is what Open must leave unchanged in a file it refuses: its
// bytes, and no -wal or -shm beside it.
func fileState(t *testing.T, path string) [sha256.Size]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	for _, side := range []string{"-wal", "-shm", "-journal"} {
		_, err := os.Stat(path + side)
		require.ErrorIs(t, err, os.ErrNotExist, "Open left %s beside the refused file", side)
	}
	return sha256.Sum256(b)
}

// plainSQLite creates a database the way another program would: no WAL,
// the given tables.
func plainSQLite(t *testing.T, path string, tables ...string) {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=DELETE")
	require.NoError(t, err)
	for _, tbl := range tables {
		_, err := db.Exec("CREATE TABLE " + tbl + " (id TEXT PRIMARY KEY, v TEXT)")
		require.NoError(t, err)
	}
	_, err = db.Exec("INSERT INTO " + tables[0] + " VALUES ('V1StGXR8_Z5jdHi6B-myT', 'x')")
	require.NoError(t, err)
	require.NoError(t, db.Close())
}

// TestOpenRefusesForeignFiles: a file that is not SQLite, the older
// TypeScript controller's database and another program's database are
// refused with an error that says what to do, and left byte for byte as
// they were; an empty file and this controller's own database open.
func TestOpenRefusesForeignFiles(t *testing.T) {
	t.Parallel()
	testkit.SQLiteOnly(t, "database files")
	for _, tc := range []struct {
		name  string
		make  func(t *testing.T, path string)
		err   error
		words string
	}{
		{"NotSQLite", func(t *testing.T, path string) {
			require.NoError(t, os.WriteFile(path, []byte("this is a build log, not a database\n"), 0o600))
		}, store.ErrNotADatabase, "is not a SQLite database; it was left untouched: point --db at a new file"},
		{"ShorterThanTheHeader", func(t *testing.T, path string) { // SQLite would take it for an empty database
			require.NoError(t, os.WriteFile(path, []byte("x"), 0o600))
		}, store.ErrNotADatabase, "is not a SQLite database; it was left untouched"},
		{"TypeScriptController", func(t *testing.T, path string) {
			plainSQLite(t, path, "builds", "workers", "build_logs")
		}, store.ErrForeignDatabase, "older TypeScript controller; it was left untouched: start with a new --db path"},
		{"AnotherProgram", func(t *testing.T, path string) {
			plainSQLite(t, path, "photos")
		}, store.ErrForeignDatabase, "another program's tables"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "controller.db")
			tc.make(t, path)
			before := fileState(t, path)
			s, err := store.Open(t.Context(), path)
			require.ErrorIs(t, err, tc.err)
			require.Nil(t, s)
			require.Contains(t, err.Error(), path)
			require.Contains(t, err.Error(), tc.words)
			require.Equal(t, before, fileState(t, path), "the refused file was changed")
		})
	}

	t.Run("EmptyFileAndOwnDatabaseOpen", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "controller.db")
		require.NoError(t, os.WriteFile(path, nil, 0o600))
		s, err := store.Open(t.Context(), path)
		require.NoError(t, err)
		require.NoError(t, s.Close())
		s, err = store.Open(t.Context(), path) // again: our own database
		require.NoError(t, err)
		require.NoError(t, s.Close())
	})

	t.Run("Directory", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		_, err := store.Open(t.Context(), dir)
		require.ErrorIs(t, err, store.ErrNotADatabase)
	})
}
