package files

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
)

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
// ErrTooLarge, a full volume ErrNoSpace; any failure, including a read error
// of r (an interrupted upload), removes the temporary file. progress, if not nil, is called with the
// byte count after each chunk.
func (f *Store) Stage(kind Kind, r io.Reader, limit int64, progress func(int64)) (*Staged, error) {
	dir := filepath.Join(f.root, kind.dir())
	tmp, err := f.fs.CreateTemp(dir, tempPrefix+f.bootID+"-*")
	if err != nil {
		return nil, noSpace(fmt.Errorf("create temporary file: %w", err))
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
		return nil, noSpace(err)
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
// with concurrent commits. It returns the path relative to the root, or
// ErrNoSpace when naming the file needed space there was none of. On
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
	s.f.claim(rel) // before the name exists: the orphan pass never takes it
	if err := s.tmp.Publish(dst); err != nil {
		s.Discard()
		return "", noSpace(fmt.Errorf("publish: %w", err))
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
		return "", noSpace(fmt.Errorf("sync directory: %w", err))
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
