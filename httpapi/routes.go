package httpapi

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/expo-free-agent/controller/actors/queue"
)

// route is one row of the route table: what serves a path, who may call it,
// and its wording.
type route struct {
	method  string
	paths   []string // the path and its aliases
	handle  echo.HandlerFunc
	access  access
	fail    string // the fixed message of its 500 answer
	notMine string // its 403 for a worker that is not the build's assignee
	// failSource is the 500 message when :type is "source" (a download of
	// the source on the result's route).
	failSource string
	// page: an HTML page of the dashboard, whose errors are pages too.
	page bool
	// storesFiles marks a route that writes new files: under
	// --min-free-disk it is refused (507) before its body is read.
	storesFiles bool
	// override rewords entries of the answers table for this route.
	override []struct {
		err error
		answer
	}
}

// failMessage is the route's fixed 500 message.
func (r *route) failMessage(c echo.Context) string {
	switch {
	case r == nil:
		return msgInternal
	case r.failSource != "" && c.Param("type") == "source":
		return r.failSource
	case r.fail != "":
		return r.fail
	}
	return msgInternal
}

// routes is the route table (docs/API.md, Route index).
func (s *Server) routes() []*route {
	metrics := adminOnly
	if s.cfg.MetricsPublic {
		metrics = public
	}
	// The build pages, history and logs may show secrets: signed in only,
	// unless --dashboard-public.
	buildPages := signedIn
	if s.cfg.DashboardPublic {
		buildPages = dashboardOpen
	}
	return []*route{
		// Developers (§2).
		{method: http.MethodPost, paths: []string{"/api/builds/submit", "/api/builds"}, handle: s.submit, access: adminOnly, fail: msgSubmitFailed,
			storesFiles: true},
		{method: http.MethodGet, paths: []string{"/api/builds"}, handle: s.listBuilds, access: adminOnly},
		{method: http.MethodGet, paths: []string{"/api/builds/active"}, handle: s.activeBuilds, access: adminOnly},
		{method: http.MethodGet, paths: []string{"/api/builds/:id/status", "/api/builds/:id"}, handle: s.buildStatus, access: adminOrToken},
		{method: http.MethodGet, paths: []string{"/api/builds/:id/logs"}, handle: s.getLogs, access: adminOrToken},
		{method: http.MethodGet, paths: []string{"/api/builds/:id/logs/stream"}, handle: s.logStream, access: adminOrTokenStream},
		{method: http.MethodGet, paths: []string{"/api/builds/:id/download", "/api/builds/:id/download/:type"}, handle: s.download,
			access: adminOrToken, fail: msgReadResultFailed, failSource: msgReadSourceFailed},
		{method: http.MethodPost, paths: []string{"/api/builds/:id/cancel"}, handle: s.cancel, access: adminOrToken, fail: msgCancelFailed,
			override: []struct {
				err error
				answer
			}{{queue.ErrFinished, answer{http.StatusBadRequest, msgBuildFinished}}}},
		{method: http.MethodPost, paths: []string{"/api/builds/:id/retry"}, handle: s.retry, access: adminOrToken, fail: msgRetryFailed,
			storesFiles: true},

		// Workers (§4).
		{method: http.MethodPost, paths: []string{"/api/workers/register"}, handle: s.register, access: workerKeyOnly, fail: msgRegisterFailed},
		{method: http.MethodGet, paths: []string{"/api/workers/poll"}, handle: s.poll, access: pollingWorker, fail: msgPollFailed},
		{method: http.MethodGet, paths: []string{"/api/builds/:id/source"}, handle: s.workerSource, access: assigneeFiles,
			fail: msgReadSourceFailed, notMine: msgWorkerNotAuthorized},
		{method: http.MethodGet, paths: []string{"/api/builds/:id/certs"}, handle: s.workerCerts, access: assigneeFiles,
			fail: msgReadCertsFailed, notMine: msgWorkerNotAuthorized},
		{method: http.MethodGet, paths: []string{"/api/builds/:id/certs-secure"}, handle: s.certsSecure, access: assigneeCerts,
			fail: msgCertsSecureFailed, notMine: msgWorkerNotAssigned},
		{method: http.MethodPost, paths: []string{"/api/builds/:id/logs"}, handle: s.postLogs, access: assigneeFiles,
			fail: msgAddLogFailed, notMine: msgWorkerNotAuthorized},
		{method: http.MethodPost, paths: []string{"/api/builds/:id/heartbeat"}, handle: s.heartbeat, access: assigneeBeat,
			fail: msgHeartbeatFailed, notMine: msgNotAssignedToWorker},
		{method: http.MethodPost, paths: []string{"/api/builds/:id/telemetry"}, handle: s.telemetry, access: telemetryCaller,
			fail: msgTelemetryFailed, notMine: msgWorkerNotAssigned},
		{method: http.MethodPost, paths: []string{"/api/workers/upload", "/api/workers/result"}, handle: s.upload, access: workerCaller,
			fail: msgUploadFailed, notMine: msgNotAssignedToWorker, storesFiles: true},
		{method: http.MethodPost, paths: []string{"/api/workers/:id/unregister", "/api/workers/unregister"}, handle: s.unregister,
			access: workerCaller, fail: msgUnregisterFailed},
		{method: http.MethodPost, paths: []string{"/api/workers/abandon"}, handle: s.abandon, access: workerCaller,
			fail: msgAbandonFailed, notMine: msgNotAssignedToWorker},
		{method: http.MethodGet, paths: []string{"/api/workers/:id/stats"}, handle: s.workerStats, access: adminOnly, fail: msgWorkerStatsFailed},
		{method: http.MethodPost, paths: []string{"/api/diagnostics/report"}, handle: s.addDiagnostic, access: workerKeyOnly, fail: msgSaveDiagFailed},

		// The build VM of the newer worker generation (§4.13, §4.14).
		{method: http.MethodPost, paths: []string{"/api/builds/:id/authenticate"}, handle: s.authenticate, access: public,
			fail: msgAuthenticateFailed},
		{method: http.MethodPost, paths: []string{"/api/builds/:id/vm-ready"}, handle: s.vmReady, access: vmOnly, fail: msgVMReadyFailed},
		{method: http.MethodGet, paths: []string{"/api/builds/:id/vm-status"}, handle: s.vmStatus, access: public, fail: msgVMStatusFailed},
		{method: http.MethodPost, paths: []string{"/api/builds/:id/artifact"}, handle: s.artifact, access: artifactor,
			fail: msgUploadFailed, notMine: msgNotAssignedToWorker, storesFiles: true},
		{method: http.MethodGet, paths: []string{"/api/diagnostics/:worker_id"}, handle: s.listDiagnostics, access: adminOnly, fail: msgFetchDiagFailed},
		{method: http.MethodGet, paths: []string{"/api/diagnostics/:worker_id/latest"}, handle: s.latestDiagnostic, access: adminOnly, fail: msgFetchDiagFailed},

		// Public (§3), the dashboard and the metrics.
		{method: http.MethodGet, paths: []string{"/health", "/api/health"}, handle: cors(s.health), access: public},
		{method: http.MethodGet, paths: []string{"/api/stats", "/api/stats/", "/public/stats"}, handle: cors(s.publicStats), access: public},
		{method: http.MethodGet, paths: []string{"/"}, handle: s.dashboardPage, access: dashboardOpen, page: true},
		{method: http.MethodGet, paths: []string{"/dashboard/fragment"}, handle: s.dashboardFragment, access: dashboardOpen},
		{method: http.MethodGet, paths: []string{"/dashboard/assets/:name"}, handle: s.dashboardAsset, access: public},
		{method: http.MethodGet, paths: []string{"/signin"}, handle: s.signInPage, access: dashboardOpen, page: true},
		{method: http.MethodPost, paths: []string{"/signin"}, handle: s.signIn, access: public, page: true},
		{method: http.MethodPost, paths: []string{"/signout"}, handle: s.signOut, access: signedInForm, page: true},
		{method: http.MethodGet, paths: []string{"/builds"}, handle: s.historyPage, access: buildPages, page: true},
		{method: http.MethodGet, paths: []string{"/builds/:id"}, handle: s.buildPage, access: buildPages, page: true},
		{method: http.MethodGet, paths: []string{"/builds/:id/logs.json"}, handle: s.buildPageLogs, access: buildPages},
		{method: http.MethodGet, paths: []string{"/builds/:id/logs/stream"}, handle: s.logStream, access: buildPages},
		{method: http.MethodGet, paths: []string{"/builds/:id/log.txt"}, handle: s.buildLogText, access: buildPages, page: true},
		{method: http.MethodGet, paths: []string{"/builds/:id/download"}, handle: s.download, access: signedIn, page: true,
			fail: msgReadResultFailed},
		{method: http.MethodPost, paths: []string{"/builds/:id/cancel"}, handle: s.dashboardCancel, access: signedInForm, page: true,
			fail: msgCancelFailed, override: []struct {
				err error
				answer
			}{{queue.ErrFinished, answer{http.StatusBadRequest, msgBuildFinished}}}},
		{method: http.MethodPost, paths: []string{"/builds/:id/retry"}, handle: s.dashboardRetry, access: signedInForm, page: true,
			fail: msgRetryFailed, storesFiles: true},
		{method: http.MethodPost, paths: []string{"/workers/:id/unregister"}, handle: s.dashboardUnregister, access: signedInForm,
			page: true, fail: msgUnregisterFailed},
		{method: http.MethodGet, paths: []string{"/metrics"}, handle: s.metricsHandler(), access: metrics},
	}
}

const ctxRoute = "route"

// routeOf returns the request's row of the route table, or nil before
// routing.
func routeOf(c echo.Context) *route {
	r, _ := c.Get(ctxRoute).(*route)
	return r
}

// echo builds the router from the table. Each route runs: its row is
// recorded, a panic becomes its 500, the caller is resolved or refused, a
// route that stores files is refused under the free-space floor, the
// handler runs.
func (s *Server) echo() *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort, e.Debug = true, true, false
	e.HTTPErrorHandler = s.errorHandler
	e.Use(s.logRequests, s.guardBody, refuseOptions)
	for _, r := range s.table {
		r := r
		withRoute := func(next echo.HandlerFunc) echo.HandlerFunc {
			return func(c echo.Context) error {
				c.Set(ctxRoute, r)
				return next(c)
			}
		}
		mw := []echo.MiddlewareFunc{withRoute, s.recoverPanics, s.authorize(r)}
		if r.storesFiles {
			mw = append(mw, s.needsDisk)
		}
		for _, p := range r.paths {
			e.Add(r.method, p, r.handle, mw...)
		}
	}
	return e
}

// RouteInfo is one registered route and the name of its access rule
// ("public", "key", "keyOrToken", "workerKey", "worker", "assignee", "vm",
// "dashboard", "session", "sessionForm"),
// for the auth-matrix test.
type RouteInfo struct {
	Method, Path, Access string
}

// Routes lists the route table, aliases included.
func (s *Server) Routes() []RouteInfo {
	var out []RouteInfo
	for _, r := range s.table {
		for _, p := range r.paths {
			out = append(out, RouteInfo{Method: r.method, Path: p, Access: r.access.name})
		}
	}
	return out
}

// refuseOptions answers OPTIONS on a known path like any other wrong method
// (Echo would answer 204): 405 Method not allowed with the Allow header.
func refuseOptions(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if c.Request().Method == http.MethodOptions {
			if _, known := c.Get(echo.ContextKeyHeaderAllow).(string); known {
				return echo.ErrMethodNotAllowed
			}
		}
		return next(c)
	}
}

// cors lets the project's landing page read the public endpoints.
func cors(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		c.Response().Header().Set(echo.HeaderAccessControlAllowOrigin, "*")
		return next(c)
	}
}
