package test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/cmd/app"
)

// rawRequest sends raw bytes on a new connection and returns the connection
// and a reader over what comes back.
func rawRequest(t *testing.T, c *Controller, req string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(c.URL, "http://"))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	_, err = conn.Write([]byte(req))
	require.NoError(t, err)
	return conn, bufio.NewReader(conn)
}

// closedWithin reports whether the server closes conn within d.
func closedWithin(conn net.Conn, br *bufio.Reader, d time.Duration) bool {
	conn.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, br)
	return err == nil // EOF: closed by the server; a timeout is an error
}

// TestUnreadBodyIsAnswered: a request whose declared body never arrives, on
// a route that does not read a body, is answered at once and its connection
// closed (Go's server used to wait for the body, without a deadline, before
// answering: 1,000 such connections held 1,000 descriptors forever).
func TestUnreadBodyIsAnswered(t *testing.T) {
	t.Parallel()
	c := Start(t)
	conn, br := rawRequest(t, c, "GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err, "answered")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.True(t, resp.Close, "Connection: close")
	resp.Body.Close()
	require.True(t, closedWithin(conn, br, 10*time.Second), "the server closes the connection")
}

// TestStalledBodyIsCutOff: a body that stops arriving is cut off after the
// body read timeout (reset by every read, so a slow but steady upload is not:
// TestSlowClientsAreCutOff), answered, and its connection closed.
func TestStalledBodyIsCutOff(t *testing.T) {
	t.Parallel()
	c := Start(t, WithConfig(func(cfg *app.Config) { cfg.BodyReadTimeout = 300 * time.Millisecond }))
	for _, tc := range []struct{ name, req string }{
		{"JSON", "POST /api/workers/register HTTP/1.1\r\nHost: x\r\nX-API-Key: " + testKey +
			"\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"name\":"},
		{"Multipart", "POST /api/builds/submit HTTP/1.1\r\nHost: x\r\nX-API-Key: " + testKey +
			"\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\n" +
			"Content-Disposition: form-data; name=\"source\"; filename=\"s.zip\"\r\n\r\nPK"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			conn, br := rawRequest(t, c, tc.req)
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			resp, err := http.ReadResponse(br, nil)
			require.NoError(t, err, "answered once the body stalls")
			require.Equal(t, http.StatusBadRequest, resp.StatusCode)
			resp.Body.Close()
			require.True(t, closedWithin(conn, br, 10*time.Second), "the server closes the connection")
		})
	}
	require.Empty(t, storageFiles(t, c.Dir+"/storage"), "nothing stored")
}

// TestPartHeaderLimit: a multipart part's headers are capped at a few KiB
// (mime/multipart alone allows 10 MiB per part): a 64 KiB header is refused
// with 400, an ordinary long one is fine.
func TestPartHeaderLimit(t *testing.T) {
	t.Parallel()
	c := Start(t)
	body := func(filler int) string {
		return "--b\r\nContent-Disposition: form-data; name=\"source\"; filename=\"s.zip\"\r\nX-Filler: " +
			strings.Repeat("a", filler) + "\r\n\r\nPK\r\n--b\r\nContent-Disposition: form-data; name=\"platform\"\r\n\r\nios\r\n--b--\r\n"
	}
	post := func(b string) Response {
		return c.Do(http.MethodPost, "/api/builds/submit", strings.NewReader(b),
			c.KeyH("Content-Type", "multipart/form-data; boundary=b"))
	}
	big := post(body(64 << 10))
	require.Equal(t, http.StatusBadRequest, big.Status)
	require.Equal(t, "Invalid multipart body", big.Error(t))
	require.Equal(t, http.StatusOK, post(body(1500)).Status)
}

// TestInvalidUTF8IsReplaced: every text the controller stores from a client
// is valid UTF-8 (invalid bytes become U+FFFD), so what it sends back is
// valid JSON. Diagnostic checks came back verbatim, invalid bytes included.
func TestInvalidUTF8IsReplaced(t *testing.T) {
	t.Parallel()
	c := Start(t)
	raw := func(path, body string) Response {
		return c.Do(http.MethodPost, path, strings.NewReader(body), c.KeyH("Content-Type", "application/json"))
	}
	reg := raw("/api/workers/register", "{\"name\":\"mac\xff\xfe\",\"capabilities\":{\"os\":\"\xc0\xaf\"}}")
	require.Equal(t, http.StatusOK, reg.Status, "%s", reg.Body)
	w := reg.Object(t)["id"].(string)
	diag := raw("/api/diagnostics/report", "{\"worker_id\":\""+w+"\",\"status\":\"healthy\",\"duration_ms\":1,"+
		"\"checks\":[{\"name\":\"disk\xff\",\"detail\":\"\xed\xa0\x80\"}]}")
	require.Equal(t, http.StatusOK, diag.Status, "%s", diag.Body)
	b := c.Submit("ios", []byte("src"), nil)
	c.Poll(w)
	logs := c.Do(http.MethodPost, "/api/builds/"+b.ID+"/logs", strings.NewReader("{\"level\":\"info\",\"message\":\"bad \xff byte\"}"),
		c.KeyH("Content-Type", "application/json", "X-Worker-Id", w))
	require.Equal(t, http.StatusOK, logs.Status, "%s", logs.Body)
	up := c.Upload(b.ID, w, false, nil, "failed \xff\xfe here")
	require.Equal(t, http.StatusOK, up.Status, "%s", up.Body)

	for _, path := range []string{"/api/diagnostics/" + w, "/api/diagnostics/" + w + "/latest",
		"/api/builds/" + b.ID + "/logs", "/api/builds/" + b.ID + "/status", "/api/workers/" + w + "/stats"} {
		r := c.Get(path, c.KeyH())
		require.Equal(t, http.StatusOK, r.Status, path)
		require.True(t, utf8.Valid(r.Body), "%s answers valid UTF-8: %q", path, r.Body)
		require.True(t, json.Valid(r.Body), "%s answers valid JSON", path)
	}
	st := c.Status(b.ID)
	require.Equal(t, "failed \uFFFD here", st["error_message"])
	require.Contains(t, c.LogMessages(b.ID), "bad \uFFFD byte")
	require.Equal(t, "mac\uFFFD", c.WorkerStats(w)["workerName"])
}

// TestLogLinesAreClipped: a log line, whatever its source, is clipped to
// 16 KiB with a marker (never refused), and keyless telemetry is paced per
// build (429 Too many requests with Retry-After past 50 at once).
func TestLogLinesAreClipped(t *testing.T) {
	t.Parallel()
	c := Start(t, WithManualClock())
	w := c.Register("w")
	b := c.Submit("ios", []byte("src"), nil)
	c.Poll(w)
	huge := strings.Repeat("x", 900<<10) // under the 1 MiB body cap
	r := c.PostJSON("/api/builds/"+b.ID+"/logs", map[string]any{"level": "info", "message": huge},
		c.KeyH("X-Worker-Id", w))
	require.Equal(t, http.StatusOK, r.Status)
	keyless := H{"X-Worker-Id": w, "X-Build-Id": b.ID, "Content-Type": "application/json"}
	beat := map[string]any{"type": "heartbeat", "data": map[string]any{"stage": huge}}
	require.Equal(t, http.StatusOK, c.PostJSON("/api/builds/"+b.ID+"/telemetry", beat, keyless).Status)
	for _, m := range c.LogMessages(b.ID)[2:] {
		require.LessOrEqual(t, len(m), 16<<10+40, "clipped")
		require.True(t, strings.HasSuffix(m, " bytes cut]"), "with a marker")
	}

	var limited Response
	for i := 0; i < 60; i++ {
		limited = c.PostJSON("/api/builds/"+b.ID+"/telemetry", map[string]any{"type": "cpu_snapshot",
			"data": map[string]any{"cpu_percent": 10, "memory_mb": 100}}, keyless)
		if limited.Status != http.StatusOK {
			break
		}
	}
	require.Equal(t, http.StatusTooManyRequests, limited.Status)
	require.Equal(t, "Too many requests", limited.Error(t))
	secs, err := strconv.Atoi(limited.Header.Get("Retry-After"))
	require.NoError(t, err)
	require.GreaterOrEqual(t, secs, 1)
	// The keyed form (the VM) is not paced; the pace refills with time.
	require.Equal(t, http.StatusOK, c.PostJSON("/api/builds/"+b.ID+"/telemetry", beat,
		c.KeyH("X-Worker-Id", w, "X-Build-Id", b.ID)).Status)
	c.Clock.Advance(time.Second)
	require.Equal(t, http.StatusOK, c.PostJSON("/api/builds/"+b.ID+"/telemetry", map[string]any{"type": "monitor_started"}, keyless).Status)
}

// peakRSS reads a process's peak resident set (VmHWM) in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			require.NoError(t, err)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc status")
	return 0
}

// TestLogBombMemory: a build whose log holds 64 MiB (4,000 lines of 16 KiB,
// the most a line may hold) is read by several clients at once — the
// public build page, its logs.json, and the API's whole log — and the
// controller's peak resident set grows by less than 64 MiB. Before the
// lines were clipped and pages bounded by bytes, one such read held the
// whole log (three concurrent reads reached 4.5 GB).
func TestLogBombMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a controller binary")
	}
	t.Parallel()
	if _, err := os.Stat("/proc/self/clear_refs"); err != nil {
		t.Skip("needs Linux /proc to reset the peak RSS")
	}
	p := StartProcess(t, t.TempDir())
	c := p.Client(t)
	w := c.Register("w")
	b := c.Submit("ios", []byte("src"), nil)
	c.Poll(w)
	line := strings.Repeat("y", 16<<10)
	batch := make([]map[string]any, 50) // 800 KiB: under the 1 MiB body cap
	for i := range batch {
		batch[i] = map[string]any{"level": "info", "message": line}
	}
	for i := 0; i < 80; i++ {
		r := c.PostJSON("/api/builds/"+b.ID+"/logs", map[string]any{"logs": batch}, c.KeyH("X-Worker-Id", w))
		require.Equal(t, http.StatusOK, r.Status)
	}
	pid := p.cmd.Process.Pid
	require.NoError(t, os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)) // reset the peak
	base := peakRSS(t, pid)
	var wg sync.WaitGroup
	for _, path := range []string{"/builds/" + b.ID, "/builds/" + b.ID + "/logs.json", "/api/builds/" + b.ID + "/logs",
		"/builds/" + b.ID, "/api/builds/" + b.ID + "/logs"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := c.Get(path, c.KeyH())
			if r.Status != http.StatusOK || len(r.Body) == 0 {
				t.Errorf("%s: %d", path, r.Status)
			}
		}()
	}
	wg.Wait()
	whole := c.Get("/api/builds/"+b.ID+"/logs", c.KeyH())
	require.Greater(t, len(whole.Body), 4000*(16<<10), "the whole log is sent")
	require.True(t, bytes.HasSuffix(whole.Body, []byte("]}\n")))
	growth := peakRSS(t, pid) - base
	t.Logf("peak RSS growth over five concurrent reads of a 64 MiB log: %d MiB", growth>>20)
	require.Less(t, growth, int64(64<<20))
}

// TestServerLevelAnswers pins the answers that Go's HTTP server gives before
// any handler runs (docs/ERRORS.md, "Answers of Go's HTTP server"): they
// cannot be JSON, and the docs must say what they are.
func TestServerLevelAnswers(t *testing.T) {
	t.Parallel()
	c := Start(t)
	for _, tc := range []struct {
		name, req string
		status    int
	}{
		{"BadPercentEncoding", "GET /api/builds/%zz/status HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"DuplicateContentLength", "POST /api/builds/submit HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400},
		{"NoHost", "GET /health HTTP/1.1\r\n\r\n", 400},
		{"HugeHeader", "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 2<<20) + "\r\n\r\n", 431},
		{"TransferEncoding", "POST /api/builds/submit HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
		{"ProtocolVersion", "GET /health HTTP/9.9\r\nHost: x\r\n\r\n", 505},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			conn, br := rawRequest(t, c, tc.req)
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			resp, err := http.ReadResponse(br, nil)
			require.NoError(t, err)
			defer resp.Body.Close()
			require.Equal(t, tc.status, resp.StatusCode)
			require.Equal(t, "text/plain; charset=utf-8", resp.Header.Get("Content-Type"))
		})
	}
}
