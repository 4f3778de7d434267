package store

import (
	"context"
	"database/sql"
	"strings"
)

// PurgeItem is a build whose files retention deletes: its id, when it
// finished, and the paths of its files relative to the storage root (the
// source, and the certs and result where it has them).
type PurgeItem struct {
	ID          string
	CompletedAt int64
	Paths       []string
}

// PurgeCursor pages through purgeable builds in finish order; the zero
// value starts at the beginning.
type PurgeCursor struct {
	CompletedAt int64
	ID          string
}

// purgeable selects the finished builds that retention takes: finished before
// cutoff, not taken yet, and not the newest completed build of its platform
// (kept whatever its age, as the latest successful build is kept elsewhere).
// Pending and running builds have no completed_at, and the status check
// keeps them out even if one had. (A platform without a completed build
// has no latest: the NULL is left out, or NOT IN would match nothing.) It reads the partial index of builds still
// to take, so a batch costs its own size, not the history's.
const purgeable = `SELECT id, completed_at, source_path, certs_path, result_path FROM builds
	INDEXED BY builds_unpurged_by_finish
	WHERE purged_at IS NULL AND completed_at IS NOT NULL AND completed_at < ?
	AND status IN ('completed', 'failed') AND (completed_at, id) > (?, ?)
	AND id NOT IN (SELECT latest FROM (SELECT (SELECT k.id FROM builds AS k INDEXED BY builds_completed_by_platform
			WHERE k.status = 'completed' AND k.platform = p.platform
			ORDER BY k.completed_at DESC, k.id DESC LIMIT 1) AS latest
		FROM (SELECT 'ios' AS platform UNION ALL SELECT 'android') AS p) WHERE latest IS NOT NULL)
	ORDER BY completed_at, id LIMIT ?`

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func scanPurgeItems(ctx context.Context, q querier, query string, args ...any) ([]PurgeItem, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []PurgeItem
	for rows.Next() {
		var (
			it            PurgeItem
			src           string
			certs, result sql.NullString
		)
		if err := rows.Scan(&it.ID, &it.CompletedAt, &src, &certs, &result); err != nil {
			return nil, err
		}
		it.Paths = []string{src}
		for _, p := range []sql.NullString{certs, result} {
			if p.Valid && p.String != "" {
				it.Paths = append(it.Paths, p.String)
			}
		}
		out = append(out, it)
	}
	return out, rows.Err()
}

// PurgeableBuilds lists, without changing anything, up to limit builds whose
// files a retention pass with this cutoff (epoch ms) would take, in finish
// order after the cursor. `controller gc --dry-run` pages through it.
func (s *Store) PurgeableBuilds(ctx context.Context, cutoff int64, after PurgeCursor, limit int) ([]PurgeItem, error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	out, err := scanPurgeItems(ctx, s.read, purgeable, cutoff, after.CompletedAt, after.ID, limit)
	return out, wrapCtx(ctx, "purgeable builds", err)
}

// MarkPurged takes up to limit purgeable builds (see PurgeableBuilds) in one
// short transaction: it sets their purged_at to now, after which their rows
// claim no file, and returns them so that their files can be deleted. It
// returns no builds when none is left.
func (s *Store) MarkPurged(ctx context.Context, cutoff, now int64, limit int) ([]PurgeItem, error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	var out []PurgeItem
	err := s.tx(ctx, "mark purged", func(tx *sql.Tx) error {
		items, err := scanPurgeItems(ctx, tx, purgeable, cutoff, -1, "", limit)
		if err != nil || len(items) == 0 {
			return err
		}
		if err := setPurgeColumn(ctx, tx, "purged_at", now, items, "purged_at IS NULL"); err != nil {
			return err
		}
		out = items
		return nil
	})
	return out, err
}

// setPurgeColumn sets column to now on the rows of items still matching cond,
// in one statement.
func setPurgeColumn(ctx context.Context, tx *sql.Tx, column string, now int64, items []PurgeItem, cond string) error {
	args := make([]any, 0, len(items)+1)
	args = append(args, now)
	for _, it := range items {
		args = append(args, it.ID)
	}
	marks := strings.TrimSuffix(strings.Repeat("?,", len(items)), ",")
	_, err := tx.ExecContext(ctx, `UPDATE builds SET `+column+` = ? WHERE id IN (`+marks+`) AND `+cond, args...)
	return err
}

// PurgingBuilds returns up to limit builds that were taken (purged_at set)
// but whose files are not known to be deleted: a pass that stopped between
// the two steps left them. Their files are deleted again, then
// MarkFilesRemoved.
func (s *Store) PurgingBuilds(ctx context.Context, limit int) ([]PurgeItem, error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	out, err := scanPurgeItems(ctx, s.read, `SELECT id, completed_at, source_path, certs_path, result_path
		FROM builds INDEXED BY builds_purging WHERE purged_at IS NOT NULL AND files_removed_at IS NULL
		ORDER BY purged_at, id LIMIT ?`, limit)
	return out, wrapCtx(ctx, "purging builds", err)
}

// MarkFilesRemoved records, in one transaction, that the files of items are
// deleted. Items that are not taken, or already recorded, are left as they
// are.
func (s *Store) MarkFilesRemoved(ctx context.Context, items []PurgeItem, now int64) error {
	if len(items) == 0 {
		return nil
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	return s.tx(ctx, "mark files removed", func(tx *sql.Tx) error {
		return setPurgeColumn(ctx, tx, "files_removed_at", now, items,
			"purged_at IS NOT NULL AND files_removed_at IS NULL")
	})
}

// The records retention prunes by age: CPU snapshots older than the cutoff,
// except those of running builds; diagnostic reports older than the cutoff,
// except each worker's latest (GET /api/diagnostics/:worker_id/latest keeps
// an answer for a worker that stopped reporting).
const (
	prunableSnapshots = `SELECT id FROM cpu_snapshots INDEXED BY cpu_snapshots_by_time WHERE timestamp < ?
		AND build_id NOT IN (SELECT id FROM builds WHERE status IN ('assigned', 'building'))`
	prunableDiagnostics = `SELECT d.rowid FROM diagnostics AS d INDEXED BY diagnostics_by_run_at WHERE d.run_at < ?
		AND EXISTS (SELECT 1 FROM diagnostics AS n WHERE n.worker_id = d.worker_id
			AND (n.run_at > d.run_at OR (n.run_at = d.run_at AND n.rowid > d.rowid)))`
)

// PruneCPUSnapshots deletes up to limit CPU snapshots older than cutoff
// (epoch ms), none of a running build, in one transaction, and returns how
// many it deleted.
func (s *Store) PruneCPUSnapshots(ctx context.Context, cutoff int64, limit int) (int64, error) {
	return s.prune(ctx, "prune cpu snapshots",
		`DELETE FROM cpu_snapshots WHERE id IN (`+prunableSnapshots+` ORDER BY timestamp LIMIT ?)`, cutoff, limit)
}

// PruneDiagnostics deletes up to limit diagnostic reports older than cutoff
// (epoch ms), never a worker's latest, in one transaction, and returns how
// many it deleted.
func (s *Store) PruneDiagnostics(ctx context.Context, cutoff int64, limit int) (int64, error) {
	return s.prune(ctx, "prune diagnostics",
		`DELETE FROM diagnostics WHERE rowid IN (`+prunableDiagnostics+` ORDER BY d.run_at LIMIT ?)`, cutoff, limit)
}

func (s *Store) prune(ctx context.Context, op, query string, cutoff int64, limit int) (int64, error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	var n int64
	err := s.tx(ctx, op, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, query, cutoff, limit)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, err
}

// Prunable counts, without changing anything, the CPU snapshots and
// diagnostic reports that pruning with this cutoff would delete.
func (s *Store) Prunable(ctx context.Context, cutoff int64) (snapshots, diagnostics int64, err error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	err = s.readTx(ctx, "prunable", func(tx *sql.Tx) error {
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM (`+prunableSnapshots+`)`, cutoff).Scan(&snapshots); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM (`+prunableDiagnostics+`)`, cutoff).Scan(&diagnostics)
	})
	return snapshots, diagnostics, err
}
