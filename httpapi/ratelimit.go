package httpapi

import (
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
)

// tooMany is a 429 with msg and a Retry-After of wait, rounded up to seconds.
func tooMany(c echo.Context, msg string, wait time.Duration) error {
	secs := int64(math.Ceil(wait.Seconds()))
	c.Response().Header().Set("Retry-After", strconv.FormatInt(max(secs, 1), 10))
	return fail(http.StatusTooManyRequests, msg)
}

// rateLimiter is a token bucket per key (a build, a token): each key may
// spend burst requests at once and then one per interval. It holds at most
// maxKeys buckets; when full, buckets that have refilled completely (and so
// carry no state worth keeping) are dropped first, else the stalest.
type rateLimiter struct {
	interval time.Duration
	burst    float64
	maxKeys  int
	now      func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time // when tokens was computed
}

func newRateLimiter(interval time.Duration, burst, maxKeys int, now func() time.Time) *rateLimiter {
	return &rateLimiter{interval: interval, burst: float64(burst), maxKeys: maxKeys, now: now,
		buckets: map[string]*bucket{}}
}

// allow spends one request of key. When refused it returns how long until
// the next one is allowed.
func (l *rateLimiter) allow(key string) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b := l.buckets[key]
	if b == nil {
		l.makeRoom(now)
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[key] = b
	}
	b.tokens = math.Min(l.burst, b.tokens+float64(now.Sub(b.at))/float64(l.interval))
	b.at = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) * float64(l.interval))
}

// makeRoom drops buckets so one more fits.
func (l *rateLimiter) makeRoom(now time.Time) {
	if len(l.buckets) < l.maxKeys {
		return
	}
	full := time.Duration(l.burst * float64(l.interval))
	var stalest string
	for k, b := range l.buckets {
		if now.Sub(b.at) >= full {
			delete(l.buckets, k)
		} else if stalest == "" || b.at.Before(l.buckets[stalest].at) {
			stalest = k
		}
	}
	if len(l.buckets) >= l.maxKeys && stalest != "" {
		delete(l.buckets, stalest)
	}
}
