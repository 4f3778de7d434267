package store

import (
	"context"
	"database/sql"
	"errors"
	"strings"

	"github.com/expo-free-agent/controller/store/domain"
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

// RetentionScope is what one retention pass works from, read once at its
// start (RetentionScopeAt), so that no batch transaction has to find it.
type RetentionScope struct {
	// Cutoff (epoch ms): builds finished before it lose their files, and
	// diagnostic reports made before it go.
	Cutoff int64
	// Keep are the newest completed build of each platform, kept whatever
	// their age. A build that completes during the pass is newer than the
	// cutoff anyway, and a kept build can only stop being the newest, so
	// the set read at the start stays right for the whole pass.
	Keep []string
	// SnapshotsBelow: CPU snapshots with a smaller id — those stored before
	// the first one taken at or after the cutoff — go, except those of
	// running builds. Snapshots are stored with the server's time, so their
	// ids follow their times (a clock stepped back only delays a few).
	SnapshotsBelow int64
}

// RetentionScopeAt reads the scope of a pass with this cutoff (epoch ms):
// the newest completed build of each platform, and the first CPU snapshot
// not older than the cutoff. Both are reads that never block a writer; each
// walks an index from its end and stops at the first match.
func (s *Store) RetentionScopeAt(ctx context.Context, cutoff int64) (RetentionScope, error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	scope := RetentionScope{Cutoff: cutoff}
	err := s.readTx(ctx, "retention scope", func(tx *Tx) error {
		for _, p := range []domain.Platform{domain.PlatformIOS, domain.PlatformAndroid} {
			var id string
			err := tx.QueryRowContext(ctx, `SELECT id FROM builds INDEXED BY builds_by_end
				WHERE status = 'completed' AND completed_at IS NOT NULL AND platform = ?
				ORDER BY completed_at DESC, id DESC LIMIT 1`, p).Scan(&id)
			switch {
			case errors.Is(err, sql.ErrNoRows):
			case err != nil:
				return err
			default:
				scope.Keep = append(scope.Keep, id)
			}
		}
		return tx.QueryRowContext(ctx, `SELECT COALESCE(
			(SELECT MIN(id) FROM cpu_snapshots WHERE timestamp >= ?),
			(SELECT COALESCE(MAX(id), 0) + 1 FROM cpu_snapshots))`, cutoff).Scan(&scope.SnapshotsBelow)
	})
	return scope, err
}

// purgeable selects the finished builds that retention takes: finished before
// the cutoff, not taken yet, and not kept. Pending and running builds have no
// completed_at, and the status check keeps them out even if one had. It
// reads the partial index of builds that still have files, so a batch costs
// its own size, not the history's.
func purgeable(keep int) string {
	return `SELECT id, completed_at, source_path, certs_path, result_path FROM builds
	INDEXED BY builds_files_kept
	WHERE files_removed_at IS NULL AND completed_at IS NOT NULL AND purged_at IS NULL
	AND completed_at < ? AND (completed_at, id) > (?, ?) AND status IN ('completed', 'failed')
	AND id NOT IN (SELECT NULL WHERE FALSE` + strings.Repeat(` UNION ALL SELECT ?`, keep) + `)
	ORDER BY completed_at, id LIMIT ?`
}

func purgeableArgs(scope RetentionScope, after PurgeCursor, limit int) []any {
	args := []any{scope.Cutoff, after.CompletedAt, after.ID}
	for _, id := range scope.Keep {
		args = append(args, id)
	}
	return append(args, limit)
}

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
// files a retention pass with this scope would take, in finish order after
// the cursor. `controller gc --dry-run` pages through it.
func (s *Store) PurgeableBuilds(ctx context.Context, scope RetentionScope, after PurgeCursor, limit int) ([]PurgeItem, error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	out, err := scanPurgeItems(ctx, s.read, purgeable(len(scope.Keep)), purgeableArgs(scope, after, limit)...)
	return out, wrapCtx(ctx, "purgeable builds", err)
}

// MarkPurged takes up to limit purgeable builds (see PurgeableBuilds) in one
// short transaction: it sets their purged_at to now, after which their rows
// claim no file, and returns them so that their files can be deleted. The
// commit is durable before it returns (the files go after it). It returns no
// builds when none is left.
func (s *Store) MarkPurged(ctx context.Context, scope RetentionScope, now int64, limit int) ([]PurgeItem, error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	var out []PurgeItem
	err := s.tx(ctx, "mark purged", func(tx *Tx) error {
		items, err := scanPurgeItems(ctx, tx, purgeable(len(scope.Keep)), purgeableArgs(scope, PurgeCursor{CompletedAt: -1}, limit)...)
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
func setPurgeColumn(ctx context.Context, tx *Tx, column string, now int64, items []PurgeItem, cond string) error {
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
		FROM builds INDEXED BY builds_files_kept
		WHERE files_removed_at IS NULL AND completed_at IS NOT NULL AND purged_at IS NOT NULL
		ORDER BY purged_at, completed_at, id LIMIT ?`, limit)
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
	return s.tx(ctx, "mark files removed", func(tx *Tx) error {
		return setPurgeColumn(ctx, tx, "files_removed_at", now, items,
			"purged_at IS NOT NULL AND files_removed_at IS NULL")
	})
}

// The records retention prunes by age: CPU snapshots below the scope's
// bound, in the order they were stored, except those of running builds;
// diagnostic reports older than the cutoff, except each worker's latest (GET
// /api/diagnostics/:worker_id/latest keeps an answer for a worker that
// stopped reporting).
const (
	prunableSnapshots = `SELECT id FROM cpu_snapshots WHERE id < ?
		AND build_id NOT IN (SELECT id FROM builds WHERE status IN ('assigned', 'building'))`
	prunableDiagnostics = `SELECT d.rowid FROM diagnostics AS d INDEXED BY diagnostics_by_run_at WHERE d.run_at < ?
		AND EXISTS (SELECT 1 FROM diagnostics AS n WHERE n.worker_id = d.worker_id
			AND (n.run_at > d.run_at OR (n.run_at = d.run_at AND n.rowid > d.rowid)))`
)

// PruneCPUSnapshots deletes up to limit CPU snapshots below the scope's
// bound, none of a running build, in one transaction, and returns how many
// it deleted.
func (s *Store) PruneCPUSnapshots(ctx context.Context, scope RetentionScope, limit int) (int64, error) {
	return s.prune(ctx, "prune cpu snapshots",
		`DELETE FROM cpu_snapshots WHERE id IN (`+prunableSnapshots+` ORDER BY id LIMIT ?)`, scope.SnapshotsBelow, limit)
}

// PruneDiagnostics deletes up to limit diagnostic reports older than the
// scope's cutoff, never a worker's latest, in one transaction, and returns
// how many it deleted.
func (s *Store) PruneDiagnostics(ctx context.Context, scope RetentionScope, limit int) (int64, error) {
	return s.prune(ctx, "prune diagnostics",
		`DELETE FROM diagnostics WHERE rowid IN (`+prunableDiagnostics+` ORDER BY d.run_at LIMIT ?)`, scope.Cutoff, limit)
}

func (s *Store) prune(ctx context.Context, op, query string, bound int64, limit int) (int64, error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	var n int64
	err := s.tx(ctx, op, func(tx *Tx) error {
		res, err := tx.ExecContext(ctx, query, bound, limit)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, err
}

// Prunable counts, without changing anything, the CPU snapshots and
// diagnostic reports that pruning with this scope would delete.
func (s *Store) Prunable(ctx context.Context, scope RetentionScope) (snapshots, diagnostics int64, err error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	err = s.readTx(ctx, "prunable", func(tx *Tx) error {
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM (`+prunableSnapshots+`) AS p`,
			scope.SnapshotsBelow).Scan(&snapshots); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM (`+prunableDiagnostics+`) AS p`, scope.Cutoff).Scan(&diagnostics)
	})
	return snapshots, diagnostics, err
}
