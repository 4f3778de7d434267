// Package files is the file storage service: sources, certs and results
// under one root, each written whole (temporary, fsync, atomic name) or not at
// all.
package files

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/expo-free-agent/controller/store/domain"
	"github.com/expo-free-agent/controller/store/fsync"
	"github.com/expo-free-agent/controller/store/volume"
)

// Kind is a class of stored file.
type Kind int

// The stored file kinds and the directory each lives in.
const (
	KindSource Kind = iota // builds/<id>.zip
	KindCerts              // certs/<id>.zip
	KindResult             // results/<id>.ipa or .apk
)

func (k Kind) dir() string {
	switch k {
	case KindSource:
		return "builds"
	case KindCerts:
		return "certs"
	default:
		return "results"
	}
}

// ChunkSize is the buffer every stream is copied through.
const ChunkSize = 64 << 10

var (
	// ErrTooLarge means a stream crossed its size limit; nothing was kept.
	ErrTooLarge = errors.New("files: too large")
	// ErrFileNotFound means the file does not exist.
	ErrFileNotFound = errors.New("files: not found")
	// ErrBadPath means an id or path failed validation or left the root.
	ErrBadPath = errors.New("files: invalid path")
	// ErrNoSpace means the storage volume ran out of space (ENOSPC, or the
	// writer's quota: EDQUOT) while a file was written or named; nothing was
	// kept. It wraps the system's error, which is for logs only.
	ErrNoSpace = errors.New("files: no space left on the storage volume")
)

// noSpace marks err as ErrNoSpace when it says the volume is full.
func noSpace(err error) error {
	if err == nil || errors.Is(err, ErrNoSpace) || !volume.IsFull(err) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrNoSpace, err)
}

// tempPrefix starts the name of every named temporary file (where unnamed
// ones are not available); the part after it up to the next '-' is the boot
// id of the process that wrote it.
const tempPrefix = ".tmp-"

var chunkPool = sync.Pool{New: func() any { b := make([]byte, ChunkSize); return &b }}

// Store keeps sources, certs and results under one root directory. Writes
// go to a temporary file in the target directory, are fsynced, then renamed
// and the directory fsynced, so a file is either whole or absent. Its methods
// are safe for concurrent use: files are independent and every final name is
// written by one rename. Serve removes temporary files left by earlier
// processes.
type Store struct {
	root        string
	fs          FS
	bootID      string
	log         *slog.Logger
	dirSync     map[Kind]*fsync.Group // one fsync covers every rename done before it
	catalog     Catalog               // nil: orphans are not looked for
	orphansDone bool                  // Serve's first pass finished
	orphans     orphanPass
}

// New prepares the storage root (creating it and its directories)
// and returns the service. fsys may be nil for the real file system.
func New(root string, fsys FS, log *slog.Logger) (*Store, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	if fsys == nil {
		fsys = OSFS{}
	}
	var nonce [6]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, err
	}
	f := &Store{root: filepath.Clean(abs), fs: fsys, bootID: hex.EncodeToString(nonce[:]), log: log,
		dirSync: map[Kind]*fsync.Group{}}
	for _, k := range []Kind{KindSource, KindCerts, KindResult} {
		dir := filepath.Join(f.root, k.dir())
		if err := fsys.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("create storage directory: %w", err)
		}
		f.dirSync[k] = fsync.NewGroup(func() error { return fsys.SyncDir(dir) })
	}
	return f, nil
}

// Root returns the absolute storage root.
func (f *Store) Root() string { return f.root }

// String names the service in supervisor logs.
func (f *Store) String() string { return "file-storage" }

// Serve removes what interrupted writes of earlier processes left: their
// temporary files, and (with a catalog) the files that no build refers to and
// that this process did not write. Then it waits for ctx to
// end. A failure is logged; it never stops the service.
func (f *Store) Serve(ctx context.Context) error {
	if n, err := f.RemoveStaleTemps(); err != nil {
		f.log.Warn("removing stale temporary files", "removed", n, "err", err)
	} else if n > 0 {
		f.log.Info("removed temporary files of interrupted writes", "removed", n)
	}
	if f.catalog != nil && !f.orphansDone {
		n, err := f.RemoveOrphans(ctx, f.catalog)
		if err != nil && ctx.Err() == nil {
			f.log.Warn("removing files no build refers to", "removed", n, "err", err)
		}
		// Once per process: later names are not claimed, so a second pass
		// could take a file whose row is being committed. The next start
		// finishes what this one could not.
		f.orphansDone = true
	}
	<-ctx.Done()
	return ctx.Err()
}

// RemoveStaleTemps deletes temporary files written by other (earlier)
// processes and returns how many it removed.
func (f *Store) RemoveStaleTemps() (int, error) {
	return f.sweep(func(_ Kind, dir string, e os.DirEntry) (bool, error) {
		name := e.Name()
		if !strings.HasPrefix(name, tempPrefix) || strings.HasPrefix(name, tempPrefix+f.bootID+"-") {
			return false, nil
		}
		return true, f.fs.Remove(filepath.Join(dir, name))
	})
}

// sweep calls remove for every entry of the storage directories, and returns
// how many it removed (reported true without an error) and every error.
func (f *Store) sweep(remove func(k Kind, dir string, e os.DirEntry) (bool, error)) (int, error) {
	removed := 0
	var errs []error
	for _, k := range []Kind{KindSource, KindCerts, KindResult} {
		dir := filepath.Join(f.root, k.dir())
		entries, err := f.fs.ReadDir(dir)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, e := range entries {
			gone, err := remove(k, dir, e)
			if err != nil {
				errs = append(errs, err)
			} else if gone {
				removed++
			}
		}
	}
	return removed, errors.Join(errs...)
}

// RelPath is the path, relative to the root, of a stored file. id must be a
// canonical UUID (domain.ParseID) and ext a fixed extension such as ".zip".
func RelPath(kind Kind, id, ext string) (string, error) {
	canon, ok := domain.ParseID(id)
	if !ok || canon != id {
		return "", ErrBadPath
	}
	switch ext {
	case ".zip", ".ipa", ".apk":
	default:
		return "", ErrBadPath
	}
	return kind.dir() + "/" + id + ext, nil
}

// abs resolves a relative path and checks that it stays under the root,
// separator included (so "/data/storage-evil" is not under "/data/storage").
func (f *Store) abs(rel string) (string, error) {
	if rel == "" || filepath.IsAbs(rel) || strings.Contains(rel, `\`) {
		return "", ErrBadPath
	}
	p := filepath.Join(f.root, filepath.FromSlash(rel))
	if !strings.HasPrefix(p, f.root+string(filepath.Separator)) {
		return "", ErrBadPath
	}
	return p, nil
}

// Save stages r and commits it as kind/<id><ext> in one step.
func (f *Store) Save(kind Kind, id, ext string, r io.Reader, limit int64) (string, *Staged, error) {
	s, err := f.Stage(kind, r, limit, nil)
	if err != nil {
		return "", nil, err
	}
	rel, err := s.Commit(id, ext)
	return rel, s, err
}

// Open opens a stored file by its relative path. It returns ErrBadPath for a
// path outside the root and ErrFileNotFound when the file is absent.
func (f *Store) Open(rel string) (File, int64, error) {
	p, err := f.abs(rel)
	if err != nil {
		return nil, 0, err
	}
	fh, err := f.fs.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, ErrFileNotFound
	}
	if err != nil {
		return nil, 0, err
	}
	st, err := fh.Stat()
	if err != nil {
		fh.Close()
		return nil, 0, err
	}
	if !st.Mode().IsRegular() {
		fh.Close()
		return nil, 0, ErrFileNotFound
	}
	return fh, st.Size(), nil
}

// Copy copies a stored file to kind/<id><ext> (staged, fsynced, renamed) and
// returns the new relative path. It returns ErrFileNotFound when the source is
// absent.
func (f *Store) Copy(srcRel string, kind Kind, id, ext string) (string, error) {
	src, size, err := f.Open(srcRel)
	if err != nil {
		return "", err
	}
	defer src.Close()
	rel, _, err := f.Save(kind, id, ext, src, size)
	return rel, err
}

// Link gives a stored file a second name, kind/<id><ext>, without copying a
// byte: a hard link, so both names share one inode. It is made durable as
// Commit is (the directory is synced, sharing the fsync with concurrent
// commits; if that sync fails the new name is removed again) and returns the
// new relative path. The two names are independent: removing either one
// leaves the other whole, and stored files are never written in place. Where
// the file system refuses a hard link (another device, no hard links, the
// source's link limit, or a name already there) it falls back to Copy. Its
// errors are Copy's: ErrFileNotFound when the source is absent, ErrBadPath for
// a path outside the root or an invalid id, ErrNoSpace when the volume is
// full.
func (f *Store) Link(srcRel string, kind Kind, id, ext string) (string, error) {
	src, _, err := f.Open(srcRel) // the source's checks: under the root, present, a regular file
	if err != nil {
		return "", err
	}
	src.Close()
	srcAbs, err := f.abs(srcRel)
	if err != nil {
		return "", err
	}
	rel, err := RelPath(kind, id, ext)
	if err != nil {
		return "", err
	}
	dst, err := f.abs(rel)
	if err != nil {
		return "", err
	}
	f.claim(rel)
	if err := f.fs.Link(srcAbs, dst); err != nil {
		switch {
		case linkRefused(err):
			return f.Copy(srcRel, kind, id, ext)
		case errors.Is(err, os.ErrNotExist): // the source went away after the check
			return "", ErrFileNotFound
		default:
			return "", noSpace(fmt.Errorf("link: %w", err))
		}
	}
	if err := f.dirSync[kind].Sync(); err != nil {
		// As in Commit: a name that may not survive a power loss is undone.
		if rerr := f.fs.Remove(dst); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			f.log.Error("removing a link whose directory could not be synced", "err", rerr)
		}
		return "", noSpace(fmt.Errorf("sync directory: %w", err))
	}
	return rel, nil
}

// linkRefused reports whether a hard link failed because the file system
// will not make one here, so that a copy is the way: the target is on
// another device (EXDEV), the file system has no hard links or forbids this
// one (EPERM, ENOTSUP/EOPNOTSUPP, ENOSYS), the source has too many links
// (EMLINK), or the new name exists (EEXIST: Copy replaces it, as Commit
// replaces an earlier attempt's leftover).
func linkRefused(err error) bool {
	for _, errno := range []error{syscall.EXDEV, syscall.EPERM, syscall.EMLINK, syscall.ENOTSUP,
		syscall.EOPNOTSUPP, syscall.ENOSYS, syscall.EEXIST} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}

// Size returns the size of a stored file. It returns ErrBadPath for a path
// outside the root and ErrFileNotFound when the file is absent.
func (f *Store) Size(rel string) (int64, error) {
	fh, size, err := f.Open(rel)
	if err != nil {
		return 0, err
	}
	fh.Close()
	return size, nil
}

// Delete removes a stored file; an absent file is not an error.
func (f *Store) Delete(rel string) error {
	p, err := f.abs(rel)
	if err != nil {
		return err
	}
	if err := f.fs.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// CheckWritable reports whether each storage directory exists and accepts a
// new file. The probes are temporary files that are never published.
func (f *Store) CheckWritable() error {
	for _, k := range []Kind{KindSource, KindCerts, KindResult} {
		tmp, err := f.fs.CreateTemp(filepath.Join(f.root, k.dir()), tempPrefix+f.bootID+"-probe-*")
		if err != nil {
			return err
		}
		_, werr := tmp.Write([]byte("ok"))
		if err := errors.Join(werr, tmp.Close()); err != nil {
			return err
		}
	}
	return nil
}
