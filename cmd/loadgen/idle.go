package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"sync"
	"time"
)

// runIdle measures the cost of idle workers: cfg.Concurrency workers that
// take no platform (so they never get a build) poll back to back for
// cfg.Duration over keep-alive connections. Figures: idle_poll_rps,
// idle_poll_p50/p99 (ms), the RSS figures with --pid, idle_errors.
func runIdle(ctx context.Context, cfg Config) (r Result) {
	r = Result{Scenario: "idle"}
	c := newClient(cfg, cfg.Concurrency)
	defer c.close()
	defer r.finish(c)

	progress(cfg, "idle: registering %d workers that take no platform", cfg.Concurrency)
	ids, err := c.registerMany(ctx, "loadgen-idle", cfg.Concurrency, []string{})
	if err != nil {
		r.fail("%v", err)
		return r
	}
	progress(cfg, "idle: %d workers polling back to back for %s", cfg.Concurrency, cfg.Duration)
	rss := startRSS(cfg.PID, cfg.RSSInterval, readRSS)
	lat := make([][]time.Duration, len(ids))
	var jobs int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := make([]time.Duration, 0, 4096)
			path := pollPath(id)
			got := 0
			for ctx.Err() == nil && time.Since(start) < cfg.Duration {
				t0 := time.Now()
				ok, job := idlePoll(ctx, c, c.hc, path)
				if ok {
					rec = append(rec, time.Since(t0))
				}
				if job {
					got++
				}
			}
			lat[i] = rec
			mu.Lock()
			jobs += int64(got)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	st := rss.Stop()

	all := mergeSorted(lat...)
	r.add("poll_rps", perSecond(float64(len(all)), elapsed), "req/s")
	r.addLatency("poll", all)
	r.add("polls", float64(len(all)), "count")
	r.addRSS("rss", st)
	r.note("%d successful polls by %d workers in %s", len(all), len(ids), elapsed.Round(time.Millisecond))
	if jobs > 0 {
		r.fail("workers with no platform were handed %d jobs", jobs)
	}
	return r
}

// idlePoll sends one poll through hc, reads and closes the answer, and
// reports whether it was a 200 and whether it carried a job (an idle worker
// must get none). It skips JSON decoding so the tool spends its CPU on
// requests.
func idlePoll(ctx context.Context, c *client, hc *http.Client, path string) (ok, gotJob bool) {
	req := c.newRequest(ctx, http.MethodGet, path, nil, "")
	req.Header.Set("X-API-Key", c.key)
	resp, err := hc.Do(req)
	if err != nil {
		c.record(ctx, "GET /api/workers/poll", err)
		return false, false
	}
	var buf [64]byte
	n, _ := io.ReadFull(resp.Body, buf[:])
	_, cerr := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		c.record(ctx, "GET /api/workers/poll", &statusError{Code: resp.StatusCode, Body: string(buf[:n])})
		return false, false
	}
	if cerr != nil {
		c.record(ctx, "GET /api/workers/poll", cerr)
		return false, false
	}
	return true, !bytes.Contains(buf[:n], []byte(`"job":null`))
}

// progress writes a progress note.
func progress(cfg Config, format string, args ...any) {
	if cfg.Progress != nil {
		fprintfln(cfg.Progress, format, args...)
	}
}
