package files

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

var procFDOnce = sync.OnceValue(func() bool {
	_, err := os.Stat("/proc/self/fd")
	return err == nil
})

// createUnnamed opens an O_TMPFILE inode in dir: a file with no directory
// entry until Publish links it.
func createUnnamed(dir, pattern string) (TempFile, error) {
	if !procFDOnce() { // linkat of an fd needs /proc (or CAP_DAC_READ_SEARCH)
		return nil, errUnnamedUnsupported
	}
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o640)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EISDIR) || errors.Is(err, unix.EINVAL) {
		return nil, errUnnamedUnsupported
	}
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	return &unnamedTemp{f: os.NewFile(uintptr(fd), filepath.Join(dir, "(unnamed)")), dir: dir, pattern: pattern}, nil
}

type unnamedTemp struct {
	f            *os.File
	dir, pattern string
}

func (t *unnamedTemp) Write(p []byte) (int, error) { return t.f.Write(p) }
func (t *unnamedTemp) Sync() error                 { return t.f.Sync() }
func (t *unnamedTemp) Close() error                { return t.f.Close() }

// Publish links the inode at path. linkat cannot replace a file, so when
// path exists (an earlier attempt's leftover) the inode is linked under a
// temporary name and renamed over it.
func (t *unnamedTemp) Publish(path string) error {
	err := t.link(path)
	if !errors.Is(err, unix.EEXIST) {
		return err
	}
	for i := 0; i < 100; i++ {
		tmp := filepath.Join(t.dir, fmt.Sprintf("%s%d", stringsTrimStar(t.pattern), randUint32()))
		if err = t.link(tmp); errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			os.Remove(tmp)
			return err
		}
		return nil
	}
	return err
}

func (t *unnamedTemp) link(path string) error {
	src := "/proc/self/fd/" + strconv.Itoa(int(t.f.Fd()))
	if err := unix.Linkat(unix.AT_FDCWD, src, unix.AT_FDCWD, path, unix.AT_SYMLINK_FOLLOW); err != nil {
		return &os.LinkError{Op: "linkat", Old: t.f.Name(), New: path, Err: err}
	}
	return nil
}

// StartWriteback asks the kernel to start writing a range of the file to
// disk now (sync_file_range, asynchronous), so that the fsync at the end of
// a large upload finds little left to flush.
func (t *unnamedTemp) StartWriteback(off, n int64) error {
	return unix.SyncFileRange(int(t.f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}

// StartWriteback is unnamedTemp's, for the named fallback.
func (t *namedTemp) StartWriteback(off, n int64) error {
	return unix.SyncFileRange(int(t.f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}

// ReadAt reads the temporary file back (the app info of a submitted zip).
func (t *unnamedTemp) ReadAt(p []byte, off int64) (int, error) { return t.f.ReadAt(p, off) }
