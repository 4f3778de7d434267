package store

import (
	"context"
	"strings"

	"github.com/expo-free-agent/controller/store/domain"
)

// AddDiagnostic stores a worker's diagnostic report. It returns
// ErrWorkerNotFound if the worker does not exist.
func (s *Store) AddDiagnostic(ctx context.Context, d domain.Diagnostic) error {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	d.Checks = strings.ToValidUTF8(d.Checks, "\uFFFD") // stored JSON is sent back: it must stay valid
	return s.tx(ctx, "add diagnostic", func(tx *Tx) error {
		if _, err := workerName(ctx, tx, d.WorkerID); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO diagnostics (id, worker_id, status, run_at, duration_ms,
			auto_fixed, checks) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			d.ID, d.WorkerID, d.Status, d.RunAt, d.DurationMS, boolInt(d.AutoFixed), d.Checks)
		return err
	})
}

// Diagnostics returns up to limit reports of a worker, newest first. It
// returns ErrWorkerNotFound if the worker does not exist.
func (s *Store) Diagnostics(ctx context.Context, workerID string, limit int) ([]domain.Diagnostic, error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	out := []domain.Diagnostic{}
	err := s.readTx(ctx, "diagnostics", func(tx *Tx) error {
		if _, err := workerName(ctx, tx, workerID); err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `SELECT id, worker_id, status, run_at, duration_ms, auto_fixed, checks
			FROM diagnostics WHERE worker_id = ? ORDER BY run_at DESC, rowid DESC LIMIT ?`, workerID, limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var d domain.Diagnostic
			if err := rows.Scan(&d.ID, &d.WorkerID, &d.Status, &d.RunAt, &d.DurationMS, &d.AutoFixed, &d.Checks); err != nil {
				return err
			}
			out = append(out, d)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
