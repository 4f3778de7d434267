package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"

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
	defer s.streams.leave()
	sub := s.store.Subscribe(b.ID) // before the backlog: nothing committed in between is missed
	defer sub.Close()
	st := &sseStream{w: c.Response(), last: after}
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, "text/event-stream")
	h.Set(echo.HeaderCacheControl, "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer
	c.Response().WriteHeader(http.StatusOK)
	ctx := c.Request().Context()
	if done, err := s.streamCatchUp(ctx, st, b.ID, true); err != nil || done {
		return nil
	}
	keepAlive := time.NewTicker(keepAliveEvery)
	defer keepAlive.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.closing:
			return nil
		case <-keepAlive.C:
			if st.comment("keep-alive") != nil {
				return nil
			}
		case <-sub.C:
			entries, lagged, statusChanged := sub.Take()
			var done bool
			if lagged || statusChanged || !st.follows(entries) {
				done, err = s.streamCatchUp(ctx, st, b.ID, statusChanged)
			} else {
				err = st.logs(entries)
			}
			if err != nil || done {
				return nil
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
	if err := st.event("end", "", map[string]domain.BuildStatus{"status": b.Status}); err != nil {
		return true, err
	}
	st.w.Flush()
	return true, nil
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

// sseStream writes Server-Sent Events.
type sseStream struct {
	w          *echo.Response
	last       int64  // the last log seq sent
	lastStatus string // the last status sent
}

// follows reports whether entries continue the stream without a gap. Two
// transactions can publish in the other order than they committed; then the
// reader catches up from the database rather than skip the earlier one.
func (st *sseStream) follows(entries []domain.LogEntry) bool {
	next := st.last + 1
	for _, e := range entries {
		if e.Seq > next {
			return false
		}
		if e.Seq == next {
			next++
		}
	}
	return true
}

func (st *sseStream) logs(entries []domain.LogEntry) error {
	for _, e := range entries {
		if e.Seq <= st.last {
			continue // sent already (the backlog and the feed overlap)
		}
		err := st.event("log", strconv.FormatInt(e.Seq, 10), seqLogJSON{Seq: e.Seq,
			logJSON: logJSON{Timestamp: e.Timestamp, Level: e.Level, Message: e.Message}})
		if err != nil {
			return err
		}
		st.last = e.Seq
	}
	st.w.Flush()
	return nil
}

func (st *sseStream) status(b domain.Build) error {
	key := string(b.Status) + "|" + deref(b.ErrorMessage)
	if key == st.lastStatus {
		return nil
	}
	st.lastStatus = key
	var msg *string
	if b.Status == domain.StatusFailed {
		msg = b.ErrorMessage
	}
	if err := st.event("status", "", map[string]any{"status": b.Status, "error_message": msg}); err != nil {
		return err
	}
	st.w.Flush()
	return nil
}

func (st *sseStream) event(name, id string, data any) error {
	b, err := json.Marshal(data)
	if err != nil {
		return err
	}
	if id != "" {
		if _, err := fmt.Fprintf(st.w, "id: %s\n", id); err != nil {
			return err
		}
	}
	_, err = fmt.Fprintf(st.w, "event: %s\ndata: %s\n\n", name, b)
	return err // the caller flushes
}

func (st *sseStream) comment(text string) error {
	if _, err := io.WriteString(st.w, ": "+text+"\n\n"); err != nil {
		return err
	}
	st.w.Flush()
	return nil
}
