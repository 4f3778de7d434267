package store

import (
	"context"
	"database/sql"
	"errors"
	"strings"

	"github.com/expo-free-agent/controller/store/domain"
	"github.com/google/uuid"
)

const workerColumns = `id, name, capabilities, status, registered_at, last_seen_at, builds_completed, builds_failed`

func scanWorker(r scanner) (domain.Worker, error) {
	var w domain.Worker
	err := r.Scan(&w.ID, &w.Name, &w.Capabilities, &w.Status, &w.RegisteredAt, &w.LastSeenAt,
		&w.BuildsCompleted, &w.BuildsFailed)
	return w, err
}

func workerName(ctx context.Context, tx *Tx, id string) (string, error) {
	var name string
	err := tx.QueryRowContext(ctx, `SELECT name FROM workers WHERE id = ?`, id).Scan(&name)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrWorkerNotFound
	}
	return name, err
}

// Registration is a worker's register request.
type Registration struct {
	ID           string // optional; a known id re-registers that worker
	Name         string
	Capabilities string // JSON object
	Now          int64
	// Token is the worker token minted for this registration: it replaces
	// every earlier token of the worker.
	Token TokenGrant
}

// TokenGrant is a token to store: its digest and when it expires (epoch ms).
type TokenGrant struct {
	Digest    []byte
	ExpiresAt int64
}

// RegisterWorker re-registers the worker named by r.ID if it exists (keeping
// id, counters and first-registration time; replacing name and capabilities;
// building if it holds a running build, else idle), and otherwise creates a
// new idle worker with a fresh id. Either way r.Token (if set) becomes the
// worker's only token. It reports whether a worker was created.
func (s *Store) RegisterWorker(ctx context.Context, r Registration) (domain.Worker, bool, error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	var (
		w       domain.Worker
		created bool
	)
	r.Name = domain.Clip(r.Name, domain.MaxWorkerName)
	r.Capabilities = strings.ToValidUTF8(r.Capabilities, "\uFFFD")
	err := s.tx(ctx, "register worker", func(tx *Tx) error {
		if r.ID != "" {
			res, err := tx.ExecContext(ctx, `UPDATE workers SET name = ?, capabilities = ?,
				last_seen_at = GREATEST(last_seen_at, ?),
				status = CASE WHEN EXISTS (SELECT 1 FROM builds WHERE worker_id = workers.id
					AND status IN ('assigned', 'building')) THEN 'building' ELSE 'idle' END
				WHERE id = ?`, r.Name, r.Capabilities, r.Now, r.ID)
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil {
				return err
			} else if n == 1 {
				if w, err = scanWorker(tx.QueryRowContext(ctx, `SELECT `+workerColumns+` FROM workers WHERE id = ?`, r.ID)); err != nil {
					return err
				}
				return grantWorkerToken(ctx, tx, w.ID, r.Token)
			}
		}
		created = true
		w = domain.Worker{ID: uuid.NewString(), Name: r.Name, Capabilities: r.Capabilities, Status: domain.WorkerIdle,
			RegisteredAt: r.Now, LastSeenAt: r.Now}
		if _, err := tx.ExecContext(ctx, `INSERT INTO workers (id, name, capabilities, status, registered_at,
			last_seen_at) VALUES (?, ?, ?, 'idle', ?, ?)`, w.ID, w.Name, w.Capabilities, r.Now, r.Now); err != nil {
			return err
		}
		return grantWorkerToken(ctx, tx, w.ID, r.Token)
	})
	if err != nil {
		return domain.Worker{}, false, err
	}
	return w, created, nil
}

// GetWorker returns one worker, or ErrWorkerNotFound.
func (s *Store) GetWorker(ctx context.Context, id string) (domain.Worker, error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	w, err := scanWorker(s.read.QueryRowContext(ctx, `SELECT `+workerColumns+` FROM workers WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return domain.Worker{}, ErrWorkerNotFound
	}
	if err != nil {
		return domain.Worker{}, wrapCtx(ctx, "get worker", err)
	}
	return w, nil
}

// ListWorkers returns every worker, by name then id.
func (s *Store) ListWorkers(ctx context.Context) ([]domain.Worker, error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	rows, err := s.read.QueryContext(ctx, `SELECT `+workerColumns+` FROM workers ORDER BY name, id`)
	if err != nil {
		return nil, wrapCtx(ctx, "list workers", err)
	}
	defer rows.Close()
	out := []domain.Worker{}
	for rows.Next() {
		w, err := scanWorker(rows)
		if err != nil {
			return nil, wrapCtx(ctx, "list workers", err)
		}
		out = append(out, w)
	}
	if err := rows.Err(); err != nil {
		return nil, wrapCtx(ctx, "list workers", err)
	}
	return out, nil
}

// SetWorkerStatus sets a worker's status and raises its last-seen time to at
// least seenAt. It returns ErrWorkerNotFound.
func (s *Store) SetWorkerStatus(ctx context.Context, id string, status domain.WorkerStatus, seenAt int64) error {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	return s.tx(ctx, "set worker status", func(tx *Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE workers SET status = ?, last_seen_at = GREATEST(last_seen_at, ?)
			WHERE id = ?`, status, seenAt, id)
		if err != nil {
			return err
		}
		return oneRow(res, ErrWorkerNotFound)
	})
}

// SaveLastSeen raises the last-seen time of each worker in seen (id → epoch
// ms) in one transaction. Unknown ids are ignored.
func (s *Store) SaveLastSeen(ctx context.Context, seen map[string]int64) error {
	if len(seen) == 0 {
		return nil
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	return s.tx(ctx, "save last seen", func(tx *Tx) error {
		stmt, err := tx.PrepareContext(ctx, `UPDATE workers SET last_seen_at = GREATEST(last_seen_at, ?) WHERE id = ?`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for id, at := range seen {
			if _, err := stmt.ExecContext(ctx, at, id); err != nil {
				return err
			}
		}
		return nil
	})
}
