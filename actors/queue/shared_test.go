package queue

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

// otherNode is a second node's writes, made through the store directly:
// this manager learns of them only through Changed or when a request finds
// its memory out of step (Config.Shared).
func (b *bundle) otherNodeSubmits(t *testing.T, p domain.Platform, after time.Duration) string {
	t.Helper()
	id := uuid.NewString()
	require.NoError(t, b.st.CreateBuild(t.Context(), store.NewBuild{ID: id, Platform: p, SubmittedAt: t0.Add(after).UnixMilli(),
		SourcePath: "builds/" + id + ".zip", TokenHash: make([]byte, 32)}))
	return id
}

// ids are changes that say only which builds changed (a notice too large to
// say more, or from a node that sends ids only): the manager reads them.
func ids(id ...string) []store.BuildChange {
	out := make([]store.BuildChange, len(id))
	for i := range id {
		out[i] = store.BuildChange{ID: id[i]}
	}
	return out
}

// TestSharedChanged: on a shared store, Changed brings memory up to the
// builds another node changed, one build at a time, read from the store: a held poll gets a build
// submitted elsewhere at once; a build assigned and finished elsewhere
// leaves the queue and then the running set; "all" reloads everything.
func TestSharedChanged(t *testing.T) {
	t.Parallel()
	b := setup(t, withConfig(Config{Shared: true}))
	w := b.worker(t, "here", `{"platforms":["ios"]}`)
	h := b.hold(t, context.Background(), w, time.Hour, 1)
	id := b.otherNodeSubmits(t, domain.PlatformIOS, 0)
	b.q.Changed(ids(id), false)
	job, err := h.result(t)
	require.NoError(t, err)
	require.NotNil(t, job)
	require.Equal(t, id, job.BuildID)

	// Assigned and finished by another node's worker.
	other, _, err := b.st.RegisterWorker(t.Context(), store.Registration{Name: "there", Capabilities: "{}", Now: t0.UnixMilli()})
	require.NoError(t, err)
	id2 := b.otherNodeSubmits(t, domain.PlatformAndroid, time.Millisecond)
	b.q.Changed(ids(id2), false)
	require.Eventually(t, func() bool { return len(b.pending(t)) == 1 }, 10*time.Second, time.Millisecond)
	require.NoError(t, b.st.AssignBuild(t.Context(), id2, other.ID, t0.UnixMilli()+2))
	b.q.Changed(ids(id2), false)
	require.Eventually(t, func() bool { return len(b.pending(t)) == 0 }, 10*time.Second, time.Millisecond)
	require.Equal(t, Stats{Pending: 0, Running: 2, Workers: 2}, b.stats(t), "the worker it did not know is loaded")
	require.Equal(t, memWorker{status: domain.WorkerBuilding, job: id2}, b.memWorker(t, other.ID))
	require.NoError(t, b.st.FinishBuild(t.Context(), store.Finish{BuildID: id2, WorkerID: other.ID, Now: t0.UnixMilli() + 3}))
	b.q.Changed(ids(id2), false)
	require.Eventually(t, func() bool { return b.stats(t).Running == 1 }, 10*time.Second, time.Millisecond)

	// Anything may have changed: a full reload.
	id3 := b.otherNodeSubmits(t, domain.PlatformAndroid, 4*time.Millisecond)
	b.q.Changed(nil, true)
	require.Eventually(t, func() bool {
		p := b.pending(t)
		return len(p) == 1 && p[0] == id3
	}, 10*time.Second, time.Millisecond)
}

// TestSharedOutOfStep: a poll from a worker registered through another
// node, or for a build another node ended, reloads and is decided again
// instead of failing.
func TestSharedOutOfStep(t *testing.T) {
	t.Parallel()
	b := setup(t, withConfig(Config{Shared: true}))
	require.Equal(t, Stats{}, b.stats(t), "loaded before the other node writes")
	elsewhere, _, err := b.st.RegisterWorker(t.Context(), store.Registration{Name: "elsewhere", Capabilities: "{}", Now: t0.UnixMilli()})
	require.NoError(t, err)
	id := b.otherNodeSubmits(t, domain.PlatformIOS, 0)
	require.Equal(t, id, b.poll(t, elsewhere.ID), "unknown here: reloaded, then assigned")

	// Another node cancels it; this node's memory still has the worker on it.
	_, err = b.st.CancelBuild(t.Context(), id, t0.UnixMilli()+1)
	require.NoError(t, err)
	require.Equal(t, "", b.poll(t, elsewhere.ID), "not re-delivered: the store says it ended")
	_, err = b.q.Poll(t.Context(), uuid.NewString())
	require.ErrorIs(t, err, store.ErrWorkerNotFound, "unknown after the reload too")
}

// readCounter counts the manager's reads of single builds and its
// AssignNext calls.
type readCounter struct {
	*store.Store
	reads, asks atomic.Int64
}

// changesApplied waits until the manager has taken every change Changed
// passed and finished applying them (a request after the take is served
// after the apply, on the same goroutine).
func (b *bundle) changesApplied(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool {
		b.q.changedMu.Lock()
		defer b.q.changedMu.Unlock()
		return len(b.q.changed) == 0 && !b.q.changedAll
	}, 10*time.Second, time.Millisecond, "changes taken")
	b.stats(t)
}

// setupCounting is a manager on a shared store whose reads and
// AssignNext calls are counted.
func setupCounting(t *testing.T) (*bundle, *readCounter) {
	t.Helper()
	var rc *readCounter
	b := setup(t, withConfig(Config{Shared: true}), withStore(func(s *store.Store) Store {
		rc = &readCounter{Store: s}
		return rc
	}))
	return b, rc
}

func (r *readCounter) AssignNext(ctx context.Context, workerID, prefer string, platforms []domain.Platform, now int64, otp *store.TokenGrant) (store.BuildChange, bool, error) {
	r.asks.Add(1)
	return r.Store.AssignNext(ctx, workerID, prefer, platforms, now, otp)
}

func (r *readCounter) GetBuild(ctx context.Context, id string) (domain.Build, error) {
	r.reads.Add(1)
	return r.Store.GetBuild(ctx, id)
}

// TestSharedChangesApplied: changes that say what each build became are
// applied without reading the builds — a build submitted elsewhere reaches a
// held poll, one assigned and finished elsewhere leaves the queue and the
// running set — and a change older than what memory has is ignored.
func TestSharedChangesApplied(t *testing.T) {
	t.Parallel()
	b, rc := setupCounting(t)
	changed := func(id string) store.BuildChange { // what the other node's notice says
		return store.ChangeOf(b.build(t, id))
	}
	w := b.worker(t, "here", `{"platforms":["ios"]}`)
	h := b.hold(t, context.Background(), w, time.Hour, 1)
	id := b.otherNodeSubmits(t, domain.PlatformIOS, 0)
	b.q.Changed([]store.BuildChange{changed(id)}, false)
	job, err := h.result(t)
	require.NoError(t, err)
	require.Equal(t, id, job.BuildID)

	other, _, err := b.st.RegisterWorker(t.Context(), store.Registration{Name: "there", Capabilities: "{}", Now: t0.UnixMilli()})
	require.NoError(t, err)
	require.Equal(t, Stats{Pending: 0, Running: 1, Workers: 1}, b.stats(t))
	id2 := b.otherNodeSubmits(t, domain.PlatformAndroid, time.Millisecond)
	b.q.Changed([]store.BuildChange{changed(id2)}, false)
	require.Eventually(t, func() bool { return len(b.pending(t)) == 1 }, 10*time.Second, time.Millisecond)
	require.NoError(t, b.st.AssignBuild(t.Context(), id2, other.ID, t0.UnixMilli()+2))
	assigned := changed(id2)
	b.q.Changed([]store.BuildChange{assigned}, false)
	require.Eventually(t, func() bool { return len(b.pending(t)) == 0 }, 10*time.Second, time.Millisecond)
	require.Equal(t, memWorker{status: domain.WorkerBuilding, job: id2}, b.memWorker(t, other.ID),
		"the worker registered elsewhere is loaded")
	require.NoError(t, b.st.FinishBuild(t.Context(), store.Finish{BuildID: id2, WorkerID: other.ID, Now: t0.UnixMilli() + 3}))
	b.q.Changed([]store.BuildChange{changed(id2)}, false)
	require.Eventually(t, func() bool { return b.stats(t).Running == 1 }, 10*time.Second, time.Millisecond)
	require.Zero(t, rc.reads.Load(), "no build read")

	// Late: the assignment's change after its end.
	b.q.Changed([]store.BuildChange{assigned}, false)
	b.changesApplied(t)
	require.Equal(t, memWorker{status: domain.WorkerIdle}, b.memWorker(t, other.ID), "an ended build stays ended")
	require.Equal(t, Stats{Pending: 0, Running: 1, Workers: 2}, b.stats(t))
	require.Zero(t, rc.reads.Load())

	// A change that does not say what the build became is read.
	b.q.Changed(ids(id), false)
	require.Eventually(t, func() bool { return rc.reads.Load() == 1 }, 10*time.Second, time.Millisecond)
}

// TestStateApplyOrder: state.apply keeps the latest of a build's changes,
// whatever order memory learns them in: by assignment number, a requeue
// after its assignment, an end after everything.
func TestStateApplyOrder(t *testing.T) {
	t.Parallel()
	const id = "b"
	fresh := func() *state {
		return &state{queued: map[string]bool{}, running: map[string]*runningBuild{}, workers: map[string]*workerEntry{
			"w1": {id: "w1", status: domain.WorkerIdle}, "w2": {id: "w2", status: domain.WorkerIdle}}}
	}
	queue := store.BuildChange{ID: id, Platform: domain.PlatformIOS, SubmittedAt: 5}
	pending := func(n int) store.BuildChange {
		c := queue
		c.Kind, c.Assignment = store.ChangePending, n
		return c
	}
	running := func(n int, w string) store.BuildChange {
		c := queue
		c.Kind, c.Assignment, c.WorkerID, c.StartedAt = store.ChangeRunning, n, w, int64(10*n)
		return c
	}
	where := func(s *state) string { // "pending/n", "w/n", "" (not known)
		if rb := s.running[id]; rb != nil {
			return fmt.Sprintf("%s/%d", rb.workerID, rb.assignment)
		}
		if q := s.queuedEntry(id); q != nil {
			return fmt.Sprintf("pending/%d", q.assignment)
		}
		return ""
	}
	for _, tc := range []struct {
		name    string
		changes []store.BuildChange
		want    string
	}{
		{"submitted", []store.BuildChange{pending(0)}, "pending/0"},
		{"assigned", []store.BuildChange{pending(0), running(1, "w1")}, "w1/1"},
		{"building: the same", []store.BuildChange{pending(0), running(1, "w1"), running(1, "w1")}, "w1/1"},
		{"requeued", []store.BuildChange{pending(0), running(1, "w1"), pending(1)}, "pending/1"},
		{"its assignment, late", []store.BuildChange{pending(0), running(1, "w1"), pending(1), running(1, "w1")}, "pending/1"},
		{"reassigned", []store.BuildChange{pending(0), running(1, "w1"), pending(1), running(2, "w2")}, "w2/2"},
		{"an older requeue, late", []store.BuildChange{pending(0), running(1, "w1"), pending(1), running(2, "w2"), pending(1)}, "w2/2"},
		{"an older assignment, late", []store.BuildChange{running(2, "w2"), running(1, "w1")}, "w2/2"},
		{"ended", []store.BuildChange{running(2, "w2"), {ID: id, Kind: store.ChangeEnded}}, ""},
		{"anything after the end", []store.BuildChange{{ID: id, Kind: store.ChangeEnded}, pending(3), running(4, "w1")}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := fresh()
			for _, c := range tc.changes {
				require.True(t, s.apply(c))
			}
			require.Equal(t, tc.want, where(s))
			require.False(t, s.stale)
			for _, w := range s.workers {
				if w.job != nil {
					require.Equal(t, w.job, s.running[w.job.id], "the worker holds what memory says runs")
					require.Equal(t, domain.WorkerBuilding, w.status)
				}
			}
		})
	}

	t.Run("not enough said", func(t *testing.T) {
		s := fresh()
		require.False(t, s.apply(store.BuildChange{ID: id}), "kind unknown: read it")
		require.False(t, s.apply(store.BuildChange{ID: id, Kind: store.ChangePending, Assignment: 1}),
			"a requeue of a build memory does not know, without queue fields: read it")
		require.True(t, s.apply(pending(0)))
		require.True(t, s.apply(store.BuildChange{ID: id, Kind: store.ChangeRunning, Assignment: 1, WorkerID: "w1"}),
			"memory knows its queue fields")
		require.Equal(t, "w1/1", where(s))
	})
	t.Run("a worker memory does not know", func(t *testing.T) {
		s := fresh()
		require.True(t, s.apply(running(1, "elsewhere")))
		require.True(t, s.stale, "reloaded")
	})
	t.Run("ended builds remembered up to a bound", func(t *testing.T) {
		s := fresh()
		s.end("first")
		for i := range maxEnded - 1 {
			s.end(fmt.Sprint(i))
		}
		require.True(t, s.ended.has("first"))
		s.end("last")
		require.False(t, s.ended.has("first"), "the oldest forgotten")
		require.True(t, s.ended.has("last"))
		require.Len(t, s.ended.ids, maxEnded)
	})
}

// TestSharedTakenElsewhere: a build memory has as pending but another node
// has assigned (its notice not here yet) costs one question to the store:
// the other idle workers' polls do not ask again until a change arrives, a
// new build is queued, or takenFor passes (the other node's transaction may
// have rolled back); an idle poll with nothing in memory never asks.
func TestSharedTakenElsewhere(t *testing.T) {
	t.Parallel()
	b, rc := setupCounting(t)
	w1, w2 := b.worker(t, "w1", anyPlatform), b.worker(t, "w2", anyPlatform)
	require.Equal(t, "", b.poll(t, w1))
	require.Zero(t, rc.asks.Load(), "nothing in memory: no question")

	id := b.otherNodeSubmits(t, domain.PlatformIOS, 0)
	b.q.Changed([]store.BuildChange{store.ChangeOf(b.build(t, id))}, false)
	require.Eventually(t, func() bool { return len(b.pending(t)) == 1 }, 10*time.Second, time.Millisecond)
	other, _, err := b.st.RegisterWorker(t.Context(), store.Registration{Name: "there", Capabilities: "{}", Now: t0.UnixMilli()})
	require.NoError(t, err)
	require.NoError(t, b.st.AssignBuild(t.Context(), id, other.ID, t0.UnixMilli()+1)) // its notice is late

	require.Equal(t, "", b.poll(t, w1))
	require.Equal(t, int64(1), rc.asks.Load())
	require.Equal(t, "", b.poll(t, w2))
	require.Equal(t, int64(1), rc.asks.Load(), "taken: not asked again")

	b.clock.Advance(takenFor)
	require.Equal(t, "", b.poll(t, w2))
	require.Equal(t, int64(2), rc.asks.Load(), "asked again after takenFor")

	id2 := b.otherNodeSubmits(t, domain.PlatformAndroid, time.Millisecond)
	b.q.Changed([]store.BuildChange{store.ChangeOf(b.build(t, id2))}, false)
	require.Eventually(t, func() bool { return len(b.pending(t)) == 2 }, 10*time.Second, time.Millisecond)
	require.Equal(t, id2, b.poll(t, w2), "a new build is asked for at once")
	require.Equal(t, int64(3), rc.asks.Load())

	b.q.Changed([]store.BuildChange{store.ChangeOf(b.build(t, id))}, false) // the late notice
	require.Eventually(t, func() bool { return len(b.pending(t)) == 0 }, 10*time.Second, time.Millisecond)
	require.Equal(t, "", b.poll(t, w1))
	require.Equal(t, int64(3), rc.asks.Load())
}
