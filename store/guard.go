package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/expo-free-agent/controller/store/volume"
)

// errFilesUnusable is the cause of an operation refused because the
// database files cannot be used safely; ErrInternal wraps it for callers.
var errFilesUnusable = errors.New("database files unusable")

// fileGuard checks, before every operation, that the database files can be
// used without crashing the process, and before every commit that the file
// being written is still the database the operator sees.
//
// SQLite maps the "-shm" file (the WAL index) into memory and writes to it on
// every read and write. If that file is made immutable or its file system is
// remounted read-only while the controller runs, the next write to the
// mapping raises SIGBUS inside SQLite, which kills the process: Go cannot
// recover a signal raised in C code. So the guard refuses the operation first
// (an error the caller answers; the process stays up, and recovers when the
// files are writable again). A change between the check and SQLite's write
// is still possible; the window is one operation.
//
// A database file deleted (or replaced) under a running controller keeps
// accepting commits into the unlinked inode, which vanish at the next start:
// an answered submit would be lost. So every commit first checks that the
// path still names the file that was opened.
type fileGuard struct {
	path string      // the database file
	id   os.FileInfo // the file that was opened
}

func newFileGuard(path string) (*fileGuard, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	return &fileGuard{path: path, id: fi}, nil
}

// usable reports why the files cannot be used, or nil.
func (g *fileGuard) usable() error {
	if err := writableFile(g.path + "-shm"); err != nil {
		return fmt.Errorf("%w: %v", errFilesUnusable, err)
	}
	return nil
}

// same reports an error unless the database path still names the opened file.
func (g *fileGuard) same() error {
	fi, err := os.Stat(g.path)
	if err != nil {
		return fmt.Errorf("%w: the database file is gone: %v", errFilesUnusable, err)
	}
	if !os.SameFile(fi, g.id) {
		return fmt.Errorf("%w: the database file was replaced", errFilesUnusable)
	}
	return nil
}

// freeSpace reports an error when the volume holding dir has no space left
// for an unprivileged writer. Where free space cannot be read, a full volume
// shows in the write probe instead.
func freeSpace(dir string) error {
	n, err := volume.Free(dir)
	switch {
	case errors.Is(err, volume.ErrUnsupported):
		return nil
	case err != nil:
		return err
	case n == 0:
		return fmt.Errorf("no space left on the volume of %s", dir)
	}
	return nil
}

// CheckFiles checks, without writing, that the database files can be used:
// they are not immutable or on a read-only mount, the path still names the
// opened file, and its volume has free space. It returns ErrInternal.
func (s *Store) CheckFiles() error {
	if s.guard == nil {
		return nil
	}
	err := s.guard.usable()
	if err == nil {
		err = s.guard.same()
	}
	if err == nil {
		err = freeSpace(filepath.Dir(s.guard.path))
	}
	if err != nil {
		return fmt.Errorf("%w: check files: %v", ErrInternal, err)
	}
	return nil
}

// ProbeWrite commits one write transaction and waits for it to be durable:
// the proof that the database can be written now (a full or failing disk
// fails it). Each call writes and fsyncs one WAL frame, so callers rate-limit
// it. It returns ErrInternal or ErrTimeout.
func (s *Store) ProbeWrite(ctx context.Context) error {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	return s.tx(ctx, "probe write", func(tx *Tx) error {
		if s.pg { // a new version of a row nothing else writes
			_, err := tx.ExecContext(ctx, `UPDATE schema_migrations SET applied_at = applied_at
				WHERE name = (SELECT MIN(name) FROM schema_migrations)`)
			return err
		}
		// Rewrites the header's user_version (unused otherwise): a real
		// write through the WAL.
		_, err := tx.ExecContext(ctx, `PRAGMA user_version = 0`)
		return err
	})
}
