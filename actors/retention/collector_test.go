package retention_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/actors/clock"
	"github.com/expo-free-agent/controller/actors/files"
	"github.com/expo-free-agent/controller/actors/retention"
	"github.com/expo-free-agent/controller/internal/testkit"
	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

// t0 is where every test's manual clock starts (2026-01-01T00:00:00Z).
var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

const keep = 24 * time.Hour // the tests' --retention

// bundle is a real store and file store on one manual clock.
type bundle struct {
	st    *store.Store
	fs    *files.Store
	clock *clock.Manual
}

func setup(t *testing.T) *bundle {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(context.Background(), testkit.DB(t, dir))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, st.Close()) })
	fs, err := files.New(filepath.Join(dir, "storage"), nil, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	return &bundle{st: st, fs: fs, clock: clock.NewManual(t0)}
}

func (b *bundle) collector(st retention.Store, fs retention.Files) *retention.Collector {
	return retention.New(st, fs, b.clock, slog.New(slog.DiscardHandler), retention.Config{Retention: keep})
}

// now is the clock's time in epoch ms.
func (b *bundle) now() int64 { return b.clock.Now().UnixMilli() }

// save stores a file of n bytes for build id and returns its path.
func (b *bundle) save(t *testing.T, kind files.Kind, id, ext string, n int) string {
	t.Helper()
	rel, _, err := b.fs.Save(kind, id, ext, bytes.NewReader(make([]byte, n)), int64(n))
	require.NoError(t, err)
	return rel
}

// submit creates a pending build with a 100-byte source and 10 bytes of certs.
func (b *bundle) submit(t *testing.T, p domain.Platform) string {
	t.Helper()
	id := uuid.NewString()
	certs := b.save(t, files.KindCerts, id, ".zip", 10)
	require.NoError(t, b.st.CreateBuild(t.Context(), store.NewBuild{ID: id, Platform: p, SubmittedAt: b.now(),
		SourcePath: b.save(t, files.KindSource, id, ".zip", 100), CertsPath: &certs, TokenHash: make([]byte, 32)}))
	return id
}

// run assigns a submitted build to a new worker.
func (b *bundle) run(t *testing.T, p domain.Platform) (id, worker string) {
	t.Helper()
	id = b.submit(t, p)
	w, _, err := b.st.RegisterWorker(t.Context(), store.Registration{Name: "w", Capabilities: "{}", Now: b.now()})
	require.NoError(t, err)
	require.NoError(t, b.st.AssignBuild(t.Context(), id, w.ID, b.now()))
	return id, w.ID
}

// finish runs a build to its end now: completed with a 1000-byte result, or
// failed.
func (b *bundle) finish(t *testing.T, p domain.Platform, success bool) string {
	t.Helper()
	id, w := b.run(t, p)
	f := store.Finish{BuildID: id, WorkerID: w, Success: success, Now: b.now()}
	if success {
		f.ResultPath, f.ResultSize = b.save(t, files.KindResult, id, p.ResultExt(), 1000), 1000
	}
	require.NoError(t, b.st.FinishBuild(t.Context(), f))
	return id
}

func (b *bundle) build(t *testing.T, id string) domain.Build {
	t.Helper()
	got, err := b.st.GetBuild(t.Context(), id)
	require.NoError(t, err)
	return got
}

// paths lists a build's files.
func paths(bd domain.Build) []string {
	out := []string{bd.SourcePath}
	for _, p := range []*string{bd.CertsPath, bd.ResultPath} {
		if p != nil {
			out = append(out, *p)
		}
	}
	return out
}

// present counts the build's files on disk.
func (b *bundle) present(t *testing.T, id string) int {
	t.Helper()
	n := 0
	for _, rel := range paths(b.build(t, id)) {
		if _, err := b.fs.Size(rel); err == nil {
			n++
		} else {
			require.ErrorIs(t, err, files.ErrFileNotFound)
		}
	}
	return n
}

// consistent checks the invariant a crash must never break: a build whose
// row still claims its files has every one of them.
func (b *bundle) consistent(t *testing.T, ids []string) {
	t.Helper()
	for _, id := range ids {
		if bd := b.build(t, id); bd.PurgedAt == nil {
			require.Equal(t, len(paths(bd)), b.present(t, id), "build %s claims files it does not have", id)
		}
	}
}

// history is the tests' data: what a pass at t0+48h must take and keep.
type history struct {
	gone, kept []string
	goneBytes  int64
}

func (b *bundle) history(t *testing.T) history {
	t.Helper()
	var h history
	// Day one: a completed ios build replaced by a newer one, a failed
	// android build, a cancelled pending one; a build started then that
	// still runs, and one still pending.
	h.gone = append(h.gone, b.finish(t, domain.PlatformIOS, true))
	b.clock.Advance(time.Second)
	h.gone = append(h.gone, b.finish(t, domain.PlatformAndroid, false))
	b.clock.Advance(time.Second)
	cancelled := b.submit(t, domain.PlatformIOS)
	_, err := b.st.CancelBuild(t.Context(), cancelled, b.now())
	require.NoError(t, err)
	h.gone = append(h.gone, cancelled)
	h.goneBytes = 1110 + 110 + 110
	running, _ := b.run(t, domain.PlatformIOS)
	h.kept = append(h.kept, running, b.submit(t, domain.PlatformAndroid))
	b.clock.Advance(time.Hour)
	// The newest completed build of each platform: kept however old.
	h.kept = append(h.kept, b.finish(t, domain.PlatformIOS, true), b.finish(t, domain.PlatformAndroid, true))
	// Yesterday, less than a retention ago: kept.
	b.clock.Advance(30 * time.Hour)
	h.kept = append(h.kept, b.finish(t, domain.PlatformIOS, false))
	b.clock.Advance(17 * time.Hour)
	return h
}

func (b *bundle) requireDone(t *testing.T, h history) {
	t.Helper()
	for _, id := range h.gone {
		bd := b.build(t, id)
		require.NotNil(t, bd.PurgedAt, id)
		require.Zero(t, b.present(t, id), "the files of %s are gone", id)
		logs, err := b.st.Logs(t.Context(), id)
		require.NoError(t, err)
		require.NotEmpty(t, logs, "the row and its log stay")
	}
	for _, id := range h.kept {
		bd := b.build(t, id)
		require.Nil(t, bd.PurgedAt, id)
		require.Equal(t, len(paths(bd)), b.present(t, id), "build %s keeps its files", id)
	}
	purging, err := b.st.PurgingBuilds(t.Context(), 100)
	require.NoError(t, err)
	require.Empty(t, purging)
}

func TestPass(t *testing.T) {
	t.Parallel()
	b := setup(t)
	h := b.history(t)
	c := b.collector(b.st, b.fs)

	var planned []string
	plan, err := c.Plan(t.Context(), func(id string, _ int64) { planned = append(planned, id) })
	require.NoError(t, err)
	require.Equal(t, h.gone, planned)
	require.Equal(t, h.goneBytes, plan.Bytes)
	for _, id := range h.gone {
		require.Nil(t, b.build(t, id).PurgedAt, "a dry run changes nothing")
		require.Positive(t, b.present(t, id))
	}

	var went []string
	r, err := c.Pass(t.Context(), func(id string, _ int64) { went = append(went, id) })
	require.NoError(t, err)
	require.Equal(t, h.gone, went)
	require.Equal(t, retention.Report{Builds: 3, Bytes: h.goneBytes}, r)
	require.Equal(t, plan, r)
	b.requireDone(t, h)
	builds, bytes := c.Purged()
	require.Equal(t, int64(3), builds)
	require.Equal(t, h.goneBytes, bytes)

	again, err := c.Pass(t.Context(), nil)
	require.NoError(t, err)
	require.Zero(t, again, "nothing is left to take")

	// A day on, yesterday's build has expired too; the latest completed
	// builds are still kept and the running one is never touched.
	b.clock.Advance(24 * time.Hour)
	r, err = c.Pass(t.Context(), nil)
	require.NoError(t, err)
	require.Equal(t, int64(1), r.Builds)
	require.NotNil(t, b.build(t, h.kept[4]).PurgedAt)
	for _, id := range h.kept[:4] {
		require.Nil(t, b.build(t, id).PurgedAt)
	}
	require.Equal(t, domain.StatusAssigned, b.build(t, h.kept[0]).Status)
}

func TestPassDisabled(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := retention.New(b.st, b.fs, b.clock, slog.New(slog.DiscardHandler), retention.Config{})
	_, err := c.Pass(t.Context(), nil)
	require.ErrorIs(t, err, retention.ErrDisabled)
	_, err = c.Plan(t.Context(), nil)
	require.ErrorIs(t, err, retention.ErrDisabled)
}

var errCrash = errors.New("crash")

// faultyStore stops a pass at one of its store steps.
type faultyStore struct {
	retention.Store
	at string // "mark", "removed", "prune"
}

func (s faultyStore) MarkPurged(ctx context.Context, scope store.RetentionScope, now int64, limit int) ([]store.PurgeItem, error) {
	if s.at == "mark" {
		return nil, errCrash
	}
	return s.Store.MarkPurged(ctx, scope, now, limit)
}

func (s faultyStore) MarkFilesRemoved(ctx context.Context, items []store.PurgeItem, now int64) error {
	if s.at == "removed" {
		return errCrash
	}
	return s.Store.MarkFilesRemoved(ctx, items, now)
}

func (s faultyStore) PruneCPUSnapshots(ctx context.Context, scope store.RetentionScope, limit int) (int64, error) {
	if s.at == "prune" {
		return 0, errCrash
	}
	return s.Store.PruneCPUSnapshots(ctx, scope, limit)
}

// faultyFiles fails the delete number failAt (1-based) and every later one,
// as a process that died there would delete nothing more.
type faultyFiles struct {
	retention.Files
	mu      sync.Mutex
	deletes int
	failAt  int
}

func (f *faultyFiles) Delete(rel string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deletes++
	if f.failAt > 0 && f.deletes >= f.failAt {
		return errCrash
	}
	return f.Files.Delete(rel)
}

// TestCrashPoints stops a pass at each of its steps — before anything is
// marked, between the mark and the first delete, between two deletes of one
// build and between two builds, before the deletes are recorded, while
// pruning — and checks that no row was left claiming a missing file, then
// that a fresh pass finishes the job.
func TestCrashPoints(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		storeAt string
		failAt  int
	}{
		{"BeforeMark", "mark", 0},
		{"BetweenMarkAndDelete", "", 1},
		{"BetweenTwoFilesOfABuild", "", 2},
		{"BetweenTwoBuilds", "", 4},
		{"BeforeRecordingDeletes", "removed", 0},
		{"WhilePruning", "prune", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			h := b.history(t)
			all := append(append([]string{}, h.gone...), h.kept...)
			ff := &faultyFiles{Files: b.fs, failAt: tc.failAt}
			_, err := b.collector(faultyStore{Store: b.st, at: tc.storeAt}, ff).Pass(t.Context(), nil)
			require.ErrorIs(t, err, errCrash)
			b.consistent(t, all)

			b.clock.Advance(time.Hour) // the next pass, an hour later
			_, err = b.collector(b.st, b.fs).Pass(t.Context(), nil)
			require.NoError(t, err)
			b.consistent(t, all)
			b.requireDone(t, h)
		})
	}
}

// TestOrphanPassTakesPurgedFiles: files left behind by a pass that stopped
// after its mark are also removed by the file service's orphan pass at the
// next start, since a purged row claims no file.
func TestOrphanPassTakesPurgedFiles(t *testing.T) {
	t.Parallel()
	b := setup(t)
	h := b.history(t)
	_, err := b.collector(b.st, &faultyFiles{Files: b.fs, failAt: 1}).Pass(t.Context(), nil)
	require.ErrorIs(t, err, errCrash)
	require.Positive(t, b.present(t, h.gone[0]))

	if b.st.Shared() {
		// Nodes sharing the storage root leave files younger than
		// files.SharedOrphanAge alone (another node may be about to commit
		// their row): these were written long ago.
		n, err := b.fs.RemoveOrphans(t.Context(), b.st)
		require.NoError(t, err)
		require.Zero(t, n, "young files are left alone")
		ageFiles(t, b.fs.Root(), files.SharedOrphanAge+time.Minute)
	}
	n, err := b.fs.RemoveOrphans(t.Context(), b.st)
	require.NoError(t, err)
	require.Equal(t, 3+2+2, n, "every file of the three taken builds")
	for _, id := range h.gone {
		require.Zero(t, b.present(t, id))
	}
	for _, id := range h.kept {
		require.Equal(t, len(paths(b.build(t, id))), b.present(t, id))
	}
}

// TestServe: the collector runs a pass at start and then one every hour of
// the injected clock.
func TestServe(t *testing.T) {
	t.Parallel()
	b := setup(t)
	h := b.history(t)
	var logs testkit.LockedBuffer
	c := retention.New(b.st, b.fs, b.clock, slog.New(slog.NewTextHandler(&logs, nil)), retention.Config{Retention: keep})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Serve(ctx) }()
	defer func() {
		cancel()
		require.ErrorIs(t, <-done, context.Canceled)
	}()
	waitPasses := func(n int64) {
		t.Helper()
		require.Eventually(t, func() bool { return c.Passes() >= n }, 10*time.Second, time.Millisecond)
		require.Equal(t, n, c.Passes())
	}
	waitPasses(1)
	b.requireDone(t, h)
	// The pass is logged with what it took, in real time: the manual clock
	// stands ten months before the test runs.
	m := regexp.MustCompile(`msg="retention pass" builds=3 bytes=1330 cpu_snapshots=0 diagnostics=0 took=(\S+)`).
		FindStringSubmatch(logs.String())
	require.NotNil(t, m, "%s", logs.String())
	took, err := time.ParseDuration(m[1])
	require.NoError(t, err)
	require.Less(t, took, time.Minute)

	// Yesterday's build expires 7 hours later; until the hour strikes, no
	// pass runs.
	b.clock.Advance(7*time.Hour - time.Minute)
	waitPasses(2) // the hourly timer fired once; the next waits an hour from now
	require.Nil(t, b.build(t, h.kept[4]).PurgedAt, "not expired yet")
	b.clock.Advance(time.Hour)
	waitPasses(3)
	require.NotNil(t, b.build(t, h.kept[4]).PurgedAt)
}

// ageFiles sets back the modification time of every file under root by d.
func ageFiles(t *testing.T, root string, d time.Duration) {
	t.Helper()
	old := time.Now().Add(-d)
	require.NoError(t, filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		return os.Chtimes(path, old, old)
	}))
}
