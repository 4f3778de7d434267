package files

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

// linkFS is the real file system that records links and directory syncs in
// order, and can refuse links or fail directory syncs.
type linkFS struct {
	OSFS
	mu         sync.Mutex
	events     []string // "link <new base>", "sync <dir base>"
	linkErr    error
	dirSyncErr error
}

func (f *linkFS) record(e string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, e)
}

func (f *linkFS) Link(oldname, newname string) error {
	if f.linkErr != nil {
		return &os.LinkError{Op: "link", Old: oldname, New: newname, Err: f.linkErr}
	}
	if err := f.OSFS.Link(oldname, newname); err != nil {
		return err
	}
	f.record("link " + filepath.Base(newname))
	return nil
}

func (f *linkFS) SyncDir(name string) error {
	if f.dirSyncErr != nil {
		return f.dirSyncErr
	}
	f.record("sync " + filepath.Base(name))
	return f.OSFS.SyncDir(name)
}

func (f *linkFS) recorded() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.events...)
}

func statStored(t *testing.T, f *Store, rel string) os.FileInfo {
	t.Helper()
	st, err := os.Stat(filepath.Join(f.Root(), filepath.FromSlash(rel)))
	require.NoError(t, err)
	return st
}

func TestLink(t *testing.T) {
	t.Parallel()

	t.Run("SharesTheInode/OK", func(t *testing.T) {
		t.Parallel()
		f := newTestFileStore(t, nil)
		const size = 2<<20 + 1
		src, _, err := f.Save(KindSource, uuid.NewString(), ".zip", newStream(5, size), size)
		require.NoError(t, err)
		dstID := uuid.NewString()
		dst, err := f.Link(src, KindSource, dstID, ".zip")
		require.NoError(t, err)
		require.Equal(t, "builds/"+dstID+".zip", dst)
		require.True(t, os.SameFile(statStored(t, f, src), statStored(t, f, dst)), "a link, not a copy")
		require.ElementsMatch(t, []string{src, dst}, listFiles(t, f.Root()), "the original stays, no temporary is left")

		// Each name stands alone: removing the original keeps the link's content.
		require.NoError(t, f.Delete(src))
		fh, n, err := f.Open(dst)
		require.NoError(t, err)
		defer fh.Close()
		require.Equal(t, int64(size), n)
		requireSameStream(t, newStream(5, size), fh)
	})

	t.Run("AcrossKinds/OK", func(t *testing.T) {
		t.Parallel()
		f := newTestFileStore(t, nil)
		src, _, err := f.Save(KindCerts, uuid.NewString(), ".zip", strings.NewReader("certs"), 100)
		require.NoError(t, err)
		dstID := uuid.NewString()
		dst, err := f.Link(src, KindCerts, dstID, ".zip")
		require.NoError(t, err)
		require.Equal(t, "certs/"+dstID+".zip", dst)
		require.Equal(t, []byte("certs"), readStored(t, f, dst))
		require.True(t, os.SameFile(statStored(t, f, src), statStored(t, f, dst)))
	})

	t.Run("DirectorySyncedAfterTheLink/OK", func(t *testing.T) {
		t.Parallel()
		fsys := &linkFS{}
		f := newTestFileStore(t, fsys)
		src, _, err := f.Save(KindSource, uuid.NewString(), ".zip", strings.NewReader("zip"), 100)
		require.NoError(t, err)
		before := len(fsys.recorded())
		dstID := uuid.NewString()
		_, err = f.Link(src, KindSource, dstID, ".zip")
		require.NoError(t, err)
		require.Equal(t, []string{"link " + dstID + ".zip", "sync builds"}, fsys.recorded()[before:],
			"the new name is made durable by a sync of its directory, after the link")
	})

	t.Run("DirectorySyncFails/NothingLeft", func(t *testing.T) {
		t.Parallel()
		fsys := &linkFS{}
		f := newTestFileStore(t, fsys)
		src, _, err := f.Save(KindSource, uuid.NewString(), ".zip", strings.NewReader("zip"), 100)
		require.NoError(t, err)
		fsys.dirSyncErr = errIO
		_, err = f.Link(src, KindSource, uuid.NewString(), ".zip")
		require.ErrorIs(t, err, errIO)
		require.Equal(t, []string{src}, listFiles(t, f.Root()), "the undurable link is removed")
		require.Equal(t, []byte("zip"), readStored(t, f, src), "the original is whole")
	})

	for _, errno := range []syscall.Errno{syscall.EXDEV, syscall.EPERM, syscall.EMLINK, syscall.ENOTSUP, syscall.EEXIST} {
		t.Run("Refused/"+errno.Error()+"/FallsBackToCopy", func(t *testing.T) {
			t.Parallel()
			fsys := &linkFS{linkErr: errno}
			f := newTestFileStore(t, fsys)
			src, _, err := f.Save(KindSource, uuid.NewString(), ".zip", newStream(3, 3*ChunkSize+7), 1<<20)
			require.NoError(t, err)
			dstID := uuid.NewString()
			dst, err := f.Link(src, KindSource, dstID, ".zip")
			require.NoError(t, err)
			require.Equal(t, "builds/"+dstID+".zip", dst)
			require.False(t, os.SameFile(statStored(t, f, src), statStored(t, f, dst)), "a copy")
			fh, _, err := f.Open(dst)
			require.NoError(t, err)
			defer fh.Close()
			requireSameStream(t, newStream(3, 3*ChunkSize+7), fh)
		})
	}

	t.Run("OtherLinkError/NothingLeft", func(t *testing.T) {
		t.Parallel()
		fsys := &linkFS{}
		f := newTestFileStore(t, fsys)
		src, _, err := f.Save(KindSource, uuid.NewString(), ".zip", strings.NewReader("zip"), 100)
		require.NoError(t, err)
		fsys.linkErr = syscall.EIO
		_, err = f.Link(src, KindSource, uuid.NewString(), ".zip")
		require.ErrorIs(t, err, syscall.EIO)
		require.Equal(t, []string{src}, listFiles(t, f.Root()))
	})
}
