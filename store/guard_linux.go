package store

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// stReadOnly is ST_RDONLY of statfs(2): the file system is mounted read-only.
const stReadOnly = 0x1

// writableFile reports whether the file at path, if it exists, may be
// written: not immutable or append-only, not on a read-only mount.
func writableFile(path string) error {
	var stx unix.Statx_t
	err := unix.Statx(unix.AT_FDCWD, path, 0, unix.STATX_BASIC_STATS, &stx)
	if errors.Is(err, unix.ENOENT) {
		return nil // created when needed
	}
	if err != nil {
		return &os.PathError{Op: "statx", Path: path, Err: err}
	}
	if stx.Attributes_mask&stx.Attributes&(unix.STATX_ATTR_IMMUTABLE|unix.STATX_ATTR_APPEND) != 0 {
		return fmt.Errorf("%s is immutable or append-only", path)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		return &os.PathError{Op: "statfs", Path: path, Err: err}
	}
	if fs.Flags&stReadOnly != 0 {
		return fmt.Errorf("%s is on a read-only file system", path)
	}
	return nil
}
