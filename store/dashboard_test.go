package store

import (
	"strings"
	"testing"

	"github.com/expo-free-agent/controller/internal/testkit"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/store/domain"
)

// TestDashboardFacts: the facts count what they say, and each statement
// reads an index range, never the table.
func TestDashboardFacts(t *testing.T) {
	t.Parallel()
	s := openListStore(t)
	for i, p := range []domain.Platform{domain.PlatformIOS, domain.PlatformAndroid, domain.PlatformAndroid} {
		addListBuild(t, s, listID(i), listT0+int64(i), p)
	}
	f, err := s.DashboardFacts(t.Context(), listT0)
	require.NoError(t, err)
	require.Equal(t, map[domain.Platform]int{domain.PlatformIOS: 1, domain.PlatformAndroid: 2}, f.PendingByPlatform)
	require.Zero(t, f.Completed+f.Failed)
	require.Empty(t, f.TokenWorkers)

	if testkit.Postgres() {
		return // the plans below are SQLite's
	}
	for query, index := range map[string]string{pendingByPlatformSQL: "builds_by_status", finishedSinceSQL: "builds_by_end"} {
		plan := explain(t.Context(), t, s, query, listT0, listT0)
		require.NotEmpty(t, plan)
		for _, step := range plan {
			require.NotContains(t, step, "SCAN builds", "%s: %v", query, plan)
			if strings.HasPrefix(step, "SEARCH") {
				require.Contains(t, step, index, query)
			}
		}
	}
}
