package httpapi

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/labstack/echo/v4"

	"github.com/expo-free-agent/controller/actors/files"
)

// stored is a stored file to send and its answers.
type stored struct {
	rel, contentType, filename string
	notFound                   string // the 404 when it is absent
	failed                     string // the 500 when it cannot be read
	purged                     bool   // retention took the build's files
}

// openStored opens a stored file: 410 Build files expired when retention
// took it, 404 notFound when it is absent, 500 failed when it cannot be read.
func (s *Server) openStored(f stored) (files.File, int64, error) {
	if f.purged {
		return nil, 0, fail(http.StatusGone, msgFilesExpired)
	}
	fh, size, err := s.files.Open(f.rel)
	if errors.Is(err, files.ErrFileNotFound) || errors.Is(err, files.ErrBadPath) {
		return nil, 0, fail(http.StatusNotFound, f.notFound)
	}
	if err != nil {
		return nil, 0, internal(f.failed, err)
	}
	return fh, size, nil
}

// sendFile streams a stored file with its length and an attachment name.
func (s *Server) sendFile(c echo.Context, f stored) error {
	fh, size, err := s.openStored(f)
	if err != nil {
		return err
	}
	defer fh.Close()
	s.stream(c, fh, size, f.contentType, f.filename)
	return nil
}

var copyBufPool = sync.Pool{New: func() any { b := make([]byte, files.ChunkSize); return &b }}

// stream writes an open file as a 200 attachment through a 64 KiB buffer.
func (s *Server) stream(c echo.Context, f io.Reader, size int64, contentType, filename string) {
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, contentType)
	h.Set(echo.HeaderContentLength, strconv.FormatInt(size, 10))
	h.Set(echo.HeaderContentDisposition, `attachment; filename="`+filename+`"`)
	c.Response().WriteHeader(http.StatusOK)
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	n, err := io.CopyBuffer(c.Response(), io.LimitReader(f, size), *bp)
	s.metrics.bytesOut.WithLabelValues(downloadKind(c)).Add(float64(n))
	if err != nil {
		s.log.Warn("download interrupted", "route", c.Path(), "err", err)
	}
}

// downloadKind names what a download route sends, for the metrics.
func downloadKind(c echo.Context) string {
	p := c.Path()
	switch {
	case strings.HasSuffix(p, "/certs"):
		return "certs"
	case strings.HasSuffix(p, "/source"), c.Param("type") == "source":
		return "source"
	default:
		return "result"
	}
}
