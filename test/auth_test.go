package test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/expo-free-agent/controller/cmd/app"
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

// expectedAccess is the auth class every route must have (docs/API.md §1.2,
// §4.12–§4.17), aliases included: public; key (the admin key); keyOrToken
// (the admin key or the addressed build's token); workerKey (the admin or
// worker key); worker (either key with a claimed worker, or a worker
// token); assignee (as worker, and a VM token of the build; heartbeat and
// telemetry also its host token); vm (a VM token only); dashboard (anyone,
// a dashboard session known); session (a dashboard session or the admin
// key); sessionForm (as session, and a session's form token).
var expectedAccess = map[string]string{
	"GET /health": "public", "GET /api/health": "public", "GET /api/stats": "public",
	"GET /api/stats/": "public", "GET /public/stats": "public", "GET /": "dashboard",
	"GET /dashboard/fragment": "dashboard", "GET /dashboard/assets/:name": "public",
	"GET /signin": "dashboard", "POST /signin": "public", "POST /signout": "sessionForm",
	"GET /builds": "session", "GET /builds/:id": "session", "GET /builds/:id/logs.json": "session",
	"GET /builds/:id/logs/stream": "session", "GET /builds/:id/log.txt": "session", "GET /builds/:id/download": "session",
	"POST /builds/:id/cancel": "sessionForm", "POST /builds/:id/retry": "sessionForm",
	"POST /workers/:id/unregister":      "sessionForm",
	"POST /api/builds/:id/authenticate": "public", "GET /api/builds/:id/vm-status": "public",
	"POST /api/builds/submit": "key", "POST /api/builds": "key", "GET /api/builds": "key",
	"GET /api/builds/active": "key", "GET /api/workers/:id/stats": "key",
	"GET /api/diagnostics/:worker_id": "key", "GET /api/diagnostics/:worker_id/latest": "key", "GET /metrics": "key",
	"GET /api/builds/:id/status": "keyOrToken", "GET /api/builds/:id": "keyOrToken",
	"GET /api/builds/:id/logs": "keyOrToken", "GET /api/builds/:id/logs/stream": "keyOrToken", "GET /api/builds/:id/download": "keyOrToken",
	"GET /api/builds/:id/download/:type": "keyOrToken",
	"POST /api/builds/:id/cancel":        "keyOrToken", "POST /api/builds/:id/retry": "keyOrToken",
	"POST /api/workers/register": "workerKey", "POST /api/diagnostics/report": "workerKey",
	"GET /api/workers/poll": "worker", "POST /api/workers/upload": "worker", "POST /api/workers/result": "worker",
	"POST /api/workers/:id/unregister": "worker", "POST /api/workers/unregister": "worker",
	"POST /api/workers/abandon":  "worker",
	"GET /api/builds/:id/source": "assignee", "GET /api/builds/:id/certs": "assignee",
	"GET /api/builds/:id/certs-secure": "assignee", "POST /api/builds/:id/logs": "assignee",
	"POST /api/builds/:id/heartbeat": "assignee", "POST /api/builds/:id/telemetry": "assignee",
	"POST /api/builds/:id/artifact": "assignee",
	"POST /api/builds/:id/vm-ready": "vm",
}

// credentialRefusals are the answers that refuse a credential (as opposed
// to what the route says once it admitted the caller).
var credentialRefusals = map[string]bool{
	"Missing X-API-Key header": true, "Invalid API key": true, "Missing X-API-Key or X-Build-Token header": true,
	"Invalid or expired build token": true, "Invalid or expired worker token": true,
	"Invalid or expired VM token": true, "Missing X-VM-Token header": true,
}

// concrete fills a route pattern with real ids and adds the worker claim
// that poll and heartbeat read from the query.
func concrete(pattern, buildID, workerID string) string {
	p := strings.NewReplacer(":worker_id", workerID, ":name", "dashboard.css", ":type", "source").Replace(pattern)
	if strings.HasPrefix(p, "/api/workers/:id") || strings.HasPrefix(p, "/workers/:id") {
		p = strings.Replace(p, ":id", workerID, 1)
	}
	return strings.Replace(p, ":id", buildID, 1) + "?worker_id=" + workerID
}

// matrixFixture is one controller with a build ("mine") assigned to a
// worker of the newer generation whose VM is ready, and every kind of
// credential for it.
type matrixFixture struct {
	c                                  *Controller
	mine, other                        Submitted
	worker, workerToken, vm, hostToken string
}

func newMatrixFixture(t *testing.T) *matrixFixture {
	c := Start(t, WithConfig(func(cfg *app.Config) { cfg.WorkerKey = testWorkerKey }))
	f := &matrixFixture{c: c, mine: c.Submit("ios", []byte("mine"), DefaultCerts(t))}
	f.other = c.Submit("ios", []byte("other"), nil)
	f.worker, f.workerToken = c.RegisterV2("auth-worker")
	job := c.PollToken(f.workerToken)["job"].(map[string]any)
	require.Equal(t, f.mine.ID, job["id"])
	f.vm = c.Authenticate(f.mine.ID, job["otp"].(string))
	f.hostToken = c.HostToken(f.mine.ID, f.vm)
	return f
}

// TestAuthMatrix walks the controller's route table: every route has the
// access rule it must have, and answers every kind of caller — none, a wrong
// key, the worker key, a build token (another build's and its own), a worker
// token (valid and not), a VM token, a host token, a bad X-VM-Token — as
// that rule says. Each route gets a fresh controller, so what one admitted
// call does (a cancel, an unregister) cannot change another's answers.
func TestAuthMatrix(t *testing.T) {
	t.Parallel()
	routes := Start(t).App.HTTP.Routes()
	walked := map[string]bool{}
	for _, rt := range routes {
		name := rt.Method + " " + rt.Path
		walked[name] = true
		class, ok := expectedAccess[name]
		require.True(t, ok, "route %s is not in the auth matrix", name)
		require.Equal(t, class, rt.Access, "route %s has the wrong access rule", name)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := newMatrixFixture(t)
			path := concrete(rt.Path, f.mine.ID, f.worker)
			do := func(h H) Response { return f.c.Do(rt.Method, path, nil, h) }
			refused := func(r Response, status int, msg string, who string) {
				t.Helper()
				require.Equal(t, status, r.Status, "%s: %s", who, r.Body)
				require.Equal(t, msg, r.Error(t), who)
			}
			admitted := func(r Response, who string) {
				t.Helper()
				if r.Status == http.StatusUnauthorized || r.Status == http.StatusForbidden {
					require.False(t, strings.HasPrefix(r.Header.Get("Content-Type"), "text/html") || credentialRefusals[r.Error(t)],
						"%s refused: %s", who, r.Body)
				}
			}
			f.checkClass(t, class, name, do, refused, admitted)
		})
	}
	for name := range expectedAccess {
		require.True(t, walked[name], "the route table lacks %s", name)
	}
}

// checkClass sends one route every kind of caller and checks the answers
// of its class.
func (f *matrixFixture) checkClass(t *testing.T, class, route string, do func(H) Response,
	refused func(Response, int, string, string), admitted func(Response, string)) {
	t.Helper()
	none, wrong := do(nil), do(H{"X-API-Key": "wrong-key-wrong-key"})
	// The worker token before the worker key: an admitted unregister revokes it.
	wt, badWT := do(H{"X-Worker-Token": f.workerToken}), do(H{"X-Worker-Token": "not-a-worker-token"})
	workerKey := do(H{"X-API-Key": testWorkerKey})
	otherToken, ownToken := do(H{"X-Build-Token": f.other.Token}), do(H{"X-Build-Token": f.mine.Token})
	vm, host, badVM := do(H{"X-VM-Token": f.vm}), do(H{"X-VM-Token": f.hostToken}), do(H{"X-VM-Token": "not-a-vm-token"})
	const missing, invalid = "Missing X-API-Key header", "Invalid API key"
	switch class {
	case "public", "dashboard":
		for who, r := range map[string]Response{"none": none, "wrong key": wrong, "other token": otherToken,
			"worker token": wt, "vm token": vm} {
			admitted(r, who)
			require.Less(t, r.Status, 500, "%s: %s", who, r.Body)
		}
	case "session", "sessionForm":
		// No session: 401 Sign-in required (a page answers with the sign-in
		// form); no API credential but the admin key opens it.
		signIn := func(r Response, who string) {
			t.Helper()
			require.Equal(t, http.StatusUnauthorized, r.Status, "%s: %s", who, r.Body)
			if strings.HasPrefix(r.Header.Get("Content-Type"), "text/html") {
				require.Contains(t, string(r.Body), `action="/signin"`, who)
			} else {
				require.Equal(t, "Sign-in required", r.Error(t), who)
			}
		}
		for who, r := range map[string]Response{"none": none, "own build token": ownToken, "worker token": wt,
			"vm token": vm, "host token": host} {
			signIn(r, who)
		}
		for who, r := range map[string]Response{"wrong key": wrong, "worker key": workerKey} {
			require.Equal(t, http.StatusForbidden, r.Status, "%s: %s", who, r.Body)
			require.NotContains(t, string(r.Body), `action="/signin"`, who)
		}
		admitted(do(H{"X-API-Key": testKey}), "admin key")
	case "key", "keyOrToken":
		want := missing
		if class == "keyOrToken" {
			want = "Missing X-API-Key or X-Build-Token header"
		}
		refused(none, http.StatusUnauthorized, want, "none")
		refused(wrong, http.StatusForbidden, invalid, "wrong key")
		refused(workerKey, http.StatusForbidden, invalid, "worker key: least privilege")
		for who, r := range map[string]Response{"worker token": wt, "bad worker token": badWT, "vm token": vm,
			"host token": host, "bad vm token": badVM} {
			refused(r, http.StatusUnauthorized, want, who+" opens no admin route")
		}
		if class == "key" {
			refused(ownToken, http.StatusUnauthorized, missing, "a build token opens only its build's routes")
		} else {
			refused(otherToken, http.StatusForbidden, "Invalid or expired build token", "other build's token")
			admitted(ownToken, "own build token")
		}
	case "workerKey", "worker", "assignee":
		refused(none, http.StatusUnauthorized, missing, "none")
		refused(wrong, http.StatusForbidden, invalid, "wrong key")
		refused(ownToken, http.StatusUnauthorized, missing, "build token")
		admitted(workerKey, "worker key")
		if class == "workerKey" {
			refused(wt, http.StatusUnauthorized, missing, "worker token")
			break
		}
		admitted(wt, "worker token")
		refused(badWT, http.StatusUnauthorized, "Invalid or expired worker token", "bad worker token")
		if class == "worker" {
			refused(vm, http.StatusUnauthorized, missing, "vm token")
			break
		}
		admitted(vm, "vm token")
		refused(badVM, http.StatusUnauthorized, "Invalid or expired VM token", "bad vm token")
		if strings.HasSuffix(route, "/heartbeat") || strings.HasSuffix(route, "/telemetry") {
			admitted(host, "host token")
		} else {
			refused(host, http.StatusUnauthorized, "Invalid or expired VM token", "a host token opens only heartbeat and telemetry")
		}
	case "vm":
		for who, r := range map[string]Response{"none": none, "admin key": do(H{"X-API-Key": testKey}),
			"worker token": wt} {
			refused(r, http.StatusUnauthorized, "Missing X-VM-Token header", who)
		}
		admitted(vm, "vm token")
		refused(host, http.StatusUnauthorized, "Invalid or expired VM token", "host token")
		refused(badVM, http.StatusUnauthorized, "Invalid or expired VM token", "bad vm token")
	default:
		t.Fatalf("unknown class %q", class)
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
