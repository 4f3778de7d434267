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

	"github.com/expo-free-agent/controller/store/domain"
	"github.com/expo-free-agent/controller/store/fsync"
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
)

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
	root    string
	fs      FS
	bootID  string
	log     *slog.Logger
	dirSync map[Kind]*fsync.Group // one fsync covers every rename done before it
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

// Serve removes temporary files of interrupted writes by earlier processes,
// then waits for ctx to end.
func (f *Store) Serve(ctx context.Context) error {
	if n, err := f.RemoveStaleTemps(); err != nil {
		f.log.Warn("removing stale temporary files", "removed", n, "err", err)
	} else if n > 0 {
		f.log.Info("removed temporary files of interrupted writes", "removed", n)
	}
	<-ctx.Done()
	return ctx.Err()
}

// RemoveStaleTemps deletes temporary files written by other (earlier)
// processes and returns how many it removed.
func (f *Store) RemoveStaleTemps() (int, error) {
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
			name := e.Name()
			if !strings.HasPrefix(name, tempPrefix) || strings.HasPrefix(name, tempPrefix+f.bootID+"-") {
				continue
			}
			if err := f.fs.Remove(filepath.Join(dir, name)); err != nil {
				errs = append(errs, err)
				continue
			}
			removed++
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

// ReadAll reads a whole stored file of at most limit bytes (the certs bundle,
// which the certs-secure answer needs in memory).
func (f *Store) ReadAll(rel string, limit int64) ([]byte, error) {
	fh, size, err := f.Open(rel)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	if size > limit {
		return nil, ErrTooLarge
	}
	return io.ReadAll(io.LimitReader(fh, limit))
}
