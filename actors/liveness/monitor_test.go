package liveness

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/expo-free-agent/controller/internal/testkit"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/actors/clock"
	"github.com/expo-free-agent/controller/actors/files"
	"github.com/expo-free-agent/controller/actors/queue"
	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

// t0 is where every test's manual clock starts (2026-01-01T00:00:00Z).
var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// bundle is a liveness monitor watching a real queue manager on a real
// SQLite store, all on one manual clock; both Serve goroutines are stopped by
// t.Cleanup.
type bundle struct {
	mon   *Monitor
	q     *queue.Manager
	st    *store.Store
	fs    *files.Store
	clock *clock.Manual
}

func setup(t *testing.T) *bundle {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(context.Background(), testkit.DB(t, dir))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, st.Close()) }) // after the services are stopped (last-in first-out)
	log := slog.New(slog.DiscardHandler)
	fs, err := files.New(filepath.Join(dir, "storage"), nil, log)
	require.NoError(t, err)
	clk := clock.NewManual(t0)
	q := queue.New(st, fs, clk, log, queue.Config{})
	mon := New(st, q, clk, log, Config{BuildTimeout: 5 * time.Minute, WorkerTimeout: 5 * time.Minute})
	// Only CheckNow checks: the ticker is pushed out of the test's reach, so
	// no check runs between a test's steps.
	mon.cfg.Interval = time.Hour

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, svc := range []interface{ Serve(context.Context) error }{q, mon} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := svc.Serve(ctx); err != nil && ctx.Err() == nil {
				t.Errorf("%v.Serve: %v", svc, err)
			}
		}()
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return &bundle{mon: mon, q: q, st: st, fs: fs, clock: clk}
}

// submit submits an ios build and returns its id.
func (b *bundle) submit(t *testing.T) string {
	t.Helper()
	src, err := b.fs.Stage(files.KindSource, strings.NewReader("source"), 1<<20, nil)
	require.NoError(t, err)
	sub, err := b.q.Submit(t.Context(), queue.Submission{Platform: domain.PlatformIOS, Source: src})
	require.NoError(t, err)
	return sub.ID
}

// worker registers a worker taking any platform and returns its id.
func (b *bundle) worker(t *testing.T, name string) string {
	t.Helper()
	w, _, err := b.q.Register(t.Context(), store.Registration{Name: name, Capabilities: `{}`})
	require.NoError(t, err)
	return w.ID
}

// poll polls as workerID and returns the id of the build it got ("" for none).
func (b *bundle) poll(t *testing.T, workerID string) string {
	t.Helper()
	job, err := b.q.Poll(t.Context(), workerID)
	require.NoError(t, err)
	if job == nil {
		return ""
	}
	return job.BuildID
}

func (b *bundle) build(t *testing.T, id string) domain.Build {
	t.Helper()
	got, err := b.st.GetBuild(t.Context(), id)
	require.NoError(t, err)
	return got
}

func (b *bundle) workerStatus(t *testing.T, id string) domain.WorkerStatus {
	t.Helper()
	w, err := b.st.GetWorker(t.Context(), id)
	require.NoError(t, err)
	return w.Status
}

func (b *bundle) checkNow(t *testing.T) {
	t.Helper()
	require.NoError(t, b.mon.CheckNow(t.Context()))
}

func TestCheckNow(t *testing.T) {
	t.Parallel()

	t.Run("build past the build timeout is requeued and a heartbeat just before the check keeps another running", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		silent := b.submit(t)
		b.clock.Advance(time.Millisecond)
		alive := b.submit(t)
		ws := b.worker(t, "silent")
		wa := b.worker(t, "alive")
		require.Equal(t, silent, b.poll(t, ws))
		require.Equal(t, alive, b.poll(t, wa))

		b.clock.Advance(4 * time.Minute)
		b.checkNow(t)
		require.Equal(t, domain.StatusAssigned, b.build(t, silent).Status, "within the build timeout")

		b.clock.Advance(2 * time.Minute) // 6 minutes since the assignments
		progress := 50.0
		require.NoError(t, b.st.Heartbeat(t.Context(), alive, wa, &progress, clock.Millis(b.clock)))
		b.checkNow(t)

		got := b.build(t, silent)
		require.Equal(t, domain.StatusPending, got.Status, "requeued")
		require.Equal(t, 1, got.Attempts)
		require.Nil(t, got.WorkerID)
		got = b.build(t, alive)
		require.Equal(t, domain.StatusBuilding, got.Status, "the heartbeat kept it running")
		require.Equal(t, wa, *got.WorkerID)
		require.Equal(t, queue.Counters{Assignments: 2, Requeues: 1, Timeouts: 1}, b.q.Counters())

		w := b.worker(t, "next")
		require.Equal(t, silent, b.poll(t, w), "the manager queued the expired build")
	})

	t.Run("touched build is kept running until its own liveness expires", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		a := b.submit(t)
		w := b.worker(t, "w")
		require.Equal(t, a, b.poll(t, w))

		b.clock.Advance(5*time.Minute + time.Millisecond)
		require.NoError(t, b.st.TouchBuild(t.Context(), a, w, clock.Millis(b.clock)))
		b.checkNow(t)
		require.Equal(t, domain.StatusBuilding, b.build(t, a).Status)

		b.clock.Advance(5*time.Minute + time.Millisecond)
		b.checkNow(t)
		require.Equal(t, domain.StatusPending, b.build(t, a).Status)
	})

	t.Run("worker not seen within the worker timeout goes offline and a polling worker stays online", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		silent := b.worker(t, "silent")
		seen := b.worker(t, "seen")

		b.clock.Advance(4 * time.Minute)
		require.Empty(t, b.poll(t, seen))
		b.checkNow(t)
		require.Equal(t, domain.WorkerIdle, b.workerStatus(t, silent), "within the worker timeout")

		b.clock.Advance(2 * time.Minute) // silent: 6 minutes, seen: 2 minutes
		b.checkNow(t)
		require.Equal(t, domain.WorkerOffline, b.workerStatus(t, silent))
		require.Equal(t, domain.WorkerIdle, b.workerStatus(t, seen))
		sw, err := b.st.GetWorker(t.Context(), seen)
		require.NoError(t, err)
		require.Equal(t, t0.Add(4*time.Minute).UnixMilli(), sw.LastSeenAt, "the check saved the poll's last-seen time")

		b.clock.Advance(4 * time.Minute) // seen: 6 minutes
		b.checkNow(t)
		require.Equal(t, domain.WorkerOffline, b.workerStatus(t, seen))
	})

	t.Run("without a running Serve CheckNow returns ErrUnavailable when its ctx expires", func(t *testing.T) {
		t.Parallel()
		mon := New(nil, nil, clock.NewManual(t0), slog.New(slog.DiscardHandler), Config{})
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		err := mon.CheckNow(ctx)
		require.ErrorIs(t, err, queue.ErrUnavailable)
		require.ErrorIs(t, ctx.Err(), context.DeadlineExceeded)
	})
}
