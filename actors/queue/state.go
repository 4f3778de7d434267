package queue

import (
	"context"
	"slices"
	"sort"

	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

// state is everything Serve owns. Nothing else reads or writes it.
type state struct {
	pending []queuedBuild            // sorted by (submittedAt, id)
	queued  map[string]bool          // ids in pending
	workers map[string]*workerEntry  // by worker id
	running map[string]*runningBuild // by build id
	seen    map[string]int64         // last-seen times not yet saved
	waiters []*waiter                // held polls, oldest first
	ended   endedSet                 // builds known to have ended (a shared store: changes for them are old)
	taken   map[string]int64         // a shared store: pending builds the store had none of, until when (epoch ms) they are not asked for
	stale   bool                     // memory may disagree with the store: reload before the next request
}

// queuedBuild is a pending build in the FIFO.
type queuedBuild struct {
	id          string
	platform    domain.Platform
	submittedAt int64
	hasCerts    bool
	assignment  int // pending: assignments so far; running: this one's number
}

// before is the queue order (docs/API.md §5.4): submit time, then id.
func (a queuedBuild) before(b queuedBuild) bool {
	return a.submittedAt < b.submittedAt || (a.submittedAt == b.submittedAt && a.id < b.id)
}

func toQueued(b domain.Build) queuedBuild {
	return queuedBuild{id: b.ID, platform: b.Platform, submittedAt: b.SubmittedAt, hasCerts: b.CertsPath != nil,
		assignment: b.Assignment}
}

// workerEntry is the manager's record of one worker.
type workerEntry struct {
	id        string
	name      string
	platforms map[domain.Platform]bool // nil: any platform
	status    domain.WorkerStatus
	lastSeen  int64
	job       *runningBuild
}

func (w *workerEntry) accepts(p domain.Platform) bool {
	return w.platforms == nil || w.platforms[p]
}

// platformList is the worker's platforms in order, nil for any.
func (w *workerEntry) platformList() []domain.Platform {
	if w.platforms == nil {
		return nil
	}
	out := make([]domain.Platform, 0, len(w.platforms))
	for p, ok := range w.platforms {
		if ok {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// runningBuild is an assigned or building build.
type runningBuild struct {
	queuedBuild
	workerID   string
	assignedAt int64 // epoch ms of the assignment (0 if unknown)
}

// load rebuilds the state from the store, keeping last-seen times not yet
// saved.
func (m *Manager) load(ctx context.Context, s *state) error {
	pending, err := m.store.PendingBuilds(ctx)
	if err != nil {
		return err
	}
	running, err := m.store.RunningBuilds(ctx)
	if err != nil {
		return err
	}
	workers, err := m.store.ListWorkers(ctx)
	if err != nil {
		return err
	}
	seen, waiters, ended := s.seen, s.waiters, s.ended // held polls outlive a reload; an end is final
	*s = state{
		waiters: waiters,
		ended:   ended,
		queued:  make(map[string]bool, len(pending)),
		workers: make(map[string]*workerEntry, len(workers)),
		running: make(map[string]*runningBuild, len(running)),
		seen:    map[string]int64{},
	}
	for _, b := range pending {
		s.pending = append(s.pending, toQueued(b))
		s.queued[b.ID] = true
	}
	for _, w := range workers {
		e := &workerEntry{id: w.ID, name: w.Name, platforms: platformsOf(w.Capabilities),
			status: w.Status, lastSeen: w.LastSeenAt}
		if t, ok := seen[w.ID]; ok && t > e.lastSeen {
			e.lastSeen = t
			s.seen[w.ID] = t
		}
		s.workers[w.ID] = e
	}
	for _, b := range running {
		rb := &runningBuild{queuedBuild: toQueued(b), workerID: *b.WorkerID}
		if b.StartedAt != nil {
			rb.assignedAt = *b.StartedAt
		}
		s.running[b.ID] = rb
		if w := s.workers[rb.workerID]; w != nil {
			w.job = rb
		}
	}
	return nil
}

// platformsOf reads capabilities.platforms (domain.PlatformsOf).
func platformsOf(capabilities string) map[domain.Platform]bool {
	return domain.PlatformsOf(capabilities)
}

// enqueue puts a build at its place in the FIFO (once).
func (s *state) enqueue(b queuedBuild) {
	if s.queued[b.id] {
		return
	}
	i := sort.Search(len(s.pending), func(i int) bool { return b.before(s.pending[i]) })
	s.pending = append(s.pending, queuedBuild{})
	copy(s.pending[i+1:], s.pending[i:])
	s.pending[i] = b
	s.queued[b.id] = true
}

func (s *state) dequeue(id string) {
	if !s.queued[id] {
		return
	}
	for i, b := range s.pending {
		if b.id == id {
			s.pending = append(s.pending[:i], s.pending[i+1:]...)
			break
		}
	}
	delete(s.queued, id)
	delete(s.taken, id)
}

// detach forgets that the build is running and frees its worker.
func (s *state) detach(buildID string) {
	rb := s.running[buildID]
	if rb == nil {
		return
	}
	delete(s.running, buildID)
	if w := s.workers[rb.workerID]; w != nil && w.job == rb {
		w.job = nil
		if w.status == domain.WorkerBuilding {
			w.status = domain.WorkerIdle
		}
	}
}

// requeue returns a running build to its place in the FIFO; without a
// record of it, the state reloads from the store.
func (s *state) requeue(buildID string) {
	rb := s.running[buildID]
	if rb == nil {
		s.stale = true
		return
	}
	s.detach(buildID)
	s.enqueue(rb.queuedBuild)
}

// end forgets a build that ended (finished, or deleted): it leaves the queue
// or its worker, and changes of it that arrive late are ignored.
func (s *state) end(buildID string) {
	s.dequeue(buildID)
	s.detach(buildID)
	s.ended.add(buildID)
}

// refresh makes memory agree with the store's b, just read (a build another
// node changed): queued when pending, running with its worker when assigned
// or building, forgotten when finished. A worker memory does not know marks
// the state stale (reloaded before the next request).
func (s *state) refresh(b domain.Build) {
	if !s.apply(store.ChangeOf(b)) {
		s.dequeue(b.ID) // neither pending, running with a worker, nor ended
		s.detach(b.ID)
	}
}

// apply makes memory agree with a change another node committed
// (Manager.Changed), unless memory already has it or a later one: changes
// of a build are ordered by its assignment number (a pending build with n
// assignments comes after its n-th assignment and before the next), and an
// ended build changes no more. It reports false when the change does not
// say enough (its kind, or the queue fields of a build memory does not
// know): the caller reads the build. A worker memory does not know, or one
// memory has on another build, marks the state stale.
func (s *state) apply(c store.BuildChange) bool {
	if s.ended.has(c.ID) {
		return true // ended is final: whatever this says is older
	}
	rb, queued := s.running[c.ID], s.queuedEntry(c.ID)
	var known *queuedBuild // memory's record of the build, if any
	switch {
	case rb != nil:
		known = &rb.queuedBuild
	case queued != nil:
		known = queued
	}
	switch c.Kind {
	case store.ChangeEnded:
		s.end(c.ID)
		return true
	case store.ChangePending:
		switch {
		case rb != nil && c.Assignment >= rb.assignment: // requeued
			qb := rb.queuedBuild
			s.detach(c.ID)
			qb.assignment = c.Assignment
			s.enqueue(qb)
		case queued != nil:
			queued.assignment = max(queued.assignment, c.Assignment)
		case rb == nil:
			q, ok := queuedOf(c)
			if !ok {
				return false
			}
			s.enqueue(q)
		}
		return true // (or older than memory's running assignment)
	case store.ChangeRunning:
		if rb != nil && (c.Assignment < rb.assignment || (c.Assignment == rb.assignment && c.WorkerID == rb.workerID)) {
			return true // memory has it, or a later assignment
		}
		if queued != nil && c.Assignment <= queued.assignment {
			return true // memory has it requeued since
		}
		var qb queuedBuild
		if known != nil {
			qb = *known
		} else if q, ok := queuedOf(c); ok {
			qb = q
		} else {
			return false
		}
		qb.assignment = c.Assignment
		s.dequeue(c.ID)
		s.detach(c.ID)
		w := s.workers[c.WorkerID]
		if w == nil || (w.job != nil && w.job.id != c.ID) {
			s.stale = true // registered elsewhere, or memory was behind on that build too
			return true
		}
		rb := &runningBuild{queuedBuild: qb, workerID: w.id, assignedAt: c.StartedAt}
		s.running[c.ID] = rb
		w.job, w.status = rb, domain.WorkerBuilding
		return true
	}
	return false
}

// queuedOf is the queue record a change carries, if it carries one.
func queuedOf(c store.BuildChange) (queuedBuild, bool) {
	if c.Platform == "" {
		return queuedBuild{}, false
	}
	return queuedBuild{id: c.ID, platform: c.Platform, submittedAt: c.SubmittedAt, hasCerts: c.Certs,
		assignment: c.Assignment}, true
}

// queuedEntry is the pending build's entry in the FIFO, nil when not queued.
func (s *state) queuedEntry(id string) *queuedBuild {
	if !s.queued[id] {
		return nil
	}
	for i := range s.pending {
		if s.pending[i].id == id {
			return &s.pending[i]
		}
	}
	return nil
}

// endedSet remembers the last maxEnded builds known to have ended, oldest
// forgotten first.
type endedSet struct {
	ids   map[string]bool
	order []string // the ids in a ring; once full, next is the oldest
	next  int
}

const maxEnded = 4096

func (e *endedSet) has(id string) bool { return e.ids[id] }

func (e *endedSet) add(id string) {
	if e.ids[id] {
		return
	}
	if e.ids == nil {
		e.ids = make(map[string]bool)
	}
	if len(e.order) < maxEnded {
		e.order = append(e.order, id)
	} else {
		delete(e.ids, e.order[e.next])
		e.order[e.next] = id
		e.next = (e.next + 1) % maxEnded
	}
	e.ids[id] = true
}

// markSeen records that a worker was seen; an offline worker comes back
// (building if it holds a build, else idle), which is saved at once.
func (m *Manager) markSeen(ctx context.Context, s *state, w *workerEntry, now int64) error {
	if now > w.lastSeen {
		w.lastSeen = now
		s.seen[w.id] = now
	}
	if w.status != domain.WorkerOffline {
		return nil
	}
	status := domain.WorkerIdle
	if w.job != nil {
		status = domain.WorkerBuilding
	}
	if err := m.store.SetWorkerStatus(ctx, w.id, status, now); err != nil {
		return err
	}
	w.status = status
	m.log.Info("worker back online", "worker", w.name, "status", status)
	return nil
}

// flushSeen writes the last-seen times not yet saved.
func (m *Manager) flushSeen(ctx context.Context, s *state) error {
	if err := m.store.SaveLastSeen(ctx, s.seen); err != nil {
		return err
	}
	s.seen = map[string]int64{}
	return nil
}

// saveSeen is flushSeen at shutdown, under its own deadline.
func (m *Manager) saveSeen(s *state) {
	if len(s.seen) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), store.DefaultOpTimeout)
	defer cancel()
	if err := m.flushSeen(ctx, s); err != nil {
		m.log.Warn("saving worker last-seen times", "err", err)
	}
}
