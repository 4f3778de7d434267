package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"time"
)

// fetchAttempts is how often a source or certs download is tried when the
// network or the controller (5xx) fails.
const fetchAttempts = 3

// maxPendingLogs bounds the log lines kept while the controller is not
// accepting them.
const maxPendingLogs = 1000

// cpuSnapshotFailureLimit mirrors the host monitor: it stops after five
// failures in a row.
const cpuSnapshotFailureLimit = 5

// abandonedError means the controller no longer considers the build ours
// (403: cancelled, timed out or reassigned; 404: gone). The build is dropped
// without an upload.
type abandonedError struct{ cause error }

func (e *abandonedError) Error() string { return "build abandoned: " + e.cause.Error() }
func (e *abandonedError) Unwrap() error { return e.cause }

// build is one fake build in progress. Only the worker's goroutine touches it.
type build struct {
	w           *worker
	job         *job
	start       time.Time
	stage       string
	hasCerts    bool
	sourceSize  int64
	heartbeats  int
	cpuFailures int
	progress    int
	pending     []logLine // lines not yet accepted by the controller
}

// logLine is one build log entry as POST /api/builds/:id/logs takes it.
type logLine struct {
	Level   string `json:"level"`
	Message string `json:"message"`
	stage   string
}

// build runs one job to its end: a result or failure upload, or an
// abandonment (403, or ctx ended). It never returns an error: everything is
// reported on the console and the worker goes back to polling.
func (w *worker) build(ctx context.Context, j *job) {
	w.out.Infof("got build %s (%s)", shortID(j.ID), j.Platform)
	b := &build{w: w, job: j, start: w.now(), stage: "starting"}
	err := b.run(ctx)
	var ab *abandonedError
	switch {
	case ctx.Err() != nil:
		w.out.Infof("stopping: abandoning build %s", shortID(j.ID))
	case errors.As(err, &ab):
		w.out.Warnf("build %s was cancelled or reassigned (%s); abandoning it", shortID(j.ID), describe(ab.cause))
	case err != nil:
		w.out.Errorf("build %s: %v", shortID(j.ID), err)
	}
}

func (b *build) run(ctx context.Context) error {
	path, err := b.downloadSource(ctx)
	if path != "" {
		defer os.Remove(path)
	}
	if err != nil {
		if err := b.fatal(ctx, err); err != nil {
			return err
		}
		b.w.out.Errorf("source download failed: %s", describe(err))
		return b.report(ctx, false, "Failed to download source: "+describe(err))
	}
	b.w.out.Infof("downloaded source %s", humanSize(b.sourceSize))

	if b.job.CertsURL != nil {
		if err := b.retry(ctx, "certs download", b.fetchCerts); err != nil {
			if err := b.fatal(ctx, err); err != nil {
				return err
			}
			b.w.out.Errorf("certs download failed: %s", describe(err))
			return b.report(ctx, false, "Failed to fetch signing certificates: "+describe(err))
		}
		b.hasCerts = true
	} else if b.job.Platform == "ios" {
		b.w.out.Infof("no signing certs for this iOS build (fine for the mock: building unsigned)")
	}

	success := b.w.rng.Float64() >= b.w.cfg.FailRate
	script, failure := buildScript(b.job.Platform, b.sourceSize, b.hasCerts, success, b.w.cfg.ResultSize)
	b.w.out.Infof("building %s for %s…", b.job.Platform, b.w.cfg.BuildTime)
	if err := b.simulate(ctx, script); err != nil {
		return err
	}
	return b.report(ctx, success, failure)
}

// fatal returns what ends the build at once for err: the context's error
// when stopping, an *abandonedError for a 403 or 404 Build not found, else
// nil (the caller reports a failure).
func (b *build) fatal(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var ab *abandonedError
	if errors.As(err, &ab) {
		return ab
	}
	var ae *apiError
	if errors.As(err, &ae) && (ae.Status == http.StatusForbidden ||
		(ae.Status == http.StatusNotFound && ae.Message == "Build not found")) {
		return &abandonedError{cause: err}
	}
	return nil
}

// check handles the outcome of a request made during the build: nil on
// success or on a failure worth ignoring (it is printed), else what ends the
// build (see fatal).
func (b *build) check(ctx context.Context, err error, what string) error {
	if err == nil {
		return nil
	}
	if err := b.fatal(ctx, err); err != nil {
		return err
	}
	b.w.out.Warnf("%s failed (%s); carrying on", what, describe(err))
	return nil
}

// retryable says whether a failed download is worth another try: transport
// errors, 429 and 5xx answers.
func retryable(err error) bool {
	s := statusOf(err)
	return s == 0 || s == http.StatusTooManyRequests || s >= 500
}

// retry runs fn up to fetchAttempts times while it fails with a retryable
// error, waiting with backoff in between.
func (b *build) retry(ctx context.Context, what string, fn func(context.Context) error) error {
	var err error
	for attempt := 1; ; attempt++ {
		err = fn(ctx)
		if err == nil || ctx.Err() != nil || b.fatal(ctx, err) != nil || !retryable(err) || attempt == fetchAttempts {
			return err
		}
		d := b.w.backoff(attempt)
		b.w.out.Warnf("%s failed (%s); retrying in %s", what, describe(err), d)
		if !sleep(ctx, d) {
			return ctx.Err()
		}
	}
}

// simulate plays the script over the build time: lines go out in batches of
// --log-batch, progress heartbeats at each quarter, and telemetry (a
// monitor_started, then a heartbeat and a keyless cpu_snapshot every
// heartbeat interval, the first at once).
func (b *build) simulate(ctx context.Context, script []logLine) error {
	if err := b.check(ctx, b.telemetry(ctx, false, "monitor_started", map[string]any{}), "telemetry"); err != nil {
		return err
	}
	if err := b.tick(ctx); err != nil {
		return err
	}
	ticker := time.NewTicker(b.w.cfg.HeartbeatInterval)
	defer ticker.Stop()
	n := len(script)
	lineAt := func(i int) time.Duration { // when line i (0-based) is due
		return time.Duration(int64(b.w.cfg.BuildTime) * int64(i+1) / int64(n))
	}
	next := time.NewTimer(lineAt(0))
	defer next.Stop()
	for i := 0; i < n; {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
			if err := b.tick(ctx); err != nil {
				return err
			}
		case <-next.C:
			line := script[i]
			i++
			b.stage = line.stage
			b.pending = append(b.pending, line)
			if len(b.pending) >= b.w.cfg.LogBatch || i == n {
				if err := b.flush(ctx); err != nil {
					return err
				}
			}
			if q := 100 * i / n / 25 * 25; q > b.progress {
				b.progress = q
				if err := b.reportProgress(ctx, q); err != nil {
					return err
				}
			}
			if i < n {
				next.Reset(max(0, lineAt(i)-b.w.now().Sub(b.start)))
			}
		}
	}
	if len(b.pending) > 0 {
		b.w.out.Warnf("dropping %d log line(s) the controller did not take", len(b.pending))
		b.pending = nil
	}
	return nil
}

// flush posts the pending lines as one batch. On a failure worth ignoring
// the lines are kept for the next batch, up to maxPendingLogs.
func (b *build) flush(ctx context.Context) error {
	if len(b.pending) == 0 {
		return nil
	}
	var resp struct {
		Count int `json:"count"`
	}
	_, err := b.w.api.call(ctx, http.MethodPost, b.buildPath("/logs"), auth{workerID: b.w.id},
		map[string]any{"logs": b.pending}, &resp)
	if err == nil {
		b.w.out.Debugf("posted %d log line(s) (%d stored)", len(b.pending), resp.Count)
		b.pending = nil
		return nil
	}
	if err := b.check(ctx, err, "posting logs"); err != nil {
		return err
	}
	if extra := len(b.pending) - maxPendingLogs; extra > 0 {
		b.pending = b.pending[extra:]
	}
	return nil
}

// reportProgress sends POST /api/builds/:id/heartbeat?worker_id= with the
// progress in percent.
func (b *build) reportProgress(ctx context.Context, percent int) error {
	_, err := b.w.api.call(ctx, http.MethodPost,
		b.buildPath("/heartbeat")+"?worker_id="+url.QueryEscape(b.w.id), auth{},
		map[string]any{"progress": percent}, nil)
	if err == nil {
		b.w.out.Debugf("progress %d%%", percent)
	}
	return b.check(ctx, err, "progress heartbeat")
}

// tick sends one VM heartbeat (with the API key) and one host CPU snapshot
// (without it, like the host monitor; it gives up after five failures).
func (b *build) tick(ctx context.Context) error {
	b.heartbeats++
	rng := b.w.rng
	cpu := math.Round((35+rng.Float64()*60)*10) / 10
	mem := 1800 + rng.IntN(4400)
	data := map[string]any{
		"heartbeat_count": b.heartbeats,
		"stage":           b.stage,
		"metrics": map[string]any{
			"cpu_percent":  cpu,
			"memory_mb":    mem,
			"disk_percent": math.Round((30+rng.Float64()*25)*10) / 10,
			"processes":    180 + rng.IntN(240),
		},
		"uptime_seconds": int(b.w.now().Sub(b.start).Seconds()),
	}
	if err := b.check(ctx, b.telemetry(ctx, false, "heartbeat", data), "telemetry heartbeat"); err != nil {
		return err
	}
	if b.cpuFailures >= cpuSnapshotFailureLimit {
		return nil
	}
	err := b.telemetry(ctx, true, "cpu_snapshot", map[string]any{"cpu_percent": cpu, "memory_mb": mem})
	if err == nil {
		b.cpuFailures = 0
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	b.cpuFailures++
	if b.cpuFailures == cpuSnapshotFailureLimit {
		b.w.out.Warnf("CPU snapshot failed %d times in a row (%s); no more for this build", b.cpuFailures, describe(err))
	} else {
		b.w.out.Debugf("CPU snapshot failed (%s)", describe(err))
	}
	return nil
}

type telemetryEvent struct {
	Type      string `json:"type"`
	Timestamp string `json:"timestamp"`
	Data      any    `json:"data"`
}

// telemetry posts one event to POST /api/builds/:id/telemetry with
// X-Worker-Id and X-Build-Id, and the API key unless keyless.
func (b *build) telemetry(ctx context.Context, keyless bool, typ string, data any) error {
	ev := telemetryEvent{Type: typ, Timestamp: b.w.now().UTC().Format("2006-01-02T15:04:05.000Z"), Data: data}
	_, err := b.w.api.call(ctx, http.MethodPost, b.buildPath("/telemetry"),
		auth{noKey: keyless, workerID: b.w.id, buildID: b.job.ID}, ev, nil)
	if err == nil {
		b.w.out.Debugf("telemetry %s sent (keyless: %t)", typ, keyless)
	}
	return err
}

// report uploads the outcome. A non-200 answer other than 403/409 (which
// mean the build is no longer ours) is followed by one success=false post,
// like the Swift worker.
func (b *build) report(ctx context.Context, success bool, failure string) error {
	status, sent, err := b.upload(ctx, success, failure)
	if err == nil {
		if success {
			b.w.out.Infof("uploaded result %s → %s", humanSize(sent), status)
		} else {
			b.w.out.Infof("reported failure %q → %s", failure, status)
		}
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if s := statusOf(err); s == http.StatusForbidden || s == http.StatusConflict {
		return &abandonedError{cause: err}
	}
	b.w.out.Warnf("upload failed (%s); reporting the build as failed instead", describe(err))
	msg := "Result upload failed: " + describe(err)
	status, _, err = b.upload(ctx, false, msg)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("the failure report failed too: %s", describe(err))
	}
	b.w.out.Infof("reported failure %q → %s", msg, status)
	return nil
}

// upload sends one POST /api/workers/upload, streaming the fake result on
// success. It returns the answer's status field and the result bytes sent.
func (b *build) upload(ctx context.Context, success bool, failure string) (string, int64, error) {
	form := uploadForm{BuildID: b.job.ID, WorkerID: b.w.id, Success: success}
	var counter *countingReader
	if success {
		counter = &countingReader{r: resultReader(b.job.ID, b.w.cfg.ResultSize)}
		form.File, form.FileName = counter, resultFileName(b.job.Platform)
	} else {
		form.ErrorMessage = failure
	}
	raw, err := b.w.api.postForm(ctx, "/api/workers/upload", auth{},
		func(mw *multipart.Writer) error { return writeUpload(mw, form) })
	if err != nil {
		return "", 0, err
	}
	var out struct {
		Status string `json:"status"`
	}
	_ = json.Unmarshal(raw, &out)
	if out.Status == "" {
		out.Status = "ok"
	}
	var sent int64
	if counter != nil {
		sent = counter.n
	}
	return out.Status, sent, nil
}
