package test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/actors/files"
	"github.com/expo-free-agent/controller/cmd/app"
	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

// faultFS is the real file system with switchable faults.
type faultFS struct {
	files.OSFS
	mu       sync.Mutex
	mode     string // "", "eio" (writes fail), "full" (ENOSPC after 1 KiB), "readonly" (EROFS)
	syncFail bool
}

func (f *faultFS) set(mode string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mode = mode
}

func (f *faultFS) get() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mode
}

func (f *faultFS) CreateTemp(dir, pattern string) (files.TempFile, error) {
	if f.get() == "readonly" {
		return nil, &os.PathError{Op: "open", Path: dir, Err: syscall.EROFS}
	}
	file, err := f.OSFS.CreateTemp(dir, pattern)
	if err != nil {
		return nil, err
	}
	return &faultFile{TempFile: file, fs: f, dir: dir}, nil
}

func (f *faultFS) Open(name string) (files.File, error) {
	if f.get() == "eio-read" {
		return nil, &os.PathError{Op: "open", Path: name, Err: syscall.EIO}
	}
	return f.OSFS.Open(name)
}

type faultFile struct {
	files.TempFile
	fs      *faultFS
	dir     string
	written int
}

func (f *faultFile) Write(p []byte) (int, error) {
	switch f.fs.get() {
	case "eio":
		return 0, &os.PathError{Op: "write", Path: f.dir, Err: syscall.EIO}
	case "full":
		if f.written+len(p) > 1024 {
			return 0, &os.PathError{Op: "write", Path: f.dir, Err: syscall.ENOSPC}
		}
	}
	n, err := f.TempFile.Write(p)
	f.written += n
	return n, err
}

func (f *faultFile) Publish(path string) error {
	if f.fs.get() == "readonly" {
		return &os.LinkError{Op: "linkat", Old: f.dir, New: path, Err: syscall.EROFS}
	}
	return f.TempFile.Publish(path)
}

// faultStore is the real store with switchable write failures and a one-shot
// panic inside the queue manager.
type faultStore struct {
	*store.Store
	failWrites  atomic.Bool
	busyLogs    atomic.Bool // log appends refused as the store's queue is full
	panicAssign atomic.Int32
}

var errInjected = errors.New("injected: disk I/O error (SQLITE_IOERR) at /secret/path/controller.db")

func (s *faultStore) CreateBuild(ctx context.Context, nb store.NewBuild) error {
	if s.failWrites.Load() {
		return errInjected
	}
	return s.Store.CreateBuild(ctx, nb)
}

func (s *faultStore) AssignBuild(ctx context.Context, buildID, workerID string, now int64) error {
	if s.panicAssign.Add(-1) == 0 {
		panic("injected panic in the queue manager")
	}
	if s.failWrites.Load() {
		return errInjected
	}
	return s.Store.AssignBuild(ctx, buildID, workerID, now)
}

func (s *faultStore) AssignBuildWithOTP(ctx context.Context, buildID, workerID string, now int64, otp store.TokenGrant) error {
	if s.panicAssign.Add(-1) == 0 {
		panic("injected panic in the queue manager")
	}
	if s.failWrites.Load() {
		return errInjected
	}
	return s.Store.AssignBuildWithOTP(ctx, buildID, workerID, now, otp)
}

// AssignNext is how a queue on a shared store (PostgreSQL) assigns.
func (s *faultStore) AssignNext(ctx context.Context, workerID, prefer string, platforms []domain.Platform, now int64, otp *store.TokenGrant) (store.BuildChange, bool, error) {
	if s.panicAssign.Add(-1) == 0 {
		panic("injected panic in the queue manager")
	}
	if s.failWrites.Load() {
		return store.BuildChange{}, false, errInjected
	}
	return s.Store.AssignNext(ctx, workerID, prefer, platforms, now, otp)
}

func (s *faultStore) FinishBuild(ctx context.Context, f store.Finish) error {
	if s.failWrites.Load() {
		return errInjected
	}
	return s.Store.FinishBuild(ctx, f)
}

func (s *faultStore) AppendLogs(ctx context.Context, buildID, workerID string, lines []store.LogInput, now int64) (int, error) {
	if s.failWrites.Load() {
		return 0, errInjected
	}
	if s.busyLogs.Load() {
		return 0, fmt.Errorf("%w: append logs: %d MiB waiting at /secret/path", store.ErrBusy, 16)
	}
	return s.Store.AppendLogs(ctx, buildID, workerID, lines, now)
}

func (s *faultStore) CancelBuild(ctx context.Context, id string, now int64) (domain.Build, error) {
	if s.failWrites.Load() {
		return domain.Build{}, errInjected
	}
	return s.Store.CancelBuild(ctx, id, now)
}

func withFaults(fs *faultFS, st **faultStore) Option {
	return WithConfig(func(cfg *app.Config) {
		if fs != nil {
			cfg.Files = fs
		}
		if st != nil {
			cfg.WrapStore = func(real *store.Store) app.Store {
				*st = &faultStore{Store: real}
				return *st
			}
		}
	})
}

// TestLogAppendBackpressure: when the store has too many log lines waiting,
// a log POST is told to come back (503 with Retry-After), nothing of it is
// stored, and the same lines sent again are stored once.
func TestLogAppendBackpressure(t *testing.T) {
	t.Parallel()
	var st *faultStore
	c := Start(t, withFaults(nil, &st))
	b := c.Submit("ios", []byte("s"), nil)
	w := c.Register("w")
	require.Equal(t, b.ID, c.Poll(w)["id"])
	before := len(c.LogMessages(b.ID))

	st.busyLogs.Store(true)
	batch := map[string]any{"logs": []map[string]string{{"level": "info", "message": "step 1"}, {"level": "info", "message": "step 2"}}}
	r := c.PostJSON("/api/builds/"+b.ID+"/logs", batch, c.KeyH("X-Worker-Id", w))
	require.Equal(t, http.StatusServiceUnavailable, r.Status)
	require.Equal(t, "Too many log lines waiting, retry later", r.Error(t))
	require.Equal(t, "1", r.Header.Get("Retry-After"))
	requireNoLeak(t, r)
	require.Len(t, c.LogMessages(b.ID), before, "nothing stored")

	st.busyLogs.Store(false)
	r = c.PostJSON("/api/builds/"+b.ID+"/logs", batch, c.KeyH("X-Worker-Id", w))
	require.Equal(t, http.StatusOK, r.Status)
	require.Equal(t, []string{"step 1", "step 2"}, c.LogMessages(b.ID)[before:])
}

// requireNoLeak checks an answer carries none of the injected details.
func requireNoLeak(t *testing.T, r Response) {
	t.Helper()
	for _, s := range []string{"injected", "SQLITE", "/secret", "input/output", "no space", "read-only", "panic", "goroutine"} {
		require.NotContains(t, string(r.Body), s)
	}
}

func TestDiskFaults(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"eio", "full", "readonly"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			fs := &faultFS{}
			c := Start(t, withFaults(fs, nil))
			ok := c.Submit("ios", []byte("before the fault"), nil)
			w := c.Register("w")
			c.Poll(w)

			fs.set(mode)
			// A full disk is told as such (507); other failures are the route's 500.
			status, submitMsg, uploadMsg := http.StatusInternalServerError, "Build submission failed", "Upload failed"
			if mode == "full" {
				status, submitMsg, uploadMsg = http.StatusInsufficientStorage, "Insufficient storage", "Insufficient storage"
			}
			big := bytes.Repeat([]byte("x"), 4096)
			r := c.PostMultipart("/api/builds/submit", c.KeyH(), Part{Name: "source", Filename: "s", Data: big},
				Part{Name: "platform", Data: []byte("ios")})
			require.Equal(t, status, r.Status)
			require.Equal(t, submitMsg, r.Error(t))
			requireNoLeak(t, r)
			r = c.Upload(ok.ID, w, true, big, "")
			require.Equal(t, status, r.Status)
			require.Equal(t, uploadMsg, r.Error(t))
			requireNoLeak(t, r)
			if mode == "readonly" {
				h := c.Get("/health", nil)
				require.Equal(t, http.StatusServiceUnavailable, h.Status)
				require.Equal(t, "Storage not writable", h.Object(t)["error"])
			}
			// Nothing half-done: one build, still assigned; only its source on disk.
			list := c.Get("/api/builds", c.KeyH()).JSON(t).([]any)
			require.Len(t, list, 1)
			require.Equal(t, "assigned", c.Status(ok.ID)["status"])
			require.Equal(t, []string{"builds/" + ok.ID + ".zip"}, storageFiles(t, filepath.Join(c.Dir, "storage")))

			// The fault clears: everything works again, the worker uploads again.
			fs.set("")
			require.Equal(t, http.StatusOK, c.Get("/health", nil).Status)
			require.Equal(t, http.StatusOK, c.Upload(ok.ID, w, true, big, "").Status)
			require.Equal(t, big, c.Get("/api/builds/"+ok.ID+"/download", c.KeyH()).Body)
			c.Submit("ios", big, nil)
		})
	}
}

func TestDatabaseWriteFaults(t *testing.T) {
	t.Parallel()
	var st *faultStore
	c := Start(t, withFaults(nil, &st))
	b := c.Submit("ios", []byte("s"), nil)
	w := c.Register("w")

	st.failWrites.Store(true)
	r := c.PostMultipart("/api/builds/submit", c.KeyH(), Part{Name: "source", Filename: "s", Data: []byte("x")},
		Part{Name: "platform", Data: []byte("ios")})
	require.Equal(t, http.StatusInternalServerError, r.Status)
	require.Equal(t, "Build submission failed", r.Error(t))
	requireNoLeak(t, r)
	require.Equal(t, []string{"builds/" + b.ID + ".zip"}, storageFiles(t, filepath.Join(c.Dir, "storage")),
		"the files of a failed submit are removed")

	r = c.Get("/api/workers/poll?worker_id="+w, c.KeyH())
	require.Equal(t, http.StatusInternalServerError, r.Status)
	require.Equal(t, "Poll failed", r.Error(t))
	requireNoLeak(t, r)
	require.Equal(t, "pending", c.Status(b.ID)["status"], "the build keeps its place")
	r = c.PostJSON("/api/builds/"+b.ID+"/cancel", nil, c.KeyH())
	require.Equal(t, http.StatusInternalServerError, r.Status)
	require.Equal(t, "Cancel failed", r.Error(t))

	st.failWrites.Store(false)
	require.Equal(t, b.ID, c.Poll(w)["id"])
	st.failWrites.Store(true)
	r = c.PostJSON("/api/builds/"+b.ID+"/logs", map[string]string{"level": "info", "message": "x"}, c.KeyH("X-Worker-Id", w))
	require.Equal(t, http.StatusInternalServerError, r.Status)
	require.Equal(t, "Failed to add log", r.Error(t))
	r = c.Upload(b.ID, w, true, []byte("IPA"), "")
	require.Equal(t, http.StatusInternalServerError, r.Status)
	require.Equal(t, "Upload failed", r.Error(t))
	require.Equal(t, "assigned", c.Status(b.ID)["status"])
	require.Empty(t, storageFiles(t, filepath.Join(c.Dir, "storage", "results")), "no result without its row")

	st.failWrites.Store(false)
	require.Equal(t, http.StatusOK, c.Upload(b.ID, w, true, []byte("IPA"), "").Status)
	require.Equal(t, "completed", c.Status(b.ID)["status"])
	require.Equal(t, 1.0, c.WorkerStats(w)["successfulBuilds"])
	require.NotContains(t, c.Logs(), testKey)
}

// TestClosedDatabase: with the database gone, every endpoint answers its
// fixed 500 message (docs/API.md §1.1) and nothing internal leaks.
func TestClosedDatabase(t *testing.T) {
	t.Parallel()
	c := Start(t)
	b := c.Submit("ios", []byte("s"), DefaultCerts(t))
	w := c.Register("w")
	require.Equal(t, b.ID, c.Poll(w)["id"])
	other := c.Submit("ios", []byte("s"), nil)
	idle := c.Register("idle")
	require.NoError(t, c.App.Store.Close())
	bp, wh := "/api/builds/"+b.ID, c.KeyH("X-Worker-Id", w, "X-Build-Id", b.ID)
	diag := `{"worker_id":"` + w + `","status":"healthy","duration_ms":1,"checks":[]}`
	for _, tc := range []struct {
		r   Response
		msg string
	}{
		{c.PostMultipart("/api/builds/submit", c.KeyH(), Part{Name: "source", Filename: "s", Data: []byte("x")}, Part{Name: "platform", Data: []byte("ios")}), "Build submission failed"},
		{c.Get("/api/builds", c.KeyH()), "Internal server error"},
		{c.Get("/api/builds/active", c.KeyH()), "Internal server error"},
		{c.Get(bp+"/status", c.KeyH()), "Internal server error"},
		{c.Get(bp, H{"X-Build-Token": b.Token}), "Internal server error"},
		{c.Get(bp+"/logs", c.KeyH()), "Internal server error"},
		{c.Get(bp+"/download", c.KeyH()), "Failed to read build result"},
		{c.Get(bp+"/download/result", H{"X-Build-Token": b.Token}), "Failed to read build result"},
		{c.Get(bp+"/download/source", c.KeyH()), "Failed to read source file"},
		{c.PostJSON("/api/builds/"+other.ID+"/cancel", nil, c.KeyH()), "Cancel failed"},
		{c.PostJSON(bp+"/retry", nil, c.KeyH()), "Retry failed"},
		{c.PostJSON("/api/workers/register", map[string]any{"name": "n", "capabilities": map[string]any{}}, c.KeyH()), "Worker registration failed"},
		{c.Get("/api/workers/poll?worker_id="+idle, c.KeyH()), "Poll failed"},
		{c.Get(bp+"/source", wh), "Failed to read source file"},
		{c.Get(bp+"/certs", wh), "Failed to read certs file"},
		{c.Get(bp+"/certs-secure", wh), "Failed to process certs file"},
		{c.PostJSON(bp+"/logs", map[string]string{"level": "info", "message": "x"}, wh), "Failed to add log"},
		{c.PostJSON(bp+"/heartbeat?worker_id="+w, nil, c.KeyH()), "Heartbeat failed"},
		{c.PostJSON(bp+"/telemetry", `{"type":"monitor_started"}`, wh), "Telemetry failed"},
		{c.Upload(b.ID, w, true, []byte("ipa"), ""), "Upload failed"},
		{c.PostJSON("/api/workers/"+w+"/unregister", nil, c.KeyH()), "Unregister failed"},
		{c.Get("/api/workers/"+w+"/stats", c.KeyH()), "Failed to fetch stats"},
		{c.PostJSON("/api/diagnostics/report", diag, c.KeyH()), "Failed to save diagnostic report"},
		{c.Get("/api/diagnostics/"+w, c.KeyH()), "Failed to fetch diagnostic reports"},
		{c.Get("/api/diagnostics/"+w+"/latest", c.KeyH()), "Failed to fetch diagnostic reports"},
		{c.Get("/api/stats", nil), "Internal server error"},
	} {
		require.Equal(t, http.StatusInternalServerError, tc.r.Status, "%s: %s", tc.msg, tc.r.Body)
		require.Equal(t, tc.msg, tc.r.Error(t))
		requireNoLeak(t, tc.r)
		require.NotContains(t, string(tc.r.Body), "sql")
	}
	// The dashboard's pages say the same on a page.
	for _, path := range []string{"/", "/builds/" + b.ID, "/builds"} {
		r := c.Get(path, c.KeyH())
		require.Equal(t, http.StatusInternalServerError, r.Status, "%s: %s", path, r.Body)
		require.Contains(t, string(r.Body), `<p class="error" id="error-message">Internal server error</p>`, path)
		requireNoLeak(t, r)
		require.NotContains(t, string(r.Body), "sql")
	}
	require.Equal(t, http.StatusServiceUnavailable, c.Get("/health", nil).Status)
}

// TestDiskReadFaults: files that exist but cannot be read give each
// endpoint's fixed 500, not a 404.
func TestDiskReadFaults(t *testing.T) {
	t.Parallel()
	fs := &faultFS{}
	c := Start(t, withFaults(fs, nil))
	done := c.Submit("ios", []byte("s"), DefaultCerts(t))
	w := c.Register("w")
	c.Poll(w)
	require.Equal(t, http.StatusOK, c.Upload(done.ID, w, true, []byte("ipa"), "").Status)
	run := c.Submit("ios", []byte("s"), DefaultCerts(t))
	c.Poll(w)
	fs.set("eio-read")
	rp, wh := "/api/builds/"+run.ID, c.KeyH("X-Worker-Id", w, "X-Build-Id", run.ID)
	for _, tc := range []struct {
		r   Response
		msg string
	}{
		{c.Get("/api/builds/"+done.ID+"/download", c.KeyH()), "Failed to read build result"},
		{c.Get("/api/builds/"+done.ID+"/download/source", c.KeyH()), "Failed to read source file"},
		{c.PostJSON("/api/builds/"+done.ID+"/retry", nil, c.KeyH()), "Retry failed"},
		{c.Get(rp+"/source", wh), "Failed to read source file"},
		{c.Get(rp+"/certs", wh), "Failed to read certs file"},
		{c.Get(rp+"/certs-secure", wh), "Failed to process certs file"},
	} {
		require.Equal(t, http.StatusInternalServerError, tc.r.Status, "%s: %s", tc.msg, tc.r.Body)
		require.Equal(t, tc.msg, tc.r.Error(t))
		requireNoLeak(t, tc.r)
	}
	require.Len(t, c.Get("/api/builds", c.KeyH()).JSON(t).([]any), 2, "the failed retry created nothing")
	fs.set("")
	require.Equal(t, http.StatusOK, c.Get("/api/builds/"+done.ID+"/download", c.KeyH()).Status)
}

// TestActorPanicIsRecovered: a panic inside the queue manager answers the
// request at once (no hang), suture restarts the actor from the store, and
// the build it was handling is still queued.
func TestActorPanicIsRecovered(t *testing.T) {
	t.Parallel()
	var st *faultStore
	c := Start(t, withFaults(nil, &st))
	b := c.Submit("ios", []byte("s"), nil)
	w := c.Register("w")
	st.panicAssign.Store(1)
	start := time.Now()
	r := c.Get("/api/workers/poll?worker_id="+w, c.KeyH())
	require.Equal(t, http.StatusInternalServerError, r.Status)
	require.Equal(t, "Poll failed", r.Error(t))
	requireNoLeak(t, r)
	require.Less(t, time.Since(start), 10*time.Second, "answered, not left hanging")
	// The restarted actor reloaded the queue: the build is handed out.
	eventually(t, 10*time.Second, func() bool {
		r := c.Get("/api/workers/poll?worker_id="+w, c.KeyH())
		if r.Status != http.StatusOK {
			return false
		}
		job, _ := r.Object(t)["job"].(map[string]any)
		return job != nil && job["id"] == b.ID
	}, "the build is assigned after the restart")
	require.Contains(t, c.Logs(), "injected panic in the queue manager")
	require.Equal(t, "assigned", c.Status(b.ID)["status"])
}

// TestSlowClientsAreCutOff: a client that never finishes its headers is
// disconnected after the header timeout, while a slow but steady large
// upload (no whole-request deadline) still succeeds.
func TestSlowClientsAreCutOff(t *testing.T) {
	t.Parallel()
	c := Start(t, WithConfig(func(cfg *app.Config) { cfg.HeaderTimeout = 300 * time.Millisecond }))
	conn, err := net.Dial("tcp", strings.TrimPrefix(c.URL, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.Write([]byte("GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: "))
	require.NoError(t, err)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(20*time.Second)))
	buf := make([]byte, 512)
	var readErr error
	for readErr == nil {
		_, readErr = conn.Read(buf)
	}
	var ne net.Error
	require.False(t, errors.As(readErr, &ne) && ne.Timeout(), "the server closed the connection, not our deadline: %v", readErr)

	// A body that trickles in longer than the header timeout is still fine.
	b := c.Submit("ios", []byte("s"), nil)
	w := c.Register("w")
	c.Poll(w)
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		mw.WriteField("build_id", b.ID)
		mw.WriteField("worker_id", w)
		mw.WriteField("success", "true")
		fw, _ := mw.CreateFormFile("result", "b.ipa")
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for i := 0; i < 12; i++ { // ~600 ms, twice the header timeout
			<-tick.C
			fw.Write(bytes.Repeat([]byte{byte(i)}, 1000))
		}
		pw.CloseWithError(mw.Close())
	}()
	r := c.Do(http.MethodPost, "/api/workers/upload", pr, c.KeyH("Content-Type", mw.FormDataContentType()))
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	require.Equal(t, "completed", c.Status(b.ID)["status"])
}
