package queue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

// Job is a build handed to a worker.
type Job struct {
	BuildID  string
	Platform domain.Platform
	HasCerts bool
	// OTP is the one-time password minted with this assignment (Config.OTPTTL),
	// already stored; "" for a re-delivery, whose caller issues a fresh one.
	OTP string
}

func jobOf(rb *runningBuild) *Job {
	return &Job{BuildID: rb.id, Platform: rb.platform, HasCerts: rb.hasCerts}
}

// Poll marks the worker seen and returns its job (docs/API.md §4.2): the
// build it already holds (re-delivered unchanged), else the first pending
// build in queue order whose platform it accepts, assigned in one committed
// transaction; nil when nothing qualifies. It returns store.ErrWorkerNotFound
// for an unknown worker. On any other error the build keeps its place.
func (m *Manager) Poll(ctx context.Context, workerID string) (*Job, error) {
	return askDurable(ctx, m, func(ctx context.Context, s *state) (*Job, error) {
		return m.poll(ctx, s, workerID)
	})
}

// poll is Poll on the manager's goroutine. On a shared store, memory that
// disagrees with the store (another node registered the worker, assigned
// it a build or ended its build) is reloaded once and the poll decided again.
func (m *Manager) poll(ctx context.Context, s *state, workerID string) (*Job, error) {
	job, err := m.pollOnce(ctx, s, workerID, false)
	if !errors.Is(err, errOutOfStep) {
		return job, err
	}
	// First the build memory says the worker holds (another node ended
	// it), then, if memory still disagrees, everything.
	if w := s.workers[workerID]; w != nil && w.job != nil {
		if err := m.refreshBuild(ctx, s, w.job.id); err != nil {
			return nil, err
		}
		job, err = m.pollOnce(ctx, s, workerID, false)
		if !errors.Is(err, errOutOfStep) {
			return job, err
		}
	}
	if err := m.load(ctx, s); err != nil {
		return nil, err
	}
	job, err = m.pollOnce(ctx, s, workerID, true)
	if errors.Is(err, errOutOfStep) {
		s.stale = true
		return nil, store.ErrConflict
	}
	return job, err
}

// errOutOfStep means the manager's memory disagrees with a shared store: the
// caller reloads and tries again.
var errOutOfStep = errors.New("queue: memory out of step with the shared store")

func (m *Manager) pollOnce(ctx context.Context, s *state, workerID string, reloaded bool) (*Job, error) {
	w := s.workers[workerID]
	if w == nil && m.cfg.Shared && !reloaded {
		return nil, errOutOfStep // registered through another node?
	}
	if w == nil {
		return nil, store.ErrWorkerNotFound
	}
	if ctx.Err() != nil { // the caller is gone: hand nothing out
		return nil, ctx.Err()
	}
	now := m.now()
	if err := m.markSeen(ctx, s, w, now); err != nil {
		return nil, err
	}
	if w.job != nil {
		if m.cfg.Shared && !m.stillHolds(ctx, w) {
			return nil, errOutOfStep // ended, or requeued, through another node
		}
		return jobOf(w.job), nil
	}
	return m.assignNext(ctx, s, w, now)
}

// stillHolds reports whether the store agrees that w holds the build memory
// says it holds (a shared store: another node may have ended it).
func (m *Manager) stillHolds(ctx context.Context, w *workerEntry) bool {
	b, err := m.store.GetBuild(ctx, w.job.id)
	return err == nil && b.AssignedTo(w.id)
}

// assignNext hands w the first pending build it accepts.
func (m *Manager) assignNext(ctx context.Context, s *state, w *workerEntry, now int64) (*Job, error) {
	if m.cfg.Shared {
		return m.assignShared(ctx, s, w, now)
	}
	for i := 0; i < len(s.pending); {
		b := s.pending[i]
		if !w.accepts(b.platform) {
			i++
			continue
		}
		otp, err := m.assignBuild(ctx, b.id, w.id, now)
		if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
			// A build cancelled between its commit and its queueing is no
			// longer pending: drop it and look further. Any other disagreement
			// between memory and the store makes the state reload.
			if cur, gerr := m.store.GetBuild(ctx, b.id); errors.Is(gerr, store.ErrNotFound) ||
				(gerr == nil && cur.Status != domain.StatusPending) {
				s.dequeue(b.id)
				continue
			}
			s.stale = true
			m.log.Warn("queue out of step with the store; reloading", "build_id", b.id, "worker_id", w.id)
			return nil, fmt.Errorf("assign %s: %w", b.id, err)
		}
		if err != nil {
			return nil, err
		}
		b.assignment++
		return m.assigned(s, w, b, now, otp), nil
	}
	return nil, nil
}

// takenFor is how long a pending build memory knows of, but which the
// store had no more (another node assigned it, or is assigning it), is not
// asked for again — unless a change of it arrives first, as it normally
// does within milliseconds. If that node's transaction rolled back instead,
// the build is asked for again after this.
const takenFor = 500 * time.Millisecond

// assignShared is assignNext on a shared store: memory says whether a build
// w accepts may be waiting (an idle poll costs no database round trip) and
// which it would take, the database takes that one if no other node is
// assigning it, else the oldest one no other node is assigning
// (Store.AssignNext), so nodes never collide on one build. When the store has none
// of memory's builds for w (assigned elsewhere, the notices still on their
// way), w gets nothing now and those builds are marked taken for takenFor,
// so the other idle workers' polls do not ask the store again meanwhile.
func (m *Manager) assignShared(ctx context.Context, s *state, w *workerEntry, now int64) (*Job, error) {
	free := func(b queuedBuild) bool { return w.accepts(b.platform) && s.taken[b.id] <= now }
	first := slices.IndexFunc(s.pending, free)
	if first < 0 {
		return nil, nil
	}
	otp, grant, err := m.newOTP(now)
	if err != nil {
		return nil, err
	}
	c, ok, err := m.store.AssignNext(ctx, w.id, s.pending[first].id, w.platformList(), now, grant)
	if errors.Is(err, store.ErrConflict) {
		return nil, errOutOfStep // the worker holds a build another node assigned
	}
	if err != nil {
		return nil, err
	}
	if !ok {
		if s.taken == nil {
			s.taken = map[string]int64{}
		}
		for _, b := range s.pending {
			if free(b) {
				s.taken[b.id] = now + takenFor.Milliseconds()
			}
		}
		return nil, nil
	}
	qb, _ := queuedOf(c)
	s.detach(c.ID) // memory may have been behind on it
	return m.assigned(s, w, qb, now, otp), nil
}

// assigned records in memory that w was assigned b (b.assignment its
// number) and returns the job.
func (m *Manager) assigned(s *state, w *workerEntry, b queuedBuild, now int64, otp string) *Job {
	s.dequeue(b.id)
	rb := &runningBuild{queuedBuild: b, workerID: w.id, assignedAt: now}
	s.running[b.id] = rb
	w.job, w.status = rb, domain.WorkerBuilding
	m.assignments.Add(1)
	m.cfg.Observer.Assigned(b.platform, millis(now-b.submittedAt))
	m.log.Info("build assigned", "build_id", b.id, "worker", w.name)
	job := jobOf(rb)
	job.OTP = otp
	return job
}

// assignBuild commits the assignment, with its job's one-time password
// (newOTP).
func (m *Manager) assignBuild(ctx context.Context, buildID, workerID string, now int64) (string, error) {
	otp, grant, err := m.newOTP(now)
	switch {
	case err != nil:
		return "", err
	case grant == nil:
		return "", m.store.AssignBuild(ctx, buildID, workerID, now)
	}
	return otp, m.store.AssignBuildWithOTP(ctx, buildID, workerID, now, *grant)
}

// newOTP mints a job's one-time password when Config.OTPTTL is set: the
// password in the clear (returned to the worker) and its grant (only its
// digest is stored); nil when there is none.
func (m *Manager) newOTP(now int64) (string, *store.TokenGrant, error) {
	if m.cfg.OTPTTL <= 0 {
		return "", nil, nil
	}
	otp, digest, err := domain.NewToken()
	if err != nil {
		return "", nil, err
	}
	return otp, &store.TokenGrant{Digest: digest, ExpiresAt: now + m.cfg.OTPTTL.Milliseconds()}, nil
}

// Seen records that a worker made an accepted request. Unknown ids are
// ignored.
func (m *Manager) Seen(ctx context.Context, workerID string) error {
	_, err := askDurable(ctx, m, func(ctx context.Context, s *state) (struct{}, error) {
		if w := s.workers[workerID]; w != nil {
			return struct{}{}, m.markSeen(ctx, s, w, m.now())
		}
		return struct{}{}, nil
	})
	return err
}

// Register creates or re-registers a worker (store.RegisterWorker) and
// updates the directory. It reports whether the worker was created.
func (m *Manager) Register(ctx context.Context, reg store.Registration) (domain.Worker, bool, error) {
	type registered struct {
		w       domain.Worker
		created bool
	}
	res, err := askDurable(ctx, m, func(ctx context.Context, s *state) (registered, error) {
		reg.Now = m.now()
		w, created, err := m.store.RegisterWorker(ctx, reg)
		if err != nil {
			return registered{}, err
		}
		e := s.workers[w.ID]
		if e == nil {
			e = &workerEntry{id: w.ID}
			s.workers[w.ID] = e
		}
		e.name, e.platforms, e.status, e.lastSeen = w.Name, platformsOf(w.Capabilities), w.Status, w.LastSeenAt
		delete(s.seen, w.ID)
		return registered{w, created}, nil
	})
	return res.w, res.created, err
}
