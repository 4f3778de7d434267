// Package volume reads how much space is left on the volume (file system)
// that holds a directory: the controller's floor for new files
// (--min-free-disk) and the database's full-volume check both ask it.
package volume

import (
	"errors"
	"syscall"
)

// ErrUnsupported means free space cannot be read on this platform; callers
// treat the volume as of unknown size and never refuse because of it.
var ErrUnsupported = errors.New("volume: free space not available on this platform")

// Free returns the bytes an unprivileged writer may still use on the volume
// holding dir (statfs's f_bavail × f_bsize: the root reserve is not
// counted, since the controller does not run as root). It returns the
// statfs error as an *os.PathError, or ErrUnsupported.
func Free(dir string) (int64, error) { return free(dir) }

// IsFull reports whether err is a write refused for want of space: ENOSPC,
// or EDQUOT (the writer's quota on the volume).
func IsFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}
