package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/expo-free-agent/controller/store/domain"
)

// Writing a live log's Server-Sent Events (§2.9). Events gather in a buffer
// and go out together when the stream flushes: one write per batch of log
// entries, not one per entry.

// streamWriteTimeout bounds one write to a live log's client: a client that
// takes no data for this long is hung up on.
const streamWriteTimeout = 30 * time.Second

// sseSink sends a batch of events to the client.
type sseSink interface {
	send(p []byte) error
}

// sseStream writes Server-Sent Events.
type sseStream struct {
	sink       sseSink
	buf        []byte  // events not yet sent, in the pooled buffer bufp
	bufp       *[]byte // nil between wake-ups: a waiting stream holds no buffer
	last       int64   // the last log seq sent
	lastStatus string  // the last status sent
}

// eventBuffers are the buffers streams gather events in, lent from one
// wake-up's first event to its send: a thousand streams share the few that
// are in use at once, and a batch of lines costs no allocation.
var eventBuffers = sync.Pool{New: func() any {
	b := make([]byte, 0, 16<<10)
	return &b
}}

// open makes sure the stream holds a buffer to append to.
func (st *sseStream) open() {
	if st.bufp == nil {
		st.bufp = eventBuffers.Get().(*[]byte)
		st.buf = (*st.bufp)[:0]
	}
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

// logs sends the entries the client does not have yet.
func (st *sseStream) logs(entries []domain.LogEntry) error {
	for _, e := range entries {
		if e.Seq <= st.last {
			continue // sent already (the backlog and the feed overlap)
		}
		st.open()
		st.buf = appendLogEvent(st.buf, e)
		st.last = e.Seq
	}
	return st.flush()
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
	if err := st.event("status", map[string]any{"status": b.Status, "error_message": msg}); err != nil {
		return err
	}
	return st.flush()
}

// event adds an event without an id (status, end); the caller flushes.
func (st *sseStream) event(name string, data any) error {
	b, err := json.Marshal(data)
	if err != nil {
		return err
	}
	st.open()
	st.buf = append(st.buf, "event: "...)
	st.buf = append(st.buf, name...)
	st.buf = append(st.buf, "\ndata: "...)
	st.buf = append(st.buf, b...)
	st.buf = append(st.buf, "\n\n"...)
	return nil
}

func (st *sseStream) comment(text string) error {
	st.open()
	st.buf = append(st.buf, ": "...)
	st.buf = append(st.buf, text...)
	st.buf = append(st.buf, "\n\n"...)
	return st.flush()
}

// flush sends what gathered and gives the buffer back.
func (st *sseStream) flush() error {
	if st.bufp == nil {
		return nil
	}
	var err error
	if len(st.buf) > 0 {
		err = st.sink.send(st.buf)
	}
	if cap(st.buf) <= maxPooledEventBuffer { // a rare huge one goes to the collector
		*st.bufp = st.buf[:0]
		eventBuffers.Put(st.bufp)
	}
	st.buf, st.bufp = nil, nil
	return err
}

const maxPooledEventBuffer = 1 << 20

// appendLogEvent appends a log entry's event: what encoding/json would write
// for seqLogJSON, without reflection (a live log sends every entry to every
// stream that follows the build).
func appendLogEvent(b []byte, e domain.LogEntry) []byte {
	b = append(b, "id: "...)
	b = strconv.AppendInt(b, e.Seq, 10)
	b = append(b, "\nevent: log\ndata: {\"seq\":"...)
	b = strconv.AppendInt(b, e.Seq, 10)
	b = append(b, ",\"timestamp\":"...)
	b = strconv.AppendInt(b, e.Timestamp, 10)
	b = append(b, ",\"level\":"...)
	b = appendJSONString(b, string(e.Level))
	b = append(b, ",\"message\":"...)
	b = appendJSONString(b, e.Message)
	return append(b, "}\n\n"...)
}

// appendJSONString appends s as encoding/json writes a string: HTML
// characters, U+2028 and U+2029 escaped, invalid UTF-8 as U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// responseSink sends events through the handler's response (a connection
// that cannot be taken over: HTTP/2, HTTP/1.0).
type responseSink struct{ r *echo.Response }

func (s responseSink) send(p []byte) error {
	if _, err := s.r.Write(p); err != nil {
		return err
	}
	return http.NewResponseController(s.r).Flush()
}

// connSink sends events on a connection taken over from the HTTP server,
// as the chunks of a chunked response whose head goes out with the first.
// A stream so served holds no goroutine of the server and none of its
// per-connection buffers while it waits: only its own state (§ "Live logs"
// in ARCHITECTURE.md).
type connSink struct {
	conn  net.Conn
	conns *streamConns
	head  []byte // the response head, until the first send
}

func (s *connSink) send(p []byte) error {
	size := strconv.AppendInt(make([]byte, 0, 18), int64(len(p)), 16)
	return s.write(append(size, '\r', '\n'), p, crlf)
}

var crlf = []byte("\r\n")

// end sends the last chunk (or only the head, if nothing was sent).
func (s *connSink) end() error { return s.write([]byte("0\r\n\r\n")) }

// write sends parts in one writev, after the head if it has not gone yet.
func (s *connSink) write(parts ...[]byte) error {
	bufs := make(net.Buffers, 0, len(parts)+1)
	if s.head != nil {
		bufs = append(bufs, s.head)
		s.head = nil
	}
	bufs = append(bufs, parts...)
	if err := s.conns.writeDeadline(s.conn); err != nil {
		return err
	}
	_, err := bufs.WriteTo(s.conn)
	return err
}

// streamHead is the head of a live log's response on a taken-over
// connection: the headers the middleware set, the stream's own, chunked,
// and the connection closed at the end.
func streamHead(h http.Header) []byte {
	h = h.Clone()
	setStreamHeaders(h)
	h.Set("Transfer-Encoding", "chunked")
	h.Set(echo.HeaderConnection, "close")
	h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	var b bytes.Buffer
	b.WriteString("HTTP/1.1 200 OK\r\n")
	_ = h.Write(&b)
	b.WriteString("\r\n")
	return b.Bytes()
}

func setStreamHeaders(h http.Header) {
	h.Set(echo.HeaderContentType, "text/event-stream")
	h.Set(echo.HeaderCacheControl, "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer
}

// streamConns are the connections of the live logs served on taken-over
// connections, so that a shutdown can end them (and wait for them).
type streamConns struct {
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	closing bool
	wg      sync.WaitGroup
}

// add registers a taken-over connection; false once the server shuts down.
func (sc *streamConns) add(c net.Conn) bool {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.closing {
		return false
	}
	if sc.conns == nil {
		sc.conns = map[net.Conn]struct{}{}
	}
	sc.conns[c] = struct{}{}
	sc.wg.Add(1)
	return true
}

func (sc *streamConns) done(c net.Conn) {
	sc.mu.Lock()
	delete(sc.conns, c)
	sc.mu.Unlock()
	sc.wg.Done()
}

// errStreamsClosed: the server shuts down, a stream writes no more.
var errStreamsClosed = errors.New("live logs: the server is shutting down")

// writeDeadline sets the deadline of a write to c, unless the server shuts
// down: under the same lock as release, so that a write never sets a
// deadline later than the one release set.
func (sc *streamConns) writeDeadline(c net.Conn) error {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.closing {
		return errStreamsClosed
	}
	return c.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
}

// release makes every write and read on the connections fail at once, so
// that their streams end even when a client has stopped reading.
func (sc *streamConns) release() {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.closing = true
	now := time.Now()
	for c := range sc.conns {
		_ = c.SetDeadline(now)
	}
}

// wait waits for the streams to end.
func (sc *streamConns) wait() { sc.wg.Wait() }
