package queue

import (
	"context"
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

// TestSharedChanged: on a shared store, Changed brings memory up to the
// builds another node changed, one build at a time: a held poll gets a build
// submitted elsewhere at once; a build assigned and finished elsewhere
// leaves the queue and then the running set; "all" reloads everything.
func TestSharedChanged(t *testing.T) {
	t.Parallel()
	b := setup(t, withConfig(Config{Shared: true}))
	w := b.worker(t, "here", `{"platforms":["ios"]}`)
	h := b.hold(t, context.Background(), w, time.Hour, 1)
	id := b.otherNodeSubmits(t, domain.PlatformIOS, 0)
	b.q.Changed([]string{id}, false)
	job, err := h.result(t)
	require.NoError(t, err)
	require.NotNil(t, job)
	require.Equal(t, id, job.BuildID)

	// Assigned and finished by another node's worker.
	other, _, err := b.st.RegisterWorker(t.Context(), store.Registration{Name: "there", Capabilities: "{}", Now: t0.UnixMilli()})
	require.NoError(t, err)
	id2 := b.otherNodeSubmits(t, domain.PlatformAndroid, time.Millisecond)
	b.q.Changed([]string{id2}, false)
	require.Eventually(t, func() bool { return len(b.pending(t)) == 1 }, 10*time.Second, time.Millisecond)
	require.NoError(t, b.st.AssignBuild(t.Context(), id2, other.ID, t0.UnixMilli()+2))
	b.q.Changed([]string{id2}, false)
	require.Eventually(t, func() bool { return len(b.pending(t)) == 0 }, 10*time.Second, time.Millisecond)
	require.Equal(t, Stats{Pending: 0, Running: 2, Workers: 2}, b.stats(t), "the worker it did not know is loaded")
	require.Equal(t, memWorker{status: domain.WorkerBuilding, job: id2}, b.memWorker(t, other.ID))
	require.NoError(t, b.st.FinishBuild(t.Context(), store.Finish{BuildID: id2, WorkerID: other.ID, Now: t0.UnixMilli() + 3}))
	b.q.Changed([]string{id2}, false)
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
