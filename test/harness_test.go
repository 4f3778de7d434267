// Package test holds black-box tests that run the real controller — the
// whole supervision tree from cmd/app — on a temporary directory and port 0,
// and talk to it over HTTP exactly as the clients of docs/API.md do.
package test

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/expo-free-agent/controller/actors/clock"
	"github.com/expo-free-agent/controller/cmd/app"
	"github.com/expo-free-agent/controller/internal/testkit"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testkit.LeakOptions(goleak.Cleanup(func(int) { cleanupBinaries() }))...)
}

func newClient() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
}

const testKey = "test-admin-key-0123456789abcdef"

// Controller is a running controller under test.
type Controller struct {
	t      testing.TB
	App    *app.App
	URL    string
	Key    string
	Dir    string
	Clock  *clock.Manual // nil unless WithManualClock
	Client *http.Client
	cfg    app.Config
	cancel context.CancelFunc
	done   chan error
	logBuf *testkit.LockedBuffer
	// MayBeDown: a request the controller does not answer (a killed node)
	// returns a Response with Status 0 instead of failing the test.
	MayBeDown bool
}

// Option adjusts the configuration of a controller under test.
type Option func(*app.Config)

// WithManualClock makes the controller's time move only when the test says.
func WithManualClock() Option {
	return func(c *app.Config) { c.Clock = clock.NewManual(time.Now()) }
}

// WithConfig applies arbitrary changes.
func WithConfig(f func(*app.Config)) Option { return Option(f) }

// Start runs a controller on a new temporary directory.
func Start(t testing.TB, opts ...Option) *Controller {
	return StartIn(t, t.TempDir(), opts...)
}

// StartIn runs a controller on dir (its data/ and storage/ are reused).
func StartIn(t testing.TB, dir string, opts ...Option) *Controller {
	t.Helper()
	cfg := app.Defaults()
	cfg.Host, cfg.Port = "127.0.0.1", 0
	cfg.DBPath = testkit.DB(t, dir)
	cfg.StoragePath = filepath.Join(dir, "storage")
	cfg.APIKey = testKey
	cfg.DrainTimeout = 5 * time.Second
	cfg.FailureBackoff = 50 * time.Millisecond
	cfg.LogLevel = "debug"
	// No free-space floor: tests run in parallel on the machine's disk, and
	// one test's 1 GiB upload must not make another's submit a 507. The
	// floor's own tests set it (disk_test.go).
	cfg.MinFreeDisk = 0
	for _, o := range opts {
		o(&cfg)
	}
	return startCfg(t, dir, cfg)
}

func startCfg(t testing.TB, dir string, cfg app.Config) *Controller {
	t.Helper()
	logs := &testkit.LockedBuffer{}
	log := app.NewLogger(cfg, logs)
	ctx, cancel := context.WithCancel(context.Background())
	a, err := app.New(ctx, cfg, log)
	require.NoError(t, err)
	c := &Controller{t: t, App: a, Key: cfg.APIKey, Dir: dir, cfg: cfg, cancel: cancel,
		done: make(chan error, 1), logBuf: logs,
		Client: newClient()}
	if mc, ok := cfg.Clock.(*clock.Manual); ok {
		c.Clock = mc
	}
	go func() { c.done <- a.Run(ctx) }()
	select {
	case <-a.HTTP.Ready():
	case err := <-c.done:
		cancel()
		t.Fatalf("controller stopped at start: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("controller did not start listening within 10s")
	}
	c.URL = "http://" + a.HTTP.Addr().String()
	t.Cleanup(c.Stop)
	t.Cleanup(func() { // registered after Stop, so it runs first
		if t.Failed() {
			c.logTrouble(t)
		}
	})
	return c
}

// Stop shuts the controller down and waits for it. It is idempotent.
func (c *Controller) Stop() {
	if c.cancel == nil {
		c.Client.CloseIdleConnections()
		return
	}
	c.cancel()
	c.cancel = nil
	select {
	case err := <-c.done:
		require.NoError(c.t, err)
	case <-time.After(20 * time.Second):
		c.t.Fatal("controller did not stop within 20s")
	}
	c.Client.CloseIdleConnections()
}

// Restart stops this controller and starts a new one on the same directory
// and configuration (the manual clock carries over).
func (c *Controller) Restart() *Controller {
	c.t.Helper()
	c.Stop()
	return startCfg(c.t, c.Dir, c.cfg)
}

// Logs returns the server log so far.
func (c *Controller) Logs() string { return c.logBuf.String() }

// Response is an HTTP answer read whole.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into a generic value.
func (r Response) JSON(t testing.TB) any {
	t.Helper()
	var v any
	require.NoError(t, json.Unmarshal(r.Body, &v), "body: %s", r.Body)
	return v
}

// Object decodes the body as a JSON object.
func (r Response) Object(t testing.TB) map[string]any {
	t.Helper()
	m, ok := r.JSON(t).(map[string]any)
	require.True(t, ok, "not a JSON object: %s", r.Body)
	return m
}

// Error returns the "error" of a {"error": ...} body, checking the shape.
func (r Response) Error(t testing.TB) string {
	t.Helper()
	m := r.Object(t)
	require.Len(t, m, 1, "error body must be exactly {\"error\": ...}: %s", r.Body)
	s, ok := m["error"].(string)
	require.True(t, ok, "error must be a string: %s", r.Body)
	return s
}

// H is a set of request headers.
type H map[string]string

// Key returns the admin key header, plus extra headers.
func (c *Controller) KeyH(extra ...string) H {
	h := H{"X-API-Key": c.Key}
	for i := 0; i+1 < len(extra); i += 2 {
		h[extra[i]] = extra[i+1]
	}
	return h
}

// Do sends a request and reads the whole answer (of a live log, only the
// status and headers).
func (c *Controller) Do(method, path string, body io.Reader, h H) Response {
	c.t.Helper()
	req, err := http.NewRequest(method, c.URL+path, body)
	require.NoError(c.t, err)
	for k, v := range h {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := c.Client.Do(req)
	if err != nil && c.MayBeDown {
		return Response{Body: []byte(err.Error())} // Status 0
	}
	require.NoError(c.t, err)
	defer resp.Body.Close()
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		// A live log does not end while its build runs: the status and
		// headers are the answer; closing the body hangs up.
		return Response{Status: resp.StatusCode, Header: resp.Header}
	}
	b, err := io.ReadAll(resp.Body)
	require.NoError(c.t, err)
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// Get is Do with GET and no body.
func (c *Controller) Get(path string, h H) Response { return c.Do(http.MethodGet, path, nil, h) }

// PostJSON posts a JSON body (a string is sent as is).
func (c *Controller) PostJSON(path string, body any, h H) Response {
	c.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		require.NoError(c.t, err)
		r = bytes.NewReader(raw)
	}
	hh := H{"Content-Type": "application/json"}
	for k, v := range h {
		hh[k] = v
	}
	return c.Do(http.MethodPost, path, r, hh)
}

// Part is one part of a multipart body.
type Part struct {
	Name, Filename, ContentType string
	Data                        []byte
}

// Multipart encodes parts in order and returns the body and its content type.
func Multipart(t testing.TB, parts ...Part) (*bytes.Buffer, string) {
	t.Helper()
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	for _, p := range parts {
		h := textproto.MIMEHeader{}
		disp := fmt.Sprintf(`form-data; name="%s"`, p.Name)
		if p.Filename != "" {
			disp += fmt.Sprintf(`; filename="%s"`, p.Filename)
		}
		h.Set("Content-Disposition", disp)
		if p.ContentType != "" {
			h.Set("Content-Type", p.ContentType)
		}
		pw, err := w.CreatePart(h)
		require.NoError(t, err)
		_, err = pw.Write(p.Data)
		require.NoError(t, err)
	}
	require.NoError(t, w.Close())
	return &buf, w.FormDataContentType()
}

// PostMultipart posts parts.
func (c *Controller) PostMultipart(path string, h H, parts ...Part) Response {
	c.t.Helper()
	body, ct := Multipart(c.t, parts...)
	hh := H{"Content-Type": ct}
	for k, v := range h {
		hh[k] = v
	}
	return c.Do(http.MethodPost, path, body, hh)
}

// Submitted is a submitted build.
type Submitted struct {
	ID, Token string
}

// CLISubmitParts are the parts the TypeScript CLI sends, in its order.
func CLISubmitParts(source, certs []byte) []Part {
	parts := []Part{
		{Name: "source", Filename: "project.tar.gz", ContentType: "application/gzip", Data: source},
		{Name: "platform", Data: []byte("ios")},
	}
	if certs != nil {
		parts = append(parts, Part{Name: "certs", Filename: "certs.zip", ContentType: "application/zip", Data: certs})
	}
	return append(parts,
		Part{Name: "profile", Data: []byte("production")},
		Part{Name: "appleId", Data: []byte("dev@example.com")},
		Part{Name: "applePassword", Data: []byte("hunter2-apple-secret")})
}

// Submit submits a build and requires 200.
func (c *Controller) Submit(platform string, source, certs []byte) Submitted {
	c.t.Helper()
	parts := []Part{
		{Name: "source", Filename: "source.zip", ContentType: "application/zip", Data: source},
		{Name: "platform", Data: []byte(platform)},
	}
	if certs != nil {
		parts = append(parts, Part{Name: "certs", Filename: "certs.zip", Data: certs})
	}
	r := c.PostMultipart("/api/builds/submit", c.KeyH(), parts...)
	require.Equal(c.t, http.StatusOK, r.Status, "submit: %s", r.Body)
	m := r.Object(c.t)
	return Submitted{ID: m["id"].(string), Token: m["access_token"].(string)}
}

// Register registers a worker and returns its id.
func (c *Controller) Register(name string, platforms ...string) string {
	c.t.Helper()
	caps := map[string]any{}
	if platforms != nil {
		caps["platforms"] = platforms
	}
	r := c.PostJSON("/api/workers/register", map[string]any{"name": name, "capabilities": caps}, c.KeyH())
	require.Equal(c.t, http.StatusOK, r.Status, "register: %s", r.Body)
	return r.Object(c.t)["id"].(string)
}

// Poll polls and returns the job object, or nil.
func (c *Controller) Poll(workerID string) map[string]any {
	c.t.Helper()
	r := c.Get("/api/workers/poll?worker_id="+workerID, c.KeyH())
	require.Equal(c.t, http.StatusOK, r.Status, "poll: %s", r.Body)
	m := r.Object(c.t)
	require.Contains(c.t, m, "job")
	if m["job"] == nil {
		return nil
	}
	return m["job"].(map[string]any)
}

// Upload uploads a worker's result; data nil sends no file part.
func (c *Controller) Upload(buildID, workerID string, success bool, data []byte, errMsg string) Response {
	c.t.Helper()
	parts := []Part{{Name: "build_id", Data: []byte(buildID)}, {Name: "worker_id", Data: []byte(workerID)},
		{Name: "success", Data: []byte(fmt.Sprint(success))}}
	if errMsg != "" {
		parts = append(parts, Part{Name: "error_message", Data: []byte(errMsg)})
	}
	if data != nil {
		parts = append(parts, Part{Name: "result", Filename: "build.ipa", ContentType: "application/octet-stream", Data: data})
	}
	return c.PostMultipart("/api/workers/upload", c.KeyH(), parts...)
}

// Status returns a build's status object (with the key).
func (c *Controller) Status(id string) map[string]any {
	c.t.Helper()
	r := c.Get("/api/builds/"+id+"/status", c.KeyH())
	require.Equal(c.t, http.StatusOK, r.Status, "status: %s", r.Body)
	return r.Object(c.t)
}

// LogMessages returns a build's log messages.
func (c *Controller) LogMessages(id string) []string {
	c.t.Helper()
	r := c.Get("/api/builds/"+id+"/logs", c.KeyH())
	require.Equal(c.t, http.StatusOK, r.Status, "logs: %s", r.Body)
	var out []string
	for _, l := range r.Object(c.t)["logs"].([]any) {
		out = append(out, l.(map[string]any)["message"].(string))
	}
	return out
}

// Worker returns a worker's stats object.
func (c *Controller) WorkerStats(id string) map[string]any {
	c.t.Helper()
	r := c.Get("/api/workers/"+id+"/stats", c.KeyH())
	require.Equal(c.t, http.StatusOK, r.Status, "stats: %s", r.Body)
	return r.Object(c.t)
}

// CertsZip builds a certs bundle: a p12, a password and profiles.
func CertsZip(t testing.TB, files map[string]string, order ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	if order == nil {
		for name := range files {
			order = append(order, name)
		}
	}
	for _, name := range order {
		w, err := zw.Create(name)
		require.NoError(t, err)
		_, err = w.Write([]byte(files[name]))
		require.NoError(t, err)
	}
	require.NoError(t, zw.Close())
	return buf.Bytes()
}

// DefaultCerts is a valid certs bundle.
func DefaultCerts(t testing.TB) []byte {
	return CertsZip(t, map[string]string{
		"dist/cert.p12": "P12-BYTES", "password.txt": " s3cret \n", "profiles/app.mobileprovision": "PROFILE-1",
	}, "dist/cert.p12", "password.txt", "profiles/app.mobileprovision")
}

// eventually polls cond until it holds or the deadline passes.
var eventually = testkit.Eventually

// storageFiles lists every file under the storage root (relative paths).
func storageFiles(t testing.TB, root string) []string {
	t.Helper()
	var out []string
	require.NoError(t, filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if !info.IsDir() {
			rel, _ := filepath.Rel(root, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	}))
	return out
}

// databaseFree is the database volume's free bytes as /health reports them
// when the volume has n: none on PostgreSQL, whose server's disk is its own.
func databaseFree(n int64) any {
	if testkit.Postgres() {
		return nil
	}
	return float64(n)
}

// logTrouble shows, when a test failed, the controller's warnings and
// errors (at most the last 40): go test hides the controller's log, and an
// answer such as 500 "Poll failed" says why only there.
func (c *Controller) logTrouble(t testing.TB) {
	var lines []string
	for _, l := range strings.Split(c.Logs(), "\n") {
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
			lines = append(lines, l)
		}
	}
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	if len(lines) > 0 {
		t.Logf("controller warnings and errors:\n%s", strings.Join(lines, "\n"))
	}
}
