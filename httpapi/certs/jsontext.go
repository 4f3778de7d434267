// The writers that stream an Answer's text: counting, splitting a byte
// stream into runes, and escaping a JSON string as encoding/json does.

package certs

import (
	"io"
	"unicode"
	"unicode/utf8"
)

// countWriter counts what it writes and keeps the first error, after which
// it writes nothing.
type countWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countWriter) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.err = err
	return n, err
}

func (c *countWriter) WriteString(s string) {
	if c.err == nil {
		n, err := io.WriteString(c.w, s)
		c.n += int64(n)
		c.err = err
	}
}

// runeSplitter cuts a stream of bytes written in pieces into runes, as
// utf8.DecodeRune would cut the whole: a rune split between two writes is
// carried over.
type runeSplitter struct {
	carry [utf8.UTFMax - 1]byte
	nc    int
}

// feed calls f with each rune of p (after those carried over) that is
// complete, and its encoding; an invalid byte is utf8.RuneError of length 1.
func (d *runeSplitter) feed(p []byte, f func(r rune, enc []byte)) {
	if d.nc > 0 {
		var tmp [2 * utf8.UTFMax]byte
		nc := copy(tmp[:], d.carry[:d.nc])
		buf := tmp[:nc+copy(tmp[nc:], p)]
		i := 0
		for i < nc {
			// Short of a full rune only when all of p is in buf.
			if !utf8.FullRune(buf[i:]) {
				d.nc = copy(d.carry[:], buf[i:])
				return
			}
			r, size := utf8.DecodeRune(buf[i:])
			f(r, buf[i:i+size])
			i += size
		}
		p = p[i-nc:]
		d.nc = 0
	}
	for len(p) > 0 {
		if c := p[0]; c < utf8.RuneSelf {
			f(rune(c), p[:1])
			p = p[1:]
			continue
		}
		if !utf8.FullRune(p) {
			d.nc = copy(d.carry[:], p)
			return
		}
		r, size := utf8.DecodeRune(p)
		f(r, p[:size])
		p = p[size:]
	}
}

// end calls f for each byte of an incomplete rune left at the end of the
// stream, as the invalid byte it is.
func (d *runeSplitter) end(f func(r rune, enc []byte)) {
	for i := range d.nc {
		f(utf8.RuneError, d.carry[i:i+1])
	}
	d.nc = 0
}

// textScan checks that a stream is UTF-8 and finds where strings.TrimSpace
// would cut it: [start, end), start -1 until a rune that is not space.
type textScan struct {
	runes      runeSplitter
	pos        int64
	start, end int64
	invalid    bool
}

func (s *textScan) Write(p []byte) (int, error) {
	if !s.invalid {
		s.runes.feed(p, s.rune)
	}
	return len(p), nil
}

func (s *textScan) rune(r rune, enc []byte) {
	if r == utf8.RuneError && len(enc) == 1 {
		s.invalid = true
	}
	if !unicode.IsSpace(r) {
		if s.start < 0 {
			s.start = s.pos
		}
		s.end = s.pos + int64(len(enc))
	}
	s.pos += int64(len(enc))
}

// valid reports whether the whole stream was UTF-8.
func (s *textScan) valid() bool { return !s.invalid && s.runes.nc == 0 }

// jsonString writes a stream escaped as encoding/json escapes a string with
// HTML escaping on (what json.Marshal and Echo's c.JSON do), without the
// quotes. Close ends the stream.
type jsonString struct {
	w     io.Writer
	runes runeSplitter
	buf   [512]byte
	nb    int
	err   error
}

const hexDigits = "0123456789abcdef"

func (j *jsonString) Write(p []byte) (int, error) {
	if j.err != nil {
		return 0, j.err
	}
	j.runes.feed(p, j.rune)
	return len(p), j.err
}

// WriteString is io.StringWriter (for io.WriteString).
func (j *jsonString) WriteString(s string) (int, error) {
	return j.Write([]byte(s))
}

// Close writes what is buffered, an incomplete last rune as U+FFFD.
func (j *jsonString) Close() error {
	j.runes.end(j.rune)
	j.flush()
	return j.err
}

func (j *jsonString) flush() {
	if j.err == nil && j.nb > 0 {
		_, j.err = j.w.Write(j.buf[:j.nb])
	}
	j.nb = 0
}

func (j *jsonString) add(s ...byte) { j.nb += copy(j.buf[j.nb:], s) }

// rune is appendString of encoding/json (escapeHTML true) for one rune.
func (j *jsonString) rune(r rune, enc []byte) {
	if j.nb > len(j.buf)-8 {
		j.flush()
	}
	switch {
	case r < utf8.RuneSelf && htmlSafe(byte(r)):
		j.add(byte(r))
	case r == '\\' || r == '"':
		j.add('\\', byte(r))
	case r == '\b':
		j.add('\\', 'b')
	case r == '\f':
		j.add('\\', 'f')
	case r == '\n':
		j.add('\\', 'n')
	case r == '\r':
		j.add('\\', 'r')
	case r == '\t':
		j.add('\\', 't')
	case r < utf8.RuneSelf: // other controls, and <, > and &
		j.add('\\', 'u', '0', '0', hexDigits[r>>4], hexDigits[r&0xF])
	case r == utf8.RuneError && len(enc) == 1:
		j.add('\\', 'u', 'f', 'f', 'f', 'd')
	case r == '\u2028' || r == '\u2029':
		j.add('\\', 'u', '2', '0', '2', hexDigits[r&0xF])
	default:
		j.add(enc...)
	}
}

// htmlSafe is htmlSafeSet of encoding/json: printable ASCII (and DEL) but
// for ", \, <, > and &.
func htmlSafe(b byte) bool {
	return b >= 0x20 && b != '"' && b != '\\' && b != '<' && b != '>' && b != '&'
}
