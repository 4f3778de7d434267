package actors

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sort"
	"sync/atomic"
	"time"

	"github.com/expo-free-agent/controller/store"
)

// DefaultCallTimeout bounds every call into an actor, so that no caller waits
// forever on a dead or restarting one.
const DefaultCallTimeout = 15 * time.Second

var (
	// ErrUnavailable means the actor did not answer in time (it may be
	// restarting); the request had no effect unless stated otherwise.
	ErrUnavailable = errors.New("actor unavailable")
	// ErrActorPanic means the actor panicked while handling the request and is
	// being restarted by its supervisor.
	ErrActorPanic = errors.New("actor panicked")
	// ErrFinished means a worker uploaded for a build it already finished.
	ErrFinished = errors.New("build already finished")
	// errNotDelivered is ErrUnavailable for a request the actor never received.
	errNotDelivered = fmt.Errorf("%w: request not delivered", ErrUnavailable)
)

// QueueStore is what the queue manager needs from the database.
type QueueStore interface {
	PendingBuilds(ctx context.Context) ([]store.Build, error)
	RunningBuilds(ctx context.Context) ([]store.Build, error)
	ListWorkers(ctx context.Context) ([]store.Worker, error)
	GetBuild(ctx context.Context, id string) (store.Build, error)
	CreateBuild(ctx context.Context, nb store.NewBuild) error
	AssignBuild(ctx context.Context, buildID, workerID string, now int64) error
	CancelBuild(ctx context.Context, id string, now int64) (store.Build, error)
	FinishBuild(ctx context.Context, f store.Finish) error
	TimeoutBuild(ctx context.Context, buildID, workerID string, cutoff, now int64, maxAttempts int) (store.TimeoutOutcome, error)
	RequeueOnUnregister(ctx context.Context, workerID string, now int64) (string, error)
	RegisterWorker(ctx context.Context, r store.Registration) (store.Worker, bool, error)
	SetWorkerStatus(ctx context.Context, id, status string, seenAt int64) error
	SaveLastSeen(ctx context.Context, seen map[string]int64) error
	Sync() error
}

// Job is a build handed to a worker.
type Job struct {
	BuildID  string
	Platform string
	HasCerts bool
}

// QueueStats is the queue manager's view of the queue.
type QueueStats struct {
	Pending int // builds waiting in the queue
	Running int // builds held by a worker (assigned or building)
	Workers int // known workers
}

// QueueConfig holds the queue manager's settings.
type QueueConfig struct {
	MaxAttempts int // timeouts before a build fails (default 3)
	CallTimeout time.Duration
}

// QueueManager is the single owner of build assignment. One goroutine (Serve)
// owns the FIFO of pending builds and the directory of workers with the build
// each one holds; every change of assignment — submit, poll, finish, cancel,
// timeout, unregister, register — is a message to it, so no build can go to
// two workers and no worker can hold two builds. Every change is committed to
// the store before it is answered, and Serve rebuilds its state from the store
// each time it starts, so a restart loses nothing.
type QueueManager struct {
	store  QueueStore
	files  *FileStore
	clock  Clock
	log    *slog.Logger
	cfg    QueueConfig
	inbox  chan message
	reload chan struct{} // "the store may hold pending builds I do not know": coalescing kick

	// Monotonic event counters, written by Serve, read by anyone (metrics).
	assignments, requeues, timeouts, timeoutFailures, finishes atomic.Int64
}

// Counters are the queue manager's monotonic event counts since start.
type Counters struct {
	Assignments     int64 // builds handed to a worker
	Requeues        int64 // running builds returned to pending (timeout or unregister)
	Timeouts        int64 // builds whose liveness expired (requeued or failed)
	TimeoutFailures int64 // builds failed because their attempts were used up
	Finishes        int64 // uploads that completed or failed a build
}

// Counters returns the event counts; it does not go through the inbox.
func (q *QueueManager) Counters() Counters {
	return Counters{Assignments: q.assignments.Load(), Requeues: q.requeues.Load(), Timeouts: q.timeouts.Load(),
		TimeoutFailures: q.timeoutFailures.Load(), Finishes: q.finishes.Load()}
}

// NewQueueManager returns a queue manager; it starts nothing.
func NewQueueManager(st QueueStore, files *FileStore, clock Clock, log *slog.Logger, cfg QueueConfig) *QueueManager {
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 3
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = DefaultCallTimeout
	}
	return &QueueManager{store: st, files: files, clock: clock, log: log, cfg: cfg,
		inbox: make(chan message), reload: make(chan struct{}, 1)}
}

// String names the service in supervisor logs.
func (q *QueueManager) String() string { return "queue-manager" }

// queuedBuild is a pending build in the FIFO.
type queuedBuild struct {
	id          string
	platform    string
	submittedAt int64
	hasCerts    bool
}

func (a queuedBuild) before(b queuedBuild) bool {
	return a.submittedAt < b.submittedAt || (a.submittedAt == b.submittedAt && a.id < b.id)
}

// workerEntry is the queue manager's record of one worker.
type workerEntry struct {
	id        string
	name      string
	platforms map[string]bool // nil: any platform
	status    string
	lastSeen  int64
	job       *runningBuild
}

func (w *workerEntry) accepts(platform string) bool {
	return w.platforms == nil || w.platforms[platform]
}

// runningBuild is an assigned or building build.
type runningBuild struct {
	queuedBuild
	workerID string
}

// queueState is everything Serve owns. Nothing else reads or writes it.
type queueState struct {
	pending []queuedBuild            // sorted by (submittedAt, id)
	queued  map[string]bool          // ids in pending
	workers map[string]*workerEntry  // by worker id
	running map[string]*runningBuild // by build id
	seen    map[string]int64         // last-seen times not yet saved
	stale   bool                     // memory may disagree with the store: reload before the next message
}

// message is the closed set of requests Serve handles.
type message interface {
	handle(q *QueueManager, st *queueState)
	fail(err error)
}

// reply is the answer channel of a message, buffered so Serve never blocks.
type reply[T any] struct {
	ch chan result[T]
}

type result[T any] struct {
	val T
	err error
}

func newReply[T any]() reply[T] { return reply[T]{ch: make(chan result[T], 1)} }

func (r reply[T]) send(v T, err error) { r.ch <- result[T]{v, err} }

func (r reply[T]) fail(err error) {
	var zero T
	select {
	case r.ch <- result[T]{zero, err}:
	default:
	}
}

// callDurable is call for a message whose handler may write: the handler's
// store writes do not wait for durability (store.DeferSync, so the queue
// manager's goroutine never waits for an fsync), and the caller waits for it
// here, before its answer reaches anyone.
func callDurable[T any](ctx context.Context, q *QueueManager, m message, r reply[T]) (T, error) {
	v, err := call(ctx, q, m, r)
	if err != nil {
		return v, err
	}
	if err := q.store.Sync(); err != nil {
		var zero T
		return zero, err
	}
	return v, nil
}

// call sends m and waits for its answer, both bounded by ctx and the call
// timeout.
func call[T any](ctx context.Context, q *QueueManager, m message, r reply[T]) (T, error) {
	var zero T
	ctx, cancel := context.WithTimeout(ctx, q.cfg.CallTimeout)
	defer cancel()
	select {
	case q.inbox <- m:
	case <-ctx.Done():
		return zero, fmt.Errorf("%w: %v", errNotDelivered, ctx.Err())
	}
	select {
	case res := <-r.ch:
		return res.val, res.err
	case <-ctx.Done():
		return zero, fmt.Errorf("%w: %v", ErrUnavailable, ctx.Err())
	}
}

// Serve loads the queue from the store and handles messages until ctx ends.
// A failed load is returned, so the supervisor retries with backoff rather
// than serving an empty queue. (Recovery after a process start — builds of
// vanished workers requeued, liveness reset — runs once before the tree
// starts: store.Recover.)
func (q *QueueManager) Serve(ctx context.Context) error {
	st := &queueState{}
	if err := q.load(ctx, st); err != nil {
		return fmt.Errorf("load queue: %w", err)
	}
	var current message
	defer func() {
		if r := recover(); r != nil {
			q.log.Error("queue manager panicked; the supervisor restarts it from the store",
				"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			if current != nil {
				current.fail(ErrActorPanic)
			}
			panic(r) // suture records the failure and restarts Serve
		}
	}()
	for {
		select {
		case <-ctx.Done():
			q.saveSeen(st)
			return ctx.Err()
		case <-q.reload:
			st.stale = true
		case m := <-q.inbox:
			if st.stale {
				if err := q.load(ctx, st); err != nil {
					m.fail(fmt.Errorf("reload queue: %w", err))
					return fmt.Errorf("reload queue: %w", err)
				}
			}
			current = m
			m.handle(q, st)
			current = nil
		}
	}
}

// load rebuilds the state from the store.
func (q *QueueManager) load(ctx context.Context, st *queueState) error {
	pending, err := q.store.PendingBuilds(ctx)
	if err != nil {
		return err
	}
	running, err := q.store.RunningBuilds(ctx)
	if err != nil {
		return err
	}
	workers, err := q.store.ListWorkers(ctx)
	if err != nil {
		return err
	}
	seen := st.seen
	*st = queueState{
		queued:  make(map[string]bool, len(pending)),
		workers: make(map[string]*workerEntry, len(workers)),
		running: make(map[string]*runningBuild, len(running)),
		seen:    map[string]int64{},
	}
	for _, b := range pending {
		st.pending = append(st.pending, toQueued(b))
		st.queued[b.ID] = true
	}
	for _, w := range workers {
		e := &workerEntry{id: w.ID, name: w.Name, platforms: platformsOf(w.Capabilities),
			status: w.Status, lastSeen: w.LastSeenAt}
		if t, ok := seen[w.ID]; ok && t > e.lastSeen {
			e.lastSeen = t
			st.seen[w.ID] = t
		}
		st.workers[w.ID] = e
	}
	for _, b := range running {
		rb := &runningBuild{queuedBuild: toQueued(b), workerID: *b.WorkerID}
		st.running[b.ID] = rb
		if w := st.workers[rb.workerID]; w != nil {
			w.job = rb
		}
	}
	return nil
}

func toQueued(b store.Build) queuedBuild {
	return queuedBuild{id: b.ID, platform: b.Platform, submittedAt: b.SubmittedAt, hasCerts: b.CertsPath != nil}
}

// platformsOf reads capabilities.platforms: an array limits the worker to the
// platforms it lists; anything else means any platform.
func platformsOf(capabilities string) map[string]bool {
	var caps struct {
		Platforms json.RawMessage `json:"platforms"`
	}
	if json.Unmarshal([]byte(capabilities), &caps) != nil || len(caps.Platforms) == 0 {
		return nil
	}
	var list []any
	if json.Unmarshal(caps.Platforms, &list) != nil {
		return nil
	}
	set := map[string]bool{}
	for _, p := range list {
		if s, ok := p.(string); ok {
			set[s] = true
		}
	}
	return set
}

func (st *queueState) enqueue(b queuedBuild) {
	if st.queued[b.id] {
		return
	}
	i := sort.Search(len(st.pending), func(i int) bool { return b.before(st.pending[i]) })
	st.pending = append(st.pending, queuedBuild{})
	copy(st.pending[i+1:], st.pending[i:])
	st.pending[i] = b
	st.queued[b.id] = true
}

func (st *queueState) dequeue(id string) {
	if !st.queued[id] {
		return
	}
	for i, b := range st.pending {
		if b.id == id {
			st.pending = append(st.pending[:i], st.pending[i+1:]...)
			break
		}
	}
	delete(st.queued, id)
}

// detach forgets that the build is running and frees its worker.
func (st *queueState) detach(buildID string) {
	rb := st.running[buildID]
	if rb == nil {
		return
	}
	delete(st.running, buildID)
	if w := st.workers[rb.workerID]; w != nil && w.job == rb {
		w.job = nil
		if w.status == store.WorkerBuilding {
			w.status = store.WorkerIdle
		}
	}
}

// markSeen records that a worker was seen; an offline worker comes back
// (building if it holds a build, else idle), which is saved at once.
func (q *QueueManager) markSeen(ctx context.Context, st *queueState, w *workerEntry, now int64) error {
	if now > w.lastSeen {
		w.lastSeen = now
		st.seen[w.id] = now
	}
	if w.status != store.WorkerOffline {
		return nil
	}
	status := store.WorkerIdle
	if w.job != nil {
		status = store.WorkerBuilding
	}
	if err := q.store.SetWorkerStatus(ctx, w.id, status, now); err != nil {
		return err
	}
	w.status = status
	q.log.Info("worker back online", "worker", w.name, "status", status)
	return nil
}

func (q *QueueManager) saveSeen(st *queueState) {
	if len(st.seen) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), store.DefaultOpTimeout)
	defer cancel()
	if err := q.store.SaveLastSeen(ctx, st.seen); err != nil {
		q.log.Warn("saving worker last-seen times", "err", err)
		return
	}
	st.seen = map[string]int64{}
}

// ---- Submit ----------------------------------------------------------------

// Submit records a new pending build (a submit or a retry) and queues it. The
// row is committed by the caller's goroutine; the queue manager is then told
// to queue it. If that message cannot be delivered, the queue manager is
// flagged to reload pending builds from the store, so a committed build is
// never left out of the queue. It returns the store's errors.
func (q *QueueManager) Submit(ctx context.Context, nb store.NewBuild) error {
	if err := q.store.CreateBuild(ctx, nb); err != nil {
		return err
	}
	qb := queuedBuild{id: nb.ID, platform: nb.Platform, submittedAt: nb.SubmittedAt, hasCerts: nb.CertsPath != nil}
	r := newReply[struct{}]()
	if _, err := call(ctx, q, &enqueueMsg{b: qb, reply: r}, r); err != nil {
		q.kickReload()
		q.log.Warn("queueing a committed build failed; queue will reload from the store",
			"build_id", nb.ID, "err", err)
	}
	return nil
}

func (q *QueueManager) kickReload() {
	select {
	case q.reload <- struct{}{}:
	default:
	}
}

type enqueueMsg struct {
	b     queuedBuild
	reply reply[struct{}]
}

func (m *enqueueMsg) fail(err error) { m.reply.fail(err) }

func (m *enqueueMsg) handle(q *QueueManager, st *queueState) {
	// A build cancelled between its commit and this message is skipped at
	// assignment time (the store refuses to assign a non-pending build).
	if st.running[m.b.id] == nil {
		st.enqueue(m.b)
	}
	m.reply.send(struct{}{}, nil)
}

// ---- Poll ------------------------------------------------------------------

// Poll marks the worker seen and returns its job: the build it already holds
// (re-delivered unchanged), else the first pending build in queue order whose
// platform it accepts, assigned in one committed transaction; nil when nothing
// qualifies. It returns store.ErrWorkerNotFound for an unknown worker. On any
// other error the build keeps its place in the queue.
func (q *QueueManager) Poll(ctx context.Context, workerID string) (*Job, error) {
	r := newReply[*Job]()
	return callDurable(ctx, q, &pollMsg{ctx: store.DeferSync(ctx), workerID: workerID, reply: r}, r)
}

type pollMsg struct {
	ctx      context.Context
	workerID string
	reply    reply[*Job]
}

func (m *pollMsg) fail(err error) { m.reply.fail(err) }

func (m *pollMsg) handle(q *QueueManager, st *queueState) {
	m.reply.send(q.poll(m.ctx, st, m.workerID))
}

func (q *QueueManager) poll(ctx context.Context, st *queueState, workerID string) (*Job, error) {
	w := st.workers[workerID]
	if w == nil {
		return nil, store.ErrWorkerNotFound
	}
	if ctx.Err() != nil { // the caller is gone: hand nothing out
		return nil, ctx.Err()
	}
	now := millis(q.clock)
	if err := q.markSeen(ctx, st, w, now); err != nil {
		return nil, err
	}
	if w.job != nil {
		return jobOf(w.job), nil
	}
	for i := 0; i < len(st.pending); {
		b := st.pending[i]
		if !w.accepts(b.platform) {
			i++
			continue
		}
		err := q.store.AssignBuild(ctx, b.id, w.id, now)
		if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
			// A build cancelled between its commit and its queueing is no
			// longer pending: drop it and look further. Any other disagreement
			// between memory and the store makes the state reload.
			if cur, gerr := q.store.GetBuild(ctx, b.id); errors.Is(gerr, store.ErrNotFound) ||
				(gerr == nil && cur.Status != store.StatusPending) {
				st.dequeue(b.id)
				continue
			}
			st.stale = true
			q.log.Warn("queue out of step with the store; reloading", "build_id", b.id, "worker_id", w.id)
			return nil, fmt.Errorf("assign %s: %w", b.id, err)
		}
		if err != nil {
			return nil, err
		}
		st.dequeue(b.id)
		rb := &runningBuild{queuedBuild: b, workerID: w.id}
		st.running[b.id] = rb
		w.job, w.status = rb, store.WorkerBuilding
		q.assignments.Add(1)
		q.log.Info("build assigned", "build_id", b.id, "worker", w.name)
		return jobOf(rb), nil
	}
	return nil, nil
}

func jobOf(rb *runningBuild) *Job {
	return &Job{BuildID: rb.id, Platform: rb.platform, HasCerts: rb.hasCerts}
}

// ---- Seen ------------------------------------------------------------------

// Seen records that a worker made an accepted request. Unknown ids are
// ignored.
func (q *QueueManager) Seen(ctx context.Context, workerID string) error {
	r := newReply[struct{}]()
	_, err := callDurable(ctx, q, &seenMsg{ctx: store.DeferSync(ctx), workerID: workerID, reply: r}, r)
	return err
}

type seenMsg struct {
	ctx      context.Context
	workerID string
	reply    reply[struct{}]
}

func (m *seenMsg) fail(err error) { m.reply.fail(err) }

func (m *seenMsg) handle(q *QueueManager, st *queueState) {
	var err error
	if w := st.workers[m.workerID]; w != nil {
		err = q.markSeen(m.ctx, st, w, millis(q.clock))
	}
	m.reply.send(struct{}{}, err)
}

// ---- Register --------------------------------------------------------------

// Register creates or re-registers a worker (store.RegisterWorker) and updates
// the directory. It reports whether the worker was created.
func (q *QueueManager) Register(ctx context.Context, reg store.Registration) (store.Worker, bool, error) {
	r := newReply[registered]()
	res, err := callDurable(ctx, q, &registerMsg{ctx: store.DeferSync(ctx), reg: reg, reply: r}, r)
	return res.w, res.created, err
}

type registered struct {
	w       store.Worker
	created bool
}

type registerMsg struct {
	ctx   context.Context
	reg   store.Registration
	reply reply[registered]
}

func (m *registerMsg) fail(err error) { m.reply.fail(err) }

func (m *registerMsg) handle(q *QueueManager, st *queueState) {
	m.reg.Now = millis(q.clock)
	w, created, err := q.store.RegisterWorker(m.ctx, m.reg)
	if err != nil {
		m.reply.send(registered{}, err)
		return
	}
	e := st.workers[w.ID]
	if e == nil {
		e = &workerEntry{id: w.ID}
		st.workers[w.ID] = e
	}
	e.name, e.platforms, e.status, e.lastSeen = w.Name, platformsOf(w.Capabilities), w.Status, w.LastSeenAt
	delete(st.seen, w.ID)
	m.reply.send(registered{w, created}, nil)
}

// ---- Cancel ----------------------------------------------------------------

// Cancel fails an unfinished build as cancelled by the user: it leaves the
// queue, or its worker is freed (store.CancelBuild). It returns the build as it
// was before, store.ErrNotFound, or store.ErrConflict for a finished build.
func (q *QueueManager) Cancel(ctx context.Context, buildID string) (store.Build, error) {
	r := newReply[store.Build]()
	return callDurable(ctx, q, &cancelMsg{ctx: store.DeferSync(ctx), buildID: buildID, reply: r}, r)
}

type cancelMsg struct {
	ctx     context.Context
	buildID string
	reply   reply[store.Build]
}

func (m *cancelMsg) fail(err error) { m.reply.fail(err) }

func (m *cancelMsg) handle(q *QueueManager, st *queueState) {
	before, err := q.store.CancelBuild(m.ctx, m.buildID, millis(q.clock))
	if err == nil {
		st.dequeue(m.buildID)
		st.detach(m.buildID)
	}
	m.reply.send(before, err)
}

// ---- Finish ----------------------------------------------------------------

// FinishRequest is a worker's upload outcome.
type FinishRequest struct {
	BuildID      string
	WorkerID     string
	Success      bool
	ErrorMessage string
	Result       *Staged // the uploaded result, if any; consumed (committed or discarded)
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
// current assignee (§4.8 step 9): a file-less success for a build it
// completed is a no-op (true); a build it finished is ErrFinished; any other
// non-assignee is store.ErrNotAssignee; the assignee gets (false, nil).
func CheckUpload(b store.Build, workerID string, success, hasFile bool) (bool, error) {
	byThisWorker := b.WorkerID != nil && *b.WorkerID == workerID
	switch {
	case b.Status == store.StatusCompleted && byThisWorker && success && !hasFile:
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
func (q *QueueManager) Finish(ctx context.Context, req FinishRequest) (FinishOutcome, error) {
	r := newReply[FinishOutcome]()
	out, err := callDurable(ctx, q, &finishMsg{ctx: store.DeferSync(ctx), req: req, reply: r}, r)
	if errors.Is(err, errNotDelivered) {
		req.Result.Discard() // never seen by Serve, so still ours
	}
	return out, err
}

type finishMsg struct {
	ctx   context.Context
	req   FinishRequest
	reply reply[FinishOutcome]
}

func (m *finishMsg) fail(err error) { m.reply.fail(err) }

func (m *finishMsg) handle(q *QueueManager, st *queueState) {
	m.reply.send(q.finish(m.ctx, st, m.req))
}

func (q *QueueManager) finish(ctx context.Context, st *queueState, req FinishRequest) (FinishOutcome, error) {
	rb := st.running[req.BuildID]
	if rb == nil || rb.workerID != req.WorkerID {
		req.Result.Discard()
		b, err := q.store.GetBuild(ctx, req.BuildID)
		if err != nil {
			return 0, err
		}
		noop, err := CheckUpload(b, req.WorkerID, req.Success, req.Result != nil)
		if noop {
			return FinishNoChange, nil
		}
		if err == nil { // the store says assignee, memory says not
			st.stale = true
			err = store.ErrNotAssignee
		}
		return 0, err
	}
	f := store.Finish{BuildID: req.BuildID, WorkerID: req.WorkerID, Now: millis(q.clock),
		Success: req.Success && req.Result != nil, ErrorMessage: req.ErrorMessage}
	if f.Success {
		rel, err := req.Result.Commit(req.BuildID, ResultExt(rb.platform))
		if err != nil {
			q.removeResult(req.BuildID, rel)
			return 0, fmt.Errorf("commit result: %w", err)
		}
		f.ResultPath, f.ResultSize, f.ResultSHA256 = rel, req.Result.Size, req.Result.SHA256
	} else {
		req.Result.Discard()
	}
	if err := q.store.FinishBuild(ctx, f); err != nil {
		q.removeResult(req.BuildID, f.ResultPath)
		if errors.Is(err, store.ErrNotAssignee) || errors.Is(err, store.ErrNotFound) {
			st.stale = true
		}
		return 0, err
	}
	st.detach(req.BuildID)
	q.finishes.Add(1)
	if w := st.workers[req.WorkerID]; w != nil {
		w.status = store.WorkerIdle
		if f.Now > w.lastSeen {
			w.lastSeen = f.Now
		}
	}
	q.log.Info("build finished", "build_id", req.BuildID, "success", f.Success)
	if f.Success {
		return FinishCompleted, nil
	}
	return FinishFailed, nil
}

// removeResult deletes a result file that no committed build refers to.
func (q *QueueManager) removeResult(buildID, rel string) {
	if rel == "" {
		return
	}
	if err := q.files.Delete(rel); err != nil {
		q.log.Error("removing the result of a failed finish", "build_id", buildID, "err", err)
	}
}

// ---- Timeouts, unregister, presence -----------------------------------------

// ExpireBuild applies the build timeout to a build that showed no liveness
// since before cutoff (epoch ms): requeued at its place, or failed once the
// attempts are used up; its worker is freed. It is a no-op if the build has
// shown liveness since, or is no longer held by workerID.
func (q *QueueManager) ExpireBuild(ctx context.Context, buildID, workerID string, cutoff int64) (store.TimeoutOutcome, error) {
	r := newReply[store.TimeoutOutcome]()
	return callDurable(ctx, q, &expireMsg{ctx: store.DeferSync(ctx), buildID: buildID, workerID: workerID, cutoff: cutoff, reply: r}, r)
}

type expireMsg struct {
	ctx               context.Context
	buildID, workerID string
	cutoff            int64
	reply             reply[store.TimeoutOutcome]
}

func (m *expireMsg) fail(err error) { m.reply.fail(err) }

func (m *expireMsg) handle(q *QueueManager, st *queueState) {
	out, err := q.store.TimeoutBuild(m.ctx, m.buildID, m.workerID, m.cutoff, millis(q.clock), q.cfg.MaxAttempts)
	if err == nil && out != store.TimeoutNone {
		q.timeouts.Add(1)
		if out == store.TimeoutRequeued {
			q.requeues.Add(1)
		} else {
			q.timeoutFailures.Add(1)
		}
		rb := st.running[m.buildID]
		st.detach(m.buildID)
		if out == store.TimeoutRequeued && rb != nil {
			st.enqueue(rb.queuedBuild)
		} else if out == store.TimeoutRequeued {
			st.stale = true
		}
		q.log.Warn("build timed out", "build_id", m.buildID, "worker_id", m.workerID,
			"requeued", out == store.TimeoutRequeued)
	}
	m.reply.send(out, err)
}

// Unregister requeues the worker's build, if any, at its queue place and marks
// the worker offline. It returns how many builds were requeued (0 or 1), or
// store.ErrWorkerNotFound.
func (q *QueueManager) Unregister(ctx context.Context, workerID string) (int, error) {
	r := newReply[int]()
	return callDurable(ctx, q, &unregisterMsg{ctx: store.DeferSync(ctx), workerID: workerID, reply: r}, r)
}

type unregisterMsg struct {
	ctx      context.Context
	workerID string
	reply    reply[int]
}

func (m *unregisterMsg) fail(err error) { m.reply.fail(err) }

func (m *unregisterMsg) handle(q *QueueManager, st *queueState) {
	buildID, err := q.store.RequeueOnUnregister(m.ctx, m.workerID, millis(q.clock))
	if err != nil {
		m.reply.send(0, err)
		return
	}
	n := 0
	if buildID != "" {
		n = 1
		q.requeues.Add(1)
		if rb := st.running[buildID]; rb != nil {
			st.detach(buildID)
			st.enqueue(rb.queuedBuild)
		} else {
			st.stale = true
		}
	}
	if w := st.workers[m.workerID]; w != nil {
		w.status = store.WorkerOffline
	}
	m.reply.send(n, nil)
}

// SweepWorkers saves the workers' last-seen times and marks offline every
// worker not seen since before cutoff (epoch ms). It returns how many went
// offline. A worker's build is left to the build timeout.
func (q *QueueManager) SweepWorkers(ctx context.Context, cutoff int64) (int, error) {
	r := newReply[int]()
	return callDurable(ctx, q, &sweepMsg{ctx: store.DeferSync(ctx), cutoff: cutoff, reply: r}, r)
}

type sweepMsg struct {
	ctx    context.Context
	cutoff int64
	reply  reply[int]
}

func (m *sweepMsg) fail(err error) { m.reply.fail(err) }

func (m *sweepMsg) handle(q *QueueManager, st *queueState) {
	if err := q.store.SaveLastSeen(m.ctx, st.seen); err != nil {
		m.reply.send(0, err)
		return
	}
	st.seen = map[string]int64{}
	n := 0
	for _, w := range st.workers {
		if w.status == store.WorkerOffline || w.lastSeen >= m.cutoff {
			continue
		}
		if err := q.store.SetWorkerStatus(m.ctx, w.id, store.WorkerOffline, w.lastSeen); err != nil {
			m.reply.send(n, err)
			return
		}
		w.status = store.WorkerOffline
		n++
		q.log.Warn("worker offline: not seen within the worker timeout", "worker", w.name)
	}
	m.reply.send(n, nil)
}

// SaveSeen writes the workers' pending last-seen times to the store, so that
// readers of the database (public stats, the dashboard) see them now rather
// than at the next sweep.
func (q *QueueManager) SaveSeen(ctx context.Context) error {
	r := newReply[struct{}]()
	_, err := callDurable(ctx, q, &saveSeenMsg{ctx: store.DeferSync(ctx), reply: r}, r)
	return err
}

type saveSeenMsg struct {
	ctx   context.Context
	reply reply[struct{}]
}

func (m *saveSeenMsg) fail(err error) { m.reply.fail(err) }

func (m *saveSeenMsg) handle(q *QueueManager, st *queueState) {
	err := q.store.SaveLastSeen(m.ctx, st.seen)
	if err == nil {
		st.seen = map[string]int64{}
	}
	m.reply.send(struct{}{}, err)
}

// Stats returns the queue manager's counts.
func (q *QueueManager) Stats(ctx context.Context) (QueueStats, error) {
	r := newReply[QueueStats]()
	return call(ctx, q, &statsMsg{reply: r}, r)
}

type statsMsg struct{ reply reply[QueueStats] }

func (m *statsMsg) fail(err error) { m.reply.fail(err) }

func (m *statsMsg) handle(_ *QueueManager, st *queueState) {
	m.reply.send(QueueStats{Pending: len(st.pending), Running: len(st.running), Workers: len(st.workers)}, nil)
}
