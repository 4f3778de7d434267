package store

import (
	"fmt"
	"os"
	"sync"
)

// walFile fsyncs the database's write-ahead log. The connection runs with
// synchronous=NORMAL, so a commit writes its WAL frames without an fsync; the
// store then calls Sync through a GroupSyncer before it returns, which makes
// the commit exactly as durable as synchronous=FULL while concurrent commits
// share one fsync — an fdatasync on Linux (dataSync), as SQLite's own syncs
// there. (A sync applies to the file, whichever descriptor it is called
// on.) SQLite itself syncs the WAL before each checkpoint and the database
// after it.
type walFile struct {
	path string
	mu   sync.Mutex
	f    *os.File
}

func (w *walFile) Sync() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	// SQLite keeps the -wal file while a connection is open; if it was
	// recreated (all connections closed and reopened), follow it.
	st, err := os.Stat(w.path)
	if err != nil {
		return fmt.Errorf("stat WAL: %w", err)
	}
	if w.f != nil {
		if cur, err := w.f.Stat(); err != nil || !os.SameFile(cur, st) {
			w.f.Close()
			w.f = nil
		}
	}
	if w.f == nil {
		if w.f, err = os.OpenFile(w.path, os.O_RDWR, 0); err != nil {
			return fmt.Errorf("open WAL: %w", err)
		}
	}
	if err := dataSync(w.f); err != nil {
		return fmt.Errorf("fsync WAL: %w", err)
	}
	return nil
}

func (w *walFile) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	return err
}
