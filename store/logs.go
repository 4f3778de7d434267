package store

import (
	"context"
	"database/sql"

	"github.com/expo-free-agent/controller/store/domain"
)

// LogInput is a log line to append; its sequence number and time are assigned
// by the store.
type LogInput struct {
	Level   domain.LogLevel
	Message string
}

func appendLog(ctx context.Context, tx *sql.Tx, buildID string, now int64, level domain.LogLevel, message string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO build_logs (build_id, seq, timestamp, level, message)
		SELECT ?, COALESCE(MAX(seq), 0) + 1, ?, ?, ? FROM build_logs WHERE build_id = ?`,
		buildID, now, level, message, buildID)
	return err
}

// AppendLogs appends lines to a build's log, in order, each with the next
// sequence number and the time now. When workerID is not empty the lines come
// from a worker: it must be the current assignee (else ErrNotAssignee and
// nothing is written), and the build's liveness is refreshed (assigned becomes
// building). It returns the number stored, or ErrNotFound.
func (s *Store) AppendLogs(ctx context.Context, buildID, workerID string, lines []LogInput, now int64) (int, error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	err := s.tx(ctx, "append logs", func(tx *sql.Tx) error {
		if workerID != "" {
			if _, err := touchAssignee(ctx, tx, buildID, workerID, now); err != nil {
				return err
			}
		} else if _, err := getBuild(ctx, tx, buildID); err != nil {
			return err
		}
		if len(lines) == 0 {
			return nil
		}
		var seq int64
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM build_logs WHERE build_id = ?`,
			buildID).Scan(&seq); err != nil {
			return err
		}
		stmt, err := tx.PrepareContext(ctx, `INSERT INTO build_logs (build_id, seq, timestamp, level, message)
			VALUES (?, ?, ?, ?, ?)`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, l := range lines {
			seq++
			if _, err := stmt.ExecContext(ctx, buildID, seq, now, l.Level, l.Message); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return len(lines), nil
}

// Logs returns a build's whole log in insertion order, or ErrNotFound.
func (s *Store) Logs(ctx context.Context, buildID string) ([]domain.LogEntry, error) {
	return s.LogsAfter(ctx, buildID, 0)
}

// LogsAfter returns the build's log entries with a sequence number above
// after, in order, or ErrNotFound.
func (s *Store) LogsAfter(ctx context.Context, buildID string, after int64) ([]domain.LogEntry, error) {
	return s.LogPage(ctx, buildID, after, -1)
}

// LogPage returns at most limit (-1: no limit) of the build's log entries
// with a sequence number above after, in order, or ErrNotFound. Paging by
// sequence number is consistent because the log is append-only.
func (s *Store) LogPage(ctx context.Context, buildID string, after int64, limit int) ([]domain.LogEntry, error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	out := []domain.LogEntry{}
	err := s.readTx(ctx, "logs", func(tx *sql.Tx) error {
		if _, err := getBuild(ctx, tx, buildID); err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `SELECT seq, timestamp, level, message FROM build_logs
			WHERE build_id = ? AND seq > ? ORDER BY seq LIMIT ?`, buildID, after, limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var e domain.LogEntry
			if err := rows.Scan(&e.Seq, &e.Timestamp, &e.Level, &e.Message); err != nil {
				return err
			}
			out = append(out, e)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
