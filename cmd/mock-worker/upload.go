package main

import (
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"strconv"
)

// uploadForm is the content of POST /api/workers/upload (§4.8).
type uploadForm struct {
	BuildID, WorkerID string
	Success           bool
	ErrorMessage      string    // sent only on failure, when non-empty
	FileName          string    // build.ipa or build.apk
	File              io.Reader // nil: no result part
}

// writeUpload writes the multipart body in the order the controller relies
// on: the text parts build_id, worker_id, success and (on failure)
// error_message, then the file part result, then the closing boundary.
func writeUpload(mw *multipart.Writer, f uploadForm) error {
	fields := [][2]string{{"build_id", f.BuildID}, {"worker_id", f.WorkerID}, {"success", strconv.FormatBool(f.Success)}}
	if !f.Success && f.ErrorMessage != "" {
		fields = append(fields, [2]string{"error_message", f.ErrorMessage})
	}
	for _, kv := range fields {
		if err := mw.WriteField(kv[0], kv[1]); err != nil {
			return err
		}
	}
	if f.File != nil {
		part, err := mw.CreateFormFile("result", f.FileName)
		if err != nil {
			return err
		}
		if _, err := io.Copy(part, f.File); err != nil {
			return err
		}
	}
	return mw.Close()
}

// errBodyAbandoned stops the body writer once the request no longer reads.
var errBodyAbandoned = errors.New("upload body no longer read")

// uploadBody returns the multipart body of f as a stream produced while it
// is read (an io.Pipe fed by one goroutine, so memory stays bounded and the
// request goes out chunked), its Content-Type, and wait, which stops the
// producer if it is still writing and waits for it to end. Call wait exactly
// once, after the request is done with the body.
func uploadBody(f uploadForm) (body io.ReadCloser, contentType string, wait func()) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	done := make(chan struct{})
	go func() {
		defer close(done)
		pw.CloseWithError(writeUpload(mw, f))
	}()
	return pr, mw.FormDataContentType(), func() {
		pr.CloseWithError(errBodyAbandoned)
		<-done
	}
}

// resultReader is the fake result of a build: size pseudo-random bytes,
// generated as they are read and the same for the same build id.
func resultReader(buildID string, size int64) io.Reader {
	seed := sha256.Sum256([]byte("expo-free-agent mock result " + buildID))
	return io.LimitReader(rand.NewChaCha8(seed), size)
}

// resultFileName is the result part's file name for a platform.
func resultFileName(platform string) string {
	if platform == "ios" {
		return "build.ipa"
	}
	return "build.apk"
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
