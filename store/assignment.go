package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/expo-free-agent/controller/store/domain"
)

// AssignBuild hands a pending build to an idle worker in one transaction: the
// build becomes assigned (worker, start and liveness = now), the worker
// building, and "Assigned to worker <name>" is logged. It returns ErrNotFound,
// ErrWorkerNotFound, ErrConflict when the build is not pending or the worker
// already holds a build, or (PostgreSQL) ErrLocked when another node's
// transaction is assigning the build right now.
func (s *Store) AssignBuild(ctx context.Context, buildID, workerID string, now int64) error {
	return s.assign(ctx, buildID, workerID, now, nil)
}

// AssignBuildWithOTP is AssignBuild that also stores otp, the one-time
// password of the new assignment's first delivery (docs/API.md §4.13), in
// the same transaction: a job then costs one durable write, not two.
func (s *Store) AssignBuildWithOTP(ctx context.Context, buildID, workerID string, now int64, otp TokenGrant) error {
	return s.assign(ctx, buildID, workerID, now, &otp)
}

func (s *Store) assign(ctx context.Context, buildID, workerID string, now int64, otp *TokenGrant) error {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	return s.tx(ctx, "assign build", func(tx *Tx) error {
		if tx.postgres() {
			// Another node assigning this build holds its row: refuse it at
			// once (ErrLocked; the caller tries its next build) rather than
			// wait for that transaction. The build's row first, then the
			// worker's, as AssignNext locks them.
			locked, err := lockPending(ctx, tx, buildID)
			if err != nil {
				return err
			}
			if !locked {
				b, err := getBuild(ctx, tx, buildID)
				if err != nil {
					return err // ErrNotFound
				}
				if b.Status == domain.StatusPending {
					return ErrLocked
				}
				return ErrConflict
			}
		}
		name, err := idleWorker(ctx, tx, workerID)
		if err != nil {
			return err
		}
		_, err = assignTx(ctx, tx, buildID, workerID, name, now, otp)
		return err
	})
}

// AssignNext hands an idle worker a pending build in one transaction as
// AssignBuild does, with otp when not nil: prefer when that is a pending
// build no other transaction holds (the caller's pick, found by its primary
// key), else the oldest pending build (submit time, then id) of one of the
// worker's platforms (nil: any) that no other transaction is assigning.
// It returns what the build became, or ok false when no build qualifies
// (then nothing was written and the worker was not looked at); it returns
// ErrWorkerNotFound, or ErrConflict when the worker already holds a build.
// This is how several nodes assign (PostgreSQL): the database picks the
// build, skipping rows another node's transaction holds (FOR UPDATE SKIP
// LOCKED), so nodes neither wait for nor collide on each other's
// assignments, whatever their memory knows yet. On PostgreSQL it runs READ
// COMMITTED, as queues on PostgreSQL do: under SERIALIZABLE the scan of
// pending rows makes concurrent assignments abort each other. It decides
// only on rows it holds locked — the build's, then the worker's
// (idleWorker: one assignment per worker at a time) — and every other
// transaction that changes those rows writes them, so it waits for the
// lock or is refused it.
func (s *Store) AssignNext(ctx context.Context, workerID, prefer string, platforms []domain.Platform, now int64, otp *TokenGrant) (BuildChange, bool, error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	var change BuildChange
	err := s.txAt(ctx, "assign next build", sql.LevelReadCommitted, func(tx *Tx) error {
		id, err := nextPending(ctx, tx, prefer, platforms)
		if err != nil {
			return err
		}
		name, err := idleWorker(ctx, tx, workerID)
		if err != nil {
			return err
		}
		change, err = assignTx(ctx, tx, id, workerID, name, now, otp)
		return err
	})
	if errors.Is(err, errNoBuild) {
		return BuildChange{}, false, nil
	}
	if err != nil {
		return BuildChange{}, false, err
	}
	return change, true, nil
}

// errNoBuild ends AssignNext's transaction when no build qualifies: rolled
// back, it costs no commit and no flush.
var errNoBuild = fmt.Errorf("%w: no pending build qualifies", ErrNotFound)

// nextPending locks and returns prefer if it is pending and no other
// transaction holds it, else the oldest pending build of one of the
// platforms (nil: any) that no other transaction holds, or errNoBuild.
// The preferred build costs a primary-key lookup; the scan walks the
// pending builds' index, past the entries of builds that were pending
// until the index is vacuumed.
func nextPending(ctx context.Context, tx *Tx, prefer string, platforms []domain.Platform) (string, error) {
	if prefer != "" {
		if locked, err := lockPending(ctx, tx, prefer); err != nil || locked {
			return prefer, err
		}
	}
	q := `SELECT id FROM builds WHERE status = 'pending'`
	args := []any{}
	if platforms != nil {
		if len(platforms) == 0 {
			return "", errNoBuild
		}
		q += ` AND platform IN (?` + strings.Repeat(`, ?`, len(platforms)-1) + `)`
		for _, p := range platforms {
			args = append(args, p)
		}
	}
	q += ` ORDER BY submitted_at, id LIMIT 1` + skipLocked(tx)
	var id string
	err := tx.QueryRowContext(ctx, q, args...).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", errNoBuild
	}
	return id, err
}

// lockPending reports whether the build is pending and now locked by this
// transaction (PostgreSQL: FOR UPDATE SKIP LOCKED, so false also when
// another transaction holds its row; SQLite's one writer needs no lock).
func lockPending(ctx context.Context, tx *Tx, id string) (bool, error) {
	var got string
	err := tx.QueryRowContext(ctx, `SELECT id FROM builds WHERE id = ? AND status = 'pending'`+skipLocked(tx), id).Scan(&got)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// skipLocked is the row-locking clause of a PostgreSQL pick ("" on SQLite).
func skipLocked(tx *Tx) string {
	if tx.postgres() {
		return ` FOR UPDATE SKIP LOCKED`
	}
	return ""
}

// idleWorker is the name of a worker that holds no build: ErrWorkerNotFound,
// or ErrConflict when it holds one. On PostgreSQL it locks the worker's row
// first, so that the worker's assignments take turns and each sees the one
// before it.
func idleWorker(ctx context.Context, tx *Tx, workerID string) (string, error) {
	q := `SELECT name FROM workers WHERE id = ?`
	if tx.postgres() {
		q += ` FOR UPDATE`
	}
	var name string
	err := tx.QueryRowContext(ctx, q, workerID).Scan(&name)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrWorkerNotFound
	}
	if err != nil {
		return "", err
	}
	var held int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM builds WHERE worker_id = ?
		AND status IN ('assigned', 'building')`, workerID).Scan(&held); err != nil {
		return "", err
	}
	if held > 0 {
		return "", ErrConflict
	}
	return name, nil
}

// assignTx makes the pending build assigned to the worker (named name):
// the build's assignment, the worker building, the job's one-time password
// when otp is not nil, the log line. It returns what the build became, or
// ErrNotFound, or ErrConflict when the build is not pending.
func assignTx(ctx context.Context, tx *Tx, buildID, workerID, name string, now int64, otp *TokenGrant) (BuildChange, error) {
	change := BuildChange{ID: buildID, Kind: ChangeRunning, WorkerID: workerID, StartedAt: now}
	var certs sql.NullString
	err := tx.QueryRowContext(ctx, `UPDATE builds SET status = 'assigned', worker_id = ?,
		started_at = ?, last_activity_at = ?, progress = NULL, assignment = assignment + 1,
		vm_ready_at = NULL, host_token = NULL, stage = NULL
		WHERE id = ? AND status = 'pending'
		RETURNING assignment, platform, submitted_at, certs_path`, workerID, now, now, buildID).
		Scan(&change.Assignment, &change.Platform, &change.SubmittedAt, &certs)
	if errors.Is(err, sql.ErrNoRows) {
		if _, gerr := getBuild(ctx, tx, buildID); gerr != nil {
			return BuildChange{}, gerr // ErrNotFound
		}
		return BuildChange{}, ErrConflict
	}
	if err != nil {
		return BuildChange{}, err
	}
	change.Certs = certs.Valid
	noteStatus(ctx, change)
	if _, err := tx.ExecContext(ctx, `UPDATE workers SET status = 'building',
		last_seen_at = GREATEST(last_seen_at, ?) WHERE id = ?`, now, workerID); err != nil {
		return BuildChange{}, err
	}
	if otp != nil {
		if _, err := tx.ExecContext(ctx, `INSERT INTO assignment_tokens (digest, build_id, assignment, kind, expires_at)
			SELECT ?, id, assignment, 'otp', ? FROM builds WHERE id = ?`, otp.Digest, otp.ExpiresAt, buildID); err != nil {
			return BuildChange{}, err
		}
	}
	return change, appendLog(ctx, tx, buildID, now, domain.LevelInfo, "Assigned to worker "+name)
}

// CancelBuild fails an unfinished build as cancelled by the user, frees its
// worker (counters unchanged, worker_id kept), logs "Build cancelled" and
// writes the build.failed event to the outbox (recordEvent). It
// returns the build as it was before, or ErrNotFound, or ErrConflict when the
// build is already finished.
func (s *Store) CancelBuild(ctx context.Context, id string, now int64) (domain.Build, error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	var before domain.Build
	err := s.tx(ctx, "cancel build", func(tx *Tx) error {
		b, err := getBuild(ctx, tx, id)
		if err != nil {
			return err
		}
		if b.Finished() {
			return ErrConflict
		}
		before = b
		noteStatus(ctx, BuildChange{ID: id, Kind: ChangeEnded})
		if _, err := tx.ExecContext(ctx, `UPDATE builds SET status = 'failed', cancelled = 1,
			error_message = 'Build cancelled by user', completed_at = ? WHERE id = ?`, now, id); err != nil {
			return err
		}
		if b.Running() && b.WorkerID != nil {
			if err := releaseWorker(ctx, tx, *b.WorkerID); err != nil {
				return err
			}
		}
		if err := recordEvent(ctx, tx, id, EventFailed, now); err != nil {
			return err
		}
		return appendLog(ctx, tx, id, now, domain.LevelInfo, "Build cancelled")
	})
	if err != nil {
		return domain.Build{}, err
	}
	return before, nil
}

// Finish is the outcome of a worker's upload.
type Finish struct {
	BuildID      string
	WorkerID     string
	Success      bool
	ErrorMessage string // used when !Success; empty means "Build failed"
	ResultPath   string // relative to the storage root; required when Success
	ResultSize   int64
	ResultSHA256 string
	Now          int64
}

// FinishBuild completes or fails a running build for its current assignee,
// counting the result once on the worker and making it idle, and writes the
// build.completed or build.failed event to the outbox. It returns
// ErrNotFound, or ErrNotAssignee when the worker is not the current assignee.
func (s *Store) FinishBuild(ctx context.Context, f Finish) error {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	return s.tx(ctx, "finish build", func(tx *Tx) error {
		b, err := getBuild(ctx, tx, f.BuildID)
		if err != nil {
			return err
		}
		if !b.AssignedTo(f.WorkerID) {
			return ErrNotAssignee
		}
		noteStatus(ctx, BuildChange{ID: f.BuildID, Kind: ChangeEnded})
		counter := "builds_completed"
		if f.Success {
			_, err = tx.ExecContext(ctx, `UPDATE builds SET status = 'completed', completed_at = ?,
				error_message = NULL, result_path = ?, result_size = ?, result_sha256 = ? WHERE id = ?`,
				f.Now, f.ResultPath, f.ResultSize, f.ResultSHA256, f.BuildID)
			if err == nil {
				err = appendLog(ctx, tx, f.BuildID, f.Now, domain.LevelInfo, "Build completed successfully")
			}
		} else {
			counter = "builds_failed"
			msg := domain.Clip(f.ErrorMessage, domain.MaxErrorMessage)
			if msg == "" {
				msg = "Build failed"
			}
			_, err = tx.ExecContext(ctx, `UPDATE builds SET status = 'failed', completed_at = ?,
				error_message = ? WHERE id = ?`, f.Now, msg, f.BuildID)
			if err == nil {
				err = appendLog(ctx, tx, f.BuildID, f.Now, domain.LevelError, "Build failed: "+msg)
			}
		}
		if err != nil {
			return err
		}
		event := EventCompleted
		if !f.Success {
			event = EventFailed
		}
		if err := recordEvent(ctx, tx, f.BuildID, event, f.Now); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE workers SET `+counter+` = `+counter+` + 1,
			status = 'idle', last_seen_at = GREATEST(last_seen_at, ?) WHERE id = ?`, f.Now, f.WorkerID)
		return err
	})
}

// TimeoutBuild detaches workerID from a build that has had no liveness signal
// since before cutoff and applies domain.DecideTimeout: requeued at its place
// or failed; the worker becomes idle either way. It returns
// domain.TimeoutNone if the build is not running on that worker or has shown
// liveness since.
func (s *Store) TimeoutBuild(ctx context.Context, buildID, workerID string, cutoff, now int64, maxAttempts int) (domain.TimeoutOutcome, error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	outcome := domain.TimeoutNone
	err := s.tx(ctx, "timeout build", func(tx *Tx) error {
		b, err := getBuild(ctx, tx, buildID)
		if err != nil {
			return err
		}
		if !b.AssignedTo(workerID) || (b.LastActivityAt != nil && *b.LastActivityAt >= cutoff) {
			return nil
		}
		name, err := workerName(ctx, tx, workerID)
		if errors.Is(err, ErrWorkerNotFound) {
			name = workerID
		} else if err != nil {
			return err
		}
		outcome, err = endAttempt(ctx, tx, b, now, maxAttempts, attemptEnd{
			requeueLog: func(n int) string {
				return fmt.Sprintf("Build timeout - worker stopped responding; requeued (attempt %d of %d)", n, maxAttempts)
			},
			failure: "Build timeout - worker stopped responding",
			failLog: func(n int) string {
				return fmt.Sprintf("Build timeout - worker %s stopped responding; failed after %d of %d attempts", name, n, maxAttempts)
			},
		})
		return err
	})
	if err != nil {
		return domain.TimeoutNone, err
	}
	return outcome, nil
}

// AbandonBuild is a worker giving up its build: like a timeout it counts an
// attempt (domain.DecideTimeout), so a build every worker gives up on ends
// failed; the build goes back to pending at its place or fails, and the
// worker becomes idle. It returns ErrNotFound, or ErrNotAssignee when the
// worker does not hold the build.
func (s *Store) AbandonBuild(ctx context.Context, buildID, workerID, reason string, now int64, maxAttempts int) (domain.TimeoutOutcome, error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	outcome := domain.TimeoutNone
	err := s.tx(ctx, "abandon build", func(tx *Tx) error {
		b, err := getBuild(ctx, tx, buildID)
		if err != nil {
			return err
		}
		if !b.AssignedTo(workerID) {
			return ErrNotAssignee
		}
		name, err := workerName(ctx, tx, workerID)
		if err != nil {
			return err
		}
		what := domain.Clip("Build abandoned by worker "+name+": "+reason, domain.MaxErrorMessage)
		outcome, err = endAttempt(ctx, tx, b, now, maxAttempts, attemptEnd{
			requeueLog: func(int) string { return what },
			failure:    what,
			failLog: func(n int) string {
				return fmt.Sprintf("%s; failed after %d of %d attempts", what, n, maxAttempts)
			},
		})
		return err
	})
	if err != nil {
		return domain.TimeoutNone, err
	}
	return outcome, nil
}

// attemptEnd is what an assignment that ends without a result logs.
type attemptEnd struct {
	requeueLog func(attempt int) string // warn log when requeued
	failure    string                   // the build's error message when failed
	failLog    func(attempt int) string // error log when failed
}

// endAttempt ends the running build b's assignment without a result,
// counting an attempt: requeued at its place while attempts remain, else
// failed (domain.DecideTimeout); its worker becomes idle. The outbox gets
// build.requeued or build.failed.
func endAttempt(ctx context.Context, tx *Tx, b domain.Build, now int64, maxAttempts int, e attemptEnd) (domain.TimeoutOutcome, error) {
	decision := domain.DecideTimeout(b.Attempts, maxAttempts)
	change := ChangeOf(b) // its queue fields and assignment
	change.Kind, change.WorkerID, change.StartedAt = ChangePending, "", 0
	if decision.Outcome != domain.TimeoutRequeued {
		change.Kind = ChangeEnded
	}
	noteStatus(ctx, change)
	n := decision.Attempt
	var err error
	if decision.Outcome == domain.TimeoutRequeued {
		_, err = tx.ExecContext(ctx, `UPDATE builds SET status = 'pending', attempts = ?,
			worker_id = NULL, started_at = NULL, last_activity_at = NULL, progress = NULL
			WHERE id = ?`, n, b.ID)
		if err == nil {
			err = appendLog(ctx, tx, b.ID, now, domain.LevelWarn, e.requeueLog(n))
		}
	} else {
		_, err = tx.ExecContext(ctx, `UPDATE builds SET status = 'failed', attempts = ?,
			worker_id = NULL, completed_at = ?, last_activity_at = NULL,
			error_message = ? WHERE id = ?`, n, now, e.failure, b.ID)
		if err == nil {
			err = appendLog(ctx, tx, b.ID, now, domain.LevelError, e.failLog(n))
		}
	}
	if err != nil {
		return domain.TimeoutNone, err
	}
	event := EventFailed
	if decision.Outcome == domain.TimeoutRequeued {
		event = EventRequeued
	}
	if err := recordEvent(ctx, tx, b.ID, event, now); err != nil {
		return domain.TimeoutNone, err
	}
	return decision.Outcome, releaseWorker(ctx, tx, *b.WorkerID)
}

// RequeueOnUnregister returns the worker's running build, if any, to pending
// (attempts unchanged) with a warn log, marks the worker offline and revokes
// its tokens. It
// returns the requeued build id ("" if none), or ErrWorkerNotFound.
func (s *Store) RequeueOnUnregister(ctx context.Context, workerID string, now int64) (string, error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	var requeued string
	err := s.tx(ctx, "unregister worker", func(tx *Tx) error {
		name, err := workerName(ctx, tx, workerID)
		if err != nil {
			return err
		}
		err = tx.QueryRowContext(ctx, `SELECT id FROM builds WHERE worker_id = ?
			AND status IN ('assigned', 'building')`, workerID).Scan(&requeued)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if requeued != "" {
			if err := requeue(ctx, tx, requeued, now, "Build requeued: worker "+name+" unregistered"); err != nil {
				return err
			}
		}
		if _, err = tx.ExecContext(ctx, `UPDATE workers SET status = 'offline' WHERE id = ?`, workerID); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM worker_tokens WHERE worker_id = ?`, workerID) // revoked
		return err
	})
	if err != nil {
		return "", err
	}
	return requeued, nil
}

// Recover prepares the database after a start: running builds whose worker
// row is gone go back to pending (warn log "Build requeued: worker gone at
// restart"), the liveness of every other running build is reset to now so that
// downtime never counts against a worker, and worker states are made to agree
// with the builds they hold. It returns the ids of the requeued builds.
func (s *Store) Recover(ctx context.Context, now int64) ([]string, error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	var requeued []string
	err := s.tx(ctx, "recover", func(tx *Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT id FROM builds WHERE status IN ('assigned', 'building')
			AND (worker_id IS NULL OR worker_id NOT IN (SELECT id FROM workers)) ORDER BY submitted_at, id`)
		if err != nil {
			return err
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return err
			}
			requeued = append(requeued, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, id := range requeued {
			if err := requeue(ctx, tx, id, now, "Build requeued: worker gone at restart"); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE builds SET last_activity_at = ?
			WHERE status IN ('assigned', 'building')`, now); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE workers SET status = 'idle' WHERE status = 'building'
			AND id NOT IN (SELECT worker_id FROM builds WHERE status IN ('assigned', 'building')
			AND worker_id IS NOT NULL)`); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE workers SET status = 'building' WHERE status = 'idle'
			AND id IN (SELECT worker_id FROM builds WHERE status IN ('assigned', 'building')
			AND worker_id IS NOT NULL)`)
		return err
	})
	if err != nil {
		return nil, err
	}
	return requeued, nil
}

// requeue returns a running build to pending at its submit-order place and
// writes build.requeued to the outbox.
func requeue(ctx context.Context, tx *Tx, id string, now int64, reason string) error {
	noteStatus(ctx, BuildChange{ID: id}) // rare: other nodes read it
	if _, err := tx.ExecContext(ctx, `UPDATE builds SET status = 'pending', worker_id = NULL,
		started_at = NULL, last_activity_at = NULL, progress = NULL WHERE id = ?`, id); err != nil {
		return err
	}
	if err := recordEvent(ctx, tx, id, EventRequeued, now); err != nil {
		return err
	}
	return appendLog(ctx, tx, id, now, domain.LevelWarn, reason)
}

// releaseWorker makes a building worker idle (an offline one stays offline).
func releaseWorker(ctx context.Context, tx *Tx, workerID string) error {
	_, err := tx.ExecContext(ctx, `UPDATE workers SET status = 'idle' WHERE id = ? AND status = 'building'`, workerID)
	return err
}

func oneRow(res sql.Result, none error) error {
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return none
	}
	return nil
}
