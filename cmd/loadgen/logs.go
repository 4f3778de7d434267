package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"
)

// runLogs measures log ingestion: cfg.LogWorkers workers each take one build,
// then post batches of cfg.LogBatch lines to it back to back for
// cfg.Duration. At the end every build is completed. Figures:
// logs_lines_per_s (lines the controller stored), logs_batch_p50/p99 (ms),
// logs_lines, logs_read_ms and logs_read_mib (GET of one build's whole
// log), logs_missing (lines stored but not read back for that build), RSS
// with --pid (while posting, and during that GET), logs_errors.
func runLogs(ctx context.Context, cfg Config) (r Result) {
	r = Result{Scenario: "logs"}
	c := newClient(cfg, cfg.LogWorkers)
	defer c.close()
	defer r.finish(c)

	progress(cfg, "logs: %d workers, each with one build", cfg.LogWorkers)
	wids, err := c.registerMany(ctx, "loadgen-logs", cfg.LogWorkers, []string{cfg.Platform})
	if err != nil {
		r.fail("%v", err)
		return r
	}
	source := zipLike(1 << 10)
	body, ct := smallMultipart([][2]string{{"platform", cfg.Platform}}, "source", "project.zip", source)
	for range wids {
		if _, err := c.submit(ctx, c.hc, bytes.NewReader(body), int64(len(body)), ct); err != nil {
			r.fail("submit: %v", err)
			return r
		}
	}
	builds := make([]string, len(wids))
	for i, wid := range wids {
		id, err := pollUntilJob(ctx, c, wid, cfg.Timeout)
		if err != nil {
			r.fail("worker %d: %v", i+1, err)
			completeAll(ctx, c, wids[:i], builds[:i], source)
			return r
		}
		builds[i] = id
	}

	progress(cfg, "logs: posting batches of %d lines for %s", cfg.LogBatch, cfg.Duration)
	rss := startRSS(cfg.PID, cfg.RSSInterval, readRSS)
	lat := make([][]time.Duration, len(wids))
	stored := make([]int64, len(wids))
	var wg sync.WaitGroup
	start := time.Now()
	for i := range wids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			batch := logBatch(cfg.LogBatch, i)
			var rec []time.Duration
			for ctx.Err() == nil && time.Since(start) < cfg.Duration {
				t0 := time.Now()
				n, err := c.postLogs(ctx, builds[i], wids[i], batch)
				if err != nil {
					continue
				}
				rec = append(rec, time.Since(t0))
				stored[i] += int64(n)
				if n != cfg.LogBatch {
					c.record(ctx, "POST /api/builds/:id/logs", fmt.Errorf("stored %d of %d lines", n, cfg.LogBatch))
				}
			}
			lat[i] = rec
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	st := rss.Stop()

	var total int64
	for _, n := range stored {
		total += n
	}
	all := mergeSorted(lat...)
	r.add("lines_per_s", perSecond(float64(total), elapsed), "lines/s")
	r.addLatency("batch", all)
	r.add("lines", float64(total), "count")
	r.note("%d batches of %d lines by %d workers in %s", len(all), cfg.LogBatch, len(wids), elapsed.Round(time.Millisecond))

	r.addRSS("rss", st)

	// Read one build's whole log back: it is returned uncapped and unpaged.
	// Only the request is timed, not the decoding here.
	rss = startRSS(cfg.PID, cfg.RSSInterval, readRSS)
	t0 := time.Now()
	raw, err := c.readLogs(ctx, builds[0])
	took := time.Since(t0)
	st = rss.Stop()
	if err == nil {
		r.add("read_ms", ms(took), "ms")
		r.add("read_mib", float64(len(raw))/(1<<20), "MiB")
		n, err := countLogs(raw)
		if err != nil {
			r.fail("decoding the log of build %s: %v", builds[0], err)
		}
		// The log also holds the controller's own lines (submitted, assigned).
		missing := max(stored[0]-int64(n), 0)
		r.add("missing", float64(missing), "count")
		if missing > 0 {
			r.fail("build %s: %d lines stored, only %d entries read back", builds[0], stored[0], n)
		}
		r.note("reading the log of one build back: %d entries, %d bytes", n, len(raw))
		r.addRSS("read_rss", st)
	}

	completeAll(ctx, c, wids, builds, source)
	return r
}

// pollUntilJob polls as wid until it is handed a build, for at most limit.
func pollUntilJob(ctx context.Context, c *client, wid string, limit time.Duration) (string, error) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		j, err := c.poll(ctx, wid)
		if err == nil && j != nil {
			return j.ID, nil
		}
		pause(ctx, 20*time.Millisecond)
	}
	return "", fmt.Errorf("no build handed out within %s", limit)
}

// completeAll uploads success for each worker's build so that nothing is
// left running.
func completeAll(ctx context.Context, c *client, wids, builds []string, result []byte) {
	for i, id := range builds {
		if id != "" {
			_ = c.completeSmall(ctx, id, wids[i], result) // failures are counted
		}
	}
}

// logBatch is a {"logs": [...]} body of n lines, built once per worker.
func logBatch(n, worker int) []byte {
	type line struct {
		Level   string `json:"level"`
		Message string `json:"message"`
	}
	levels := []string{"info", "info", "info", "warn", "info", "error"}
	lines := make([]line, n)
	for i := range lines {
		lines[i] = line{Level: levels[i%len(levels)],
			Message: fmt.Sprintf("[loadgen worker %d] line %d: > Task :app:compileReleaseKotlin UP-TO-DATE (%d ms)", worker, i, 17*i%997)}
	}
	b, _ := json.Marshal(map[string]any{"logs": lines})
	return b
}
