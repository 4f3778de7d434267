package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// runTransfer measures large files: it submits one build whose source is
// cfg.Size bytes, has a worker take it and upload a cfg.Size result, then
// downloads the result, hashing it. Bodies are generated and consumed as
// streams; the tool holds one chunk. Figures: transfer_submit_mb_s,
// transfer_upload_mb_s, transfer_download_mb_s (decimal MB/s over the whole
// request), transfer_sha256_mismatch, and with --pid the RSS of the
// controller during each transfer (transfer_<step>_rss_*) and overall
// (transfer_rss_*), transfer_errors.
func runTransfer(ctx context.Context, cfg Config) (r Result) {
	r = Result{Scenario: "transfer"}
	c := newClient(cfg, 4)
	defer c.close()
	defer r.finish(c)
	overall := startRSS(cfg.PID, cfg.RSSInterval, readRSS)
	defer func() { r.addRSS("rss", overall.Stop()) }()

	// 1. Submit.
	progress(cfg, "transfer: submitting a %s source", formatSize(cfg.Size))
	sub, err := newMultipartStream([][2]string{{"platform", cfg.Platform}},
		filePart{Field: "source", FileName: "project.zip", Size: cfg.Size}, newNoise(11), streamChunk)
	if err != nil {
		r.fail("building the submit body: %v", err)
		return r
	}
	rss := startRSS(cfg.PID, cfg.RSSInterval, readRSS)
	t0 := time.Now()
	ans, err := c.submit(ctx, c.stream, sub, sub.Length, sub.ContentType)
	took := time.Since(t0)
	sub.Close()
	sub.Wait()
	rssStep := rss.Stop()
	if err != nil {
		r.addRSS("submit_rss", rssStep)
		if h := sizeHint(err, "source", "--max-source-size", "500MiB", cfg.Size); h != "" {
			r.hint(h)
		}
		r.fail("submit of the %s source failed: %v", formatSize(cfg.Size), err)
		return r
	}
	r.add("submit_mb_s", mbPerSecond(cfg.Size, took), "MB/s")
	r.addRSS("submit_rss", rssStep)
	r.note("submit: %s in %s", formatSize(cfg.Size), took.Round(time.Millisecond))

	// 2. A worker takes the build.
	wid, err := c.register(ctx, "loadgen-transfer", []string{cfg.Platform})
	if err != nil {
		r.fail("register: %v", err)
		return r
	}
	if err := takeBuild(ctx, c, cfg, &r, wid, ans.ID); err != nil {
		r.fail("%v", err)
		return r
	}

	// 3. Upload the result.
	progress(cfg, "transfer: uploading a %s result", formatSize(cfg.Size))
	up, err := newMultipartStream([][2]string{{"build_id", ans.ID}, {"worker_id", wid}, {"success", "true"}},
		filePart{Field: "result", FileName: "build.apk", Size: cfg.Size}, newNoise(12), streamChunk)
	if err != nil {
		r.fail("building the upload body: %v", err)
		return r
	}
	rss = startRSS(cfg.PID, cfg.RSSInterval, readRSS)
	t0 = time.Now()
	status, err := c.upload(ctx, c.stream, up, up.Length, up.ContentType)
	took = time.Since(t0)
	up.Close()
	gen := up.Wait()
	rssStep = rss.Stop()
	if err != nil {
		r.addRSS("upload_rss", rssStep)
		if h := sizeHint(err, "result", "--max-result-size", "1GiB", cfg.Size); h != "" {
			r.hint(h)
		}
		r.fail("upload of the %s result failed: %v", formatSize(cfg.Size), err)
		return r
	}
	r.add("upload_mb_s", mbPerSecond(cfg.Size, took), "MB/s")
	r.addRSS("upload_rss", rssStep)
	if status != "success" {
		r.fail("upload answered status %q, want success", status)
		return r
	}
	r.note("upload: %s in %s, sha256 %s", formatSize(cfg.Size), took.Round(time.Millisecond), hex.EncodeToString(gen.SHA256))

	// 4. Download it.
	progress(cfg, "transfer: downloading the result")
	rss = startRSS(cfg.PID, cfg.RSSInterval, readRSS)
	t0 = time.Now()
	n, sum, err := c.download(ctx, ans.ID)
	took = time.Since(t0)
	rssStep = rss.Stop()
	if err != nil {
		r.addRSS("download_rss", rssStep)
		r.fail("download failed: %v", err)
		return r
	}
	r.add("download_mb_s", mbPerSecond(n, took), "MB/s")
	r.addRSS("download_rss", rssStep)
	r.note("download: %s in %s", formatSize(n), took.Round(time.Millisecond))
	mismatch := 0
	if n != cfg.Size || !bytes.Equal(sum, gen.SHA256) {
		mismatch = 1
		r.fail("downloaded %d bytes with sha256 %x; uploaded %d bytes with sha256 %x", n, sum, cfg.Size, gen.SHA256)
	}
	r.add("sha256_mismatch", float64(mismatch), "count")
	return r
}

// takeBuild polls as worker wid until it holds build id. Other builds it is
// handed (a queue that was not empty) are completed with a small result.
func takeBuild(ctx context.Context, c *client, cfg Config, r *Result, wid, id string) error {
	deadline := time.Now().Add(cfg.Timeout)
	others := 0
	for time.Now().Before(deadline) {
		j, err := c.poll(ctx, wid)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			pause(ctx, 100*time.Millisecond)
			continue
		}
		switch {
		case j == nil:
			pause(ctx, 20*time.Millisecond)
		case j.ID == id:
			if others > 0 {
				r.note("completed %d builds of an earlier run that were still queued", others)
			}
			return nil
		default:
			others++
			if err := c.completeSmall(ctx, j.ID, wid, zipLike(1<<10)); err != nil {
				return fmt.Errorf("completing queued build %s: %w", j.ID, err)
			}
		}
	}
	return fmt.Errorf("the worker was not handed build %s within %s", id, cfg.Timeout)
}

// download streams a build's result into a hash and returns its length and
// SHA-256.
func (c *client) download(ctx context.Context, id string) (int64, []byte, error) {
	req := c.newRequest(ctx, http.MethodGet, "/api/builds/"+id+"/download", nil, "")
	req.Header.Set("X-API-Key", c.key)
	what := "GET /api/builds/:id/download"
	resp, err := c.stream.Do(req)
	if err != nil {
		c.record(ctx, what, err)
		return 0, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		err := &statusError{Code: resp.StatusCode, Body: strings.TrimSpace(string(b))}
		c.record(ctx, what, err)
		return 0, nil, err
	}
	h := sha256.New()
	n, err := io.CopyBuffer(h, resp.Body, make([]byte, streamChunk))
	if err == nil && resp.ContentLength >= 0 && n != resp.ContentLength {
		err = fmt.Errorf("read %d bytes of a declared %d", n, resp.ContentLength)
	}
	if err != nil {
		c.record(ctx, what, err)
		return n, nil, err
	}
	return n, h.Sum(nil), nil
}

// sizeHint explains a failed transfer that looks like the controller
// refusing the size: a 413, or a connection broken while sending (the
// controller answers 413 and closes the connection without reading on).
// Other failures give "".
func sizeHint(err error, what, flagName, defaultLimit string, size int64) string {
	var se *statusError
	if errors.As(err, &se) {
		if se.Code != http.StatusRequestEntityTooLarge {
			return ""
		}
		return fmt.Sprintf("the controller refused the %s %s (413): its limit is %s (default %s); "+
			"start it with %s %s or more", formatSize(size), what, flagName, defaultLimit, flagName, roundUpGiB(size))
	}
	return fmt.Sprintf("the connection broke while sending the %s %s; if the controller refused its size (413), "+
		"start it with %s %s or more (default %s)", formatSize(size), what, flagName, roundUpGiB(size), defaultLimit)
}

// roundUpGiB is the smallest whole GiB size at least n, as a flag value.
func roundUpGiB(n int64) string { return formatSize((n + 1<<30 - 1) &^ (1<<30 - 1)) }
