package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net/http"
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
	return streamBody(func(mw *multipart.Writer) error { return writeUpload(mw, f) })
}

// streamBody is uploadBody for any multipart content: write fills the
// writer and closes it.
func streamBody(write func(*multipart.Writer) error) (body io.ReadCloser, contentType string, wait func()) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	done := make(chan struct{})
	go func() {
		defer close(done)
		pw.CloseWithError(write(mw))
	}()
	return pr, mw.FormDataContentType(), func() {
		pr.CloseWithError(errBodyAbandoned)
		<-done
	}
}

// writeFile writes a multipart body of one file part, field name, then
// closes it (the VM's artifact upload).
func writeFile(mw *multipart.Writer, field, fileName string, r io.Reader) error {
	part, err := mw.CreateFormFile(field, fileName)
	if err != nil {
		return err
	}
	if _, err := io.Copy(part, r); err != nil {
		return err
	}
	return mw.Close()
}

// postForm sends a multipart POST whose body write produces while it is
// sent (chunked). Anything but exactly 200 is an *apiError, like the Swift
// worker sees it; on 200 it returns the answer's body.
func (a *api) postForm(ctx context.Context, ref string, id auth, write func(*multipart.Writer) error) ([]byte, error) {
	body, contentType, wait := streamBody(write)
	req, err := a.newRequest(ctx, http.MethodPost, ref, body, id)
	if err != nil {
		wait()
		return nil, err
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Accept", "application/json")
	resp, err := a.hc.Do(req)
	wait() // the answer is in (or the request failed): the body is done
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	a.log.Debugf("POST %s → %d", req.URL.Path, resp.StatusCode)
	if resp.StatusCode != http.StatusOK {
		return nil, answerError(req, resp.StatusCode, raw)
	}
	return raw, nil
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
