package test

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/internal/testkit"
	"github.com/expo-free-agent/controller/store"
)

// Several controller nodes on one PostgreSQL database and one storage root
// (docs/DEPLOYMENT.md, Several nodes): each node is its own process, built
// with the race detector.

// startNodes starts n controller processes sharing a new PostgreSQL schema
// and storage root; extra flags go to every node. It skips (or, under CI,
// fails) without a PostgreSQL server, and runs only in the PostgreSQL pass of
// make test.
func startNodes(t *testing.T, n int, extra ...string) (nodes []*Process, db string) {
	t.Helper()
	if !testkit.Postgres() {
		t.Skip("several nodes need PostgreSQL: this runs in make test's PostgreSQL pass (" + testkit.EnvStore + "=postgres)")
	}
	if testing.Short() {
		t.Skip("binary test skipped in -short mode")
	}
	bin := buildBinary(t, "controller", "-race")
	db = testkit.PostgresURL(t)
	storage := filepath.Join(t.TempDir(), "storage")
	for i := 0; i < n; i++ {
		args := append([]string{"--db", db, "--storage", storage}, extra...)
		nodes = append(nodes, startBinary(t, bin, t.TempDir(), args...))
	}
	return nodes, db
}

func clients(t *testing.T, nodes []*Process) []*Controller {
	out := make([]*Controller, len(nodes))
	for i, p := range nodes {
		out[i] = p.Client(t)
	}
	return out
}

// TestTwoNodesAssignment: the 20-workers × 10-builds race of
// TestConcurrentAssignment, 100 rounds, on two nodes, every worker's
// requests alternating between them: no build handed out twice, none lost,
// and every result is downloadable through the other node with its bytes.
func TestTwoNodesAssignment(t *testing.T) {
	t.Parallel()
	nodes, _ := startNodes(t, 2)
	assignRace(t, clients(t, nodes), assignRounds(t))
	for _, p := range nodes {
		require.NotContains(t, p.Log(), "WARNING: DATA RACE")
	}
}

// TestNodeKilledUnderLoad: two nodes, workers building through both; one
// node is killed with SIGKILL in the middle. Every build either node
// acknowledged is completed exactly once through the survivor, and the build
// of a worker that died with the node is requeued once by the liveness check
// (both nodes' monitors ran), not twice.
func TestNodeKilledUnderLoad(t *testing.T) {
	t.Parallel()
	nodes, _ := startNodes(t, 2, "--build-timeout", "2s")
	a, b := nodes[0].Client(t), nodes[1].Client(t)
	a.MayBeDown = true
	const workers, builds = 6, 30

	// A worker that takes a build through node A and dies with it.
	doomed := a.Register("doomed")
	var acked []string
	first := a.Submit("ios", []byte("src-0"), nil).ID
	acked = append(acked, first)
	require.Equal(t, first, a.Poll(doomed)["id"])

	ws := make([]string, workers)
	for i := range ws {
		ws[i] = []*Controller{a, b}[i%2].Register(fmt.Sprintf("w%d", i))
	}
	var (
		mu        sync.Mutex
		completed = map[string]string{} // build → worker that completed it
		wg        sync.WaitGroup
	)
	killed := make(chan struct{})
	alive := func(i int) *Controller { // node A until it is killed, then B
		select {
		case <-killed:
			return b
		default:
			return []*Controller{a, b}[i%2]
		}
	}
	// Submits, through both nodes, half before the kill and half after.
	for i := 1; i < builds; i++ {
		if i == builds/2 {
			nodes[0].Kill()
			close(killed)
		}
		c := alive(i)
		r := c.PostMultipart("/api/builds/submit", c.KeyH(),
			Part{Name: "source", Filename: "s.zip", Data: []byte(fmt.Sprintf("src-%d", i))}, Part{Name: "platform", Data: []byte("ios")})
		require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
		acked = append(acked, r.Object(t)["id"].(string))
	}
	// The workers build until every acknowledged build is done; a request
	// to the dead node fails and the worker retries on the other.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i, w := range ws {
		wg.Add(1)
		go func(i int, w string) {
			defer wg.Done()
			for n := i; ctx.Err() == nil; n++ {
				mu.Lock()
				done := len(completed) == len(acked)
				mu.Unlock()
				if done {
					return
				}
				c := alive(n)
				r := c.Get("/api/workers/poll?worker_id="+w+"&wait=1", c.KeyH())
				if r.Status != http.StatusOK {
					continue // the dead node: try the other
				}
				job, _ := r.Object(t)["job"].(map[string]any)
				if job == nil {
					continue
				}
				id := job["id"].(string)
				up := c.Upload(id, w, true, []byte("ipa of "+id), "")
				if up.Status == 0 {
					// The node died with the upload: the survivor completes
					// it, or says this worker already did (the node had
					// committed it).
					up = b.Upload(id, w, true, []byte("ipa of "+id), "")
					if up.Status == http.StatusConflict && up.Error(t) == "Build already finished" {
						up.Status = http.StatusOK
					}
				}
				if up.Status != http.StatusOK {
					t.Errorf("upload of %s by %s: %d %s", id, w, up.Status, up.Body)
					return
				}
				mu.Lock()
				if prev, ok := completed[id]; ok {
					t.Errorf("build %s completed twice: by %s and %s", id, prev, w)
				}
				completed[id] = w
				mu.Unlock()
			}
		}(i, w)
	}
	wg.Wait()
	require.NoError(t, ctx.Err(), "every acknowledged build completed in time (%d of %d)", len(completed), len(acked))
	for _, id := range acked {
		require.Contains(t, completed, id, "acknowledged build %s survived the kill", id)
		require.Equal(t, "completed", b.Status(id)["status"])
		d := b.Get("/api/builds/"+id+"/download", b.KeyH())
		require.Equal(t, http.StatusOK, d.Status)
		require.Equal(t, "ipa of "+id, string(d.Body))
	}
	// The doomed worker's build was requeued by a build timeout exactly once.
	timeouts := 0
	for _, m := range b.LogMessages(first) {
		if strings.HasPrefix(m, "Build timeout") {
			timeouts++
		}
	}
	require.Equal(t, 1, timeouts, "%v", b.LogMessages(first))
	require.NotContains(t, nodes[1].Log(), "WARNING: DATA RACE")
}

// TestListenerConnectionDropped: the connection on which a node LISTENs is
// terminated from the database side; the node reconnects, and a worker's
// poll held on it still gets a build submitted through the other node.
func TestListenerConnectionDropped(t *testing.T) {
	t.Parallel()
	nodes, db := startNodes(t, 2)
	a, b := nodes[0].Client(t), nodes[1].Client(t)
	w := b.Register("w")
	raw := testkit.OpenRaw(t, db)
	listeners := func() []int {
		rows, err := raw.Query(`SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()`,
			store.ListenerApplicationName)
		require.NoError(t, err)
		defer rows.Close()
		var pids []int
		for rows.Next() {
			var pid int
			require.NoError(t, rows.Scan(&pid))
			pids = append(pids, pid)
		}
		return pids
	}
	var before []int
	eventually(t, 30*time.Second, func() bool { before = listeners(); return len(before) >= 2 }, "both nodes listen")
	for _, pid := range before {
		var ok sql.NullBool
		require.NoError(t, raw.QueryRow(`SELECT pg_terminate_backend($1)`, pid).Scan(&ok))
	}
	eventually(t, 30*time.Second, func() bool {
		now := listeners()
		if len(now) < 2 {
			return false
		}
		for _, pid := range now {
			for _, old := range before {
				if pid == old {
					return false
				}
			}
		}
		return true
	}, "both nodes listen again, on new connections")

	held := make(chan Response, 1)
	go func() { held <- b.Get("/api/workers/poll?worker_id="+w+"&wait=20", b.KeyH()) }()
	eventually(t, 30*time.Second, func() bool {
		return strings.Contains(string(b.Get("/metrics", b.KeyH()).Body), "controller_held_polls 1")
	}, "the poll is held on node B")
	id := a.Submit("android", []byte("src"), nil).ID
	select {
	case r := <-held:
		require.Equal(t, http.StatusOK, r.Status)
		job, _ := r.Object(t)["job"].(map[string]any)
		require.NotNil(t, job, "the held poll got the build: %s", r.Body)
		require.Equal(t, id, job["id"])
	case <-time.After(15 * time.Second):
		t.Fatal("the poll held on node B was not woken by the submit on node A")
	}
}
