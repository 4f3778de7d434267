package files

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
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

// Staged is a fully written and fsynced temporary file waiting to be
// committed under its final name, or discarded. It holds the file open until
// then (an unnamed temporary exists only through its descriptor).
type Staged struct {
	f      *Store
	kind   Kind
	tmp    TempFile // nil once committed or discarded
	Size   int64
	SHA256 string
}

// Stage streams r into a new temporary file of the kind's directory through a
// 64 KiB buffer, hashing it, and fsyncs it. More than limit bytes gives
// ErrTooLarge; any failure, including a read error of r (an interrupted
// upload), removes the temporary file. progress, if not nil, is called with the
// byte count after each chunk.
func (f *Store) Stage(kind Kind, r io.Reader, limit int64, progress func(int64)) (*Staged, error) {
	dir := filepath.Join(f.root, kind.dir())
	tmp, err := f.fs.CreateTemp(dir, tempPrefix+f.bootID+"-*")
	if err != nil {
		return nil, fmt.Errorf("create temporary file: %w", err)
	}
	s := &Staged{f: f, kind: kind, tmp: tmp}
	h := sha256.New()
	var w io.Writer = tmp
	if wb, ok := tmp.(writebacker); ok {
		w = &earlyWriteback{w: tmp, wb: wb}
	}
	n, err := copyLimited(w, h, r, limit, progress)
	if err == nil {
		err = tmp.Sync()
	}
	if err != nil {
		s.Discard()
		return nil, err
	}
	s.Size, s.SHA256 = n, hex.EncodeToString(h.Sum(nil))
	return s, nil
}

// writebacker is a TempFile that can start writing a range to disk early.
type writebacker interface {
	StartWriteback(off, n int64) error
}

// writebackEvery is how much of a stream is written before the kernel is
// asked to start flushing it: a large upload then overlaps its network
// transfer with the disk's, instead of leaving a GiB of dirty pages for the
// final fsync.
const writebackEvery = 8 << 20

// earlyWriteback starts the writeback of each completed 8 MiB of a stream.
type earlyWriteback struct {
	w       io.Writer
	wb      writebacker
	written int64 // bytes written
	flushed int64 // bytes whose writeback was started
}

func (e *earlyWriteback) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	e.written += int64(n)
	if e.written-e.flushed >= writebackEvery {
		_ = e.wb.StartWriteback(e.flushed, e.written-e.flushed) // advisory: the fsync still guarantees it
		e.flushed = e.written
	}
	return n, err
}

// copyLimited copies r to w and h through one pooled 64 KiB buffer, filling
// it before each write: multipart parts arrive in reads of a few KiB, and one
// write syscall per 64 KiB instead of per 4 KiB halves the CPU of an upload.
func copyLimited(w io.Writer, h hash.Hash, r io.Reader, limit int64, progress func(int64)) (int64, error) {
	bp := chunkPool.Get().(*[]byte)
	defer chunkPool.Put(bp)
	buf := *bp
	var n int64
	for {
		m, rerr := io.ReadFull(r, buf)
		if rerr == io.ErrUnexpectedEOF {
			rerr = io.EOF
		}
		if m > 0 {
			n += int64(m)
			if n > limit {
				return n, ErrTooLarge
			}
			h.Write(buf[:m])
			if _, err := w.Write(buf[:m]); err != nil {
				return n, fmt.Errorf("write: %w", err)
			}
			if progress != nil {
				progress(n)
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

// Commit gives the staged file its final name kind/<id><ext> (replacing an
// earlier attempt's leftover) and syncs the directory, sharing that fsync
// with concurrent commits. It returns the path relative to the root. On
// failure nothing is left: the temporary file, or the published file if the
// directory sync failed, is removed.
func (s *Staged) Commit(id, ext string) (string, error) {
	if s.tmp == nil {
		return "", errors.New("files: staged file already committed or discarded")
	}
	rel, err := RelPath(s.kind, id, ext)
	if err != nil {
		s.Discard()
		return "", err
	}
	dst, err := s.f.abs(rel)
	if err != nil {
		s.Discard()
		return "", err
	}
	if err := s.tmp.Publish(dst); err != nil {
		s.Discard()
		return "", fmt.Errorf("publish: %w", err)
	}
	if err := s.tmp.Close(); err != nil {
		s.f.log.Warn("closing a published file", "err", err)
	}
	s.tmp = nil
	if err := s.f.dirSync[s.kind].Sync(); err != nil {
		// The new name may not survive a power loss: undo it, so that a
		// failed commit leaves nothing.
		if rerr := s.f.fs.Remove(dst); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			s.f.log.Error("removing a file whose directory could not be synced", "err", rerr)
		}
		return "", fmt.Errorf("sync directory: %w", err)
	}
	return rel, nil
}

// Discard drops the staged file. It is safe to call more than once and after
// a successful Commit (then it does nothing).
func (s *Staged) Discard() {
	if s == nil || s.tmp == nil {
		return
	}
	if err := s.tmp.Close(); err != nil {
		s.f.log.Warn("discarding a temporary file", "err", err)
	}
	s.tmp = nil
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
