package test

import (
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
	const workers, builds = 20, 10
	c := Start(t)
	ids := make([]string, workers)
	for i := range ids {
		ids[i] = c.Register(fmt.Sprintf("racer-%02d", i))
	}
	for round := 0; round < assignRounds(t); round++ {
		var (
			mu      sync.Mutex
			byBuild = map[string][]string{} // build id → workers that got it
			byWork  = map[string]string{}   // worker id → its build
			wg      sync.WaitGroup
		)
		submitted := make(chan string, builds)
		for i := 0; i < builds; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := c.PostMultipart("/api/builds/submit", c.KeyH(),
					Part{Name: "source", Filename: "s.zip", Data: []byte("src")}, Part{Name: "platform", Data: []byte("ios")})
				if r.Status == http.StatusOK {
					submitted <- r.Object(t)["id"].(string)
				}
			}()
		}
		start := make(chan struct{})
		for _, w := range ids {
			wg.Add(1)
			go func(w string) {
				defer wg.Done()
				<-start
				// Poll until a job comes or every build has been handed out.
				for {
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
			}(w)
		}
		close(start)
		wg.Wait()
		close(submitted)
		require.Len(t, submitted, builds, "round %d: every submit answered 200", round)
		for id := range submitted {
			got := byBuild[id]
			require.Len(t, got, 1, "round %d: build %s handed to %v", round, id, got)
			// A second poll re-delivers the same job.
			require.Equal(t, id, c.Poll(got[0])["id"])
			st := c.Status(id)
			require.Equal(t, "assigned", st["status"])
			require.Equal(t, got[0], st["worker_id"])
		}
		require.Len(t, byBuild, builds, "round %d: no build lost", round)
		// Finish the round so that every worker is free again.
		for w, id := range byWork {
			require.Equal(t, http.StatusOK, c.Upload(id, w, true, []byte("ipa"), "").Status)
		}
	}
	h := c.Get("/health", nil).Object(t)
	require.Equal(t, map[string]any{"pending": 0.0, "active": 0.0, "total": 0.0}, h["queue"])
}
