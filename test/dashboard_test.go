package test

import (
	"archive/zip"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/cmd/app"
)

// dashSession is a browser-like client of the dashboard: a cookie jar, no
// redirects followed, and the session's form token once signed in.
type dashSession struct {
	c      *Controller
	client *http.Client
	csrf   string
}

func newDashSession(t *testing.T, c *Controller) *dashSession {
	t.Helper()
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	return &dashSession{c: c, client: &http.Client{Jar: jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// signedIn signs a new session in with the admin key.
func signedIn(t *testing.T, c *Controller) *dashSession {
	t.Helper()
	s := newDashSession(t, c)
	r := s.post(t, "/signin", url.Values{"key": {c.Key}, "next": {"/builds"}})
	require.Equal(t, http.StatusSeeOther, r.Status, "sign in: %s", r.Body)
	require.Equal(t, "/builds", r.Header.Get("Location"))
	page := s.get(t, "/")
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(string(page.Body))
	require.NotNil(t, m, "the signed-in overview carries the form token: %s", page.Body)
	s.csrf = m[1]
	return s
}

func (s *dashSession) do(t *testing.T, req *http.Request) Response {
	t.Helper()
	resp, err := s.client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

func (s *dashSession) get(t *testing.T, path string) Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.c.URL+path, nil)
	require.NoError(t, err)
	return s.do(t, req)
}

// post sends a form as a browser does.
func (s *dashSession) post(t *testing.T, path string, form url.Values, h ...string) Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.c.URL+path, strings.NewReader(form.Encode()))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(h); i += 2 {
		req.Header.Set(h[i], h[i+1])
	}
	return s.do(t, req)
}

// form posts with the session's form token.
func (s *dashSession) form(t *testing.T, path string) Response {
	t.Helper()
	return s.post(t, path, url.Values{"csrf": {s.csrf}})
}

// appZip is a project zip with an app.json.
func appZip(t *testing.T, appJSON string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, content := range map[string]string{"my-app/app.json": appJSON, "my-app/App.tsx": "export default 1"} {
		w, err := zw.Create(name)
		require.NoError(t, err)
		_, err = w.Write([]byte(content))
		require.NoError(t, err)
	}
	require.NoError(t, zw.Close())
	return buf.Bytes()
}

// submitLabelled submits a build with a label.
func submitLabelled(t *testing.T, c *Controller, platform string, source []byte, label string) Response {
	t.Helper()
	return c.PostMultipart("/api/builds/submit", c.KeyH(),
		Part{Name: "source", Filename: "source.zip", ContentType: "application/zip", Data: source},
		Part{Name: "platform", Data: []byte(platform)}, Part{Name: "label", Data: []byte(label)})
}

func TestDashboardSignIn(t *testing.T) {
	t.Parallel()
	c := Start(t)
	b := c.Submit("ios", []byte("x"), nil)
	anon := newDashSession(t, c)

	// Build pages, history and logs need a session: the sign-in form, 401,
	// which goes on to the page asked for.
	for _, p := range []string{"/builds/" + b.ID, "/builds", "/builds/" + b.ID + "/log.txt"} {
		r := anon.get(t, p)
		require.Equal(t, http.StatusUnauthorized, r.Status, p)
		require.Contains(t, string(r.Body), `action="/signin"`, p)
		require.Contains(t, string(r.Body), `name="next" value="`+p+`"`, p)
	}
	r := anon.get(t, "/builds/"+b.ID+"/logs.json")
	require.Equal(t, http.StatusUnauthorized, r.Status)
	require.Equal(t, "Sign-in required", r.Error(t))
	// The summary and queue stay public.
	require.Equal(t, http.StatusOK, anon.get(t, "/").Status)
	require.Contains(t, string(anon.get(t, "/dashboard/fragment").Body), b.ID)

	// A wrong key: the form again, no cookie; no key: 400.
	r = anon.post(t, "/signin", url.Values{"key": {"wrong-key"}})
	require.Equal(t, http.StatusUnauthorized, r.Status)
	require.Contains(t, string(r.Body), "Wrong key")
	require.Empty(t, r.Header.Values("Set-Cookie"))
	require.Equal(t, http.StatusBadRequest, anon.post(t, "/signin", nil).Status)
	// The key is read from the form body only, never from the URL; a body
	// that is not a small urlencoded form is refused.
	r = anon.post(t, "/signin?key="+url.QueryEscape(c.Key), url.Values{"next": {"/"}})
	require.Equal(t, http.StatusBadRequest, r.Status)
	require.Contains(t, string(r.Body), "Admin key required")
	r = anon.post(t, "/signin", url.Values{"key": {c.Key}}, "Content-Type", "multipart/form-data; boundary=x")
	require.Equal(t, http.StatusBadRequest, r.Status)
	require.Contains(t, string(r.Body), "Content must be application/x-www-form-urlencoded")
	r = anon.post(t, "/signin", url.Values{"key": {c.Key}, "pad": {strings.Repeat("x", 64<<10)}})
	require.Equal(t, http.StatusRequestEntityTooLarge, r.Status)
	require.Empty(t, r.Header.Values("Set-Cookie"))
	// A link from another site carries no SameSite=Strict cookie: the form
	// loads itself again, same-site (no loop: that request is same-origin).
	req, err := http.NewRequest(http.MethodGet, c.URL+"/builds/"+b.ID, nil)
	require.NoError(t, err)
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	require.Contains(t, string(anon.do(t, req).Body), `<meta http-equiv="refresh" content="0">`)
	require.NotContains(t, string(anon.get(t, "/builds/"+b.ID).Body), `http-equiv="refresh"`)

	// The key signs in: an HttpOnly, SameSite=Strict cookie; next must be
	// a local path.
	s := newDashSession(t, c)
	r = s.post(t, "/signin", url.Values{"key": {c.Key}, "next": {"//evil.example/x"}})
	require.Equal(t, http.StatusSeeOther, r.Status)
	require.Equal(t, "/", r.Header.Get("Location"))
	ck := r.Header.Get("Set-Cookie")
	require.Contains(t, ck, "efa_session=")
	require.Contains(t, ck, "HttpOnly")
	require.Contains(t, ck, "SameSite=Strict")
	require.NotContains(t, ck, c.Key)
	bp := s.get(t, "/builds/"+b.ID)
	require.Equal(t, http.StatusOK, bp.Status)
	require.NotContains(t, string(bp.Body), c.Key, "the key is never on a page")
	require.Equal(t, http.StatusOK, s.get(t, "/builds/"+b.ID+"/logs.json").Status)

	// Sign-out is a form: without the session's token it is refused.
	s = signedIn(t, c)
	r = s.post(t, "/signout", nil)
	require.Equal(t, http.StatusForbidden, r.Status)
	require.Contains(t, string(r.Body), "Invalid or expired form; reload the page")
	r = s.form(t, "/signout")
	require.Equal(t, http.StatusSeeOther, r.Status)
	require.Equal(t, http.StatusUnauthorized, s.get(t, "/builds/"+b.ID).Status, "signed out")
}

func TestDashboardSignInIsPaced(t *testing.T) {
	t.Parallel()
	c := Start(t, WithManualClock())
	s := newDashSession(t, c)
	for i := 0; i < 5; i++ {
		require.Equal(t, http.StatusUnauthorized, s.post(t, "/signin", url.Values{"key": {fmt.Sprint("guess-", i)}}).Status)
	}
	r := s.post(t, "/signin", url.Values{"key": {c.Key}})
	require.Equal(t, http.StatusTooManyRequests, r.Status, "even the right key waits: no oracle")
	require.Equal(t, "2", r.Header.Get("Retry-After"))
	require.Contains(t, string(r.Body), "Too many sign-in attempts")
	c.Clock.Advance(2 * time.Second)
	require.Equal(t, http.StatusSeeOther, s.post(t, "/signin", url.Values{"key": {c.Key}}).Status)
}

func TestDashboardSessionExpires(t *testing.T) {
	t.Parallel()
	c := Start(t, WithManualClock())
	b := c.Submit("ios", []byte("x"), nil)
	s := signedIn(t, c)
	require.Equal(t, http.StatusOK, s.get(t, "/builds/"+b.ID).Status)
	c.Clock.Advance(12 * time.Hour)
	require.Equal(t, http.StatusUnauthorized, s.get(t, "/builds/"+b.ID).Status)
}

func TestDashboardPublicFlag(t *testing.T) {
	t.Parallel()
	c := Start(t, WithConfig(func(cfg *app.Config) { cfg.DashboardPublic = true }))
	b := c.Submit("ios", []byte("x"), nil)
	anon := newDashSession(t, c)
	for _, p := range []string{"/builds/" + b.ID, "/builds", "/builds/" + b.ID + "/logs.json", "/builds/" + b.ID + "/log.txt"} {
		require.Equal(t, http.StatusOK, anon.get(t, p).Status, p)
	}
	// Results and actions still need a session.
	require.Equal(t, http.StatusUnauthorized, anon.get(t, "/builds/"+b.ID+"/download").Status)
	require.Equal(t, http.StatusUnauthorized, anon.post(t, "/builds/"+b.ID+"/cancel", nil).Status)
	require.NotContains(t, string(anon.get(t, "/builds/"+b.ID).Body), "/cancel", "no actions for the public")
}

func TestDashboardActions(t *testing.T) {
	t.Parallel()
	c := Start(t)
	s := signedIn(t, c)
	b := c.Submit("android", []byte("x"), nil)

	// A form without the token, or from another site, changes nothing.
	require.Equal(t, http.StatusForbidden, s.post(t, "/builds/"+b.ID+"/cancel", url.Values{"csrf": {"forged"}}).Status)
	require.Equal(t, http.StatusForbidden, s.post(t, "/builds/"+b.ID+"/cancel", url.Values{"csrf": {s.csrf}},
		"Origin", "https://evil.example").Status)
	require.Equal(t, "pending", c.Get("/api/builds/"+b.ID+"/status", c.KeyH()).Object(t)["status"])
	// Behind a proxy that names the public host in X-Forwarded-Host, that
	// host's Origin is this site (the token still decides).
	require.Equal(t, http.StatusForbidden, s.post(t, "/builds/"+b.ID+"/cancel", url.Values{"csrf": {"forged"}},
		"Origin", "https://builds.example.com", "X-Forwarded-Host", "builds.example.com").Status)

	// Cancel: back to the build page, the build failed as cancelled.
	r := s.post(t, "/builds/"+b.ID+"/cancel", url.Values{"csrf": {s.csrf}},
		"Origin", "https://builds.example.com", "X-Forwarded-Host", "builds.example.com")
	require.Equal(t, http.StatusSeeOther, r.Status, "%s", r.Body)
	require.Equal(t, "/builds/"+b.ID, r.Header.Get("Location"))
	require.Equal(t, "failed", c.Get("/api/builds/"+b.ID+"/status", c.KeyH()).Object(t)["status"])
	// Again: the API's answer, as a page.
	r = s.form(t, "/builds/"+b.ID+"/cancel")
	require.Equal(t, http.StatusBadRequest, r.Status)
	require.Contains(t, string(r.Body), "<!doctype html>")

	// Retry: on to the new build.
	r = s.form(t, "/builds/"+b.ID+"/retry")
	require.Equal(t, http.StatusSeeOther, r.Status, "%s", r.Body)
	retried := strings.TrimPrefix(r.Header.Get("Location"), "/builds/")
	require.Equal(t, "pending", c.Get("/api/builds/"+retried+"/status", c.KeyH()).Object(t)["status"])

	// Download: the result, once completed; before, a page says why.
	r = s.get(t, "/builds/"+retried+"/download")
	require.Equal(t, http.StatusBadRequest, r.Status)
	require.Contains(t, string(r.Body), "Build not completed")
	w := c.Register("w1", "android")
	require.Equal(t, retried, c.Poll(w)["id"])
	require.Equal(t, http.StatusOK, c.Upload(retried, w, true, []byte("apk bytes"), "").Status)
	r = s.get(t, "/builds/"+retried+"/download")
	require.Equal(t, http.StatusOK, r.Status)
	require.Equal(t, "apk bytes", string(r.Body))
	require.Contains(t, r.Header.Get("Content-Disposition"), retried+".apk")

	// Unregister a worker that holds a build: the build goes back to the queue.
	b2 := c.Submit("android", []byte("y"), nil)
	require.Equal(t, b2.ID, c.Poll(w)["id"])
	require.Equal(t, http.StatusNotFound, s.form(t, "/workers/nope/unregister").Status)
	r = s.form(t, "/workers/"+w+"/unregister")
	require.Equal(t, http.StatusSeeOther, r.Status, "%s", r.Body)
	require.Equal(t, "pending", c.Get("/api/builds/"+b2.ID+"/status", c.KeyH()).Object(t)["status"])
	require.Contains(t, string(s.get(t, "/dashboard/fragment").Body), "worker-offline")

	// An unknown build is a page, not JSON.
	r = s.get(t, "/builds/00000000-0000-4000-8000-000000000000")
	require.Equal(t, http.StatusNotFound, r.Status)
	require.Contains(t, string(r.Body), "Build not found")
	require.Contains(t, r.Header.Get("Content-Type"), "text/html")
}

func TestDashboardAppNameAndLabel(t *testing.T) {
	t.Parallel()
	c := Start(t)
	s := signedIn(t, c)
	r := submitLabelled(t, c, "ios", appZip(t, `{"expo":{"name":"Coffee <Club>","version":"1.4.2"}}`), "  release candidate ")
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	id := r.Object(t)["id"].(string)
	page := string(s.get(t, "/builds/"+id).Body)
	require.Contains(t, page, "<title>Build Coffee &lt;Club&gt; 1.4.2 — Expo Free Agent</title>")
	require.Contains(t, page, `<td id="build-label">release candidate</td>`)
	frag := string(s.get(t, "/dashboard/fragment").Body)
	require.Contains(t, frag, `<span class="app">Coffee &lt;Club&gt; 1.4.2</span>`)

	// A retry keeps the name and label.
	r = c.PostJSON("/api/builds/"+id+"/cancel", nil, c.KeyH())
	require.Equal(t, http.StatusOK, r.Status)
	r = c.PostJSON("/api/builds/"+id+"/retry", nil, c.KeyH())
	require.Equal(t, http.StatusOK, r.Status)
	retry := r.Object(t)["id"].(string)
	require.Contains(t, string(s.get(t, "/builds/"+retry).Body), "release candidate")

	// No app.json, or no zip at all: the build is known by its id.
	r = submitLabelled(t, c, "ios", []byte("not a zip"), "")
	require.Equal(t, http.StatusOK, r.Status)
	plain := r.Object(t)["id"].(string)
	require.Contains(t, string(s.get(t, "/builds/"+plain).Body), "<title>Build "+plain[:8]+" — Expo Free Agent</title>")

	// A label that is too long or holds control characters is refused.
	for _, bad := range []string{strings.Repeat("x", 101), "a\x00b"} {
		r = submitLabelled(t, c, "ios", []byte("x"), bad)
		require.Equal(t, http.StatusBadRequest, r.Status)
		require.Equal(t, "Invalid label (at most 100 characters, no control characters)", r.Error(t))
	}
}

func TestDashboardTrouble(t *testing.T) {
	t.Parallel()
	c := Start(t, WithManualClock(), WithConfig(func(cfg *app.Config) { cfg.BuildTimeout = 150 * time.Second }))
	troubles := func() []string {
		frag := string(c.Get("/dashboard/fragment", nil).Body)
		out := []string{}
		for _, m := range regexp.MustCompile(`<p class="trouble-item" data-kind="(\w+)">([^<]*)</p>`).FindAllStringSubmatch(frag, -1) {
			out = append(out, m[1]+": "+m[2])
		}
		return out
	}
	require.Empty(t, troubles())
	c.Submit("android", []byte("a"), nil)
	c.Clock.Advance(time.Millisecond)
	c.Submit("android", []byte("b"), nil)
	c.Clock.Advance(time.Millisecond)
	ios := c.Submit("ios", []byte("c"), nil)
	require.Equal(t, []string{"stuck: 2 android builds waiting; no online worker takes android",
		"stuck: 1 ios build waiting; no online worker takes ios"}, troubles())

	// An iOS worker: only android is stuck.
	w := c.Register("mac-1", "ios")
	require.Equal(t, []string{"stuck: 2 android builds waiting; no online worker takes android"}, troubles())

	// Its build, unheard of for 100 s of a 150 s timeout, is near it. Its
	// stage and progress come from the VM's heartbeats.
	require.Equal(t, ios.ID, c.Poll(w)["id"])
	r := c.PostJSON("/api/builds/"+ios.ID+"/telemetry", map[string]any{"type": "heartbeat",
		"data": map[string]any{"stage": "xcodebuild archive"}}, c.KeyH("X-Worker-Id", w, "X-Build-Id", ios.ID))
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	r = c.PostJSON("/api/builds/"+ios.ID+"/heartbeat?worker_id="+w, map[string]any{"progress": 40}, c.KeyH())
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	frag := string(c.Get("/dashboard/fragment", nil).Body)
	require.Contains(t, frag, `<td class="stage">xcodebuild archive</td>`)
	require.Contains(t, frag, `<progress max="100" value="40"></progress> 40%`)
	c.Clock.Advance(100 * time.Second)
	require.Equal(t, []string{"stuck: 2 android builds waiting; no online worker takes android",
		"timeout: Build " + ios.ID[:8] + " not heard from for 1m 40s; it times out in 50.0s"}, troubles())

	// Its worker unseen for more than two minutes: offline, holding it.
	c.Clock.Advance(25 * time.Second)
	require.Equal(t, []string{"stuck: 2 android builds waiting; no online worker takes android",
		"offline: Worker mac-1 is offline and holds build " + ios.ID[:8]}, troubles())

	// Two failures of two builds finished in the last hour; a cancel is
	// not a failure.
	require.Equal(t, http.StatusOK, c.Upload(ios.ID, w, false, nil, "xcodebuild failed").Status)
	again := c.Submit("ios", []byte("d"), nil)
	require.Equal(t, again.ID, c.Poll(w)["id"])
	require.Equal(t, http.StatusOK, c.Upload(again.ID, w, false, nil, "xcodebuild failed").Status)
	cancelled := c.Submit("ios", []byte("e"), nil)
	require.Equal(t, http.StatusOK, c.PostJSON("/api/builds/"+cancelled.ID+"/cancel", nil, c.KeyH()).Status)
	require.Equal(t, []string{"stuck: 2 android builds waiting; no online worker takes android",
		"failures: 2 of 2 builds finished in the last hour failed"}, troubles())
	require.Contains(t, string(c.Get("/dashboard/fragment", nil).Body), `<span class="num" id="failed-last-hour">2 / 2</span>`)
	// More than an hour later they are history.
	c.Clock.Advance(time.Hour + time.Second)
	require.Equal(t, []string{"stuck: 2 android builds waiting; no online worker takes android"}, troubles())
}

func TestDashboardHistory(t *testing.T) {
	t.Parallel()
	c := Start(t, WithManualClock())
	s := signedIn(t, c)
	var ids []string // oldest first
	for i := 0; i < 5; i++ {
		platform := "ios"
		if i%2 == 1 {
			platform = "android"
		}
		src := []byte("plain")
		if i == 3 {
			src = appZip(t, `{"expo":{"name":"Coffee Club","version":"2.0.0"}}`)
		}
		r := submitLabelled(t, c, platform, src, "")
		require.Equal(t, http.StatusOK, r.Status)
		ids = append(ids, r.Object(t)["id"].(string))
		c.Clock.Advance(time.Second)
	}
	w := c.Register("pixel-1", "android")
	require.Equal(t, ids[1], c.Poll(w)["id"])
	rows := func(path string) ([]string, string) {
		t.Helper()
		r := s.get(t, path)
		require.Equal(t, http.StatusOK, r.Status, "%s: %s", path, r.Body)
		var out []string
		for _, m := range regexp.MustCompile(`<tr data-build="([^"]+)"`).FindAllStringSubmatch(string(r.Body), -1) {
			out = append(out, m[1])
		}
		next := regexp.MustCompile(`<a href="([^"]+)" id="next-page"`).FindStringSubmatch(string(r.Body))
		if next == nil {
			return out, ""
		}
		return out, strings.ReplaceAll(next[1], "&amp;", "&")
	}

	// Pages of two, newest first, to the end.
	page, next := rows("/builds?limit=2")
	require.Equal(t, []string{ids[4], ids[3]}, page)
	page, next = rows(next)
	require.Equal(t, []string{ids[2], ids[1]}, page)
	page, next = rows(next)
	require.Equal(t, []string{ids[0]}, page)
	require.Empty(t, next)

	// Filters, which the next page keeps.
	page, next = rows("/builds?platform=android&limit=1")
	require.Equal(t, []string{ids[3]}, page)
	require.Contains(t, next, "platform=android")
	page, _ = rows(next)
	require.Equal(t, []string{ids[1]}, page)
	page, _ = rows("/builds?status=assigned")
	require.Equal(t, []string{ids[1]}, page)
	page, _ = rows("/builds?worker_id=" + w)
	require.Equal(t, []string{ids[1]}, page)
	page, _ = rows("/builds?status=&platform=&worker_id=") // the form's "any"
	require.Len(t, page, 5)

	// Search by app name (any case) and by id prefix.
	page, _ = rows("/builds?app=coffee+club")
	require.Equal(t, []string{ids[3]}, page)
	page, _ = rows("/builds?id=" + strings.ToUpper(ids[2][:6]))
	require.Equal(t, []string{ids[2]}, page)
	page, _ = rows("/builds?id=" + ids[2][:6] + "&platform=android")
	require.Empty(t, page)

	// Bad parameters are a page that says why.
	for path, msg := range map[string]string{"/builds?id=xyz": "Invalid id prefix (hex digits and dashes)",
		"/builds?status=nope": "Invalid filter", "/builds?limit=0": "Invalid limit",
		"/builds?before=" + "00000000-0000-4000-8000-000000000000": "Invalid before"} {
		r := s.get(t, path)
		require.Equal(t, http.StatusBadRequest, r.Status, path)
		require.Contains(t, string(r.Body), msg, path)
	}
}

func TestDashboardLogFile(t *testing.T) {
	t.Parallel()
	c := Start(t)
	s := signedIn(t, c)
	b := c.Submit("ios", []byte("x"), nil)
	w := c.Register("w")
	c.Poll(w)
	for i := 0; i < 2500; i++ { // more than a page of the store
		r := c.PostJSON("/api/builds/"+b.ID+"/logs", map[string]string{"level": "info", "message": fmt.Sprint("line ", i)},
			c.KeyH("X-Worker-Id", w))
		require.Equal(t, http.StatusOK, r.Status)
	}
	r := s.get(t, "/builds/"+b.ID+"/log.txt")
	require.Equal(t, http.StatusOK, r.Status)
	require.Equal(t, "text/plain; charset=utf-8", r.Header.Get("Content-Type"))
	require.Equal(t, `attachment; filename="`+b.ID+`.log"`, r.Header.Get("Content-Disposition"))
	lines := strings.Split(strings.TrimSuffix(string(r.Body), "\n"), "\n")
	require.Len(t, lines, 2+2500) // submitted, assigned, the lines
	require.Regexp(t, `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z info Build submitted$`, lines[0])
	require.True(t, strings.HasSuffix(lines[len(lines)-1], " info line 2499"), lines[len(lines)-1])
	r = s.get(t, "/builds/00000000-0000-4000-8000-000000000000/log.txt")
	require.Equal(t, http.StatusNotFound, r.Status)
	require.Contains(t, string(r.Body), "Build not found")
}

// TestDashboardSharedSnapshot: a hundred viewers of the overview at once
// cost one snapshot of the store and one rendering, not a hundred.
func TestDashboardSharedSnapshot(t *testing.T) {
	t.Parallel()
	c := Start(t, WithManualClock())
	for i := 0; i < 5; i++ {
		c.Submit("ios", []byte{byte(i)}, nil)
	}
	c.Register("@@CSRF@@", "ios") // the placeholder as data stays data
	s := signedIn(t, c)
	before := c.App.HTTP.DashboardReads()
	var wg sync.WaitGroup
	bodies := make([]string, 100)
	for i := range bodies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := c.Client.Get(c.URL + "/dashboard/fragment")
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				bodies[i] = string(b)
			}
		}()
	}
	wg.Wait()
	require.LessOrEqual(t, c.App.HTTP.DashboardReads()-before, 1, "one snapshot for a hundred viewers")
	for _, b := range bodies {
		require.Equal(t, bodies[0], b)
	}
	// A signed-in viewer gets its own form token in the shared rendering.
	frag := string(s.get(t, "/dashboard/fragment").Body)
	require.Contains(t, frag, `name="csrf" value="`+s.csrf+`"`)
	require.NotContains(t, frag, `value="@@CSRF@@"`)
	require.NotContains(t, frag, "<td>"+s.csrf+"</td>", "the name is not replaced")
	require.Contains(t, frag, "<td>@@CSRF@@</td>")
	// A change is seen at once.
	c.Submit("android", []byte("new"), nil)
	require.Contains(t, string(c.Get("/dashboard/fragment", nil).Body), ">android<")
}
