package httpapi

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"

	"github.com/labstack/echo/v4"
)

// readJSON reads a JSON body of at most 1 MiB, whatever its Content-Type, and
// returns it as a generic value: an empty body is {}. It answers 413 Request
// body too large and 400 Invalid JSON body.
func readJSON(c echo.Context) (any, error) {
	raw, err := readBody(c, maxJSONBody)
	if err != nil {
		return nil, err
	}
	return parseJSON(raw)
}

// readBody reads at most limit bytes of the body; more is 413.
func readBody(c echo.Context, limit int64) ([]byte, error) {
	r := c.Request()
	if r.ContentLength > limit {
		return nil, tooLarge(msgBodyTooLarge)
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, fail(http.StatusBadRequest, msgInvalidJSON)
	}
	if int64(len(b)) > limit {
		return nil, tooLarge(msgBodyTooLarge)
	}
	return b, nil
}

// parseJSON decodes one JSON value (numbers kept exact); empty means {}.
func parseJSON(raw []byte) (any, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return map[string]any{}, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fail(http.StatusBadRequest, msgInvalidJSON)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fail(http.StatusBadRequest, msgInvalidJSON)
	}
	return v, nil
}

// rawField returns the JSON text of the top-level key k of raw, matching the
// key exactly (encoding/json's struct decoding matches keys case-insensitively,
// so {"capabilities": {...}, "Capabilities": "x"} would yield "x"). It returns
// nil when the key is absent or raw is not an object.
func rawField(raw []byte, k string) json.RawMessage {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return nil
	}
	return m[k]
}

// verbatimJSON is a JSON value exactly as it was sent (for fields the
// protocol stores "as sent" or "verbatim").
func verbatimJSON(v json.RawMessage) (string, bool) {
	if len(v) == 0 || !json.Valid(v) {
		return "", false
	}
	return string(v), true
}

// compactJSON is the compact form of a JSON value.
func compactJSON(v json.RawMessage) (string, bool) {
	var b bytes.Buffer
	if len(v) == 0 || json.Compact(&b, v) != nil {
		return "", false
	}
	return b.String(), true
}

// object returns v as a JSON object, or nil.
func object(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

// str returns m[k] if it is a string.
func str(m map[string]any, k string) (string, bool) {
	s, ok := m[k].(string)
	return s, ok
}

// number returns m[k] if it is a JSON number.
func number(m map[string]any, k string) (float64, bool) {
	n, ok := m[k].(json.Number)
	if !ok {
		return 0, false
	}
	f, err := n.Float64()
	return f, err == nil
}

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

// multipartReader checks that the request is multipart/form-data within
// limit and returns a streaming reader over its parts. Errors: 400 Content
// must be multipart/form-data; 413 Request body too large (declared length,
// unread); 400 Invalid multipart body (no boundary).
func multipartReader(c echo.Context, limit int64) (*multipart.Reader, error) {
	r := c.Request()
	mt, params, err := mime.ParseMediaType(r.Header.Get(echo.HeaderContentType))
	if err != nil || mt != "multipart/form-data" {
		return nil, fail(http.StatusBadRequest, "Content must be multipart/form-data")
	}
	if r.ContentLength > limit {
		return nil, tooLarge(msgBodyTooLarge)
	}
	boundary := params["boundary"]
	if boundary == "" {
		return nil, fail(http.StatusBadRequest, msgInvalidMultipart)
	}
	body := bufio.NewReaderSize(&cappedReader{r: r.Body, n: limit}, 64<<10)
	return multipart.NewReader(body, boundary), nil
}

// nextPart returns the next part, nil at the end, or the answer for a broken
// body: 413 Request body too large past the cap, else 400 Invalid multipart
// body.
func nextPart(mr *multipart.Reader) (*multipart.Part, error) {
	p, err := mr.NextRawPart()
	if err == io.EOF {
		return nil, nil
	}
	if err != nil {
		return nil, bodyReadError(err)
	}
	return p, nil
}

// bodyReadError maps a failure to read the request body to its answer.
func bodyReadError(err error) error {
	if errors.Is(err, errBodyTooLarge) {
		return tooLarge(msgBodyTooLarge)
	}
	return &apiError{status: http.StatusBadRequest, msg: msgInvalidMultipart, cause: err, closeConn: true}
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
	return string(b), nil
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
