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
)

// apiError is an answer with a client-safe message. cause, when set, is only
// logged.
type apiError struct {
	status    int
	msg       string
	cause     error
	closeConn bool // the request body was not read to its end
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

// internal is a 500 with the endpoint's fixed message; cause goes to the log.
func internal(msg string, cause error) error {
	return &apiError{status: http.StatusInternalServerError, msg: msg, cause: cause}
}

// tooLarge is a 413 after which the connection is closed, because the rest of
// the body is not read.
func tooLarge(msg string) error {
	return &apiError{status: http.StatusRequestEntityTooLarge, msg: msg, closeConn: true}
}

const (
	msgNotFound         = "Not found"
	msgMethodNotAllowed = "Method not allowed"
	msgInternal         = "Internal server error"
	msgInvalidJSON      = "Invalid JSON body"
	msgBodyTooLarge     = "Request body too large"
	msgInvalidMultipart = "Invalid multipart body"
	msgBuildNotFound    = "Build not found"
	msgWorkerNotFound   = "Worker not found"
)

// ctxFailMsg is the context key of the route's fixed 500 message.
const ctxFailMsg = "fail_msg"

// failMsg returns the fixed 500 message of the current route.
func failMsg(c echo.Context) string {
	if m, ok := c.Get(ctxFailMsg).(string); ok && m != "" {
		return m
	}
	return msgInternal
}

// errorHandler is the one place errors become answers: always
// {"error": "<message>"}; internal details only reach the log.
func (s *Server) errorHandler(err error, c echo.Context) {
	var (
		status int
		msg    string
		ae     *apiError
		he     *echo.HTTPError
	)
	switch {
	case errors.As(err, &ae):
		status, msg = ae.status, ae.msg
		if ae.closeConn {
			c.Response().Header().Set(echo.HeaderConnection, "close")
		}
	case errors.As(err, &he):
		status = he.Code
		switch he.Code {
		case http.StatusNotFound:
			msg = msgNotFound
		case http.StatusMethodNotAllowed:
			msg = msgMethodNotAllowed
			if allow, ok := c.Get(echo.ContextKeyHeaderAllow).(string); ok {
				// Echo lists OPTIONS, which we refuse too.
				c.Response().Header().Set(echo.HeaderAllow, strings.TrimPrefix(allow, "OPTIONS, "))
			}
		case http.StatusRequestEntityTooLarge:
			msg = msgBodyTooLarge
			c.Response().Header().Set(echo.HeaderConnection, "close")
		default:
			if he.Code >= 500 {
				status, msg = http.StatusInternalServerError, failMsg(c)
			} else {
				msg = http.StatusText(he.Code)
			}
		}
	default:
		status, msg = http.StatusInternalServerError, failMsg(c)
	}
	if status >= 500 {
		s.log.Error("request failed", "method", c.Request().Method, "route", routeOf(c),
			"status", status, "answer", msg, "err", err)
	}
	if c.Response().Committed {
		return
	}
	if err := c.JSON(status, map[string]string{"error": msg}); err != nil {
		s.log.Debug("writing error answer", "err", err)
	}
}

func routeOf(c echo.Context) string {
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
				err = internal(failMsg(c), fmt.Errorf("panic: %v\n%s", r, debug.Stack()))
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
		s.log.Log(c.Request().Context(), level, "request", "method", c.Request().Method, "route", routeOf(c),
			"status", status, "duration_ms", float64(elapsed.Microseconds())/1000,
			"bytes_out", c.Response().Size)
		s.metrics.observeRequest(c.Request().Method, routeOf(c), status, elapsed)
		return nil
	}
}
