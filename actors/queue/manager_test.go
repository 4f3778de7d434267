package queue

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/actors/files"
	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

// finishFailed reports the build failed as its worker, freeing the worker.
func (b *bundle) finishFailed(t *testing.T, buildID, workerID string) {
	t.Helper()
	out, err := b.q.Finish(t.Context(), FinishRequest{BuildID: buildID, WorkerID: workerID, ErrorMessage: "compile error"})
	require.NoError(t, err)
	require.Equal(t, FinishFailed, out)
}

func TestPollOrder(t *testing.T) {
	t.Parallel()

	t.Run("android-only worker skips ios builds and gets the oldest android build", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ios1 := b.submit(t, domain.PlatformIOS)
		b.clock.Advance(time.Millisecond)
		and1 := b.submit(t, domain.PlatformAndroid)
		b.clock.Advance(time.Millisecond)
		ios2 := b.submit(t, domain.PlatformIOS)
		b.clock.Advance(time.Millisecond)
		and2 := b.submit(t, domain.PlatformAndroid)

		a1 := b.worker(t, "android-1", androidOnly)
		a2 := b.worker(t, "android-2", androidOnly)
		a3 := b.worker(t, "android-3", androidOnly)
		require.Equal(t, and1, b.poll(t, a1))
		require.Equal(t, and2, b.poll(t, a2))
		require.Empty(t, b.poll(t, a3), "only ios builds are left")
		require.Equal(t, []string{ios1, ios2}, b.pending(t), "the skipped ios builds keep their places")

		got := b.build(t, and1)
		require.Equal(t, domain.StatusAssigned, got.Status)
		require.Equal(t, a1, *got.WorkerID)

		i1 := b.worker(t, "ios-1", iosOnly)
		require.Equal(t, ios1, b.poll(t, i1))
	})

	t.Run("worker without a platforms list takes any platform in queue order", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		and1 := b.submit(t, domain.PlatformAndroid)
		b.clock.Advance(time.Millisecond)
		ios1 := b.submit(t, domain.PlatformIOS)
		b.clock.Advance(time.Millisecond)
		and2 := b.submit(t, domain.PlatformAndroid)

		// No platforms key, a platforms value that is not an array, other keys
		// only: each takes anything.
		w1 := b.worker(t, "no-key", anyPlatform)
		w2 := b.worker(t, "not-an-array", `{"platforms":"ios"}`)
		w3 := b.worker(t, "other-keys", `{"maxConcurrentBuilds":1}`)
		require.Equal(t, and1, b.poll(t, w1))
		require.Equal(t, ios1, b.poll(t, w2))
		require.Equal(t, and2, b.poll(t, w3))
	})

	t.Run("worker with an empty platforms list gets nothing", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		a := b.submit(t, domain.PlatformIOS)
		none := b.worker(t, "none", `{"platforms":[]}`)
		require.Empty(t, b.poll(t, none))
		require.Equal(t, []string{a}, b.pending(t))
	})

	t.Run("same-millisecond submits go in id order", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		// The clock does not move, so every build has the same submitted_at.
		// Submit until the submission order differs from the id order, so that
		// a queue ignoring the id tie-break (submission order) is caught.
		var submitted []string
		for len(submitted) < 3 || slices.IsSorted(submitted) {
			require.Less(t, len(submitted), 20)
			submitted = append(submitted, b.submit(t, domain.PlatformIOS))
		}
		for _, id := range submitted {
			require.Equal(t, t0.UnixMilli(), b.build(t, id).SubmittedAt)
		}
		want := slices.Sorted(slices.Values(submitted))
		require.Equal(t, want, b.pending(t))

		w := b.worker(t, "w", anyPlatform)
		var got []string
		for range submitted {
			id := b.poll(t, w)
			require.NotEmpty(t, id)
			got = append(got, id)
			b.finishFailed(t, id, w)
		}
		require.Equal(t, want, got)
		require.Empty(t, b.poll(t, w))
	})

	t.Run("worker holding a build gets the same build again", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		a := b.submit(t, domain.PlatformIOS)
		c := b.submit(t, domain.PlatformIOS)
		w := b.worker(t, "w", anyPlatform)
		first := b.poll(t, w)
		require.Contains(t, []string{a, c}, first)
		require.Equal(t, first, b.poll(t, w))
		require.Equal(t, Stats{Pending: 1, Running: 1, Workers: 1}, b.stats(t))
		require.Equal(t, int64(1), b.q.Counters().Assignments)
	})

	t.Run("unknown worker is store.ErrWorkerNotFound", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.submit(t, domain.PlatformIOS)
		_, err := b.q.Poll(t.Context(), uuid.NewString())
		require.ErrorIs(t, err, store.ErrWorkerNotFound)
		require.Equal(t, 1, b.stats(t).Pending)
	})
}

func TestExpireBuild(t *testing.T) {
	t.Parallel()

	t.Run("expired build goes back to its original place with attempts raised and its worker idle", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		a := b.submit(t, domain.PlatformIOS)
		b.clock.Advance(time.Second)
		c := b.submit(t, domain.PlatformIOS)
		w1 := b.worker(t, "w1", anyPlatform)
		require.Equal(t, a, b.poll(t, w1))
		assignedAt := b.clock.Now().UnixMilli()

		b.clock.Advance(10 * time.Minute)
		d := b.submit(t, domain.PlatformIOS) // submitted long after a was assigned
		out, err := b.q.ExpireBuild(t.Context(), a, w1, assignedAt+1)
		require.NoError(t, err)
		require.Equal(t, domain.TimeoutRequeued, out)

		got := b.build(t, a)
		require.Equal(t, domain.StatusPending, got.Status)
		require.Equal(t, 1, got.Attempts)
		require.Nil(t, got.WorkerID)
		require.Equal(t, []string{a, c, d}, b.pending(t), "back at its original place, ahead of later submits")
		require.Equal(t, memWorker{status: domain.WorkerIdle}, b.memWorker(t, w1))
		require.Equal(t, domain.WorkerIdle, b.storedWorker(t, w1).Status)

		w2 := b.worker(t, "w2", anyPlatform)
		require.Equal(t, a, b.poll(t, w2), "the requeued build is first in line")
		require.Equal(t, c, b.poll(t, w1), "the freed worker takes the next build")
		require.Equal(t, Counters{Assignments: 3, Requeues: 1, Timeouts: 1}, b.q.Counters())
	})

	t.Run("build with liveness at or after the cutoff or held by another worker is left running", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		a := b.submit(t, domain.PlatformIOS)
		w1 := b.worker(t, "w1", anyPlatform)
		w2 := b.worker(t, "w2", anyPlatform)
		require.Equal(t, a, b.poll(t, w1))
		assignedAt := b.clock.Now().UnixMilli()

		b.clock.Advance(10 * time.Minute)
		out, err := b.q.ExpireBuild(t.Context(), a, w1, assignedAt)
		require.NoError(t, err)
		require.Equal(t, domain.TimeoutNone, out, "liveness at the cutoff is not older than it")

		now := b.clock.Now().UnixMilli()
		require.NoError(t, b.st.TouchBuild(t.Context(), a, w1, now))
		out, err = b.q.ExpireBuild(t.Context(), a, w1, now)
		require.NoError(t, err)
		require.Equal(t, domain.TimeoutNone, out, "a heartbeat since the cutoff wins")

		out, err = b.q.ExpireBuild(t.Context(), a, w2, now+1)
		require.NoError(t, err)
		require.Equal(t, domain.TimeoutNone, out, "not held by that worker")

		got := b.build(t, a)
		require.Equal(t, domain.StatusBuilding, got.Status)
		require.Equal(t, 0, got.Attempts)
		require.Equal(t, memWorker{status: domain.WorkerBuilding, job: a}, b.memWorker(t, w1))
		require.Equal(t, Counters{Assignments: 1}, b.q.Counters())
	})
}

func TestExpireBuildFailsAtMaxAttempts(t *testing.T) {
	t.Parallel()

	t.Run("second timeout fails the build and does not requeue it", func(t *testing.T) {
		t.Parallel()
		b := setup(t, withConfig(Config{MaxAttempts: 2}))
		a := b.submit(t, domain.PlatformIOS)
		w1 := b.worker(t, "w1", anyPlatform)
		w2 := b.worker(t, "w2", anyPlatform)
		w3 := b.worker(t, "w3", anyPlatform)

		require.Equal(t, a, b.poll(t, w1))
		b.clock.Advance(6 * time.Minute)
		out, err := b.q.ExpireBuild(t.Context(), a, w1, b.clock.Now().UnixMilli())
		require.NoError(t, err)
		require.Equal(t, domain.TimeoutRequeued, out, "first timeout of two")

		require.Equal(t, a, b.poll(t, w2))
		b.clock.Advance(6 * time.Minute)
		out, err = b.q.ExpireBuild(t.Context(), a, w2, b.clock.Now().UnixMilli())
		require.NoError(t, err)
		require.Equal(t, domain.TimeoutFailed, out, "second timeout of two")

		got := b.build(t, a)
		require.Equal(t, domain.StatusFailed, got.Status)
		require.Equal(t, 2, got.Attempts)
		require.NotNil(t, got.ErrorMessage)
		require.Equal(t, "Build timeout - worker stopped responding", *got.ErrorMessage)
		require.NotNil(t, got.CompletedAt)
		require.Nil(t, got.WorkerID)

		require.Empty(t, b.pending(t), "a failed build is not requeued")
		require.Equal(t, Stats{Pending: 0, Running: 0, Workers: 3}, b.stats(t))
		require.Equal(t, memWorker{status: domain.WorkerIdle}, b.memWorker(t, w2))
		require.Equal(t, domain.WorkerIdle, b.storedWorker(t, w2).Status)
		require.Empty(t, b.poll(t, w3))
		require.Equal(t, Counters{Assignments: 2, Requeues: 1, Timeouts: 2, TimeoutFailures: 1}, b.q.Counters())
	})
}

func TestServePanic(t *testing.T) {
	t.Parallel()

	t.Run("poll whose store call panics gets ErrPanicked at once and a restarted Serve assigns the build", func(t *testing.T) {
		t.Parallel()
		const callTimeout = 20 * time.Second
		var panicked atomic.Bool
		b := setup(t, withConfig(Config{CallTimeout: callTimeout}), withStore(func(st *store.Store) Store {
			return &hookStore{Store: st, beforeAssign: func() {
				if panicked.CompareAndSwap(false, true) {
					panic("injected AssignBuild panic")
				}
			}}
		}))
		a := b.submit(t, domain.PlatformIOS)
		w := b.worker(t, "w", anyPlatform)

		start := time.Now()
		job, err := b.q.Poll(t.Context(), w)
		require.ErrorIs(t, err, ErrPanicked)
		require.NotErrorIs(t, err, ErrUnavailable, "answered by the panic handler, not by the call timeout")
		require.Nil(t, job)
		require.Less(t, time.Since(start), callTimeout/2)
		require.Equal(t, "injected AssignBuild panic", waitFor(t, b.panics, 10*time.Second, "Serve to re-panic"),
			"Serve re-panics for its supervisor")
		require.Equal(t, domain.StatusPending, b.build(t, a).Status, "nothing was committed")

		b.start() // what suture does
		require.Equal(t, a, b.poll(t, w), "the restarted manager reloads the queue from the store")
	})
}

// TestServePanicDuringReload: a panic while reloading a stale state answers
// the request that triggered the reload at once (it used to wait for the
// call timeout).
func TestServePanicDuringReload(t *testing.T) {
	t.Parallel()
	const callTimeout = 20 * time.Second
	var loads atomic.Int32
	b := setup(t, withConfig(Config{CallTimeout: callTimeout}), withStore(func(st *store.Store) Store {
		return &hookStore{Store: st, beforePending: func() {
			if loads.Add(1) == 2 { // the first load is Serve's start; the second the reload
				panic("injected reload panic")
			}
		}}
	}))
	b.stats(t) // Serve has loaded
	b.q.kickReload()
	start := time.Now()
	var err error
	for time.Since(start) < callTimeout/2 { // a request may be served before the kick is seen
		if _, err = b.q.Stats(t.Context()); err != nil {
			break
		}
	}
	require.ErrorIs(t, err, ErrPanicked)
	require.Less(t, time.Since(start), callTimeout/2)
	require.Equal(t, "injected reload panic", waitFor(t, b.panics, 10*time.Second, "Serve to re-panic"))
}

// TestPlatformsNull: {"platforms": null} is not a list, so the worker takes
// any platform (docs/API.md §4.1); it used to take none.
func TestPlatformsNull(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := b.submit(t, domain.PlatformIOS)
	w := b.worker(t, "w", `{"platforms":null}`)
	require.Equal(t, id, b.poll(t, w))
}

func TestSubmitWhileManagerBusy(t *testing.T) {
	// Not parallel: it runs on a short call timeout.
	t.Run("undelivered enqueue still succeeds and a reload queues every build once", func(t *testing.T) {
		entered := make(chan struct{}, 1)
		gate := make(chan struct{})
		b := setup(t, withConfig(Config{CallTimeout: 300 * time.Millisecond}), withStore(func(st *store.Store) Store {
			return &hookStore{Store: st, beforeCancel: func() {
				entered <- struct{}{}
				<-gate // the manager's goroutine stalls here
			}}
		}))
		var release sync.Once
		unblock := func() { release.Do(func() { close(gate) }) }
		t.Cleanup(unblock) // runs before setup's cleanup stops Serve
		w1 := b.worker(t, "w1", anyPlatform)
		w2 := b.worker(t, "w2", anyPlatform)
		w3 := b.worker(t, "w3", anyPlatform)
		early := b.submit(t, domain.PlatformIOS) // queued the normal way
		b.clock.Advance(time.Millisecond)

		cancelErr := make(chan error, 1)
		go func() {
			_, err := b.q.Cancel(context.Background(), uuid.NewString())
			cancelErr <- err
		}()
		waitFor(t, entered, 10*time.Second, "the manager to stall in CancelBuild")

		sub, err := b.q.Submit(t.Context(), Submission{Platform: domain.PlatformIOS,
			Source: b.stage(t, files.KindSource, "source")})
		require.NoError(t, err, "the row is committed, so the submit succeeds")
		require.Equal(t, domain.StatusPending, b.build(t, sub.ID).Status)

		unblock()
		require.ErrorIs(t, waitFor(t, cancelErr, 10*time.Second, "the stalled cancel"), ErrUnavailable)

		// A request racing the reload kick may still be served from the old
		// state (Serve's select picks either), so ask until the build shows.
		var queued []string
		for deadline := time.Now().Add(10 * time.Second); !slices.Contains(queued, sub.ID); {
			require.True(t, time.Now().Before(deadline), "the committed build never reached the queue")
			queued = b.pending(t)
		}
		require.Equal(t, []string{early, sub.ID}, queued, "reloaded from the store: each pending build once, in order")

		require.Equal(t, early, b.poll(t, w1))
		require.Equal(t, sub.ID, b.poll(t, w2))
		require.Empty(t, b.poll(t, w3), "no build is handed out twice")
		require.Equal(t, sub.ID, b.poll(t, w2), "re-delivered to its holder")
		require.Equal(t, Stats{Pending: 0, Running: 2, Workers: 3}, b.stats(t))
		require.Equal(t, int64(2), b.q.Counters().Assignments)
		stored := b.build(t, sub.ID)
		require.Equal(t, domain.StatusAssigned, stored.Status)
		require.Equal(t, w2, *stored.WorkerID)
	})
}

func TestFinish(t *testing.T) {
	t.Parallel()

	t.Run("upload by a non-assignee is refused with the build unchanged and the result discarded", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		a := b.submit(t, domain.PlatformAndroid)
		w1 := b.worker(t, "w1", anyPlatform)
		w2 := b.worker(t, "w2", anyPlatform)
		require.Equal(t, a, b.poll(t, w1))
		before := b.build(t, a)

		out, err := b.q.Finish(t.Context(), FinishRequest{BuildID: a, WorkerID: w2, Success: true,
			Result: b.stage(t, files.KindResult, "not yours")})
		require.ErrorIs(t, err, store.ErrNotAssignee)
		require.Zero(t, out)
		require.Equal(t, before, b.build(t, a))
		require.Empty(t, b.listDir(t, "results"), "the staged result is discarded")
		require.Equal(t, memWorker{status: domain.WorkerBuilding, job: a}, b.memWorker(t, w1))
		require.Equal(t, memWorker{status: domain.WorkerIdle}, b.memWorker(t, w2))
		require.Equal(t, int64(0), b.q.Counters().Finishes)
	})

	t.Run("assignee completes once and later uploads are ErrFinished, a no-op or refused", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		a := b.submit(t, domain.PlatformAndroid)
		w1 := b.worker(t, "w1", anyPlatform)
		w2 := b.worker(t, "w2", anyPlatform)
		require.Equal(t, a, b.poll(t, w1))

		out, err := b.q.Finish(t.Context(), FinishRequest{BuildID: a, WorkerID: w1, Success: true,
			Result: b.stage(t, files.KindResult, "the apk")})
		require.NoError(t, err)
		require.Equal(t, FinishCompleted, out)
		done := b.build(t, a)
		require.Equal(t, domain.StatusCompleted, done.Status)
		require.NotNil(t, done.ResultPath)
		require.Equal(t, "results/"+a+".apk", *done.ResultPath)
		require.Equal(t, "the apk", b.readFile(t, *done.ResultPath))
		require.Equal(t, memWorker{status: domain.WorkerIdle}, b.memWorker(t, w1))

		out, err = b.q.Finish(t.Context(), FinishRequest{BuildID: a, WorkerID: w1, Success: true,
			Result: b.stage(t, files.KindResult, "again")})
		require.ErrorIs(t, err, ErrFinished, "a second upload with a file by the worker that finished it")
		require.Zero(t, out)

		out, err = b.q.Finish(t.Context(), FinishRequest{BuildID: a, WorkerID: w1, ErrorMessage: "late"})
		require.ErrorIs(t, err, ErrFinished, "a failure report for a build it completed")
		require.Zero(t, out)

		out, err = b.q.Finish(t.Context(), FinishRequest{BuildID: a, WorkerID: w1, Success: true})
		require.NoError(t, err)
		require.Equal(t, FinishNoChange, out, "a file-less success by the worker that completed it")

		out, err = b.q.Finish(t.Context(), FinishRequest{BuildID: a, WorkerID: w2, Success: true,
			Result: b.stage(t, files.KindResult, "not yours")})
		require.ErrorIs(t, err, store.ErrNotAssignee)
		require.Zero(t, out)

		require.Equal(t, done, b.build(t, a), "nothing changed after the first upload")
		require.Equal(t, []string{a + ".apk"}, b.listDir(t, "results"), "every refused result is discarded")
		require.Equal(t, "the apk", b.readFile(t, *done.ResultPath))
		require.Equal(t, int64(1), b.q.Counters().Finishes)
	})

	t.Run("failure by the assignee fails the build and frees the worker", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		a := b.submit(t, domain.PlatformIOS)
		c := b.submit(t, domain.PlatformIOS)
		w := b.worker(t, "w", anyPlatform)
		first := b.poll(t, w)
		b.finishFailed(t, first, w)
		got := b.build(t, first)
		require.Equal(t, domain.StatusFailed, got.Status)
		require.Equal(t, "compile error", *got.ErrorMessage)
		second := b.poll(t, w)
		require.ElementsMatch(t, []string{a, c}, []string{first, second})
	})

	t.Run("unknown build is store.ErrNotFound", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		w := b.worker(t, "w", anyPlatform)
		_, err := b.q.Finish(t.Context(), FinishRequest{BuildID: uuid.NewString(), WorkerID: w, Success: true,
			Result: b.stage(t, files.KindResult, "orphan")})
		require.ErrorIs(t, err, store.ErrNotFound)
		require.Empty(t, b.listDir(t, "results"))
	})
}

func TestCancel(t *testing.T) {
	t.Parallel()

	t.Run("pending build leaves the queue and a poll gets nothing", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		a := b.submit(t, domain.PlatformIOS)
		w := b.worker(t, "w", anyPlatform)

		before, err := b.q.Cancel(t.Context(), a)
		require.NoError(t, err)
		require.Equal(t, domain.StatusPending, before.Status, "the build as it was")
		require.Empty(t, b.pending(t))
		require.Equal(t, Stats{Pending: 0, Running: 0, Workers: 1}, b.stats(t))
		require.Empty(t, b.poll(t, w))

		got := b.build(t, a)
		require.Equal(t, domain.StatusFailed, got.Status)
		require.True(t, got.Cancelled)
		require.Equal(t, int64(0), b.q.Counters().Assignments)
	})

	t.Run("running build frees its worker for the next build", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		a := b.submit(t, domain.PlatformIOS)
		b.clock.Advance(time.Millisecond)
		c := b.submit(t, domain.PlatformIOS)
		w := b.worker(t, "w", anyPlatform)
		require.Equal(t, a, b.poll(t, w))

		before, err := b.q.Cancel(t.Context(), a)
		require.NoError(t, err)
		require.Equal(t, domain.StatusAssigned, before.Status)
		require.Equal(t, memWorker{status: domain.WorkerIdle}, b.memWorker(t, w))
		require.Equal(t, c, b.poll(t, w))
	})

	t.Run("finished build is refused with ErrFinished", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		a := b.submit(t, domain.PlatformIOS)
		w := b.worker(t, "w", anyPlatform)
		require.Equal(t, a, b.poll(t, w))
		b.finishFailed(t, a, w)
		finished := b.build(t, a)

		_, err := b.q.Cancel(t.Context(), a)
		require.ErrorIs(t, err, ErrFinished)
		require.Equal(t, finished, b.build(t, a))
		require.False(t, finished.Cancelled)

		c := b.submit(t, domain.PlatformIOS)
		_, err = b.q.Cancel(t.Context(), c)
		require.NoError(t, err)
		_, err = b.q.Cancel(t.Context(), c)
		require.ErrorIs(t, err, ErrFinished, "a cancelled build is finished")
	})

	t.Run("unknown build is store.ErrNotFound", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		_, err := b.q.Cancel(t.Context(), uuid.NewString())
		require.ErrorIs(t, err, store.ErrNotFound)
	})
}

func TestUnregister(t *testing.T) {
	t.Parallel()

	t.Run("worker's build is requeued at its place and the worker is offline until it registers again", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		a := b.submit(t, domain.PlatformIOS)
		b.clock.Advance(time.Millisecond)
		c := b.submit(t, domain.PlatformIOS)
		w1 := b.worker(t, "w1", anyPlatform)
		require.Equal(t, a, b.poll(t, w1))

		n, err := b.q.Unregister(t.Context(), w1)
		require.NoError(t, err)
		require.Equal(t, 1, n)
		got := b.build(t, a)
		require.Equal(t, domain.StatusPending, got.Status)
		require.Equal(t, 0, got.Attempts, "an unregister is not a timeout")
		require.Nil(t, got.WorkerID)
		require.Equal(t, []string{a, c}, b.pending(t), "back at its place")
		require.Equal(t, memWorker{status: domain.WorkerOffline}, b.memWorker(t, w1))
		require.Equal(t, domain.WorkerOffline, b.storedWorker(t, w1).Status)
		require.Equal(t, Counters{Assignments: 1, Requeues: 1}, b.q.Counters())

		w2 := b.worker(t, "w2", anyPlatform)
		require.Equal(t, a, b.poll(t, w2), "the requeued build is first in line")

		w, created, err := b.q.Register(t.Context(), store.Registration{ID: w1, Name: "w1 again", Capabilities: anyPlatform})
		require.NoError(t, err)
		require.False(t, created)
		require.Equal(t, w1, w.ID)
		require.Equal(t, domain.WorkerIdle, w.Status)
		require.Equal(t, memWorker{status: domain.WorkerIdle}, b.memWorker(t, w1))
		require.Equal(t, domain.WorkerIdle, b.storedWorker(t, w1).Status)
		require.Equal(t, c, b.poll(t, w1))
	})

	t.Run("idle worker goes offline with nothing requeued", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		w := b.worker(t, "w", anyPlatform)
		n, err := b.q.Unregister(t.Context(), w)
		require.NoError(t, err)
		require.Zero(t, n)
		require.Equal(t, memWorker{status: domain.WorkerOffline}, b.memWorker(t, w))
		require.Equal(t, Counters{}, b.q.Counters())
	})

	t.Run("unknown worker is store.ErrWorkerNotFound", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		_, err := b.q.Unregister(t.Context(), uuid.NewString())
		require.ErrorIs(t, err, store.ErrWorkerNotFound)
	})
}

func TestRetry(t *testing.T) {
	t.Parallel()

	// finishedBuild submits an ios build with a source and a certs file,
	// runs it on a new worker and fails it. It returns the build and worker.
	finishedBuild := func(t *testing.T, b *bundle) (string, string) {
		t.Helper()
		sub, err := b.q.Submit(t.Context(), Submission{Platform: domain.PlatformIOS,
			Source: b.stage(t, files.KindSource, "the source"), Certs: b.stage(t, files.KindCerts, "the certs")})
		require.NoError(t, err)
		w := b.worker(t, "w", anyPlatform)
		job, err := b.q.Poll(t.Context(), w)
		require.NoError(t, err)
		require.Equal(t, &Job{BuildID: sub.ID, Platform: domain.PlatformIOS, HasCerts: true}, job)
		b.finishFailed(t, sub.ID, w)
		return sub.ID, w
	}

	t.Run("finished build is retried as a new pending build with copies of its files", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		orig, w := finishedBuild(t, b)
		b.clock.Advance(time.Second)

		r, err := b.q.Retry(t.Context(), orig)
		require.NoError(t, err)
		require.NotEqual(t, orig, r.ID)
		require.Equal(t, orig, r.OriginalBuildID)
		require.NotEmpty(t, r.Token)
		require.Equal(t, b.clock.Now().UnixMilli(), r.SubmittedAt)

		nb := b.build(t, r.ID)
		require.Equal(t, domain.StatusPending, nb.Status)
		require.Equal(t, domain.PlatformIOS, nb.Platform)
		require.Equal(t, "builds/"+r.ID+".zip", nb.SourcePath)
		require.NotNil(t, nb.CertsPath)
		require.Equal(t, "certs/"+r.ID+".zip", *nb.CertsPath)
		require.NotNil(t, nb.OriginalBuildID)
		require.Equal(t, orig, *nb.OriginalBuildID)
		require.Equal(t, "the source", b.readFile(t, nb.SourcePath))
		require.Equal(t, "the certs", b.readFile(t, *nb.CertsPath))
		require.Equal(t, "the source", b.readFile(t, b.build(t, orig).SourcePath), "the original keeps its files")

		job, err := b.q.Poll(t.Context(), w)
		require.NoError(t, err)
		require.Equal(t, &Job{BuildID: r.ID, Platform: domain.PlatformIOS, HasCerts: true}, job)
	})

	t.Run("unfinished build is ErrNotFinished", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		a := b.submit(t, domain.PlatformIOS)
		_, err := b.q.Retry(t.Context(), a)
		require.ErrorIs(t, err, ErrNotFinished, "pending")

		w := b.worker(t, "w", anyPlatform)
		require.Equal(t, a, b.poll(t, w))
		_, err = b.q.Retry(t.Context(), a)
		require.ErrorIs(t, err, ErrNotFinished, "running")
		require.Equal(t, Stats{Pending: 0, Running: 1, Workers: 1}, b.stats(t))
		require.Len(t, b.listDir(t, "builds"), 1)
	})

	t.Run("retry whose original source is gone is ErrFilesGone and creates nothing", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		orig, _ := finishedBuild(t, b)
		require.NoError(t, os.Remove(filepath.Join(b.fs.Root(), filepath.FromSlash(b.build(t, orig).SourcePath))))

		_, err := b.q.Retry(t.Context(), orig)
		require.ErrorIs(t, err, ErrFilesGone)
		require.Empty(t, b.pending(t))
		require.Empty(t, b.listDir(t, "builds"))
		require.Equal(t, []string{orig + ".zip"}, b.listDir(t, "certs"))
	})

	t.Run("retry whose original certs are gone is ErrFilesGone and removes the copied source", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		orig, _ := finishedBuild(t, b)
		require.NoError(t, os.Remove(filepath.Join(b.fs.Root(), filepath.FromSlash(*b.build(t, orig).CertsPath))))

		_, err := b.q.Retry(t.Context(), orig)
		require.ErrorIs(t, err, ErrFilesGone)
		require.Empty(t, b.pending(t))
		require.Equal(t, []string{orig + ".zip"}, b.listDir(t, "builds"), "only the original's source is left")
	})

	t.Run("unknown build is store.ErrNotFound", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		_, err := b.q.Retry(t.Context(), uuid.NewString())
		require.ErrorIs(t, err, store.ErrNotFound)
	})
}

// TestAssignmentMintsItsOTP: with Config.OTPTTL, the job of a new
// assignment carries its one-time password, stored with the assignment and
// redeemable for a VM token; a re-delivery carries none (its caller issues
// one), and a manager without OTPTTL mints none.
func TestAssignmentMintsItsOTP(t *testing.T) {
	t.Parallel()
	b := setup(t, withConfig(Config{OTPTTL: 10 * time.Minute}))
	id := b.submit(t, domain.PlatformIOS)
	w := b.worker(t, "w", "{}")
	job, err := b.q.Poll(t.Context(), w)
	require.NoError(t, err)
	require.Equal(t, id, job.BuildID)
	require.NotEmpty(t, job.OTP)
	vm := store.TokenGrant{Digest: domain.Digest("vm"), ExpiresAt: t0.Add(time.Hour).UnixMilli()}
	require.NoError(t, b.st.RedeemOTP(t.Context(), id, domain.Digest(job.OTP), vm, t0.UnixMilli()+1))

	again, err := b.q.Poll(t.Context(), w)
	require.NoError(t, err)
	require.Equal(t, id, again.BuildID, "re-delivered")
	require.Empty(t, again.OTP)

	plain := setup(t)
	plain.submit(t, domain.PlatformIOS)
	job, err = plain.q.Poll(t.Context(), plain.worker(t, "w", "{}"))
	require.NoError(t, err)
	require.Empty(t, job.OTP)
}
