package httpapi

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"strings"
	"unicode/utf8"

	"github.com/labstack/echo/v4"
)

// readBody reads at most limit bytes of the body; more is 413.
func readBody(c echo.Context, limit int64) ([]byte, error) {
	r := c.Request()
	if r.ContentLength > limit {
		return nil, tooLarge(msgBodyTooLarge)
	}
	b, err := readAll(io.LimitReader(r.Body, limit+1), r.ContentLength)
	if err != nil {
		return nil, fail(http.StatusBadRequest, msgInvalidJSON)
	}
	if int64(len(b)) > limit {
		return nil, tooLarge(msgBodyTooLarge)
	}
	return b, nil
}

// readAll is io.ReadAll starting from a buffer of the declared length, up
// to 64 KiB (a typical body, a worker's batch of log lines, is read without
// the doubling series of copies; a client that declares a large body and
// sends nothing does not make the server hold more than that for it).
func readAll(r io.Reader, declared int64) ([]byte, error) {
	if declared <= 0 {
		return io.ReadAll(r)
	}
	b := make([]byte, 0, min(declared+1, maxPreallocatedBody)) // +1: the read that finds the end
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // more than that: grow as ReadAll would
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// maxPreallocatedBody bounds what readAll allocates before the body arrives.
const maxPreallocatedBody = 64 << 10

// readJSON reads a JSON body of at most 1 MiB, whatever its Content-Type, and
// decodes it into the struct *dst with decodeStrict. An empty body is {}.
// It answers 413 Request body too large and 400 Invalid JSON body (not one
// JSON value).
func readJSON(c echo.Context, dst any) (fields, error) {
	raw, err := readJSONBody(c)
	if err != nil {
		return fields{}, err
	}
	return decodeStrict(raw, dst), nil
}

// readJSONBody is readJSON's body before it is decoded: one JSON value in
// valid UTF-8 ({} for an empty body), or the 413 or 400.
func readJSONBody(c echo.Context) ([]byte, error) {
	raw, err := readBody(c, maxJSONBody)
	if err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		raw = []byte("{}")
	}
	if !json.Valid(raw) { // exactly one JSON value, space around it allowed
		return nil, fail(http.StatusBadRequest, msgInvalidJSON)
	}
	// Invalid UTF-8 can only sit inside strings of a valid JSON text; made
	// valid here, every text and raw JSON value a handler takes is valid
	// UTF-8 (the store makes sure again before it stores).
	if !utf8.Valid(raw) {
		raw = bytes.ToValidUTF8(raw, []byte("\uFFFD"))
	}
	return raw, nil
}

// fields says what decodeStrict found in a body.
type fields struct {
	object   bool            // the body is a JSON object
	keys     map[string]bool // the keys sent that name a field, null values included
	present  map[string]bool // keys with a value other than null
	mistyped map[string]bool // present keys whose value is of the wrong JSON type (the field is left zero)
}

// sent reports whether key was sent at all (null included).
func (f fields) sent(key string) bool { return f.keys[key] }

// has reports whether key was sent with a value other than null.
func (f fields) has(key string) bool { return f.present[key] }

// wrongType reports whether key was sent with a value of the wrong type.
func (f fields) wrongType(key string) bool { return f.mistyped[key] }

// decodeStrict fills the fields of the struct *dst from the top-level keys of
// the JSON value raw. Unlike encoding/json, a key matches only the exact
// spelling of a field's json tag: {"Name": ...} is not "name", so a
// case-variant key can never stand in for a field the protocol names
// (clients send exact keys; the duplicate-key and case-variant cases are in
// the fuzz corpus). A null value leaves the field zero; a value of the wrong
// JSON type leaves it zero and is reported, so the handler answers with its
// endpoint's own message rather than Invalid JSON body.
func decodeStrict(raw []byte, dst any) fields {
	f := fields{keys: map[string]bool{}, present: map[string]bool{}, mistyped: map[string]bool{}}
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil || m == nil {
		return f
	}
	f.object = true
	v := reflect.ValueOf(dst).Elem()
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		key, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		val, ok := m[key]
		if !ok || key == "" {
			continue
		}
		f.keys[key] = true
		if string(val) == "null" {
			continue
		}
		f.present[key] = true
		field := v.Field(i)
		if json.Unmarshal(val, field.Addr().Interface()) != nil {
			field.SetZero()
			f.mistyped[key] = true
		}
	}
	return f
}

// isObject reports whether a raw JSON value is an object.
func isObject(v json.RawMessage) bool { return len(v) > 0 && v[0] == '{' }

// isArray reports whether a raw JSON value is an array.
func isArray(v json.RawMessage) bool { return len(v) > 0 && v[0] == '[' }

// compactJSON is the compact form of a JSON value.
func compactJSON(v json.RawMessage) (string, bool) {
	var b bytes.Buffer
	if len(v) == 0 || json.Compact(&b, v) != nil {
		return "", false
	}
	return b.String(), true
}
