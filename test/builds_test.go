package test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/cmd/app"
)

var (
	uuidRe  = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	tokenRe = regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`)
	isoRe   = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$`)
)

// TestSubmitAsTheCLI sends the TypeScript CLI's exact request and checks the
// answer satisfies its zod schema, the files are stored as sent, and the Apple
// fields are stored, logged and shown nowhere.
func TestSubmitAsTheCLI(t *testing.T) {
	t.Parallel()
	c := Start(t)
	source := []byte("PK\x03\x04 pretend zip named like a tarball")
	certs := DefaultCerts(t)
	r := c.PostMultipart("/api/builds/submit", c.KeyH(), CLISubmitParts(source, certs)...)
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	m := r.Object(t)
	require.Len(t, m, 4)
	id := m["id"].(string)
	require.Regexp(t, uuidRe, id)
	require.Equal(t, "pending", m["status"])
	require.IsType(t, float64(0), m["submitted_at"])
	require.Regexp(t, tokenRe, m["access_token"])

	got, err := os.ReadFile(filepath.Join(c.Dir, "storage", "builds", id+".zip"))
	require.NoError(t, err)
	require.Equal(t, source, got)
	got, err = os.ReadFile(filepath.Join(c.Dir, "storage", "certs", id+".zip"))
	require.NoError(t, err)
	require.Equal(t, certs, got)

	require.Equal(t, []string{"Build submitted"}, c.LogMessages(id))
	st := c.Status(id)
	require.Len(t, st, 8)
	for _, k := range []string{"worker_id", "started_at", "completed_at", "error_message"} {
		require.Contains(t, st, k)
		require.Nil(t, st[k], k)
	}
	require.Equal(t, "ios", st["platform"])

	// The Apple fields reach no answer, log, file or database row.
	c.Stop()
	secret := "hunter2-apple-secret"
	require.NotContains(t, c.Logs(), secret)
	require.NotContains(t, c.Logs(), "dev@example.com")
	for _, f := range storageFiles(t, filepath.Join(c.Dir, "storage")) {
		b, err := os.ReadFile(filepath.Join(c.Dir, "storage", f))
		require.NoError(t, err)
		require.False(t, bytes.Contains(b, []byte(secret)), f)
	}
	for _, f := range []string{"controller.db", "controller.db-wal"} {
		b, err := os.ReadFile(filepath.Join(c.Dir, "data", f))
		if err == nil {
			require.False(t, bytes.Contains(b, []byte(secret)), f)
			require.False(t, bytes.Contains(b, []byte("dev@example.com")), f)
		}
	}
}

func TestSubmitAliasAndPartOrder(t *testing.T) {
	t.Parallel()
	c := Start(t)
	// Parts in any order; the first part of each name counts; zero-byte certs is absent.
	r := c.PostMultipart("/api/builds", c.KeyH(),
		Part{Name: "platform", Data: []byte("android")},
		Part{Name: "certs", Filename: "c.zip", Data: []byte{}},
		Part{Name: "extra", Data: []byte("ignored")},
		Part{Name: "source", Filename: "a.zip", Data: []byte("first")},
		Part{Name: "source", Filename: "b.zip", Data: []byte("second")},
		Part{Name: "platform", Data: []byte("ios")})
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	id := r.Object(t)["id"].(string)
	require.Equal(t, "android", c.Status(id)["platform"])
	got, err := os.ReadFile(filepath.Join(c.Dir, "storage", "builds", id+".zip"))
	require.NoError(t, err)
	require.Equal(t, "first", string(got))
	require.NoFileExists(t, filepath.Join(c.Dir, "storage", "certs", id+".zip"))
	w := c.Register("w", "android")
	job := c.Poll(w)
	require.Nil(t, job["certs_url"])
}

func TestSubmitErrors(t *testing.T) {
	t.Parallel()
	c := Start(t, WithConfig(func(cfg *app.Config) {
		cfg.MaxSourceSize = 1000
		cfg.MaxCertsSize = 100
	}))
	ok := []byte("source")
	cases := []struct {
		name   string
		ct     string
		body   string
		parts  []Part
		status int
		msg    string
	}{
		{name: "NotMultipart", ct: "application/json", body: `{"platform":"ios"}`, status: 400, msg: "Content must be multipart/form-data"},
		{name: "NoContentType", ct: "", body: "x", status: 400, msg: "Content must be multipart/form-data"},
		{name: "NoBoundary", ct: "multipart/form-data", body: "x", status: 400, msg: "Invalid multipart body"},
		{name: "BrokenFraming", ct: "multipart/form-data; boundary=XYZ", body: "--XYZ\r\nContent-Disposition: form-data; name=\"source\"\r\n\r\nabc", status: 400, msg: "Invalid multipart body"},
		{name: "SourceTooLarge", parts: []Part{{Name: "source", Filename: "s", Data: bytes.Repeat([]byte("a"), 1001)}, {Name: "platform", Data: []byte("ios")}}, status: 413, msg: "Source file too large"},
		{name: "CertsTooLarge", parts: []Part{{Name: "source", Filename: "s", Data: ok}, {Name: "certs", Filename: "c", Data: bytes.Repeat([]byte("c"), 101)}, {Name: "platform", Data: []byte("ios")}}, status: 413, msg: "Certs file too large"},
		{name: "TextPartTooLarge", parts: []Part{{Name: "platform", Data: bytes.Repeat([]byte("i"), 64<<10+1)}}, status: 413, msg: "Request body too large"},
		{name: "SourceMissing", parts: []Part{{Name: "platform", Data: []byte("ios")}}, status: 400, msg: "Source file required"},
		{name: "SourceEmpty", parts: []Part{{Name: "source", Filename: "s", Data: []byte{}}, {Name: "platform", Data: []byte("ios")}}, status: 400, msg: "Source file required"},
		{name: "PlatformMissing", parts: []Part{{Name: "source", Filename: "s", Data: ok}}, status: 400, msg: "Valid platform required (ios|android)"},
		{name: "PlatformWrong", parts: []Part{{Name: "source", Filename: "s", Data: ok}, {Name: "platform", Data: []byte("IOS")}}, status: 400, msg: "Valid platform required (ios|android)"},
		{name: "PlatformPadded", parts: []Part{{Name: "source", Filename: "s", Data: ok}, {Name: "platform", Data: []byte(" ios")}}, status: 400, msg: "Valid platform required (ios|android)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var r Response
			if tc.parts != nil {
				r = c.PostMultipart("/api/builds/submit", c.KeyH(), tc.parts...)
			} else {
				h := c.KeyH()
				if tc.ct != "" {
					h["Content-Type"] = tc.ct
				}
				r = c.Do(http.MethodPost, "/api/builds/submit", strings.NewReader(tc.body), h)
			}
			require.Equal(t, tc.status, r.Status, "%s", r.Body)
			require.Equal(t, tc.msg, r.Error(t))
		})
	}
	// A refused submit leaves nothing: no rows, no files, no temporaries.
	list := c.Get("/api/builds", c.KeyH())
	require.Equal(t, "[]", strings.TrimSpace(string(list.Body)))
	require.Empty(t, storageFiles(t, filepath.Join(c.Dir, "storage")))
}

func TestSubmitDeclaredLengthTooLargeIsRefusedUnread(t *testing.T) {
	t.Parallel()
	c := Start(t, WithConfig(func(cfg *app.Config) {
		cfg.MaxSourceSize = 1000
		cfg.MaxCertsSize = 100
	}))
	// Exactly at the limits is accepted.
	r := c.PostMultipart("/api/builds/submit", c.KeyH(),
		Part{Name: "source", Filename: "s", Data: bytes.Repeat([]byte("s"), 1000)},
		Part{Name: "certs", Filename: "c", Data: bytes.Repeat([]byte("c"), 100)},
		Part{Name: "platform", Data: []byte("ios")})
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)

	// A declared Content-Length over source+certs+1 MiB is refused before the body is read.
	req, err := http.NewRequest(http.MethodPost, c.URL+"/api/builds/submit", strings.NewReader("x"))
	require.NoError(t, err)
	req.ContentLength = 1000 + 100 + 1<<20 + 1
	req.Header.Set("X-API-Key", c.Key)
	req.Header.Set("Content-Type", "multipart/form-data; boundary=abc")
	resp, err := (&http.Client{}).Do(req)
	if err == nil { // the server may close before the client finishes sending
		defer resp.Body.Close()
		require.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)
	}
}

func TestListActiveStatusLogs(t *testing.T) {
	t.Parallel()
	c := Start(t)
	a := c.Submit("ios", []byte("a"), nil)
	b := c.Submit("android", []byte("b"), nil)
	w := c.Register("mac-1")
	job := c.Poll(w)
	require.Equal(t, a.ID, job["id"])
	require.Equal(t, http.StatusOK, c.Upload(a.ID, w, true, []byte("IPA"), "").Status)

	r := c.Get("/api/builds", c.KeyH())
	require.Equal(t, http.StatusOK, r.Status)
	list, ok := r.JSON(t).([]any)
	require.True(t, ok, "list must be an array")
	require.Len(t, list, 2)
	first, second := list[0].(map[string]any), list[1].(map[string]any)
	require.Equal(t, b.ID, first["id"], "newest first")
	require.NotContains(t, first, "completedAt", "omitted, never null")
	require.Len(t, first, 3)
	require.Regexp(t, isoRe, first["createdAt"])
	require.Equal(t, "completed", second["status"])
	require.Regexp(t, isoRe, second["completedAt"])
	require.Len(t, second, 4)

	// Active lists running builds only.
	w2 := c.Register("mac-2")
	require.Equal(t, b.ID, c.Poll(w2)["id"])
	r = c.Get("/api/builds/active", c.KeyH())
	require.Equal(t, http.StatusOK, r.Status)
	builds := r.Object(t)["builds"].([]any)
	require.Len(t, builds, 1)
	act := builds[0].(map[string]any)
	require.Equal(t, map[string]any{"id": b.ID, "status": "assigned", "platform": "android", "worker_id": w2,
		"started_at": act["started_at"]}, act)
	require.IsType(t, float64(0), act["started_at"])

	// Status: eight fields, numeric times, alias.
	st := c.Status(a.ID)
	require.Len(t, st, 8)
	require.Equal(t, "completed", st["status"])
	require.Equal(t, w, st["worker_id"])
	require.IsType(t, float64(0), st["started_at"])
	require.IsType(t, float64(0), st["completed_at"])
	require.Nil(t, st["error_message"])
	alias := c.Get("/api/builds/"+a.ID, c.KeyH())
	require.Equal(t, http.StatusOK, alias.Status)
	require.Equal(t, st, alias.Object(t))
	upper := c.Get("/api/builds/"+strings.ToUpper(a.ID)+"/status", c.KeyH())
	require.Equal(t, http.StatusOK, upper.Status, "ids are lowered")

	// Logs: the whole log in order, with numeric timestamps and levels.
	r = c.Get("/api/builds/"+a.ID+"/logs", c.KeyH())
	require.Equal(t, http.StatusOK, r.Status)
	lm := r.Object(t)
	require.Equal(t, a.ID, lm["build_id"])
	logs := lm["logs"].([]any)
	require.Equal(t, []string{"Build submitted", "Assigned to worker mac-1", "Build completed successfully"}, c.LogMessages(a.ID))
	for _, l := range logs {
		e := l.(map[string]any)
		require.Len(t, e, 3)
		require.IsType(t, float64(0), e["timestamp"])
		require.Contains(t, []any{"info", "warn", "error"}, e["level"])
	}
}

func TestBuildNotFound(t *testing.T) {
	t.Parallel()
	c := Start(t)
	unknown := "00000000-0000-4000-8000-000000000000"
	for _, id := range []string{unknown, "not-a-uuid", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", strings.Repeat("a", 300), "..%2F..%2Fetc"} {
		for _, p := range []string{"/status", "", "/logs", "/download", "/download/source"} {
			r := c.Get("/api/builds/"+id+p, c.KeyH())
			require.Equal(t, http.StatusNotFound, r.Status, id+p)
			require.Equal(t, "Build not found", r.Error(t), id+p)
		}
		for _, p := range []string{"/cancel", "/retry"} {
			r := c.PostJSON("/api/builds/"+id+p, nil, c.KeyH())
			require.Equal(t, http.StatusNotFound, r.Status, id+p)
			require.Equal(t, "Build not found", r.Error(t), id+p)
		}
	}
}

func TestDownload(t *testing.T) {
	t.Parallel()
	c := Start(t)
	src := []byte("the source zip")
	b := c.Submit("android", src, nil)
	tokenH := H{"X-Build-Token": b.Token}

	r := c.Get("/api/builds/"+b.ID+"/download", tokenH)
	require.Equal(t, http.StatusBadRequest, r.Status)
	require.Equal(t, "Build not completed", r.Error(t))
	r = c.Get("/api/builds/"+b.ID+"/download/apk", tokenH)
	require.Equal(t, http.StatusBadRequest, r.Status)
	require.Equal(t, "Invalid file type", r.Error(t))

	r = c.Get("/api/builds/"+b.ID+"/download/source", tokenH)
	require.Equal(t, http.StatusOK, r.Status)
	require.Equal(t, src, r.Body)
	require.Equal(t, "application/zip", r.Header.Get("Content-Type"))
	require.Equal(t, `attachment; filename="`+b.ID+`.zip"`, r.Header.Get("Content-Disposition"))
	require.Equal(t, "14", r.Header.Get("Content-Length"))

	w := c.Register("w")
	c.Poll(w)
	result := bytes.Repeat([]byte("APK!"), 50000)
	require.Equal(t, http.StatusOK, c.Upload(b.ID, w, true, result, "").Status)
	for _, p := range []string{"/download", "/download/result"} {
		r = c.Get("/api/builds/"+b.ID+p, tokenH)
		require.Equal(t, http.StatusOK, r.Status)
		require.Equal(t, result, r.Body)
		require.Equal(t, "application/octet-stream", r.Header.Get("Content-Type"))
		require.Equal(t, `attachment; filename="`+b.ID+`.apk"`, r.Header.Get("Content-Disposition"))
		require.Equal(t, "200000", r.Header.Get("Content-Length"))
	}
	// The result is stored under the platform's extension with its SHA-256.
	_, err := os.Stat(filepath.Join(c.Dir, "storage", "results", b.ID+".apk"))
	require.NoError(t, err)
	sum := sha256.Sum256(result)
	require.Contains(t, string(c.Get("/", nil).Body), hex.EncodeToString(sum[:]))

	// Missing files give their 404s.
	require.NoError(t, os.Remove(filepath.Join(c.Dir, "storage", "results", b.ID+".apk")))
	r = c.Get("/api/builds/"+b.ID+"/download", tokenH)
	require.Equal(t, http.StatusNotFound, r.Status)
	require.Equal(t, "Build result not found", r.Error(t))
	require.NoError(t, os.Remove(filepath.Join(c.Dir, "storage", "builds", b.ID+".zip")))
	r = c.Get("/api/builds/"+b.ID+"/download/source", tokenH)
	require.Equal(t, http.StatusNotFound, r.Status)
	require.Equal(t, "Source file not found", r.Error(t))
}

func TestCancel(t *testing.T) {
	t.Parallel()
	c := Start(t)
	t.Run("PendingWithCLIEmptyJSONBody", func(t *testing.T) {
		b := c.Submit("ios", []byte("s"), nil)
		// The CLI: Content-Type application/json and no body at all.
		r := c.Do(http.MethodPost, "/api/builds/"+b.ID+"/cancel", nil, H{"X-API-Key": c.Key, "Content-Type": "application/json"})
		require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
		require.Equal(t, map[string]any{"status": "cancelled"}, r.Object(t))
		st := c.Status(b.ID)
		require.Equal(t, "failed", st["status"])
		require.Equal(t, "Build cancelled by user", st["error_message"])
		require.NotNil(t, st["completed_at"])
		require.Contains(t, c.LogMessages(b.ID), "Build cancelled")
		// It is never handed out.
		w := c.Register("w-cancel-pending", "ios")
		require.Nil(t, c.Poll(w))
		// Cancelling again: already finished.
		r = c.PostJSON("/api/builds/"+b.ID+"/cancel", `{"any":"json"}`, c.KeyH())
		require.Equal(t, http.StatusBadRequest, r.Status)
		require.Equal(t, "Build already finished", r.Error(t))
	})
	t.Run("RunningFreesWorkerAndRefusesItsWrites", func(t *testing.T) {
		b := c.Submit("android", []byte("s"), nil)
		w := c.Register("w-cancel-running", "android")
		require.Equal(t, b.ID, c.Poll(w)["id"])
		r := c.PostJSON("/api/builds/"+b.ID+"/cancel", nil, H{"X-Build-Token": b.Token})
		require.Equal(t, http.StatusOK, r.Status)
		st := c.Status(b.ID)
		require.Equal(t, "failed", st["status"])
		require.Equal(t, w, st["worker_id"], "keeps worker_id")
		ws := c.WorkerStats(w)
		require.Equal(t, "idle", ws["status"])
		require.Equal(t, float64(0), ws["totalBuilds"])
		// The worker's later writes are refused; its upload is 409.
		lr := c.PostJSON("/api/builds/"+b.ID+"/logs", map[string]string{"level": "info", "message": "late"}, c.KeyH("X-Worker-Id", w))
		require.Equal(t, http.StatusForbidden, lr.Status)
		ur := c.Upload(b.ID, w, true, []byte("late result"), "")
		require.Equal(t, http.StatusConflict, ur.Status)
		require.Equal(t, "Build already finished", ur.Error(t))
		require.Nil(t, c.Poll(w))
	})
}

func TestRetry(t *testing.T) {
	t.Parallel()
	c := Start(t)
	certs := DefaultCerts(t)
	b := c.Submit("ios", []byte("retry me"), certs)
	r := c.PostJSON("/api/builds/"+b.ID+"/retry", nil, c.KeyH())
	require.Equal(t, http.StatusConflict, r.Status)
	require.Equal(t, "Build is still in progress", r.Error(t))

	w := c.Register("w")
	c.Poll(w)
	require.Equal(t, http.StatusConflict, c.PostJSON("/api/builds/"+b.ID+"/retry", nil, c.KeyH()).Status)
	require.Equal(t, http.StatusOK, c.Upload(b.ID, w, false, nil, "xcodebuild exited 65").Status)

	// Retry with only the original's token.
	r = c.Do(http.MethodPost, "/api/builds/"+b.ID+"/retry", nil, H{"X-Build-Token": b.Token})
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	m := r.Object(t)
	require.Len(t, m, 5)
	newID := m["id"].(string)
	require.Regexp(t, uuidRe, newID)
	require.NotEqual(t, b.ID, newID)
	require.Equal(t, "pending", m["status"])
	require.Equal(t, b.ID, m["original_build_id"])
	require.Regexp(t, tokenRe, m["access_token"])
	require.NotEqual(t, b.Token, m["access_token"])
	require.Equal(t, []string{"Build submitted (retry of " + b.ID + ")"}, c.LogMessages(newID))
	require.Contains(t, c.LogMessages(b.ID), "Retried as build "+newID)

	// The copies are byte-identical and the new build is queued with certs.
	src, err := os.ReadFile(filepath.Join(c.Dir, "storage", "builds", newID+".zip"))
	require.NoError(t, err)
	require.Equal(t, "retry me", string(src))
	crt, err := os.ReadFile(filepath.Join(c.Dir, "storage", "certs", newID+".zip"))
	require.NoError(t, err)
	require.Equal(t, certs, crt)
	job := c.Poll(w)
	require.Equal(t, newID, job["id"])
	require.Equal(t, "/api/builds/"+newID+"/certs", job["certs_url"])
	// The new token opens the new build, not the old one's token.
	require.Equal(t, http.StatusOK, c.Get("/api/builds/"+newID+"/status", H{"X-Build-Token": m["access_token"].(string)}).Status)
	require.Equal(t, http.StatusForbidden, c.Get("/api/builds/"+newID+"/status", H{"X-Build-Token": b.Token}).Status)

	// A source that vanished gives the 400.
	require.Equal(t, http.StatusOK, c.Upload(newID, w, false, nil, "").Status)
	require.NoError(t, os.Remove(filepath.Join(c.Dir, "storage", "builds", newID+".zip")))
	r = c.PostJSON("/api/builds/"+newID+"/retry", nil, c.KeyH())
	require.Equal(t, http.StatusBadRequest, r.Status)
	require.Equal(t, "Original build source no longer available. Please submit a new build.", r.Error(t))
}

// TestStatusNumbersAndTimes checks submitted_at against the clock.
func TestStatusNumbersAndTimes(t *testing.T) {
	t.Parallel()
	c := Start(t, WithManualClock())
	c.Clock.Advance(1234 * time.Millisecond)
	b := c.Submit("ios", []byte("x"), nil)
	require.Equal(t, float64(c.Clock.Now().UnixMilli()), c.Status(b.ID)["submitted_at"])
}

// TestLongLogStreamsInOrder: a log longer than one page (1000 entries) is
// streamed whole and in order, and follows the same JSON shape.
func TestLongLogStreamsInOrder(t *testing.T) {
	t.Parallel()
	c := Start(t)
	b := c.Submit("ios", []byte("s"), nil)
	w := c.Register("w")
	c.Poll(w)
	for batch := 0; batch < 5; batch++ {
		lines := make([]map[string]string, 500)
		for i := range lines {
			lines[i] = map[string]string{"level": "info", "message": fmt.Sprintf("line %04d", batch*500+i)}
		}
		r := c.PostJSON("/api/builds/"+b.ID+"/logs", map[string]any{"logs": lines}, c.KeyH("X-Worker-Id", w))
		require.Equal(t, http.StatusOK, r.Status)
	}
	msgs := c.LogMessages(b.ID)
	require.Len(t, msgs, 2+2500)
	for i := 0; i < 2500; i++ {
		require.Equal(t, fmt.Sprintf("line %04d", i), msgs[2+i])
	}
	r := c.Get("/api/builds/"+b.ID+"/logs", H{"X-Build-Token": b.Token})
	require.Equal(t, "application/json", r.Header.Get("Content-Type"))
	require.Len(t, r.Object(t), 2)
}
