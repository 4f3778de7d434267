package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestState(t *testing.T) {
	t.Parallel()

	t.Run("RoundTrip", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "nested", "dir", "state.json")
		want := state{WorkerID: "0b7f6f0e-8c1a-4f55-9d7e-6f1f3b2a1c00", Name: "w", Controller: "http://c:3000"}
		require.NoError(t, saveState(path, want))

		got, err := loadState(path)
		require.NoError(t, err)
		require.Equal(t, want, got)

		fi, err := os.Stat(path)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
		di, err := os.Stat(filepath.Dir(path))
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o700), di.Mode().Perm())

		// Overwriting leaves exactly one file behind (no temporaries).
		want.WorkerID = "11111111-2222-4333-8444-555555555555"
		require.NoError(t, saveState(path, want))
		got, err = loadState(path)
		require.NoError(t, err)
		require.Equal(t, want, got)
		entries, err := os.ReadDir(filepath.Dir(path))
		require.NoError(t, err)
		require.Len(t, entries, 1)
	})

	t.Run("Missing", func(t *testing.T) {
		t.Parallel()
		got, err := loadState(filepath.Join(t.TempDir(), "absent.json"))
		require.NoError(t, err)
		require.Zero(t, got)
	})

	t.Run("Disabled", func(t *testing.T) {
		t.Parallel()
		require.NoError(t, saveState("", state{WorkerID: "x"}))
		got, err := loadState("")
		require.NoError(t, err)
		require.Zero(t, got)
	})

	t.Run("Corrupt", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "state.json")
		require.NoError(t, os.WriteFile(path, []byte("{not json"), 0o600))
		_, err := loadState(path)
		require.Error(t, err)
	})
}
