package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// client talks to the controller for one scenario and counts what failed.
// Ordinary requests share one keep-alive Transport and have a timeout; the
// transfer client shares the Transport and has none.
type client struct {
	bases     []string      // the controller, or the nodes used in turn
	next      atomic.Uint64 // the node of the next request
	sticky    bool          // --spread worker: a request with an affinity (onNode) goes to that node
	key       string
	hc        *http.Client // ordinary requests (Timeout = cfg.Timeout)
	stream    *http.Client // transfers (no timeout)
	transport *http.Transport

	errs    atomic.Int64
	mu      sync.Mutex
	samples []string // the first few failures
}

const maxErrorSamples = 5

// newClient returns a client keeping up to conns idle connections to the
// controller, so that conns goroutines never reconnect.
func newClient(cfg Config, conns int) *client {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        conns + 8,
		MaxIdleConnsPerHost: conns + 8,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
		WriteBufferSize:     64 << 10,
		ReadBufferSize:      64 << 10,
	}
	return &client{
		bases: cfg.bases(), sticky: cfg.Spread == "worker", key: cfg.APIKey, transport: tr,
		hc:     &http.Client{Transport: tr, Timeout: cfg.Timeout},
		stream: &http.Client{Transport: tr},
	}
}

// close drops the idle connections.
func (c *client) close() { c.transport.CloseIdleConnections() }

// statusError is a non-2xx answer.
type statusError struct {
	Code int
	Body string
}

func (e *statusError) Error() string { return fmt.Sprintf("HTTP %d %s", e.Code, e.Body) }

// record counts a failed request (unless its context was cancelled, which
// is the tool stopping, not the controller failing) and keeps a sample.
func (c *client) record(ctx context.Context, what string, err error) {
	var se *statusError
	if ctx.Err() != nil && !errors.As(err, &se) {
		return
	}
	c.errs.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.samples) < maxErrorSamples {
		c.samples = append(c.samples, what+": "+err.Error())
	}
}

func (c *client) errorReport() (int64, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.errs.Load(), append([]string(nil), c.samples...)
}

// do sends req with the API key and reads the whole answer: a 2xx body is
// decoded into out (or discarded when out is nil); anything else is a
// *statusError. Every failure is counted.
func (c *client) do(hc *http.Client, req *http.Request, out any) error {
	req.Header.Set("X-API-Key", c.key)
	what := req.Method + " " + req.URL.Path
	resp, err := hc.Do(req)
	if err != nil {
		c.record(req.Context(), what, err)
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		_, _ = io.Copy(io.Discard, resp.Body)
		err := &statusError{Code: resp.StatusCode, Body: strings.TrimSpace(string(b))}
		c.record(req.Context(), what, err)
		return err
	}
	if out != nil {
		err = json.NewDecoder(resp.Body).Decode(out)
	}
	if _, cerr := io.Copy(io.Discard, resp.Body); err == nil {
		err = cerr
	}
	if err != nil {
		err = fmt.Errorf("reading the answer: %w", err)
		c.record(req.Context(), what, err)
	}
	return err
}

func (c *client) newRequest(ctx context.Context, method, path string, body io.Reader, contentType string) *http.Request {
	base := c.bases[0]
	if n, ok := ctx.Value(affinity{}).(int); ok && c.sticky {
		base = c.bases[n%len(c.bases)]
	} else if len(c.bases) > 1 {
		base = c.bases[c.next.Add(1)%uint64(len(c.bases))]
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, body)
	if err != nil {
		panic(err) // only a malformed base URL, which parseConfig refuses
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return req
}

// affinity is the context key of onNode.
type affinity struct{}

// onNode marks ctx's requests as one client's (the n-th): with --spread
// worker they all go to the same node.
func onNode(ctx context.Context, n int) context.Context { return context.WithValue(ctx, affinity{}, n) }

// register registers a worker taking the given platforms (an empty list
// takes nothing) and returns its id.
func (c *client) register(ctx context.Context, name string, platforms []string) (string, error) {
	if platforms == nil {
		platforms = []string{}
	}
	body, _ := json.Marshal(map[string]any{"name": name, "capabilities": map[string]any{"platforms": platforms}})
	var out struct {
		ID string `json:"id"`
	}
	req := c.newRequest(ctx, http.MethodPost, "/api/workers/register", bytes.NewReader(body), "application/json")
	if err := c.do(c.hc, req, &out); err != nil {
		return "", err
	}
	if out.ID == "" {
		err := errors.New("register answered without an id")
		c.record(ctx, "POST /api/workers/register", err)
		return "", err
	}
	return out.ID, nil
}

// registerMany registers n workers in parallel (at most 8 at a time).
func (c *client) registerMany(ctx context.Context, prefix string, n int, platforms []string) ([]string, error) {
	ids := make([]string, n)
	errs := make([]error, n)
	forEach(n, 8, func(i int) {
		ids[i], errs[i] = c.register(ctx, fmt.Sprintf("%s-%d", prefix, i+1), platforms)
	})
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("registering %d workers: %w", n, err)
	}
	return ids, nil
}

// job is a poll answer's job.
type job struct {
	ID       string `json:"id"`
	Platform string `json:"platform"`
}

// pollPath is the poll path of a worker.
func pollPath(workerID string) string { return "/api/workers/poll?worker_id=" + workerID }

// poll asks for work; nil means {"job": null}.
func (c *client) poll(ctx context.Context, workerID string) (*job, error) {
	var out struct {
		Job *job `json:"job"`
	}
	if err := c.do(c.hc, c.newRequest(ctx, http.MethodGet, pollPath(workerID), nil, ""), &out); err != nil {
		return nil, err
	}
	return out.Job, nil
}

// submitAnswer is the 200 of submit.
type submitAnswer struct {
	ID          string `json:"id"`
	Status      string `json:"status"`
	AccessToken string `json:"access_token"`
}

// submit posts a prepared multipart submit body.
func (c *client) submit(ctx context.Context, hc *http.Client, body io.Reader, length int64, contentType string) (submitAnswer, error) {
	req := c.newRequest(ctx, http.MethodPost, "/api/builds/submit", body, contentType)
	req.ContentLength = length
	var out submitAnswer
	err := c.do(hc, req, &out)
	if err == nil && out.ID == "" {
		err = errors.New("submit answered without an id")
		c.record(ctx, "POST /api/builds/submit", err)
	}
	return out, err
}

// upload posts a prepared multipart upload body and returns the answer's
// status ("success" or "failed").
func (c *client) upload(ctx context.Context, hc *http.Client, body io.Reader, length int64, contentType string) (string, error) {
	req := c.newRequest(ctx, http.MethodPost, "/api/workers/upload", body, contentType)
	req.ContentLength = length
	var out struct {
		Status string `json:"status"`
	}
	err := c.do(hc, req, &out)
	return out.Status, err
}

// buildStatus returns a build's status.
func (c *client) buildStatus(ctx context.Context, id string) (string, error) {
	var out struct {
		Status string `json:"status"`
	}
	err := c.do(c.hc, c.newRequest(ctx, http.MethodGet, "/api/builds/"+id+"/status", nil, ""), &out)
	return out.Status, err
}

// postLogs posts a prepared log batch as the worker and returns how many
// lines were stored.
func (c *client) postLogs(ctx context.Context, buildID, workerID string, body []byte) (int, error) {
	req := c.newRequest(ctx, http.MethodPost, "/api/builds/"+buildID+"/logs", bytes.NewReader(body), "application/json")
	req.Header.Set("X-Worker-Id", workerID)
	var out struct {
		Count int `json:"count"`
	}
	err := c.do(c.hc, req, &out)
	return out.Count, err
}

// readLogs fetches a build's whole log (the raw JSON answer).
func (c *client) readLogs(ctx context.Context, buildID string) ([]byte, error) {
	var raw json.RawMessage
	err := c.do(c.hc, c.newRequest(ctx, http.MethodGet, "/api/builds/"+buildID+"/logs", nil, ""), &raw)
	return raw, err
}

// countLogs counts the entries of a GET logs answer.
func countLogs(raw []byte) (int, error) {
	var out struct {
		Logs []json.RawMessage `json:"logs"`
	}
	err := json.Unmarshal(raw, &out)
	return len(out.Logs), err
}

// completeSmall uploads success with a small result for a build the worker
// holds.
func (c *client) completeSmall(ctx context.Context, buildID, workerID string, result []byte) error {
	body, ct := smallMultipart([][2]string{{"build_id", buildID}, {"worker_id", workerID}, {"success", "true"}},
		"result", "build.bin", result)
	_, err := c.upload(ctx, c.hc, bytes.NewReader(body), int64(len(body)), ct)
	return err
}

// pollWait long-polls as workerID through hc (whose timeout must exceed the
// wait); nil means {"job": null}.
func (c *client) pollWait(ctx context.Context, hc *http.Client, workerID string, waitSeconds int) (*job, error) {
	var out struct {
		Job *job `json:"job"`
	}
	path := pollPath(workerID) + "&wait=" + strconv.Itoa(waitSeconds)
	if err := c.do(hc, c.newRequest(ctx, http.MethodGet, path, nil, ""), &out); err != nil {
		return nil, err
	}
	return out.Job, nil
}

// gauge reads one unlabelled metric from GET /metrics (with the key). A
// failure is returned, not counted: /metrics is how the tool watches the
// controller, not what it measures.
func (c *client) gauge(ctx context.Context, name string) (float64, error) {
	req := c.newRequest(ctx, http.MethodGet, "/metrics", nil, "")
	req.Header.Set("X-API-Key", c.key)
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, &statusError{Code: resp.StatusCode, Body: strings.TrimSpace(string(body[:min(len(body), 200)]))}
	}
	v, ok := parseGauge(body, name)
	if !ok {
		return 0, fmt.Errorf("/metrics has no %s", name)
	}
	return v, nil
}

// parseGauge finds the sample of an unlabelled metric in the Prometheus
// text format: the line "<name> <value>".
func parseGauge(text []byte, name string) (float64, bool) {
	for line := range strings.Lines(string(text)) {
		rest, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), name+" ")
		if !ok {
			continue
		}
		fields := strings.Fields(rest) // the value, maybe a timestamp
		if len(fields) == 0 {
			return 0, false
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		return v, err == nil
	}
	return 0, false
}

// waitGauge reads the gauge every 50 ms until it is at least want, for at
// most limit; it returns the last value read and why it stopped early.
func (c *client) waitGauge(ctx context.Context, name string, want float64, limit time.Duration) (float64, error) {
	return c.waitGaugeUntil(ctx, name, func(v float64) bool { return v >= want }, fmt.Sprintf("below %g", want), limit)
}

// waitGaugeAtMost is waitGauge until the gauge is at most want.
func (c *client) waitGaugeAtMost(ctx context.Context, name string, want float64, limit time.Duration) (float64, error) {
	return c.waitGaugeUntil(ctx, name, func(v float64) bool { return v <= want }, fmt.Sprintf("above %g", want), limit)
}

func (c *client) waitGaugeUntil(ctx context.Context, name string, ok func(float64) bool, short string, limit time.Duration) (float64, error) {
	deadline := time.Now().Add(limit)
	for {
		v, err := c.gauge(ctx, name)
		switch {
		case err != nil:
			return v, err
		case ok(v):
			return v, nil
		case time.Now().After(deadline):
			return v, fmt.Errorf("%s stayed at %g, %s, for %s", name, v, short, limit)
		case ctx.Err() != nil:
			return v, ctx.Err()
		}
		pause(ctx, 50*time.Millisecond)
	}
}
