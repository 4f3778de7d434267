package queue

import (
	"context"

	"github.com/expo-free-agent/controller/store/domain"
)

// ExpireBuild applies the build timeout (domain.DecideTimeout) to a build
// that showed no liveness since before cutoff (epoch ms): requeued at its
// place, or failed once the attempts are used up; its worker is freed. It is
// a no-op (domain.TimeoutNone) if the build has shown liveness since, or is
// no longer held by workerID.
func (m *Manager) ExpireBuild(ctx context.Context, buildID, workerID string, cutoff int64) (domain.TimeoutOutcome, error) {
	return askDurable(ctx, m, func(ctx context.Context, s *state) (domain.TimeoutOutcome, error) {
		out, err := m.store.TimeoutBuild(ctx, buildID, workerID, cutoff, m.now(), m.cfg.MaxAttempts)
		if err != nil || out == domain.TimeoutNone {
			return out, err
		}
		m.timeouts.Add(1)
		if out == domain.TimeoutRequeued {
			m.requeues.Add(1)
			s.requeue(buildID)
			m.serveWaiters(s)
		} else {
			m.timeoutFailures.Add(1)
			m.observeFinish(s.running[buildID], "failed", m.now())
			s.end(buildID)
		}
		m.log.Warn("build timed out", "build_id", buildID, "worker_id", workerID,
			"requeued", out == domain.TimeoutRequeued)
		return out, nil
	})
}

// Unregister requeues the worker's build, if any, at its queue place and
// marks the worker offline. It returns how many builds were requeued (0 or
// 1), or store.ErrWorkerNotFound.
func (m *Manager) Unregister(ctx context.Context, workerID string) (int, error) {
	return askDurable(ctx, m, func(ctx context.Context, s *state) (int, error) {
		buildID, err := m.store.RequeueOnUnregister(ctx, workerID, m.now())
		if err != nil {
			return 0, err
		}
		n := 0
		if buildID != "" {
			n = 1
			m.requeues.Add(1)
			s.requeue(buildID)
		}
		if w := s.workers[workerID]; w != nil {
			w.status = domain.WorkerOffline
		}
		m.serveWaiters(s)
		return n, nil
	})
}

// SweepWorkers saves the workers' last-seen times and marks offline every
// worker not seen since before cutoff (epoch ms). It returns how many went
// offline. A worker's build is left to the build timeout.
func (m *Manager) SweepWorkers(ctx context.Context, cutoff int64) (int, error) {
	return askDurable(ctx, m, func(ctx context.Context, s *state) (int, error) {
		if err := m.flushSeen(ctx, s); err != nil {
			return 0, err
		}
		if m.cfg.Shared {
			// Workers seen by the other nodes: their last-seen times are in
			// the store (each node flushes at its own sweeps).
			if err := m.load(ctx, s); err != nil {
				return 0, err
			}
		}
		n := 0
		for _, w := range s.workers {
			if w.status == domain.WorkerOffline || w.lastSeen >= cutoff {
				continue
			}
			if err := m.store.SetWorkerStatus(ctx, w.id, domain.WorkerOffline, w.lastSeen); err != nil {
				return n, err
			}
			w.status = domain.WorkerOffline
			n++
			m.log.Warn("worker offline: not seen within the worker timeout", "worker", w.name)
		}
		return n, nil
	})
}

// SaveSeen writes the workers' pending last-seen times to the store, so that
// readers of the database (public stats, the dashboard) see them now rather
// than at the next sweep.
func (m *Manager) SaveSeen(ctx context.Context) error {
	_, err := askDurable(ctx, m, func(ctx context.Context, s *state) (struct{}, error) {
		return struct{}{}, m.flushSeen(ctx, s)
	})
	return err
}

// Stats is the manager's view of the queue.
type Stats struct {
	Pending int // builds waiting in the queue
	Running int // builds held by a worker (assigned or building)
	Workers int // known workers
}

// Stats returns the manager's counts.
func (m *Manager) Stats(ctx context.Context) (Stats, error) {
	return ask(ctx, m, func(_ context.Context, s *state) (Stats, error) {
		return Stats{Pending: len(s.pending), Running: len(s.running), Workers: len(s.workers)}, nil
	})
}

// Abandon is a worker giving up the build it holds (docs/API.md §4.16): like
// a timeout it counts an attempt, so the build goes back to pending at its
// place or, with its attempts used up, fails; the worker is freed. It returns
// store.ErrNotFound, or store.ErrNotAssignee when the worker does not hold
// the build.
func (m *Manager) Abandon(ctx context.Context, buildID, workerID, reason string) (domain.TimeoutOutcome, error) {
	return askDurable(ctx, m, func(ctx context.Context, s *state) (domain.TimeoutOutcome, error) {
		out, err := m.store.AbandonBuild(ctx, buildID, workerID, reason, m.now(), m.cfg.MaxAttempts)
		if err != nil {
			return out, err
		}
		if out == domain.TimeoutRequeued {
			m.requeues.Add(1)
			s.requeue(buildID)
			m.serveWaiters(s)
		} else {
			s.end(buildID)
		}
		m.log.Warn("build abandoned", "build_id", buildID, "worker_id", workerID,
			"requeued", out == domain.TimeoutRequeued)
		return out, nil
	})
}
