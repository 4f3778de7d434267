package httpapi

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

// The live log (§2.9): Server-Sent Events of a build's log and status,
// pushed by the store's feed as transactions commit.

// DefaultMaxStreams bounds the live logs open at once (§2.9).
const DefaultMaxStreams = 1000

// keepAliveEvery is how often an idle stream sends a comment, so that
// proxies do not close it.
const keepAliveEvery = 15 * time.Second

// streamGate counts the open streams.
type streamGate struct {
	open atomic.Int64
	max  int64
}

func (g *streamGate) enter() bool {
	if g.open.Add(1) > g.max {
		g.open.Add(-1)
		return false
	}
	return true
}

func (g *streamGate) leave() { g.open.Add(-1) }

// logStream is GET /api/builds/:id/logs/stream (key, build token, or
// ?token=<build token>, since a browser's EventSource cannot set headers),
// and the dashboard's public GET /builds/:id/logs/stream. It sends the log
// after Last-Event-ID (or ?after=), then every new entry as it commits, the
// status when it changes, and, once the build is finished and every entry
// was sent, an end event; then it closes.
//
// An HTTP/1.1 stream takes its connection over from the server and is
// served by a goroutine of its own (followConn), so that a waiting stream
// holds neither the server's connection goroutine, with the stack its
// request grew, nor its buffers: about half the memory per open stream.
func (s *Server) logStream(c echo.Context) error {
	b, err := s.addressedBuild(c)
	if err != nil {
		return err
	}
	after, err := resumeFrom(c)
	if err != nil {
		return err
	}
	if !s.streams.enter() {
		return fail(http.StatusServiceUnavailable, msgTooManyStreams)
	}
	sub := s.store.Subscribe(b.ID) // before the backlog: nothing committed in between is missed
	conn, head, taken := s.takeOver(c)
	if conn != nil {
		go s.followConn(conn, head, sub, b.ID, after)
		return nil
	}
	if taken { // and closed: the server is shutting down
		s.streams.leave()
		sub.Close()
		return nil
	}
	defer s.streams.leave()
	defer sub.Close()
	setStreamHeaders(c.Response().Header())
	c.Response().WriteHeader(http.StatusOK)
	st := &sseStream{sink: responseSink{c.Response()}, last: after}
	s.follow(c.Request().Context(), st, sub, b.ID)
	return nil
}

// takeOver takes an HTTP/1.1 stream's connection from the server, or
// returns no connection (HTTP/2 or 1.0, a recorder under tests; taken is
// then false). It also returns the response's head, with the headers the
// middleware set. Once the server shuts down, a connection taken over is
// closed at once (no connection, taken true).
func (s *Server) takeOver(c echo.Context) (conn net.Conn, head []byte, taken bool) {
	req := c.Request()
	if req.ProtoMajor != 1 || req.ProtoMinor != 1 {
		return nil, nil, false
	}
	head = streamHead(c.Response().Header())
	conn, _, err := http.NewResponseController(c.Response()).Hijack()
	if err != nil {
		return nil, nil, false
	}
	c.Response().Status = http.StatusOK // for the request log, written when the handler returns
	if !s.streamConns.add(conn) {
		conn.Close()
		return nil, nil, true
	}
	return conn, head, true
}

// followConn serves a stream on a taken-over connection. A read that fails
// (the client went away; the client sends nothing) ends it, as the server's
// own watch of the connection did.
func (s *Server) followConn(conn net.Conn, head []byte, sub *store.Subscription, id string, after int64) {
	defer s.streamConns.done(conn)
	defer s.streams.leave()
	defer sub.Close()
	defer func() { // outside the handler, the middleware's recovery does not cover it
		if r := recover(); r != nil {
			s.log.Error("live log: panic", "build_id", id, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			conn.Close()
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		defer cancel()
		var b [1]byte
		for {
			if _, err := conn.Read(b[:]); err != nil {
				return
			}
		}
	}()
	sink := &connSink{conn: conn, conns: &s.streamConns, head: head}
	st := &sseStream{sink: sink, last: after}
	if s.follow(ctx, st, sub, id) {
		_ = sink.end()
	}
	conn.Close()
	<-gone
}

// follow sends the stream until the build ends (true: the end event went
// out), the client goes away, or the server shuts down.
func (s *Server) follow(ctx context.Context, st *sseStream, sub *store.Subscription, id string) bool {
	if done, err := s.streamCatchUp(ctx, st, id, true); err != nil || done {
		return err == nil
	}
	keepAlive := time.NewTicker(keepAliveEvery)
	defer keepAlive.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-s.closing:
			return false
		case <-keepAlive.C:
			if st.comment("keep-alive") != nil {
				return false
			}
		case <-sub.C:
			entries, lagged, statusChanged := sub.Take()
			var done bool
			var err error
			if lagged || statusChanged || !st.follows(entries) {
				done, err = s.streamCatchUp(ctx, st, id, statusChanged)
			} else {
				err = st.logs(entries)
			}
			if err != nil {
				return false
			}
			if done {
				return true
			}
		}
	}
}

// streamCatchUp sends the log after the last entry sent, read from the
// database, and (with status) the build's status if it changed; it reports
// done when the build is finished, everything is sent and the end event
// went out.
func (s *Server) streamCatchUp(ctx context.Context, st *sseStream, id string, status bool) (bool, error) {
	for more := true; more; {
		var page []domain.LogEntry
		var err error
		if page, more, err = s.store.LogPage(ctx, id, st.last, logPageSize); err != nil {
			s.log.Warn("live log: reading the log", "build_id", id, "err", err)
			return true, err
		}
		if err := st.logs(page); err != nil {
			return true, err
		}
	}
	if !status {
		return false, nil
	}
	b, err := s.store.GetBuild(ctx, id)
	if err != nil {
		return true, err
	}
	if err := st.status(b); err != nil {
		return true, err
	}
	if !b.Finished() {
		return false, nil
	}
	// Lines committed with the final status are in the log by now.
	if done, err := s.streamCatchUp(ctx, st, id, false); err != nil || done {
		return true, err
	}
	if err := st.event("end", map[string]domain.BuildStatus{"status": b.Status}); err != nil {
		return true, err
	}
	return true, st.flush()
}

// resumeFrom is where a stream starts: Last-Event-ID (a reconnecting
// EventSource sends it), else ?after=, else the beginning.
func resumeFrom(c echo.Context) (int64, error) {
	if id := c.Request().Header.Get("Last-Event-ID"); id != "" {
		n, err := strconv.ParseInt(id, 10, 64)
		if err != nil || n < 0 {
			return 0, fail(http.StatusBadRequest, msgInvalidAfter)
		}
		return n, nil
	}
	return intParam(c, "after", 0, 0, math.MaxInt64, msgInvalidAfter)
}
