package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"io"
	"mime/multipart"
	"net/textproto"
)

// streamChunk is the one buffer a streamed body is generated through.
const streamChunk = 256 << 10

// filePart describes the single file part of a multipart body.
type filePart struct {
	Field, FileName string
	Size            int64
}

// multipartStream is a multipart/form-data request body generated on the
// fly: the text fields, then one file part of Size bytes read from a source
// through a single chunk buffer and written into an io.Pipe. Nothing but that
// chunk is ever held, whatever the size, and the exact length is known in
// advance (so the request carries a Content-Length).
type multipartStream struct {
	io.ReadCloser        // the request body (the read end of the pipe)
	ContentType   string // multipart/form-data; boundary=...
	Length        int64  // exact body length

	done chan struct{}
	// Set before done is closed:
	stats streamStats
}

// streamStats is what the generator did.
type streamStats struct {
	Written  int64  // body bytes written into the pipe
	MaxWrite int    // the largest single write into the pipe
	BufSize  int    // the size of the one chunk buffer
	SHA256   []byte // digest of the file part's content
	Err      error  // why generation stopped early (the reader went away)
}

// newMultipartStream starts generating the body in a goroutine; it ends when
// the body has been read to its end or closed. The caller must read or
// close the body (http.Client.Do always closes it), then may call Wait.
func newMultipartStream(fields [][2]string, file filePart, src io.Reader, chunk int) (*multipartStream, error) {
	boundary := randomBoundary()
	length, err := multipartLength(fields, file, boundary)
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	s := &multipartStream{ReadCloser: pr, Length: length, done: make(chan struct{})}
	s.ContentType = "multipart/form-data; boundary=" + boundary
	buf := make([]byte, chunk)
	go func() {
		defer close(s.done)
		cw := &countingWriter{w: pw}
		h := sha256.New()
		err := writeMultipart(cw, boundary, fields, file, src, buf, h)
		s.stats = streamStats{Written: cw.n, MaxWrite: cw.max, BufSize: len(buf), SHA256: h.Sum(nil), Err: err}
		pw.CloseWithError(err) // nil: the reader sees EOF
	}()
	return s, nil
}

// Wait waits for the generator to stop and returns what it did.
func (s *multipartStream) Wait() streamStats {
	<-s.done
	return s.stats
}

// writeMultipart writes the body to w: the fields, then the file part of
// file.Size bytes read from src through buf, hashed into h.
func writeMultipart(w io.Writer, boundary string, fields [][2]string, file filePart, src io.Reader, buf []byte, h hash.Hash) error {
	mw := multipart.NewWriter(w)
	if err := mw.SetBoundary(boundary); err != nil {
		return err
	}
	for _, f := range fields {
		if err := mw.WriteField(f[0], f[1]); err != nil {
			return err
		}
	}
	part, err := mw.CreatePart(fileHeader(file))
	if err != nil {
		return err
	}
	for left := file.Size; left > 0; {
		n := int(min(int64(len(buf)), left))
		if _, err := io.ReadFull(src, buf[:n]); err != nil {
			return fmt.Errorf("reading the generator: %w", err)
		}
		if h != nil {
			h.Write(buf[:n])
		}
		if _, err := part.Write(buf[:n]); err != nil {
			return err
		}
		left -= int64(n)
	}
	return mw.Close()
}

func fileHeader(file filePart) textproto.MIMEHeader {
	h := make(textproto.MIMEHeader)
	h.Set("Content-Disposition", fmt.Sprintf(`form-data; name=%q; filename=%q`, file.Field, file.FileName))
	h.Set("Content-Type", "application/octet-stream")
	return h
}

// multipartLength is the exact length of the body writeMultipart produces:
// the framing (written for an empty file) plus the file size.
func multipartLength(fields [][2]string, file filePart, boundary string) (int64, error) {
	cw := &countingWriter{w: io.Discard}
	empty := file
	empty.Size = 0
	if err := writeMultipart(cw, boundary, fields, empty, nil, nil, nil); err != nil {
		return 0, err
	}
	return cw.n + file.Size, nil
}

// smallMultipart builds a small multipart body in memory.
func smallMultipart(fields [][2]string, fileField, fileName string, data []byte) ([]byte, string) {
	var b bytes.Buffer
	boundary := randomBoundary()
	file := filePart{Field: fileField, FileName: fileName, Size: int64(len(data))}
	if err := writeMultipart(&b, boundary, fields, file, bytes.NewReader(data), make([]byte, max(len(data), 1)), nil); err != nil {
		panic(err) // writing to memory cannot fail
	}
	return b.Bytes(), "multipart/form-data; boundary=" + boundary
}

func randomBoundary() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("loadgen%x", b[:])
}

// countingWriter counts the bytes written and the largest single write.
type countingWriter struct {
	w   io.Writer
	n   int64
	max int
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.max = max(c.max, len(p))
	return n, err
}

// noise is an endless, cheap pseudo-random byte source (xorshift64), so
// transfers carry incompressible data without costing the tool much CPU.
type noise struct{ state uint64 }

func newNoise(seed uint64) *noise { return &noise{state: seed | 1} }

func (r *noise) next() uint64 {
	x := r.state
	x ^= x << 13
	x ^= x >> 7
	x ^= x << 17
	r.state = x
	return x
}

func (r *noise) Read(p []byte) (int, error) {
	i := 0
	for ; i+8 <= len(p); i += 8 {
		binary.LittleEndian.PutUint64(p[i:], r.next())
	}
	if i < len(p) {
		var tail [8]byte
		binary.LittleEndian.PutUint64(tail[:], r.next())
		copy(p[i:], tail[:])
	}
	return len(p), nil
}
