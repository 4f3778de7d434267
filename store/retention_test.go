package store_test

import (
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

const hour = int64(3_600_000)

// finished creates a build of platform submitted at t, run by a new worker
// and finished at done: completed with a result, or failed.
func (d *testDB) finished(t *testing.T, platform domain.Platform, at, done int64, success bool) string {
	t.Helper()
	b := uuid.NewString()
	d.createBuild(t, b, at, platform)
	w := d.worker(t, "w-"+b[:8], at)
	require.NoError(t, d.s.AssignBuild(t.Context(), b, w, at+1))
	f := store.Finish{BuildID: b, WorkerID: w, Success: success, Now: done}
	if success {
		f.ResultPath, f.ResultSize = "results/"+b+platform.ResultExt(), 10
	}
	require.NoError(t, d.s.FinishBuild(t.Context(), f))
	return b
}

func itemIDs(items []store.PurgeItem) []string {
	out := []string{}
	for _, it := range items {
		out = append(out, it.ID)
	}
	return out
}

func TestRetentionTakes(t *testing.T) {
	t.Parallel()
	d := newTestDB(t)
	cutoff := t0 + 10*hour
	// Old enough, in finish order: a failed build, a completed ios build that
	// a newer one replaces, a cancelled pending build (failed, never run).
	oldFailed := d.finished(t, domain.PlatformIOS, t0, t0+hour, false)
	oldIOS := d.finished(t, domain.PlatformIOS, t0, t0+2*hour, true)
	cancelled := d.build(t, t0)
	_, err := d.s.CancelBuild(t.Context(), cancelled, t0+3*hour)
	require.NoError(t, err)
	// Kept: the newest completed build of each platform, however old (the
	// android one is older than the cutoff), builds finished after the
	// cutoff, and builds that have not finished however old they are.
	latestAndroid := d.finished(t, domain.PlatformAndroid, t0, t0+4*hour, true)
	latestIOS := d.finished(t, domain.PlatformIOS, t0, t0+5*hour, true)
	recentFailed := d.finished(t, domain.PlatformIOS, t0, cutoff, false)
	running, _ := d.running(t, "busy", t0)
	pending := d.build(t, t0)

	want := []string{oldFailed, oldIOS, cancelled}
	scope, err := d.s.RetentionScopeAt(t.Context(), cutoff)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{latestIOS, latestAndroid}, scope.Keep)
	got, err := d.s.PurgeableBuilds(t.Context(), scope, store.PurgeCursor{}, 100)
	require.NoError(t, err)
	require.Equal(t, want, itemIDs(got))
	require.Equal(t, []string{"builds/" + oldIOS + ".zip", "results/" + oldIOS + ".ipa"}, got[1].Paths)
	require.Equal(t, []string{"builds/" + cancelled + ".zip"}, got[2].Paths)

	t.Run("Pages", func(t *testing.T) {
		first, err := d.s.PurgeableBuilds(t.Context(), scope, store.PurgeCursor{}, 2)
		require.NoError(t, err)
		require.Equal(t, want[:2], itemIDs(first))
		last := first[1]
		rest, err := d.s.PurgeableBuilds(t.Context(), scope, store.PurgeCursor{CompletedAt: last.CompletedAt, ID: last.ID}, 2)
		require.NoError(t, err)
		require.Equal(t, want[2:], itemIDs(rest))
	})

	t.Run("MarkInBatches", func(t *testing.T) {
		now := cutoff + hour
		batch, err := d.s.MarkPurged(t.Context(), scope, now, 2)
		require.NoError(t, err)
		require.Equal(t, want[:2], itemIDs(batch))
		// Taken rows claim no file any more: the start's orphan pass may
		// remove what a stopped pass left.
		ref, err := d.s.FileReferenced(t.Context(), oldIOS, "results/"+oldIOS+".ipa")
		require.NoError(t, err)
		require.False(t, ref)
		require.Equal(t, &now, d.get(t, oldIOS).PurgedAt)
		require.Equal(t, &now, d.get(t, oldIOS).StatusObject().FilesPurgedAt)

		batch2, err := d.s.MarkPurged(t.Context(), scope, now, 2)
		require.NoError(t, err)
		require.Equal(t, want[2:], itemIDs(batch2))
		none, err := d.s.MarkPurged(t.Context(), scope, now, 2)
		require.NoError(t, err)
		require.Empty(t, none)

		// Until their files are recorded as removed, the taken builds are
		// "purging": the next pass deletes their files again.
		purging, err := d.s.PurgingBuilds(t.Context(), 100)
		require.NoError(t, err)
		require.ElementsMatch(t, want, itemIDs(purging))
		require.NoError(t, d.s.MarkFilesRemoved(t.Context(), purging[:1], now))
		purging2, err := d.s.PurgingBuilds(t.Context(), 100)
		require.NoError(t, err)
		require.Len(t, purging2, 2)
		require.NoError(t, d.s.MarkFilesRemoved(t.Context(), purging2, now))
		purging3, err := d.s.PurgingBuilds(t.Context(), 100)
		require.NoError(t, err)
		require.Empty(t, purging3)

		for _, b := range []string{latestAndroid, latestIOS, recentFailed, running, pending} {
			require.Nil(t, d.get(t, b).PurgedAt, b)
		}
		require.Nil(t, d.get(t, latestIOS).StatusObject().FilesPurgedAt)
		// The row and its log stay.
		require.Equal(t, domain.StatusCompleted, d.get(t, oldIOS).Status)
		require.NotEmpty(t, d.logs(t, oldIOS))
	})

	t.Run("RetryOfPurged", func(t *testing.T) {
		retry := uuid.NewString()
		before := d.dump(t)
		err := d.s.CreateBuild(t.Context(), store.NewBuild{ID: retry, Platform: domain.PlatformIOS, SubmittedAt: cutoff,
			SourcePath: "builds/" + retry + ".zip", TokenHash: tokenHash("x"), OriginalBuildID: &oldIOS})
		require.ErrorIs(t, err, store.ErrPurged)
		require.Equal(t, before, d.dump(t), "a refused retry writes nothing")
	})
}

// TestRetentionNewerLatest: once a newer completed build exists, the one
// kept before as the latest is taken at the next pass.
func TestRetentionNewerLatest(t *testing.T) {
	t.Parallel()
	d := newTestDB(t)
	first := d.finished(t, domain.PlatformAndroid, t0, t0+hour, true)
	scope, err := d.s.RetentionScopeAt(t.Context(), t0+10*hour)
	require.NoError(t, err)
	require.Equal(t, []string{first}, scope.Keep, "no ios build: only the android one is kept")
	got, err := d.s.MarkPurged(t.Context(), scope, t0+10*hour, 100)
	require.NoError(t, err)
	require.Empty(t, got, "the only completed android build is kept")
	d.finished(t, domain.PlatformAndroid, t0, t0+11*hour, true)
	scope, err = d.s.RetentionScopeAt(t.Context(), t0+10*hour)
	require.NoError(t, err)
	got, err = d.s.MarkPurged(t.Context(), scope, t0+12*hour, 100)
	require.NoError(t, err)
	require.Equal(t, []string{first}, itemIDs(got))
}

func TestRetentionPrunes(t *testing.T) {
	t.Parallel()
	d := newTestDB(t)
	cutoff := t0 + 10*hour
	done := d.finished(t, domain.PlatformIOS, t0, t0+hour, false)
	running, worker := d.running(t, "busy", t0)
	snap := func(build string, at int64) {
		d.exec(t, `INSERT INTO cpu_snapshots (build_id, worker_id, timestamp, cpu_percent, memory_mb)
			VALUES (?, ?, ?, 50, 100)`, build, worker, at)
	}
	for i := range 5 {
		snap(done, t0+int64(i))
		snap(running, t0+int64(i)) // old, but its build still runs
	}
	snap(done, cutoff) // not older than the cutoff
	// Stored after it with an older time (the clock stepped back): pruning
	// goes in the order snapshots were stored and stops at the first recent
	// one, so this one waits for a later pass.
	snap(done, t0+7)
	report := func(w string, at int64) {
		require.NoError(t, d.s.AddDiagnostic(t.Context(), domain.Diagnostic{ID: uuid.NewString(), WorkerID: w,
			Status: "healthy", RunAt: at, Checks: "[]"}))
	}
	quiet := d.worker(t, "quiet", t0)
	report(quiet, t0)
	report(quiet, t0+1) // its latest: kept although old
	report(worker, t0)
	report(worker, t0+1)
	report(worker, cutoff+1)

	scope, err := d.s.RetentionScopeAt(t.Context(), cutoff)
	require.NoError(t, err)
	snaps, diags, err := d.s.Prunable(t.Context(), scope)
	require.NoError(t, err)
	require.Equal(t, int64(5), snaps)
	require.Equal(t, int64(3), diags)

	n, err := d.s.PruneCPUSnapshots(t.Context(), scope, 3)
	require.NoError(t, err)
	require.Equal(t, int64(3), n)
	n, err = d.s.PruneCPUSnapshots(t.Context(), scope, 3)
	require.NoError(t, err)
	require.Equal(t, int64(2), n)
	n, err = d.s.PruneCPUSnapshots(t.Context(), scope, 3)
	require.NoError(t, err)
	require.Zero(t, n)
	require.Equal(t, 5, d.count(t, `SELECT COUNT(*) FROM cpu_snapshots WHERE build_id = ?`, running))
	require.Equal(t, 2, d.count(t, `SELECT COUNT(*) FROM cpu_snapshots WHERE build_id = ?`, done))

	n, err = d.s.PruneDiagnostics(t.Context(), scope, 100)
	require.NoError(t, err)
	require.Equal(t, int64(3), n)
	require.Equal(t, 1, d.count(t, `SELECT COUNT(*) FROM diagnostics WHERE worker_id = ? AND run_at = ?`, quiet, t0+1))
	require.Equal(t, 1, d.count(t, `SELECT COUNT(*) FROM diagnostics WHERE worker_id = ?`, worker))
	snaps, diags, err = d.s.Prunable(t.Context(), scope)
	require.NoError(t, err)
	require.Zero(t, snaps+diags)
}
