package volume

import (
	"math"
	"os"

	"golang.org/x/sys/unix"
)

func free(dir string) (int64, error) {
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		return 0, &os.PathError{Op: "statfs", Path: dir, Err: err}
	}
	avail, bsize := uint64(fs.Bavail), uint64(fs.Bsize) //nolint:unconvert // the field types differ by architecture
	if bsize > 0 && avail > math.MaxInt64/bsize {
		return math.MaxInt64, nil
	}
	return int64(avail * bsize), nil
}
