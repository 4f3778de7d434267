package store

// These tests are inside the package: the plan test reads the SQL that
// buildPageQuery writes.

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/internal/testkit"
	"github.com/expo-free-agent/controller/store/domain"
)

// listT0 is an arbitrary instant in epoch ms.
const listT0 = int64(1_767_225_600_000)

// listID is a canonical UUID ending in n, so that a test controls the id
// tie-break of the list order.
func listID(n int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012d", n) }

func openListStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.Context(), testkit.DB(t, t.TempDir()))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

func addListBuild(t *testing.T, s *Store, id string, submittedAt int64, p domain.Platform) {
	t.Helper()
	require.NoError(t, s.CreateBuild(t.Context(), NewBuild{ID: id, Platform: p, SubmittedAt: submittedAt,
		SourcePath: "builds/" + id + ".zip", TokenHash: []byte("token-" + id)}))
}

func pageIDs(bs []domain.Build) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.ID
	}
	return out
}

// walk reads every page of q, limit builds at a time, and returns the ids in
// the order read and the number of pages.
func walk(t *testing.T, s *Store, q BuildQuery) ([]string, int) {
	t.Helper()
	var ids []string
	for pages := 1; ; pages++ {
		page, more, err := s.BuildPage(t.Context(), q)
		require.NoError(t, err)
		ids = append(ids, pageIDs(page)...)
		if !more {
			return ids, pages
		}
		require.Len(t, page, q.Limit, "a page that more follow is full")
		q.Before = page[len(page)-1].ID
	}
}

func TestBuildPageOrder(t *testing.T) {
	t.Parallel()
	s := openListStore(t)
	// Seven builds, four of them submitted in the same millisecond and
	// created out of id order: the list is submit time descending, then id
	// descending.
	for _, b := range []struct {
		n  int
		at int64
	}{{5, listT0 + 1}, {2, listT0 + 1}, {7, listT0 + 1}, {1, listT0}, {3, listT0 + 2}, {4, listT0 + 1}, {6, listT0}} {
		addListBuild(t, s, listID(b.n), b.at, domain.PlatformIOS)
	}
	want := []string{listID(3), listID(7), listID(5), listID(4), listID(2), listID(6), listID(1)}

	all, err := s.ListBuilds(t.Context())
	require.NoError(t, err)
	require.Equal(t, want, pageIDs(all), "the order of the v1 list")

	for _, limit := range []int{1, 2, 3, 4, 6, 7, 8, MaxBuildPage} {
		t.Run(fmt.Sprintf("Limit%d", limit), func(t *testing.T) {
			t.Parallel()
			ids, pages := walk(t, s, BuildQuery{Limit: limit})
			require.Equal(t, want, ids, "every build once, in list order, across ties")
			require.Equal(t, (len(want)+limit-1)/limit, pages, "no empty last page")
		})
	}

	t.Run("BeforeTheLast", func(t *testing.T) {
		t.Parallel()
		page, more, err := s.BuildPage(t.Context(), BuildQuery{Limit: 10, Before: listID(1)})
		require.NoError(t, err)
		require.Empty(t, page)
		require.NotNil(t, page, "an empty page is an empty array")
		require.False(t, more)
	})

	t.Run("LimitOutOfRangeIsTheMax", func(t *testing.T) {
		t.Parallel()
		for _, limit := range []int{0, -1, MaxBuildPage + 1} {
			page, more, err := s.BuildPage(t.Context(), BuildQuery{Limit: limit})
			require.NoError(t, err)
			require.Equal(t, want, pageIDs(page))
			require.False(t, more)
		}
	})
}

func TestBuildPageFilters(t *testing.T) {
	t.Parallel()
	s := openListStore(t)
	ctx := t.Context()
	at := listT0
	add := func(n int, p domain.Platform) string {
		at++
		addListBuild(t, s, listID(n), at, p)
		return listID(n)
	}
	worker := func(name string) string {
		w, _, err := s.RegisterWorker(ctx, Registration{Name: name, Capabilities: `{}`, Now: listT0})
		require.NoError(t, err)
		return w.ID
	}
	w1, w2 := worker("w1"), worker("w2")

	pending := add(1, domain.PlatformIOS)
	assigned := add(2, domain.PlatformAndroid)
	require.NoError(t, s.AssignBuild(ctx, assigned, w1, at))
	building := add(3, domain.PlatformIOS)
	require.NoError(t, s.AssignBuild(ctx, building, w2, at))
	require.NoError(t, s.TouchBuild(ctx, building, w2, at))
	completed := add(4, domain.PlatformIOS)
	w3 := worker("w3")
	require.NoError(t, s.AssignBuild(ctx, completed, w3, at))
	require.NoError(t, s.FinishBuild(ctx, Finish{BuildID: completed, WorkerID: w3, Success: true,
		ResultPath: "results/" + completed + ".ipa", Now: at}))
	failed := add(5, domain.PlatformAndroid)
	require.NoError(t, s.AssignBuild(ctx, failed, w3, at))
	require.NoError(t, s.FinishBuild(ctx, Finish{BuildID: failed, WorkerID: w3, ErrorMessage: "boom", Now: at}))
	cancelled := add(6, domain.PlatformIOS)
	_, err := s.CancelBuild(ctx, cancelled, at)
	require.NoError(t, err)
	pending2 := add(7, domain.PlatformAndroid)

	for _, tc := range []struct {
		name string
		q    BuildQuery
		want []string // newest first
	}{
		{"All", BuildQuery{}, []string{pending2, cancelled, failed, completed, building, assigned, pending}},
		{"Pending", BuildQuery{Status: domain.StatusPending}, []string{pending2, pending}},
		{"Assigned", BuildQuery{Status: domain.StatusAssigned}, []string{assigned}},
		{"Building", BuildQuery{Status: domain.StatusBuilding}, []string{building}},
		{"Completed", BuildQuery{Status: domain.StatusCompleted}, []string{completed}},
		{"FailedHoldsTheCancelled", BuildQuery{Status: domain.StatusFailed}, []string{cancelled, failed}},
		{"IOS", BuildQuery{Platform: domain.PlatformIOS}, []string{cancelled, completed, building, pending}},
		{"Android", BuildQuery{Platform: domain.PlatformAndroid}, []string{pending2, failed, assigned}},
		{"CurrentWorker", BuildQuery{WorkerID: w1}, []string{assigned}},
		{"FinishingWorker", BuildQuery{WorkerID: w3}, []string{failed, completed}},
		{"WorkerAndStatus", BuildQuery{WorkerID: w3, Status: domain.StatusCompleted}, []string{completed}},
		{"WorkerAndPlatform", BuildQuery{WorkerID: w3, Platform: domain.PlatformAndroid}, []string{failed}},
		{"StatusAndPlatform", BuildQuery{Status: domain.StatusPending, Platform: domain.PlatformAndroid}, []string{pending2}},
		{"AllThree", BuildQuery{Status: domain.StatusBuilding, Platform: domain.PlatformIOS, WorkerID: w2}, []string{building}},
		{"NoMatch", BuildQuery{Status: domain.StatusBuilding, Platform: domain.PlatformAndroid}, nil},
		{"UnknownWorker", BuildQuery{WorkerID: listID(99)}, nil},
		{"NotAWorkerID", BuildQuery{WorkerID: "mac-1"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, limit := range []int{1, 2, MaxBuildPage} {
				q := tc.q
				q.Limit = limit
				ids, _ := walk(t, s, q)
				require.Equal(t, tc.want, ids, "limit %d", limit)
			}
		})
	}

	t.Run("BeforeAnotherFiltersBuild", func(t *testing.T) {
		t.Parallel()
		// The cursor need not match the filters: the page starts after its place.
		page, more, err := s.BuildPage(ctx, BuildQuery{Platform: domain.PlatformIOS, Before: failed, Limit: 2})
		require.NoError(t, err)
		require.Equal(t, []string{completed, building}, pageIDs(page))
		require.True(t, more)
	})
}

func TestBuildPageUnknownBefore(t *testing.T) {
	t.Parallel()
	s := openListStore(t)
	addListBuild(t, s, listID(1), listT0, domain.PlatformIOS)
	for _, before := range []string{listID(2), "not-a-uuid"} {
		page, more, err := s.BuildPage(t.Context(), BuildQuery{Before: before, Limit: 10})
		require.ErrorIs(t, err, ErrNotFound)
		require.Nil(t, page)
		require.False(t, more)
	}
}

// TestBuildPagePlan: every shape of the page's statement reads one index
// range in list order — no scan of the table, no sort of what it matched —
// and the worker's, the platform's (migration 0006) and the app name's (0007)
// indexes exist.
func TestBuildPagePlan(t *testing.T) {
	t.Parallel()
	testkit.SQLiteOnly(t, "query plan")
	s := openListStore(t)
	for mask := range 32 {
		q := BuildQuery{Limit: 100}
		var cursor *buildKey
		want := "builds_by_submitted"
		if mask&1 != 0 {
			q.Platform, want = domain.PlatformIOS, "builds_by_platform"
		}
		if mask&2 != 0 {
			q.Status, want = domain.StatusFailed, "builds_by_status"
		}
		if mask&4 != 0 {
			q.WorkerID, want = listID(1), "builds_by_worker"
		}
		if mask&8 != 0 {
			cursor = &buildKey{submittedAt: listT0, id: listID(2)}
		}
		if mask&16 != 0 {
			q.AppName, want = "Coffee Club", "builds_by_app"
		}
		query, args := buildPageQuery(q, cursor, false)
		plan := explain(t.Context(), t, s, query, args...)
		require.Len(t, plan, 1, "%s: %v", query, plan)
		require.Contains(t, plan[0], "USING INDEX "+want, query)
		require.NotContains(t, plan[0], "TEMP B-TREE", query)
		if mask != 0 {
			require.True(t, strings.HasPrefix(plan[0], "SEARCH"), "a range of the index: %s", plan[0])
		}
		if mask&8 != 0 {
			require.Contains(t, plan[0], "(submitted_at,id)<(?,?)", "the cursor bounds the range: %s", plan[0])
		}
	}
}

// TestBuildPageIDPrefixPlan: a search by id prefix reads the primary key's
// range, from the cursor on, whatever else filters.
func TestBuildPageIDPrefixPlan(t *testing.T) {
	t.Parallel()
	testkit.SQLiteOnly(t, "query plan")
	s := openListStore(t)
	for _, cursor := range []*buildKey{nil, {submittedAt: listT0, id: listID(2)}} {
		query, args := buildPageQuery(BuildQuery{IDPrefix: "0000", Status: domain.StatusFailed, Limit: 10}, cursor, false)
		plan := explain(t.Context(), t, s, query, args...)
		require.Len(t, plan, 1, "%s: %v", query, plan)
		require.Contains(t, plan[0], "SEARCH builds USING INDEX sqlite_autoindex_builds_1 (id>? AND id<?)", query)
		require.NotContains(t, plan[0], "TEMP B-TREE", query)
	}
}

func explain(ctx context.Context, t *testing.T, s *Store, query string, args ...any) []string {
	t.Helper()
	rows, err := s.read.QueryContext(ctx, "EXPLAIN QUERY PLAN "+query, args...)
	require.NoError(t, err)
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, notused int
		var detail string
		require.NoError(t, rows.Scan(&id, &parent, &notused, &detail))
		plan = append(plan, detail)
	}
	require.NoError(t, rows.Err())
	return slices.Clip(plan)
}
