package main

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// readKinds are the reads the reads scenario times: what a dashboard, a CLI
// and an idle worker ask all day, whose cost must not grow with the history.
var readKinds = []string{"status", "page", "deep_page", "stats", "metrics", "dashboard", "idle_poll"}

// runReads measures the latency of the everyday reads against whatever
// history the controller holds (run it on an empty controller and on one
// seeded by cmd/seed-history to compare): for cfg.Duration, two clients
// each send every kind in turn — a build's status (ids from the build
// list), the first page of the build list, a page 2,000 builds deep,
// /api/stats (cached by the controller for 10 s), /metrics, the dashboard,
// and an idle worker's poll. Figures: <kind>_p50/_p99 (ms), reads_rps,
// reads_errors. A controller with no build gets 10 pending builds first.
func runReads(ctx context.Context, cfg Config) (r Result) {
	r = Result{Scenario: "reads"}
	c := newClient(cfg, 4)
	defer c.close()
	defer r.finish(c)

	ids, deep, err := buildIDs(ctx, c, 2000)
	if err == nil && len(ids) == 0 {
		progress(cfg, "reads: the controller has no build; submitting 10")
		body, ct := smallMultipart([][2]string{{"platform", cfg.Platform}}, "source", "project.zip", zipLike(1<<10))
		for range 10 {
			if _, err = c.submit(ctx, c.hc, bytes.NewReader(body), int64(len(body)), ct); err != nil {
				break
			}
		}
		if err == nil {
			ids, deep, err = buildIDs(ctx, c, 2000)
		}
	}
	if err != nil {
		r.fail("reading the build list: %v", err)
		return r
	}
	worker, err := c.register(ctx, "loadgen-reads", []string{})
	if err != nil {
		r.fail("registering the idle worker: %v", err)
		return r
	}
	paths := map[string]func(i int) string{
		"status":    func(i int) string { return "/api/builds/" + ids[i%len(ids)] + "/status" },
		"page":      func(int) string { return "/api/builds?limit=100" },
		"deep_page": func(int) string { return "/api/builds?limit=100&before=" + url.QueryEscape(deep) },
		"stats":     func(int) string { return "/api/stats" },
		"metrics":   func(int) string { return "/metrics" },
		"dashboard": func(int) string { return "/" },
		"idle_poll": func(int) string { return pollPath(worker) },
	}
	progress(cfg, "reads: %d build ids; 2 clients reading for %s", len(ids), cfg.Duration)
	const clients = 2
	lat := make([]map[string][]time.Duration, clients)
	var wg sync.WaitGroup
	start := time.Now()
	for g := range clients {
		lat[g] = map[string][]time.Duration{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; ctx.Err() == nil && time.Since(start) < cfg.Duration; i += clients {
				for _, kind := range readKinds {
					t0 := time.Now()
					if c.do(c.hc, c.newRequest(ctx, http.MethodGet, paths[kind](i), nil, ""), nil) == nil {
						lat[g][kind] = append(lat[g][kind], time.Since(t0))
					}
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	total := 0
	for _, kind := range readKinds {
		all := mergeSorted(lat[0][kind], lat[1][kind])
		total += len(all)
		r.addLatency(kind, all)
	}
	r.add("rps", perSecond(float64(total), elapsed), "req/s")
	r.note("%d reads in %s; the deep page starts after build %s", total, elapsed.Round(time.Millisecond), deep)
	return r
}

// buildIDs reads up to n build ids from the build list, newest first, 500 a
// page, and returns them with the last one (where a page n deep starts).
func buildIDs(ctx context.Context, c *client, n int) ([]string, string, error) {
	var ids []string
	before := ""
	for len(ids) < n {
		path := "/api/builds?limit=500"
		if before != "" {
			path += "&before=" + url.QueryEscape(before)
		}
		var page []struct {
			ID string `json:"id"`
		}
		if err := c.do(c.hc, c.newRequest(ctx, http.MethodGet, path, nil, ""), &page); err != nil {
			return nil, "", err
		}
		for _, b := range page {
			ids = append(ids, b.ID)
		}
		if len(page) < 500 {
			break
		}
		before = page[len(page)-1].ID
	}
	if len(ids) == 0 {
		return nil, "", nil
	}
	return ids, ids[len(ids)-1], nil
}
