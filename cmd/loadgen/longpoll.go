package main

import (
	"bytes"
	"context"
	"math"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// heldPollsGauge is the controller's count of polls held now (§3.4).
const heldPollsGauge = "controller_held_polls"

// runLongPoll measures long-poll dispatch (docs/API.md §4.18) in two
// phases. Dispatch: cfg.LPWorkers workers hold ?wait= polls while builds are
// submitted at cfg.SubmitRate for cfg.Duration; each worker completes the
// build it is handed and polls again at once. Idle: cfg.LPIdleWorkers
// workers that take no platform hold polls for cfg.LPIdleWindow, and the
// controller's CPU and RSS are measured (--pid). Figures: longpoll_job_p50/
// p99 (submit sent → job received, ms), longpoll_assign_p50/p99 (submit
// answered → job received), the submit latency and rate, completion and
// double-assignment checks, longpoll_idle_cpu (% of one core),
// longpoll_idle_rss_*, longpoll_errors.
func runLongPoll(ctx context.Context, cfg Config) (r Result) {
	r = Result{Scenario: "longpoll"}
	c := newClient(cfg, max(cfg.LPWorkers, cfg.LPIdleWorkers)+cfg.Submitters)
	defer c.close()
	defer r.finish(c)
	if longPollDispatch(ctx, cfg, c, &r) {
		longPollIdle(ctx, cfg, c, &r)
	}
	return r
}

// waitSeconds is cfg.Wait as the ?wait= value.
func waitSeconds(cfg Config) int { return int(cfg.Wait / time.Second) }

// longPollClient is an HTTP client whose requests may be held for the wait.
func longPollClient(cfg Config, c *client) *http.Client {
	return &http.Client{Transport: c.transport, Timeout: cfg.Wait + cfg.Timeout}
}

// longPollDispatch is the first phase; it reports whether the scenario can
// go on.
func longPollDispatch(ctx context.Context, cfg Config, c *client, r *Result) bool {
	progress(cfg, "longpoll: registering %d %s workers", cfg.LPWorkers, cfg.Platform)
	ids, err := c.registerMany(ctx, "loadgen-longpoll", cfg.LPWorkers, []string{cfg.Platform})
	if err != nil {
		r.fail("%v", err)
		return false
	}
	submitBody, submitCT := smallMultipart([][2]string{{"platform", cfg.Platform}}, "source", "project.zip", zipLike(1<<10))
	result := make([]byte, cfg.ResultSize)
	_, _ = newNoise(3).Read(result)
	hc := longPollClient(cfg, c)
	wait := waitSeconds(cfg)

	tr := newDispatchTracker()
	wctx, stopWorkers := context.WithCancel(ctx)
	defer stopWorkers()
	var wwg sync.WaitGroup
	var early atomic.Int64
	for _, wid := range ids {
		wwg.Add(1)
		go func() {
			defer wwg.Done()
			for wctx.Err() == nil {
				t0 := time.Now()
				j, err := c.pollWait(wctx, hc, wid, wait)
				switch {
				case err != nil:
					pause(wctx, cfg.IdlePause)
					continue
				case j == nil:
					if time.Since(t0) < cfg.Wait/2 && wctx.Err() == nil {
						early.Add(1) // not held: do not spin
						pause(wctx, cfg.IdlePause)
					}
					continue
				}
				tr.received(j.ID, wid, time.Now())
				if c.completeSmall(wctx, j.ID, wid, result) == nil {
					tr.completed(j.ID, time.Now())
				} // else still the assignee: the next poll hands the build back
			}
		}()
	}
	progress(cfg, "longpoll: waiting until %d polls are held", len(ids))
	if _, err := c.waitGauge(ctx, heldPollsGauge, float64(len(ids)), cfg.Timeout); err != nil {
		r.note("could not see every poll held before submitting (%v); submitting anyway", err)
	}

	n := max(int(math.Round(cfg.SubmitRate*cfg.Duration.Seconds())), 1)
	progress(cfg, "longpoll: submitting %d builds at %g/s to %d held polls", n, cfg.SubmitRate, len(ids))
	rss := startRSS(cfg.PID, cfg.RSSInterval, readRSS)
	every := time.Duration(float64(time.Second) / cfg.SubmitRate)
	submitLat := make([][]time.Duration, n)
	sem := make(chan struct{}, max(cfg.Submitters, 1)*8) // submits in flight at once
	var swg sync.WaitGroup
	var lag time.Duration
	start := time.Now()
	for i := 0; i < n && ctx.Err() == nil; i++ {
		due := start.Add(time.Duration(i) * every)
		pause(ctx, time.Until(due))
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			continue
		}
		lag = max(lag, time.Since(due))
		swg.Add(1)
		go func() {
			defer swg.Done()
			defer func() { <-sem }()
			t0 := time.Now()
			ans, err := c.submit(ctx, c.hc, bytes.NewReader(submitBody), int64(len(submitBody)), submitCT)
			at := time.Now()
			if err == nil {
				tr.submitted(ans.ID, t0, at)
				submitLat[i] = []time.Duration{at.Sub(t0)}
			}
		}()
	}
	submitted := make(chan struct{})
	go func() { swg.Wait(); close(submitted) }()
	if err := tr.waitCompleted(ctx, submitted, cfg.Timeout); err != nil {
		r.fail("%v", err)
	}
	swg.Wait()
	span := time.Since(start)
	st := rss.Stop()
	stopWorkers()
	wwg.Wait()

	a := tr.analyse(start)
	r.add("submitted", float64(a.answered), "count")
	r.add("submit_rate", perSecond(float64(a.answered), span), "builds/s")
	r.addLatency("job", a.fromSent)
	r.addLatency("assign", a.assign)
	r.addLatency("submit", mergeSorted(submitLat...))
	r.add("completed", float64(a.completed), "count")
	r.add("double_assigned", float64(a.double), "count")
	r.add("early_empty", float64(early.Load()), "count")
	if a.double > 0 {
		r.fail("%d builds were received by two or more workers", a.double)
	}
	if a.early > 0 {
		r.note("%d jobs reached a worker before their submit answer reached the submitter (assign latency counted as 0)", a.early)
	}
	if a.foreign > 0 {
		r.note("%d jobs were builds this run did not submit (the queue was not empty); they were completed too", a.foreign)
	}
	if n := early.Load(); n > 0 {
		r.note("%d empty answers came back in less than half the wait: the controller did not hold them (no long-poll, or over --max-waiters)", n)
	}
	if lag > every {
		r.note("submits fell behind their schedule by up to %s", lag.Round(time.Millisecond))
	}
	r.note("%d builds submitted at %.1f/s to %d workers holding polls of %ds; %d completed", a.answered,
		perSecond(float64(a.answered), span), len(ids), waitSeconds(cfg), a.completed)
	notCompleted := verifyCompleted(ctx, c, a.ids, cfg.Submitters*4)
	r.add("not_completed", float64(notCompleted), "count")
	if notCompleted > 0 {
		r.fail("%d of %d builds are not completed", notCompleted, len(a.ids))
	}
	r.addRSS("rss", st)
	return ctx.Err() == nil
}

// longPollIdle is the second phase: many held polls and nothing to do.
func longPollIdle(ctx context.Context, cfg Config, c *client, r *Result) {
	rss := startRSS(cfg.PID, cfg.RSSInterval, readRSS)
	progress(cfg, "longpoll: registering %d workers that take no platform", cfg.LPIdleWorkers)
	ids, err := c.registerMany(ctx, "loadgen-longpoll-idle", cfg.LPIdleWorkers, []string{})
	if err != nil {
		r.fail("%v", err)
		rss.Stop()
		return
	}
	hc := longPollClient(cfg, c)
	wctx, stopWorkers := context.WithCancel(ctx)
	defer stopWorkers()
	var wg sync.WaitGroup
	var measuring atomic.Bool
	var answered, early, jobs atomic.Int64
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path := pollPath(id) + "&wait=" + strconv.Itoa(waitSeconds(cfg))
			for wctx.Err() == nil {
				t0 := time.Now()
				ok, job := idlePoll(wctx, c, hc, path)
				if job {
					jobs.Add(1)
				}
				if ok && measuring.Load() {
					answered.Add(1)
				}
				if !ok || time.Since(t0) < cfg.Wait/2 {
					if ok && wctx.Err() == nil {
						early.Add(1)
					}
					pause(wctx, cfg.IdlePause)
				}
			}
		}()
	}
	progress(cfg, "longpoll: waiting until %d idle polls are held", len(ids))
	held, err := c.waitGauge(ctx, heldPollsGauge, float64(len(ids)), cfg.Timeout)
	if err != nil {
		r.note("could not see every idle poll held (%v)", err)
	}
	progress(cfg, "longpoll: measuring %d held polls for %s", len(ids), cfg.LPIdleWindow)
	measuring.Store(true)
	cpu := startCPU(cfg.PID, readCPU)
	self := startCPU(os.Getpid(), readCPU)
	pause(ctx, cfg.LPIdleWindow)
	use, selfUse := cpu.Stop(), self.Stop()
	measuring.Store(false)
	st := rss.Stop()
	stopWorkers()
	wg.Wait()

	r.add("idle_held", held, "count")
	r.addCPU("idle_cpu", use)
	r.addCPU("idle_loadgen_cpu", selfUse)
	r.add("idle_polls", float64(answered.Load()), "count")
	r.add("idle_early", float64(early.Load()), "count")
	r.addRSS("idle_rss", st)
	if n := jobs.Load(); n > 0 {
		r.fail("workers with no platform were handed %d jobs", n)
	}
	if cfg.PID == 0 {
		r.note("no --pid: the idle phase's controller CPU and RSS were not measured")
	}
	r.note("%d workers held polls of %ds for %s; %d polls answered (empty) in that time", len(ids), waitSeconds(cfg),
		cfg.LPIdleWindow, answered.Load())
}
