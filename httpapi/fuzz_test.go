package httpapi_test

// Fuzz targets for the HTTP layer. They drive the real Echo handler
// (httpapi.New(...).Handler()) through httptest, with small in-memory fakes
// for the queue manager and the store, and (for submit) the real file store on
// a temporary directory, so that one execution costs well under a millisecond
// and a plain `go test` replays the seed corpus in testdata/fuzz quickly.
//
// Run one target with, for example:
//
//	go test -run='^$' -fuzz='^FuzzSubmitMultipart$' -fuzztime=20s ./httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/expo-free-agent/controller/actors/clock"
	"github.com/expo-free-agent/controller/actors/files"
	"github.com/expo-free-agent/controller/actors/queue"
	"github.com/expo-free-agent/controller/httpapi"
	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

const (
	fuzzKey      = "fuzz-admin-key-0123456789abcdef"
	fuzzBuildID  = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b" // assigned to fuzzWorkerID
	fuzzWorkerID = "0a1b2c3d-4e5f-4a6b-8c7d-8e9f0a1b2c3d"
	fuzzOtherID  = "11111111-2222-4333-8444-555555555555" // a registered worker holding nothing

	// Small limits, so that the "too large" answers are reachable with
	// fuzzer-sized inputs.
	fuzzMaxSource = 64
	fuzzMaxCerts  = 32
)

// fakeQueue is the queue manager as the HTTP layer sees it. Unused methods
// come from the nil embedded interface and would panic (which the handler
// turns into a 500, which the invariants catch).
type fakeQueue struct {
	httpapi.Queue
	submitted  []store.NewBuild
	registered []store.Registration
}

// Submit commits the staged files as the queue manager does and records the
// build it would create.
func (q *fakeQueue) Submit(_ context.Context, sub queue.Submission) (queue.Submitted, error) {
	id := uuid.NewString()
	src, err := sub.Source.Commit(id, ".zip")
	if err != nil {
		return queue.Submitted{}, err
	}
	nb := store.NewBuild{ID: id, Platform: sub.Platform, SourcePath: src}
	if sub.Certs != nil {
		crt, err := sub.Certs.Commit(id, ".zip")
		if err != nil {
			return queue.Submitted{}, err
		}
		nb.CertsPath = &crt
	}
	q.submitted = append(q.submitted, nb)
	tok, _, err := domain.NewToken()
	return queue.Submitted{ID: id, Token: tok, SubmittedAt: 1}, err
}

func (q *fakeQueue) Seen(context.Context, string) error { return nil }

func (q *fakeQueue) Register(_ context.Context, reg store.Registration) (domain.Worker, bool, error) {
	q.registered = append(q.registered, reg)
	if reg.ID == fuzzWorkerID || reg.ID == fuzzOtherID {
		return domain.Worker{ID: reg.ID, Name: reg.Name, Capabilities: reg.Capabilities}, false, nil
	}
	return domain.Worker{ID: uuid.NewString(), Name: reg.Name, Capabilities: reg.Capabilities}, true, nil
}

func (q *fakeQueue) Unregister(_ context.Context, workerID string) (int, error) {
	switch workerID {
	case fuzzWorkerID:
		return 1, nil
	case fuzzOtherID:
		return 0, nil
	}
	return 0, store.ErrWorkerNotFound
}

func (q *fakeQueue) reset() { q.submitted, q.registered = nil, nil }

// fakeStore holds one build, assigned to fuzzWorkerID and building, and two
// workers. It records what the handlers write.
type fakeStore struct {
	httpapi.Store
	logs        []store.LogInput
	telemetry   []store.LogInput
	snapshots   []domain.CPUSnapshot
	progress    []float64
	diagnostics []domain.Diagnostic
}

func (s *fakeStore) build() domain.Build {
	w, started := fuzzWorkerID, int64(1_700_000_000_000)
	return domain.Build{ID: fuzzBuildID, Platform: domain.PlatformIOS, Status: domain.StatusBuilding,
		WorkerID: &w, SubmittedAt: started - 1000, StartedAt: &started, SourcePath: "builds/" + fuzzBuildID + ".zip"}
}

func (s *fakeStore) GetBuild(_ context.Context, id string) (domain.Build, error) {
	if id != fuzzBuildID {
		return domain.Build{}, store.ErrNotFound
	}
	return s.build(), nil
}

func (s *fakeStore) assignee(buildID, workerID string) error {
	if buildID != fuzzBuildID {
		return store.ErrNotFound
	}
	if workerID != fuzzWorkerID {
		return store.ErrNotAssignee
	}
	return nil
}

func (s *fakeStore) AppendLogs(_ context.Context, buildID, workerID string, lines []store.LogInput, _ int64) (int, error) {
	if err := s.assignee(buildID, workerID); err != nil {
		return 0, err
	}
	s.logs = append(s.logs, lines...)
	return len(lines), nil
}

func (s *fakeStore) LogPage(_ context.Context, buildID string, after int64, limit int) ([]domain.LogEntry, bool, error) {
	if buildID != fuzzBuildID {
		return nil, false, store.ErrNotFound
	}
	return []domain.LogEntry{}, false, nil
}

func (s *fakeStore) TouchBuild(_ context.Context, buildID, workerID string, _ int64) error {
	return s.assignee(buildID, workerID)
}

func (s *fakeStore) Heartbeat(_ context.Context, buildID, workerID string, progress *float64, _ int64) error {
	if err := s.assignee(buildID, workerID); err != nil {
		return err
	}
	if progress != nil {
		s.progress = append(s.progress, *progress)
	}
	return nil
}

func (s *fakeStore) RecordTelemetry(_ context.Context, buildID, workerID string, _ int64, line *store.LogInput, snap *domain.CPUSnapshot) error {
	if err := s.assignee(buildID, workerID); err != nil {
		return err
	}
	if line != nil {
		s.telemetry = append(s.telemetry, *line)
	}
	if snap != nil {
		s.snapshots = append(s.snapshots, *snap)
	}
	return nil
}

func (s *fakeStore) GetWorker(_ context.Context, id string) (domain.Worker, error) {
	if id != fuzzWorkerID && id != fuzzOtherID {
		return domain.Worker{}, store.ErrWorkerNotFound
	}
	return domain.Worker{ID: id, Name: "w", Capabilities: "{}", Status: domain.WorkerIdle, RegisteredAt: 1}, nil
}

func (s *fakeStore) AddDiagnostic(_ context.Context, d domain.Diagnostic) error {
	if _, err := s.GetWorker(context.Background(), d.WorkerID); err != nil {
		return err
	}
	s.diagnostics = append(s.diagnostics, d)
	return nil
}

func (s *fakeStore) Diagnostics(_ context.Context, workerID string, _ int) ([]domain.Diagnostic, error) {
	if _, err := s.GetWorker(context.Background(), workerID); err != nil {
		return nil, err
	}
	return []domain.Diagnostic{}, nil
}

func (s *fakeStore) reset() {
	s.logs, s.telemetry, s.snapshots, s.progress, s.diagnostics = nil, nil, nil, nil, nil
}

// fastFS is the real file system without fsync: the fuzz loop checks which
// files exist, not their durability, and fsync would cost milliseconds.
type fastFS struct{ files.OSFS }

type noSyncFile struct{ files.TempFile }

func (noSyncFile) Sync() error { return nil }

func (f fastFS) CreateTemp(dir, pattern string) (files.TempFile, error) {
	t, err := f.OSFS.CreateTemp(dir, pattern)
	if err != nil {
		return nil, err
	}
	return noSyncFile{t}, nil
}

func (fastFS) SyncDir(string) error { return nil }

// fastClock moves a minute at every reading, so that no rate limit (keyless
// telemetry's per-build pace) carries over from one fuzz execution to the
// next: each input is judged on its own.
type fastClock struct{ n atomic.Int64 }

func (c *fastClock) NewTimer(d time.Duration) clock.Timer { return clock.System{}.NewTimer(d) }

func (c *fastClock) Now() time.Time {
	return time.Unix(1_700_000_000, 0).Add(time.Duration(c.n.Add(1)) * time.Minute)
}

// fuzzEnv is one server under fuzz with its fakes.
type fuzzEnv struct {
	h    http.Handler
	q    *fakeQueue
	st   *fakeStore
	root string
}

func newFuzzEnv(tb testing.TB, withFiles bool) *fuzzEnv {
	tb.Helper()
	log := slog.New(slog.DiscardHandler)
	env := &fuzzEnv{q: &fakeQueue{}, st: &fakeStore{}}
	var fs httpapi.Files
	if withFiles {
		env.root = filepath.Join(tb.TempDir(), "storage")
		st, err := files.New(env.root, fastFS{}, log)
		if err != nil {
			tb.Fatal(err)
		}
		fs = st
	}
	cfg := httpapi.Config{Addr: "127.0.0.1:0", APIKey: fuzzKey, MaxSourceSize: fuzzMaxSource,
		MaxCertsSize: fuzzMaxCerts, MaxResultSize: 128, Clock: &fastClock{}}
	env.h = httpapi.New(cfg, env.q, env.st, fs, log).Handler()
	return env
}

func (env *fuzzEnv) do(method, target string, body []byte, h map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, "http://controller"+target, bytes.NewReader(body))
	for k, v := range h {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	env.h.ServeHTTP(rec, req)
	return rec
}

// errorMessage checks that a non-2xx body is exactly {"error": "<string>"}
// and returns the message.
func errorMessage(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
		t.Fatalf("status %d: error body is not a JSON object: %q", rec.Code, rec.Body.Bytes())
	}
	msg, ok := m["error"].(string)
	if len(m) != 1 || !ok {
		t.Fatalf("status %d: error body must be exactly {\"error\": \"...\"}: %q", rec.Code, rec.Body.Bytes())
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("status %d: error body Content-Type %q", rec.Code, ct)
	}
	return msg
}

// leakText is what must never reach a client: Go error text, SQL, stacks.
var leakText = []string{"json:", "invalid character", "unexpected end", "unexpected EOF", "runtime error",
	"goroutine", "sql", "SQL", ".go:", "panic", "multipart:", "mime:"}

// generated matches the values the controller makes up itself (UUIDs and
// base64url tokens): random text that may spell "SQL" or "panic" by chance.
var generated = regexp.MustCompile(`^[A-Za-z0-9_-]{22,}$`)

// noLeak fails when an answer carries leakText. A JSON answer is checked
// string by string, skipping generated ids and tokens; any other answer is
// checked whole.
func noLeak(t *testing.T, what string, body []byte) {
	t.Helper()
	if s, ok := leakIn(body); ok {
		t.Fatalf("%s: the answer contains %q: %q", what, s, body)
	}
}

// TestNoLeakSkipsGeneratedTokens: a made-up token that happens to spell
// "SQL" is not a leak (CI failed once on a registration answer whose
// access_token held "SQL"), while leak text anywhere else still is.
func TestNoLeakSkipsGeneratedTokens(t *testing.T) {
	for _, tc := range []struct {
		body string
		leak bool
	}{
		{`{"access_token":"30TXSS6ChmkOksebjDnSQLs4AOWyuLYxAU5lmyeNrLw","id":"4ba02162-36c8-4d34-b652-3dc553daf69a"}`, false},
		{`{"id":"panic-goroutine-aaaaaaaaaaaaaaaaaaaa"}`, false},
		{`{"error":"sql: no rows in result set"}`, true},
		{`{"error":"SQL"}`, true},
		{`{"details":["ok","x.go:12"]}`, true},
		{`{"SQLSTATE 23505":1}`, true},
		{`not json: invalid character`, true},
		{`{"status":"registered"}`, false},
	} {
		if _, got := leakIn([]byte(tc.body)); got != tc.leak {
			t.Errorf("leakIn(%s) = %v, want %v", tc.body, got, tc.leak)
		}
	}
}

// leakIn reports the first leakText in body, if any.
func leakIn(body []byte) (string, bool) {
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return leakInText(string(body))
	}
	return leakInValue(v)
}

func leakInValue(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		if generated.MatchString(v) {
			return "", false
		}
		return leakInText(v)
	case []any:
		for _, e := range v {
			if s, ok := leakInValue(e); ok {
				return s, true
			}
		}
	case map[string]any:
		for k, e := range v {
			if s, ok := leakInText(k); ok {
				return s, true
			}
			if s, ok := leakInValue(e); ok {
				return s, true
			}
		}
	}
	return "", false
}

func leakInText(text string) (string, bool) {
	for _, s := range leakText {
		if strings.Contains(text, s) {
			return s, true
		}
	}
	return "", false
}

// storageLeftovers lists every file under the storage root.
func storageLeftovers(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	for _, dir := range []string{"builds", "certs", "results"} {
		entries, err := os.ReadDir(filepath.Join(root, dir))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			out = append(out, dir+"/"+e.Name())
		}
	}
	return out
}

// submitAnswers maps every message of §2.1 a keyed submit can get to its
// status.
var submitAnswers = map[string]int{
	"Content must be multipart/form-data":   400,
	"Request body too large":                413,
	"Invalid multipart body":                400,
	"Source file too large":                 413,
	"Certs file too large":                  413,
	"Source file required":                  400,
	"Valid platform required (ios|android)": 400,
	"Build submission failed":               500,
}

// multipartBody encodes parts (name, filename, data triples) with boundary.
func multipartBody(boundary string, parts ...[3]string) []byte {
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	if err := w.SetBoundary(boundary); err != nil {
		panic(err)
	}
	for _, p := range parts {
		var pw io.Writer
		var err error
		if p[1] != "" {
			pw, err = w.CreateFormFile(p[0], p[1])
		} else {
			pw, err = w.CreateFormField(p[0])
		}
		if err != nil {
			panic(err)
		}
		io.WriteString(pw, p[2])
	}
	w.Close()
	return buf.Bytes()
}

// firstPart returns the content of the first part named name, read the way
// the handler reads it (raw, no transfer decoding), or nil.
func firstPart(body []byte, boundary, name string) []byte {
	mr := multipart.NewReader(bytes.NewReader(body), boundary)
	for {
		p, err := mr.NextRawPart()
		if err != nil {
			return nil
		}
		if p.FormName() == name {
			b, err := io.ReadAll(p)
			if err != nil {
				return nil
			}
			return b
		}
	}
}

// FuzzSubmitMultipart posts arbitrary multipart bodies (raw bytes and
// boundary) to POST /api/builds/submit. Invariants: no panic; no 5xx other
// than 500 "Build submission failed"; every non-2xx answer is exactly
// {"error": ...} with one of §2.1's messages and its status; a 200 stores
// exactly the first source (and certs) part as sent; nothing else, and no
// temporary file, is left in the storage directories.
func FuzzSubmitMultipart(f *testing.F) {
	const b = "XyZ-boundary"
	f.Add(multipartBody(b, [3]string{"source", "project.tar.gz", "SRC"}, [3]string{"platform", "", "ios"}), b)
	f.Add(multipartBody(b, [3]string{"platform", "", "android"}, [3]string{"source", "s.zip", "SRC"},
		[3]string{"certs", "c.zip", "CERTS"}, [3]string{"profile", "", "production"},
		[3]string{"appleId", "", "dev@example.com"}, [3]string{"applePassword", "", "hunter2"}), b)
	f.Add(multipartBody(b, [3]string{"source", "s", strings.Repeat("s", fuzzMaxSource)}, [3]string{"platform", "", "ios"}), b)
	f.Add(multipartBody(b, [3]string{"source", "s", strings.Repeat("s", fuzzMaxSource+1)}, [3]string{"platform", "", "ios"}), b)
	f.Add(multipartBody(b, [3]string{"source", "s", "x"}, [3]string{"certs", "c", strings.Repeat("c", fuzzMaxCerts+1)}, [3]string{"platform", "", "ios"}), b)
	f.Add(multipartBody(b, [3]string{"source", "s", ""}, [3]string{"platform", "", "ios"}), b)
	f.Add(multipartBody(b, [3]string{"source", "s", "x"}, [3]string{"source", "s", "second"}, [3]string{"platform", "", "ios"}, [3]string{"platform", "", "bogus"}), b)
	f.Add(multipartBody(b, [3]string{"source", "s", "x"}, [3]string{"platform", "", "IOS"}), b)
	f.Add(multipartBody(b, [3]string{"../../etc/passwd", "../../x", "x"}, [3]string{"platform", "", "ios"}), b)
	f.Add([]byte("--"+b+"\r\nContent-Disposition: form-data; name=\"source\"\r\n\r\nabc"), b) // no closing boundary
	f.Add([]byte("--"+b+"\r\nContent-Disposition: form-data; name=\"source\"; filename=\"s\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\na=3Db\r\n--"+b+"\r\nContent-Disposition: form-data; name=\"platform\"\r\n\r\nios\r\n--"+b+"--\r\n"), b)
	f.Add([]byte{}, b)
	f.Add([]byte("garbage"), "")
	f.Add([]byte("--a\r\n\r\n--a--"), "a\"; boundary=b")

	env := newFuzzEnv(f, true)
	f.Fuzz(func(t *testing.T, body []byte, boundary string) {
		env.q.reset()
		ct := mime.FormatMediaType("multipart/form-data", map[string]string{"boundary": boundary})
		if ct == "" { // not expressible as a parameter: send it raw
			ct = "multipart/form-data; boundary=" + boundary
		}
		rec := env.do(http.MethodPost, "/api/builds/submit", body, map[string]string{"X-API-Key": fuzzKey, "Content-Type": ct})
		left := storageLeftovers(t, env.root)
		// Every execution starts from an empty root, even after a failure,
		// so that a leftover is blamed on the input that made it.
		defer env.wipe(t)
		if rec.Code == http.StatusOK {
			// The 200 shape is checked field by field; it holds a random
			// token, which may contain any substring, so noLeak is not used.
			checkSubmitted(t, env, rec, body, boundary, left)
		} else {
			noLeak(t, "submit", rec.Body.Bytes())
			if len(left) != 0 {
				t.Fatalf("status %d left files in the storage root: %v", rec.Code, left)
			}
			msg := errorMessage(t, rec)
			want, known := submitAnswers[msg]
			if !known || want != rec.Code {
				t.Fatalf("submit answered %d %q: not an answer of §2.1", rec.Code, msg)
			}
			if len(env.q.submitted) != 0 {
				t.Fatalf("a refused submit (%d %q) reached the queue", rec.Code, msg)
			}
		}
	})
}

// wipe empties the storage directories.
func (env *fuzzEnv) wipe(t *testing.T) {
	for _, rel := range storageLeftovers(t, env.root) {
		if err := os.Remove(filepath.Join(env.root, filepath.FromSlash(rel))); err != nil {
			t.Fatal(err)
		}
	}
}

// checkSubmitted checks a 200 submit against what was sent: exactly the
// build's source (and certs) are stored, under their final names, and
// nothing else (left lists the storage root after the request).
func checkSubmitted(t *testing.T, env *fuzzEnv, rec *httptest.ResponseRecorder, body []byte, boundary string, left []string) {
	t.Helper()
	var out map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || len(out) != 4 {
		t.Fatalf("200 body: %q", rec.Body.Bytes())
	}
	id, _ := out["id"].(string)
	tok, _ := out["access_token"].(string)
	if canon, ok := domain.ParseID(id); !ok || canon != id || out["status"] != "pending" || len(tok) != 43 {
		t.Fatalf("200 body: %q", rec.Body.Bytes())
	}
	for _, c := range []byte(tok) {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			t.Fatalf("access_token %q is not base64url", tok)
		}
	}
	if len(env.q.submitted) != 1 {
		t.Fatalf("200 with %d builds queued", len(env.q.submitted))
	}
	nb := env.q.submitted[0]
	if nb.ID != id || (nb.Platform != domain.PlatformIOS && nb.Platform != domain.PlatformAndroid) {
		t.Fatalf("queued %+v for answer %q", nb, rec.Body.Bytes())
	}
	want := []string{"builds/" + id + ".zip"}
	if nb.CertsPath != nil {
		want = append(want, "certs/"+id+".zip")
	}
	if strings.Join(left, " ") != strings.Join(want, " ") {
		t.Fatalf("the storage root holds %v, want %v", left, want)
	}
	check := func(rel, part string, limit int64) {
		data, err := os.ReadFile(filepath.Join(env.root, filepath.FromSlash(rel)))
		if err != nil {
			t.Fatalf("stored %s: %v", part, err)
		}
		if len(data) == 0 || int64(len(data)) > limit {
			t.Fatalf("stored %s has %d bytes (limit %d)", part, len(data), limit)
		}
		if sent := firstPart(body, boundary, part); !bytes.Equal(sent, data) {
			t.Fatalf("stored %s %q differs from the first %q part sent %q", part, data, part, sent)
		}
	}
	if nb.SourcePath != "builds/"+id+".zip" {
		t.Fatalf("source path %q", nb.SourcePath)
	}
	check(nb.SourcePath, "source", fuzzMaxSource)
	if nb.CertsPath != nil {
		if *nb.CertsPath != "certs/"+id+".zip" {
			t.Fatalf("certs path %q", *nb.CertsPath)
		}
		check(*nb.CertsPath, "certs", fuzzMaxCerts)
	} else if c := firstPart(body, boundary, "certs"); len(c) != 0 {
		t.Fatalf("a non-empty certs part %q was not stored", c)
	}
}

// jsonEndpoint is one JSON endpoint and the answers it may give to a body.
type jsonEndpoint struct {
	name, method, target string
	h                    map[string]string
	answers              map[string]int // error message -> status
}

var (
	bodyAnswers = map[string]int{"Invalid JSON body": 400, "Request body too large": 413}
	msgLogBody  = "Invalid body. Expected { level, message } or { logs: [...] }"
)

func with(extra map[string]int) map[string]int {
	m := map[string]int{}
	for k, v := range bodyAnswers {
		m[k] = v
	}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

func jsonEndpoints() []jsonEndpoint {
	b := "/api/builds/" + fuzzBuildID
	key := func(kv ...string) map[string]string {
		h := map[string]string{"X-API-Key": fuzzKey, "Content-Type": "application/json"}
		for i := 0; i+1 < len(kv); i += 2 {
			h[kv[i]] = kv[i+1]
		}
		return h
	}
	return []jsonEndpoint{
		{"PostLogs", "POST", b + "/logs", key("X-Worker-Id", fuzzWorkerID), with(map[string]int{
			msgLogBody: 400, "Invalid log level. Must be: info, warn, or error": 400})},
		{"Telemetry", "POST", b + "/telemetry", key("X-Worker-Id", fuzzWorkerID, "X-Build-Id", fuzzBuildID),
			with(map[string]int{"Invalid telemetry data": 400})},
		{"TelemetryKeyless", "POST", b + "/telemetry",
			map[string]string{"X-Worker-Id": fuzzWorkerID, "X-Build-Id": fuzzBuildID},
			with(map[string]int{"Invalid telemetry data": 400})},
		{"Register", "POST", "/api/workers/register", key(), with(map[string]int{"Name and capabilities required": 400})},
		{"Diagnostics", "POST", "/api/diagnostics/report", key(), with(map[string]int{
			"Missing required fields: worker_id, status, duration_ms, checks": 400,
			"Invalid status. Must be: healthy, warning, or critical":          400,
			"Worker not found":        404,
			"checks must be an array": 400})},
		{"Heartbeat", "POST", b + "/heartbeat?worker_id=" + fuzzWorkerID, key(), with(map[string]int{
			"progress must be a number between 0 and 100": 400})},
		{"Unregister", "POST", "/api/workers/unregister", key(), with(map[string]int{
			"worker_id required": 400, "Worker not found": 404})},
	}
}

// FuzzJSONBodies sends arbitrary bytes as the body of every JSON endpoint.
// Invariants: no panic; 200 or one of the endpoint's 4xx answers, exactly
// {"error": ...}; never a 5xx for a malformed body; no Go error text, SQL or
// stack in any answer; what reaches the store keeps the shape the protocol
// promises (capabilities an object, checks an array, levels valid).
func FuzzJSONBodies(f *testing.F) {
	seeds := []string{
		``, `{}`, `null`, `[]`, `"x"`, `1`, `{`, `{"a":1}{}`, `{"a":1} x`, "\xff\xfe",
		`{"level":"info","message":"hello"}`, `{"level":"debug","message":"x"}`, `{"level":1,"message":"x"}`,
		`{"logs":[{"level":"info","message":"a"},{"level":"bogus","message":"b"},7,null]}`, `{"logs":{}}`,
		`{"type":"monitor_started","timestamp":"2026-01-01T00:00:00Z","data":{}}`,
		`{"type":"heartbeat","data":{"stage":"build","metrics":{"cpu_percent":12.5,"memory_mb":1024,"disk_percent":40,"processes":7}}}`,
		`{"type":"cpu_snapshot","data":{"cpu_percent":55,"memory_mb":2048}}`,
		`{"type":"cpu_snapshot","data":{"cpu_percent":5000,"memory_mb":-1}}`,
		`{"type":"custom","data":{"k":[1,2,{"x":"y"}]}}`, `{"type":"","data":{}}`, `{"type":"t","timestamp":5}`,
		`{"type":"t","data":[]}`,
		`{"name":"mac","capabilities":{"platforms":["ios"]}}`, `{"name":"mac","capabilities":[]}`,
		`{"name":"","capabilities":{}}`, `{"name":"mac","capabilities":{},"id":"` + fuzzWorkerID + `"}`,
		`{"name":"mac","capabilities":{},"id":"../../etc"}`,
		`{"worker_id":"` + fuzzWorkerID + `","status":"healthy","duration_ms":12.7,"checks":[{"name":"disk"}],"auto_fixed":true}`,
		`{"worker_id":"` + fuzzWorkerID + `","status":"sick","duration_ms":1,"checks":[]}`,
		`{"worker_id":"nope","status":"healthy","duration_ms":1,"checks":[]}`,
		`{"worker_id":"` + fuzzWorkerID + `","status":"healthy","duration_ms":1,"checks":{}}`,
		`{"worker_id":"` + fuzzWorkerID + `","status":"healthy","duration_ms":"1","checks":[]}`,
		`{"progress":50}`, `{"progress":101}`, `{"progress":-1}`, `{"progress":"50"}`, `{"progress":null}`, `{"progress":1e999}`,
		`{"worker_id":"` + fuzzWorkerID + `"}`, `{"worker_id":"` + strings.ToUpper(fuzzOtherID) + `"}`, `{"worker_id":7}`,
		`{"level":"info","message":"` + strings.Repeat("x", 2000) + `"}`,
		// Raw invalid UTF-8 inside strings (valid JSON otherwise).
		"{\"name\":\"mac\xff\",\"capabilities\":{\"os\":\"\xc0\xaf\"}}",
		"{\"worker_id\":\"" + fuzzWorkerID + "\",\"status\":\"healthy\",\"duration_ms\":1,\"checks\":[{\"n\":\"\xed\xa0\x80\"}]}",
		"{\"level\":\"info\",\"message\":\"bad \xff\"}",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	env := newFuzzEnv(f, false)
	endpoints := jsonEndpoints()
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, ep := range endpoints {
			env.q.reset()
			env.st.reset()
			rec := env.do(ep.method, ep.target, body, ep.h)
			noLeak(t, ep.name, rec.Body.Bytes())
			if rec.Code == http.StatusOK {
				var v map[string]any
				if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
					t.Fatalf("%s: 200 body is not a JSON object: %q", ep.name, rec.Body.Bytes())
				}
				checkStored(t, ep.name, env)
				continue
			}
			msg := errorMessage(t, rec)
			if want, ok := ep.answers[msg]; !ok || want != rec.Code {
				t.Fatalf("%s: body %q answered %d %q, not one of the endpoint's answers", ep.name, body, rec.Code, msg)
			}
		}
	})
}

// checkStored checks what an accepted body left in the fakes.
func checkStored(t *testing.T, name string, env *fuzzEnv) {
	t.Helper()
	for _, l := range env.st.logs {
		if l.Level != domain.LevelInfo && l.Level != domain.LevelWarn && l.Level != domain.LevelError {
			t.Fatalf("%s: stored log level %q", name, l.Level)
		}
		if !utf8.ValidString(l.Message) {
			t.Fatalf("%s: stored log message is not UTF-8: %q", name, l.Message)
		}
	}
	for _, l := range env.st.telemetry {
		if l.Level != domain.LevelInfo || !strings.HasPrefix(l.Message, "[VM] ") {
			t.Fatalf("%s: telemetry line %+v", name, l)
		}
	}
	for _, s := range env.st.snapshots {
		if s.CPUPercent < 0 || s.CPUPercent > 1000 || s.MemoryMB < 0 || s.MemoryMB > 1e6 {
			t.Fatalf("%s: snapshot out of range %+v", name, s)
		}
	}
	for _, p := range env.st.progress {
		if p < 0 || p > 100 {
			t.Fatalf("%s: progress %v", name, p)
		}
	}
	for _, r := range env.q.registered {
		var caps any
		if err := json.Unmarshal([]byte(r.Capabilities), &caps); err != nil {
			t.Fatalf("%s: stored capabilities are not JSON: %q", name, r.Capabilities)
		}
		if _, ok := caps.(map[string]any); !ok {
			t.Fatalf("%s: stored capabilities are not an object: %q", name, r.Capabilities)
		}
		if r.Name == "" {
			t.Fatalf("%s: registered without a name", name)
		}
		if !utf8.ValidString(r.Name) || !utf8.ValidString(r.Capabilities) {
			t.Fatalf("%s: registered text is not UTF-8: %q %q", name, r.Name, r.Capabilities)
		}
	}
	for _, d := range env.st.diagnostics {
		var checks any
		if err := json.Unmarshal([]byte(d.Checks), &checks); err != nil {
			t.Fatalf("%s: stored checks are not JSON: %q", name, d.Checks)
		}
		if _, ok := checks.([]any); !ok {
			t.Fatalf("%s: stored checks are not an array: %q", name, d.Checks)
		}
		if !utf8.ValidString(d.Checks) {
			t.Fatalf("%s: stored checks are not UTF-8: %q", name, d.Checks)
		}
	}
}

// FuzzPathIDs sends arbitrary strings, path-escaped, as the :id and
// :worker_id segments. Invariants: store.ParseID accepts only 36 characters
// of lowercase hex digits and hyphens after lowering (safe in a file name)
// and agrees with itself on the upper-cased input; the routes answer 404
// "Build not found" / "Worker not found" unless the string is (a case
// variant of) the canonical UUID of an existing record.
func FuzzPathIDs(f *testing.F) {
	for _, s := range []string{
		fuzzBuildID, strings.ToUpper(fuzzBuildID), fuzzWorkerID, "00000000-0000-0000-0000-000000000000",
		"", ".", "..", "../", "../../etc/passwd", "..%2f..%2fetc%2fpasswd", "%2e%2e%2f", "/etc/passwd", "....//",
		"\x00", fuzzBuildID + "\x00", fuzzBuildID + "\n", " " + fuzzBuildID, "{" + fuzzBuildID + "}",
		"urn:uuid:" + fuzzBuildID, strings.ReplaceAll(fuzzBuildID, "-", ""), strings.Repeat("a", 300),
		"6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4\u0431", "６f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b", "6f1c2a3b\u20104d5e-4f60-8a7b-9c0d1e2f3a4b",
		"6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4g", "6f1c2a3b-4d5e-4f60-8a7b_9c0d1e2f3a4b", "status", "active", "?x=1", "#frag", "%",
	} {
		f.Add(s)
	}
	env := newFuzzEnv(f, false)
	f.Fuzz(func(t *testing.T, id string) {
		canon, ok := domain.ParseID(id)
		checkParseID(t, id, canon, ok)
		seg := url.PathEscape(id)
		for _, rt := range []struct {
			target, existing, notFound string
		}{
			{"/api/builds/" + seg + "/status", fuzzBuildID, "Build not found"},
			{"/api/builds/" + seg, fuzzBuildID, "Build not found"},
			{"/api/builds/" + seg + "/logs", fuzzBuildID, "Build not found"},
			{"/api/workers/" + seg + "/stats", fuzzWorkerID, "Worker not found"},
			{"/api/diagnostics/" + seg, fuzzWorkerID, "Worker not found"},
		} {
			if rt.target == "/api/builds/active" || rt.target == "/api/builds/submit" {
				continue // static routes win over /api/builds/:id (§1.2)
			}
			rec := env.do(http.MethodGet, rt.target, nil, map[string]string{"X-API-Key": fuzzKey})
			noLeak(t, rt.target, rec.Body.Bytes())
			if ok && canon == rt.existing {
				if rec.Code != http.StatusOK {
					t.Fatalf("GET %s: %d %q for an existing record", rt.target, rec.Code, rec.Body.Bytes())
				}
				continue
			}
			if rec.Code != http.StatusNotFound {
				t.Fatalf("GET %s: %d %q, want 404 %q", rt.target, rec.Code, rec.Body.Bytes(), rt.notFound)
			}
			// An empty last segment leaves nothing for the router to match
			// ("/api/diagnostics/"): that is routing's "Not found".
			if msg := errorMessage(t, rec); msg != rt.notFound && !(id == "" && msg == "Not found") {
				t.Fatalf("GET %s: 404 %q, want %q", rt.target, msg, rt.notFound)
			}
		}
	})
}

// checkParseID checks the invariants of store.ParseID on one input.
func checkParseID(t *testing.T, in, canon string, ok bool) {
	t.Helper()
	if err := parseIDInvariant(in, canon, ok); err != nil {
		t.Fatal(err)
	}
}

func parseIDInvariant(in, canon string, ok bool) error {
	upper, uok := domain.ParseID(strings.ToUpper(in))
	if uok != ok || upper != canon {
		return fmt.Errorf("ParseID(%q) = %q, %v but ParseID(upper) = %q, %v", in, canon, ok, upper, uok)
	}
	if !ok {
		if canon != "" {
			return fmt.Errorf("ParseID(%q) refused but returned %q", in, canon)
		}
		return nil
	}
	if len(canon) != 36 || canon != strings.ToLower(in) {
		return fmt.Errorf("ParseID(%q) = %q", in, canon)
	}
	for i, c := range []byte(canon) {
		hyphen := i == 8 || i == 13 || i == 18 || i == 23
		if hyphen && c != '-' || !hyphen && !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return fmt.Errorf("ParseID(%q) = %q: byte %d is %q", in, canon, i, c)
		}
	}
	if u, err := uuid.Parse(in); err != nil || u.String() != canon {
		return fmt.Errorf("ParseID(%q) = %q but uuid.Parse says %v, %v", in, canon, u, err)
	}
	if again, ok := domain.ParseID(canon); !ok || again != canon {
		return errors.New("ParseID is not idempotent on " + canon)
	}
	return nil
}
