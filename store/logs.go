package store

import (
	"context"

	"github.com/expo-free-agent/controller/store/domain"
)

// LogInput is a log line to append; its sequence number and time are assigned
// by the store.
type LogInput struct {
	Level   domain.LogLevel
	Message string
	// Stage, when set, is also kept as the build's current stage (a VM's
	// heartbeat through telemetry; RecordTelemetry only).
	Stage string
}

func appendLog(ctx context.Context, tx *Tx, buildID string, now int64, level domain.LogLevel, message string) error {
	e := domain.LogEntry{Timestamp: now, Level: level, Message: domain.Clip(message, domain.MaxLogMessage)}
	err := tx.QueryRowContext(ctx, `INSERT INTO build_logs (build_id, seq, timestamp, level, message)
		SELECT ?, COALESCE(MAX(seq), 0) + 1, ?, ?, ? FROM build_logs WHERE build_id = ? RETURNING seq`,
		buildID, now, level, e.Message, buildID).Scan(&e.Seq)
	if err == nil {
		noteLog(ctx, buildID, e)
	}
	return err
}

// LogPageBytes bounds the message bytes one page of a log holds in memory: a
// page ends after the entry that reaches it, so any read of a log of any
// size holds at most this plus one line (domain.MaxLogMessage).
const LogPageBytes = 1 << 20

// Logs returns a build's whole log in insertion order, or ErrNotFound. It
// holds the whole log in memory: for tests and tools, never for a request.
func (s *Store) Logs(ctx context.Context, buildID string) ([]domain.LogEntry, error) {
	return s.LogsAfter(ctx, buildID, 0)
}

// LogsAfter returns the build's log entries with a sequence number above
// after, in order, or ErrNotFound. Like Logs, it is not bounded.
func (s *Store) LogsAfter(ctx context.Context, buildID string, after int64) ([]domain.LogEntry, error) {
	out, _, err := s.logPage(ctx, buildID, after, -1, -1)
	return out, err
}

// LogPage returns up to limit of the build's log entries with a sequence
// number above after, in order, ending early once their messages reach
// LogPageBytes; more reports whether entries remain after the page. Paging
// by sequence number is consistent because the log is append-only. It
// returns ErrNotFound.
func (s *Store) LogPage(ctx context.Context, buildID string, after int64, limit int) (entries []domain.LogEntry, more bool, err error) {
	return s.logPage(ctx, buildID, after, limit, LogPageBytes)
}

// logPage is LogPage with a byte budget (-1: none); limit -1 is no limit.
func (s *Store) logPage(ctx context.Context, buildID string, after int64, limit, budget int) ([]domain.LogEntry, bool, error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	out := []domain.LogEntry{}
	more := false
	err := s.readTx(ctx, "logs", func(tx *Tx) error {
		if _, err := getBuild(ctx, tx, buildID); err != nil {
			return err
		}
		var fetch any = limit + 1 // one more tells whether the page is the last
		if limit < 0 {
			fetch = noLimit(s.pg)
		}
		rows, err := tx.QueryContext(ctx, `SELECT seq, timestamp, level, message FROM build_logs
			WHERE build_id = ? AND seq > ? ORDER BY seq LIMIT ?`, buildID, after, fetch)
		if err != nil {
			return err
		}
		defer rows.Close()
		size := 0
		for rows.Next() {
			if (limit >= 0 && len(out) == limit) || (budget >= 0 && size >= budget) {
				more = true
				break
			}
			var e domain.LogEntry
			if err := rows.Scan(&e.Seq, &e.Timestamp, &e.Level, &e.Message); err != nil {
				return err
			}
			size += len(e.Message)
			out = append(out, e)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, false, err
	}
	return out, more, nil
}
