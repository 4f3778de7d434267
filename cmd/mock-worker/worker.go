package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
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

// job is a build handed out by poll (§4.2).
type job struct {
	ID          string  `json:"id"`
	Platform    string  `json:"platform"`
	SourceURL   string  `json:"source_url"`
	CertsURL    *string `json:"certs_url"`
	BaseImageID string  `json:"baseImageId"`
}

// worker is the state of one mock worker. Only Run's goroutine touches it.
type worker struct {
	cfg  Config
	api  *api
	out  *console
	rng  *rand.Rand
	now  func() time.Time
	id   string // the controller's id for us, once registered
	done int    // builds handled (finished or abandoned)
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
// other programs) with the command line's defaults.
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
	w.out.Infof("mock worker %q starting: controller %s, platforms %s", w.cfg.Name, w.cfg.URL, strings.Join(w.cfg.Platforms, ","))
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

// loop polls and builds until ctx ends, the build budget is spent, or a
// fatal error.
func (w *worker) loop(ctx context.Context) error {
	failures := 0
	announced := false
	for ctx.Err() == nil {
		j, err := w.poll(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			switch status := statusOf(err); {
			case status == http.StatusNotFound:
				w.out.Warnf("the controller no longer knows this worker (%s); registering again", describe(err))
				failures = 0
				if err := w.registerWithRetry(ctx); err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return err
				}
				continue
			case status == http.StatusUnauthorized || status == http.StatusForbidden:
				return fatalf("the controller refused the API key on poll (%s); check --api-key / CONTROLLER_API_KEY", describe(err))
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
			if !sleep(ctx, w.cfg.PollInterval) {
				return nil
			}
			continue
		}
		announced = false
		w.build(ctx, j)
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
		ID     string `json:"id"`
		Status string `json:"status"`
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
	verb := "registered"
	if resp.Status == "re-registered" {
		verb = "re-registered"
	}
	if w.id != "" && w.id != resp.ID {
		w.out.Infof("the controller did not know id %s; it gave a new one", shortID(w.id))
	}
	w.id = resp.ID
	w.out.Infof("%s as %s (id %s)", verb, w.cfg.Name, shortID(w.id))
	if err := saveState(w.cfg.StateFile, state{WorkerID: w.id, Name: w.cfg.Name, Controller: w.cfg.URL}); err != nil {
		w.out.Warnf("cannot save the worker id to %s: %v", w.cfg.StateFile, err)
	}
	return nil
}

// poll asks for a job once; nil means no work.
func (w *worker) poll(ctx context.Context) (*job, error) {
	var resp struct {
		Job *job `json:"job"`
	}
	status, err := w.api.call(ctx, http.MethodGet, "/api/workers/poll?worker_id="+w.id, auth{}, nil, &resp)
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
	var resp struct {
		Reassigned int `json:"builds_reassigned"`
	}
	_, err := w.api.call(ctx, http.MethodPost, "/api/workers/"+w.id+"/unregister", auth{}, nil, &resp)
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
