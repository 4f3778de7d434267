package store

import (
	"os"
	"syscall"
)

// dataSync flushes f's data and the metadata needed to read it back (its
// size), as SQLite's own syncs do on Linux (fdatasync): unlike fsync it does
// not also commit the file's new modification time to the file system's
// journal after every write.
func dataSync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}
