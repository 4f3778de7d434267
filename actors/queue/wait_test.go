package queue

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/store"
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
		require.Zero(t, b.q.Waiting(), "no poll is counted as held once all were answered")
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

// TestHeldPollCountedUntilAnswered: once a held poll has returned — handed a
// job, or its client gone — it is no longer counted as held. The count used
// to be lowered just after the answer, so a reader right after the poll
// could see it still held; that is a race, which this test and
// TestPollWait/WaitEnds catch with -count (a release is covered by
// TestPollWait/ReleaseAnswersEveryHeldPoll).
func TestHeldPollCountedUntilAnswered(t *testing.T) {
	t.Parallel()
	for range 10 {
		b := setup(t)
		w := b.worker(t, "w", anyPlatform)
		h := b.hold(t, t.Context(), w, time.Hour, 1)
		b.submit(t, domain.PlatformIOS)
		job, err := h.result(t)
		require.NoError(t, err)
		require.NotNil(t, job)
		require.Zero(t, b.q.Waiting(), "handed a job")

		ctx, cancel := context.WithCancel(t.Context())
		h = b.hold(t, ctx, b.worker(t, "gone", anyPlatform), time.Hour, 1)
		cancel()
		_, err = h.result(t)
		require.NoError(t, err)
		require.Zero(t, b.q.Waiting(), "its client went away")
	}
}

// TestHeldPollSyncFails: when making the poll durable fails after the
// manager took the poll in, the poll answers the error and is taken out
// again; it used to stay held with nobody waiting on it, so the next build
// was handed to a poll that could never answer.
func TestHeldPollSyncFails(t *testing.T) {
	t.Parallel()
	var fail atomic.Bool
	b := setup(t, withStore(func(st *store.Store) Store {
		return &hookStore{Store: st, sync: func() error {
			if fail.CompareAndSwap(true, false) {
				return errors.New("injected sync failure")
			}
			return st.Sync()
		}}
	}))
	w := b.worker(t, "w", anyPlatform)
	fail.Store(true)
	job, err := b.q.PollWait(t.Context(), w, time.Hour)
	require.Error(t, err)
	require.Nil(t, job)
	require.Zero(t, b.q.Waiting(), "the failed poll is not held")
	id := b.submit(t, domain.PlatformIOS)
	require.Equal(t, domain.StatusPending, b.build(t, id).Status, "nothing is handed to the failed poll")
	require.Equal(t, id, b.poll(t, w), "the worker's next poll gets it")
}

// TestServeWaitersPanics: a panic while handing builds to held polls
// answers every held poll exactly once ("no job"), and the restarted
// manager re-delivers the build already assigned. The held polls used to be
// filtered in place, so the release after the panic found one poll twice
// (answering it again blocked or panicked) and lost another.
func TestServeWaitersPanics(t *testing.T) {
	t.Parallel()
	var assigns atomic.Int32
	b := setup(t, withStore(func(st *store.Store) Store {
		return &hookStore{Store: st, beforeAssign: func() {
			if assigns.Add(1) == 2 {
				panic("injected assignment panic")
			}
		}}
	}))
	first := b.worker(t, "first", anyPlatform)
	droid := b.worker(t, "droid", androidOnly)
	third := b.worker(t, "third", anyPlatform)
	hs := []*held{
		b.hold(t, context.Background(), first, time.Hour, 1),
		b.hold(t, context.Background(), droid, time.Hour, 2),
		b.hold(t, context.Background(), third, time.Hour, 3),
	}
	a := b.otherNodeSubmits(t, domain.PlatformIOS, 0)
	c := b.otherNodeSubmits(t, domain.PlatformIOS, time.Millisecond)
	b.q.kickReload() // both reach the held polls in one pass: first gets a, third panics
	require.Equal(t, "injected assignment panic", waitFor(t, b.panics, 10*time.Second, "Serve to re-panic"))
	for _, h := range hs {
		job, err := h.result(t)
		require.NoError(t, err)
		require.Nil(t, job, "answered once, no job")
	}
	require.Zero(t, b.q.Waiting())

	b.start() // what suture does
	require.Equal(t, a, b.poll(t, first), "the build assigned before the panic is re-delivered")
	require.Equal(t, c, b.poll(t, third))
	require.Empty(t, b.poll(t, droid))
}
