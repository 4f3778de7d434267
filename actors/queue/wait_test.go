package queue

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/store/domain"
)

// held is a PollWait running in its own goroutine.
type held struct {
	done chan struct{}
	job  *Job
	err  error
}

// hold starts a held poll of workerID for wait and waits until the manager
// holds it (n held polls in all).
func (b *bundle) hold(t *testing.T, ctx context.Context, workerID string, wait time.Duration, n int64) *held {
	t.Helper()
	h := &held{done: make(chan struct{})}
	go func() {
		defer close(h.done)
		h.job, h.err = b.q.PollWait(ctx, workerID, wait)
	}()
	require.Eventually(t, func() bool { return b.q.Waiting() == n }, 10*time.Second, time.Millisecond, "the poll is held")
	return h
}

// result waits for the held poll's answer.
func (h *held) result(t *testing.T) (*Job, error) {
	t.Helper()
	waitFor(t, h.done, 10*time.Second, "the held poll's answer")
	return h.job, h.err
}

func TestPollWait(t *testing.T) {
	t.Parallel()

	t.Run("JobAtOnce", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.submit(t, domain.PlatformIOS)
		w := b.worker(t, "w", anyPlatform)
		job, err := b.q.PollWait(t.Context(), w, time.Hour)
		require.NoError(t, err)
		require.Equal(t, id, job.BuildID)
		require.Zero(t, b.q.Waiting())
	})

	t.Run("WokenBySubmit", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		w := b.worker(t, "w", anyPlatform)
		h := b.hold(t, t.Context(), w, time.Hour, 1)
		id := b.submit(t, domain.PlatformAndroid)
		job, err := h.result(t)
		require.NoError(t, err)
		require.Equal(t, id, job.BuildID)
		require.Equal(t, domain.StatusAssigned, b.build(t, id).Status, "assigned and durable before the answer")
		require.Zero(t, b.q.Waiting())
	})

	t.Run("OldestMatchingFirst", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		droid := b.worker(t, "droid", androidOnly)
		first := b.worker(t, "first", iosOnly)
		second := b.worker(t, "second", anyPlatform)
		hd := b.hold(t, t.Context(), droid, time.Hour, 1)
		h1 := b.hold(t, t.Context(), first, time.Hour, 2)
		h2 := b.hold(t, t.Context(), second, time.Hour, 3)
		ios := b.submit(t, domain.PlatformIOS)
		job, err := h1.result(t)
		require.NoError(t, err)
		require.Equal(t, ios, job.BuildID, "the oldest poll that takes ios, not the older android-only one")
		require.Equal(t, int64(2), b.q.Waiting())
		ios2 := b.submit(t, domain.PlatformIOS)
		job, err = h2.result(t)
		require.NoError(t, err)
		require.Equal(t, ios2, job.BuildID)
		droidBuild := b.submit(t, domain.PlatformAndroid)
		job, err = hd.result(t)
		require.NoError(t, err)
		require.Equal(t, droidBuild, job.BuildID)
	})

	t.Run("WokenByRequeue", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.submit(t, domain.PlatformIOS)
		holder := b.worker(t, "holder", anyPlatform)
		require.Equal(t, id, b.poll(t, holder))
		waiting := b.worker(t, "waiting", anyPlatform)
		h := b.hold(t, t.Context(), waiting, time.Hour, 1)
		n, err := b.q.Unregister(t.Context(), holder)
		require.NoError(t, err)
		require.Equal(t, 1, n)
		job, err := h.result(t)
		require.NoError(t, err)
		require.Equal(t, id, job.BuildID, "the requeued build goes to the held poll at once")
	})

	t.Run("WaitEnds", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		w := b.worker(t, "w", anyPlatform)
		h := b.hold(t, t.Context(), w, 30*time.Second, 1)
		require.Eventually(t, func() bool { return b.clock.Timers() == 1 }, 10*time.Second, time.Millisecond)
		b.clock.Advance(29 * time.Second)
		select {
		case <-h.done:
			t.Fatal("answered before the wait ended")
		default:
		}
		b.clock.Advance(time.Second)
		job, err := h.result(t)
		require.NoError(t, err)
		require.Nil(t, job)
		require.Zero(t, b.q.Waiting(), "the waiter is gone")
		id := b.submit(t, domain.PlatformIOS)
		require.Equal(t, domain.StatusPending, b.build(t, id).Status, "nothing is handed to a poll that ended")
	})

	t.Run("ClientGoneIsForgotten", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		w := b.worker(t, "w", anyPlatform)
		ctx, cancel := context.WithCancel(t.Context())
		h := b.hold(t, ctx, w, time.Hour, 1)
		cancel()
		_, err := h.result(t)
		require.NoError(t, err)
		require.Zero(t, b.q.Waiting())
		id := b.submit(t, domain.PlatformIOS)
		require.Equal(t, domain.StatusPending, b.build(t, id).Status)
	})

	t.Run("AssignedAsTheClientLeaves", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		w := b.worker(t, "w", anyPlatform)
		other := b.worker(t, "other", anyPlatform)
		ctx, cancel := context.WithCancel(t.Context())
		h := b.hold(t, ctx, w, time.Hour, 1)
		id := b.submit(t, domain.PlatformIOS) // handed to the held poll …
		cancel()                              // … as its client goes away
		job, err := h.result(t)
		require.NoError(t, err)
		require.NotNil(t, job, "a handed job is answered even if the client left (the answer may be lost)")
		require.Equal(t, id, job.BuildID)
		// Suppose the answer was lost: the build stays with the worker, is
		// given to it again, and to nobody else.
		require.Equal(t, domain.StatusAssigned, b.build(t, id).Status)
		require.Equal(t, w, *b.build(t, id).WorkerID)
		require.Empty(t, b.poll(t, other))
		require.Equal(t, id, b.poll(t, w), "re-delivered to its worker")
	})

	t.Run("ReleaseAnswersEveryHeldPoll", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		var hs []*held
		for i := range 3 {
			hs = append(hs, b.hold(t, t.Context(), b.worker(t, "w", anyPlatform), time.Hour, int64(i+1)))
		}
		b.q.Release()
		for _, h := range hs {
			job, err := h.result(t)
			require.NoError(t, err)
			require.Nil(t, job)
		}
		job, err := b.q.PollWait(t.Context(), b.worker(t, "late", anyPlatform), time.Hour)
		require.NoError(t, err)
		require.Nil(t, job, "after Release a poll is not held")
	})

	t.Run("CapAnswersAtOnce", func(t *testing.T) {
		t.Parallel()
		b := setup(t, withConfig(Config{MaxWaiters: 1}))
		b.hold(t, t.Context(), b.worker(t, "a", anyPlatform), time.Hour, 1)
		job, err := b.q.PollWait(t.Context(), b.worker(t, "b", anyPlatform), time.Hour)
		require.NoError(t, err)
		require.Nil(t, job, "past the cap a poll is answered at once")
		require.Equal(t, int64(1), b.q.Waiting())
	})
}

// TestReloadServesHeldPolls: a committed build the manager was not told of
// (its enqueue request failed: kickReload) reaches a held poll at the
// reload, on either engine, not at the next request.
func TestReloadServesHeldPolls(t *testing.T) {
	t.Parallel()
	b := setup(t)
	w := b.worker(t, "w", anyPlatform)
	h := b.hold(t, context.Background(), w, time.Hour, 1)
	id := b.otherNodeSubmits(t, domain.PlatformIOS, 0) // committed behind the manager's back
	b.q.kickReload()
	job, err := h.result(t)
	require.NoError(t, err)
	require.NotNil(t, job)
	require.Equal(t, id, job.BuildID)
}
