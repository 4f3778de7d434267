package store

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"errors"
	"time"

	"github.com/expo-free-agent/controller/store/domain"
)

// grantWorkerToken makes g the worker's only token (g.Digest nil: none
// minted, earlier tokens stay).
func grantWorkerToken(ctx context.Context, tx *Tx, workerID string, g TokenGrant) error {
	if g.Digest == nil {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM worker_tokens WHERE worker_id = ?`, workerID); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO worker_tokens (digest, worker_id, expires_at) VALUES (?, ?, ?)`,
		g.Digest, workerID, g.ExpiresAt)
	return err
}

// WorkerByToken returns the worker a token belongs to and when the token
// expires. It returns ErrBadToken for a token that is unknown, expired or
// revoked.
func (s *Store) WorkerByToken(ctx context.Context, digest []byte, now int64) (workerID string, expiresAt int64, err error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	err = s.read.QueryRowContext(ctx, `SELECT worker_id, expires_at FROM worker_tokens
		WHERE digest = ? AND expires_at > ?`, digest, now).Scan(&workerID, &expiresAt)
	if errors.Is(err, sql.ErrNoRows) {
		return "", 0, ErrBadToken
	}
	if err != nil {
		return "", 0, wrapCtx(ctx, "worker by token", err)
	}
	return workerID, expiresAt, nil
}

// RotateWorkerToken replaces the worker's token old with next; old stays
// valid until graceUntil (or its own expiry, if sooner), so an answer lost on
// the way does not lock the worker out. It returns ErrBadToken when old is no
// longer valid (a concurrent rotation or a revocation won).
func (s *Store) RotateWorkerToken(ctx context.Context, workerID string, old []byte, next TokenGrant, now, graceUntil int64) error {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	return s.tx(ctx, "rotate worker token", func(tx *Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE worker_tokens SET expires_at = LEAST(expires_at, ?)
			WHERE digest = ? AND worker_id = ? AND expires_at > ?`, graceUntil, old, workerID, now)
		if err != nil {
			return err
		}
		if err := oneRow(res, ErrBadToken); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO worker_tokens (digest, worker_id, expires_at) VALUES (?, ?, ?)`,
			next.Digest, workerID, next.ExpiresAt)
		return err
	})
}

// IssueOTP stores a one-time password for the current assignment of a build
// held by workerID. It returns ErrNotFound, or ErrNotAssignee when the worker
// no longer holds the build.
func (s *Store) IssueOTP(ctx context.Context, buildID, workerID string, otp TokenGrant) error {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	return s.tx(ctx, "issue otp", func(tx *Tx) error {
		b, err := getBuild(ctx, tx, buildID)
		if err != nil {
			return err
		}
		if !b.AssignedTo(workerID) {
			return ErrNotAssignee
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO assignment_tokens (digest, build_id, assignment, kind, expires_at)
			VALUES (?, ?, ?, 'otp', ?)`, otp.Digest, buildID, b.Assignment, otp.ExpiresAt)
		return err
	})
}

// RedeemOTP trades a one-time password of the build's current assignment
// for a VM token (stored as vm): the OTP is used up, the build's liveness is
// refreshed (assigned becomes building) and "VM authenticated" is logged. It
// returns ErrNotFound, ErrOTPInvalid (no unused OTP of the current
// assignment matches, or the build is not running) or ErrOTPExpired.
func (s *Store) RedeemOTP(ctx context.Context, buildID string, otp []byte, vm TokenGrant, now int64) error {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	return s.tx(ctx, "redeem otp", func(tx *Tx) error {
		b, err := getBuild(ctx, tx, buildID)
		if err != nil {
			return err
		}
		if !b.Running() {
			return ErrOTPInvalid
		}
		var expires int64
		err = tx.QueryRowContext(ctx, `SELECT expires_at FROM assignment_tokens WHERE digest = ? AND build_id = ?
			AND assignment = ? AND kind = 'otp' AND used_at IS NULL`, otp, buildID, b.Assignment).Scan(&expires)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrOTPInvalid
		}
		if err != nil {
			return err
		}
		if expires <= now {
			return ErrOTPExpired
		}
		if _, err := tx.ExecContext(ctx, `UPDATE assignment_tokens SET used_at = ? WHERE digest = ?`, now, otp); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO assignment_tokens (digest, build_id, assignment, kind, expires_at)
			VALUES (?, ?, ?, 'vm', ?)`, vm.Digest, buildID, b.Assignment, vm.ExpiresAt); err != nil {
			return err
		}
		if _, err := touchAssignee(ctx, tx, buildID, *b.WorkerID, now); err != nil {
			return err
		}
		return appendLog(ctx, tx, buildID, now, domain.LevelInfo, "VM authenticated")
	})
}

// AssignmentTokenKind is what an assignment's token opens.
type AssignmentTokenKind int

// The kinds of assignment token.
const (
	VMToken   AssignmentTokenKind = iota + 1 // the build VM's: the build's files, logs, readiness, artifact
	HostToken                                // the host's, from vm-status: heartbeat and telemetry only
)

// BuildByAssignmentToken returns the build and which kind of token of its
// latest assignment presented is (the VM's, or the host's). The build may
// have finished since: the caller decides what a token of an ended
// assignment may still do. It returns ErrNotFound, or ErrBadToken when the
// token is not one of the latest assignment's, or has expired.
func (s *Store) BuildByAssignmentToken(ctx context.Context, buildID, presented string, now int64) (domain.Build, AssignmentTokenKind, error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	var (
		b    domain.Build
		kind AssignmentTokenKind
	)
	err := s.readTx(ctx, "assignment token", func(tx *Tx) error {
		var err error
		if b, err = getBuild(ctx, tx, buildID); err != nil {
			return err
		}
		var host sql.NullString
		if err := tx.QueryRowContext(ctx, `SELECT host_token FROM builds WHERE id = ?`, buildID).Scan(&host); err != nil {
			return err
		}
		if host.Valid && subtle.ConstantTimeCompare([]byte(host.String), []byte(presented)) == 1 {
			kind = HostToken
			return nil
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM assignment_tokens WHERE digest = ? AND build_id = ?
			AND assignment = ? AND kind = 'vm' AND expires_at > ?`, domain.Digest(presented), buildID, b.Assignment, now).
			Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return ErrBadToken
		}
		kind = VMToken
		return nil
	})
	return b, kind, err
}

// MarkVMReady records that the VM of the build's assignment is ready: the
// first call sets vm_ready_at and the host token, logs "VM ready" and
// refreshes the liveness; later calls change nothing. It returns the time the
// VM became ready, or ErrNotFound, or ErrNotAssignee when that assignment is
// no longer the build's running one.
func (s *Store) MarkVMReady(ctx context.Context, buildID string, assignment int, hostToken string, now int64) (int64, error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	var readyAt int64
	err := s.tx(ctx, "vm ready", func(tx *Tx) error {
		b, err := getBuild(ctx, tx, buildID)
		if err != nil {
			return err
		}
		if !b.Running() || b.Assignment != assignment {
			return ErrNotAssignee
		}
		if b.VMReadyAt != nil {
			readyAt = *b.VMReadyAt
			return nil
		}
		readyAt = now
		if _, err := tx.ExecContext(ctx, `UPDATE builds SET vm_ready_at = ?, host_token = ? WHERE id = ?`,
			now, hostToken, buildID); err != nil {
			return err
		}
		if _, err := touchAssignee(ctx, tx, buildID, *b.WorkerID, now); err != nil {
			return err
		}
		return appendLog(ctx, tx, buildID, now, domain.LevelInfo, "VM ready")
	})
	return readyAt, err
}

// VMStatus reports whether the VM of the build's running assignment said it
// is ready, when, and the host token that goes with it. It returns
// ErrNotFound.
func (s *Store) VMStatus(ctx context.Context, buildID string) (ready bool, readyAt int64, hostToken string, err error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	var (
		status string
		at     sql.NullInt64
		host   sql.NullString
	)
	err = s.read.QueryRowContext(ctx, `SELECT status, vm_ready_at, host_token FROM builds WHERE id = ?`, buildID).
		Scan(&status, &at, &host)
	if errors.Is(err, sql.ErrNoRows) {
		return false, 0, "", ErrNotFound
	}
	if err != nil {
		return false, 0, "", wrapCtx(ctx, "vm status", err)
	}
	running := domain.BuildStatus(status) == domain.StatusAssigned || domain.BuildStatus(status) == domain.StatusBuilding
	if !running || !at.Valid || !host.Valid {
		return false, 0, "", nil
	}
	return true, at.Int64, host.String, nil
}

// keepExpired is how long an expired token or one-time password is kept
// before it is pruned: meanwhile a late caller is told "expired" rather than
// "invalid".
const keepExpired = 24 * time.Hour

// PruneTokens deletes the worker tokens, VM tokens and one-time passwords
// that expired more than a day before now (an ended assignment's tokens are
// refused at once by the assignment number, and pruned once they expire). It
// returns how many it deleted.
func (s *Store) PruneTokens(ctx context.Context, now int64) (int64, error) {
	now -= keepExpired.Milliseconds()
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	var n int64
	err := s.tx(ctx, "prune tokens", func(tx *Tx) error {
		for _, q := range []string{
			`DELETE FROM worker_tokens WHERE expires_at <= ?`,
			`DELETE FROM assignment_tokens WHERE expires_at <= ?`,
		} {
			res, err := tx.ExecContext(ctx, q, now)
			if err != nil {
				return err
			}
			k, err := res.RowsAffected()
			if err != nil {
				return err
			}
			n += k
		}
		return nil
	})
	return n, err
}
