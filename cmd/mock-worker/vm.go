package main

// The build VM of protocol v2, played by a goroutine: it trades the job's
// one-time password for a VM token, fetches the signing certs (iOS), tells
// the controller it is ready, downloads the source, posts the build log and
// uploads the artifact, all with only X-VM-Token. Secrets (the one-time
// password, the VM token, the p12 password) are never printed.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"mime/multipart"
	"net/http"
	"os"
	"sync/atomic"
	"time"
)

// vm is one fake build VM. Only its own goroutine touches it, except
// progress, which the host reads for its heartbeats.
type vm struct {
	api      *api
	out      *console
	cfg      Config
	now      func() time.Time
	job      job  // a copy: the host keeps its own
	success  bool // decided by the host from --fail-rate before the boot
	progress atomic.Int32

	token string // the VM token, once authenticated (a secret)
	ready bool   // vm-ready was accepted
}

// vmResult is what the host learns when the VM ends (the real host reads it
// from files in the VM's shared folder).
type vmResult struct {
	failure string // "": the artifact is uploaded; else the build error
	ready   bool   // the VM had signalled ready
}

// errLogged is a build failure whose error lines the VM has already posted.
type errLogged struct{ msg string }

func (e *errLogged) Error() string { return e.msg }

func newVM(w *worker, j *job, success bool) *vm {
	return &vm{api: w.api, out: w.out, cfg: w.cfg, now: w.now, job: *j, success: success}
}

func (m *vm) path(suffix string) string { return buildPath(m.job.ID, suffix) }

// withToken is the VM's only credential.
func (m *vm) withToken() auth { return auth{noKey: true, vmToken: m.token} }

// run boots and builds; it returns the outcome for the host.
func (m *vm) run(ctx context.Context) vmResult {
	err := m.boot(ctx)
	if err == nil {
		err = m.build(ctx)
	}
	if err != nil {
		return m.fail(ctx, err)
	}
	m.progress.Store(100)
	return vmResult{ready: true}
}

// fail reports a failed VM: an error log line (once it has a token, unless
// the build's own error lines went out already) and the result for the host.
func (m *vm) fail(ctx context.Context, err error) vmResult {
	res := vmResult{failure: err.Error(), ready: m.ready}
	if ctx.Err() != nil { // stopped by the host: the outcome no longer matters
		return res
	}
	m.out.Errorf("vm: %s", err)
	var logged *errLogged
	if m.token != "" && !errors.As(err, &logged) {
		m.postLogs(ctx, []logLine{{Level: "error", Message: err.Error()}})
	}
	return res
}

// boot authenticates, fetches the certs (iOS) and signals ready.
func (m *vm) boot(ctx context.Context) error {
	if err := m.authenticate(ctx); err != nil {
		return err
	}
	if m.job.Platform == "ios" {
		if err := m.fetchCerts(ctx); err != nil {
			return err
		}
	}
	status, err := m.api.call(ctx, http.MethodPost, m.path("/vm-ready"), m.withToken(), nil, nil)
	if err == nil && status != http.StatusOK {
		err = fmt.Errorf("HTTP %d", status)
	}
	if err != nil {
		return fmt.Errorf("failed to signal VM ready (%s)", describe(err))
	}
	m.ready = true
	m.out.Infof("vm: signalled ready")
	return nil
}

// authenticate trades the one-time password for the VM token, with no
// credentials.
func (m *vm) authenticate(ctx context.Context) error {
	var resp struct {
		VMToken string `json:"vm_token"`
	}
	status, err := m.api.call(ctx, http.MethodPost, m.path("/authenticate"), auth{noKey: true},
		map[string]string{"otp": m.job.OTP}, &resp)
	switch {
	case err != nil:
		return fmt.Errorf("authentication failed (%s)", describe(err))
	case status != http.StatusOK:
		return fmt.Errorf("authentication failed (HTTP %d)", status)
	case resp.VMToken == "":
		return errors.New("no VM token in the authentication answer")
	}
	m.token = resp.VMToken
	m.out.Infof("vm: authenticated")
	return nil
}

// fetchCerts fetches certs-secure like the VM bootstrap: a 404 (no certs)
// and an empty list of provisioning profiles end the build, as every field
// must decode.
func (m *vm) fetchCerts(ctx context.Context) error {
	var c certsBundle
	_, err := m.api.call(ctx, http.MethodGet, m.path("/certs-secure"), m.withToken(), nil, &c)
	switch {
	case statusOf(err) == http.StatusNotFound:
		return errors.New("no signing certificates provided for iOS build")
	case err != nil:
		return fmt.Errorf("certificate fetch failed (%s)", describe(err))
	}
	p12, err := c.validate()
	if err != nil {
		return err
	}
	if len(*c.ProvisioningProfiles) == 0 {
		return errors.New("no provisioning profiles provided for iOS build")
	}
	for i, p := range *c.ProvisioningProfiles {
		if b, _ := base64.StdEncoding.DecodeString(p); len(b) == 0 {
			return fmt.Errorf("provisioning profile %d is empty", i+1)
		}
	}
	m.out.Infof("vm: fetched signing certs: p12 %s, %d provisioning profile(s)", humanSize(int64(p12)), len(*c.ProvisioningProfiles))
	return nil
}

// build downloads the source, plays the log script and uploads the
// artifact (or ends with the script's failure).
func (m *vm) build(ctx context.Context) error {
	m.progress.Store(10)
	path, size, err := m.api.download(ctx, m.path("/source"), m.withToken(), m.cfg.TempDir)
	if err != nil {
		return fmt.Errorf("source download failed (%s)", describe(err))
	}
	defer os.Remove(path)
	m.out.Infof("vm: downloaded source %s", humanSize(size))
	m.progress.Store(20)

	script, failure := buildScript(m.job.Platform, size, m.job.Platform == "ios", m.success, m.cfg.ResultSize)
	m.out.Infof("vm: building %s for %s…", m.job.Platform, m.cfg.BuildTime)
	if err := m.play(ctx, script); err != nil {
		return err
	}
	if failure != "" {
		return &errLogged{msg: failure}
	}
	return m.uploadArtifact(ctx)
}

// play spreads the script over the build time and posts it in batches of
// --log-batch; progress goes from 20 to 80 %.
func (m *vm) play(ctx context.Context, script []logLine) error {
	start, n := m.now(), len(script)
	lineAt := func(i int) time.Duration { // when line i (0-based) is due
		return time.Duration(int64(m.cfg.BuildTime) * int64(i+1) / int64(n))
	}
	timer := time.NewTimer(lineAt(0))
	defer timer.Stop()
	var batch []logLine
	for i := 0; i < n; {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
		}
		batch = append(batch, script[i])
		i++
		if len(batch) >= m.cfg.LogBatch || i == n {
			m.postLogs(ctx, batch)
			batch = nil
		}
		m.progress.Store(int32(20 + 60*i/n))
		if i < n {
			timer.Reset(max(0, lineAt(i)-m.now().Sub(start)))
		}
	}
	return ctx.Err()
}

// postLogs posts one batch. Like the VM's curl calls, a failure is not an
// error: the lines are dropped and the build goes on.
func (m *vm) postLogs(ctx context.Context, lines []logLine) {
	_, err := m.api.call(ctx, http.MethodPost, m.path("/logs"), m.withToken(), map[string]any{"logs": lines}, nil)
	if err != nil && ctx.Err() == nil {
		m.out.Warnf("vm: posting %d log line(s) failed (%s); dropping them", len(lines), describe(err))
	}
}

// uploadArtifact streams the fake result as the multipart file artifact;
// it needs exactly 200 with {"success": true}.
func (m *vm) uploadArtifact(ctx context.Context) error {
	m.progress.Store(80)
	name := artifactName(m.job.Platform)
	counter := &countingReader{r: resultReader(m.job.ID, m.cfg.ResultSize)}
	raw, err := m.api.postForm(ctx, m.path("/artifact"), m.withToken(),
		func(mw *multipart.Writer) error { return writeFile(mw, "artifact", name, counter) })
	if err != nil {
		return fmt.Errorf("artifact upload failed (%s)", describe(err))
	}
	var out struct {
		Success bool `json:"success"`
	}
	if json.Unmarshal(raw, &out) != nil || !out.Success {
		return errors.New("artifact upload failed (the answer is not {\"success\": true})")
	}
	m.out.Infof("vm: uploaded artifact %s (%s)", name, humanSize(counter.n))
	return nil
}

// artifactName is the artifact's file name, as the VM's build produces it.
func artifactName(platform string) string {
	if platform == "ios" {
		return "app.ipa"
	}
	return "app-release.apk"
}
