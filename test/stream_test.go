package test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/expo-free-agent/controller/cmd/app"
	"github.com/stretchr/testify/require"
)

// sseEvent is one Server-Sent Event of a live log (docs/API.md §2.9).
type sseEvent struct {
	ID, Event, Data string
}

func (e sseEvent) object(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(e.Data), &m), "event data: %s", e.Data)
	return m
}

// liveLog is an open live log: its events arrive on Events, which closes
// when the server ends the stream.
type liveLog struct {
	Status int
	Header http.Header
	Events chan sseEvent
	close  func()
}

// openLiveLog opens a live log. A refused one has Status and no events.
func (c *Controller) openLiveLog(t testing.TB, path string, h H) *liveLog {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, c.URL+path, nil)
	require.NoError(t, err)
	for k, v := range h {
		req.Header.Set(k, v)
	}
	resp, err := c.Client.Do(req)
	require.NoError(t, err)
	l := &liveLog{Status: resp.StatusCode, Header: resp.Header, Events: make(chan sseEvent, 1024)}
	var once sync.Once
	l.close = func() { once.Do(func() { resp.Body.Close() }) }
	t.Cleanup(l.close)
	if resp.StatusCode != http.StatusOK {
		close(l.Events)
		return l
	}
	go func() {
		defer close(l.Events)
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.Event != "" {
					l.Events <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, ":"): // a comment (keep-alive)
			case strings.HasPrefix(line, "id: "):
				ev.ID = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "event: "):
				ev.Event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev.Data = strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	return l
}

// next returns the next event; ok is false when the stream ended.
func (l *liveLog) next(t testing.TB) (sseEvent, bool) {
	t.Helper()
	select {
	case ev, ok := <-l.Events:
		return ev, ok
	case <-time.After(20 * time.Second):
		t.Fatal("no live log event within 20s")
		return sseEvent{}, false
	}
}

// event returns the next event, requiring that there is one.
func (l *liveLog) event(t testing.TB) sseEvent {
	t.Helper()
	ev, ok := l.next(t)
	require.True(t, ok, "the stream ended early")
	return ev
}

// expect returns the next event and requires its name.
func (l *liveLog) expect(t testing.TB, name string) sseEvent {
	t.Helper()
	ev, ok := l.next(t)
	require.True(t, ok, "the stream ended before a %s event", name)
	require.Equal(t, name, ev.Event, "event %+v", ev)
	return ev
}

// expectEnd requires that the stream closes with nothing more.
func (l *liveLog) expectEnd(t testing.TB) {
	t.Helper()
	ev, ok := l.next(t)
	require.False(t, ok, "the stream went on after its end: %+v", ev)
}

func (c *Controller) postLog(t testing.TB, buildID, workerID, msg string) {
	t.Helper()
	r := c.PostJSON("/api/builds/"+buildID+"/logs", map[string]string{"level": "info", "message": msg},
		c.KeyH("X-Worker-Id", workerID))
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
}

// logEvent checks a log event against the sequence number it must carry
// and returns its message.
func logEvent(t testing.TB, ev sseEvent, seq int) string {
	t.Helper()
	require.Equal(t, "log", ev.Event, "event %+v", ev)
	require.Equal(t, strconv.Itoa(seq), ev.ID, "event %+v", ev)
	m := ev.object(t)
	require.Equal(t, float64(seq), m["seq"])
	require.NotEmpty(t, m["level"])
	require.NotZero(t, m["timestamp"])
	return m["message"].(string)
}

// TestLiveLog: GET /api/builds/:id/logs/stream follows a build — its log
// as lines commit, its status as it changes — and ends when the build is
// finished and every line was sent (docs/API.md §2.9).
func TestLiveLog(t *testing.T) {
	t.Parallel()
	c := Start(t)

	t.Run("FollowsABuild", func(t *testing.T) {
		b := c.Submit("ios", []byte("s"), nil)
		// A browser's EventSource cannot set headers: the token may be ?token=.
		l := c.openLiveLog(t, "/api/builds/"+b.ID+"/logs/stream?token="+b.Token, nil)
		require.Equal(t, http.StatusOK, l.Status)
		require.Equal(t, "text/event-stream", l.Header.Get("Content-Type"))
		require.Equal(t, "no", l.Header.Get("X-Accel-Buffering"))
		var msgs []string
		seq := 0
		ev := l.expect(t, "log") // the submission's line
		seq++
		msgs = append(msgs, logEvent(t, ev, seq))
		st := l.expect(t, "status").object(t)
		require.Equal(t, "pending", st["status"])

		w := c.Register("w")
		require.Equal(t, b.ID, c.Poll(w)["id"])
		// Assignment's line and status, in whichever order they committed.
		sawAssigned := false
		for !sawAssigned {
			ev := l.event(t)
			if ev.Event == "status" {
				require.Equal(t, "assigned", ev.object(t)["status"])
				sawAssigned = true
				continue
			}
			seq++
			msgs = append(msgs, logEvent(t, ev, seq))
		}
		c.postLog(t, b.ID, w, "compiling")
		c.postLog(t, b.ID, w, "linking")
		// The first line of the worker makes the build building.
		for !containsAll(msgs, "compiling", "linking") {
			ev := l.event(t)
			if ev.Event == "status" {
				require.Equal(t, "building", ev.object(t)["status"])
				continue
			}
			seq++
			msgs = append(msgs, logEvent(t, ev, seq))
		}
		r := c.Upload(b.ID, w, true, []byte("ipa"), "")
		require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
		done := false // a status event said completed
		for {
			ev := l.event(t)
			if ev.Event == "end" {
				require.Equal(t, "completed", ev.object(t)["status"])
				break
			}
			if ev.Event == "status" {
				// A status event says the status now: one sent for a change
				// that raced the upload (on PostgreSQL, the listener's first
				// "anything may have changed" after it connects) may still
				// say building; it never goes back after completed.
				st := ev.object(t)["status"]
				if !done {
					done = st == "completed"
					require.Contains(t, []any{"building", "completed"}, st)
				} else {
					require.Equal(t, "completed", st)
				}
				continue
			}
			seq++
			msgs = append(msgs, logEvent(t, ev, seq))
		}
		l.expectEnd(t)
		require.Equal(t, c.LogMessages(b.ID), msgs, "the stream carried the log, in order, once")
	})

	t.Run("FinishedBuild", func(t *testing.T) {
		b := c.finishedBuild(t, 5, false, "signing failed")
		all := c.LogMessages(b.ID)
		// Resumes after Last-Event-ID (a reconnecting EventSource), or ?after=.
		for _, open := range []func() *liveLog{
			func() *liveLog {
				return c.openLiveLog(t, "/api/builds/"+b.ID+"/logs/stream", c.KeyH("Last-Event-ID", "2"))
			},
			func() *liveLog {
				return c.openLiveLog(t, "/api/builds/"+b.ID+"/logs/stream?after=2", H{"X-Build-Token": b.Token})
			},
			func() *liveLog { return c.openLiveLog(t, "/builds/"+b.ID+"/logs/stream?after=2", c.KeyH()) },
		} {
			l := open()
			require.Equal(t, http.StatusOK, l.Status)
			for seq := 3; seq <= len(all); seq++ {
				require.Equal(t, all[seq-1], logEvent(t, l.expect(t, "log"), seq))
			}
			st := l.expect(t, "status").object(t)
			require.Equal(t, "failed", st["status"])
			require.Equal(t, "signing failed", st["error_message"])
			require.Equal(t, "failed", l.expect(t, "end").object(t)["status"])
			l.expectEnd(t)
		}
		// After the last line: only the status and the end.
		l := c.openLiveLog(t, "/api/builds/"+b.ID+"/logs/stream?after="+strconv.Itoa(len(all)), c.KeyH())
		l.expect(t, "status")
		l.expect(t, "end")
		l.expectEnd(t)
	})

	// An HTTP/1.0 client (no chunked answers) is served through the
	// response, not a taken-over connection: the same events, then close.
	t.Run("HTTP10", func(t *testing.T) {
		b := c.finishedBuild(t, 3, true, "")
		conn, err := net.Dial("tcp", strings.TrimPrefix(c.URL, "http://"))
		require.NoError(t, err)
		defer conn.Close()
		require.NoError(t, conn.SetDeadline(time.Now().Add(30*time.Second)))
		_, err = fmt.Fprintf(conn, "GET /api/builds/%s/logs/stream HTTP/1.0\r\nX-API-Key: %s\r\n\r\n", b.ID, c.Key)
		require.NoError(t, err)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Empty(t, resp.TransferEncoding)
		require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		all := c.LogMessages(b.ID)
		require.Equal(t, len(all), strings.Count(string(body), "event: log\n"), "%s", body)
		require.Contains(t, string(body), "event: end\ndata: {\"status\":\"completed\"}\n\n")
	})

	t.Run("ConcurrentWriterReconnect", func(t *testing.T) {
		b := c.Submit("android", []byte("s"), nil)
		w := c.Register("w-busy")
		require.Equal(t, b.ID, c.Poll(w)["id"])
		const lines = 300
		wrote := make(chan error, 1)
		go func() {
			for i := range lines {
				raw := `{"level":"info","message":"line ` + strconv.Itoa(i) + `"}`
				req, _ := http.NewRequest(http.MethodPost, c.URL+"/api/builds/"+b.ID+"/logs", strings.NewReader(raw))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-API-Key", c.Key)
				req.Header.Set("X-Worker-Id", w)
				resp, err := c.Client.Do(req)
				if err != nil {
					wrote <- err
					return
				}
				resp.Body.Close()
			}
			wrote <- nil
		}()
		got := map[int]string{}
		last := 0
		follow := func(l *liveLog, until func() bool) {
			for !until() {
				ev := l.event(t)
				if ev.Event != "log" {
					continue
				}
				last++
				got[last] = logEvent(t, ev, last) // contiguous: nothing skipped, nothing repeated
			}
		}
		l := c.openLiveLog(t, "/api/builds/"+b.ID+"/logs/stream", c.KeyH())
		follow(l, func() bool { return last >= 60 })
		l.close() // the reader goes away mid-build …
		// … and comes back where it was.
		l = c.openLiveLog(t, "/api/builds/"+b.ID+"/logs/stream", c.KeyH("Last-Event-ID", strconv.Itoa(last)))
		require.NoError(t, <-wrote)
		r := c.Upload(b.ID, w, true, []byte("apk"), "")
		require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
		ended := false
		for !ended {
			ev, ok := l.next(t)
			require.True(t, ok, "the stream ended before its end event")
			switch ev.Event {
			case "log":
				last++
				got[last] = logEvent(t, ev, last)
			case "end":
				ended = true
			}
		}
		l.expectEnd(t)
		all := c.LogMessages(b.ID)
		require.Len(t, got, len(all))
		for i, m := range all {
			require.Equal(t, m, got[i+1])
		}
	})

	t.Run("Refusals", func(t *testing.T) {
		b := c.Submit("ios", []byte("s"), nil)
		other := c.Submit("ios", []byte("o"), nil)
		path := "/api/builds/" + b.ID + "/logs/stream"
		for _, tc := range []struct {
			path   string
			h      H
			status int
			msg    string
		}{
			{path + "?after=x", c.KeyH(), http.StatusBadRequest, "Invalid after"},
			{path + "?after=-1", c.KeyH(), http.StatusBadRequest, "Invalid after"},
			{path, c.KeyH("Last-Event-ID", "abc"), http.StatusBadRequest, "Invalid after"},
			{path, nil, http.StatusUnauthorized, ""},
			{path + "?token=" + other.Token, nil, http.StatusForbidden, ""},
			{path, H{"X-Build-Token": other.Token}, http.StatusForbidden, ""},
			{"/api/builds/not-a-uuid/logs/stream", c.KeyH(), http.StatusNotFound, "Build not found"},
			{"/api/builds/00000000-0000-4000-8000-000000000000/logs/stream", c.KeyH(), http.StatusNotFound, ""},
			{"/builds/00000000-0000-4000-8000-000000000000/logs/stream", c.KeyH(), http.StatusNotFound, ""},
		} {
			r := c.Get(tc.path, tc.h)
			require.Equal(t, tc.status, r.Status, "%s %v: %s", tc.path, tc.h, r.Body)
			if tc.msg != "" {
				require.Equal(t, tc.msg, r.Error(t))
			}
			// The same refusal as the log's other read.
			if !strings.Contains(tc.path, "after") && tc.h["Last-Event-ID"] == "" {
				plain := strings.Replace(tc.path, "/logs/stream", "/logs", 1)
				if strings.HasPrefix(plain, "/builds/") {
					plain = strings.Replace(plain, "/logs", "/logs.json", 1)
				}
				if strings.Contains(plain, "?token=") {
					continue // the plain read takes the token as a header only
				}
				p := c.Get(plain, tc.h)
				require.Equal(t, p.Status, r.Status, "%s", plain)
				require.Equal(t, string(p.Body), string(r.Body), "%s", plain)
			}
		}
	})
}

func containsAll(have []string, want ...string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			found = found || h == w
		}
		if !found {
			return false
		}
	}
	return true
}

// finishedBuild runs a build through a worker with n log lines and ends it.
func (c *Controller) finishedBuild(t testing.TB, n int, success bool, errMsg string) Submitted {
	t.Helper()
	b := c.Submit("ios", []byte("s"), nil)
	w := c.Register("w-" + b.ID[:8])
	for {
		job := c.Poll(w)
		require.NotNil(t, job)
		if job["id"] == b.ID {
			break
		}
		c.Upload(job["id"].(string), w, false, nil, "not this one")
	}
	for i := range n {
		c.postLog(t, b.ID, w, "step "+strconv.Itoa(i))
	}
	var data []byte
	if success {
		data = []byte("ipa")
	}
	r := c.Upload(b.ID, w, success, data, errMsg)
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	return b
}

// TestLiveLogLimits: at most --max-streams live logs are open at once,
// beyond a clear 503; the gauge counts them; shutting down ends them.
func TestLiveLogLimits(t *testing.T) {
	t.Parallel()
	c := Start(t, WithConfig(func(cfg *app.Config) { cfg.MaxStreams = 1 }))
	b := c.Submit("ios", []byte("s"), nil)
	path := "/api/builds/" + b.ID + "/logs/stream"
	first := c.openLiveLog(t, path, c.KeyH())
	require.Equal(t, http.StatusOK, first.Status)
	first.expect(t, "log")
	first.expect(t, "status")
	require.Contains(t, string(c.Get("/metrics", c.KeyH()).Body), "controller_log_streams_open 1")

	r := c.Get(path, c.KeyH())
	require.Equal(t, http.StatusServiceUnavailable, r.Status)
	require.Equal(t, "Too many log streams", r.Error(t))

	first.close()
	eventually(t, 10*time.Second, func() bool {
		return strings.Contains(string(c.Get("/metrics", c.KeyH()).Body), "controller_log_streams_open 0")
	}, "a closed stream leaves the count")
	second := c.openLiveLog(t, path, c.KeyH())
	require.Equal(t, http.StatusOK, second.Status)
	second.expect(t, "log")
	second.expect(t, "status")

	// Shutting down ends the stream (it does not hold the drain).
	c.Stop()
	second.expectEnd(t)
	require.NotContains(t, c.Logs(), "graceful shutdown incomplete")
}
