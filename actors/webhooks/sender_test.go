package webhooks

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/actors/clock"
	"github.com/expo-free-agent/controller/internal/testkit"
	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

// t0 is where every test's manual clock starts (2026-01-01T00:00:00Z).
var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

const secret = "receiver-secret-0123456789"

// hit is one request a receiver got.
type hit struct {
	header http.Header
	body   []byte
	signed bool // X-Signature-256 verified with the secret
}

// receiver is an httptest server on 127.0.0.1 that verifies every signature
// and answers as its current behaviour says.
type receiver struct {
	*httptest.Server
	mu     sync.Mutex
	hits   []hit
	answer func(w http.ResponseWriter, r *http.Request) // the current behaviour
	active int                                          // requests being answered
	most   int                                          // the most at once
}

func newReceiver(t *testing.T) *receiver {
	t.Helper()
	rc := &receiver{answer: ok}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write(body)
		want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
		rc.mu.Lock()
		rc.hits = append(rc.hits, hit{header: r.Header.Clone(), body: body,
			signed: hmac.Equal([]byte(want), []byte(r.Header.Get("X-Signature-256")))})
		answer := rc.answer
		rc.active++
		rc.most = max(rc.most, rc.active)
		rc.mu.Unlock()
		defer func() {
			rc.mu.Lock()
			rc.active--
			rc.mu.Unlock()
		}()
		answer(w, r)
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) set(answer func(w http.ResponseWriter, r *http.Request)) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.answer = answer
}

func (rc *receiver) got() []hit {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]hit(nil), rc.hits...)
}

func (rc *receiver) concurrency() (active, most int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.active, rc.most
}

func ok(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }

func status(code int) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(code) }
}

// hang answers nothing until the sender gives up on the request.
func hang(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() }

// hangUp closes the connection without an answer.
func hangUp(w http.ResponseWriter, _ *http.Request) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err == nil {
		conn.Close()
	}
}

// bundle is a sender on a real SQLite store, with a manual clock.
type bundle struct {
	st    *store.Store
	clock *clock.Manual
	snd   *Sender
	log   *testkit.LockedBuffer
	stop  func() // stops Serve and waits for it
}

// setup opens a store whose receivers are urls, and a sender on it with cfg
// (its secret set); start runs Serve until the test ends (or stop).
func setup(t *testing.T, urls []string, cfg Config) *bundle {
	t.Helper()
	b := prepare(t, urls, cfg)
	b.start(t)
	return b
}

// prepare is setup without starting the sender.
func prepare(t *testing.T, urls []string, cfg Config) *bundle {
	t.Helper()
	st, err := store.Open(t.Context(), testkit.DB(t, t.TempDir()))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, st.Close()) }) // after Serve stopped (last in, first out)
	_, err = st.SetWebhookURLs(t.Context(), urls)
	require.NoError(t, err)
	cfg.Secret = secret
	logs := &testkit.LockedBuffer{}
	clk := clock.NewManual(t0)
	b := &bundle{st: st, clock: clk, log: logs,
		snd: New(st, clk, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), cfg)}
	return b
}

// start runs Serve; stop (also at cleanup) cancels it and waits.
func (b *bundle) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.snd.Serve(ctx) }()
	var once sync.Once
	b.stop = func() {
		once.Do(func() {
			cancel()
			require.ErrorIs(t, <-done, context.Canceled)
		})
	}
	t.Cleanup(b.stop)
}

// event commits a cancelled build (its build.failed event) and kicks the
// sender, as cmd/app's store wrapper does after such a commit.
func (b *bundle) event(t *testing.T) string {
	t.Helper()
	id := uuid.NewString()
	now := b.clock.Now().UnixMilli()
	require.NoError(t, b.st.CreateBuild(t.Context(), store.NewBuild{ID: id, Platform: domain.PlatformIOS,
		SubmittedAt: now, SourcePath: "builds/" + id + ".zip", TokenHash: make([]byte, 32)}))
	_, err := b.st.CancelBuild(t.Context(), id, now)
	require.NoError(t, err)
	b.snd.Kick()
	return id
}

// outbox returns the rows left.
func (b *bundle) outbox(t *testing.T) []store.Delivery {
	t.Helper()
	due, _, err := b.st.DueDeliveries(t.Context(), 1<<62, 1000, nil)
	require.NoError(t, err)
	return due
}

// eventually polls cond until it holds, or fails the test after within.
var eventually = testkit.Eventually

func counts(s *Sender) [3]int64 {
	d, r, g := s.DeliveryCounts()
	return [3]int64{d, r, g}
}

var sentAt = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`)

func TestDeliver(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t)
	b := prepare(t, []string{rc.URL + "/hook"}, Config{})
	id := b.event(t)
	row := b.outbox(t) // read before the sender starts: delivered, the row is gone
	b.start(t)
	// The count follows the row's deletion: once it is seen, the row is gone
	// (waiting for the empty outbox instead raced the count).
	eventually(t, 10*time.Second, func() bool { return counts(b.snd) == [3]int64{1, 0, 0} }, "delivered and counted")
	require.Empty(t, b.outbox(t), "delivered and deleted")

	hits := rc.got()
	require.Len(t, hits, 1)
	h := hits[0]
	require.True(t, h.signed, "X-Signature-256 is the HMAC-SHA256 of the body")
	require.Equal(t, "application/json", h.header.Get("Content-Type"))
	require.Equal(t, "build.failed", h.header.Get("X-Event"))
	require.Len(t, row, 1)
	require.Equal(t, row[0].DeliveryID, h.header.Get("X-Delivery-Id"))

	var body map[string]any
	require.NoError(t, json.Unmarshal(h.body, &body))
	require.Len(t, body, 4, "event, delivery_id, sent_at, build: %s", h.body)
	require.Equal(t, "build.failed", body["event"])
	require.Equal(t, row[0].DeliveryID, body["delivery_id"])
	require.Regexp(t, sentAt, body["sent_at"])
	require.Equal(t, "2026-01-01T00:00:00.000Z", body["sent_at"], "the clock's time, UTC, in ms")
	ms := float64(t0.UnixMilli())
	require.Equal(t, map[string]any{"id": id, "status": "failed", "platform": "ios", "worker_id": nil,
		"submitted_at": ms, "started_at": nil, "completed_at": ms, "error_message": "Build cancelled by user"},
		body["build"])
	require.Equal(t, [3]int64{1, 0, 0}, counts(b.snd))

	t.Run("KickWakesAnIdleSender", func(t *testing.T) {
		// The outbox is empty and no attempt is scheduled: Serve waits for a
		// kick alone (the clock does not move).
		b.event(t)
		eventually(t, 10*time.Second, func() bool { return len(rc.got()) == 2 }, "the kicked event sent")
	})
}

func TestBodyFollowsTheStatusObject(t *testing.T) {
	t.Parallel()
	worker, started, completed := "w-1", int64(2), int64(3)
	msg := "stale message"
	d := store.Delivery{DeliveryID: "d", Event: store.EventCompleted, Build: domain.Build{ID: "b",
		Status: domain.StatusCompleted, Platform: domain.PlatformAndroid, WorkerID: &worker, SubmittedAt: 1,
		StartedAt: &started, CompletedAt: &completed, ErrorMessage: &msg}}
	body, err := Body(d, time.Date(2026, 2, 3, 4, 5, 6, 7_000_000, time.FixedZone("x", 3600)))
	require.NoError(t, err)
	require.JSONEq(t, `{"event":"build.completed","delivery_id":"d","sent_at":"2026-02-03T03:05:06.007Z",
		"build":{"id":"b","status":"completed","platform":"android","worker_id":"w-1","submitted_at":1,
		"started_at":2,"completed_at":3,"error_message":null}}`, string(body),
		"error_message only on a failed build, as GET status")
	require.True(t, strings.HasPrefix(string(body), `{"event":`))
}

// TestRetry fails the first attempt in each way a receiver can fail, checks
// what is recorded, then lets the next attempt through.
func TestRetry(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		answer  func(http.ResponseWriter, *http.Request)
		lastErr string
	}{
		{"ServerError", status(http.StatusInternalServerError), "HTTP 500"},
		{"NotFound", status(http.StatusNotFound), "HTTP 404"},
		{"Timeout", hang, "Client.Timeout exceeded"},
		{"ConnectionClosed", hangUp, "EOF"},
		{"Redirect", nil, "HTTP 302: redirects are not followed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rc := newReceiver(t)
			target := 0
			var targetMu sync.Mutex
			mux := http.NewServeMux()
			mux.HandleFunc("/elsewhere", func(w http.ResponseWriter, r *http.Request) {
				targetMu.Lock()
				target++
				targetMu.Unlock()
			})
			other := httptest.NewServer(mux)
			t.Cleanup(other.Close)
			answer := tc.answer
			if answer == nil {
				answer = func(w http.ResponseWriter, r *http.Request) {
					http.Redirect(w, r, other.URL+"/elsewhere", http.StatusFound)
				}
			}
			rc.set(answer)
			b := setup(t, []string{rc.URL}, Config{Timeout: 200 * time.Millisecond})
			b.event(t)
			eventually(t, 10*time.Second, func() bool { return counts(b.snd)[1] == 1 }, "one failed attempt")
			row := b.outbox(t)
			require.Len(t, row, 1, "kept for the next attempt")
			require.Equal(t, 1, row[0].Attempts)
			require.Contains(t, row[0].LastError, tc.lastErr)
			require.NotContains(t, row[0].LastError, rc.URL, "no URL in the error (it may hold a credential)")
			require.Equal(t, t0.Add(time.Second).UnixMilli(), row[0].NextAttemptAt, "the first wait is 1 s")

			rc.set(ok)
			b.clock.Advance(999 * time.Millisecond)
			require.Len(t, rc.got(), 1, "not before its time")
			b.clock.Advance(time.Millisecond)
			// The count follows the row's deletion (waiting for the empty
			// outbox instead raced the count).
			eventually(t, 10*time.Second, func() bool { return counts(b.snd) == [3]int64{1, 1, 0} }, "delivered on the retry")
			require.Empty(t, b.outbox(t))
			hits := rc.got()
			require.Len(t, hits, 2)
			require.Equal(t, hits[0].header.Get("X-Delivery-Id"), hits[1].header.Get("X-Delivery-Id"), "a retry keeps its id")
			for _, h := range hits {
				require.True(t, h.signed)
			}
			targetMu.Lock()
			require.Zero(t, target, "a redirect is never followed")
			targetMu.Unlock()
		})
	}
}

func TestBackoffBounds(t *testing.T) {
	t.Parallel()
	const lo, hi = time.Second, time.Hour
	ceiling := func(n int) time.Duration {
		c := lo
		for i := 1; i < n && c < hi; i++ {
			c *= 2
		}
		return min(c, hi)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for n := 1; n <= 200; n++ {
		require.Equal(t, lo, backoff(n, lo, hi, 0), "attempt %d, no jitter: the floor", n)
		top := backoff(n, lo, hi, 1)
		require.Equal(t, ceiling(n), top, "attempt %d, the most jitter: the ceiling", n)
		for range 100 {
			d := backoff(n, lo, hi, rng.Float64())
			require.GreaterOrEqual(t, d, lo)
			require.LessOrEqual(t, d, ceiling(n))
		}
	}
	require.Equal(t, 2*time.Second, ceiling(2))
	require.Equal(t, 2048*time.Second, ceiling(12))
	require.Equal(t, time.Hour, ceiling(13), "capped at an hour")
}

// almostOne pins the jitter near its top, so every wait is its ceiling
// (less a microsecond).
func almostOne() float64 { return 1 - 1e-12 }

// TestBackoffOnTheClock runs the sender against a receiver that always
// fails and checks each scheduled wait on the manual clock: doubling from
// 1 s, capped at 1 h, and nothing is sent before its time.
func TestBackoffOnTheClock(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t)
	rc.set(status(http.StatusServiceUnavailable))
	b := setup(t, []string{rc.URL}, Config{Jitter: almostOne})
	b.event(t)
	want := time.Second
	for n := 1; n <= 16; n++ {
		eventually(t, 10*time.Second, func() bool {
			row := b.outbox(t)
			return len(row) == 1 && row[0].Attempts == n
		}, "attempt %d recorded", n)
		row := b.outbox(t)[0]
		wait := time.UnixMilli(row.NextAttemptAt).Sub(b.clock.Now())
		require.InDelta(t, want.Milliseconds(), wait.Milliseconds(), 1, "wait after failure %d", n)
		require.Len(t, rc.got(), n)
		b.clock.Advance(wait - time.Millisecond)
		require.Len(t, rc.got(), n, "nothing before its time")
		b.clock.Advance(time.Millisecond)
		want = min(2*want, time.Hour)
	}
	require.Equal(t, [3]int64{0, 16, 0}, counts(b.snd))
}

// TestGiveUpAfterADay fails every attempt: the last one is made before the
// event is a day old, the next due time after that gives it up, with a warn
// log naming the delivery.
func TestGiveUpAfterADay(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t)
	rc.set(status(http.StatusBadGateway))
	b := setup(t, []string{rc.URL}, Config{Jitter: almostOne})
	b.event(t)
	deliveryID := b.outbox(t)[0].DeliveryID
	// Waits of 1, 2, 4 … 2048 s (4095 s in all), then an hour each: attempts
	// at 0, 1, 3 … 4095 s, then every hour up to 83 295 s; the next falls
	// due at 86 895 s, past the day.
	const attempts = 13 + 22
	for n := 1; ; n++ {
		eventually(t, 10*time.Second, func() bool {
			row := b.outbox(t)
			return len(row) == 0 || row[0].Attempts == n
		}, "attempt %d recorded", n)
		row := b.outbox(t)
		if len(row) == 0 {
			require.Equal(t, attempts+1, n, "given up at the first due time past a day")
			break
		}
		require.Less(t, b.clock.Now().Sub(t0), 24*time.Hour, "no attempt after a day")
		b.clock.Advance(time.UnixMilli(row[0].NextAttemptAt).Sub(b.clock.Now()))
		if n == attempts {
			eventually(t, 10*time.Second, func() bool { return counts(b.snd)[2] == 1 }, "given up")
		}
	}
	require.Len(t, rc.got(), attempts)
	require.Equal(t, [3]int64{0, attempts, 1}, counts(b.snd))
	logs := b.log.String()
	require.Contains(t, logs, "level=WARN msg=\"webhook delivery given up\" delivery_id="+deliveryID)
	require.Contains(t, logs, "attempts=35 last_error=\"HTTP 502\"")
}

// TestBoundedInFlight holds every request: at most four are ever open at
// once, and each one released lets the next in.
func TestBoundedInFlight(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t)
	release := make(chan struct{})
	rc.set(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	b := setup(t, []string{rc.URL}, Config{})
	const events = 10
	for range events {
		b.event(t)
	}
	for sent := 0; sent < events; sent++ {
		open := min(DefaultMaxInFlight, events-sent)
		eventually(t, 10*time.Second, func() bool {
			active, _ := rc.concurrency()
			return active == open && len(rc.got()) == sent+open
		}, "%d requests open after %d answered", open, sent)
		release <- struct{}{}
	}
	eventually(t, 10*time.Second, func() bool { return len(b.outbox(t)) == 0 }, "all delivered")
	_, most := rc.concurrency()
	require.Equal(t, DefaultMaxInFlight, most)
	ids := map[string]bool{}
	for _, h := range rc.got() {
		ids[h.header.Get("X-Delivery-Id")] = true
	}
	require.Len(t, ids, events, "each event once")
}

// TestCutOffAttemptIsSentAgain stops the sender while an attempt is open:
// the attempt is not counted as a failure, the row stays due, and the next
// Serve sends it again at once.
func TestCutOffAttemptIsSentAgain(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t)
	rc.set(hang)
	b := setup(t, []string{rc.URL}, Config{})
	b.event(t)
	eventually(t, 10*time.Second, func() bool { return len(rc.got()) == 1 }, "the first attempt open")
	b.stop()
	row := b.outbox(t)
	require.Len(t, row, 1)
	require.Zero(t, row[0].Attempts, "a shutdown is not the receiver's failure")
	require.Equal(t, t0.UnixMilli(), row[0].NextAttemptAt)

	rc.set(ok)
	b.start(t) // as suture restarts it, or the next process
	eventually(t, 10*time.Second, func() bool { return len(b.outbox(t)) == 0 }, "sent again")
	hits := rc.got()
	require.Len(t, hits, 2)
	require.Equal(t, hits[0].header.Get("X-Delivery-Id"), hits[1].header.Get("X-Delivery-Id"))
}

func TestSign(t *testing.T) {
	t.Parallel()
	// RFC 4231 test case 2.
	require.Equal(t, "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
		Sign([]byte("Jefe"), []byte("what do ya want for nothing?")))
}

func TestNilSenderCountsNothing(t *testing.T) {
	t.Parallel()
	var s *Sender
	d, r, g := s.DeliveryCounts()
	require.Zero(t, d+r+g)
	require.Equal(t, "webhook-sender", New(nil, clock.System{}, slog.New(slog.DiscardHandler), Config{}).String())
}
