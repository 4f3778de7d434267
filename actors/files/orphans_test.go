package files

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

// fakeCatalog refers to the files it lists.
type fakeCatalog map[string]bool

func (c fakeCatalog) FileReferenced(_ context.Context, _, rel string) (bool, error) {
	return c[rel], nil
}

// TestRemoveOrphans: at start, the files an earlier process named but never
// committed a row for are removed; referenced files, temporaries, strangers
// and every file this process writes (even before its row commits) stay.
func TestRemoveOrphans(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	save := func(s *Store, kind Kind, ext string) string {
		rel, _, err := s.Save(kind, uuid.NewString(), ext, bytes.NewReader([]byte("data")), 100)
		require.NoError(t, err)
		return rel
	}
	// The earlier process: a committed build, and files cut off by a kill -9.
	before, err := New(root, nil, log)
	require.NoError(t, err)
	kept := save(before, KindSource, ".zip")
	keptResult := save(before, KindResult, ".ipa")
	orphanSource := save(before, KindSource, ".zip")
	orphanCerts := save(before, KindCerts, ".zip")
	orphanResult := save(before, KindResult, ".apk")
	stranger := filepath.Join(root, "builds", "notes.txt")
	require.NoError(t, os.WriteFile(stranger, []byte("x"), 0o600))

	// This process: its catalog knows the committed files; it writes a new
	// file (its row not committed yet) before the pass runs.
	now, err := New(root, nil, log)
	require.NoError(t, err)
	cat := fakeCatalog{kept: true, keptResult: true}
	now.WithCatalog(cat)
	inFlight := save(now, KindSource, ".zip")
	st, err := now.Stage(KindCerts, io.LimitReader(bytes.NewReader(make([]byte, 10)), 10), 100, nil)
	require.NoError(t, err)
	defer st.Discard()

	n, err := now.RemoveOrphans(t.Context(), cat)
	require.NoError(t, err)
	require.Equal(t, 3, n)
	files := listFiles(t, root)
	for _, gone := range []string{orphanSource, orphanCerts, orphanResult} {
		require.NotContains(t, files, gone)
	}
	for _, stays := range []string{kept, keptResult, inFlight, "builds/notes.txt"} {
		require.Contains(t, files, stays)
	}

	// After the pass nothing is claimed any more (memory stays bounded).
	save(now, KindSource, ".zip")
	require.Nil(t, now.orphans.fresh)
}
