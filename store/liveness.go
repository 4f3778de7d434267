package store

import (
	"context"
	"strconv"

	"github.com/expo-free-agent/controller/store/domain"
)

// TouchBuild records a liveness signal from the build's current assignee and
// moves an assigned build to building. It returns ErrNotFound or
// ErrNotAssignee (nothing is written then).
func (s *Store) TouchBuild(ctx context.Context, buildID, workerID string, now int64) error {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	return s.tx(ctx, "touch build", func(tx *Tx) error {
		_, err := touchAssignee(ctx, tx, buildID, workerID, now)
		return err
	})
}

// Heartbeat is TouchBuild plus an optional progress report; a changed
// progress is stored and logged as "Build progress: <N>%".
func (s *Store) Heartbeat(ctx context.Context, buildID, workerID string, progress *float64, now int64) error {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	return s.tx(ctx, "heartbeat", func(tx *Tx) error {
		b, err := touchAssignee(ctx, tx, buildID, workerID, now)
		if err != nil || progress == nil || (b.Progress != nil && *b.Progress == *progress) {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE builds SET progress = ? WHERE id = ?`, *progress, buildID); err != nil {
			return err
		}
		return appendLog(ctx, tx, buildID, now, domain.LevelInfo,
			"Build progress: "+strconv.FormatFloat(*progress, 'f', -1, 64)+"%")
	})
}

// RecordTelemetry is TouchBuild plus what a telemetry message leaves behind:
// an optional log line and an optional CPU snapshot.
func (s *Store) RecordTelemetry(ctx context.Context, buildID, workerID string, now int64, line *LogInput, snap *domain.CPUSnapshot) error {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	return s.tx(ctx, "telemetry", func(tx *Tx) error {
		if _, err := touchAssignee(ctx, tx, buildID, workerID, now); err != nil {
			return err
		}
		if line != nil {
			if err := appendLog(ctx, tx, buildID, now, line.Level, line.Message); err != nil {
				return err
			}
			if line.Stage != "" {
				if _, err := tx.ExecContext(ctx, `UPDATE builds SET stage = ? WHERE id = ?`,
					domain.Clip(line.Stage, domain.MaxStage), buildID); err != nil {
					return err
				}
			}
		}
		if snap != nil {
			_, err := tx.ExecContext(ctx, `INSERT INTO cpu_snapshots (build_id, worker_id, timestamp,
				cpu_percent, memory_mb) VALUES (?, ?, ?, ?, ?)`,
				buildID, workerID, now, snap.CPUPercent, snap.MemoryMB)
			return err
		}
		return nil
	})
}

// touchAssignee checks that workerID is the build's current assignee, then
// sets its liveness to now and moves assigned to building.
func touchAssignee(ctx context.Context, tx *Tx, buildID, workerID string, now int64) (domain.Build, error) {
	b, err := getBuild(ctx, tx, buildID)
	if err != nil {
		return domain.Build{}, err
	}
	if !b.AssignedTo(workerID) {
		return domain.Build{}, ErrNotAssignee
	}
	if b.Status == domain.StatusAssigned {
		noteStatus(ctx, ChangeOf(b)) // assigned becomes building: still running on its worker
		_, err = tx.ExecContext(ctx, `UPDATE builds SET last_activity_at = GREATEST(COALESCE(last_activity_at, 0), ?),
			status = 'building' WHERE id = ?`, now, buildID)
		return b, err
	}
	// Building already: the status is left out of the statement, so that
	// the indexes holding it and the triggers on it are not touched by every
	// log post and heartbeat.
	_, err = tx.ExecContext(ctx, `UPDATE builds SET last_activity_at = GREATEST(COALESCE(last_activity_at, 0), ?)
		WHERE id = ?`, now, buildID)
	return b, err
}
