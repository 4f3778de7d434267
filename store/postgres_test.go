package store_test

import (
	"context"
	"errors"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/internal/testkit"
	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

// twoNodes opens two stores on one PostgreSQL schema, as two controller
// nodes do; the PostgreSQL pass only.
func twoNodes(t *testing.T) (a, b *testDB) {
	t.Helper()
	if !testkit.Postgres() {
		t.Skip("two stores on one database: PostgreSQL only (" + testkit.EnvStore + "=postgres)")
	}
	a = newTestDB(t)
	s, err := store.Open(t.Context(), a.path)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return a, &testDB{s: s, path: a.path, raw: a.raw, pg: true}
}

// TestAssignSkipsLockedBuild: a build whose row another transaction holds
// (another node assigning it) is refused at once with ErrLocked, not waited
// for; once that transaction ends the build can be assigned.
func TestAssignSkipsLockedBuild(t *testing.T) {
	t.Parallel()
	a, _ := twoNodes(t)
	b := a.build(t, t0)
	w := a.worker(t, "w", t0)
	tx, err := a.raw.BeginTx(t.Context(), nil)
	require.NoError(t, err)
	_, err = tx.Exec(`SELECT id FROM builds WHERE id = $1 FOR UPDATE`, b)
	require.NoError(t, err)
	start := time.Now()
	require.ErrorIs(t, a.s.AssignBuild(t.Context(), b, w, t0+1), store.ErrLocked)
	require.Less(t, time.Since(start), store.DefaultOpTimeout, "refused, not waited for")
	require.NoError(t, tx.Rollback())
	require.NoError(t, a.s.AssignBuild(t.Context(), b, w, t0+2))
	require.Equal(t, domain.StatusAssigned, a.get(t, b).Status)
}

// TestNodesAssignOnce: two stores race to assign the same builds to their
// own workers; serializable transactions, retried when PostgreSQL aborts
// one, give each build to exactly one worker and each worker at most one
// build, and the build counters agree.
func TestNodesAssignOnce(t *testing.T) {
	t.Parallel()
	a, b := twoNodes(t)
	const builds = 20
	ids := make([]string, builds)
	for i := range ids {
		ids[i] = a.build(t, t0+int64(i))
	}
	workers := map[*testDB][]string{}
	for i := 0; i < builds; i++ {
		d := []*testDB{a, b}[i%2]
		workers[d] = append(workers[d], d.worker(t, "w"+string(rune('a'+i)), t0))
	}
	var (
		wg       sync.WaitGroup
		assigned atomic.Int64
	)
	for d, ws := range workers {
		for _, w := range ws {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for _, id := range ids { // every worker tries every build, in order
					err := d.s.AssignBuild(context.Background(), id, w, t0+100)
					if err == nil {
						assigned.Add(1)
						return
					}
					if !lostRace(t, err) {
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	require.Equal(t, int64(builds), assigned.Load())
	holders := map[string]bool{}
	for _, id := range ids {
		got := a.get(t, id)
		require.Equal(t, domain.StatusAssigned, got.Status)
		require.False(t, holders[*got.WorkerID], "worker %s holds two builds", *got.WorkerID)
		holders[*got.WorkerID] = true
	}
	counts, err := b.s.BuildCounts(t.Context())
	require.NoError(t, err)
	require.Equal(t, builds, counts.Assigned)
	require.Zero(t, counts.Pending)
}

// lostRace accepts the refusals of a lost assignment race.
func lostRace(t *testing.T, err error) bool {
	t.Helper()
	for _, ok := range []error{store.ErrConflict, store.ErrLocked} {
		if errors.Is(err, ok) {
			return true
		}
	}
	t.Errorf("assign: %v", err)
	return false
}

// TestListenerDeliversOtherNodesChanges: a log line and a status change
// committed through one store reach the other store's subscribers (to be
// read from the database) and its queue callback; its own commits do not
// call it.
func TestListenerDeliversOtherNodesChanges(t *testing.T) {
	t.Parallel()
	a, b := twoNodes(t)
	id, w := a.running(t, "w", t0)
	var kicks atomic.Int64
	l := b.s.Listener(func([]string, bool) { kicks.Add(1) })
	require.NotNil(t, l)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Serve(ctx) }()
	defer func() {
		cancel()
		require.ErrorIs(t, <-done, context.Canceled)
	}()
	testkit.Eventually(t, 10*time.Second, func() bool { return kicks.Load() >= 1 }, "the listener starts with a reload")

	sub := b.s.Subscribe(id)
	defer sub.Close()
	// The assignee's first line also makes the build building: a status
	// change, which the queue hears of.
	_, err := a.s.AppendLogs(t.Context(), id, w, []store.LogInput{{Level: domain.LevelInfo, Message: "first"}}, t0+5)
	require.NoError(t, err)
	testkit.Eventually(t, 10*time.Second, func() bool { return kicks.Load() >= 2 }, "building: node B's queue hears of it")
	<-sub.C
	sub.Take()
	before := kicks.Load()
	_, err = a.s.AppendLogs(t.Context(), id, w, []store.LogInput{{Level: domain.LevelInfo, Message: "from node A"}}, t0+10)
	require.NoError(t, err)
	select {
	case <-sub.C:
	case <-time.After(10 * time.Second):
		t.Fatal("no notice of node A's log line")
	}
	entries, lagged, _ := sub.Take()
	require.Empty(t, entries)
	require.True(t, lagged, "read the new lines from the database")
	require.Equal(t, before, kicks.Load(), "a log line changes no queue")

	_, err = a.s.CancelBuild(t.Context(), id, t0+20)
	require.NoError(t, err)
	testkit.Eventually(t, 10*time.Second, func() bool { return kicks.Load() > before }, "node A's status change reaches node B's queue")
	_, _, status := sub.Take()
	require.True(t, status)
}

// TestPoolMaxConns: the URL's pool_max_conns sizes the reading pool and is
// not sent to the server; a bad value is refused before anything opens.
func TestPoolMaxConns(t *testing.T) {
	t.Parallel()
	if !testkit.Postgres() {
		t.Skip("PostgreSQL only (" + testkit.EnvStore + "=postgres)")
	}
	base := testkit.PostgresURL(t)
	s, err := store.Open(t.Context(), base+"&pool_max_conns=2")
	require.NoError(t, err)
	_, err = s.BuildCounts(t.Context())
	require.NoError(t, err)
	require.NoError(t, s.Close())
	for _, v := range []string{"0", "x", "65"} {
		_, err := store.Open(t.Context(), base+"&pool_max_conns="+v)
		require.ErrorIs(t, err, store.ErrBadURL, v)
		require.Contains(t, err.Error(), "pool_max_conns")
		if u, _ := url.Parse(base); u != nil && u.User != nil {
			if pw, ok := u.User.Password(); ok {
				require.NotContains(t, err.Error(), ":"+pw+"@", "no password")
			}
		}
	}
}
