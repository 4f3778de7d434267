package main

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/store"
)

// TestSeed: the seeded history is what the controller reads — counts kept by
// its triggers, every build finished, each with its log — and a second seed
// of the same database is refused.
func TestSeed(t *testing.T) {
	db := filepath.Join(t.TempDir(), "data", "controller.db")
	var out, errs bytes.Buffer
	require.Equal(t, 0, run([]string{"--db", db, "--builds", "300", "--lines", "7", "--workers", "4", "--days", "2"}, &out, &errs),
		errs.String())
	require.Contains(t, out.String(), "300 builds (with 3 CPU snapshots each)")
	require.Contains(t, out.String(), "2100 log lines")

	ctx := context.Background()
	s, err := store.Open(ctx, db)
	require.NoError(t, err)
	defer s.Close()
	c, err := s.BuildCounts(ctx)
	require.NoError(t, err)
	require.Equal(t, 300, c.Completed+c.Failed)
	require.Zero(t, c.Pending+c.Assigned+c.Building)
	require.Positive(t, c.Failed)

	st, err := s.Stats(ctx, 0, time.Now().Add(-72*time.Hour).UnixMilli())
	require.NoError(t, err)
	require.Equal(t, 300, st.TotalBuilds)
	require.Equal(t, c.Completed, st.BuildsToday, "every completed build ended in the last two days")
	require.GreaterOrEqual(t, st.TotalBuildTimeMS, int64(300*120_000))
	require.Positive(t, st.TotalCPUCycles)

	page, _, err := s.BuildPage(ctx, store.BuildQuery{Limit: 10})
	require.NoError(t, err)
	require.Len(t, page, 10)
	logs, err := s.Logs(ctx, page[0].ID)
	require.NoError(t, err)
	require.Len(t, logs, 7)
	require.Equal(t, int64(7), logs[6].Seq)
	workers, err := s.ListWorkers(ctx)
	require.NoError(t, err)
	require.Len(t, workers, 4)
	done := 0
	for _, w := range workers {
		done += w.BuildsCompleted + w.BuildsFailed
	}
	require.Equal(t, 300, done)
	require.NoError(t, s.Close())

	errs.Reset()
	require.Equal(t, 1, run([]string{"--db", db, "--builds", "1"}, &out, &errs))
	require.Contains(t, errs.String(), "already holds 300 builds")
	require.Equal(t, 2, run([]string{"--builds", "1"}, &out, &errs), "--db is required")

	errs.Reset()
	require.Equal(t, 0, run([]string{"-h"}, &out, &errs))
	require.Contains(t, errs.String(), "Usage: seed-history --db <file> [flags]")
	require.Regexp(t, `(?m)^  --builds +finished builds to write`, errs.String())
}
