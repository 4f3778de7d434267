package store

import (
	"context"
	"database/sql"
	"errors"
	"strings"

	"github.com/google/uuid"

	"github.com/expo-free-agent/controller/store/domain"
)

// The webhook outbox (docs/API.md §3.5). The transaction that changes a
// build also writes the events that announce the change, one row per
// configured receiver URL (recordEvent), so an event exists if and only if
// its change committed, whatever happens to the process afterwards. The
// webhook sender (actors/webhooks) reads the due rows, delivers them, and
// deletes each one when it is delivered or given up.
//
// The receivers are a table, written at start by SetWebhookURLs, rather than
// a setting held by the Store value: each event's transaction reads them
// itself, so the rows it writes always name the receivers configured when it
// committed, and "no receiver" writes nothing without a flag to consult.

// Event is what an outbox row announces (docs/API.md §3.5).
type Event string

// The webhook events.
const (
	EventCompleted Event = "build.completed" // a build completed successfully
	EventFailed    Event = "build.failed"    // a build failed, or was cancelled
	EventRequeued  Event = "build.requeued"  // a running build went back to pending
)

// MaxDeliveryError bounds the last error kept on an outbox row, in bytes.
const MaxDeliveryError = 1 << 10

// Delivery is one outbox row: one event for one receiver URL.
type Delivery struct {
	ID            int64  // the row
	DeliveryID    string // the event's id: the same on every URL and every attempt
	URL           string
	Event         Event
	CreatedAt     int64 // when the change committed (epoch ms)
	NextAttemptAt int64
	Attempts      int // failed attempts so far
	LastError     string
	// Build is the build as the event's transaction left it. Only the fields
	// of the status object (docs/API.md §2.4) are set: ID, Platform, Status,
	// WorkerID, SubmittedAt, StartedAt, CompletedAt and ErrorMessage.
	Build domain.Build
}

const deliveryColumns = `id, delivery_id, url, event, created_at, next_attempt_at, attempts, last_error,
	build_id, status, platform, worker_id, submitted_at, started_at, completed_at, error_message`

func scanDelivery(r scanner) (Delivery, error) {
	var (
		d                       Delivery
		lastErr, worker, errMsg sql.NullString
		started, completed      sql.NullInt64
	)
	err := r.Scan(&d.ID, &d.DeliveryID, &d.URL, &d.Event, &d.CreatedAt, &d.NextAttemptAt, &d.Attempts, &lastErr,
		&d.Build.ID, &d.Build.Status, &d.Build.Platform, &worker, &d.Build.SubmittedAt, &started, &completed, &errMsg)
	if err != nil {
		return Delivery{}, err
	}
	d.LastError = lastErr.String
	d.Build.WorkerID, d.Build.ErrorMessage = ptrString(worker), ptrString(errMsg)
	d.Build.StartedAt, d.Build.CompletedAt = ptrInt(started), ptrInt(completed)
	return d, nil
}

// recordEvent writes ev for the build into the outbox, one row per configured
// receiver, inside the caller's transaction; the snapshot is the build's row
// as the transaction has left it so far. With no receiver configured it
// writes nothing.
func recordEvent(ctx context.Context, tx *Tx, buildID string, ev Event, now int64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO outbox (delivery_id, url, event, build_id, created_at,
		next_attempt_at, status, platform, worker_id, submitted_at, started_at, completed_at, error_message)
		SELECT ?, e.url, ?, b.id, ?, ?, b.status, b.platform, b.worker_id, b.submitted_at, b.started_at,
		b.completed_at, b.error_message FROM builds b, webhook_endpoints e WHERE b.id = ?`,
		uuid.NewString(), string(ev), now, now, buildID)
	return err
}

// SetWebhookURLs makes urls the receivers of every event written from now on
// (none turns webhooks off) and drops the undelivered rows of URLs no longer
// in the list, in one transaction. It returns how many rows were dropped, or
// ErrInternal or ErrTimeout.
func (s *Store) SetWebhookURLs(ctx context.Context, urls []string) (int64, error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	var dropped int64
	err := s.tx(ctx, "set webhook urls", func(tx *Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM webhook_endpoints`); err != nil {
			return err
		}
		for _, u := range urls {
			if _, err := tx.ExecContext(ctx, `INSERT INTO webhook_endpoints (url) VALUES (?) ON CONFLICT DO NOTHING`, u); err != nil {
				return err
			}
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM outbox WHERE url NOT IN (SELECT url FROM webhook_endpoints)`)
		if err != nil {
			return err
		}
		dropped, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, err
	}
	return dropped, nil
}

// DueDeliveries returns at most limit rows whose next attempt is due at now,
// earliest first, leaving out the rows in skip (those being delivered), and
// the time of the earliest next attempt among the other rows — neither
// returned nor skipped — or 0 when there is none. It returns ErrInternal or
// ErrTimeout.
func (s *Store) DueDeliveries(ctx context.Context, now int64, limit int, skip []int64) ([]Delivery, int64, error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	var (
		due  []Delivery
		next sql.NullInt64
	)
	err := s.readTx(ctx, "due deliveries", func(tx *Tx) error {
		due = nil
		if limit > 0 {
			not, args := notIn(skip)
			rows, err := tx.QueryContext(ctx, `SELECT `+deliveryColumns+` FROM outbox
				WHERE next_attempt_at <= ?`+not+` ORDER BY next_attempt_at, id LIMIT ?`,
				append(append([]any{now}, args...), limit)...)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				d, err := scanDelivery(rows)
				if err != nil {
					return err
				}
				due = append(due, d)
			}
			if err := rows.Err(); err != nil {
				return err
			}
		}
		others := append([]int64(nil), skip...)
		for _, d := range due {
			others = append(others, d.ID)
		}
		not, args := notIn(others)
		err := tx.QueryRowContext(ctx, `SELECT next_attempt_at FROM outbox WHERE TRUE`+not+`
			ORDER BY next_attempt_at LIMIT 1`, args...).Scan(&next) // the index, from its start
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	return due, next.Int64, nil
}

// MarkDelivered deletes a delivered row; a row already gone is not an error.
// It returns ErrInternal or ErrTimeout.
func (s *Store) MarkDelivered(ctx context.Context, id int64) error {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	return s.tx(ctx, "mark delivered", func(tx *Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM outbox WHERE id = ?`, id)
		return err
	})
}

// MarkFailed counts a failed attempt of a row and schedules its next one at
// next; lastErr is kept, cut to MaxDeliveryError bytes. A row already gone is
// not an error. It returns ErrInternal or ErrTimeout.
func (s *Store) MarkFailed(ctx context.Context, id, next int64, lastErr string) error {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	return s.tx(ctx, "mark failed", func(tx *Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?,
			last_error = ? WHERE id = ?`, next, domain.Clip(lastErr, MaxDeliveryError), id)
		return err
	})
}

// GiveUpDeliveries deletes and returns at most limit rows that were tried at
// least once, whose event is older than cutoff (created_at <= cutoff) and
// whose next attempt is due at now, leaving out the rows in skip (those
// being delivered). A row is thus never given up untried, even after a long
// outage. It returns ErrInternal or ErrTimeout.
func (s *Store) GiveUpDeliveries(ctx context.Context, now, cutoff int64, skip []int64, limit int) ([]Delivery, error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	var out []Delivery
	err := s.tx(ctx, "give up deliveries", func(tx *Tx) error {
		out = nil
		not, args := notIn(skip)
		rows, err := tx.QueryContext(ctx, `SELECT `+deliveryColumns+` FROM outbox
			WHERE next_attempt_at <= ? AND created_at <= ? AND attempts > 0`+not+` ORDER BY id LIMIT ?`,
			append(append([]any{now, cutoff}, args...), limit)...)
		if err != nil {
			return err
		}
		for rows.Next() {
			d, err := scanDelivery(rows)
			if err != nil {
				rows.Close()
				return err
			}
			out = append(out, d)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, d := range out {
			if _, err := tx.ExecContext(ctx, `DELETE FROM outbox WHERE id = ?`, d.ID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// notIn returns " AND id NOT IN (?, ...)" and its arguments, or nothing for
// no ids.
func notIn(ids []int64) (string, []any) {
	if len(ids) == 0 {
		return "", nil
	}
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	return " AND id NOT IN (?" + strings.Repeat(", ?", len(ids)-1) + ")", args
}
