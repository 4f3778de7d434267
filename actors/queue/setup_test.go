package queue

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/expo-free-agent/controller/internal/testkit"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/actors/clock"
	"github.com/expo-free-agent/controller/actors/files"
	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

// t0 is where every test's manual clock starts (2026-01-01T00:00:00Z).
var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Capabilities used by the tests.
const (
	anyPlatform = `{}`
	androidOnly = `{"platforms":["android"]}`
	iosOnly     = `{"platforms":["ios"]}`
)

// bundle is one queue manager under test: a real SQLite store and a real
// file store in the test's temporary directory, a manual clock, and a Serve
// goroutine that t.Cleanup stops.
type bundle struct {
	q      *Manager
	st     *store.Store
	fs     *files.Store
	clock  *clock.Manual
	panics chan any // values recovered from a Serve that panicked
	start  func()   // starts another Serve, as the supervisor does after a panic
}

type options struct {
	cfg  Config
	wrap func(*store.Store) Store
}

type option func(*options)

// withConfig sets the manager's Config.
func withConfig(cfg Config) option { return func(o *options) { o.cfg = cfg } }

// withStore puts a wrapper between the manager and the real store.
func withStore(wrap func(*store.Store) Store) option { return func(o *options) { o.wrap = wrap } }

func setup(t *testing.T, opts ...option) *bundle {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	dir := t.TempDir()
	st, err := store.Open(context.Background(), testkit.DB(t, dir))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, st.Close()) }) // after Serve is stopped (cleanups run last-in first-out)
	log := slog.New(slog.DiscardHandler)
	// Named temporaries, so that a staged file that was neither committed nor
	// discarded shows up in its directory.
	fs, err := files.New(filepath.Join(dir, "storage"), files.OSFS{NamedTemps: true}, log)
	require.NoError(t, err)
	clk := clock.NewManual(t0)
	var qs Store = st
	if o.wrap != nil {
		qs = o.wrap(st)
	}
	b := &bundle{q: New(qs, fs, clk, log, o.cfg), st: st, fs: fs, clock: clk, panics: make(chan any, 8)}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	b.start = func() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				// Serve re-panics after answering the request in flight; the
				// supervisor would recover and restart it.
				if r := recover(); r != nil {
					b.panics <- r
				}
			}()
			// Serve returns only when ctx ends (then a load it was doing may
			// fail), or when loading the queue fails.
			if err := b.q.Serve(ctx); err != nil && ctx.Err() == nil {
				t.Errorf("Serve: %v", err)
			}
		}()
	}
	b.start()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return b
}

// stage stages content as a file of the given kind.
func (b *bundle) stage(t *testing.T, kind files.Kind, content string) *files.Staged {
	t.Helper()
	s, err := b.fs.Stage(kind, strings.NewReader(content), 1<<20, nil)
	require.NoError(t, err)
	return s
}

// submit submits a build of platform p with a small source and returns its id.
func (b *bundle) submit(t *testing.T, p domain.Platform) string {
	t.Helper()
	sub, err := b.q.Submit(t.Context(), Submission{Platform: p, Source: b.stage(t, files.KindSource, "source of a "+string(p)+" build")})
	require.NoError(t, err)
	return sub.ID
}

// worker registers a new worker and returns its id.
func (b *bundle) worker(t *testing.T, name, capabilities string) string {
	t.Helper()
	w, created, err := b.q.Register(t.Context(), store.Registration{Name: name, Capabilities: capabilities})
	require.NoError(t, err)
	require.True(t, created)
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

// build reads a build from the store.
func (b *bundle) build(t *testing.T, id string) domain.Build {
	t.Helper()
	got, err := b.st.GetBuild(t.Context(), id)
	require.NoError(t, err)
	return got
}

// storedWorker reads a worker from the store.
func (b *bundle) storedWorker(t *testing.T, id string) domain.Worker {
	t.Helper()
	w, err := b.st.GetWorker(t.Context(), id)
	require.NoError(t, err)
	return w
}

// pending returns the manager's FIFO, in order, as build ids.
func (b *bundle) pending(t *testing.T) []string {
	t.Helper()
	ids, err := ask(t.Context(), b.q, func(_ context.Context, s *state) ([]string, error) {
		ids := []string{}
		for _, qb := range s.pending {
			ids = append(ids, qb.id)
		}
		return ids, nil
	})
	require.NoError(t, err)
	return ids
}

// memWorker is the manager's record of one worker.
type memWorker struct {
	status domain.WorkerStatus
	job    string // build id held, "" for none
}

func (b *bundle) memWorker(t *testing.T, id string) memWorker {
	t.Helper()
	w, err := ask(t.Context(), b.q, func(_ context.Context, s *state) (memWorker, error) {
		e := s.workers[id]
		if e == nil {
			return memWorker{}, store.ErrWorkerNotFound
		}
		out := memWorker{status: e.status}
		if e.job != nil {
			out.job = e.job.id
		}
		return out, nil
	})
	require.NoError(t, err)
	return w
}

// stats is the manager's Stats.
func (b *bundle) stats(t *testing.T) Stats {
	t.Helper()
	s, err := b.q.Stats(t.Context())
	require.NoError(t, err)
	return s
}

// listDir lists the names in one directory of the storage root (temporaries
// included).
func (b *bundle) listDir(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(b.fs.Root(), dir))
	require.NoError(t, err)
	names := []string{}
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// readFile reads a stored file by its path relative to the storage root.
func (b *bundle) readFile(t *testing.T, rel string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(b.fs.Root(), filepath.FromSlash(rel)))
	require.NoError(t, err)
	return string(data)
}

// hookStore is the real store with hooks run before some of its methods,
// for injecting a panic or a stall into the manager's goroutine.
type hookStore struct {
	*store.Store
	beforeAssign  func()
	beforeCancel  func()
	beforePending func()
	sync          func() error // instead of the store's Sync, when set
}

func (h *hookStore) Sync() error {
	if h.sync != nil {
		return h.sync()
	}
	return h.Store.Sync()
}

func (h *hookStore) PendingBuilds(ctx context.Context) ([]domain.Build, error) {
	if h.beforePending != nil {
		h.beforePending()
	}
	return h.Store.PendingBuilds(ctx)
}

func (h *hookStore) AssignBuild(ctx context.Context, buildID, workerID string, now int64) error {
	if h.beforeAssign != nil {
		h.beforeAssign()
	}
	return h.Store.AssignBuild(ctx, buildID, workerID, now)
}

func (h *hookStore) CancelBuild(ctx context.Context, id string, now int64) (domain.Build, error) {
	if h.beforeCancel != nil {
		h.beforeCancel()
	}
	return h.Store.CancelBuild(ctx, id, now)
}

// waitFor fails the test unless ch delivers within d.
func waitFor[T any](t *testing.T, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		require.FailNow(t, "timed out waiting for "+what)
		panic("unreachable")
	}
}
