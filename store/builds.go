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
	result_path, result_size, result_sha256, token_hash, original_build_id`

type scanner interface{ Scan(dest ...any) error }

func scanBuild(r scanner) (domain.Build, error) {
	var (
		b                                              domain.Build
		workerID, errMsg, certs, result, sha, original sql.NullString
		started, completed, activity, resultSize       sql.NullInt64
		progress                                       sql.NullFloat64
	)
	err := r.Scan(&b.ID, &b.Platform, &b.Status, &workerID, &b.SubmittedAt, &started, &completed,
		&activity, &errMsg, &b.Attempts, &b.Cancelled, &progress, &b.SourcePath, &certs,
		&result, &resultSize, &sha, &b.TokenHash, &original)
	if err != nil {
		return domain.Build{}, err
	}
	b.WorkerID, b.ErrorMessage, b.CertsPath = ptrString(workerID), ptrString(errMsg), ptrString(certs)
	b.ResultPath, b.ResultSHA256, b.OriginalBuildID = ptrString(result), ptrString(sha), ptrString(original)
	b.StartedAt, b.CompletedAt, b.LastActivityAt = ptrInt(started), ptrInt(completed), ptrInt(activity)
	b.ResultSize = ptrInt(resultSize)
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

func queryBuilds(ctx context.Context, db *sql.DB, query string, args ...any) ([]domain.Build, error) {
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
}

// CreateBuild inserts a pending build with zero attempts and logs its
// submission; for a retry it also logs "Retried as build <id>" on the
// original. It returns ErrNotFound if the original does not exist.
func (s *Store) CreateBuild(ctx context.Context, nb NewBuild) error {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	return s.tx(ctx, "create build", func(tx *sql.Tx) error {
		msg := "Build submitted"
		if nb.OriginalBuildID != nil {
			if _, err := getBuild(ctx, tx, *nb.OriginalBuildID); err != nil {
				return err
			}
			msg = fmt.Sprintf("Build submitted (retry of %s)", *nb.OriginalBuildID)
		}
		var certs, original sql.NullString
		if nb.CertsPath != nil {
			certs = sql.NullString{String: *nb.CertsPath, Valid: true}
		}
		if nb.OriginalBuildID != nil {
			original = sql.NullString{String: *nb.OriginalBuildID, Valid: true}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO builds (id, platform, status, submitted_at, source_path,
			certs_path, token_hash, original_build_id) VALUES (?, ?, 'pending', ?, ?, ?, ?, ?)`,
			nb.ID, nb.Platform, nb.SubmittedAt, nb.SourcePath, certs, nb.TokenHash, original)
		if err != nil {
			return err
		}
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
