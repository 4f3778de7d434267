package test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// endpoint is one route for the auth matrix.
type endpoint struct {
	method, path string
	class        string // public, key, keyOrToken, worker
}

// allEndpoints lists the API routes with concrete ids and their auth class
// (§1.2), aliases included; the security tests send hostile input to each.
func allEndpoints(buildID, workerID string) []endpoint {
	b := "/api/builds/" + buildID
	return []endpoint{
		{"GET", "/health", "public"}, {"GET", "/api/health", "public"}, {"GET", "/api/stats", "public"},
		{"GET", "/api/stats/", "public"}, {"GET", "/public/stats", "public"}, {"GET", "/", "public"},
		{"POST", "/api/builds/submit", "key"}, {"POST", "/api/builds", "key"}, {"GET", "/api/builds", "key"},
		{"GET", "/api/builds/active", "key"},
		{"POST", "/api/workers/register", "key"}, {"GET", "/api/workers/poll?worker_id=" + workerID, "key"},
		{"POST", "/api/workers/upload", "key"}, {"POST", "/api/workers/result", "key"},
		{"POST", "/api/workers/" + workerID + "/unregister", "key"}, {"POST", "/api/workers/unregister", "key"},
		{"GET", "/api/workers/" + workerID + "/stats", "key"},
		{"POST", "/api/diagnostics/report", "key"}, {"GET", "/api/diagnostics/" + workerID, "key"},
		{"GET", "/api/diagnostics/" + workerID + "/latest", "key"}, {"GET", "/metrics", "key"},
		{"GET", b + "/status", "keyOrToken"}, {"GET", b, "keyOrToken"}, {"GET", b + "/logs", "keyOrToken"},
		{"GET", b + "/download", "keyOrToken"}, {"GET", b + "/download/source", "keyOrToken"},
		{"POST", b + "/cancel", "keyOrToken"}, {"POST", b + "/retry", "keyOrToken"},
		{"GET", b + "/source", "worker"}, {"GET", b + "/certs", "worker"}, {"GET", b + "/certs-secure", "worker"},
		{"POST", b + "/logs", "worker"}, {"POST", b + "/heartbeat?worker_id=" + workerID, "worker"},
	}
}

// expectedAccess is the auth class every route must have (docs/API.md §1.2),
// aliases included: public, key (the admin key), keyOrToken (the key or the
// addressed build's token) or worker (the key and a claimed worker; for
// telemetry also no credential at all, which is refused with the key's 401
// when the claim names nothing).
var expectedAccess = map[string]string{
	"GET /health": "public", "GET /api/health": "public", "GET /api/stats": "public",
	"GET /api/stats/": "public", "GET /public/stats": "public", "GET /": "public",
	"GET /dashboard/fragment": "public", "GET /dashboard/assets/:name": "public",
	"GET /builds/:id": "public", "GET /builds/:id/logs.json": "public",
	"POST /api/builds/submit": "key", "POST /api/builds": "key", "GET /api/builds": "key",
	"GET /api/builds/active":     "key",
	"POST /api/workers/register": "key", "GET /api/workers/poll": "key",
	"POST /api/workers/upload": "key", "POST /api/workers/result": "key",
	"POST /api/workers/:id/unregister": "key", "POST /api/workers/unregister": "key",
	"GET /api/workers/:id/stats":   "key",
	"POST /api/diagnostics/report": "key", "GET /api/diagnostics/:worker_id": "key",
	"GET /api/diagnostics/:worker_id/latest": "key", "GET /metrics": "key",
	"GET /api/builds/:id/status": "keyOrToken", "GET /api/builds/:id": "keyOrToken",
	"GET /api/builds/:id/logs": "keyOrToken", "GET /api/builds/:id/download": "keyOrToken",
	"GET /api/builds/:id/download/:type": "keyOrToken",
	"POST /api/builds/:id/cancel":        "keyOrToken", "POST /api/builds/:id/retry": "keyOrToken",
	"GET /api/builds/:id/source": "worker", "GET /api/builds/:id/certs": "worker",
	"GET /api/builds/:id/certs-secure": "worker", "POST /api/builds/:id/logs": "worker",
	"POST /api/builds/:id/heartbeat": "worker", "POST /api/builds/:id/telemetry": "worker",
}

// concrete fills a route pattern with real ids and adds the worker claim
// that poll and heartbeat read from the query.
func concrete(pattern, buildID, workerID string) string {
	p := strings.NewReplacer(":worker_id", workerID, ":name", "dashboard.css", ":type", "source").Replace(pattern)
	if strings.HasPrefix(p, "/api/workers/:id") {
		p = strings.Replace(p, ":id", workerID, 1)
	}
	return strings.Replace(p, ":id", buildID, 1) + "?worker_id=" + workerID
}

// TestAuthMatrix walks the controller's route table: every route has the
// access rule it must have, and answers no credentials, a wrong key, another
// build's token and the right build's token alone as that rule says.
func TestAuthMatrix(t *testing.T) {
	t.Parallel()
	c := Start(t)
	mine := c.Submit("ios", []byte("mine"), DefaultCerts(t))
	other := c.Submit("ios", []byte("other"), nil)
	w := c.Register("auth-worker")
	routes := c.App.HTTP.Routes()
	walked := map[string]bool{}
	for _, rt := range routes {
		name := rt.Method + " " + rt.Path
		walked[name] = true
		class, ok := expectedAccess[name]
		require.True(t, ok, "route %s is not in the auth matrix", name)
		require.Equal(t, class, rt.Access, "route %s has the wrong access rule", name)
		path := concrete(rt.Path, mine.ID, w)
		do := func(h H) Response { return c.Do(rt.Method, path, nil, h) }
		t.Run(name, func(t *testing.T) {
			none, wrong := do(nil), do(H{"X-API-Key": "wrong-key-wrong-key"})
			otherToken, ownToken := do(H{"X-Build-Token": other.Token}), do(H{"X-Build-Token": mine.Token})
			switch class {
			case "public":
				for _, r := range []Response{none, wrong, otherToken} {
					require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
				}
			case "key", "worker":
				require.Equal(t, http.StatusUnauthorized, none.Status)
				require.Equal(t, "Missing X-API-Key header", none.Error(t))
				require.Equal(t, http.StatusForbidden, wrong.Status)
				require.Equal(t, "Invalid API key", wrong.Error(t))
				// A token opens nothing but its own build's key-or-token endpoints.
				require.Equal(t, http.StatusUnauthorized, ownToken.Status)
				require.Equal(t, "Missing X-API-Key header", ownToken.Error(t))
			case "keyOrToken":
				require.Equal(t, http.StatusUnauthorized, none.Status)
				require.Equal(t, "Missing X-API-Key or X-Build-Token header", none.Error(t))
				require.Equal(t, http.StatusForbidden, wrong.Status)
				require.Equal(t, "Invalid API key", wrong.Error(t))
				require.Equal(t, http.StatusForbidden, otherToken.Status)
				require.Equal(t, "Invalid or expired build token", otherToken.Error(t))
				require.NotEqual(t, http.StatusUnauthorized, ownToken.Status)
				require.NotEqual(t, http.StatusForbidden, ownToken.Status, "%s", ownToken.Body)
				// The CLI sends a stale key next to the token: the token wins.
				both := do(H{"X-API-Key": "stale-key-stale-key", "X-Build-Token": mine.Token})
				require.NotContains(t, []int{http.StatusUnauthorized, http.StatusForbidden}, both.Status, "%s", both.Body)
				// A wrong key next to another build's token.
				wk := do(H{"X-API-Key": "stale-key-stale-key", "X-Build-Token": other.Token})
				require.Equal(t, http.StatusForbidden, wk.Status)
				require.Equal(t, "Invalid API key", wk.Error(t))
			}
		})
	}
	for name := range expectedAccess {
		require.True(t, walked[name], "the route table lacks %s", name)
	}
}

func TestKeyOrTokenOrder(t *testing.T) {
	t.Parallel()
	c := Start(t)
	b := c.Submit("ios", []byte("s"), nil)
	unknown := "00000000-0000-4000-8000-000000000000"
	cases := []struct {
		name   string
		path   string
		h      H
		status int
		msg    string
	}{
		{"TokenForUnknownBuild", "/api/builds/" + unknown + "/status", H{"X-Build-Token": b.Token}, 403, "Invalid or expired build token"},
		{"TokenWithNonUUID", "/api/builds/nope/status", H{"X-Build-Token": b.Token}, 404, "Build not found"},
		{"KeyWithNonUUID", "/api/builds/nope/status", H{"X-API-Key": testKey}, 404, "Build not found"},
		{"WrongKeyNoToken", "/api/builds/" + b.ID + "/status", H{"X-API-Key": "nope-nope-nope-nope"}, 403, "Invalid API key"},
		{"EmptyHeaders", "/api/builds/" + b.ID + "/status", H{"X-API-Key": "", "X-Build-Token": ""}, 401, "Missing X-API-Key or X-Build-Token header"},
		{"GarbageToken", "/api/builds/" + b.ID + "/status", H{"X-Build-Token": "garbage"}, 403, "Invalid or expired build token"},
		{"TokenOnList", "/api/builds", H{"X-Build-Token": b.Token}, 401, "Missing X-API-Key header"},
		{"UnknownRouteWithoutCredentials", "/api/nothing/here", nil, 404, "Not found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := c.Get(tc.path, tc.h)
			require.Equal(t, tc.status, r.Status, "%s", r.Body)
			require.Equal(t, tc.msg, r.Error(t))
		})
	}
}
