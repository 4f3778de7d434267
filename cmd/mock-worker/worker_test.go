package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/internal/testkit"
)

const (
	testKey      = "test-key-1234567890abcdef"
	testWorkerID = "8d2f6c7e-1b3a-4c5d-9e8f-0a1b2c3d4e5f"
	testBuildID  = "9f1c2a4b-5d6e-4f70-8192-a3b4c5d6e7f8"
	testTimeout  = 10 * time.Second
)

// request is one request the fake controller received.
type request struct {
	At                  time.Time // when it arrived
	Method, Path, Query string
	Header              http.Header
	TransferEncoding    []string
	Body                []byte     // JSON requests
	Parts               []formPart // uploads
	JSON                map[string]any
}

// formPart is one upload part; the file is kept as its size and digest.
type formPart struct {
	Name, FileName, Value string
	Size                  int64
	SHA256                [32]byte
}

// fakeController answers the worker endpoints of the protocol for one build
// and records every request. Its knobs make it misbehave on purpose.
type fakeController struct {
	t        *testing.T
	platform string
	source   []byte
	certs    bool

	// Knobs, set before the worker starts.
	registerFailures []int // statuses answered to the first registrations
	pollNotFound     int   // answer 404 Worker not found to this many polls after the job
	logsStatus       int   // non-zero: answer POST logs with this status
	uploadStatuses   []int // statuses answered to successive uploads, then 200
	holdIdle         bool  // hold an idle poll for its ?wait= seconds, as the controller does

	mu        sync.Mutex
	reqs      []request
	jobGiven  bool
	idlePolls int
	polled    chan struct{} // a token per idle poll
	nextID    int
}

func newFakeController(t *testing.T) *fakeController {
	return &fakeController{t: t, platform: "ios", source: bytes.Repeat([]byte("PK\x03\x04source"), 10000),
		certs: true, polled: make(chan struct{}, 1000)}
}

func (f *fakeController) start() *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(f.serve))
	f.t.Cleanup(srv.Close)
	return srv
}

func (f *fakeController) requests() []request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]request(nil), f.reqs...)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func fail(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// readRequest records r: its JSON body, or its multipart parts (files as
// size and digest). On a malformed multipart body it answers 400 and
// returns false.
func readRequest(t *testing.T, w http.ResponseWriter, r *http.Request) (request, bool) {
	rec := request{At: time.Now(), Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header.Clone(),
		TransferEncoding: r.TransferEncoding}
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/form-data") {
		rec.Body, _ = io.ReadAll(r.Body)
		if len(rec.Body) > 0 {
			if err := json.Unmarshal(rec.Body, &rec.JSON); err != nil {
				t.Errorf("JSON body of %s %s: %v", r.Method, r.URL.Path, err) // not require: this is the server's goroutine
			}
		}
		return rec, true
	}
	mr, err := r.MultipartReader()
	if err != nil {
		fail(w, 400, "Invalid multipart body")
		return rec, false
	}
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			return rec, true
		}
		if err != nil {
			fail(w, 400, "Invalid multipart body")
			return rec, false
		}
		fp := formPart{Name: p.FormName(), FileName: p.FileName()}
		if fp.FileName != "" {
			h := sha256.New()
			fp.Size, _ = io.Copy(h, p)
			copy(fp.SHA256[:], h.Sum(nil))
		} else {
			v, _ := io.ReadAll(p)
			fp.Value = string(v)
		}
		rec.Parts = append(rec.Parts, fp)
	}
}

func (f *fakeController) serve(w http.ResponseWriter, r *http.Request) {
	rec, ok := readRequest(f.t, w, r)
	if !ok {
		return
	}
	f.mu.Lock()
	f.reqs = append(f.reqs, rec)
	f.mu.Unlock()

	build := "/api/builds/" + testBuildID
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/api/workers/register":
		f.mu.Lock()
		var status int
		if len(f.registerFailures) > 0 {
			status, f.registerFailures = f.registerFailures[0], f.registerFailures[1:]
		}
		f.nextID++
		id := testWorkerID
		if f.nextID > 1 {
			id = fmt.Sprintf("%08d-0000-4000-8000-000000000000", f.nextID)
		}
		f.mu.Unlock()
		if status != 0 {
			fail(w, status, http.StatusText(status))
			return
		}
		writeJSON(w, 200, map[string]string{"id": id, "status": "registered", "baseImageId": "img"})
	case r.Method == http.MethodGet && r.URL.Path == "/api/workers/poll":
		f.mu.Lock()
		given, notFound := f.jobGiven, f.jobGiven && f.pollNotFound > 0
		if notFound {
			f.pollNotFound--
		}
		f.jobGiven = true
		if given && !notFound {
			f.idlePolls++
		}
		f.mu.Unlock()
		switch {
		case notFound:
			fail(w, 404, "Worker not found")
		case given:
			f.polled <- struct{}{}
			if f.holdIdle {
				holdPoll(r)
			}
			writeJSON(w, 200, map[string]any{"job": nil})
		default:
			job := map[string]any{"id": testBuildID, "platform": f.platform, "source_url": build + "/source",
				"certs_url": nil, "baseImageId": "img"}
			if f.certs {
				job["certs_url"] = build + "/certs"
			}
			writeJSON(w, 200, map[string]any{"job": job})
		}
	case r.Method == http.MethodGet && r.URL.Path == build+"/source":
		w.Header().Set("Content-Type", "application/zip")
		w.Header().Set("Content-Length", fmt.Sprint(len(f.source)))
		_, _ = w.Write(f.source)
	case r.Method == http.MethodGet && r.URL.Path == build+"/certs-secure":
		b64 := base64.StdEncoding.EncodeToString
		writeJSON(w, 200, map[string]any{"p12": b64([]byte("fake p12 bytes")), "p12Password": "plain pw!",
			"keychainPassword": b64([]byte("kc")), "provisioningProfiles": []string{b64([]byte("profile"))}})
	case r.Method == http.MethodPost && r.URL.Path == build+"/logs":
		if f.logsStatus != 0 {
			fail(w, f.logsStatus, "Worker not authorized for this build")
			return
		}
		logs, _ := rec.JSON["logs"].([]any)
		writeJSON(w, 200, map[string]any{"success": true, "count": len(logs)})
	case r.Method == http.MethodPost && r.URL.Path == build+"/heartbeat":
		writeJSON(w, 200, map[string]any{"status": "ok", "timestamp": time.Now().UnixMilli()})
	case r.Method == http.MethodPost && r.URL.Path == build+"/telemetry":
		writeJSON(w, 200, map[string]string{"status": "ok"})
	case r.Method == http.MethodPost && r.URL.Path == "/api/workers/upload":
		f.mu.Lock()
		status := 200
		if len(f.uploadStatuses) > 0 {
			status, f.uploadStatuses = f.uploadStatuses[0], f.uploadStatuses[1:]
		}
		f.mu.Unlock()
		if status != 200 {
			fail(w, status, "Upload failed")
			return
		}
		outcome := "failed"
		for _, p := range rec.Parts {
			if p.Name == "success" && p.Value == "true" {
				outcome = "success"
			}
		}
		writeJSON(w, 200, map[string]string{"status": outcome})
	case r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/api/workers/") && strings.HasSuffix(r.URL.Path, "/unregister"):
		writeJSON(w, 200, map[string]any{"success": true, "message": "Worker unregistered", "builds_reassigned": 0})
	default:
		fail(w, 404, "Not found")
	}
}

// holdPoll holds an idle poll as the controller does (§4.18): for its
// ?wait= seconds, or until the client goes away.
func holdPoll(r *http.Request) {
	n, err := strconv.Atoi(r.URL.Query().Get("wait"))
	if err != nil || n <= 0 {
		return
	}
	t := time.NewTimer(time.Duration(n) * time.Second)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
	}
}

func testConfig(t *testing.T, url string) Config {
	return Config{
		URL: url, APIKey: testKey, Name: "test-worker", Platforms: []string{"ios", "android"},
		PollInterval: 10 * time.Millisecond, HeartbeatInterval: 10 * time.Millisecond,
		BuildTime: 50 * time.Millisecond, ResultSize: 200<<10 + 3, LogBatch: 4, Once: true,
		StateFile: filepath.Join(t.TempDir(), "state.json"), TempDir: t.TempDir(), Seed: 1,
	}
}

// runWorker runs the worker until it returns (bounded by testTimeout).
func runWorker(t *testing.T, ctx context.Context, cfg Config, out io.Writer) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, out) }()
	select {
	case err := <-done:
		return err
	case <-time.After(testTimeout):
		t.Fatal("the worker did not finish in time")
		return nil
	}
}

func filter(reqs []request, keep func(request) bool) []request {
	var out []request
	for _, r := range reqs {
		if keep(r) {
			out = append(out, r)
		}
	}
	return out
}

func byPath(reqs []request, method, path string) []request {
	return filter(reqs, func(r request) bool { return r.Method == method && r.Path == path })
}

func TestFullBuildCycle(t *testing.T) {
	t.Parallel()
	fc := newFakeController(t)
	srv := fc.start()
	cfg := testConfig(t, srv.URL)
	var out testkit.LockedBuffer
	require.NoError(t, runWorker(t, context.Background(), cfg, &out))
	reqs := fc.requests()
	build := "/api/builds/" + testBuildID

	// Every request but the host's CPU snapshot carries the key.
	for _, r := range reqs {
		if r.Path == build+"/telemetry" && r.JSON["type"] == "cpu_snapshot" {
			require.Empty(t, r.Header.Get("X-API-Key"), "cpu_snapshot must be keyless")
			continue
		}
		require.Equal(t, testKey, r.Header.Get("X-API-Key"), "%s %s", r.Method, r.Path)
	}

	// Register: name, capabilities, no id the first time; the id is saved.
	regs := byPath(reqs, "POST", "/api/workers/register")
	require.Len(t, regs, 1)
	require.Equal(t, "test-worker", regs[0].JSON["name"])
	require.Equal(t, map[string]any{"platforms": []any{"ios", "android"}, "maxConcurrentBuilds": float64(1), "mock": true},
		regs[0].JSON["capabilities"])
	require.NotContains(t, regs[0].JSON, "id")
	st, err := loadState(cfg.StateFile)
	require.NoError(t, err)
	require.Equal(t, testWorkerID, st.WorkerID)

	// Poll carries the worker id; the first poll got the job and no poll
	// happens while building (between the source download and the upload).
	polls := byPath(reqs, "GET", "/api/workers/poll")
	require.NotEmpty(t, polls)
	require.Equal(t, "worker_id="+testWorkerID, polls[0].Query)
	var sourceAt, uploadAt int
	for i, r := range reqs {
		switch r.Path {
		case build + "/source":
			sourceAt = i
		case "/api/workers/upload":
			uploadAt = i
		}
	}
	require.Less(t, sourceAt, uploadAt)
	for _, r := range reqs[sourceAt:uploadAt] {
		require.NotEqual(t, "/api/workers/poll", r.Path, "polled while building")
	}

	// Source and certs-secure carry the worker (and build) identity.
	src := byPath(reqs, "GET", build+"/source")
	require.Len(t, src, 1)
	require.Equal(t, testWorkerID, src[0].Header.Get("X-Worker-Id"))
	certs := byPath(reqs, "GET", build+"/certs-secure")
	require.Len(t, certs, 1)
	require.Equal(t, testWorkerID, certs[0].Header.Get("X-Worker-Id"))
	require.Equal(t, testBuildID, certs[0].Header.Get("X-Build-Id"))
	require.Equal(t, "application/json", certs[0].Header.Get("Accept"))

	// Telemetry: monitor_started first, keyed heartbeats with the VM's
	// fields, keyless CPU snapshots; all with X-Worker-Id and X-Build-Id.
	tel := byPath(reqs, "POST", build+"/telemetry")
	require.NotEmpty(t, tel)
	require.Equal(t, "monitor_started", tel[0].JSON["type"])
	var heartbeats, snapshots int
	for _, r := range tel {
		require.Equal(t, testWorkerID, r.Header.Get("X-Worker-Id"))
		require.Equal(t, testBuildID, r.Header.Get("X-Build-Id"))
		ts, _ := r.JSON["timestamp"].(string)
		_, err := time.Parse(time.RFC3339Nano, ts)
		require.NoError(t, err, "timestamp %q", ts)
		data, ok := r.JSON["data"].(map[string]any)
		require.True(t, ok)
		switch r.JSON["type"] {
		case "heartbeat":
			heartbeats++
			require.Equal(t, float64(heartbeats), data["heartbeat_count"])
			require.NotEmpty(t, data["stage"])
			require.Contains(t, data, "uptime_seconds")
			metrics, ok := data["metrics"].(map[string]any)
			require.True(t, ok)
			for _, k := range []string{"cpu_percent", "memory_mb", "disk_percent", "processes"} {
				require.IsType(t, float64(0), metrics[k], k)
			}
		case "cpu_snapshot":
			snapshots++
			require.Empty(t, r.Header.Get("X-API-Key"))
			require.IsType(t, float64(0), data["cpu_percent"])
			require.IsType(t, float64(0), data["memory_mb"])
		}
	}
	require.GreaterOrEqual(t, heartbeats, 1)
	require.GreaterOrEqual(t, snapshots, 1)

	// Logs: batches of at most --log-batch lines, all full but the last, in
	// script order, with X-Worker-Id.
	script, _ := buildScript("ios", int64(len(fc.source)), true, true, cfg.ResultSize)
	var got []logLine
	batches := byPath(reqs, "POST", build+"/logs")
	require.Len(t, batches, (len(script)+cfg.LogBatch-1)/cfg.LogBatch)
	for i, r := range batches {
		require.Equal(t, testWorkerID, r.Header.Get("X-Worker-Id"))
		var body struct {
			Logs []logLine `json:"logs"`
		}
		require.NoError(t, json.Unmarshal(r.Body, &body))
		if i < len(batches)-1 {
			require.Len(t, body.Logs, cfg.LogBatch)
		}
		got = append(got, body.Logs...)
	}
	require.Len(t, got, len(script))
	for i := range script {
		require.Equal(t, script[i].Level, got[i].Level)
		require.Equal(t, script[i].Message, got[i].Message)
	}

	// Progress heartbeats with ?worker_id=.
	var progress []float64
	for _, r := range byPath(reqs, "POST", build+"/heartbeat") {
		require.Equal(t, "worker_id="+testWorkerID, r.Query)
		progress = append(progress, r.JSON["progress"].(float64))
	}
	require.Equal(t, []float64{25, 50, 75, 100}, progress)

	// Upload: the text parts, then the streamed result.
	ups := byPath(reqs, "POST", "/api/workers/upload")
	require.Len(t, ups, 1)
	parts := ups[0].Parts
	require.Len(t, parts, 4)
	require.Equal(t, formPart{Name: "build_id", Value: testBuildID}, parts[0])
	require.Equal(t, formPart{Name: "worker_id", Value: testWorkerID}, parts[1])
	require.Equal(t, formPart{Name: "success", Value: "true"}, parts[2])
	require.Equal(t, "result", parts[3].Name)
	require.Equal(t, "build.ipa", parts[3].FileName)
	require.Equal(t, cfg.ResultSize, parts[3].Size)
	want := sha256.New()
	_, _ = io.Copy(want, resultReader(testBuildID, cfg.ResultSize))
	require.Equal(t, want.Sum(nil), parts[3].SHA256[:])
	require.Equal(t, []string{"chunked"}, ups[0].TransferEncoding, "the upload streams")

	// Goodbye.
	un := byPath(reqs, "POST", "/api/workers/"+testWorkerID+"/unregister")
	require.Len(t, un, 1)

	text := out.String()
	for _, s := range []string{"registered as test-worker (id 8d2f6c7e…)", "got build 9f1c2a4b… (ios)",
		"downloaded source " + humanSize(int64(len(fc.source))), "fetched signing certs: p12 14 B, 1 provisioning profile(s)",
		"uploaded result 200.0 KiB → success", "unregistered"} {
		require.Contains(t, text, s)
	}
}

func TestCancelledBuildIsAbandoned(t *testing.T) {
	t.Parallel()
	fc := newFakeController(t)
	fc.logsStatus = http.StatusForbidden // cancelled: worker-scoped writes are refused
	srv := fc.start()
	cfg := testConfig(t, srv.URL)
	cfg.Once = false
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-fc.polled // back to polling after the abandoned build
		cancel()
	}()
	var out testkit.LockedBuffer
	require.NoError(t, runWorker(t, ctx, cfg, &out))

	reqs := fc.requests()
	require.Len(t, byPath(reqs, "POST", "/api/builds/"+testBuildID+"/logs"), 1, "stops at the first 403")
	require.Empty(t, byPath(reqs, "POST", "/api/workers/upload"), "an abandoned build uploads nothing")
	require.NotEmpty(t, filter(reqs, func(r request) bool { return r.Path == "/api/workers/poll" && r.Query != "" }))
	require.Len(t, byPath(reqs, "POST", "/api/workers/"+testWorkerID+"/unregister"), 1)
	require.Contains(t, out.String(), "was cancelled or reassigned (403 Worker not authorized for this build); abandoning it")
}

func TestFailingUploadIsReportedOnce(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		statuses []int
		uploads  int
	}{
		{"ServerError", []int{500, 500}, 2}, // then success=false, once
		{"AlreadyFinished", []int{409}, 1},  // not ours any more: no repost
		{"Forbidden", []int{403}, 1},        // same
		{"TooLarge", []int{413}, 2},         // reported as failed
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fc := newFakeController(t)
			fc.uploadStatuses = tc.statuses
			srv := fc.start()
			require.NoError(t, runWorker(t, context.Background(), testConfig(t, srv.URL), io.Discard))
			ups := byPath(fc.requests(), "POST", "/api/workers/upload")
			require.Len(t, ups, tc.uploads)
			require.Equal(t, "true", ups[0].Parts[2].Value)
			if tc.uploads == 2 {
				parts := ups[1].Parts
				require.Equal(t, []string{"build_id", "worker_id", "success", "error_message"},
					[]string{parts[0].Name, parts[1].Name, parts[2].Name, parts[3].Name})
				require.Equal(t, "false", parts[2].Value)
				require.Contains(t, parts[3].Value, "Result upload failed")
				require.Len(t, parts, 4, "no file on failure")
			}
		})
	}
}

func TestFailRateReportsFailure(t *testing.T) {
	t.Parallel()
	fc := newFakeController(t)
	fc.platform, fc.certs = "android", false
	srv := fc.start()
	cfg := testConfig(t, srv.URL)
	cfg.FailRate = 1
	require.NoError(t, runWorker(t, context.Background(), cfg, io.Discard))
	reqs := fc.requests()
	require.Empty(t, byPath(reqs, "GET", "/api/builds/"+testBuildID+"/certs-secure"), "no certs_url, no certs fetch")
	ups := byPath(reqs, "POST", "/api/workers/upload")
	require.Len(t, ups, 1)
	_, msg := buildScript("android", 0, false, false, 0)
	require.Equal(t, []formPart{{Name: "build_id", Value: testBuildID}, {Name: "worker_id", Value: testWorkerID},
		{Name: "success", Value: "false"}, {Name: "error_message", Value: msg}}, ups[0].Parts)
	var levels []string
	for _, r := range byPath(reqs, "POST", "/api/builds/"+testBuildID+"/logs") {
		for _, l := range r.JSON["logs"].([]any) {
			levels = append(levels, l.(map[string]any)["level"].(string))
		}
	}
	require.Equal(t, "error", levels[len(levels)-1])
}

func TestPollWorkerNotFoundReregisters(t *testing.T) {
	t.Parallel()
	fc := newFakeController(t)
	fc.pollNotFound = 1
	srv := fc.start()
	cfg := testConfig(t, srv.URL)
	cfg.MaxBuilds, cfg.Once = 0, false
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-fc.polled // the poll after the re-registration
		cancel()
	}()
	require.NoError(t, runWorker(t, ctx, cfg, io.Discard))
	regs := byPath(fc.requests(), "POST", "/api/workers/register")
	require.Len(t, regs, 2)
	require.Equal(t, testWorkerID, regs[1].JSON["id"], "re-registers with the id it had")
	st, err := loadState(cfg.StateFile)
	require.NoError(t, err)
	newID := "00000002-0000-4000-8000-000000000000"
	require.Equal(t, newID, st.WorkerID, "saves the id the controller gave")
	polls := byPath(fc.requests(), "GET", "/api/workers/poll")
	require.Equal(t, "worker_id="+newID, polls[len(polls)-1].Query)
}

func TestRegister(t *testing.T) {
	t.Parallel()

	t.Run("SavedID", func(t *testing.T) {
		t.Parallel()
		fc := newFakeController(t)
		srv := fc.start()
		cfg := testConfig(t, srv.URL)
		require.NoError(t, saveState(cfg.StateFile, state{WorkerID: testWorkerID}))
		require.NoError(t, runWorker(t, context.Background(), cfg, io.Discard))
		regs := byPath(fc.requests(), "POST", "/api/workers/register")
		require.Len(t, regs, 1)
		require.Equal(t, testWorkerID, regs[0].JSON["id"])
	})

	t.Run("RetriesUnavailable", func(t *testing.T) {
		t.Parallel()
		fc := newFakeController(t)
		fc.registerFailures = []int{503, 502}
		srv := fc.start()
		var out testkit.LockedBuffer
		require.NoError(t, runWorker(t, context.Background(), testConfig(t, srv.URL), &out))
		require.Len(t, byPath(fc.requests(), "POST", "/api/workers/register"), 3)
		require.Contains(t, out.String(), "cannot register with "+srv.URL+" (503 Service Unavailable); retrying in 10ms")
		require.Len(t, byPath(fc.requests(), "POST", "/api/workers/upload"), 1)
	})

	for _, status := range []int{401, 403} {
		t.Run(fmt.Sprintf("Refused%d", status), func(t *testing.T) {
			t.Parallel()
			fc := newFakeController(t)
			fc.registerFailures = []int{status}
			srv := fc.start()
			err := runWorker(t, context.Background(), testConfig(t, srv.URL), io.Discard)
			require.True(t, isFatal(err), "%v", err)
			require.Contains(t, err.Error(), "refused the API key")
			require.Len(t, fc.requests(), 1, "no retry, no poll")
		})
	}

	t.Run("ControllerDown", func(t *testing.T) {
		t.Parallel()
		srv := httptest.NewServer(http.NotFoundHandler())
		url := srv.URL
		srv.Close() // connection refused from now on
		cfg := testConfig(t, url)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		out := &notifyingBuffer{match: "retrying", seen: make(chan struct{})}
		go func() {
			<-out.seen
			cancel()
		}()
		require.NoError(t, runWorker(t, ctx, cfg, out))
		require.Contains(t, out.String(), "stopped before registering")
	})
}

func TestStopSignalUnregisters(t *testing.T) {
	t.Parallel()
	fc := newFakeController(t)
	srv := fc.start()
	cfg := testConfig(t, srv.URL)
	cfg.Once = false
	cfg.BuildTime = time.Hour // the stop comes mid-build
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &notifyingBuffer{match: "building ios", seen: make(chan struct{})}
	go func() {
		<-out.seen
		cancel()
	}()
	require.NoError(t, runWorker(t, ctx, cfg, out))
	reqs := fc.requests()
	require.Empty(t, byPath(reqs, "POST", "/api/workers/upload"))
	require.Len(t, byPath(reqs, "POST", "/api/workers/"+testWorkerID+"/unregister"), 1)
	require.Contains(t, out.String(), "stopping: abandoning build 9f1c2a4b…")
}

// notifyingBuffer closes seen the first time the output contains match.
type notifyingBuffer struct {
	testkit.LockedBuffer
	match string
	seen  chan struct{}
	once  sync.Once
}

func (b *notifyingBuffer) Write(p []byte) (int, error) {
	n, err := b.LockedBuffer.Write(p)
	if strings.Contains(b.LockedBuffer.String(), b.match) {
		b.once.Do(func() { close(b.seen) })
	}
	return n, err
}

func TestLongPoll(t *testing.T) {
	t.Parallel()

	t.Run("QueryCarriesWait", func(t *testing.T) {
		t.Parallel()
		fc := newFakeController(t)
		srv := fc.start()
		cfg := testConfig(t, srv.URL)
		cfg.Wait = 30 * time.Second
		var out testkit.LockedBuffer
		require.NoError(t, runWorker(t, context.Background(), cfg, &out))
		polls := byPath(fc.requests(), "GET", "/api/workers/poll")
		require.Len(t, polls, 1)
		require.Equal(t, "worker_id="+testWorkerID+"&wait=30", polls[0].Query)
		require.Contains(t, out.String(), "platforms ios,android, long-poll 30s")
	})

	t.Run("IntervalPollingWithoutWait", func(t *testing.T) {
		t.Parallel()
		fc := newFakeController(t)
		srv := fc.start()
		cfg := testConfig(t, srv.URL)
		var out testkit.LockedBuffer
		require.NoError(t, runWorker(t, context.Background(), cfg, &out))
		polls := byPath(fc.requests(), "GET", "/api/workers/poll")
		require.Equal(t, "worker_id="+testWorkerID, polls[0].Query, "no wait parameter")
		require.Contains(t, out.String(), "polling every 10ms")
	})

	t.Run("HeldPollIsRenewedAtOnce", func(t *testing.T) {
		t.Parallel()
		fc := newFakeController(t)
		fc.holdIdle = true
		srv := fc.start()
		cfg := testConfig(t, srv.URL)
		cfg.Once = false
		cfg.Wait = time.Second
		cfg.PollInterval = time.Hour // a pause after the held poll would never end in time
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			<-fc.polled // held for its second, answered {"job": null}
			<-fc.polled // the next poll came at once
			cancel()    // aborts the held poll
		}()
		require.NoError(t, runWorker(t, ctx, cfg, io.Discard))
		reqs := fc.requests()
		polls := byPath(reqs, "GET", "/api/workers/poll")
		require.GreaterOrEqual(t, len(polls), 3, "the job, then two held polls")
		for _, p := range polls {
			require.Equal(t, "worker_id="+testWorkerID+"&wait=1", p.Query)
		}
		require.GreaterOrEqual(t, polls[2].At.Sub(polls[1].At), time.Second, "the controller held the first idle poll")
		require.Len(t, byPath(reqs, "POST", "/api/workers/"+testWorkerID+"/unregister"), 1, "a stop during a held poll still says goodbye")
	})

	t.Run("EarlyEmptyAnswerWaitsPollInterval", func(t *testing.T) {
		t.Parallel()
		fc := newFakeController(t) // answers at once, like a controller that ignores ?wait=
		srv := fc.start()
		cfg := testConfig(t, srv.URL)
		cfg.Once = false
		cfg.Wait = 30 * time.Second
		cfg.PollInterval = 100 * time.Millisecond
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			for range 3 {
				<-fc.polled
			}
			cancel()
		}()
		require.NoError(t, runWorker(t, ctx, cfg, io.Discard))
		polls := byPath(fc.requests(), "GET", "/api/workers/poll")[1:] // after the job
		require.GreaterOrEqual(t, len(polls), 3)
		for i := 1; i < len(polls); i++ {
			require.GreaterOrEqual(t, polls[i].At.Sub(polls[i-1].At), cfg.PollInterval, "no spinning on early empty answers")
		}
	})
}

func TestHeld(t *testing.T) {
	t.Parallel()
	w := newWorker(Config{Wait: 30 * time.Second}, io.Discard)
	require.True(t, w.held(30*time.Second))
	require.True(t, w.held(15*time.Second))
	require.False(t, w.held(14*time.Second))
	require.False(t, w.held(time.Millisecond))
	require.Equal(t, "wait=30", w.waitQuery())
	require.Equal(t, requestTimeout+30*time.Second, w.pollTimeout(), "a held poll is not cut off")
	interval := newWorker(Config{}, io.Discard)
	require.False(t, interval.held(time.Hour))
	require.Empty(t, interval.waitQuery())
}
