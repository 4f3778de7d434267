package main

// The host's side of protocol v2, as the newer macOS worker speaks it: it
// polls with its worker token, boots a VM per build (here: a goroutine, see
// vm.go), waits for the VM through the public vm-status endpoint, then
// heartbeats the build with the host token the controller hands out there,
// and finally reports the outcome with the API key (the VM uploads the
// artifact itself). Tokens and one-time passwords are never printed.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime/multipart"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"
)

// pollV2 asks for a job once with only the worker token, long-polling when
// --wait is set. A new token in the answer replaces (and is saved over) the
// current one. A 401 registers again with the same id, a 404 with a new one.
func (w *worker) pollV2(ctx context.Context) (*job, error) {
	var resp struct {
		Job         *job    `json:"job"`
		AccessToken *string `json:"access_token"`
	}
	path := "/api/workers/poll"
	if q := w.waitQuery(); q != "" {
		path += "?" + q
	}
	status, err := w.api.callWithin(ctx, w.pollTimeout(), http.MethodGet, path,
		auth{noKey: true, workerToken: w.token}, nil, &resp)
	switch statusOf(err) {
	case http.StatusUnauthorized:
		w.out.Warnf("the controller refused the worker token (%s); registering again", describe(err))
		return nil, w.registerAgain(ctx, false)
	case http.StatusNotFound:
		w.out.Warnf("the controller no longer knows this worker (%s); registering again with a new id", describe(err))
		return nil, w.registerAgain(ctx, true)
	}
	if err != nil || status == http.StatusNoContent {
		return nil, err
	}
	if t := resp.AccessToken; t != nil && *t != "" && *t != w.token {
		w.token = *t
		w.saveState()
		w.out.Debugf("the controller rotated the worker token")
	}
	j := resp.Job
	if j == nil {
		return nil, nil
	}
	if j.ID == "" || j.SourceURL == "" || j.OTP == "" {
		return nil, errors.New("poll answered a job without id, source_url or otp")
	}
	return j, nil
}

// registerAgain forgets the worker token (and, with newID, the worker id, so
// the controller hands out a new one) and registers. It returns
// errRegisteredAgain, or what ended the registration.
func (w *worker) registerAgain(ctx context.Context, newID bool) error {
	w.token = ""
	if newID {
		w.id = ""
	}
	w.saveState()
	if err := w.registerWithRetry(ctx); err != nil {
		return err
	}
	return errRegisteredAgain
}

// hostBuild is the host's view of one v2 build. Only the worker's goroutine
// touches it; the VM shares nothing with it but progress and its result.
type hostBuild struct {
	w        *worker
	job      *job
	progress *atomic.Int32 // the VM's progress in percent; 0 = not known yet
	vmDone   chan vmResult // the VM's outcome; nil once received
	result   *vmResult     // the VM's outcome, once received
	stopVM   context.CancelFunc
}

// buildV2 runs one job: it starts the VM, supervises it and reports the
// outcome. Like build, it never returns an error: everything is printed and
// the worker goes back to polling. A stop signal abandons the build without
// a report (the unregister requeues it).
func (w *worker) buildV2(ctx context.Context, j *job) {
	w.out.Infof("got build %s (%s)", shortID(j.ID), j.Platform)
	m := newVM(w, j, w.rng.Float64() >= w.cfg.FailRate)
	vmCtx, stopVM := context.WithCancel(ctx)
	h := &hostBuild{w: w, job: j, progress: &m.progress, vmDone: make(chan vmResult, 1), stopVM: stopVM}
	go func(done chan<- vmResult) { done <- m.run(vmCtx) }(h.vmDone)

	res, err := h.supervise(ctx)
	h.shutDownVM()
	switch {
	case ctx.Err() != nil:
		w.out.Infof("stopping: abandoning build %s", shortID(j.ID))
	case err != nil:
		w.out.Errorf("build %s aborted: %s", shortID(j.ID), err)
		h.report(ctx, false, err.Error())
	default:
		h.report(ctx, res.failure == "", res.failure)
	}
}

// shutDownVM stops the VM if it still runs and waits until it has.
func (h *hostBuild) shutDownVM() {
	h.stopVM()
	if h.vmDone != nil {
		<-h.vmDone
		h.vmDone = nil
	}
}

// supervise waits for the VM to be ready, then heartbeats until it is done.
// It returns the VM's outcome, or what made the host abort the build.
func (h *hostBuild) supervise(ctx context.Context) (vmResult, error) {
	token, err := h.waitReady(ctx)
	if err != nil {
		return vmResult{}, err
	}
	if token == "" { // the VM gave up before it was ready
		return *h.result, nil
	}
	h.w.out.Infof("VM ready for build %s", shortID(h.job.ID))
	return h.monitor(ctx, token)
}

// receive records the VM's outcome.
func (h *hostBuild) receive(r vmResult) {
	h.vmDone, h.result = nil, &r
}

// waitReady checks vm-status at once, then every --vm-status-interval, until
// the VM is ready (it returns the host token), the timeout passes, or a 404
// (errors). When the VM ends before it signalled ready, it returns "" at once.
func (h *hostBuild) waitReady(ctx context.Context) (string, error) {
	deadline := h.w.now().Add(h.w.cfg.VMReadyTimeout)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case r := <-h.vmDone:
			h.receive(r)
			if !r.ready {
				return "", nil
			}
			continue // the controller must still say so: keep asking
		case <-timer.C:
		}
		token, err := h.vmStatus(ctx)
		if err != nil || token != "" {
			return token, err
		}
		if !h.w.now().Before(deadline) {
			return "", fmt.Errorf("VM did not signal ready within %s", h.w.cfg.VMReadyTimeout)
		}
		timer.Reset(h.w.cfg.VMStatusInterval)
	}
}

// vmStatus asks GET /api/builds/:id/vm-status once, with no credentials. It
// returns the host token once the VM is ready, "" while it is not (or after
// an answer worth asking again), and an error for what ends the build.
func (h *hostBuild) vmStatus(ctx context.Context) (string, error) {
	var st struct {
		VMReady *bool  `json:"vm_ready"`
		VMToken string `json:"vm_token"`
	}
	_, err := h.w.api.call(ctx, http.MethodGet, buildPath(h.job.ID, "/vm-status"), auth{noKey: true}, nil, &st)
	switch {
	case ctx.Err() != nil:
		return "", ctx.Err()
	case statusOf(err) == http.StatusNotFound:
		return "", fmt.Errorf("VM status check failed (%s)", describe(err))
	case err != nil:
		h.w.out.Warnf("VM status check failed (%s); asking again", describe(err))
	case st.VMReady == nil:
		h.w.out.Warnf("VM status answer without vm_ready; asking again")
	case *st.VMReady && st.VMToken == "":
		return "", errors.New("VM token missing from the controller's VM status")
	case *st.VMReady:
		return st.VMToken, nil
	}
	return "", nil
}

// monitor heartbeats the build at once and then every heartbeat interval
// until the VM is done. Any heartbeat failure aborts the build.
func (h *hostBuild) monitor(ctx context.Context, token string) (vmResult, error) {
	ticker := time.NewTicker(h.w.cfg.HeartbeatInterval)
	defer ticker.Stop()
	for {
		if err := h.heartbeat(ctx, token); err != nil {
			return vmResult{}, err
		}
		if h.result != nil {
			return *h.result, nil
		}
		select {
		case <-ctx.Done():
			return vmResult{}, ctx.Err()
		case r := <-h.vmDone:
			h.receive(r)
			return r, nil
		case <-ticker.C:
		}
	}
}

// heartbeat sends POST /api/builds/:id/heartbeat?worker_id= with the host
// token as X-VM-Token and the VM's progress, if known. It needs exactly 200.
func (h *hostBuild) heartbeat(ctx context.Context, token string) error {
	body := map[string]any{}
	if p := h.progress.Load(); p > 0 {
		body["progress"] = p
	}
	status, err := h.w.api.call(ctx, http.MethodPost,
		buildPath(h.job.ID, "/heartbeat")+"?worker_id="+url.QueryEscape(h.w.id),
		auth{noKey: true, vmToken: token}, body, nil)
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		return fmt.Errorf("heartbeat failed (%s)", describe(err))
	case status != http.StatusOK:
		return fmt.Errorf("heartbeat failed (HTTP %d)", status)
	}
	if p, ok := body["progress"]; ok {
		h.w.out.Debugf("heartbeat sent (progress %d%%)", p)
	} else {
		h.w.out.Debugf("heartbeat sent (progress not known yet)")
	}
	return nil
}

// report posts the outcome to POST /api/workers/upload with the API key:
// success=true and no file (the VM uploaded the artifact), or success=false
// with error_message. A refused success report is followed by one failure
// report, like the Swift host.
func (h *hostBuild) report(ctx context.Context, success bool, failure string) {
	status, err := h.upload(ctx, success, failure)
	switch {
	case err == nil && success:
		h.w.out.Infof("reported build %s done → %s", shortID(h.job.ID), status)
	case err == nil:
		h.w.out.Infof("reported failure %q → %s", failure, status)
	case ctx.Err() != nil:
	case success:
		h.w.out.Warnf("reporting the build done failed (%s); reporting it as failed instead", describe(err))
		h.report(ctx, false, "Result report failed: "+describe(err))
	default:
		h.w.out.Warnf("the failure report failed (%s)", describe(err))
	}
}

// upload sends one file-less POST /api/workers/upload and returns the
// answer's status field.
func (h *hostBuild) upload(ctx context.Context, success bool, failure string) (string, error) {
	form := uploadForm{BuildID: h.job.ID, WorkerID: h.w.id, Success: success}
	if !success {
		form.ErrorMessage = failure
	}
	raw, err := h.w.api.postForm(ctx, "/api/workers/upload", auth{},
		func(mw *multipart.Writer) error { return writeUpload(mw, form) })
	if err != nil {
		return "", err
	}
	var out struct {
		Status string `json:"status"`
	}
	if json.Unmarshal(raw, &out) != nil || out.Status == "" {
		out.Status = "ok"
	}
	return out.Status, nil
}

// orUnknown is v, or "unknown" when absent or empty.
func orUnknown(v any) any {
	if v == nil || v == "" {
		return "unknown"
	}
	return v
}
