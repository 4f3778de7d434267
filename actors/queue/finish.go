package queue

import (
	"context"
	"errors"
	"fmt"

	"github.com/expo-free-agent/controller/actors/files"
	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

// ErrFinished means the build is already finished: a cancel of a finished
// build, or an upload by the worker that finished it.
var ErrFinished = errors.New("queue: build already finished")

// Cancel fails an unfinished build as cancelled by the user: it leaves the
// queue, or its worker is freed (store.CancelBuild). It returns the build as
// it was before, store.ErrNotFound, or ErrFinished.
func (m *Manager) Cancel(ctx context.Context, buildID string) (domain.Build, error) {
	return askDurable(ctx, m, func(ctx context.Context, s *state) (domain.Build, error) {
		before, err := m.store.CancelBuild(ctx, buildID, m.now())
		if errors.Is(err, store.ErrConflict) {
			return domain.Build{}, ErrFinished
		}
		if err == nil {
			s.end(buildID)
		}
		return before, err
	})
}

// FinishRequest is a worker's upload outcome.
type FinishRequest struct {
	BuildID      string
	WorkerID     string
	Success      bool
	ErrorMessage string
	Result       *files.Staged // the uploaded result, if any; consumed (committed or discarded)
}

// FinishOutcome says what Finish did.
type FinishOutcome int

// The outcomes of Finish.
const (
	FinishCompleted FinishOutcome = iota + 1 // the build is completed with its result
	FinishFailed                             // the build is failed
	FinishNoChange                           // a file-less success for a build this worker already completed
)

// CheckUpload decides an upload by a worker that may not be the build's
// current assignee (docs/API.md §4.8, check 9): a file-less success for a
// build it completed is a no-op (true); a build it finished is ErrFinished;
// any other non-assignee is store.ErrNotAssignee; the assignee gets (false,
// nil).
func CheckUpload(b domain.Build, workerID string, success, hasFile bool) (bool, error) {
	byThisWorker := b.WorkerID != nil && *b.WorkerID == workerID
	switch {
	case b.Status == domain.StatusCompleted && byThisWorker && success && !hasFile:
		return true, nil
	case b.Finished() && byThisWorker:
		return false, ErrFinished
	case !b.AssignedTo(workerID):
		return false, store.ErrNotAssignee
	}
	return false, nil
}

// Finish completes or fails the build for its current assignee. A success
// with a result commits the file as results/<id>.<ext> before the database
// commit, so a completed build always has its whole artifact; if the database
// commit fails the file is removed again and the build is unchanged. A
// non-assignee is judged by CheckUpload: FinishNoChange, ErrFinished or
// store.ErrNotAssignee. It also returns store.ErrNotFound. The staged result
// is always consumed.
func (m *Manager) Finish(ctx context.Context, req FinishRequest) (FinishOutcome, error) {
	out, err := askDurable(ctx, m, func(ctx context.Context, s *state) (FinishOutcome, error) {
		return m.finish(ctx, s, req)
	})
	if errors.Is(err, errNotDelivered) {
		req.Result.Discard() // never seen by Serve, so still ours
	}
	return out, err
}

func (m *Manager) finish(ctx context.Context, s *state, req FinishRequest) (FinishOutcome, error) {
	rb := s.running[req.BuildID]
	if (rb == nil || rb.workerID != req.WorkerID) && m.cfg.Shared {
		// Another node may have assigned it: memory is a cache of the store.
		if err := m.refreshBuild(ctx, s, req.BuildID); err != nil {
			req.Result.Discard()
			return 0, err
		}
		rb = s.running[req.BuildID]
	}
	if rb == nil || rb.workerID != req.WorkerID {
		req.Result.Discard()
		b, err := m.store.GetBuild(ctx, req.BuildID)
		if err != nil {
			return 0, err
		}
		noop, err := CheckUpload(b, req.WorkerID, req.Success, req.Result != nil)
		if noop {
			return FinishNoChange, nil
		}
		if err == nil { // the store says assignee, memory says not
			s.stale = true
			err = store.ErrNotAssignee
		}
		return 0, err
	}
	f := store.Finish{BuildID: req.BuildID, WorkerID: req.WorkerID, Now: m.now(),
		Success: req.Success && req.Result != nil, ErrorMessage: req.ErrorMessage}
	if f.Success {
		rel, err := req.Result.Commit(req.BuildID, rb.platform.ResultExt())
		if err != nil {
			m.removeResult(req.BuildID, rel)
			return 0, fmt.Errorf("commit result: %w", err)
		}
		f.ResultPath, f.ResultSize, f.ResultSHA256 = rel, req.Result.Size, req.Result.SHA256
	} else {
		req.Result.Discard()
	}
	if err := m.store.FinishBuild(ctx, f); err != nil {
		m.removeResult(req.BuildID, f.ResultPath)
		if errors.Is(err, store.ErrNotAssignee) || errors.Is(err, store.ErrNotFound) {
			s.stale = true
		}
		return 0, err
	}
	s.end(req.BuildID)
	m.finishes.Add(1)
	outcome := "failed"
	if f.Success {
		outcome = "completed"
	}
	m.observeFinish(rb, outcome, f.Now)
	if w := s.workers[req.WorkerID]; w != nil {
		w.status = domain.WorkerIdle
		if f.Now > w.lastSeen {
			w.lastSeen = f.Now
		}
	}
	m.log.Info("build finished", "build_id", req.BuildID, "success", f.Success)
	if f.Success {
		return FinishCompleted, nil
	}
	return FinishFailed, nil
}

// removeResult deletes a result file that no committed build refers to.
func (m *Manager) removeResult(buildID, rel string) {
	if rel == "" {
		return
	}
	if err := m.files.Delete(rel); err != nil {
		m.log.Error("removing the result of a failed finish", "build_id", buildID, "err", err)
	}
}
