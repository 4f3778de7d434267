package store

import (
	"context"
	"fmt"

	"github.com/expo-free-agent/controller/store/fsync"
)

// LimitPages caps the database at n pages on the store's write connection
// (PRAGMA max_page_count), so a write that grows it fails with SQLITE_FULL
// as on a full volume; 0 takes the cap away ("space freed"). The store has
// one write connection, kept open, so the setting holds for every write.
func LimitPages(ctx context.Context, s *Store, n int64) error {
	if n == 0 {
		n = 1 << 30
	}
	_, err := s.write.ExecContext(ctx, fmt.Sprintf("PRAGMA max_page_count = %d", n))
	return err
}

// PageCount is the database's size in pages, as the write connection sees it.
func PageCount(ctx context.Context, s *Store) (int64, error) {
	var n int64
	err := s.write.QueryRowContext(ctx, "PRAGMA page_count").Scan(&n)
	return n, err
}

// FailSyncs makes every later WAL fsync fail with err, as a volume that
// cannot take the fsync's data would.
func FailSyncs(s *Store, err error) {
	s.durable = fsync.NewGroup(func() error { return err })
}
