package files

import (
	"errors"
	"io"
	"math/rand/v2"
	"os"
)

// FS is the part of the operating system the file storage service uses. It
// exists so that tests can inject write errors, a full disk or a read-only
// directory; OSFS is the real one.
type FS interface {
	MkdirAll(path string, perm os.FileMode) error
	// CreateTemp creates a new file in dir that has no final name yet; a
	// named fallback uses pattern as os.CreateTemp does.
	CreateTemp(dir, pattern string) (TempFile, error)
	Open(name string) (File, error)
	Remove(name string) error
	ReadDir(name string) ([]os.DirEntry, error)
	SyncDir(name string) error
	// Link gives the file oldname a second name, newname (a hard link, as
	// os.Link): both names share one inode.
	Link(oldname, newname string) error
}

// TempFile is a file being written that has no final name yet. Publish gives
// it its name, atomically replacing any file there (a directory sync makes
// that durable); Close releases it, and a file never published disappears.
type TempFile interface {
	io.Writer
	Sync() error
	Publish(path string) error
	Close() error
}

// File is an open stored file.
type File interface {
	io.Reader
	io.Closer
	Stat() (os.FileInfo, error)
}

// OSFS is the real file system. On Linux its temporary files are unnamed
// (O_TMPFILE) and published with linkat: about a third of the kernel work of
// a named temporary plus rename, and a crash leaves nothing to clean up.
// Elsewhere, or where the file system refuses O_TMPFILE, they are named
// temporaries published by rename. NamedTemps forces the latter.
type OSFS struct {
	NamedTemps bool
}

// MkdirAll is os.MkdirAll.
func (OSFS) MkdirAll(path string, perm os.FileMode) error { return os.MkdirAll(path, perm) }

// CreateTemp creates an unnamed temporary where possible, else a named one.
func (o OSFS) CreateTemp(dir, pattern string) (TempFile, error) {
	if !o.NamedTemps {
		if t, err := createUnnamed(dir, pattern); !errors.Is(err, errUnnamedUnsupported) {
			return t, err
		}
	}
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return nil, err
	}
	return &namedTemp{f: f}, nil
}

// Open is os.Open.
func (OSFS) Open(name string) (File, error) { return os.Open(name) }

// Remove is os.Remove.
func (OSFS) Remove(name string) error { return os.Remove(name) }

// ReadDir is os.ReadDir.
func (OSFS) ReadDir(name string) ([]os.DirEntry, error) { return os.ReadDir(name) }

// Link is os.Link.
func (OSFS) Link(oldname, newname string) error { return os.Link(oldname, newname) }

// SyncDir fsyncs a directory, making a rename or link in it durable.
func (OSFS) SyncDir(name string) error {
	d, err := os.Open(name)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// errUnnamedUnsupported means unnamed temporaries are not available here.
var errUnnamedUnsupported = errors.New("unnamed temporary files not supported")

// namedTemp is a temporary file with a name, published by rename.
type namedTemp struct {
	f         *os.File
	published bool
}

func (t *namedTemp) Write(p []byte) (int, error) { return t.f.Write(p) }
func (t *namedTemp) Sync() error                 { return t.f.Sync() }

func (t *namedTemp) Publish(path string) error {
	if err := os.Rename(t.f.Name(), path); err != nil {
		return err
	}
	t.published = true
	return nil
}

func (t *namedTemp) Close() error {
	err := t.f.Close()
	if !t.published {
		if rerr := os.Remove(t.f.Name()); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && err == nil {
			err = rerr
		}
	}
	return err
}

// stringsTrimStar drops a trailing "*" from an os.CreateTemp pattern.
func stringsTrimStar(pattern string) string {
	if n := len(pattern); n > 0 && pattern[n-1] == '*' {
		return pattern[:n-1]
	}
	return pattern
}

func randUint32() uint32 { return rand.Uint32() }

// ReadAt reads the temporary file back (the app info of a submitted zip).
func (t *namedTemp) ReadAt(p []byte, off int64) (int, error) { return t.f.ReadAt(p, off) }
