package store_test

import (
	"context"
	"errors"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
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

// builds inserts n pending builds submitted at t0, t0+1 … and returns their
// ids in that order.
func (d *testDB) builds(t *testing.T, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = d.build(t, t0+int64(i))
	}
	return ids
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

// TestAssignNextSkipsLockedBuild: a preferred build whose row another
// node's transaction holds is passed over, for the oldest one no
// transaction holds, without waiting.
func TestAssignNextSkipsLockedBuild(t *testing.T) {
	t.Parallel()
	a, _ := twoNodes(t)
	first, second := a.build(t, t0), a.build(t, t0+1)
	w := a.worker(t, "w", t0)
	tx, err := a.raw.BeginTx(t.Context(), nil)
	require.NoError(t, err)
	defer tx.Rollback() //nolint:errcheck // a no-op after the explicit one
	_, err = tx.Exec(`SELECT id FROM builds WHERE id = $1 FOR UPDATE`, first)
	require.NoError(t, err)
	c, ok, err := a.s.AssignNext(t.Context(), w, first, nil, t0+2, nil)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, second, c.ID)
	require.NoError(t, tx.Rollback())
	require.Equal(t, domain.StatusPending, a.get(t, first).Status)
}

// TestNodesAssignOnce: two stores race to assign the same builds to their
// own workers; serializable transactions, retried when PostgreSQL aborts
// one, give each build to exactly one worker and each worker at most one
// build, and the build counters agree.
func TestNodesAssignOnce(t *testing.T) {
	t.Parallel()
	a, b := twoNodes(t)
	const builds = 20
	ids := a.builds(t, builds)
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

// TestNodesAssignNextOnce: workers of two stores race for the same builds
// with AssignNext: each build goes to exactly one worker, each worker gets
// at most one, none is left pending.
func TestNodesAssignNextOnce(t *testing.T) {
	t.Parallel()
	a, b := twoNodes(t)
	const builds = 20
	a.builds(t, builds)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		got  = map[string]string{} // build → worker
		none atomic.Int64
	)
	for i := 0; i < builds+4; i++ { // more workers than builds
		d := []*testDB{a, b}[i%2]
		w := d.worker(t, "w"+string(rune('a'+i)), t0)
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, ok, err := d.s.AssignNext(context.Background(), w, "", nil, t0+100, nil)
			if !assert.NoError(t, err) {
				return
			}
			if !ok {
				none.Add(1)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			assert.NotContains(t, got, c.ID, "build %s assigned twice", c.ID)
			got[c.ID] = w
		}()
	}
	wg.Wait()
	require.Len(t, got, builds)
	require.Equal(t, int64(4), none.Load())
	for id, w := range got {
		require.True(t, a.get(t, id).AssignedTo(w))
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

// heard records what a Listener hands its queue callback.
type heard struct {
	mu    sync.Mutex
	calls [][]store.BuildChange // nil for "all"
}

func (h *heard) onQueue(c []store.BuildChange, all bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if all {
		c = nil
	}
	h.calls = append(h.calls, c)
}

func (h *heard) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.calls)
}

// next waits for the call after the first n and returns it.
func (h *heard) next(t *testing.T, n int, what string) []store.BuildChange {
	t.Helper()
	testkit.Eventually(t, 10*time.Second, func() bool { return h.count() > n }, what)
	h.mu.Lock()
	defer h.mu.Unlock()
	require.Len(t, h.calls, n+1, what+": one call")
	return h.calls[n]
}

// TestListenerDeliversOtherNodesChanges: log lines and status changes
// committed through one store reach the other store's subscribers (to be
// read from the database) and its queue callback, each status change with
// what the build became (its kind, assignment number, worker and queue
// fields); its own commits do not call it.
func TestListenerDeliversOtherNodesChanges(t *testing.T) {
	t.Parallel()
	a, b := twoNodes(t)
	var h heard
	l := b.s.Listener(h.onQueue)
	require.NotNil(t, l)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Serve(ctx) }()
	defer func() {
		cancel()
		require.ErrorIs(t, <-done, context.Canceled)
	}()
	require.Nil(t, h.next(t, 0, "the listener starts with a reload"), "all")

	id := a.build(t, t0)
	queue := store.BuildChange{ID: id, Platform: domain.PlatformIOS, SubmittedAt: t0}
	pending := queue
	pending.Kind = store.ChangePending
	require.Equal(t, []store.BuildChange{pending}, h.next(t, 1, "submitted"))
	w := a.worker(t, "w", t0)
	require.Equal(t, 2, h.count(), "a worker's registration is no build's change")
	require.NoError(t, a.s.AssignBuild(t.Context(), id, w, t0+1))
	running := queue
	running.Kind, running.Assignment, running.WorkerID, running.StartedAt = store.ChangeRunning, 1, w, t0+1
	require.Equal(t, []store.BuildChange{running}, h.next(t, 2, "assigned"))

	sub := b.s.Subscribe(id)
	defer sub.Close()
	// The assignee's first line also makes the build building: the same
	// assignment, still running on w.
	_, err := a.s.AppendLogs(t.Context(), id, w, []store.LogInput{{Level: domain.LevelInfo, Message: "first"}}, t0+5)
	require.NoError(t, err)
	require.Equal(t, []store.BuildChange{running}, h.next(t, 3, "building"))
	kicked(t, sub)
	sub.Take()
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
	require.Equal(t, 4, h.count(), "a log line changes no queue")

	out, err := a.s.AbandonBuild(t.Context(), id, w, "gave up", t0+15, 3)
	require.NoError(t, err)
	require.Equal(t, domain.TimeoutRequeued, out)
	requeued := queue
	requeued.Kind, requeued.Assignment = store.ChangePending, 1
	require.Equal(t, []store.BuildChange{requeued}, h.next(t, 4, "requeued after its first assignment"))

	_, err = a.s.CancelBuild(t.Context(), id, t0+20)
	require.NoError(t, err)
	require.Equal(t, []store.BuildChange{{ID: id, Kind: store.ChangeEnded}}, h.next(t, 5, "cancelled"))
	_, _, status := sub.Take()
	require.True(t, status)

	// A requeue that does not say what the build became (a worker
	// unregistered) names the build: node B reads it.
	id2 := a.build(t, t0+30)
	h.next(t, 6, "submitted")
	require.NoError(t, a.s.AssignBuild(t.Context(), id2, w, t0+31))
	h.next(t, 7, "assigned")
	_, err = a.s.RequeueOnUnregister(t.Context(), w, t0+32)
	require.NoError(t, err)
	require.Equal(t, []store.BuildChange{{ID: id2}}, h.next(t, 8, "requeued on unregister"))
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
