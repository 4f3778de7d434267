// Package queue holds the queue manager, the single owner of build
// assignment: one goroutine owns the FIFO of pending builds and the directory
// of workers with the build each one holds, and every change of who holds a
// build — submit, retry, poll, finish, cancel, timeout, unregister, register —
// is decided there, so no build can go to two workers and no worker can hold
// two builds.
package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/expo-free-agent/controller/actors/clock"
	"github.com/expo-free-agent/controller/actors/files"
	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

// DefaultCallTimeout bounds every call into the manager, so that no caller
// waits forever on a dead or restarting goroutine.
const DefaultCallTimeout = 15 * time.Second

// DefaultMaxRetries bounds the retries a build-token holder can make of one
// submitted build: the whole retry chain that descends from it (a retry of a
// retry counts against the same submitted build), so a token — and the new
// token each retry answers with — cannot create builds without end. The
// admin key is not bounded (docs/API.md §2.8).
const DefaultMaxRetries = 20

var (
	// ErrUnavailable means the manager did not answer in time (it may be
	// restarting); the request had no effect unless stated otherwise.
	ErrUnavailable = errors.New("queue manager unavailable")
	// ErrPanicked means the manager panicked while handling the request and
	// is being restarted by its supervisor.
	ErrPanicked = errors.New("queue manager panicked")
	// errNotDelivered is ErrUnavailable for a request the manager never
	// received.
	errNotDelivered = fmt.Errorf("%w: request not delivered", ErrUnavailable)
)

// Store is what the queue manager needs from the database.
type Store interface {
	PendingBuilds(ctx context.Context) ([]domain.Build, error)
	RunningBuilds(ctx context.Context) ([]domain.Build, error)
	ListWorkers(ctx context.Context) ([]domain.Worker, error)
	GetBuild(ctx context.Context, id string) (domain.Build, error)
	CreateBuild(ctx context.Context, nb store.NewBuild) error
	CountRetries(ctx context.Context, rootID string) (int, error)
	AssignBuild(ctx context.Context, buildID, workerID string, now int64) error
	AssignBuildWithOTP(ctx context.Context, buildID, workerID string, now int64, otp store.TokenGrant) error
	AssignNext(ctx context.Context, workerID, prefer string, platforms []domain.Platform, now int64, otp *store.TokenGrant) (store.BuildChange, bool, error)
	CancelBuild(ctx context.Context, id string, now int64) (domain.Build, error)
	FinishBuild(ctx context.Context, f store.Finish) error
	TimeoutBuild(ctx context.Context, buildID, workerID string, cutoff, now int64, maxAttempts int) (domain.TimeoutOutcome, error)
	AbandonBuild(ctx context.Context, buildID, workerID, reason string, now int64, maxAttempts int) (domain.TimeoutOutcome, error)
	RequeueOnUnregister(ctx context.Context, workerID string, now int64) (string, error)
	RegisterWorker(ctx context.Context, r store.Registration) (domain.Worker, bool, error)
	SetWorkerStatus(ctx context.Context, id string, status domain.WorkerStatus, seenAt int64) error
	SaveLastSeen(ctx context.Context, seen map[string]int64) error
	Sync() error
}

// Files is what the queue manager needs from the file storage service.
type Files interface {
	Link(srcRel string, kind files.Kind, id, ext string) (string, error)
	Delete(rel string) error
}

// Config holds the queue manager's settings.
type Config struct {
	MaxAttempts int           // build timeouts before a build fails (domain.DefaultMaxAttempts)
	CallTimeout time.Duration // bound of every call (DefaultCallTimeout)
	MaxRetries  int           // retries per submitted build for build-token callers (DefaultMaxRetries)
	MaxWaiters  int           // polls held at once (DefaultMaxWaiters)
	// Observer is told of assignments and finishes (metrics); nil: nobody.
	Observer Observer
	// OTPTTL, when set, makes each assignment mint its job's one-time
	// password (Job.OTP), valid this long, and store it in the assignment's
	// own transaction; 0 leaves every OTP to the caller (store.IssueOTP).
	OTPTTL time.Duration
	// Shared: other nodes write the same store (PostgreSQL): memory is a
	// cache, refreshed when the store's Listener says builds changed
	// (Changed) and reloaded whenever a request finds it out of step.
	Shared bool
}

// Observer receives timings of builds as the manager commits them. It is
// called on the manager's goroutine and must not block.
type Observer interface {
	// Assigned: a build waited wait between its submission and this
	// assignment.
	Assigned(p domain.Platform, wait time.Duration)
	// Finished: a build ended (outcome "completed" or "failed") d after its
	// last assignment.
	Finished(p domain.Platform, outcome string, d time.Duration)
}

type noObserver struct{}

func (noObserver) Assigned(domain.Platform, time.Duration)         {}
func (noObserver) Finished(domain.Platform, string, time.Duration) {}

// Manager is the queue manager. Every change is committed to the store
// before it is answered, and Serve rebuilds its state from the store each
// time it starts, so a restart loses nothing.
type Manager struct {
	store  Store
	files  Files
	clock  clock.Clock
	log    *slog.Logger
	cfg    Config
	inbox  chan request
	reload chan struct{} // "the store may hold pending builds I do not know": coalescing kick

	// Builds another node changed (Changed), taken by Serve on a kick of
	// changedC; changedAll means "reload everything".
	changedMu  sync.Mutex
	changed    []store.BuildChange // in commit order
	changedAll bool
	changedC   chan struct{}

	// Monotonic event counters, written by Serve, read by anyone (metrics).
	assignments, requeues, timeouts, timeoutFailures, finishes atomic.Int64
	waiting                                                    atomic.Int64 // held polls now

	release     chan struct{} // closed by Release: held polls let go
	releaseOnce sync.Once
}

// New returns a queue manager; it starts nothing.
func New(st Store, fs Files, clk clock.Clock, log *slog.Logger, cfg Config) *Manager {
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = domain.DefaultMaxAttempts
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = DefaultCallTimeout
	}
	if cfg.MaxWaiters <= 0 {
		cfg.MaxWaiters = DefaultMaxWaiters
	}
	if cfg.MaxRetries <= 0 {
		cfg.MaxRetries = DefaultMaxRetries
	}
	if cfg.Observer == nil {
		cfg.Observer = noObserver{}
	}
	return &Manager{store: st, files: fs, clock: clk, log: log, cfg: cfg,
		inbox: make(chan request), reload: make(chan struct{}, 1), release: make(chan struct{}),
		changedC: make(chan struct{}, 1)}
}

// String names the service in supervisor logs.
func (m *Manager) String() string { return "queue-manager" }

// Counters are the queue manager's monotonic event counts since start.
type Counters struct {
	Assignments     int64 // builds handed to a worker
	Requeues        int64 // running builds returned to pending (timeout or unregister)
	Timeouts        int64 // builds whose liveness expired (requeued or failed)
	TimeoutFailures int64 // builds failed because their attempts were used up
	Finishes        int64 // uploads that completed or failed a build
}

// Counters returns the event counts; it does not go through the inbox.
func (m *Manager) Counters() Counters {
	return Counters{Assignments: m.assignments.Load(), Requeues: m.requeues.Load(), Timeouts: m.timeouts.Load(),
		TimeoutFailures: m.timeoutFailures.Load(), Finishes: m.finishes.Load()}
}

// request is one operation to run on the manager's goroutine: run does it
// and answers; fail answers it when it cannot run (a panic, a failed reload).
type request struct {
	run  func(*state)
	fail func(error)
}

type result[T any] struct {
	val T
	err error
}

// ask runs op on the manager's goroutine and returns its answer. Sending and
// waiting are both bounded by ctx and the call timeout. Every operation of
// the manager is one call of ask (or askDurable) with its body in one place.
func ask[T any](ctx context.Context, m *Manager, op func(ctx context.Context, s *state) (T, error)) (T, error) {
	var zero T
	ctx, cancel := context.WithTimeout(ctx, m.cfg.CallTimeout)
	defer cancel()
	reply := make(chan result[T], 1) // buffered: Serve never blocks on it
	req := request{
		run: func(s *state) {
			v, err := op(ctx, s)
			reply <- result[T]{v, err}
		},
		fail: func(err error) {
			select {
			case reply <- result[T]{zero, err}:
			default: // already answered
			}
		},
	}
	select {
	case m.inbox <- req:
	case <-ctx.Done():
		return zero, fmt.Errorf("%w: %v", errNotDelivered, ctx.Err())
	}
	select {
	case res := <-reply:
		return res.val, res.err
	case <-ctx.Done():
		return zero, fmt.Errorf("%w: %v", ErrUnavailable, ctx.Err())
	}
}

// askDurable is ask for an operation that writes: its store writes commit
// under store.DeferSync, so the manager's goroutine never waits for an
// fsync, and the caller waits for durability here, before its answer
// reaches anyone — concurrent callers share one fsync.
func askDurable[T any](ctx context.Context, m *Manager, op func(ctx context.Context, s *state) (T, error)) (T, error) {
	v, err := ask(store.DeferSync(ctx), m, op)
	if err != nil {
		return v, err
	}
	if err := m.store.Sync(); err != nil {
		var zero T
		return zero, err
	}
	return v, nil
}

// Serve loads the queue from the store and runs requests until ctx ends. A
// failed load is returned, so the supervisor retries with backoff rather
// than serving an empty queue. (Recovery after a process start — builds of
// vanished workers requeued, liveness reset — runs once before the tree
// starts: store.Recover.)
func (m *Manager) Serve(ctx context.Context) error {
	s := &state{}
	if err := m.load(ctx, s); err != nil {
		return fmt.Errorf("load queue: %w", err)
	}
	var current *request
	release := m.release
	defer m.releaseWaiters(s) // their goroutines must not wait for a state that is gone
	defer func() {
		if r := recover(); r != nil {
			m.log.Error("queue manager panicked; the supervisor restarts it from the store",
				"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			if current != nil {
				current.fail(ErrPanicked)
			}
			panic(r) // suture records the failure and restarts Serve
		}
	}()
	for {
		select {
		case <-ctx.Done():
			m.saveSeen(s)
			return ctx.Err()
		case <-m.changedC:
			if err := m.applyChanged(ctx, s); err != nil {
				return fmt.Errorf("refresh queue: %w", err)
			}
		case <-m.reload:
			s.stale = true
			if len(s.waiters) > 0 {
				// Held polls wait for no request: serve them now.
				if err := m.load(ctx, s); err != nil {
					return fmt.Errorf("reload queue: %w", err)
				}
				m.serveWaiters(s)
			}
		case <-release:
			m.releaseWaiters(s)
			release = nil // Release is final: stop selecting on it (a nil channel blocks)
		case req := <-m.inbox:
			current = &req // from here a panic answers it, the reload's too
			if s.stale {
				if err := m.load(ctx, s); err != nil {
					req.fail(fmt.Errorf("reload queue: %w", err))
					return fmt.Errorf("reload queue: %w", err)
				}
				m.serveWaiters(s) // the reload may have found builds for them
			}
			req.run(s)
			current = nil
		}
	}
}

// maxChanged bounds the changes waiting for the manager; beyond it, it
// reloads everything instead.
const maxChanged = 10000

// Changed tells the manager what another node made of these builds
// (store.Listener, in commit order), or, with all, that possibly any build
// changed: it applies them (reading the builds a change does not describe
// enough, or reloading everything) before its next request, and at once
// when it holds polls. It never blocks.
func (m *Manager) Changed(changed []store.BuildChange, all bool) {
	m.changedMu.Lock()
	if all || len(m.changed)+len(changed) > maxChanged {
		m.changedAll, m.changed = true, nil
	} else if !m.changedAll {
		m.changed = append(m.changed, changed...)
	}
	m.changedMu.Unlock()
	select {
	case m.changedC <- struct{}{}:
	default:
	}
}

// applyChanged brings memory up to the store for the changes Changed
// passed: a full reload when it was told "all" (or memory is stale anyway),
// else each change applied in order (state.apply), a build read where the
// change is not enough. Held polls are then served.
func (m *Manager) applyChanged(ctx context.Context, s *state) error {
	m.changedMu.Lock()
	changed, all := m.changed, m.changedAll
	m.changed, m.changedAll = nil, false
	m.changedMu.Unlock()
	if !all && !s.stale {
		read := map[string]bool{} // read now: the batch's later changes are older
		for _, c := range changed {
			if s.stale {
				break // reloaded below
			}
			if read[c.ID] || s.apply(c) {
				continue
			}
			read[c.ID] = true
			if err := m.readBuild(ctx, s, c.ID); err != nil {
				return err
			}
		}
	}
	if all || s.stale {
		// Every change of the batch committed before this snapshot.
		if err := m.load(ctx, s); err != nil {
			return err
		}
	}
	m.serveWaiters(s)
	return nil
}

// refreshBuild re-reads one build into memory (state.refresh); when that
// leaves memory stale (a worker it does not know), everything is reloaded.
func (m *Manager) refreshBuild(ctx context.Context, s *state, id string) error {
	if err := m.readBuild(ctx, s, id); err != nil {
		return err
	}
	if s.stale {
		return m.load(ctx, s)
	}
	return nil
}

// readBuild re-reads one build into memory (state.refresh), which may
// leave it stale.
func (m *Manager) readBuild(ctx context.Context, s *state, id string) error {
	b, err := m.store.GetBuild(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		s.end(id)
		return nil
	}
	if err != nil {
		return err
	}
	s.refresh(b)
	return nil
}

// kickReload flags the state for a reload from the store before the next
// request, and reloads at once when polls are held (they wait for no
// request); repeated kicks coalesce.
func (m *Manager) kickReload() {
	select {
	case m.reload <- struct{}{}:
	default:
	}
}

func (m *Manager) now() int64 { return clock.Millis(m.clock) }

// observeFinish tells the observer a running build ended at now.
func (m *Manager) observeFinish(rb *runningBuild, outcome string, now int64) {
	if rb == nil || rb.assignedAt == 0 {
		return // not known to memory, or assigned before the time was kept
	}
	m.cfg.Observer.Finished(rb.platform, outcome, millis(now-rb.assignedAt))
}

// millis is a span of epoch milliseconds (never negative).
func millis(ms int64) time.Duration { return time.Duration(max(ms, 0)) * time.Millisecond }
