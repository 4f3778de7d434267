package httpapi

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/expo-free-agent/controller/actors/files"
	"github.com/expo-free-agent/controller/actors/queue"
	"github.com/expo-free-agent/controller/store"
)

// apiError is an answer with a client-safe message. cause, when set, is only
// logged.
type apiError struct {
	status int
	msg    string
	cause  error
}

func (e *apiError) Error() string {
	if e.cause != nil {
		return fmt.Sprintf("%d %s: %v", e.status, e.msg, e.cause)
	}
	return fmt.Sprintf("%d %s", e.status, e.msg)
}

func (e *apiError) Unwrap() error { return e.cause }

// fail is an answer with status and message.
func fail(status int, msg string) error { return &apiError{status: status, msg: msg} }

// internal is a 500 with a message other than the route's own (a download
// of the source on the result's route); cause goes to the log.
func internal(msg string, cause error) error {
	return &apiError{status: http.StatusInternalServerError, msg: msg, cause: cause}
}

// tooLarge is a 413 after which the connection is closed, because the rest of
// the body is not read.
func tooLarge(msg string) error {
	return closing(fail(http.StatusRequestEntityTooLarge, msg))
}

// closedConn marks an answer given before the request body was read to its
// end: the connection is closed after it.
type closedConn struct{ error }

func (e closedConn) Unwrap() error { return e.error }

// closing marks err as answered before the body was read to its end.
func closing(err error) error {
	if err == nil {
		return nil
	}
	return closedConn{err}
}

// answer is what a client is told.
type answer struct {
	status int
	msg    string // "" in the table: the route's own wording
}

// answers is the one table from the errors of the actors and the store to
// what a client is told (docs/ERRORS.md). Handlers return these errors
// unchanged; a route may override an entry (route.override), and a route's
// refusal of a worker that is not the assignee uses its own 403 text
// (route.notMine). Every other error is the route's fixed 500 message, with
// the detail logged and never sent.
var answers = []struct {
	err error
	answer
}{
	{store.ErrNotFound, answer{http.StatusNotFound, msgBuildNotFound}},
	{store.ErrWorkerNotFound, answer{http.StatusNotFound, msgWorkerNotFound}},
	{store.ErrNotAssignee, answer{http.StatusForbidden, ""}},
	{queue.ErrFinished, answer{http.StatusConflict, msgBuildFinished}},
	{queue.ErrNotFinished, answer{http.StatusConflict, msgBuildInProgress}},
	{queue.ErrFilesGone, answer{http.StatusBadRequest, msgSourceGone}},
	{store.ErrPurged, answer{http.StatusGone, msgFilesExpired}},
	{store.ErrOTPInvalid, answer{http.StatusUnauthorized, msgInvalidOTP}},
	{store.ErrOTPExpired, answer{http.StatusUnauthorized, msgOTPExpired}},
	{queue.ErrTooManyRetries, answer{http.StatusTooManyRequests, msgTooManyRetries}},
	// A volume that filled up under a write: nothing was kept, and the
	// same request succeeds once space is freed.
	{files.ErrNoSpace, answer{http.StatusInsufficientStorage, msgInsufficientStorage}},
	{store.ErrFull, answer{http.StatusInsufficientStorage, msgInsufficientStorage}},
}

// answerFor decides the answer to err on route r for caller cl.
func answerFor(err error, r *route, cl Caller) (answer, bool) {
	var ae *apiError
	if errors.As(err, &ae) {
		return answer{ae.status, ae.msg}, true
	}
	if r == nil {
		return answer{}, false
	}
	// A keyless caller (the host's CPU monitor, §4.7) is told only that it
	// has no key, whatever is wrong with the assignment it names.
	if cl.Keyless &&
		(errors.Is(err, store.ErrNotAssignee) || errors.Is(err, store.ErrNotFound)) {
		return answer{http.StatusUnauthorized, msgMissingKey}, true
	}
	for _, o := range r.override {
		if errors.Is(err, o.err) {
			return o.answer, true
		}
	}
	for _, a := range answers {
		if !errors.Is(err, a.err) {
			continue
		}
		out := a.answer
		if out.msg == "" {
			out.msg = r.notMine // the only entry without wording is the 403
		}
		if out.msg == "" { // no wording for it on this route: an internal error
			return answer{}, false
		}
		return out, true
	}
	return answer{}, false
}

// errorHandler is the one place errors become answers: always
// {"error": "<message>"}; internal details only reach the log.
func (s *Server) errorHandler(err error, c echo.Context) {
	r := routeOf(c)
	a, known := answerFor(err, r, callerOf(c))
	var (
		cc closedConn
		he *echo.HTTPError
	)
	if errors.As(err, &cc) {
		c.Response().Header().Set(echo.HeaderConnection, "close")
	}
	switch {
	case known:
	case errors.As(err, &he):
		a = s.echoAnswer(c, he)
	default:
		a = answer{http.StatusInternalServerError, r.failMessage(c)}
	}
	if a.status >= 500 {
		s.log.Error("request failed", "method", c.Request().Method, "route", routeName(c),
			"status", a.status, "answer", a.msg, "err", err)
	}
	if c.Response().Committed {
		return
	}
	if r != nil && r.page {
		if err := s.pageError(c, a); err != nil {
			s.log.Debug("writing error page", "err", err)
		}
		return
	}
	if err := c.JSON(a.status, map[string]string{"error": a.msg}); err != nil {
		s.log.Debug("writing error answer", "err", err)
	}
}

// echoAnswer is the answer to Echo's own errors: routing and body limits.
func (s *Server) echoAnswer(c echo.Context, he *echo.HTTPError) answer {
	switch he.Code {
	case http.StatusNotFound:
		return answer{he.Code, msgNotFound}
	case http.StatusMethodNotAllowed:
		if allow, ok := c.Get(echo.ContextKeyHeaderAllow).(string); ok {
			// Echo lists OPTIONS, which we refuse too.
			c.Response().Header().Set(echo.HeaderAllow, strings.TrimPrefix(allow, "OPTIONS, "))
		}
		return answer{he.Code, msgMethodNotAllowed}
	case http.StatusRequestEntityTooLarge:
		c.Response().Header().Set(echo.HeaderConnection, "close")
		return answer{he.Code, msgBodyTooLarge}
	}
	if he.Code >= 500 {
		return answer{http.StatusInternalServerError, routeOf(c).failMessage(c)}
	}
	return answer{he.Code, http.StatusText(he.Code)}
}

func routeName(c echo.Context) string {
	if p := c.Path(); p != "" {
		return p
	}
	return "(unmatched)"
}

// recoverPanics turns a handler panic into the route's fixed 500, logging the
// panic and its stack.
func (s *Server) recoverPanics(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if r := recover(); r != nil {
				if r == http.ErrAbortHandler {
					panic(r)
				}
				err = fmt.Errorf("panic: %v\n%s", r, debug.Stack())
			}
		}()
		return next(c)
	}
}

// logRequests writes one line per request: method, route, status, duration.
// It never logs headers, query strings or bodies, so no key, token or
// password can reach the log.
func (s *Server) logRequests(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			c.Error(err)
		}
		status := c.Response().Status
		level := slog.LevelInfo
		if status >= 500 {
			level = slog.LevelError
		}
		elapsed := time.Since(start)
		s.log.Log(c.Request().Context(), level, "request", "method", c.Request().Method, "route", routeName(c),
			"status", status, "duration_ms", float64(elapsed.Microseconds())/1000,
			"bytes_out", c.Response().Size)
		s.metrics.observeRequest(c.Request().Method, routeName(c), status, elapsed)
		return nil
	}
}
