package queue

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/store/domain"
)

// recorder is an Observer that keeps what it was told.
type recorder struct {
	mu       sync.Mutex
	assigned []string
	finished []string
}

func (r *recorder) Assigned(p domain.Platform, wait time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.assigned = append(r.assigned, string(p)+" "+wait.String())
}

func (r *recorder) Finished(p domain.Platform, outcome string, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.finished = append(r.finished, string(p)+" "+outcome+" "+d.String())
}

func (r *recorder) seen() ([]string, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.assigned...), append([]string(nil), r.finished...)
}

// TestObserver: each assignment reports its queue wait; a build that ends
// by its last timeout reports its duration from its last assignment.
func TestObserver(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	b := setup(t, withConfig(Config{MaxAttempts: 2, Observer: rec}))
	a := b.submit(t, domain.PlatformAndroid)
	w1 := b.worker(t, "w1", anyPlatform)
	w2 := b.worker(t, "w2", anyPlatform)

	b.clock.Advance(3 * time.Second)
	require.Equal(t, a, b.poll(t, w1))
	require.Equal(t, a, b.poll(t, w1), "a re-delivery is not an assignment")
	b.clock.Advance(6 * time.Minute)
	out, err := b.q.ExpireBuild(t.Context(), a, w1, b.clock.Now().UnixMilli())
	require.NoError(t, err)
	require.Equal(t, domain.TimeoutRequeued, out)

	require.Equal(t, a, b.poll(t, w2))
	b.clock.Advance(7 * time.Minute)
	out, err = b.q.ExpireBuild(t.Context(), a, w2, b.clock.Now().UnixMilli())
	require.NoError(t, err)
	require.Equal(t, domain.TimeoutFailed, out)

	assigned, finished := rec.seen()
	require.Equal(t, []string{"android 3s", "android 6m3s"}, assigned, "the wait counts from submission")
	require.Equal(t, []string{"android failed 7m0s"}, finished, "a requeue is not an end; the failure is")
}
