package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// maxBackoff caps the wait between retries after failures (it never goes
// below the poll interval).
const maxBackoff = 60 * time.Second

// unregisterTimeout bounds the goodbye sent after a stop signal.
const unregisterTimeout = 5 * time.Second

// fatalError ends the program with status 1: retrying cannot help.
type fatalError struct{ msg string }

func (e *fatalError) Error() string { return e.msg }

func fatalf(format string, args ...any) error {
	return &fatalError{msg: fmt.Sprintf(format, args...)}
}

// job is a build handed out by poll (§4.2). OTP is the one-time password
// the v2 VM trades for its token; it is a secret, never printed.
type job struct {
	ID          string  `json:"id"`
	Platform    string  `json:"platform"`
	SourceURL   string  `json:"source_url"`
	CertsURL    *string `json:"certs_url"`
	BaseImageID string  `json:"baseImageId"`
	OTP         string  `json:"otp"`
}

// errRegisteredAgain means the poll made the worker register again; the loop
// polls again at once.
var errRegisteredAgain = errors.New("registered again")

// worker is the state of one mock worker. Only Run's goroutine touches it.
type worker struct {
	cfg   Config
	api   *api
	out   *console
	rng   *rand.Rand
	now   func() time.Time
	id    string // the controller's id for us, once registered
	token string // v2: the current worker token (a secret, never printed)
	done  int    // builds handled (finished or abandoned)
}

// Run registers with the controller, then polls and fakes builds until ctx
// ends (it unregisters then and returns nil), --once or --max-builds is
// reached (same), or a fatal error happens: the controller refuses the API
// key or the registration. Network errors and 5xx answers are retried with
// backoff. Every event is printed to out.
func Run(ctx context.Context, cfg Config, out io.Writer) error {
	w := newWorker(cfg, out)
	defer w.api.hc.CloseIdleConnections()
	return w.run(ctx)
}

// withDefaults fills the zero values of a Config built by hand (tests,
// other programs) with the command line's defaults. Wait is left alone: its
// zero is a setting (interval polling), not a missing value.
func (cfg Config) withDefaults() Config {
	if cfg.URL == "" {
		cfg.URL = "http://localhost:3000"
	}
	if cfg.APIKey == "" {
		cfg.APIKey, cfg.APIKeyDefaulted = DefaultAPIKey, true
	}
	if cfg.Name == "" {
		cfg.Name = "mock-worker"
	}
	if len(cfg.Platforms) == 0 {
		cfg.Platforms = []string{"ios", "android"}
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.PollInterval, 5*time.Second)
	def(&cfg.HeartbeatInterval, 10*time.Second)
	def(&cfg.BuildTime, 3*time.Second)
	def(&cfg.VMStatusInterval, 2*time.Second)
	def(&cfg.VMReadyTimeout, 300*time.Second)
	if cfg.Protocol == "" {
		cfg.Protocol = ProtocolV1
	}
	if cfg.ResultSize <= 0 {
		cfg.ResultSize = 1 << 20
	}
	if cfg.LogBatch <= 0 {
		cfg.LogBatch = 10
	}
	return cfg
}

func newWorker(cfg Config, out io.Writer) *worker {
	cfg = cfg.withDefaults()
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	con := &console{w: out, now: now, quiet: cfg.Quiet, verbose: cfg.Verbose}
	return &worker{
		cfg: cfg,
		api: &api{base: strings.TrimRight(cfg.URL, "/"), key: cfg.APIKey, hc: hc, log: con},
		out: con,
		rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		now: now,
	}
}

func (w *worker) run(ctx context.Context) error {
	if w.cfg.APIKeyDefaulted {
		w.out.Warnf("no --api-key or CONTROLLER_API_KEY given; using the insecure development key %q", DefaultAPIKey)
	}
	polling := fmt.Sprintf("long-poll %s", w.cfg.Wait)
	if w.cfg.Wait == 0 {
		polling = fmt.Sprintf("polling every %s", w.cfg.PollInterval)
	}
	proto := ""
	if w.v2() {
		proto = ", protocol v2"
	}
	w.out.Infof("mock worker %q starting: controller %s, platforms %s, %s%s", w.cfg.Name, w.cfg.URL,
		strings.Join(w.cfg.Platforms, ","), polling, proto)
	st, err := loadState(w.cfg.StateFile)
	if err != nil {
		w.out.Warnf("ignoring unreadable state file: %v", err)
	}
	w.id = st.WorkerID
	if err := w.registerWithRetry(ctx); err != nil {
		if ctx.Err() != nil {
			w.out.Infof("stopped before registering")
			return nil
		}
		return err
	}
	err = w.loop(ctx)
	w.unregister(ctx)
	return err
}

// v2 says whether the worker speaks the newer generation's protocol.
func (w *worker) v2() bool { return w.cfg.Protocol == ProtocolV2 }

// loop polls and builds until ctx ends, the build budget is spent, or a
// fatal error.
func (w *worker) loop(ctx context.Context) error {
	failures := 0
	announced := false
	for ctx.Err() == nil {
		asked := w.now()
		j, err := w.nextJob(ctx)
		if err != nil {
			switch {
			case ctx.Err() != nil:
				return nil
			case isFatal(err):
				return err
			case errors.Is(err, errRegisteredAgain):
				failures = 0
				continue
			}
			failures++
			d := w.backoff(failures)
			w.out.Warnf("poll failed (%s); retrying in %s", describe(err), d)
			announced = false
			if !sleep(ctx, d) {
				return nil
			}
			continue
		}
		if failures > 0 {
			w.out.Infof("controller reachable again")
			failures = 0
		}
		if j == nil {
			if !announced {
				w.out.Infof("waiting for work…")
				announced = true
			}
			if w.held(w.now().Sub(asked)) {
				continue // the controller held the poll until its wait ended: ask again at once
			}
			if !sleep(ctx, w.cfg.PollInterval) {
				return nil
			}
			continue
		}
		announced = false
		if w.v2() {
			w.buildV2(ctx, j)
		} else {
			w.build(ctx, j)
		}
		w.done++
		if ctx.Err() != nil {
			return nil
		}
		if w.cfg.Once || (w.cfg.MaxBuilds > 0 && w.done >= w.cfg.MaxBuilds) {
			w.out.Infof("handled %d build(s); exiting", w.done)
			return nil
		}
	}
	return nil
}

// nextJob polls once in the worker's protocol. A nil job means no work;
// errRegisteredAgain that the worker registered again; a *fatalError ends
// the worker.
func (w *worker) nextJob(ctx context.Context) (*job, error) {
	if w.v2() {
		return w.pollV2(ctx)
	}
	j, err := w.poll(ctx)
	if err == nil || ctx.Err() != nil {
		return j, err
	}
	switch status := statusOf(err); {
	case status == http.StatusNotFound:
		w.out.Warnf("the controller no longer knows this worker (%s); registering again", describe(err))
		if err := w.registerWithRetry(ctx); err != nil {
			return nil, err
		}
		return nil, errRegisteredAgain
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return nil, fatalf("the controller refused the API key on poll (%s); check --api-key / CONTROLLER_API_KEY", describe(err))
	}
	return nil, err
}

// held says whether an empty poll answer that arrived after took was held
// by the controller (a long-poll that waited out its wait), so the next poll
// can go at once. An empty answer that came back early (an older controller
// that ignores ?wait=, one holding --max-waiters polls already, one shutting
// down) is followed by the poll interval instead, so the worker never spins.
func (w *worker) held(took time.Duration) bool {
	return w.cfg.Wait > 0 && took >= w.cfg.Wait/2
}

// waitQuery is the long-poll parameter of a poll ("wait=30"), or "" when
// the worker polls by interval.
func (w *worker) waitQuery() string {
	if w.cfg.Wait <= 0 {
		return ""
	}
	return "wait=" + strconv.Itoa(int(w.cfg.Wait/time.Second))
}

// pollTimeout bounds one poll: the controller may hold it for the wait.
func (w *worker) pollTimeout() time.Duration { return requestTimeout + w.cfg.Wait }

// backoff is the wait after the n-th failure in a row: the poll interval,
// doubled per failure, capped at maxBackoff (or the poll interval if larger).
func (w *worker) backoff(n int) time.Duration {
	d := w.cfg.PollInterval
	limit := max(maxBackoff, w.cfg.PollInterval)
	for i := 1; i < n && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

type registerRequest struct {
	Name         string       `json:"name"`
	Capabilities capabilities `json:"capabilities"`
	ID           string       `json:"id,omitempty"`
}

type capabilities struct {
	Platforms           []string `json:"platforms"`
	MaxConcurrentBuilds int      `json:"maxConcurrentBuilds"`
	Mock                bool     `json:"mock"`
}

// registerWithRetry registers, retrying network errors and 5xx answers with
// backoff. A 401/403 or any other refusal is fatal.
func (w *worker) registerWithRetry(ctx context.Context) error {
	for failures := 0; ; {
		err := w.register(ctx)
		if err == nil || ctx.Err() != nil || isFatal(err) {
			return err
		}
		failures++
		d := w.backoff(failures)
		w.out.Warnf("cannot register with %s (%s); retrying in %s", w.cfg.URL, describe(err), d)
		if !sleep(ctx, d) {
			return ctx.Err()
		}
	}
}

// register sends POST /api/workers/register with the saved id, if any, and
// saves the id it gets back.
func (w *worker) register(ctx context.Context) error {
	req := registerRequest{
		Name:         w.cfg.Name,
		Capabilities: capabilities{Platforms: w.cfg.Platforms, MaxConcurrentBuilds: 1, Mock: true},
		ID:           w.id,
	}
	var resp struct {
		ID             string          `json:"id"`
		Status         string          `json:"status"`
		AccessToken    json.RawMessage `json:"access_token"`     // v2; raw, so v1 ignores its type
		TokenExpiresAt any             `json:"token_expires_at"` // v2
	}
	status, err := w.api.call(ctx, http.MethodPost, "/api/workers/register", auth{}, req, &resp)
	switch s := statusOf(err); {
	case s == http.StatusUnauthorized || s == http.StatusForbidden:
		return fatalf("the controller refused the API key (%s); pass the controller's key with --api-key or CONTROLLER_API_KEY", describe(err))
	case s >= 400 && s < 500:
		return fatalf("registration refused: %v", err)
	case err != nil:
		return err
	case status != http.StatusOK || resp.ID == "":
		return fatalf("unexpected registration answer (HTTP %d, id %q)", status, resp.ID)
	}
	var token string
	if w.v2() && (json.Unmarshal(resp.AccessToken, &token) != nil || token == "") {
		return fatalf("the registration answer has no access_token string: this controller does not speak protocol v2 (try --protocol v1)")
	}
	verb := "registered"
	if resp.Status == "re-registered" {
		verb = "re-registered"
	}
	if w.id != "" && w.id != resp.ID {
		w.out.Infof("the controller did not know id %s; it gave a new one", shortID(w.id))
	}
	w.id = resp.ID
	w.out.Infof("%s as %s (id %s)", verb, w.cfg.Name, shortID(w.id))
	if w.v2() {
		w.token = token
		w.out.Debugf("got a worker token (expires %v)", orUnknown(resp.TokenExpiresAt))
	}
	w.saveState()
	return nil
}

// poll asks for a job once, long-polling when --wait is set; nil means no
// work.
func (w *worker) poll(ctx context.Context) (*job, error) {
	var resp struct {
		Job *job `json:"job"`
	}
	path := "/api/workers/poll?worker_id=" + url.QueryEscape(w.id)
	if q := w.waitQuery(); q != "" {
		path += "&" + q
	}
	status, err := w.api.callWithin(ctx, w.pollTimeout(), http.MethodGet, path, auth{}, nil, &resp)
	if err != nil {
		return nil, err
	}
	if status == http.StatusNoContent || resp.Job == nil {
		return nil, nil
	}
	j := resp.Job
	if j.ID == "" || j.SourceURL == "" {
		return nil, fmt.Errorf("poll answered a job without id or source_url")
	}
	return j, nil
}

// unregister tells the controller we are going away (any held build is
// requeued). It runs after ctx may have ended, so it has its own deadline.
func (w *worker) unregister(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), unregisterTimeout)
	defer cancel()
	path, id := "/api/workers/"+w.id+"/unregister", auth{}
	if w.v2() { // the newer host names itself by its token, next to the key
		if w.token == "" {
			w.out.Warnf("no worker token; not unregistering")
			return
		}
		path, id = "/api/workers/unregister", auth{workerToken: w.token}
	}
	var resp struct {
		Reassigned int `json:"builds_reassigned"`
	}
	_, err := w.api.call(ctx, http.MethodPost, path, id, nil, &resp)
	if err != nil {
		w.out.Warnf("unregister failed: %s", describe(err))
		return
	}
	if resp.Reassigned > 0 {
		w.out.Infof("unregistered; the controller requeued the unfinished build")
		return
	}
	w.out.Infof("unregistered")
}

// sleep waits for d or the end of ctx; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// isFatal says whether err is a *fatalError.
func isFatal(err error) bool {
	var fe *fatalError
	return errors.As(err, &fe)
}
