package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// maxStatusChecks is how many builds dispatch verifies one by one; above it
// an evenly spread sample of that many is checked.
const maxStatusChecks = 5000

// runDispatch measures assignment: cfg.Workers workers poll, take a build,
// upload a small result and poll again (pausing cfg.IdlePause after an empty
// poll), while cfg.Submitters goroutines submit cfg.Builds builds. Figures:
// dispatch_builds_per_s (our builds completed / (last completion − start of
// the first submit)), dispatch_assign_p50/p99 (job received by a worker −
// submit answered, ms), submit and upload latencies, dispatch_completed,
// dispatch_double_assigned (builds received by two workers),
// dispatch_not_completed (status other than completed at the end), RSS
// with --pid, dispatch_errors.
func runDispatch(ctx context.Context, cfg Config) (r Result) {
	r = Result{Scenario: "dispatch"}
	c := newClient(cfg, cfg.Workers+cfg.Submitters)
	defer c.close()
	defer r.finish(c)

	progress(cfg, "dispatch: registering %d %s workers", cfg.Workers, cfg.Platform)
	ids, err := c.registerMany(ctx, "loadgen-dispatch", cfg.Workers, []string{cfg.Platform})
	if err != nil {
		r.fail("%v", err)
		return r
	}
	submitBody, submitCT := smallMultipart([][2]string{{"platform", cfg.Platform}}, "source", "project.zip", zipLike(1<<10))
	result := make([]byte, cfg.ResultSize)
	_, _ = newNoise(2).Read(result)

	tr := newDispatchTracker()
	rss := startRSS(cfg.PID, cfg.RSSInterval, readRSS)

	// Workers.
	wctx, stopWorkers := context.WithCancel(ctx)
	defer stopWorkers()
	var wwg sync.WaitGroup
	uploadLat := make([][]time.Duration, len(ids))
	var emptyPolls, notSuccess atomic.Int64
	for i, wid := range ids {
		wwg.Add(1)
		go func() {
			defer wwg.Done()
			var rec []time.Duration
			defer func() { uploadLat[i] = rec }()
			wctx := onNode(wctx, i)
			for wctx.Err() == nil {
				j, err := c.poll(wctx, wid)
				if err != nil || j == nil {
					if err == nil {
						emptyPolls.Add(1)
					}
					pause(wctx, cfg.IdlePause)
					continue
				}
				tr.received(j.ID, wid, time.Now())
				body, ct := smallMultipart([][2]string{{"build_id", j.ID}, {"worker_id", wid}, {"success", "true"}},
					"result", "build.apk", result)
				t0 := time.Now()
				status, err := c.upload(wctx, c.hc, bytes.NewReader(body), int64(len(body)), ct)
				if err != nil {
					continue // still the assignee: the next poll hands the build back
				}
				rec = append(rec, time.Since(t0))
				if status != "success" {
					notSuccess.Add(1)
				}
				tr.completed(j.ID, time.Now())
			}
		}()
	}

	// Submitters.
	progress(cfg, "dispatch: submitting %d builds from %d submitters to %d workers", cfg.Builds, cfg.Submitters, cfg.Workers)
	var next atomic.Int64
	var swg sync.WaitGroup
	submitLat := make([][]time.Duration, cfg.Submitters)
	start := time.Now()
	for s := range cfg.Submitters {
		swg.Add(1)
		go func() {
			defer swg.Done()
			var rec []time.Duration
			defer func() { submitLat[s] = rec }()
			for ctx.Err() == nil && next.Add(1) <= int64(cfg.Builds) {
				t0 := time.Now()
				ans, err := c.submit(ctx, c.hc, bytes.NewReader(submitBody), int64(len(submitBody)), submitCT)
				at := time.Now()
				if err != nil {
					continue
				}
				tr.answer(ans.ID, at)
				rec = append(rec, at.Sub(t0))
			}
		}()
	}
	submitted := make(chan struct{})
	go func() { swg.Wait(); close(submitted) }()
	if err := tr.waitCompleted(ctx, submitted, cfg.Timeout); err != nil {
		r.fail("%v", err)
	}
	stopWorkers()
	wwg.Wait()
	swg.Wait()
	st := rss.Stop()

	a := tr.analyse(start)
	r.add("builds_per_s", perSecond(float64(a.completed), a.span), "builds/s")
	r.addLatency("assign", a.assign)
	r.addLatency("submit", mergeSorted(submitLat...))
	r.addLatency("upload", mergeSorted(uploadLat...))
	r.add("completed", float64(a.completed), "count")
	r.add("double_assigned", float64(a.double), "count")
	if a.double > 0 {
		r.fail("%d builds were received by two or more workers", a.double)
	}
	if n := notSuccess.Load(); n > 0 {
		r.fail("%d uploads of success=true answered a status other than \"success\"", n)
	}
	if a.redelivered > 0 {
		r.note("%d jobs were handed again to the same worker (after a failed upload)", a.redelivered)
	}
	if a.early > 0 {
		r.note("%d jobs reached a worker before their submit answer reached the submitter (latency counted as 0)", a.early)
	}
	if a.foreign > 0 {
		r.note("%d jobs were builds this run did not submit (the queue was not empty); they were completed too", a.foreign)
	}
	r.note("%d builds answered of %d, %d completed in %s; %d empty polls", a.answered, cfg.Builds, a.completed,
		a.span.Round(time.Millisecond), emptyPolls.Load())

	// Verify the final status of our builds.
	check := a.ids
	if len(check) > maxStatusChecks {
		sample := make([]string, 0, maxStatusChecks)
		for i := range maxStatusChecks {
			sample = append(sample, check[i*len(check)/maxStatusChecks])
		}
		check = sample
	}
	progress(cfg, "dispatch: checking the status of %d builds", len(check))
	notCompleted := verifyCompleted(ctx, c, check, cfg.Workers)
	r.add("status_checked", float64(len(check)), "count")
	r.add("not_completed", float64(notCompleted), "count")
	if notCompleted > 0 {
		r.fail("%d of %d checked builds are not completed", notCompleted, len(check))
	}
	r.addRSS("rss", st)
	return r
}

// verifyCompleted asks the status of every id (conc at a time) and returns
// how many are not "completed"; failed requests count as not completed.
func verifyCompleted(ctx context.Context, c *client, ids []string, conc int) int {
	var bad atomic.Int64
	var next atomic.Int64
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(len(ids)) || ctx.Err() != nil {
					return
				}
				if s, err := c.buildStatus(ctx, ids[i]); err != nil || s != "completed" {
					bad.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return int(bad.Load())
}

// pause waits d or until ctx ends.
func pause(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// zipLike returns n bytes that start like a zip file (local header
// signature) and continue with noise: the controller never inspects sources.
func zipLike(n int) []byte {
	b := make([]byte, n)
	_, _ = newNoise(1).Read(b)
	copy(b, "PK\x03\x04")
	return b
}

// dispatchTracker records, per build, when its submit was answered, which
// workers received it and when it completed. It is shared by all goroutines.
type dispatchTracker struct {
	mu        sync.Mutex
	answered  map[string]time.Time
	sent      map[string]time.Time // when the submit was sent (only through submitted)
	receipts  map[string]*receipt
	completes map[string]time.Time
	changed   chan struct{} // 1-buffered: "a build completed"
}

type receipt struct {
	first   time.Time
	workers []string // one entry per delivery
}

func newDispatchTracker() *dispatchTracker {
	return &dispatchTracker{answered: map[string]time.Time{}, sent: map[string]time.Time{}, receipts: map[string]*receipt{},
		completes: map[string]time.Time{}, changed: make(chan struct{}, 1)}
}

// answer records the time a submit answer arrived.
func (t *dispatchTracker) answer(id string, at time.Time) {
	t.mu.Lock()
	t.answered[id] = at
	t.mu.Unlock()
}

// submitted records when a submit was sent and when its answer arrived.
func (t *dispatchTracker) submitted(id string, sent, at time.Time) {
	t.mu.Lock()
	t.sent[id], t.answered[id] = sent, at
	t.mu.Unlock()
}

func (t *dispatchTracker) received(id, worker string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	rc := t.receipts[id]
	if rc == nil {
		rc = &receipt{first: at}
		t.receipts[id] = rc
	}
	rc.workers = append(rc.workers, worker)
}

func (t *dispatchTracker) completed(id string, at time.Time) {
	t.mu.Lock()
	if _, ok := t.completes[id]; !ok {
		t.completes[id] = at
	}
	t.mu.Unlock()
	select {
	case t.changed <- struct{}{}:
	default:
	}
}

// waitCompleted waits until submitted is closed and every answered build
// has completed. It returns an error when ctx ends first ("interrupted") or
// no build completed for stall ("stalled: ...").
func (t *dispatchTracker) waitCompleted(ctx context.Context, submitted <-chan struct{}, stall time.Duration) error {
	timer := time.NewTimer(stall)
	defer timer.Stop()
	allSubmitted := false
	for {
		select {
		case <-ctx.Done():
			return errors.New("interrupted")
		case <-submitted:
			allSubmitted, submitted = true, nil
		case <-t.changed:
			timer.Reset(stall)
		case <-timer.C:
			answered, done := t.progress()
			return fmt.Errorf("stalled: no build completed for %s; %d of %d submitted builds completed", stall, done, answered)
		}
		if allSubmitted && t.allCompleted() {
			return nil
		}
	}
}

// allCompleted reports whether every answered build has completed.
func (t *dispatchTracker) allCompleted() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id := range t.answered {
		if _, ok := t.completes[id]; !ok {
			return false
		}
	}
	return true
}

func (t *dispatchTracker) progress() (answered, completed int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id := range t.answered {
		if _, ok := t.completes[id]; ok {
			completed++
		}
	}
	return len(t.answered), completed
}

// dispatchAnalysis is the tracker's verdict.
type dispatchAnalysis struct {
	ids                 []string // answered builds
	answered, completed int
	span                time.Duration // start of first submit → last completion of ours
	assign              []time.Duration
	fromSent            []time.Duration // job received − submit sent (builds recorded with submitted)
	double, redelivered int
	early, foreign      int
}

func (t *dispatchTracker) analyse(start time.Time) dispatchAnalysis {
	t.mu.Lock()
	defer t.mu.Unlock()
	a := dispatchAnalysis{answered: len(t.answered)}
	var last time.Time
	for id, at := range t.answered {
		a.ids = append(a.ids, id)
		if done, ok := t.completes[id]; ok {
			a.completed++
			if done.After(last) {
				last = done
			}
		}
		if rc := t.receipts[id]; rc != nil {
			d := rc.first.Sub(at)
			if d < 0 {
				a.early++
				d = 0
			}
			a.assign = append(a.assign, d)
			if sent, ok := t.sent[id]; ok {
				a.fromSent = append(a.fromSent, rc.first.Sub(sent))
			}
		}
	}
	if !last.IsZero() {
		a.span = last.Sub(start)
	}
	for id, rc := range t.receipts {
		if _, ok := t.answered[id]; !ok {
			a.foreign++
		}
		distinct := map[string]bool{}
		for _, w := range rc.workers {
			distinct[w] = true
		}
		if len(distinct) > 1 {
			a.double++
		}
		if len(rc.workers) > len(distinct) {
			a.redelivered++
		}
	}
	a.assign = mergeSorted(a.assign)
	a.fromSent = mergeSorted(a.fromSent)
	return a
}
