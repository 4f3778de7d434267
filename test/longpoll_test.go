package test

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestLongPoll: GET /api/workers/poll?wait= holds a poll that finds nothing
// until a build can be assigned to the worker (docs/API.md §4.18), for both
// worker generations; wait is validated; the answer keeps its shape.
func TestLongPoll(t *testing.T) {
	t.Parallel()
	c := Start(t)

	t.Run("InvalidWait", func(t *testing.T) {
		w := c.Register("w-invalid")
		for _, v := range []string{"x", "-1", "1.5", "", "1e3"} {
			if v == "" {
				continue
			}
			r := c.Get("/api/workers/poll?worker_id="+w+"&wait="+v, c.KeyH())
			require.Equal(t, http.StatusBadRequest, r.Status, v)
			require.Equal(t, "Invalid wait", r.Error(t))
		}
		r := c.Get("/api/workers/poll?worker_id="+w+"&wait=0", c.KeyH())
		require.Equal(t, `{"job":null}`, strings.TrimSpace(string(r.Body)), "wait=0 is the v1 poll")
	})

	t.Run("WokenBySubmit", func(t *testing.T) {
		w := c.Register("w-older", "android")
		_, token := c.RegisterV2("w-newer", "ios")
		older, newer := make(chan Response, 1), make(chan Response, 1)
		go func() { older <- c.doRaw(http.MethodGet, "/api/workers/poll?worker_id="+w+"&wait=50", c.KeyH()) }()
		go func() { newer <- c.doRaw(http.MethodGet, "/api/workers/poll?wait=50", H{"X-Worker-Token": token}) }()
		require.Eventually(t, func() bool { return c.App.Queue.Waiting() == 2 }, 10*time.Second, time.Millisecond)
		start := time.Now()
		droid := c.Submit("android", []byte("a"), nil)
		ios := c.Submit("ios", []byte("i"), nil)
		r := <-older
		require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
		require.Equal(t, droid.ID, r.Object(t)["job"].(map[string]any)["id"])
		r = <-newer
		require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
		m := r.Object(t)
		require.Equal(t, ios.ID, m["job"].(map[string]any)["id"])
		require.Equal(t, token, m["access_token"])
		require.Less(t, time.Since(start), 40*time.Second, "answered when the builds came, not when the wait ended")
	})
}

// doRaw is Do for goroutines: it reports failures in the Response instead
// of failing the test from another goroutine.
func (c *Controller) doRaw(method, path string, h H) Response {
	req, err := http.NewRequest(method, c.URL+path, nil)
	if err != nil {
		return Response{Status: -1, Body: []byte(err.Error())}
	}
	for k, v := range h {
		req.Header.Set(k, v)
	}
	resp, err := c.Client.Do(req)
	if err != nil {
		return Response{Status: -1, Body: []byte(err.Error())}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return Response{Status: -1, Body: []byte(err.Error())}
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// TestIncrementalLogs: GET …/logs?after=&limit= returns the entries after a
// sequence number, with their seq; without the parameters the v1 answer is
// unchanged (docs/API.md §2.5).
func TestIncrementalLogs(t *testing.T) {
	t.Parallel()
	c := Start(t)
	w := c.Register("w")
	b := c.Submit("ios", []byte("s"), nil)
	c.Poll(w)
	for i := range 5 {
		c.PostJSON("/api/builds/"+b.ID+"/logs", map[string]any{"level": "info", "message": "line " + strconv.Itoa(i)},
			c.KeyH("X-Worker-Id", w))
	}
	all := c.Get("/api/builds/"+b.ID+"/logs", H{"X-Build-Token": b.Token}).Object(t)["logs"].([]any)
	require.Len(t, all, 7)
	require.NotContains(t, all[0], "seq", "the v1 answer has no seq")

	page := func(q string) []any {
		r := c.Get("/api/builds/"+b.ID+"/logs?"+q, H{"X-Build-Token": b.Token})
		require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
		m := r.Object(t)
		require.Equal(t, b.ID, m["build_id"])
		return m["logs"].([]any)
	}
	got := page("after=2&limit=3")
	require.Len(t, got, 3)
	for i, e := range got {
		require.Equal(t, float64(3+i), e.(map[string]any)["seq"])
		require.Equal(t, all[2+i].(map[string]any)["message"], e.(map[string]any)["message"])
	}
	require.Len(t, page("after=6"), 1)
	require.Empty(t, page("after=7"))
	require.Len(t, page("limit=2"), 2)
	for _, q := range []string{"after=-1", "after=x", "after=", "limit=0", "limit=10001", "limit=x"} {
		r := c.Get("/api/builds/"+b.ID+"/logs?"+q, H{"X-Build-Token": b.Token})
		require.Equal(t, http.StatusBadRequest, r.Status, q)
		want := "Invalid after"
		if strings.HasPrefix(q, "limit") {
			want = "Invalid limit"
		}
		require.Equal(t, want, r.Error(t), q)
	}
}
