package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

// DefaultMaxWaiters bounds the polls held at once (docs/API.md §4.18);
// beyond it a poll is answered at once.
const DefaultMaxWaiters = 10_000

// waiter is a held poll: a worker waiting for a build it can take. The
// manager hands it a job (the channel is buffered, so handing over never
// blocks), or nil when it lets the poll go.
type waiter struct {
	workerID string
	job      chan *Job
	gone     chan struct{} // closed by the manager once the waiter is out of the queue
}

// answer hands the waiter its job (nil: none) and takes it out.
func (w *waiter) answer(job *Job) {
	w.job <- job
	close(w.gone)
}

// PollWait is Poll that, when nothing qualifies and wait is positive, holds
// the poll until a build becomes assignable to the worker (a submit, a
// retry, a requeue), ctx ends (the client went away) or wait passes; then it
// answers the job, or nil. Held polls are served oldest first among those
// whose platforms match. A build assigned to a poll whose client went away at
// that moment stays with the worker: its next poll is given it again, or the
// build timeout requeues it. It returns Poll's errors.
func (m *Manager) PollWait(ctx context.Context, workerID string, wait time.Duration) (*Job, error) {
	select {
	case <-m.release: // shutting down: nothing is held any more
		wait = 0
	default:
	}
	if wait <= 0 {
		return m.Poll(ctx, workerID)
	}
	type polled struct {
		job  *Job
		held bool
	}
	w := &waiter{workerID: workerID, job: make(chan *Job, 1), gone: make(chan struct{})}
	res, err := askDurable(ctx, m, func(ctx context.Context, s *state) (polled, error) {
		job, err := m.poll(ctx, s, workerID)
		if err != nil || job != nil || len(s.waiters) >= m.cfg.MaxWaiters {
			return polled{job: job}, err
		}
		s.waiters = append(s.waiters, w)
		m.waiting.Store(int64(len(s.waiters)))
		return polled{held: true}, nil
	})
	if err != nil {
		// The manager may have taken the waiter in before the error (the
		// sync failed, the answer timed out): take it out again — the
		// request to do so queues behind the first — so that no build is
		// handed to a poll nobody answers. A build handed to it meanwhile
		// stays with the worker (its next poll gets it). A request that
		// never reached the manager added nothing.
		if !errors.Is(err, errNotDelivered) {
			m.forget(w)
		}
		return nil, err
	}
	if !res.held {
		return res.job, nil
	}
	timer := m.clock.NewTimer(wait)
	defer timer.Stop()
	select {
	case job := <-w.job:
		return m.handedOver(job)
	case <-ctx.Done():
	case <-timer.C():
	case <-m.release:
	}
	if job, handed := m.forget(w); handed {
		return m.handedOver(job)
	}
	return nil, nil
}

// handedOver makes a job assigned to a waiter durable before it is answered
// (the manager assigned it under store.DeferSync).
func (m *Manager) handedOver(job *Job) (*Job, error) {
	if job == nil {
		return nil, nil
	}
	if err := m.store.Sync(); err != nil {
		return nil, err
	}
	return job, nil
}

// forget takes a waiter out of the queue. If the manager handed it a job in
// the meantime, that job is returned (handed = true). Asking stops as soon
// as the manager took the waiter out itself (a handed job, a shutdown).
func (m *Manager) forget(w *waiter) (*Job, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.CallTimeout)
	defer cancel()
	go func() {
		select {
		case <-w.gone:
			cancel()
		case <-ctx.Done():
		}
	}()
	_, _ = ask(ctx, m, func(_ context.Context, s *state) (struct{}, error) {
		if s.dropWaiter(w) {
			// The count first: the answer lets the poll return, and
			// whoever asks next must not see it still held.
			m.waiting.Store(int64(len(s.waiters)))
			w.answer(nil)
		}
		return struct{}{}, nil
	})
	select {
	case job := <-w.job:
		return job, job != nil
	default:
		return nil, false
	}
}

// dropWaiter removes w from the held polls; it reports whether w was there.
func (s *state) dropWaiter(w *waiter) bool {
	for i, x := range s.waiters {
		if x == w {
			s.waiters = append(s.waiters[:i], s.waiters[i+1:]...)
			return true
		}
	}
	return false
}

// serveWaiters hands pending builds to held polls, oldest poll first, each
// the first build in queue order its worker accepts. It runs on the
// manager's goroutine after anything that made a build pending; its
// assignments commit under store.DeferSync and the waiting poll makes them
// durable before it answers.
func (m *Manager) serveWaiters(s *state) {
	if len(s.waiters) == 0 || len(s.pending) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), store.DefaultOpTimeout)
	defer cancel()
	ctx = store.DeferSync(ctx)
	now := m.now()
	type answer struct {
		w   *waiter
		job *Job
	}
	var answers []answer
	// A new slice, not s.waiters filtered in place: should waiterJob panic,
	// the deferred release must find every waiter once, none answered yet.
	kept := make([]*waiter, 0, len(s.waiters))
	for i, w := range s.waiters {
		if len(s.pending) == 0 {
			kept = append(kept, s.waiters[i:]...)
			break
		}
		job, err := m.waiterJob(ctx, s, w, now)
		if err != nil {
			m.log.Warn("handing a build to a held poll", "worker_id", w.workerID, "err", err)
		}
		if job == nil && err == nil {
			kept = append(kept, w)
			continue
		}
		answers = append(answers, answer{w, job}) // nil on an error: the poll is answered "no job" and the worker polls again
	}
	s.waiters = kept
	// The count before the answers: an answered poll must not be counted
	// as held by whoever reads it after the poll returned.
	m.waiting.Store(int64(len(s.waiters)))
	for _, a := range answers {
		a.w.answer(a.job)
	}
}

// waiterJob is the job for a held poll: the build its worker holds, else the
// first pending build it accepts (nil: none).
func (m *Manager) waiterJob(ctx context.Context, s *state, w *waiter, now int64) (*Job, error) {
	we := s.workers[w.workerID]
	if we == nil || we.status == domain.WorkerOffline { // unregistered while it waited
		return nil, fmt.Errorf("worker %s is gone", w.workerID)
	}
	if we.job != nil {
		return jobOf(we.job), nil
	}
	job, err := m.assignNext(ctx, s, we, now)
	if errors.Is(err, errOutOfStep) {
		s.stale = true // the next request reloads; this poll is answered "no job"
		return nil, err
	}
	return job, err
}

// releaseWaiters answers every held poll "no job" (shutdown, a reload after
// a panic: the waiters' goroutines must not wait for a state that is gone).
func (m *Manager) releaseWaiters(s *state) {
	waiters := s.waiters
	s.waiters = nil
	m.waiting.Store(0)
	for _, w := range waiters {
		w.answer(nil)
	}
}

// Release lets every held poll go at once, answered "no job": the HTTP
// server calls it when it starts to drain, so that shutdown does not wait for
// polls held up to 50 s. Later polls are not held.
func (m *Manager) Release() {
	m.releaseOnce.Do(func() { close(m.release) })
}

// Waiting is how many polls are held now (for the metrics).
func (m *Manager) Waiting() int64 { return m.waiting.Load() }
