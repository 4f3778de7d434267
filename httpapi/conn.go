package httpapi

import (
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
)

// guardBody bounds how a request body may arrive and be left:
//
//   - each read of the body must make progress within the body read timeout
//     (a deadline reset before every read, so a 1 GiB upload that keeps
//     flowing takes as long as it needs, while a body that stops arriving is
//     cut off);
//   - a body the handler did not read to its end closes the connection after
//     the answer, and the server's own attempt to drain it gives up after
//     unreadBodyGrace (Go's server would otherwise wait, without a deadline,
//     for up to 256 KiB that a hostile client never sends — holding the
//     connection and its descriptor forever). The grace lets a client still
//     sending the tail of a refused body finish and read its answer.
func (s *Server) guardBody(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		if req.Body == nil || req.Body == http.NoBody || req.ContentLength == 0 {
			return next(c)
		}
		rc := http.NewResponseController(c.Response())
		orig := req.Body
		b := &guardedBody{r: orig, rc: rc, timeout: s.cfg.BodyReadTimeout, left: req.ContentLength}
		req.Body = b
		// Go's server looks at the request's body after the handler (a body
		// closed early makes it linger before closing, so that a client still
		// sending reads its answer rather than a reset): give it its own back.
		defer func() { req.Body = orig }()
		c.Response().Before(func() {
			if !b.done() {
				c.Response().Header().Set(echo.HeaderConnection, "close")
				_ = rc.SetReadDeadline(time.Now().Add(unreadBodyGrace)) // unsupported under tests' recorders
			}
		})
		return next(c)
	}
}

// unreadBodyGrace is how long the server may drain a body its route left
// unread, after the answer.
const unreadBodyGrace = time.Second

// guardedBody is a request body read under a progress deadline.
type guardedBody struct {
	r       io.ReadCloser
	rc      *http.ResponseController
	timeout time.Duration
	mu      sync.Mutex
	left    int64 // bytes still declared (-1: unknown length)
	eof     bool
}

func (b *guardedBody) Read(p []byte) (int, error) {
	_ = b.rc.SetReadDeadline(time.Now().Add(b.timeout))
	n, err := b.r.Read(p)
	b.mu.Lock()
	if b.left > 0 {
		b.left -= int64(n)
	}
	if err == io.EOF || b.left == 0 {
		b.eof = true
	}
	finished := b.eof
	b.mu.Unlock()
	if finished {
		// Read to its end: no deadline any more, so the server's watch for
		// a client that goes away (a background read) is not cut off while
		// the handler works.
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

func (b *guardedBody) Close() error { return b.r.Close() }

func (b *guardedBody) done() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.eof
}

// limitListener accepts at most n connections at a time. Past the limit a
// new connection waits in the kernel's backlog instead of taking a
// descriptor, so the descriptors that requests in flight need for the
// database and for files are never used up by idle or hostile connections.
type limitListener struct {
	net.Listener
	slots chan struct{}
	done  chan struct{}
	once  sync.Once
}

func newLimitListener(l net.Listener, n int) *limitListener {
	return &limitListener{Listener: l, slots: make(chan struct{}, n), done: make(chan struct{})}
}

// errListenerClosed is returned by Accept once Close was called.
var errListenerClosed = net.ErrClosed

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.done:
		return nil, errListenerClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitedConn{Conn: c, release: func() { <-l.slots }}, nil
}

func (l *limitListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// errPartHeaderTooLarge is returned when a multipart part's headers exceed
// maxPartHeader.
var errPartHeaderTooLarge = errors.New("multipart part header too large")

// headerBudget is the reader under a multipart.Reader: while armed (during
// NextRawPart) it lets the reader take at most its budget, so a part's
// headers cannot grow past a few KiB (mime/multipart allows 10 MiB).
type headerBudget struct {
	r     io.Reader
	armed bool
	left  int
}

func (h *headerBudget) Read(p []byte) (int, error) {
	if !h.armed {
		return h.r.Read(p)
	}
	if h.left <= 0 {
		return 0, errPartHeaderTooLarge
	}
	if len(p) > h.left {
		p = p[:h.left]
	}
	n, err := h.r.Read(p)
	h.left -= n
	return n, err
}
