package test

import (
	"crypto/sha256"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// assignRounds is how many rounds TestConcurrentAssignment runs: 100 in the
// normal suite, more with ASSIGN_ROUNDS=<n> (e.g. 5000 for a soak).
func assignRounds(t *testing.T) int {
	if v := os.Getenv("ASSIGN_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		require.NoError(t, err)
		return n
	}
	return 100
}

// TestConcurrentAssignment: in every round 10 builds are submitted while 20
// workers poll concurrently through the real HTTP stack. No build goes to two
// workers, none is lost, no worker holds two builds, and a worker that polls
// again gets the same job.
func TestConcurrentAssignment(t *testing.T) {
	t.Parallel()
	assignRace(t, []*Controller{Start(t)}, assignRounds(t))
}

// assignRace runs the rounds of TestConcurrentAssignment against nodes that
// share one database and storage root (one node: a single controller).
// Workers are registered, submits made and each worker's requests sent
// through the nodes in turn, so with several nodes every build and worker is
// seen by more than one. Every result is downloaded through another node
// than the one it was uploaded to, and must be the bytes uploaded.
func assignRace(t *testing.T, nodes []*Controller, rounds int) {
	const workers, builds = 20, 10
	node := func(i int) *Controller { return nodes[i%len(nodes)] }
	ids := make([]string, workers)
	for i := range ids {
		ids[i] = node(i).Register(fmt.Sprintf("racer-%02d", i))
	}
	for round := 0; round < rounds; round++ {
		var (
			mu      sync.Mutex
			byBuild = map[string][]string{} // build id → workers that got it
			byWork  = map[string]string{}   // worker id → its build
			wg      sync.WaitGroup
		)
		submitted := make(chan string, builds)
		for i := 0; i < builds; i++ {
			wg.Add(1)
			go func(c *Controller) {
				defer wg.Done()
				r := c.PostMultipart("/api/builds/submit", c.KeyH(),
					Part{Name: "source", Filename: "s.zip", Data: []byte("src")}, Part{Name: "platform", Data: []byte("ios")})
				if r.Status == http.StatusOK {
					submitted <- r.Object(t)["id"].(string)
				} else {
					t.Errorf("submit: %d %s", r.Status, r.Body)
				}
			}(node(i))
		}
		start := make(chan struct{})
		for i, w := range ids {
			wg.Add(1)
			go func(i int, w string) {
				defer wg.Done()
				<-start
				// Poll until a job comes or every build has been handed out.
				for n := i; ; n++ {
					c := node(n)
					r := c.Get("/api/workers/poll?worker_id="+w, c.KeyH())
					if r.Status != http.StatusOK {
						t.Errorf("poll: %d %s", r.Status, r.Body)
						return
					}
					job, _ := r.Object(t)["job"].(map[string]any)
					mu.Lock()
					if job != nil {
						id := job["id"].(string)
						if prev, ok := byWork[w]; ok && prev != id {
							t.Errorf("worker %s got %s while holding %s", w, id, prev)
						}
						if _, ok := byWork[w]; !ok {
							byWork[w] = id
							byBuild[id] = append(byBuild[id], w)
						}
					}
					done := len(byBuild) == builds || job != nil
					mu.Unlock()
					if done {
						return
					}
				}
			}(i, w)
		}
		close(start)
		wg.Wait()
		close(submitted)
		require.Len(t, submitted, builds, "round %d: every submit answered 200", round)
		i := 0
		for id := range submitted {
			got := byBuild[id]
			require.Len(t, got, 1, "round %d: build %s handed to %v", round, id, got)
			// A second poll re-delivers the same job, through any node.
			i++
			require.Equal(t, id, node(i).Poll(got[0])["id"])
			st := node(i + 1).Status(id)
			require.Equal(t, "assigned", st["status"])
			require.Equal(t, got[0], st["worker_id"])
		}
		require.Len(t, byBuild, builds, "round %d: no build lost", round)
		// Finish the round so that every worker is free again.
		for w, id := range byWork {
			i++
			artifact := []byte("ipa of " + id)
			require.Equal(t, http.StatusOK, node(i).Upload(id, w, true, artifact, "").Status)
			d := node(i+1).Get("/api/builds/"+id+"/download", node(i+1).KeyH())
			require.Equal(t, http.StatusOK, d.Status, "round %d: %s", round, d.Body)
			require.Equal(t, sha256.Sum256(artifact), sha256.Sum256(d.Body), "round %d: the result of %s", round, id)
		}
	}
	for _, c := range nodes {
		h := c.Get("/health", nil).Object(t)
		require.Equal(t, map[string]any{"pending": 0.0, "active": 0.0, "total": 0.0}, h["queue"])
	}
}
