package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Header names of the worker protocol.
const (
	headerAPIKey      = "X-API-Key"
	headerWorkerID    = "X-Worker-Id"
	headerBuildID     = "X-Build-Id"
	headerWorkerToken = "X-Worker-Token" // v2: the host's worker token
	headerVMToken     = "X-VM-Token"     // v2: the VM's token, or the host token on heartbeats
)

// requestTimeout bounds every small JSON request; transfers (source
// download, result upload) are bounded only by the context.
const requestTimeout = 30 * time.Second

// maxAnswer caps how much of a JSON answer is read.
const maxAnswer = 1 << 20

// apiError is a non-2xx answer from the controller.
type apiError struct {
	Method, Path string
	Status       int
	Message      string // the {"error": ...} message, else a snippet of the body
}

func (e *apiError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("%s %s: HTTP %d", e.Method, e.Path, e.Status)
	}
	return fmt.Sprintf("%s %s: HTTP %d %s", e.Method, e.Path, e.Status, e.Message)
}

// short is the status and message without the request, for log lines.
func (e *apiError) short() string {
	if e.Message == "" {
		return fmt.Sprintf("%d", e.Status)
	}
	return fmt.Sprintf("%d %s", e.Status, e.Message)
}

// statusOf is the HTTP status of an *apiError in err's chain, else 0.
func statusOf(err error) int {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

// describe is a one-line description of err for the console.
func describe(err error) string {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.short()
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

// resolveURL turns a URL from the controller into one to request. An
// absolute http(s) URL is used as is; a path is appended to the base URL
// (concatenated, like the Swift worker, so a base with a path prefix such as
// https://host/ci keeps it).
func resolveURL(base, ref string) (string, error) {
	if ref == "" {
		return "", errors.New("empty URL")
	}
	u, err := url.Parse(ref)
	if err != nil {
		return "", fmt.Errorf("bad URL %q: %w", ref, err)
	}
	if u.IsAbs() {
		if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
			return "", fmt.Errorf("unsupported URL %q", ref)
		}
		return ref, nil
	}
	if strings.HasPrefix(ref, "//") {
		return "", fmt.Errorf("unsupported URL %q", ref)
	}
	if !strings.HasPrefix(ref, "/") {
		ref = "/" + ref
	}
	return strings.TrimRight(base, "/") + ref, nil
}

// api sends the worker's requests to one controller.
type api struct {
	base string
	key  string
	hc   *http.Client
	log  *console
}

// auth says which identity headers a request carries. Token values are
// secrets: they go into headers only, never into the console.
type auth struct {
	noKey       bool   // leave out X-API-Key (keyless telemetry; v2 token requests)
	workerID    string // X-Worker-Id, if set
	buildID     string // X-Build-Id, if set
	workerToken string // X-Worker-Token, if set (v2)
	vmToken     string // X-VM-Token, if set (v2)
}

// newRequest builds a request for ref (a path or an absolute URL).
func (a *api) newRequest(ctx context.Context, method, ref string, body io.Reader, id auth) (*http.Request, error) {
	u, err := resolveURL(a.base, ref)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if !id.noKey {
		req.Header.Set(headerAPIKey, a.key)
	}
	if id.workerID != "" {
		req.Header.Set(headerWorkerID, id.workerID)
	}
	if id.buildID != "" {
		req.Header.Set(headerBuildID, id.buildID)
	}
	if id.workerToken != "" {
		req.Header.Set(headerWorkerToken, id.workerToken)
	}
	if id.vmToken != "" {
		req.Header.Set(headerVMToken, id.vmToken)
	}
	req.Header.Set("User-Agent", "expo-free-agent-mock-worker/1")
	return req, nil
}

// call sends in as JSON (nil: no body) and decodes a 2xx answer into out
// (nil: discarded), within requestTimeout. It returns the status; a non-2xx
// answer is an *apiError, a transport failure the client's error.
func (a *api) call(ctx context.Context, method, ref string, id auth, in, out any) (int, error) {
	return a.callWithin(ctx, requestTimeout, method, ref, id, in, out)
}

// callWithin is call with its own time limit: a long-poll is held by the
// controller for up to its wait, so it needs more than requestTimeout.
func (a *api) callWithin(ctx context.Context, limit time.Duration, method, ref string, id auth, in, out any) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, err
		}
		body = bytes.NewReader(b)
	}
	req, err := a.newRequest(ctx, method, ref, body, id)
	if err != nil {
		return 0, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := a.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	a.log.Debugf("%s %s → %d", method, req.URL.Path, resp.StatusCode)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, answerError(req, resp.StatusCode, raw)
	}
	if err != nil {
		return resp.StatusCode, err
	}
	if out != nil && resp.StatusCode != http.StatusNoContent {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: unreadable answer: %w", method, req.URL.Path, err)
		}
	}
	return resp.StatusCode, nil
}

// answerError reads the controller's {"error": "..."} body into an *apiError.
func answerError(req *http.Request, status int, raw []byte) *apiError {
	e := &apiError{Method: req.Method, Path: req.URL.Path, Status: status}
	var body struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(raw, &body) == nil && body.Error != "" {
		e.Message = body.Error
	} else if s := strings.TrimSpace(string(raw)); s != "" {
		if len(s) > 120 {
			s = s[:120] + "…"
		}
		e.Message = s
	}
	return e
}
