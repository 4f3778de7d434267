package test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The base images each worker generation is handed (the defaults of
// --base-image and --base-image-v2).
const (
	mixedImageKey   = "ghcr.io/sethwebster/expo-free-agent-base:0.1.23"
	mixedImageToken = "ghcr.io/sethwebster/expo-free-agent-base:0.1.31"
)

// mixedWorker is one worker of the mixed fleet: an older one (admin key and
// ?worker_id=) or a newer one (X-Worker-Token only).
type mixedWorker struct {
	id    string
	token string // "" for an older worker
	mu    sync.Mutex
}

func (w *mixedWorker) newer() bool { return w.token != "" }

func (w *mixedWorker) currentToken() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.token
}

// mixedPoll is one poll's answer, already checked for shape.
type mixedPoll struct {
	status int
	body   []byte
	job    map[string]any // nil: no job
	token  string         // the access_token of a token poll
	hasTok bool           // whether the answer carried access_token at all
}

// poll polls as the worker's generation does. It never fails the test itself
// (checkAnswer says what is wrong), so it is safe off the test goroutine.
func (w *mixedWorker) poll(c *Controller) mixedPoll {
	var r Response
	if w.newer() {
		r = c.Get("/api/workers/poll", H{"X-Worker-Token": w.currentToken()})
	} else {
		r = c.Get("/api/workers/poll?worker_id="+w.id, c.KeyH())
	}
	out := mixedPoll{status: r.Status, body: r.Body}
	var m map[string]any
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &m) != nil || m == nil {
		out.status = -r.Status // not a 200 JSON object: checkAnswer reports it
		return out
	}
	out.job, _ = m["job"].(map[string]any)
	if tok, ok := m["access_token"]; ok {
		out.hasTok = true
		out.token, _ = tok.(string)
		if out.token != "" {
			w.mu.Lock()
			w.token = out.token // a newer host keeps the token the poll answers with
			w.mu.Unlock()
		}
	}
	return out
}

// upload finishes the worker's build with a small result, with the worker's
// own credentials: the key and a worker_id field, or the token alone.
func (w *mixedWorker) upload(c *Controller, buildID string) Response {
	if !w.newer() {
		return c.Upload(buildID, w.id, true, []byte("ipa-"+buildID), "")
	}
	return c.PostMultipart("/api/workers/upload", H{"X-Worker-Token": w.currentToken()},
		Part{Name: "build_id", Data: []byte(buildID)}, Part{Name: "success", Data: []byte("true")},
		Part{Name: "result", Filename: "build.ipa", ContentType: "application/octet-stream", Data: []byte("ipa-" + buildID)})
}

// checkJob returns what is wrong with a delivered job for this worker, or "".
func (w *mixedWorker) checkJob(p mixedPoll) string {
	job := p.job
	id, _ := job["id"].(string)
	otp, _ := job["otp"].(string)
	img, _ := job["baseImageId"].(string)
	want := mixedImageKey
	if w.newer() {
		want = mixedImageToken
	}
	switch {
	case id == "":
		return "job without id"
	case otp == "":
		return "job " + id + " without an otp"
	case img != want:
		return fmt.Sprintf("job %s: baseImageId %q, want %q", id, img, want)
	case job["platform"] != "ios":
		return fmt.Sprintf("job %s: platform %v", id, job["platform"])
	case job["source_url"] != "/api/builds/"+id+"/source":
		return fmt.Sprintf("job %s: source_url %v", id, job["source_url"])
	}
	return ""
}

// checkAnswer returns what is wrong with any poll answer of this worker
// (job or not), or "".
func (w *mixedWorker) checkAnswer(p mixedPoll) string {
	switch {
	case p.status != http.StatusOK:
		return fmt.Sprintf("poll: %d %s", p.status, p.body) // negative: a 200 that is not a JSON object
	case w.newer() && p.token == "":
		return fmt.Sprintf("token poll without access_token: %s", p.body)
	case !w.newer() && p.hasTok:
		return fmt.Sprintf("key poll with an access_token: %s", p.body)
	case p.job != nil:
		return w.checkJob(p)
	}
	return ""
}

// TestMixedFleetAssignment is TestConcurrentAssignment with both worker
// generations at once: in every round 10 builds are submitted while 20
// workers — 10 older (admin key + ?worker_id=) and 10 newer (X-Worker-Token
// only) — poll concurrently through the real HTTP stack. No build goes to two
// workers, none is lost, no worker holds two builds, a second poll re-delivers
// the same job, every job carries a one-time password and its generation's
// base image, and every token poll carries the worker's token.
// ASSIGN_ROUNDS=<n> sets the number of rounds (100 by default).
func TestMixedFleetAssignment(t *testing.T) {
	t.Parallel()
	const workers, builds = 20, 10
	const roundDeadline = 30 * time.Second
	c := Start(t)
	fleet := make([]*mixedWorker, workers)
	for i := range fleet {
		if i%2 == 0 {
			fleet[i] = &mixedWorker{id: c.Register(fmt.Sprintf("older-%02d", i))}
		} else {
			id, tok := c.RegisterV2(fmt.Sprintf("newer-%02d", i))
			require.NotEmpty(t, tok)
			fleet[i] = &mixedWorker{id: id, token: tok}
		}
	}
	rounds := assignRounds(t)
	began := time.Now()
	var toOlder, toNewer int
	for round := 0; round < rounds; round++ {
		var (
			mu      sync.Mutex
			byBuild = map[string][]*mixedWorker{} // build id → workers that got it
			byWork  = map[*mixedWorker]string{}   // worker → its build
			otps    = map[string]string{}         // otp → build id
			wg      sync.WaitGroup
			stop    atomic.Bool // set at the first error: every poller gives up
		)
		deadline := time.Now().Add(roundDeadline)
		submitted := make(chan string, builds)
		for i := 0; i < builds; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := c.PostMultipart("/api/builds/submit", c.KeyH(),
					Part{Name: "source", Filename: "s.zip", Data: []byte("src")}, Part{Name: "platform", Data: []byte("ios")})
				var m struct{ ID string }
				if r.Status != http.StatusOK || json.Unmarshal(r.Body, &m) != nil || m.ID == "" {
					t.Errorf("round %d: submit: %d %s", round, r.Status, r.Body)
					return
				}
				submitted <- m.ID
			}()
		}
		start := make(chan struct{})
		for _, w := range fleet {
			wg.Add(1)
			go func(w *mixedWorker) {
				defer wg.Done()
				<-start
				// Poll until a job comes, every build has been handed out, or
				// the round's deadline passes (a lost build: reported below).
				for time.Now().Before(deadline) && !stop.Load() {
					p := w.poll(c)
					if msg := w.checkAnswer(p); msg != "" {
						t.Errorf("round %d, worker %s (newer=%v): %s", round, w.id, w.newer(), msg)
						stop.Store(true)
						return
					}
					mu.Lock()
					if p.job != nil {
						id := p.job["id"].(string)
						if prev, ok := byWork[w]; ok && prev != id {
							t.Errorf("round %d: worker %s got %s while holding %s", round, w.id, id, prev)
							stop.Store(true)
						}
						if _, ok := byWork[w]; !ok {
							byWork[w] = id
							byBuild[id] = append(byBuild[id], w)
						}
						otp := p.job["otp"].(string)
						if other, dup := otps[otp]; dup {
							t.Errorf("round %d: otp of %s handed out again for %s", round, other, id)
							stop.Store(true)
						}
						otps[otp] = id
					}
					done := len(byBuild) == builds || p.job != nil
					mu.Unlock()
					if done {
						return
					}
				}
			}(w)
		}
		close(start)
		wg.Wait()
		close(submitted)
		if t.Failed() {
			t.FailNow()
		}
		require.Len(t, submitted, builds, "round %d: every submit answered 200", round)
		for id := range submitted {
			got := byBuild[id]
			require.Len(t, got, 1, "round %d: build %s handed to %d workers (lost if 0)", round, id, len(got))
			w := got[0]
			// A second poll re-delivers the same job, again with an OTP and the
			// generation's image.
			p := w.poll(c)
			require.Empty(t, w.checkAnswer(p), "round %d: re-poll of %s", round, w.id)
			require.NotNil(t, p.job, "round %d: re-poll of %s: %s", round, w.id, p.body)
			require.Equal(t, id, p.job["id"], "round %d: re-poll of %s", round, w.id)
			st := c.Status(id)
			require.Equal(t, "assigned", st["status"], "round %d: build %s", round, id)
			require.Equal(t, w.id, st["worker_id"], "round %d: build %s", round, id)
			if w.newer() {
				toNewer++
			} else {
				toOlder++
			}
		}
		require.Len(t, byBuild, builds, "round %d: no build lost", round)
		require.Len(t, byWork, builds, "round %d: one build per worker", round)
		// Finish the round, each worker with its own credentials, so that
		// every worker is free again.
		for w, id := range byWork {
			wg.Add(1)
			go func(w *mixedWorker, id string) {
				defer wg.Done()
				if r := w.upload(c, id); r.Status != http.StatusOK {
					t.Errorf("round %d: upload of %s by %s (newer=%v): %d %s", round, id, w.id, w.newer(), r.Status, r.Body)
				}
			}(w, id)
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
	}
	elapsed := time.Since(began)
	t.Logf("%d rounds in %s (%s a round); builds to older workers %d, to newer %d",
		rounds, elapsed.Round(time.Millisecond), (elapsed / time.Duration(max(rounds, 1))).Round(time.Microsecond), toOlder, toNewer)
	require.Equal(t, rounds*builds, toOlder+toNewer)
	if rounds >= 10 {
		// Both generations really raced: over many rounds each won some.
		require.Positive(t, toOlder, "older workers never got a build")
		require.Positive(t, toNewer, "newer workers never got a build")
	}
	h := c.Get("/health", nil).Object(t)
	require.Equal(t, map[string]any{"pending": 0.0, "active": 0.0, "total": 0.0}, h["queue"])
}
