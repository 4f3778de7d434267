package files

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

// enospc is what the kernel answers a write on a full volume.
var enospc = &os.PathError{Op: "write", Path: "/storage/results/.tmp", Err: syscall.ENOSPC}

// TestNoSpace: the storage volume filling up at any step of a write —
// creating the temporary, in the middle of the stream, at its fsync, at
// naming it, at the directory's fsync — is ErrNoSpace (the system's error
// kept for the log), leaves no file, temporary or final, and the next write
// after space is freed succeeds. Both kinds of temporaries are covered.
func TestNoSpace(t *testing.T) {
	t.Parallel()
	quota := &os.PathError{Op: "write", Path: "/storage/results/.tmp", Err: syscall.EDQUOT}
	cases := []struct {
		name string
		set  func(*faultFS)
	}{
		{"Create", func(f *faultFS) { f.createErr = enospc }},
		{"MidStream", func(f *faultFS) { f.writeErr, f.writeAfter = enospc, 3*ChunkSize+17 }},
		{"Quota", func(f *faultFS) { f.writeErr, f.writeAfter = quota, ChunkSize }},
		{"Fsync", func(f *faultFS) { f.syncErr = enospc }},
		{"Publish", func(f *faultFS) { f.renameErr = enospc }},
		{"DirectorySync", func(f *faultFS) { f.dirSyncErr = enospc }},
	}
	for _, named := range []bool{false, true} {
		for _, tc := range cases {
			name := tc.name
			if named {
				name += "/Named"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				fsys := &faultFS{OSFS: OSFS{NamedTemps: named}}
				f := newTestFileStore(t, fsys)
				tc.set(fsys)
				id := uuid.NewString()
				rel, _, err := f.Save(KindResult, id, ".ipa", newStream(3, 5*ChunkSize), 1<<20)
				require.ErrorIs(t, err, ErrNoSpace)
				require.True(t, errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT),
					"the system's error is kept for the log: %v", err)
				require.Empty(t, rel)
				require.Empty(t, listFiles(t, f.Root()), "a write cut off by a full disk leaves nothing")

				*fsys = faultFS{OSFS: fsys.OSFS} // space freed
				rel, _, err = f.Save(KindResult, id, ".ipa", newStream(3, 5*ChunkSize), 1<<20)
				require.NoError(t, err)
				require.Equal(t, []string{filepath.ToSlash(rel)}, listFiles(t, f.Root()))
			})
		}
	}
}

// TestNoSpaceLink: a retry's hard link refused for want of space (a new
// directory block) is ErrNoSpace and leaves only the original.
func TestNoSpaceLink(t *testing.T) {
	t.Parallel()
	fsys := &linkFaultFS{}
	f := newTestFileStore(t, fsys)
	src, _, err := f.Save(KindSource, uuid.NewString(), ".zip", newStream(4, ChunkSize), 1<<20)
	require.NoError(t, err)
	fsys.linkErr = &os.LinkError{Op: "link", Old: "a", New: "b", Err: syscall.ENOSPC}
	_, err = f.Link(src, KindSource, uuid.NewString(), ".zip")
	require.ErrorIs(t, err, ErrNoSpace)
	require.Equal(t, []string{src}, listFiles(t, f.Root()))
}

type linkFaultFS struct {
	OSFS
	linkErr error
}

func (l *linkFaultFS) Link(oldname, newname string) error {
	if l.linkErr != nil {
		return l.linkErr
	}
	return l.OSFS.Link(oldname, newname)
}
