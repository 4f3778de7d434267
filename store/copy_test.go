package store_test

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/internal/testkit"
	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

// copiedTables are the tables store.Copy moves, with the order that makes
// their dumps comparable between engines.
var copiedTables = map[string]string{
	"workers": "id", "builds": "id", "build_logs": "build_id, seq", "diagnostics": "id",
	"cpu_snapshots": "id", "worker_tokens": "digest", "assignment_tokens": "digest",
	"webhook_endpoints": "url", "outbox": "id",
}

// contents renders every row of the copied tables (and the trigger-kept
// counters) the same way whichever engine holds them.
func contents(t *testing.T, db string, postgres bool) string {
	t.Helper()
	driver, dsn := "sqlite3", "file:"+db
	if postgres {
		driver, dsn = "pgx", db
	}
	raw, err := sql.Open(driver, dsn)
	require.NoError(t, err)
	defer raw.Close()
	var sb strings.Builder
	// The counters are striped on PostgreSQL: compare their sums.
	queries := map[string]string{
		"build_counts":   `SELECT status, CAST(SUM(n) AS BIGINT) AS n FROM build_counts GROUP BY status ORDER BY status`,
		"history_totals": `SELECT CAST(SUM(build_time_ms) AS BIGINT) AS ms, CAST(SUM(cpu_samples) AS BIGINT) AS samples, SUM(cpu_percent) AS cpu FROM history_totals`,
	}
	for _, table := range []string{"workers", "builds", "build_logs", "diagnostics", "cpu_snapshots", "worker_tokens",
		"assignment_tokens", "webhook_endpoints", "outbox", "build_counts", "history_totals"} {
		q, ok := queries[table]
		if !ok {
			q = `SELECT * FROM ` + table + ` ORDER BY ` + copiedTables[table]
		}
		rows, err := raw.QueryContext(t.Context(), q)
		require.NoError(t, err)
		cols, err := rows.Columns()
		require.NoError(t, err)
		fmt.Fprintf(&sb, "== %s\n", table)
		for rows.Next() {
			for i, v := range rowValues(t, rows, len(cols)) {
				if cols[i] != "rowid" { // PostgreSQL's column for SQLite's implicit row id
					fmt.Fprintf(&sb, "%s=%v ", cols[i], v)
				}
			}
			sb.WriteString("\n")
		}
		require.NoError(t, rows.Err())
		require.NoError(t, rows.Close())
	}
	return sb.String()
}

// populate gives a store a bit of everything Copy moves.
func populate(t *testing.T, d *testDB) {
	t.Helper()
	ctx := t.Context()
	_, err := d.s.SetWebhookURLs(ctx, []string{"https://hooks.example/a"})
	require.NoError(t, err)
	pending := d.build(t, t0)
	running, w := d.running(t, "builder", t0+10)
	done, w2 := d.running(t, "finisher", t0+20)
	require.NoError(t, d.s.RecordTelemetry(ctx, running, w, t0+1000, nil, &domain.CPUSnapshot{CPUPercent: 42.5, MemoryMB: 512}))
	require.NoError(t, d.s.RecordTelemetry(ctx, done, w2, t0+1100, nil, &domain.CPUSnapshot{CPUPercent: 10, MemoryMB: 256}))
	_, err = d.s.AppendLogs(ctx, running, w, []store.LogInput{{Level: domain.LevelWarn, Message: "it's 'quoted' ?"}}, t0+1200)
	require.NoError(t, err)
	require.NoError(t, d.s.FinishBuild(ctx, store.Finish{BuildID: done, WorkerID: w2, Success: true,
		ResultPath: "results/" + done + ".ipa", ResultSize: 3, ResultSHA256: "abc", Now: t0 + 5000}))
	_, err = d.s.CancelBuild(ctx, pending, t0+6000)
	require.NoError(t, err)
	for i := 0; i < 3; i++ { // same millisecond: their order is kept
		require.NoError(t, d.s.AddDiagnostic(ctx, domain.Diagnostic{ID: id(900 + i), WorkerID: w, Status: "healthy",
			RunAt: t0 + 7000, DurationMS: int64(i), AutoFixed: i == 1, Checks: `[{"name":"disk"}]`}))
	}
	_, _, err = d.s.RegisterWorker(ctx, store.Registration{Name: "tokened", Capabilities: `{"platforms":["ios"]}`, Now: t0,
		Token: store.TokenGrant{Digest: tokenHash("worker-token"), ExpiresAt: t0 + 3_600_000}})
	require.NoError(t, err)
	require.NoError(t, d.s.IssueOTP(ctx, running, w, store.TokenGrant{Digest: tokenHash("otp"), ExpiresAt: t0 + 60_000}))
}

// TestCopyBetweenEngines: a SQLite database copied to PostgreSQL and back
// holds every row it held, the counters kept by triggers agree, and the
// copy keeps working (new rows get new ids). A destination that is not
// empty is refused untouched.
func TestCopyBetweenEngines(t *testing.T) {
	t.Parallel()
	if !testkit.Postgres() {
		t.Skip("copies to PostgreSQL: runs in make test's PostgreSQL pass (" + testkit.EnvStore + "=postgres)")
	}
	ctx := t.Context()
	sqlitePath := filepath.Join(t.TempDir(), "data", "controller.db")
	src, err := store.Open(ctx, sqlitePath)
	require.NoError(t, err)
	d := &testDB{s: src, path: sqlitePath}
	populate(t, d)
	want := contents(t, sqlitePath, false)

	pgURL := testkit.PostgresURL(t)
	pg, err := store.Open(ctx, pgURL)
	require.NoError(t, err)
	rep, err := store.Copy(ctx, src, pg, io.Discard)
	require.NoError(t, err)
	for table, n := range map[string]int64{"workers": 3, "builds": 3, "diagnostics": 3, "cpu_snapshots": 2,
		"worker_tokens": 1, "assignment_tokens": 1, "webhook_endpoints": 1, "outbox": 2} {
		require.Equal(t, n, rep.Rows[table], table)
	}
	require.Positive(t, rep.Rows["build_logs"])
	require.Equal(t, want, contents(t, pgURL, true))

	// Copying again into the now non-empty database is refused, untouched.
	_, err = store.Copy(ctx, src, pg, io.Discard)
	require.ErrorIs(t, err, store.ErrNotEmpty)
	require.Equal(t, want, contents(t, pgURL, true))
	require.NoError(t, src.Close())

	// And back into a new SQLite file.
	backPath := filepath.Join(t.TempDir(), "back.db")
	back, err := store.Open(ctx, backPath)
	require.NoError(t, err)
	_, err = store.Copy(ctx, pg, back, io.Discard)
	require.NoError(t, err)
	require.Equal(t, want, contents(t, backPath, false))
	require.NoError(t, back.Close())

	// The PostgreSQL copy goes on: a new CPU snapshot gets an id after the
	// copied ones, and the running build still belongs to its worker.
	builds, err := pg.RunningBuilds(ctx)
	require.NoError(t, err)
	require.Len(t, builds, 1)
	require.NoError(t, pg.RecordTelemetry(ctx, builds[0].ID, *builds[0].WorkerID, t0+9000, nil,
		&domain.CPUSnapshot{CPUPercent: 1, MemoryMB: 1}))
	require.NoError(t, pg.Close())
}

// TestCopyRefusesDifferentSchemas: databases at different schema versions
// are refused before anything is written.
func TestCopyRefusesDifferentSchemas(t *testing.T) {
	t.Parallel()
	a, b := newTestDB(t), newTestDB(t)
	a.build(t, t0)
	b.exec(t, `DELETE FROM schema_migrations WHERE name = '0009_history_totals.sql'`)
	_, err := store.Copy(context.Background(), a.s, b.s, io.Discard)
	require.ErrorIs(t, err, store.ErrSchemaMismatch)
	require.Zero(t, b.count(t, `SELECT COUNT(*) FROM builds`))
}
