package store

import (
	"context"
	"database/sql"

	"github.com/expo-free-agent/controller/store/domain"
)

// Facts is what the dashboard's trouble banner reads beside the counts.
type Facts struct {
	// PendingByPlatform counts the pending builds of each platform.
	PendingByPlatform map[domain.Platform]int
	// Completed and Failed count the builds that finished since the
	// given time; Failed leaves out cancelled builds.
	Completed, Failed int
	// TokenWorkers is the workers of the newer generation: those that hold
	// a worker token (the others speak with a key).
	TokenWorkers map[string]bool
}

// The facts' statements: each reads one index range.
const (
	pendingByPlatformSQL = `SELECT platform, COUNT(*) FROM builds INDEXED BY builds_by_status
		WHERE status = 'pending' GROUP BY platform`
	finishedSinceSQL = `SELECT
		(SELECT COUNT(*) FROM builds INDEXED BY builds_by_end WHERE status = 'completed' AND completed_at >= ?),
		(SELECT COUNT(*) FROM builds INDEXED BY builds_by_end WHERE status = 'failed' AND completed_at >= ? AND cancelled = 0)`
)

// DashboardFacts reads Facts in one read transaction; the builds finished
// since since are counted. Each read is bounded by what it counts — the
// queue (builds_by_status), the builds finished in the window
// (builds_by_end, migration 0009), the worker tokens — never by the history. It
// returns ErrTimeout or ErrInternal.
func (s *Store) DashboardFacts(ctx context.Context, since int64) (Facts, error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	f := Facts{PendingByPlatform: map[domain.Platform]int{}, TokenWorkers: map[string]bool{}}
	err := s.readTx(ctx, "dashboard facts", func(tx *Tx) error {
		err := eachRow(ctx, tx, pendingByPlatformSQL, func(r *sql.Rows) error {
			var (
				p domain.Platform
				n int
			)
			err := r.Scan(&p, &n)
			f.PendingByPlatform[p] = n
			return err
		})
		if err != nil {
			return err
		}
		err = tx.QueryRowContext(ctx, finishedSinceSQL,
			since, since).Scan(&f.Completed, &f.Failed)
		if err != nil {
			return err
		}
		return eachRow(ctx, tx, `SELECT DISTINCT worker_id FROM worker_tokens`, func(r *sql.Rows) error {
			var id string
			err := r.Scan(&id)
			f.TokenWorkers[id] = true
			return err
		})
	})
	return f, err
}

// eachRow runs query in tx and calls fn for each row.
func eachRow(ctx context.Context, tx *Tx, query string, fn func(*sql.Rows) error, args ...any) error {
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}
