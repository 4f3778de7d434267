package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/expo-free-agent/controller/store/domain"
)

const buildColumns = `id, platform, status, worker_id, submitted_at, started_at, completed_at,
	last_activity_at, error_message, attempts, cancelled, progress, source_path, certs_path,
	result_path, result_size, result_sha256, token_hash, original_build_id, root_build_id,
	assignment, vm_ready_at, app_name, app_version, label, stage, purged_at`

type scanner interface{ Scan(dest ...any) error }

func scanBuild(r scanner) (domain.Build, error) {
	var (
		b                                              domain.Build
		workerID, errMsg, certs, result, sha, original sql.NullString
		root                                           sql.NullString
		started, completed, activity, resultSize       sql.NullInt64
		vmReady, purged                                sql.NullInt64
		appName, appVersion, label, stage              sql.NullString
		progress                                       sql.NullFloat64
	)
	err := r.Scan(&b.ID, &b.Platform, &b.Status, &workerID, &b.SubmittedAt, &started, &completed,
		&activity, &errMsg, &b.Attempts, &b.Cancelled, &progress, &b.SourcePath, &certs,
		&result, &resultSize, &sha, &b.TokenHash, &original, &root, &b.Assignment, &vmReady,
		&appName, &appVersion, &label, &stage, &purged)
	if err != nil {
		return domain.Build{}, err
	}
	b.WorkerID, b.ErrorMessage, b.CertsPath = ptrString(workerID), ptrString(errMsg), ptrString(certs)
	b.ResultPath, b.ResultSHA256, b.OriginalBuildID = ptrString(result), ptrString(sha), ptrString(original)
	b.StartedAt, b.CompletedAt, b.LastActivityAt = ptrInt(started), ptrInt(completed), ptrInt(activity)
	b.ResultSize, b.RootBuildID, b.VMReadyAt = ptrInt(resultSize), ptrString(root), ptrInt(vmReady)
	b.AppName, b.AppVersion, b.Label, b.Stage = appName.String, appVersion.String, label.String, stage.String
	b.PurgedAt = ptrInt(purged)
	if progress.Valid {
		p := progress.Float64
		b.Progress = &p
	}
	return b, nil
}

func getBuild(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, id string) (domain.Build, error) {
	b, err := scanBuild(q.QueryRowContext(ctx, `SELECT `+buildColumns+` FROM builds WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return domain.Build{}, ErrNotFound
	}
	return b, err
}

func queryBuilds(ctx context.Context, db *pool, query string, args ...any) ([]domain.Build, error) {
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []domain.Build{}
	for rows.Next() {
		b, err := scanBuild(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

// NewBuild describes a build to create.
type NewBuild struct {
	ID              string
	Platform        domain.Platform
	SubmittedAt     int64
	SourcePath      string
	CertsPath       *string
	TokenHash       []byte
	OriginalBuildID *string // set for a retry
	// RootBuildID is the first build of a retry's chain: the original's
	// root, or the original itself when it has none. Nil for a submitted
	// build; for a retry, nil means "derive it from the original".
	RootBuildID *string
	// MaxChain, when positive, bounds a retry's chain: if the chain's root
	// already has MaxChain retries, CreateBuild refuses with ErrRetryLimit.
	// The count and the insert are one transaction, so concurrent retries
	// cannot overshoot. Zero: no bound (the admin).
	MaxChain int
	// AppName, AppVersion and Label are what people recognise the build
	// by ("" when absent); a retry takes its original's.
	AppName, AppVersion, Label string
}

// CreateBuild inserts a pending build with zero attempts and logs its
// submission; for a retry it also logs "Retried as build <id>" on the
// original. It returns ErrNotFound if the original does not exist,
// ErrPurged if retention has taken the original's files (a retry that raced
// the purge: its links are then removed by the caller), and ErrRetryLimit if
// the retry's chain already holds nb.MaxChain retries.
func (s *Store) CreateBuild(ctx context.Context, nb NewBuild) error {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	return s.tx(ctx, "create build", func(tx *Tx) error {
		msg := "Build submitted"
		root := nb.RootBuildID
		if nb.OriginalBuildID != nil {
			orig, err := getBuild(ctx, tx, *nb.OriginalBuildID)
			if err != nil {
				return err
			}
			if orig.PurgedAt != nil {
				return ErrPurged
			}
			if root == nil {
				root = orig.RootBuildID
				if root == nil {
					root = &orig.ID
				}
			}
			msg = fmt.Sprintf("Build submitted (retry of %s)", *nb.OriginalBuildID)
			nb.AppName, nb.AppVersion, nb.Label = orig.AppName, orig.AppVersion, orig.Label
		}
		if root != nil && nb.MaxChain > 0 {
			n, err := countRetries(ctx, tx, *root)
			if err != nil {
				return err
			}
			if n >= nb.MaxChain {
				return ErrRetryLimit
			}
		}
		var certs, original, rootID sql.NullString
		if nb.CertsPath != nil {
			certs = sql.NullString{String: *nb.CertsPath, Valid: true}
		}
		if nb.OriginalBuildID != nil {
			original = sql.NullString{String: *nb.OriginalBuildID, Valid: true}
		}
		if root != nil {
			rootID = sql.NullString{String: *root, Valid: true}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO builds (id, platform, status, submitted_at, source_path,
			certs_path, token_hash, original_build_id, root_build_id, app_name, app_version, label)
			VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			nb.ID, nb.Platform, nb.SubmittedAt, nb.SourcePath, certs, nb.TokenHash, original, rootID,
			nullString(nb.AppName), nullString(nb.AppVersion), nullString(nb.Label))
		if err != nil {
			return err
		}
		noteStatus(ctx, BuildChange{ID: nb.ID, Kind: ChangePending, Platform: nb.Platform,
			SubmittedAt: nb.SubmittedAt, Certs: nb.CertsPath != nil}) // a new pending build
		if err := appendLog(ctx, tx, nb.ID, nb.SubmittedAt, domain.LevelInfo, msg); err != nil {
			return err
		}
		if nb.OriginalBuildID != nil {
			return appendLog(ctx, tx, *nb.OriginalBuildID, nb.SubmittedAt, domain.LevelInfo,
				"Retried as build "+nb.ID)
		}
		return nil
	})
}

// CountRetries returns how many retries the chain of the submitted build
// rootID holds (the builds whose root it is; rootID itself is not counted).
// It is one lookup of the root index.
func (s *Store) CountRetries(ctx context.Context, rootID string) (int, error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	n, err := countRetries(ctx, s.read, rootID)
	if err != nil {
		return 0, wrapCtx(ctx, "count retries", err)
	}
	return n, nil
}

func countRetries(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, rootID string) (int, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM builds WHERE root_build_id = ?`, rootID).Scan(&n)
	return n, err
}

// GetBuild returns one build, or ErrNotFound.
func (s *Store) GetBuild(ctx context.Context, id string) (domain.Build, error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	b, err := getBuild(ctx, s.read, id)
	if err != nil {
		return domain.Build{}, wrapCtx(ctx, "get build", err)
	}
	return b, nil
}

// ListBuilds returns every build, newest submission first.
func (s *Store) ListBuilds(ctx context.Context) ([]domain.Build, error) {
	return s.listBuilds(ctx, "list builds",
		`SELECT `+buildColumns+` FROM builds ORDER BY submitted_at DESC, id DESC`)
}

// RecentBuilds returns the newest limit builds, newest first.
func (s *Store) RecentBuilds(ctx context.Context, limit int) ([]domain.Build, error) {
	return s.listBuilds(ctx, "recent builds",
		`SELECT `+buildColumns+` FROM builds ORDER BY submitted_at DESC, id DESC LIMIT ?`, limit)
}

// PendingBuilds returns the pending builds in queue order (submit time, then id).
func (s *Store) PendingBuilds(ctx context.Context) ([]domain.Build, error) {
	return s.listBuilds(ctx, "pending builds",
		`SELECT `+buildColumns+` FROM builds WHERE status = 'pending' ORDER BY submitted_at, id`)
}

// FirstPending returns the first limit pending builds in queue order: what
// the dashboard shows, at a cost that does not grow with the queue.
func (s *Store) FirstPending(ctx context.Context, limit int) ([]domain.Build, error) {
	return s.listBuilds(ctx, "first pending",
		`SELECT `+buildColumns+` FROM builds WHERE status = 'pending' ORDER BY submitted_at, id LIMIT ?`, limit)
}

// RunningBuilds returns the assigned and building builds, oldest assignment first.
func (s *Store) RunningBuilds(ctx context.Context) ([]domain.Build, error) {
	return s.listBuilds(ctx, "running builds",
		`SELECT `+buildColumns+` FROM builds WHERE status IN ('assigned', 'building')
		 ORDER BY started_at, id`)
}

// ExpiredBuilds returns the running builds whose last liveness signal is
// older than cutoff (epoch ms).
func (s *Store) ExpiredBuilds(ctx context.Context, cutoff int64) ([]domain.Build, error) {
	return s.listBuilds(ctx, "expired builds",
		`SELECT `+buildColumns+` FROM builds WHERE status IN ('assigned', 'building')
		 AND COALESCE(last_activity_at, 0) < ? ORDER BY started_at, id`, cutoff)
}

func (s *Store) listBuilds(ctx context.Context, op, query string, args ...any) ([]domain.Build, error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	out, err := queryBuilds(ctx, s.read, query, args...)
	if err != nil {
		return nil, wrapCtx(ctx, op, err)
	}
	return out, nil
}

// FileReferenced reports whether build buildID refers to the stored file rel
// (its source, certs or result). It returns false for an unknown build and
// for a purged one: a purged build claims no file, so the start's orphan pass
// also removes what a crash left of a retention pass.
func (s *Store) FileReferenced(ctx context.Context, buildID, rel string) (bool, error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	var n int
	err := s.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM builds WHERE id = ? AND purged_at IS NULL
		AND (source_path = ? OR certs_path = ? OR result_path = ?)`, buildID, rel, rel, rel).Scan(&n)
	if err != nil {
		return false, wrapCtx(ctx, "file referenced", err)
	}
	return n > 0, nil
}
