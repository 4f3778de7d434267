package test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/cmd/app"
)

// checkNow runs one liveness check at the controller's current (manual) time.
func (c *Controller) checkNow() {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(c.t, c.App.Monitor.CheckNow(ctx))
}

func timeouts(build, worker time.Duration, attempts int) Option {
	return WithConfig(func(cfg *app.Config) {
		cfg.BuildTimeout, cfg.WorkerTimeout, cfg.MaxAttempts = build, worker, attempts
	})
}

func TestBuildTimeoutRequeuesThenFails(t *testing.T) {
	t.Parallel()
	c := Start(t, WithManualClock(), timeouts(300*time.Second, time.Hour, 3))
	b := c.Submit("ios", []byte("s"), nil)
	c.Clock.Advance(time.Millisecond) // queue order is (submitted_at, id)
	later := c.Submit("ios", []byte("later"), nil)
	workers := []string{c.Register("w1"), c.Register("w2"), c.Register("w3")}

	for attempt := 1; attempt <= 3; attempt++ {
		w := workers[attempt-1]
		require.Equal(t, b.ID, c.Poll(w)["id"], "a requeued build keeps its place ahead of later ones")
		// Liveness just before the deadline keeps it.
		c.Clock.Advance(299 * time.Second)
		c.checkNow()
		require.Equal(t, "assigned", c.Status(b.ID)["status"])
		hb := c.PostJSON("/api/builds/"+b.ID+"/heartbeat?worker_id="+w, nil, c.KeyH())
		require.Equal(t, http.StatusOK, hb.Status)
		c.Clock.Advance(299 * time.Second)
		c.checkNow()
		require.Equal(t, "building", c.Status(b.ID)["status"])
		// Silence past the timeout.
		c.Clock.Advance(2 * time.Second)
		c.checkNow()
		st := c.Status(b.ID)
		msgs := c.LogMessages(b.ID)
		if attempt < 3 {
			require.Equal(t, "pending", st["status"])
			require.Nil(t, st["worker_id"])
			require.Nil(t, st["started_at"])
			require.Equal(t, "Build timeout - worker stopped responding; requeued (attempt "+
				[]string{"", "1", "2"}[attempt]+" of 3)", msgs[len(msgs)-1])
		} else {
			require.Equal(t, "failed", st["status"])
			require.Equal(t, "Build timeout - worker stopped responding", st["error_message"])
			require.Nil(t, st["worker_id"])
			require.NotNil(t, st["completed_at"])
			require.Contains(t, msgs[len(msgs)-1], "w3")
		}
		require.Equal(t, "idle", c.WorkerStats(w)["status"])

		// The stale worker is refused everywhere, and nothing it sends is applied.
		before := len(c.LogMessages(b.ID))
		r := c.PostJSON("/api/builds/"+b.ID+"/heartbeat?worker_id="+w, `{"progress":99}`, c.KeyH())
		require.Equal(t, http.StatusForbidden, r.Status)
		require.Equal(t, "Build not assigned to this worker", r.Error(t))
		r = c.PostJSON("/api/builds/"+b.ID+"/logs", map[string]string{"level": "info", "message": "stale"}, c.KeyH("X-Worker-Id", w))
		require.Equal(t, http.StatusForbidden, r.Status)
		r = c.PostJSON("/api/builds/"+b.ID+"/telemetry", `{"type":"monitor_started"}`, c.KeyH("X-Worker-Id", w, "X-Build-Id", b.ID))
		require.Equal(t, http.StatusForbidden, r.Status)
		r = c.Get("/api/builds/"+b.ID+"/source", c.KeyH("X-Worker-Id", w))
		require.Equal(t, http.StatusForbidden, r.Status)
		r = c.Upload(b.ID, w, true, []byte("stale result"), "")
		require.Equal(t, http.StatusForbidden, r.Status)
		require.Equal(t, "Build not assigned to this worker", r.Error(t))
		require.Len(t, c.LogMessages(b.ID), before)
	}
	require.Equal(t, 0.0, c.WorkerStats(workers[2])["totalBuilds"])
	// The build behind it was never blocked and still waits.
	require.Equal(t, later.ID, c.Poll(workers[0])["id"])
}

func TestTimeoutLivenessSources(t *testing.T) {
	t.Parallel()
	c := Start(t, WithManualClock(), timeouts(100*time.Second, time.Hour, 3))
	b := c.Submit("ios", []byte("s"), DefaultCerts(t))
	w := c.Register("w")
	c.Poll(w)
	signals := []func(){
		func() { c.Get("/api/builds/"+b.ID+"/source", c.KeyH("X-Worker-Id", w)) },
		func() { c.Get("/api/builds/"+b.ID+"/certs", c.KeyH("X-Worker-Id", w)) },
		func() {
			c.Get("/api/builds/"+b.ID+"/certs-secure", c.KeyH("X-Worker-Id", w, "X-Build-Id", b.ID))
		},
		func() { c.PostJSON("/api/builds/"+b.ID+"/logs", `{"logs":[]}`, c.KeyH("X-Worker-Id", w)) },
		func() {
			c.PostJSON("/api/builds/"+b.ID+"/telemetry", `{"type":"cpu_snapshot","data":{"cpu_percent":1,"memory_mb":1}}`,
				H{"X-Worker-Id": w, "X-Build-Id": b.ID})
		},
		func() { c.PostJSON("/api/builds/"+b.ID+"/heartbeat?worker_id="+w, nil, c.KeyH()) },
	}
	for _, signal := range signals {
		c.Clock.Advance(99 * time.Second)
		signal()
		c.Clock.Advance(99 * time.Second)
		c.checkNow()
		require.Equal(t, "building", c.Status(b.ID)["status"])
	}
	c.Clock.Advance(101 * time.Second)
	c.checkNow()
	require.Equal(t, "pending", c.Status(b.ID)["status"])
}

func TestWorkerTimeoutMarksOffline(t *testing.T) {
	t.Parallel()
	c := Start(t, WithManualClock(), timeouts(time.Hour, 300*time.Second, 3))
	b := c.Submit("ios", []byte("s"), nil)
	busy := c.Register("busy")
	idle := c.Register("idle")
	c.Poll(busy)
	c.Clock.Advance(200 * time.Second)
	c.Poll(idle)
	c.Clock.Advance(150 * time.Second)
	c.checkNow()
	require.Equal(t, "offline", c.WorkerStats(busy)["status"])
	require.Equal(t, "idle", c.WorkerStats(idle)["status"])
	// The build is left to the build timeout.
	require.Equal(t, "assigned", c.Status(b.ID)["status"])
	require.Nil(t, c.Poll(idle))
	require.Equal(t, 1.0, c.Get("/api/stats", nil).Object(t)["nodesOnline"], "offline and silent workers are not online")
	// Seen again: back to building, its job re-delivered.
	require.Equal(t, b.ID, c.Poll(busy)["id"])
	require.Equal(t, "building", c.WorkerStats(busy)["status"])
}
