package store_test

import (
	"testing"

	"github.com/expo-free-agent/controller/internal/testkit"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

func TestBuildCounts(t *testing.T) {
	t.Parallel()

	t.Run("Empty", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		c, err := d.s.BuildCounts(t.Context())
		require.NoError(t, err)
		require.Equal(t, store.Counts{}, c)
		require.Zero(t, c.Active())
	})

	t.Run("EveryState", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		d.build(t, t0)
		d.build(t, t0)
		d.running(t, "assigned", t0)
		b, w := d.running(t, "building", t0)
		require.NoError(t, d.s.TouchBuild(t.Context(), b, w, t0+2000))
		b, w = d.running(t, "completed", t0)
		require.NoError(t, d.s.FinishBuild(t.Context(), store.Finish{BuildID: b, WorkerID: w, Success: true,
			ResultPath: "results/" + b + ".ipa", Now: t0 + 3000}))
		b, w = d.running(t, "failed", t0)
		require.NoError(t, d.s.FinishBuild(t.Context(), store.Finish{BuildID: b, WorkerID: w, Now: t0 + 3000}))
		_, err := d.s.CancelBuild(t.Context(), d.build(t, t0), t0+4000)
		require.NoError(t, err)

		c, err := d.s.BuildCounts(t.Context())
		require.NoError(t, err)
		require.Equal(t, store.Counts{Pending: 2, Assigned: 1, Building: 1, Completed: 1, Failed: 2}, c)
		require.Equal(t, 2, c.Active())
	})

	// The counts are kept by triggers (migration 0003_bounded_reads): after every kind of
	// transition they equal a count of the rows.
	t.Run("KeptByTriggers", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		check := func(step string) {
			c, err := d.s.BuildCounts(t.Context())
			require.NoError(t, err)
			for status, n := range map[string]int{"pending": c.Pending, "assigned": c.Assigned, "building": c.Building,
				"completed": c.Completed, "failed": c.Failed} {
				require.Equal(t, d.count(t, `SELECT COUNT(*) FROM builds WHERE status = ?`, status), n, "%s: %s", step, status)
			}
			d.checkHistoryTotals(t, step)
		}
		d.build(t, t0)
		check("submit")
		b, w := d.running(t, "w1", t0)
		check("assign")
		require.NoError(t, d.s.TouchBuild(t.Context(), b, w, t0+1010))
		check("touch")
		out, err := d.s.TimeoutBuild(t.Context(), b, w, t0+2000, t0+2000, 3)
		require.NoError(t, err)
		require.Equal(t, domain.TimeoutRequeued, out)
		check("timeout requeue")
		b2, w2 := d.running(t, "w2", t0)
		_, err = d.s.RequeueOnUnregister(t.Context(), w2, t0+300)
		require.NoError(t, err)
		check("unregister")
		_, err = d.s.CancelBuild(t.Context(), b2, t0+400)
		require.NoError(t, err)
		check("cancel")
		b3, w3 := d.running(t, "w3", t0)
		d.exec(t, `DELETE FROM workers WHERE id = ?`, w3)
		_, err = d.s.Recover(t.Context(), t0+500)
		require.NoError(t, err)
		check("recover")
		b4, w4 := d.running(t, "w4", t0)
		require.NoError(t, d.s.RecordTelemetry(t.Context(), b4, w4, t0+1500, nil,
			&domain.CPUSnapshot{CPUPercent: 37.5, MemoryMB: 100}))
		check("telemetry")
		require.NoError(t, d.s.FinishBuild(t.Context(), store.Finish{BuildID: b4, WorkerID: w4, Success: true,
			ResultPath: "results/" + b4 + ".ipa", Now: t0 + 9000}))
		check("complete")
		b5, w5 := d.running(t, "w5", t0)
		require.NoError(t, d.s.FinishBuild(t.Context(), store.Finish{BuildID: b5, WorkerID: w5, Now: t0 + 4000}))
		check("fail")
		d.exec(t, `DELETE FROM cpu_snapshots WHERE build_id = ?`, b4)
		check("snapshots pruned")
		d.exec(t, `DELETE FROM build_logs WHERE build_id IN (?, ?)`, b3, b5)
		d.exec(t, `DELETE FROM outbox`)
		d.exec(t, `DELETE FROM builds WHERE id IN (?, ?)`, b3, b5)
		check("delete")
	})

	// Migration 0009 starts its totals from the history already there.
	t.Run("TotalsStartFromHistory", func(t *testing.T) {
		t.Parallel()
		testkit.SQLiteOnly(t, "migration 0009 from an older schema")
		d := newTestDB(t)
		b, w := d.running(t, "w", t0)
		require.NoError(t, d.s.RecordTelemetry(t.Context(), b, w, t0+1500, nil,
			&domain.CPUSnapshot{CPUPercent: 60, MemoryMB: 100}))
		require.NoError(t, d.s.FinishBuild(t.Context(), store.Finish{BuildID: b, WorkerID: w, Success: true,
			ResultPath: "results/" + b + ".ipa", Now: t0 + 31_000}))
		for _, q := range []string{`DROP TABLE history_totals`, `DROP INDEX builds_by_end`,
			`DELETE FROM schema_migrations WHERE name = '0009_history_totals.sql'`} {
			d.exec(t, q)
		}
		for _, trig := range []string{"build_time_insert", "build_time_update", "build_time_delete", "cpu_insert", "cpu_delete"} {
			d.exec(t, `DROP TRIGGER history_`+trig)
		}
		require.NoError(t, d.s.Close())
		s, err := store.Open(t.Context(), d.path)
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, s.Close()) })
		d.s = s
		st, err := s.Stats(t.Context(), t0, t0)
		require.NoError(t, err)
		require.Equal(t, int64(30_000), st.TotalBuildTimeMS)
		require.InDelta(t, 0.6*30, st.TotalCPUCycles, 1e-9)
		d.checkHistoryTotals(t, "migrated")
	})
}

// checkHistoryTotals compares the totals kept by triggers with the sums of
// the rows.
func (d *testDB) checkHistoryTotals(t *testing.T, step string) {
	t.Helper()
	require.Equal(t, d.count(t, `SELECT COALESCE(SUM(completed_at - started_at), 0) FROM builds
		WHERE status IN ('completed', 'failed') AND completed_at IS NOT NULL AND started_at IS NOT NULL`),
		d.count(t, `SELECT CAST(SUM(build_time_ms) AS BIGINT) FROM history_totals`), "%s: build time", step)
	require.Equal(t, d.count(t, `SELECT COUNT(*) FROM cpu_snapshots`),
		d.count(t, `SELECT CAST(SUM(cpu_samples) AS BIGINT) FROM history_totals`), "%s: CPU samples", step)
	require.Equal(t, d.count(t, `SELECT CAST(ROUND(COALESCE(SUM(cpu_percent), 0) * 1000) AS INTEGER) FROM cpu_snapshots`),
		d.count(t, `SELECT CAST(ROUND(SUM(cpu_percent) * 1000) AS INTEGER) FROM history_totals`), "%s: CPU percent", step)
}

func TestStats(t *testing.T) {
	t.Parallel()

	t.Run("Empty/AllZero", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		st, err := d.s.Stats(t.Context(), t0, t0)
		require.NoError(t, err)
		require.Equal(t, store.Stats{}, st)
	})

	t.Run("RealData", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		const (
			dayStart    = t0 + 86_400_000 // 00:00 UTC "today"
			now         = dayStart + 3_600_000
			onlineSince = now - 120_000
		)

		// Workers: seen inside the window (idle, building, exactly at the edge),
		// seen too long ago, and offline though recently seen.
		online := d.worker(t, "online", onlineSince+5)
		edge := d.worker(t, "edge", onlineSince)
		d.worker(t, "stale", onlineSince-1)
		offline := d.worker(t, "offline", now)
		require.NoError(t, d.s.SetWorkerStatus(t.Context(), offline, domain.WorkerOffline, now))

		// Completed yesterday: 10 s of build time, not today.
		b := d.build(t, t0)
		require.NoError(t, d.s.AssignBuild(t.Context(), b, online, dayStart-20_000))
		require.NoError(t, d.s.FinishBuild(t.Context(), store.Finish{BuildID: b, WorkerID: online, Success: true,
			ResultPath: "results/" + b + ".ipa", Now: dayStart - 10_000}))
		// Completed exactly at the day start: 5 s, today.
		b = d.build(t, t0)
		require.NoError(t, d.s.AssignBuild(t.Context(), b, online, dayStart-5_000))
		require.NoError(t, d.s.RecordTelemetry(t.Context(), b, online, dayStart-4_000, nil,
			&domain.CPUSnapshot{CPUPercent: 40, MemoryMB: 100}))
		require.NoError(t, d.s.FinishBuild(t.Context(), store.Finish{BuildID: b, WorkerID: online, Success: true,
			ResultPath: "results/" + b + ".ipa", Now: dayStart}))
		// Failed today: 25 s, counted in total time but not in buildsToday.
		b = d.build(t, t0)
		require.NoError(t, d.s.AssignBuild(t.Context(), b, edge, dayStart+1_000))
		require.NoError(t, d.s.RecordTelemetry(t.Context(), b, edge, dayStart+2_000, nil,
			&domain.CPUSnapshot{CPUPercent: 100, MemoryMB: 100}))
		require.NoError(t, d.s.FinishBuild(t.Context(), store.Finish{BuildID: b, WorkerID: edge, Now: dayStart + 26_000}))
		// Cancelled while pending: finished, but no start time, so no build time.
		_, err := d.s.CancelBuild(t.Context(), d.build(t, t0), dayStart+30_000)
		require.NoError(t, err)
		// One running (on "online": building) and two queued.
		b = d.build(t, t0)
		require.NoError(t, d.s.AssignBuild(t.Context(), b, online, now-1_000))
		require.NoError(t, d.s.RecordTelemetry(t.Context(), b, online, now-500, nil,
			&domain.CPUSnapshot{CPUPercent: 10, MemoryMB: 100}))
		d.build(t, t0)
		d.build(t, t0)

		st, err := d.s.Stats(t.Context(), onlineSince, dayStart)
		require.NoError(t, err)
		const totalMS = 10_000 + 5_000 + 25_000
		avgCPU := (40.0 + 100.0 + 10.0) / 3
		require.Equal(t, store.Stats{
			NodesOnline:      2,
			BuildsQueued:     2,
			ActiveBuilds:     1,
			BuildsToday:      1,
			TotalBuilds:      4,
			TotalBuildTimeMS: totalMS,
			TotalCPUCycles:   avgCPU / 100 * totalMS / 1000,
		}, st)
		require.InDelta(t, 20.0, st.TotalCPUCycles, 1e-9)
	})

	t.Run("NoSnapshots/ZeroCycles", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		b, w := d.running(t, "w", t0) // started t0+1000
		require.NoError(t, d.s.FinishBuild(t.Context(), store.Finish{BuildID: b, WorkerID: w, Success: true,
			ResultPath: "results/" + b + ".ipa", Now: t0 + 61_000}))
		st, err := d.s.Stats(t.Context(), t0, t0)
		require.NoError(t, err)
		require.Equal(t, int64(60_000), st.TotalBuildTimeMS)
		require.Zero(t, st.TotalCPUCycles)
		require.Equal(t, 1, st.BuildsToday)
		require.Equal(t, 1, st.TotalBuilds)
	})

	t.Run("TimedOutFailure/KeepsStartTime", func(t *testing.T) {
		t.Parallel()
		// A build failed by timeout keeps started_at, so its time counts.
		d := newTestDB(t)
		b, w := d.running(t, "w", t0) // started t0+1000
		out, err := d.s.TimeoutBuild(t.Context(), b, w, t0+2000, t0+301_000, 1)
		require.NoError(t, err)
		require.Equal(t, domain.TimeoutFailed, out)
		st, err := d.s.Stats(t.Context(), t0, t0)
		require.NoError(t, err)
		require.Equal(t, int64(300_000), st.TotalBuildTimeMS)
		require.Zero(t, st.BuildsToday, "failed builds are not counted today")
	})
}
