package httpapi

import (
	"bufio"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/expo-free-agent/controller/actors/files"
)

// formSpec says how a multipart body is read: the first part of each named
// text field (64 KiB at most) and of each named file is taken; every other
// part, and every repeat, is read and dropped.
type formSpec struct {
	limit  int64 // the whole body
	fields []string
	files  map[string]fileSpec
}

// fileSpec is one file part of a form.
type fileSpec struct {
	kind     files.Kind
	limit    int64
	tooLarge string // the 413 message past limit
	// begin, if set, runs when the file's first byte has arrived, with the
	// text fields read so far; an error refuses the body before anything is
	// stored (the rest is left unread and the connection closed), except
	// errCheckLater: the fields it needs are still to come, so the file is
	// staged and the handler checks when the body ends. It returns the
	// progress callback of the file's transfer, or nil.
	begin func(text map[string]string) (func(int64), error)
}

// form is a read multipart body. Its files are staged: committed by whoever
// takes them, and discarded by discard otherwise.
type form struct {
	text  map[string]string
	files map[string]*files.Staged
}

// discard drops every staged file nobody took.
func (f *form) discard() {
	for _, st := range f.files {
		st.Discard()
	}
}

// take hands over a staged file (nil if the part was absent or empty).
func (f *form) take(name string) *files.Staged {
	st := f.files[name]
	delete(f.files, name)
	return st
}

// readForm streams a multipart/form-data body by spec. A file part of zero
// bytes counts as absent. Answers: 400 Content must be multipart/form-data;
// 413 Request body too large (the declared length, or past the cap); 413 the
// file's own message past its limit; 400 Invalid multipart body for a broken
// stream; a begin hook's refusal; the route's 500 for a disk failure. On an
// error nothing is kept.
func (s *Server) readForm(c echo.Context, spec formSpec) (*form, error) {
	mr, err := newMultipart(c, spec.limit)
	if err != nil {
		return nil, err
	}
	f := &form{text: map[string]string{}, files: map[string]*files.Staged{}}
	seen := map[string]bool{}
	wanted := map[string]bool{}
	for _, n := range spec.fields {
		wanted[n] = true
	}
	for {
		p, err := mr.next()
		if err == nil && p == nil {
			return f, nil
		}
		if err == nil {
			name := p.FormName()
			fs, isFile := spec.files[name]
			switch {
			case seen[name] || (!isFile && !wanted[name]):
				err = drainPart(p)
			case isFile:
				seen[name] = true
				f.files[name], err = s.readFilePart(c, p, fs, f.text)
			default:
				seen[name] = true
				f.text[name], err = readTextPart(p)
			}
		}
		if err != nil {
			f.discard()
			return nil, err
		}
	}
}

// readFilePart stages one file part; nil for zero bytes.
func (s *Server) readFilePart(c echo.Context, p io.Reader, fs fileSpec, text map[string]string) (*files.Staged, error) {
	br := bufio.NewReaderSize(p, 512)
	if _, err := br.Peek(1); err == io.EOF {
		return nil, nil // zero bytes: no file
	} else if err != nil {
		return nil, bodyReadError(err)
	}
	var progress func(int64)
	if fs.begin != nil {
		var err error
		if progress, err = fs.begin(text); err != nil && !errors.Is(err, errCheckLater) {
			return nil, closing(err)
		}
	}
	pr := &partReader{r: br}
	st, err := s.files.Stage(fs.kind, pr, fs.limit, progress)
	switch {
	case err == nil:
		s.metrics.bytesIn.WithLabelValues(kindName(fs.kind)).Add(float64(st.Size))
		return st, nil
	case errors.Is(err, files.ErrTooLarge):
		return nil, tooLarge(fs.tooLarge)
	case pr.err != nil:
		return nil, bodyReadError(pr.err)
	default:
		return nil, err // a disk failure: the route's 500
	}
}

// errCheckLater is a begin hook's answer when the parts it needs come after
// the file (see fileSpec.begin).
var errCheckLater = errors.New("check when the body ends")

// errBodyTooLarge is returned by cappedReader past its cap.
var errBodyTooLarge = errors.New("request body too large")

// cappedReader fails with errBodyTooLarge once more than n bytes are read.
type cappedReader struct {
	r io.Reader
	n int64
}

func (c *cappedReader) Read(p []byte) (int, error) {
	if c.n < 0 {
		return 0, errBodyTooLarge
	}
	if int64(len(p)) > c.n+1 {
		p = p[:c.n+1]
	}
	m, err := c.r.Read(p)
	c.n -= int64(m)
	if c.n < 0 {
		return m, errBodyTooLarge
	}
	return m, err
}

// multipartBody reads the parts of a multipart/form-data body.
type multipartBody struct {
	mr     *multipart.Reader
	budget *headerBudget
}

// newMultipart checks that the request is multipart/form-data within limit
// and returns a streaming reader over its parts. Errors: 400 Content must be
// multipart/form-data; 413 Request body too large (declared length, unread);
// 400 Invalid multipart body (no boundary).
func newMultipart(c echo.Context, limit int64) (*multipartBody, error) {
	r := c.Request()
	mt, params, err := mime.ParseMediaType(r.Header.Get(echo.HeaderContentType))
	if err != nil || mt != "multipart/form-data" {
		return nil, fail(http.StatusBadRequest, msgNotMultipart)
	}
	if r.ContentLength > limit {
		return nil, tooLarge(msgBodyTooLarge)
	}
	boundary := params["boundary"]
	if boundary == "" {
		return nil, fail(http.StatusBadRequest, msgInvalidMultipart)
	}
	budget := &headerBudget{r: bufio.NewReaderSize(&cappedReader{r: r.Body, n: limit}, 64<<10)}
	return &multipartBody{mr: multipart.NewReader(budget, boundary), budget: budget}, nil
}

// next returns the next part, nil at the end, or the answer for a broken
// body. A part's headers may take at most maxPartHeader bytes.
func (b *multipartBody) next() (*multipart.Part, error) {
	b.budget.armed, b.budget.left = true, maxPartHeader
	p, err := b.mr.NextRawPart()
	b.budget.armed = false
	if err == io.EOF {
		return nil, nil
	}
	if err != nil {
		return nil, bodyReadError(err)
	}
	return p, nil
}

// bodyReadError maps a failure to read the request body to its answer: 413
// Request body too large past the cap, else 400 Invalid multipart body.
func bodyReadError(err error) error {
	if errors.Is(err, errBodyTooLarge) {
		return tooLarge(msgBodyTooLarge)
	}
	return closing(&apiError{status: http.StatusBadRequest, msg: msgInvalidMultipart, cause: err})
}

// readTextPart reads a text part of at most 64 KiB (413 beyond).
func readTextPart(p *multipart.Part) (string, error) {
	b, err := io.ReadAll(io.LimitReader(p, maxTextPart+1))
	if err != nil {
		return "", bodyReadError(err)
	}
	if len(b) > maxTextPart {
		return "", tooLarge(msgBodyTooLarge)
	}
	return strings.ToValidUTF8(string(b), "\uFFFD"), nil
}

// drainPart discards the rest of a part (an unknown or repeated one).
func drainPart(p *multipart.Part) error {
	if _, err := io.Copy(io.Discard, p); err != nil {
		return bodyReadError(err)
	}
	return nil
}

// partReader wraps a file part so that a failure to read the request body is
// told apart from a failure to write the disk.
type partReader struct {
	r   io.Reader
	err error // the first read error other than EOF
}

func (p *partReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if err != nil && err != io.EOF && p.err == nil {
		p.err = err
	}
	return n, err
}
