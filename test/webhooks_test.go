package test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/cmd/app"
)

const hookSecret = "webhook-secret-0123456789"

// hookEvent is one event a receiver accepted (answered 204).
type hookEvent struct {
	ID, Event, Build string
	Body             map[string]any
}

// Receiver behaviours.
const (
	hookUp   = iota // accept (204)
	hookDown        // cut the connection without an answer
	hookHold        // answer nothing until the sender goes away
)

// hookReceiver is a webhook receiver on 127.0.0.1 (httptest) that checks
// every request as docs/API.md §3.5 says a receiver should.
type hookReceiver struct {
	*httptest.Server
	mu       sync.Mutex
	mode     int
	attempts []string // X-Delivery-Id of every request, whatever its answer
	accepted []hookEvent
	problems []string
}

var sentAtRe = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`)

func newHookReceiver(t *testing.T, mode int) *hookReceiver {
	t.Helper()
	rc := &hookReceiver{mode: mode}
	rc.Server = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *hookReceiver) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	rc.mu.Lock()
	mode := rc.mode
	rc.attempts = append(rc.attempts, r.Header.Get("X-Delivery-Id"))
	problem := func(format string, args ...any) { rc.problems = append(rc.problems, fmt.Sprintf(format, args...)) }
	// Verify as a receiver must: the HMAC-SHA256 of the exact bytes read.
	mac := hmac.New(sha256.New, []byte(hookSecret))
	mac.Write(body)
	if want := "sha256=" + hex.EncodeToString(mac.Sum(nil)); !hmac.Equal([]byte(want), []byte(r.Header.Get("X-Signature-256"))) {
		problem("bad signature %q", r.Header.Get("X-Signature-256"))
	}
	var ev struct {
		Event      string         `json:"event"`
		DeliveryID string         `json:"delivery_id"`
		SentAt     string         `json:"sent_at"`
		Build      map[string]any `json:"build"`
	}
	var all map[string]any
	if err != nil || json.Unmarshal(body, &ev) != nil || json.Unmarshal(body, &all) != nil {
		problem("unreadable body %q", body)
	}
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" ||
		r.Header.Get("X-Event") != ev.Event || r.Header.Get("X-Delivery-Id") != ev.DeliveryID ||
		!sentAtRe.MatchString(ev.SentAt) || len(all) != 4 || len(ev.Build) != 8 {
		problem("bad request: %s %v %s", r.Method, r.Header, body)
	}
	if mode == hookUp {
		id, _ := ev.Build["id"].(string)
		rc.accepted = append(rc.accepted, hookEvent{ID: ev.DeliveryID, Event: ev.Event, Build: id, Body: all})
	}
	rc.mu.Unlock()
	switch mode {
	case hookUp:
		w.WriteHeader(http.StatusNoContent)
	case hookDown:
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
	case hookHold:
		<-r.Context().Done()
	}
}

func (rc *hookReceiver) setMode(mode int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.mode = mode
}

// events returns the accepted events of a build, in arrival order.
func (rc *hookReceiver) events(build string) []hookEvent {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []hookEvent
	for _, e := range rc.accepted {
		if e.Build == build {
			out = append(out, e)
		}
	}
	return out
}

func (rc *hookReceiver) attemptCount() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.attempts)
}

func (rc *hookReceiver) requireNoProblem(t *testing.T) {
	t.Helper()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	require.Empty(t, rc.problems)
}

// withWebhooks configures the receiver's URL and the secret.
func withWebhooks(rc *hookReceiver) Option {
	return WithConfig(func(cfg *app.Config) {
		cfg.WebhookURLs = []string{rc.URL + "/hooks/controller"}
		cfg.WebhookSecret = hookSecret
	})
}

// waitEvents waits until the build's accepted events number at least n.
func (rc *hookReceiver) waitEvents(t *testing.T, build string, n int) []hookEvent {
	t.Helper()
	eventually(t, 15*time.Second, func() bool { return len(rc.events(build)) >= n },
		fmt.Sprintf("%d event(s) of build %s", n, build))
	return rc.events(build)
}

// TestWebhookEvents drives each kind of event through the real tree and
// checks what the receiver gets: the event, a signed body, and the build as
// GET status shows it.
func TestWebhookEvents(t *testing.T) {
	t.Parallel()
	rc := newHookReceiver(t, hookUp)
	c := Start(t, WithManualClock(), withWebhooks(rc), timeouts(300*time.Second, time.Hour, 3))

	// Completed.
	done := c.Submit("ios", []byte("a"), nil)
	w1 := c.Register("w1")
	require.Equal(t, done.ID, c.Poll(w1)["id"])
	require.Equal(t, http.StatusOK, c.Upload(done.ID, w1, true, []byte("ipa"), "").Status)
	ev := rc.waitEvents(t, done.ID, 1)
	require.Equal(t, "build.completed", ev[0].Event)
	require.Equal(t, c.Status(done.ID), ev[0].Body["build"], "the status object of GET status")

	// Failed by its worker.
	failed := c.Submit("ios", []byte("b"), nil)
	require.Equal(t, failed.ID, c.Poll(w1)["id"])
	require.Equal(t, http.StatusOK, c.Upload(failed.ID, w1, false, nil, "xcodebuild exited 65").Status)
	ev = rc.waitEvents(t, failed.ID, 1)
	require.Equal(t, "build.failed", ev[0].Event)
	require.Equal(t, "xcodebuild exited 65", ev[0].Body["build"].(map[string]any)["error_message"])
	require.Equal(t, c.Status(failed.ID), ev[0].Body["build"])

	// Cancelled: a failure, with its message.
	cancelled := c.Submit("android", []byte("c"), nil)
	require.Equal(t, http.StatusOK, c.PostJSON("/api/builds/"+cancelled.ID+"/cancel", nil, c.KeyH()).Status)
	ev = rc.waitEvents(t, cancelled.ID, 1)
	require.Equal(t, "build.failed", ev[0].Event)
	require.Equal(t, "Build cancelled by user", ev[0].Body["build"].(map[string]any)["error_message"])
	require.Equal(t, c.Status(cancelled.ID), ev[0].Body["build"])

	// Requeued three ways: the worker unregisters, times out, abandons.
	requeued := c.Submit("ios", []byte("d"), nil)
	w2 := c.Register("w2")
	require.Equal(t, requeued.ID, c.Poll(w2)["id"])
	require.Equal(t, http.StatusOK, c.PostJSON("/api/workers/"+w2+"/unregister", nil, c.KeyH()).Status)
	rc.waitEvents(t, requeued.ID, 1)
	w3 := c.Register("w3")
	require.Equal(t, requeued.ID, c.Poll(w3)["id"])
	c.Clock.Advance(301 * time.Second)
	c.checkNow()
	rc.waitEvents(t, requeued.ID, 2)
	w4 := c.Register("w4")
	require.Equal(t, requeued.ID, c.Poll(w4)["id"])
	r := c.PostJSON("/api/workers/abandon", map[string]string{"build_id": requeued.ID, "worker_id": w4, "reason": "no VM"}, c.KeyH())
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	ev = rc.waitEvents(t, requeued.ID, 3)
	ids := map[string]bool{}
	for _, e := range ev {
		require.Equal(t, "build.requeued", e.Event)
		b := e.Body["build"].(map[string]any)
		require.Equal(t, "pending", b["status"])
		require.Nil(t, b["worker_id"])
		require.Nil(t, b["started_at"])
		ids[e.ID] = true
	}
	require.Len(t, ids, 3, "one delivery id per event")
	require.Equal(t, c.Status(requeued.ID), ev[2].Body["build"])

	rc.requireNoProblem(t)
	eventually(t, 10*time.Second, func() bool {
		return value(t, scrape(t, c, c.KeyH()), "controller_webhook_deliveries_total", map[string]string{"outcome": "delivered"}) == 6
	}, "six deliveries counted")
	m := scrape(t, c, c.KeyH())
	require.Zero(t, value(t, m, "controller_webhook_deliveries_total", map[string]string{"outcome": "retried"}))
	require.Zero(t, value(t, m, "controller_webhook_deliveries_total", map[string]string{"outcome": "gave_up"}))
}

// TestWebhookReceiverDownThenUp cuts every connection while events happen,
// then lets the receiver up: it gets every event (a duplicate would be
// allowed, a loss not).
func TestWebhookReceiverDownThenUp(t *testing.T) {
	t.Parallel()
	rc := newHookReceiver(t, hookDown)
	c := Start(t, WithManualClock(), withWebhooks(rc))
	var builds []string
	for i := range 4 {
		b := c.Submit("ios", []byte{byte(i)}, nil)
		require.Equal(t, http.StatusOK, c.PostJSON("/api/builds/"+b.ID+"/cancel", nil, c.KeyH()).Status)
		builds = append(builds, b.ID)
	}
	// Each event tried once and failed; the manual clock holds the retries.
	eventually(t, 15*time.Second, func() bool {
		_, retried, _ := c.App.Webhooks.DeliveryCounts()
		return retried == 4
	}, "four failed attempts recorded")
	require.Equal(t, 4, rc.attemptCount())
	for _, b := range builds {
		require.Empty(t, rc.events(b))
	}

	rc.setMode(hookUp)
	c.Clock.Advance(time.Hour) // past every scheduled retry (the first waits 1 s)
	for _, b := range builds {
		ev := rc.waitEvents(t, b, 1)
		require.Equal(t, "build.failed", ev[0].Event)
	}
	rc.requireNoProblem(t)
}

// TestWebhookDeliveredAfterKill kills the controller binary with SIGKILL
// while it is delivering an event (committed, not yet delivered): the next
// process sends it, and the receiver counts it only after the restart.
func TestWebhookDeliveredAfterKill(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	rc := newHookReceiver(t, hookHold)
	dir := t.TempDir()
	flags := []string{"--webhook-url", rc.URL + "/hook", "--webhook-secret", hookSecret}
	p := StartProcess(t, dir, flags...)
	cl := p.Client(t)
	b := cl.Submit("ios", []byte("source"), nil)
	require.Equal(t, http.StatusOK, cl.PostJSON("/api/builds/"+b.ID+"/cancel", nil, cl.KeyH()).Status)
	eventually(t, 15*time.Second, func() bool { return rc.attemptCount() == 1 }, "the delivery under way")
	p.Kill()
	cl.Stop()
	require.Empty(t, rc.events(b.ID))

	rc.setMode(hookUp) // counts from here on: after the kill
	p = StartProcess(t, dir, flags...)
	ev := rc.waitEvents(t, b.ID, 1)
	require.Equal(t, "build.failed", ev[0].Event)
	rc.mu.Lock()
	first := rc.attempts[0]
	rc.mu.Unlock()
	require.Equal(t, first, ev[0].ID, "the same event, sent again")
	rc.requireNoProblem(t)
	p.Kill()
}
