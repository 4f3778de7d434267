// Package webhooks holds the webhook sender: it delivers the events that the
// store's transactions wrote into the outbox (docs/API.md §3.5) to the
// configured receivers — signed, at least once, retried with backoff for a
// day — and never touches the queue: the events were written by
// transactions that ran anyway, and everything here runs on its own
// goroutines.
package webhooks

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/expo-free-agent/controller/actors/clock"
	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

// The delivery rules (docs/API.md §3.5).
const (
	DefaultTimeout     = 10 * time.Second // one attempt, answer included
	DefaultMaxInFlight = 4                // attempts at once, over every receiver
	DefaultGiveUpAfter = 24 * time.Hour   // an event older than this is given up after its next failure
	DefaultMinBackoff  = time.Second      // the wait after a first failure
	DefaultMaxBackoff  = time.Hour        // the longest wait between two attempts
	MinSecretLength    = 16               // the shortest --webhook-secret accepted

	giveUpBatch = 100      // rows given up per store call
	maxDrain    = 64 << 10 // bytes of an answer read (so the connection can be reused), the rest dropped
)

// Store is what the sender needs from the database.
type Store interface {
	DueDeliveries(ctx context.Context, now int64, limit int, skip []int64) ([]store.Delivery, int64, error)
	MarkDelivered(ctx context.Context, id int64) error
	MarkFailed(ctx context.Context, id, next int64, lastErr string) error
	GiveUpDeliveries(ctx context.Context, now, cutoff int64, skip []int64, limit int) ([]store.Delivery, error)
	Sync() error
}

// Config holds the sender's settings; zero values take the defaults.
type Config struct {
	Secret      string        // signs every body (HMAC-SHA256); required
	Timeout     time.Duration // DefaultTimeout
	MaxInFlight int           // DefaultMaxInFlight
	GiveUpAfter time.Duration // DefaultGiveUpAfter
	MinBackoff  time.Duration // DefaultMinBackoff
	MaxBackoff  time.Duration // DefaultMaxBackoff
	// Jitter returns a number uniform in [0, 1); nil is math/rand/v2.
	// Tests pin it to check the bounds of the backoff.
	Jitter func() float64
}

// Sender delivers the outbox. Serve owns the set of rows being delivered;
// each attempt runs on its own goroutine (at most MaxInFlight at once) and
// writes its own outcome to the store before it frees its slot, so a row
// is never sent twice at once.
type Sender struct {
	store  Store
	clock  clock.Clock
	log    *slog.Logger
	cfg    Config
	client *http.Client
	kick   chan struct{} // "the outbox may hold something new": coalescing

	// Monotonic counts since start, read by the metrics.
	delivered, retried, gaveUp atomic.Int64
}

// New returns a sender; it starts nothing.
func New(st Store, clk clock.Clock, log *slog.Logger, cfg Config) *Sender {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.GiveUpAfter <= 0 {
		cfg.GiveUpAfter = DefaultGiveUpAfter
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(DefaultMaxBackoff, cfg.MinBackoff)
	}
	if cfg.Jitter == nil {
		cfg.Jitter = rand.Float64
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = cfg.MaxInFlight
	return &Sender{store: st, clock: clk, log: log, cfg: cfg, kick: make(chan struct{}, 1),
		client: &http.Client{
			Transport: tr,
			Timeout:   cfg.Timeout,
			// A redirect is an answer, not a delivery: a 3xx counts as a
			// failure and its Location is never followed (§3.5).
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}}
}

// String names the service in supervisor logs.
func (s *Sender) String() string { return "webhook-sender" }

// Kick tells the sender that the outbox may hold a new row. It never
// blocks; kicks that arrive while one is pending coalesce.
func (s *Sender) Kick() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// DeliveryCounts returns how many deliveries succeeded, how many attempts
// failed and were rescheduled, and how many deliveries were given up, since
// start. A nil sender counts nothing.
func (s *Sender) DeliveryCounts() (delivered, retried, gaveUp int64) {
	if s == nil {
		return 0, 0, 0
	}
	return s.delivered.Load(), s.retried.Load(), s.gaveUp.Load()
}

// Serve delivers until ctx ends. It wakes on a Kick, when the earliest
// scheduled attempt comes due (a timer of the injected clock), and when an
// attempt ends. It returns a store error (suture restarts it: nothing lives
// in memory but the set of rows being sent), and only after every attempt
// it started has ended; at shutdown those are cut off and stay due.
func (s *Sender) Serve(ctx context.Context) error {
	// Owned by Serve.
	inFlight := map[int64]bool{}
	done := make(chan int64, s.cfg.MaxInFlight) // never blocks: at most MaxInFlight attempts
	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		s.client.CloseIdleConnections()
	}()
	for {
		now := s.clock.Now()
		skip := make([]int64, 0, len(inFlight))
		for id := range inFlight {
			skip = append(skip, id)
		}
		due, next, err := s.store.DueDeliveries(ctx, now.UnixMilli(), s.cfg.MaxInFlight-len(inFlight), skip)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("read the outbox: %w", err)
		}
		if s.expired(due, now) {
			if err := s.giveUp(ctx, now, skip); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return fmt.Errorf("give up deliveries: %w", err)
			}
			continue // read again without them
		}
		if len(due) > 0 {
			// Announce only what a power loss cannot undo: the queue
			// manager commits without waiting for the fsync and leaves the
			// wait to the caller it answers.
			if err := s.store.Sync(); err != nil {
				return err
			}
		}
		for _, d := range due {
			inFlight[d.ID] = true
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.attempt(ctx, d)
				done <- d.ID
			}()
		}
		var timer clock.Timer
		var wake <-chan time.Time
		if next != 0 && len(inFlight) < s.cfg.MaxInFlight {
			// From the clock's time now, not the loop's: the clock may have
			// moved while the outbox was read.
			timer = s.clock.NewTimer(time.UnixMilli(next).Sub(s.clock.Now()))
			wake = timer.C()
		}
		select {
		case <-ctx.Done():
		case <-s.kick:
		case <-wake:
		case id := <-done:
			delete(inFlight, id)
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// expired reports whether a due row has had its day: tried at least once
// and older than GiveUpAfter. Such rows are given up, not sent again.
func (s *Sender) expired(due []store.Delivery, now time.Time) bool {
	cutoff := now.Add(-s.cfg.GiveUpAfter).UnixMilli()
	for _, d := range due {
		if d.Attempts > 0 && d.CreatedAt <= cutoff {
			return true
		}
	}
	return false
}

// giveUp deletes every due row that has had its day, and logs each one.
func (s *Sender) giveUp(ctx context.Context, now time.Time, skip []int64) error {
	cutoff := now.Add(-s.cfg.GiveUpAfter).UnixMilli()
	for {
		gone, err := s.store.GiveUpDeliveries(ctx, now.UnixMilli(), cutoff, skip, giveUpBatch)
		if err != nil {
			return err
		}
		for _, d := range gone {
			s.gaveUp.Add(1)
			s.log.Warn("webhook delivery given up", "delivery_id", d.DeliveryID, "event", d.Event,
				"build_id", d.Build.ID, "receiver", logURL(d.URL), "attempts", d.Attempts,
				"last_error", d.LastError, "age", now.Sub(time.UnixMilli(d.CreatedAt)).Round(time.Second).String())
		}
		if len(gone) < giveUpBatch {
			return nil
		}
	}
}

// attempt sends one row once and writes the outcome.
func (s *Sender) attempt(ctx context.Context, d store.Delivery) {
	err := s.post(ctx, d)
	// The outcome is written even while shutting down (a receiver that
	// answered 2xx should not get the event again), and without waiting for
	// an fsync: an outcome lost to a power cut only repeats an attempt, which
	// at-least-once allows.
	wctx := store.DeferSync(context.WithoutCancel(ctx))
	switch {
	case err == nil:
		s.log.Debug("webhook delivered", "delivery_id", d.DeliveryID, "event", d.Event, "build_id", d.Build.ID,
			"receiver", logURL(d.URL), "attempts", d.Attempts+1)
		if err := s.store.MarkDelivered(wctx, d.ID); err != nil {
			s.log.Warn("webhook delivered but not marked; it will be sent again", "delivery_id", d.DeliveryID, "err", err)
		}
		s.delivered.Add(1) // after the store: a count seen means the row is settled
	case ctx.Err() != nil:
		// Cut off by shutdown: not the receiver's failure. The row stays due
		// and is sent again at the next start.
	default:
		n := d.Attempts + 1
		wait := backoff(n, s.cfg.MinBackoff, s.cfg.MaxBackoff, s.cfg.Jitter())
		next := s.clock.Now().Add(wait)
		s.log.Info("webhook delivery failed; will retry", "delivery_id", d.DeliveryID, "event", d.Event,
			"build_id", d.Build.ID, "receiver", logURL(d.URL), "attempt", n, "err", err, "retry_in", wait.String())
		if err := s.store.MarkFailed(wctx, d.ID, next.UnixMilli(), err.Error()); err != nil {
			s.log.Warn("webhook failure not recorded", "delivery_id", d.DeliveryID, "err", err)
		}
		s.retried.Add(1)
	}
}

// backoff is the wait after the attempt-th failed attempt (attempt >= 1):
// "full jitter", uniform between lo and the ceiling min(hi, lo·2^(attempt−1)),
// so a receiver that comes back is not hit by every sender at once. r is
// uniform in [0, 1).
func backoff(attempt int, lo, hi time.Duration, r float64) time.Duration {
	ceiling := hi
	if shift := attempt - 1; shift < 62 && lo <= hi>>uint(shift) {
		ceiling = lo << uint(shift)
	}
	return lo + time.Duration(r*float64(ceiling-lo))
}

// errRedirect is a 3xx answer, which is never followed.
var errRedirect = errors.New("redirects are not followed")

// post sends d once: nil means the receiver answered 2xx.
func (s *Sender) post(ctx context.Context, d store.Delivery) error {
	body, err := Body(d, s.clock.Now())
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("bad receiver URL: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "expo-free-agent-controller")
	req.Header.Set("X-Delivery-Id", d.DeliveryID)
	req.Header.Set("X-Event", string(d.Event))
	req.Header.Set("X-Signature-256", Sign([]byte(s.cfg.Secret), body))
	resp, err := s.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) { // its text repeats the URL, which may hold a credential
			return ue.Err
		}
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain)) // what it says is not read
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		return fmt.Errorf("HTTP %d: %w", resp.StatusCode, errRedirect)
	}
	return fmt.Errorf("HTTP %d", resp.StatusCode)
}

// Sign is the X-Signature-256 header of body: "sha256=" and the hex
// HMAC-SHA256 of the exact bytes sent, keyed with the secret.
func Sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

type eventJSON struct {
	Event      store.Event         `json:"event"`
	DeliveryID string              `json:"delivery_id"`
	SentAt     string              `json:"sent_at"`
	Build      domain.StatusObject `json:"build"`
}

// Body is the JSON body of one attempt of d, sent at sentAt (docs/API.md
// §3.5).
func Body(d store.Delivery, sentAt time.Time) ([]byte, error) {
	return json.Marshal(eventJSON{Event: d.Event, DeliveryID: d.DeliveryID,
		SentAt: sentAt.UTC().Format("2006-01-02T15:04:05.000Z"), Build: d.Build.StatusObject()})
}

// logURL names a receiver in logs without its credentials or query.
func logURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Scheme + "://" + u.Host + u.Path
}
