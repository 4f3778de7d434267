package test

// Security table: traversal ids on every addressed route, zip slip and zip
// bombs through certs-secure, oversize and mistyped uploads, and the
// credential matrix extended with "another worker". Every answer of these
// tests goes through a secRecorder, whose cleanup sweeps all bodies for
// leaked internals (paths, SQL, Go errors, stacks) and the server log for the
// key and the build tokens.

import (
	"archive/zip"
	"bufio"
	"bytes"
	"compress/flate"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/cmd/app"
)

// secRecorder sends requests for a security test and keeps every answer for
// the leak sweep, which runs as the test's cleanup (before the controller
// stops: cleanups run last-registered first).
type secRecorder struct {
	t      *testing.T
	c      *Controller
	mu     sync.Mutex
	seen   []secAnswer
	tokens []string
}

type secAnswer struct {
	what string
	r    Response
}

func newSecRecorder(t *testing.T, c *Controller) *secRecorder {
	s := &secRecorder{t: t, c: c}
	t.Cleanup(s.sweep)
	return s
}

func (s *secRecorder) keep(what string, r Response) Response {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen = append(s.seen, secAnswer{what, r})
	return r
}

func (s *secRecorder) do(method, path string, body io.Reader, h H) Response {
	return s.keep(method+" "+path, s.c.Do(method, path, body, h))
}

func (s *secRecorder) get(path string, h H) Response { return s.do(http.MethodGet, path, nil, h) }

func (s *secRecorder) postJSON(path string, body any, h H) Response {
	return s.keep("POST "+path, s.c.PostJSON(path, body, h))
}

func (s *secRecorder) postMultipart(path string, h H, parts ...Part) Response {
	return s.keep("POST "+path, s.c.PostMultipart(path, h, parts...))
}

// submit submits a build and remembers its token for the log sweep.
func (s *secRecorder) submit(platform string, source, certs []byte) Submitted {
	s.t.Helper()
	parts := []Part{{Name: "source", Filename: "source.zip", Data: source}, {Name: "platform", Data: []byte(platform)}}
	if certs != nil {
		parts = append(parts, Part{Name: "certs", Filename: "certs.zip", Data: certs})
	}
	r := s.postMultipart("/api/builds/submit", s.c.KeyH(), parts...)
	require.Equal(s.t, http.StatusOK, r.Status, "submit: %s", r.Body)
	m := r.Object(s.t)
	b := Submitted{ID: m["id"].(string), Token: m["access_token"].(string)}
	s.mu.Lock()
	s.tokens = append(s.tokens, b.Token)
	s.mu.Unlock()
	return b
}

func (s *secRecorder) register(name string) string {
	s.t.Helper()
	r := s.postJSON("/api/workers/register", map[string]any{"name": name, "capabilities": map[string]any{}}, s.c.KeyH())
	require.Equal(s.t, http.StatusOK, r.Status, "register: %s", r.Body)
	return r.Object(s.t)["id"].(string)
}

// poll polls for a worker and requires the given job.
func (s *secRecorder) pollFor(workerID, buildID string) {
	s.t.Helper()
	r := s.get("/api/workers/poll?worker_id="+workerID, s.c.KeyH())
	require.Equal(s.t, http.StatusOK, r.Status, "poll: %s", r.Body)
	job, _ := r.Object(s.t)["job"].(map[string]any)
	require.NotNil(s.t, job, "poll: no job for %s", workerID)
	require.Equal(s.t, buildID, job["id"])
}

// expect requires status and the exact {"error": msg} body.
func (s *secRecorder) expect(t *testing.T, r Response, status int, msg, what string) {
	t.Helper()
	require.Equal(t, status, r.Status, "%s: %s", what, r.Body)
	require.Equal(t, msg, r.Error(t), what)
}

// secLeaks are strings no answer may contain: paths, SQL, Go errors, stacks.
var secLeaks = []string{"/storage", "/data/", ".db", "SELECT", "INSERT", "constraint", "runtime error",
	"invalid character", "unexpected EOF", "no such file", "permission denied", ".go:", "goroutine "}

// sweep checks every recorded answer and the server log.
func (s *secRecorder) sweep() {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.t
	leaks := append([]string{s.c.Dir, filepath.ToSlash(s.c.Dir)}, secLeaks...)
	for _, a := range s.seen {
		// Tokens are random base64url and may contain anything.
		body := string(a.r.Body)
		for _, tok := range s.tokens {
			body = strings.ReplaceAll(body, tok, "<token>")
		}
		for _, bad := range leaks {
			require.NotContains(t, body, bad, "%s answered %d with internal detail", a.what, a.r.Status)
		}
		require.NotContains(t, strings.ToLower(body), "sqlite", "%s answered %d with internal detail", a.what, a.r.Status)
	}
	logs := s.c.Logs()
	require.NotContains(t, logs, s.c.Key, "the server log contains the API key")
	for _, tok := range s.tokens {
		require.NotContains(t, logs, tok, "the server log contains a build token")
	}
}

// secRequireOnlyStoredFiles walks the whole temporary directory of a
// controller: every file is the database (data/controller.db*) or a stored
// file named <uuid>.<ext> in storage/{builds,certs,results}; nothing else
// exists anywhere, so no request wrote outside the storage root and no
// temporary file was left.
var secStoredFile = regexp.MustCompile(`^storage/(builds|certs)/[0-9a-f-]{36}\.zip$|^storage/results/[0-9a-f-]{36}\.(ipa|apk)$|^data/controller\.db(-wal|-shm|-journal)?$`)

func secRequireOnlyStoredFiles(t *testing.T, dir string) {
	t.Helper()
	require.NoError(t, filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if info.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		require.NoError(t, err)
		require.Regexp(t, secStoredFile, filepath.ToSlash(rel), "unexpected file in the controller's directory")
		return nil
	}))
}

// traversalIDs are hostile :id / :worker_id values. seg is put verbatim on the
// path; raw is the value meant, used where the id travels in a query or a
// form field. routed says whether Echo can match a route at all:
//   - Go's client and server do not resolve dot segments, and Echo routes on
//     URL.RawPath when it is set (any %2F, or an escape that Go would not have
//     written, sets it) without unescaping parameters. So an encoded slash
//     stays inside one segment, "..", "%2e%2e%2f…" and "%2Fetc%2Fpasswd" are
//     just non-UUID ids, and the handler answers 404 Build/Worker not found
//     before any database or file access (docs/API.md §1, Ids).
//   - A raw "/" inside the id ("../", "....//") adds a path segment; no route
//     has that shape, so the router answers 404 "Not found" before auth or any
//     handler runs (§1.1: routing precedes auth).
type traversalID struct {
	name, seg, raw string
	routed         bool
}

func traversalIDs(t *testing.T, existingBuild string) []traversalID {
	t.Helper()
	fullwidth := strings.Map(func(r rune) rune {
		if r > ' ' && r <= '~' {
			return r + 0xFEE0
		}
		return r
	}, existingBuild)
	cyrillic := strings.NewReplacer("a", "\u0430", "c", "\u0441", "e", "\u0435", "0", "\u043e", "1", "\u0406", "3", "\u0417").Replace(existingBuild)
	require.NotEqual(t, existingBuild, cyrillic)
	hyphens := strings.ReplaceAll(existingBuild, "-", "\u2010")
	long := strings.Repeat("a", 300)
	return []traversalID{
		{"DotDotSlash", "../", "../", false},
		{"DotsAndSlashes", "....//", "....//", false},
		{"DotDot", "..", "..", true},
		{"EncodedSlashes", "..%2f..%2fetc%2fpasswd", "../../etc/passwd", true},
		{"EncodedDotsAndSlashes", "%2e%2e%2f%2e%2e%2f", "../../", true},
		{"EncodedDotsSlashesPasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "../../etc/passwd", true},
		{"EncodedAbsolutePath", url.PathEscape("/etc/passwd"), "/etc/passwd", true},
		{"Long300", long, long, true},
		{"NUL", "%00", "\x00", true},
		{"UUIDThenNUL", existingBuild + "%00", existingBuild + "\x00", true},
		{"UUIDThenEncodedSlashDotDot", existingBuild + "%2F..", existingBuild + "/..", true},
		{"FullwidthLookalike", url.PathEscape(fullwidth), fullwidth, true},
		{"CyrillicLookalike", url.PathEscape(cyrillic), cyrillic, true},
		{"UnicodeHyphens", url.PathEscape(hyphens), hyphens, true},
		{"FullwidthDotsAndSolidus", url.PathEscape("\uff0e\uff0e\uff0f\uff0e\uff0e\uff0fetc\uff0fpasswd"), "\uff0e\uff0e\uff0f\uff0e\uff0e\uff0fetc\uff0fpasswd", true},
	}
}

const secMarker = "SECURITY-ID-MARKER"

// TestSecurityTraversalIDs sends hostile ids to every route with an :id or a
// :worker_id (allEndpoints, plus telemetry), and as the addressing ids of
// poll, upload, unregister and diagnostics reports.
func TestSecurityTraversalIDs(t *testing.T) {
	t.Parallel()
	c := Start(t)
	s := newSecRecorder(t, c)
	b := s.submit("ios", []byte("source"), DefaultCerts(t))
	w := s.register("traversal-worker")
	s.pollFor(w, b.ID)

	var routes []endpoint
	for _, ep := range append(allEndpoints(secMarker, secMarker), endpoint{"POST", "/api/builds/" + secMarker + "/telemetry", "worker"}) {
		if path, _, _ := strings.Cut(ep.path, "?"); strings.Contains(path, secMarker) {
			routes = append(routes, ep)
		}
	}
	require.GreaterOrEqual(t, len(routes), 17, "every route with :id or :worker_id")

	for _, id := range traversalIDs(t, b.ID) {
		t.Run(id.name, func(t *testing.T) {
			for _, ep := range routes {
				path, query, _ := strings.Cut(ep.path, "?")
				target := strings.ReplaceAll(path, secMarker, id.seg)
				if query != "" {
					target += "?" + strings.ReplaceAll(query, secMarker, w) // heartbeat's ?worker_id: a real worker
				}
				msg := "Worker not found"
				if strings.HasPrefix(path, "/api/builds/") {
					msg = "Build not found"
				}
				if !id.routed {
					msg = "Not found"
				}
				what := ep.method + " " + target
				// The key and every identity header the worker routes need,
				// so that only the id can be the reason for the answer.
				r := s.do(ep.method, target, nil, c.KeyH("X-Worker-Id", w, "X-Build-Id", b.ID))
				s.expect(t, r, http.StatusNotFound, msg, what)
				if ep.class == "keyOrToken" {
					// Step 4 of "Key or token": a non-UUID :id is 404 before the token is compared.
					r = s.do(ep.method, target, nil, H{"X-Build-Token": b.Token})
					s.expect(t, r, http.StatusNotFound, msg, what+" (token)")
				}
			}

			// The same ids where they travel as query or form values.
			s.expect(t, s.get("/api/workers/poll?worker_id="+url.QueryEscape(id.raw), c.KeyH()),
				http.StatusNotFound, "Worker not found", "poll")
			s.expect(t, s.do(http.MethodPost, "/api/workers/unregister?worker_id="+url.QueryEscape(id.raw), nil, c.KeyH()),
				http.StatusNotFound, "Worker not found", "unregister ?worker_id")
			s.expect(t, s.postJSON("/api/diagnostics/report", map[string]any{"worker_id": id.raw, "status": "healthy",
				"duration_ms": 1, "checks": []any{}}, c.KeyH()), http.StatusNotFound, "Worker not found", "diagnostics report")
			s.expect(t, s.postMultipart("/api/workers/upload", c.KeyH(), Part{Name: "build_id", Data: []byte(id.raw)},
				Part{Name: "worker_id", Data: []byte(w)}, Part{Name: "success", Data: []byte("true")},
				Part{Name: "result", Filename: "build.ipa", Data: []byte("IPA")}), http.StatusNotFound, "Build not found", "upload build_id")
			s.expect(t, s.postMultipart("/api/workers/upload", c.KeyH(), Part{Name: "build_id", Data: []byte(b.ID)},
				Part{Name: "worker_id", Data: []byte(id.raw)}, Part{Name: "success", Data: []byte("true")},
				Part{Name: "result", Filename: "build.ipa", Data: []byte("IPA")}), http.StatusNotFound, "Worker not found", "upload worker_id")
			// As an identity claim it is simply not the assignee.
			s.expect(t, s.postJSON("/api/builds/"+b.ID+"/heartbeat?worker_id="+url.QueryEscape(id.raw), nil, c.KeyH()),
				http.StatusForbidden, "Build not assigned to this worker", "heartbeat ?worker_id")
		})
	}
	// Nothing was changed, created or written anywhere.
	st := s.get("/api/builds/"+b.ID+"/status", c.KeyH()).Object(t)
	require.Equal(t, "assigned", st["status"])
	require.Equal(t, w, st["worker_id"])
	secRequireOnlyStoredFiles(t, c.Dir)
	require.Len(t, storageFiles(t, filepath.Join(c.Dir, "storage")), 2, "the build's source and certs only")
}

// secZipEntry is one entry of a hand-made zip. With raw set, data is written
// as already-deflated bytes under a declared uncompressed size (a header that
// may lie).
type secZipEntry struct {
	name string
	data []byte
	raw  bool
	size uint64
	crc  uint32
}

func secZip(t *testing.T, entries ...secZipEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		var w io.Writer
		var err error
		if e.raw {
			w, err = zw.CreateRaw(&zip.FileHeader{Name: e.name, Method: zip.Deflate,
				CompressedSize64: uint64(len(e.data)), UncompressedSize64: e.size, CRC32: e.crc})
		} else {
			w, err = zw.Create(e.name)
		}
		require.NoError(t, err)
		_, err = w.Write(e.data)
		require.NoError(t, err)
	}
	require.NoError(t, zw.Close())
	return buf.Bytes()
}

func secDeflate(t *testing.T, r io.Reader) []byte {
	t.Helper()
	var buf bytes.Buffer
	fw, err := flate.NewWriter(&buf, flate.BestCompression)
	require.NoError(t, err)
	_, err = io.Copy(fw, r)
	require.NoError(t, err)
	require.NoError(t, fw.Close())
	return buf.Bytes()
}

// secDeflateZeros returns a deflate stream of mib MiB of zeros without
// compressing them all: one flushed (non-final) MiB repeated, then a final
// empty block. Its back-references only reach earlier zeros, so the copies
// chain into one valid stream.
func secDeflateZeros(t *testing.T, mib int) []byte {
	t.Helper()
	var one bytes.Buffer
	fw, err := flate.NewWriter(&one, flate.BestCompression)
	require.NoError(t, err)
	_, err = fw.Write(make([]byte, 1<<20))
	require.NoError(t, err)
	require.NoError(t, fw.Flush())
	var end bytes.Buffer
	fe, err := flate.NewWriter(&end, flate.BestCompression)
	require.NoError(t, err)
	require.NoError(t, fe.Close())
	return append(bytes.Repeat(one.Bytes(), mib), end.Bytes()...)
}

// secZerosCRC is the CRC-32 of n zero bytes (so an honest bomb's header is
// honest).
func secZerosCRC(n int64) uint32 {
	var crc uint32
	chunk := make([]byte, 1<<20)
	for ; n > 0; n -= int64(len(chunk)) {
		crc = crc32.Update(crc, crc32.IEEETable, chunk[:min(n, int64(len(chunk)))])
	}
	return crc
}

// TestSecurityCertsZipSlipAndBombs submits malicious certs bundles, lets a
// worker take each build and asks certs-secure for it: 500 "Failed to process
// certs file", and nothing is ever written outside the storage root.
func TestSecurityCertsZipSlipAndBombs(t *testing.T) {
	t.Parallel()
	c := Start(t)
	s := newSecRecorder(t, c)
	// A name no other test uses, so that a file written by a zip slip is
	// recognisable wherever it lands.
	marker := "slip-" + filepath.Base(c.Dir) + ".p12"
	const mib = 1 << 20
	cases := []struct {
		name  string
		certs []byte
	}{
		{"SlipParent", secZip(t, secZipEntry{name: "../" + marker, data: []byte("x")})},
		{"SlipToStorageRoot", secZip(t, secZipEntry{name: "../../" + marker, data: []byte("x")})},
		{"SlipDeep", secZip(t, secZipEntry{name: "../../../../../../../../tmp/" + marker, data: []byte("x")})},
		{"SlipInner", secZip(t, secZipEntry{name: "certs/../../../" + marker, data: []byte("x")})},
		{"SlipAbsolute", secZip(t, secZipEntry{name: filepath.ToSlash(filepath.Join(c.Dir, marker)), data: []byte("x")})},
		{"SlipBackslash", secZip(t, secZipEntry{name: `..\..\` + marker, data: []byte("x")})},
		{"SlipAfterValidP12", secZip(t, secZipEntry{name: "dist/cert.p12", data: []byte("P12")},
			secZipEntry{name: "../" + marker, data: []byte("x")})},
		// Zip bombs: a header declaring 1 TiB; 60 MiB of honest zeros (over
		// the 50 MiB declared-size cap); a header declaring 1 KiB for 8 MiB
		// of zeros; entries whose declared sizes add up past the cap.
		{"BombDeclared1TiB", secZip(t, secZipEntry{name: "bomb.p12", data: secDeflate(t, strings.NewReader("x")), raw: true, size: 1 << 40})},
		{"BombHonest60MiB", secZip(t, secZipEntry{name: "bomb.p12", data: secDeflateZeros(t, 60), raw: true, size: 60 * mib, crc: secZerosCRC(60 * mib)})},
		{"BombLyingHeader", secZip(t, secZipEntry{name: "bomb.p12", data: secDeflateZeros(t, 8), raw: true, size: 1 << 10})},
		{"BombManyEntries", secZip(t,
			secZipEntry{name: "a.p12", data: secDeflateZeros(t, 10), raw: true, size: 10 * mib, crc: secZerosCRC(10 * mib)},
			secZipEntry{name: "b.mobileprovision", data: secDeflateZeros(t, 10), raw: true, size: 10 * mib, crc: secZerosCRC(10 * mib)},
			secZipEntry{name: "c.mobileprovision", data: secDeflateZeros(t, 10), raw: true, size: 10 * mib, crc: secZerosCRC(10 * mib)},
			secZipEntry{name: "d.mobileprovision", data: secDeflateZeros(t, 10), raw: true, size: 10 * mib, crc: secZerosCRC(10 * mib)},
			secZipEntry{name: "e.mobileprovision", data: secDeflateZeros(t, 10), raw: true, size: 10 * mib, crc: secZerosCRC(10 * mib)},
			secZipEntry{name: "f.mobileprovision", data: secDeflateZeros(t, 1), raw: true, size: 1*mib + 1})},
		{"NotAZip", []byte("a bare .p12, not a zip")},
	}
	// The bomb builder is sound: its stream inflates to exactly its zeros.
	n, err := io.Copy(io.Discard, flate.NewReader(bytes.NewReader(secDeflateZeros(t, 2))))
	require.NoError(t, err)
	require.Equal(t, int64(2*mib), n)

	// Submitted in order and taken in order by one worker each (FIFO).
	type job struct {
		name   string
		b      Submitted
		worker string
	}
	var jobs []job
	for _, tc := range cases {
		jobs = append(jobs, job{name: tc.name, b: s.submit("ios", []byte("source"), tc.certs)})
	}
	valid := s.submit("ios", []byte("source"), DefaultCerts(t))
	for i := range jobs {
		jobs[i].worker = s.register("slip-" + jobs[i].name)
		s.pollFor(jobs[i].worker, jobs[i].b.ID)
	}
	vw := s.register("valid-worker")
	s.pollFor(vw, valid.ID)

	for _, j := range jobs {
		t.Run(j.name, func(t *testing.T) {
			r := s.get("/api/builds/"+j.b.ID+"/certs-secure",
				c.KeyH("X-Worker-Id", j.worker, "X-Build-Id", j.b.ID, "Accept", "application/json"))
			s.expect(t, r, http.StatusInternalServerError, "Failed to process certs file", j.name)
		})
	}
	// The controller is unharmed: a valid bundle still opens.
	r := s.get("/api/builds/"+valid.ID+"/certs-secure", c.KeyH("X-Worker-Id", vw, "X-Build-Id", valid.ID))
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	require.Len(t, r.Object(t), 4)

	// Nothing was written outside the storage root, nor anywhere the slipped
	// names would have resolved.
	secRequireOnlyStoredFiles(t, c.Dir)
	root := filepath.Join(c.Dir, "storage")
	for _, p := range []string{filepath.Join(filepath.Dir(c.Dir), marker), filepath.Join(c.Dir, marker),
		filepath.Join(root, marker), filepath.Join("/tmp", marker), filepath.Join(os.TempDir(), marker)} {
		_, err := os.Stat(p)
		require.True(t, os.IsNotExist(err), "a zip slip wrote %s", p)
	}
	require.NotContains(t, c.Logs(), "s3cret", "certificate passwords are never logged")
}

// secRawRequest writes a request head with a declared Content-Length and no
// body at all on a fresh connection, and reads the answer. An answer proves
// the server did not wait for (read) the body.
func secRawRequest(t *testing.T, c *Controller, path, contentType string, length int64) Response {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(c.URL, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: controller\r\nX-API-Key: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n",
		path, c.Key, contentType, length)
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err, "no answer before the body was sent")
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.True(t, resp.Close, "the connection is closed after refusing an unread body")
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: body}
}

// TestSecurityDeclaredLengthTooLarge declares bodies over the submit and
// upload caps (§6.2): 413 "Request body too large" with no body byte sent.
func TestSecurityDeclaredLengthTooLarge(t *testing.T) {
	t.Parallel()
	const source, certs, result = 1000, 100, 2000
	c := Start(t, WithConfig(func(cfg *app.Config) {
		cfg.MaxSourceSize, cfg.MaxCertsSize, cfg.MaxResultSize = source, certs, result
	}))
	s := newSecRecorder(t, c)
	const mp = "multipart/form-data; boundary=secboundary"
	cases := []struct {
		name, path string
		length     int64
	}{
		{"SubmitJustOver", "/api/builds/submit", source + certs + 1<<20 + 1},
		{"SubmitAliasJustOver", "/api/builds", source + certs + 1<<20 + 1},
		{"SubmitHuge", "/api/builds/submit", 1 << 50},
		{"UploadJustOver", "/api/workers/upload", result + 1<<20 + 1},
		{"ResultAliasJustOver", "/api/workers/result", result + 1<<20 + 1},
		{"UploadHuge", "/api/workers/upload", 1 << 50},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := s.keep(tc.name, secRawRequest(t, c, tc.path, mp, tc.length))
			s.expect(t, r, http.StatusRequestEntityTooLarge, "Request body too large", tc.name)
		})
	}
	require.Equal(t, "[]", strings.TrimSpace(string(s.get("/api/builds", c.KeyH()).Body)))
	require.Empty(t, storageFiles(t, filepath.Join(c.Dir, "storage")))
}

// TestSecurityWrongContentTypes sends well-formed multipart bodies under
// other content types to submit and upload: 400, nothing stored.
func TestSecurityWrongContentTypes(t *testing.T) {
	t.Parallel()
	c := Start(t)
	s := newSecRecorder(t, c)
	b := s.submit("ios", []byte("source"), nil)
	w := s.register("ct-worker")
	s.pollFor(w, b.ID)
	submitBody, _ := Multipart(t, Part{Name: "source", Filename: "s.zip", Data: []byte("src")}, Part{Name: "platform", Data: []byte("ios")})
	uploadBody, _ := Multipart(t, Part{Name: "build_id", Data: []byte(b.ID)}, Part{Name: "worker_id", Data: []byte(w)},
		Part{Name: "success", Data: []byte("true")}, Part{Name: "result", Filename: "b.ipa", Data: []byte("IPA")})
	for _, ct := range []string{"text/plain", "application/x-www-form-urlencoded", "multipart/mixed; boundary=x",
		"application/json", "multipart/form-data-x; boundary=x", "form-data", "", "multipart/form-data; boundary=\"unterminated"} {
		for _, tc := range []struct {
			path string
			body []byte
		}{{"/api/builds/submit", submitBody.Bytes()}, {"/api/builds", submitBody.Bytes()},
			{"/api/workers/upload", uploadBody.Bytes()}, {"/api/workers/result", uploadBody.Bytes()}} {
			what := tc.path + " as " + ct
			h := c.KeyH()
			if ct != "" {
				h["Content-Type"] = ct
			}
			r := s.do(http.MethodPost, tc.path, bytes.NewReader(tc.body), h)
			s.expect(t, r, http.StatusBadRequest, "Content must be multipart/form-data", what)
		}
	}
	builds, ok := s.get("/api/builds", c.KeyH()).JSON(t).([]any)
	require.True(t, ok)
	require.Len(t, builds, 1, "no build was created")
	require.Equal(t, "assigned", s.get("/api/builds/"+b.ID+"/status", c.KeyH()).Object(t)["status"], "no upload was applied")
	secRequireOnlyStoredFiles(t, c.Dir)
	require.Equal(t, []string{"builds/" + b.ID + ".zip"}, storageFiles(t, filepath.Join(c.Dir, "storage")))
}

// TestSecurityCredentialMatrix sends every endpoint (allEndpoints plus
// telemetry in both forms and upload) no credentials, a wrong key, another
// build's token and another worker's identity. "Another worker" is a
// registered worker that holds a different build.
func TestSecurityCredentialMatrix(t *testing.T) {
	t.Parallel()
	c := Start(t)
	s := newSecRecorder(t, c)
	mine := s.submit("ios", []byte("mine"), DefaultCerts(t))
	other := s.submit("ios", []byte("other"), DefaultCerts(t))
	w := s.register("assignee")
	w2 := s.register("another-worker")
	s.pollFor(w, mine.ID)
	s.pollFor(w2, other.ID)

	// notMine is the answer of a worker-class endpoint to a registered worker
	// that is not the build's assignee (key sent).
	notMine := func(path string) (int, string) {
		switch {
		case strings.HasSuffix(path, "/certs-secure"), strings.HasSuffix(path, "/telemetry"):
			return 403, "Worker not assigned to this build"
		case strings.Contains(path, "/heartbeat"):
			return 403, "Build not assigned to this worker"
		default: // source, certs, POST logs
			return 403, "Worker not authorized for this build"
		}
	}
	eps := append(allEndpoints(mine.ID, w), endpoint{"POST", "/api/builds/" + mine.ID + "/telemetry", "telemetry"})
	for _, ep := range eps {
		t.Run(ep.method+" "+ep.path, func(t *testing.T) {
			do := func(h H) Response { return s.do(ep.method, ep.path, nil, h) }
			none := do(nil)
			wrong := do(H{"X-API-Key": "wrong-key-wrong-key"})
			otherToken := do(H{"X-Build-Token": other.Token})
			// Another worker's identity without the key.
			anotherNoKey := do(H{"X-Worker-Id": w2, "X-Build-Id": mine.ID})
			switch ep.class {
			case "public":
				for _, r := range []Response{none, wrong, otherToken, anotherNoKey} {
					require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
				}
			case "key", "worker", "telemetry":
				// telemetry without a key is the host form: any identity
				// failure is 401 Missing X-API-Key header, revealing nothing.
				for _, r := range []Response{none, otherToken, anotherNoKey} {
					s.expect(t, r, http.StatusUnauthorized, "Missing X-API-Key header", ep.path)
				}
				s.expect(t, wrong, http.StatusForbidden, "Invalid API key", ep.path)
			case "keyOrToken":
				for _, r := range []Response{none, anotherNoKey} {
					s.expect(t, r, http.StatusUnauthorized, "Missing X-API-Key or X-Build-Token header", ep.path)
				}
				s.expect(t, wrong, http.StatusForbidden, "Invalid API key", ep.path)
				s.expect(t, otherToken, http.StatusForbidden, "Invalid or expired build token", ep.path)
			default:
				t.Fatalf("unknown class %q", ep.class)
			}
			if ep.class == "worker" || ep.class == "telemetry" {
				// Another worker's identity with the key: refused by assignee.
				path := strings.ReplaceAll(ep.path, "worker_id="+w, "worker_id="+w2)
				r := s.do(ep.method, path, nil, c.KeyH("X-Worker-Id", w2, "X-Build-Id", mine.ID))
				status, msg := notMine(path)
				s.expect(t, r, status, msg, "another worker: "+path)
			}
		})
	}

	// Keyless telemetry (the host monitor): only the assignee naming this
	// very build gets in; every other identity is 401, like no key at all.
	telemetry := "/api/builds/" + mine.ID + "/telemetry"
	snap := map[string]any{"type": "cpu_snapshot", "data": map[string]any{"cpu_percent": 10, "memory_mb": 100}}
	for _, tc := range []struct {
		name string
		path string
		h    H
	}{
		{"AnotherWorker", telemetry, H{"X-Worker-Id": w2, "X-Build-Id": mine.ID}},
		{"AnotherWorkerOwnBuildHeader", telemetry, H{"X-Worker-Id": w2, "X-Build-Id": other.ID}},
		{"AssigneeWrongBuildHeader", telemetry, H{"X-Worker-Id": w, "X-Build-Id": other.ID}},
		{"AssigneeOnAnotherBuild", "/api/builds/" + other.ID + "/telemetry", H{"X-Worker-Id": w, "X-Build-Id": other.ID}},
		{"UnknownWorker", telemetry, H{"X-Worker-Id": "00000000-0000-4000-8000-000000000000", "X-Build-Id": mine.ID}},
		{"MalformedWorker", telemetry, H{"X-Worker-Id": "../" + w, "X-Build-Id": mine.ID}},
		{"NoBuildHeader", telemetry, H{"X-Worker-Id": w}},
		{"TokenInstead", telemetry, H{"X-Build-Token": mine.Token, "X-Build-Id": mine.ID}},
		{"NonUUIDPath", "/api/builds/..%2f" + mine.ID + "/telemetry", H{"X-Worker-Id": w, "X-Build-Id": mine.ID}},
	} {
		r := s.postJSON(tc.path, snap, tc.h)
		s.expect(t, r, http.StatusUnauthorized, "Missing X-API-Key header", "keyless telemetry: "+tc.name)
	}
	r := s.postJSON(telemetry, snap, H{"X-Worker-Id": w, "X-Build-Id": mine.ID})
	require.Equal(t, http.StatusOK, r.Status, "the assignee's keyless snapshot: %s", r.Body)

	// Upload by another worker (holding its own build): refused, nothing stored.
	r = s.postMultipart("/api/workers/upload", c.KeyH(), Part{Name: "build_id", Data: []byte(mine.ID)},
		Part{Name: "worker_id", Data: []byte(w2)}, Part{Name: "success", Data: []byte("true")},
		Part{Name: "result", Filename: "build.ipa", Data: []byte("FORGED")})
	s.expect(t, r, http.StatusForbidden, "Build not assigned to this worker", "upload by another worker")
	// Another build's token opens nothing of this build, even with no key.
	for _, p := range []string{"/status", "/logs", "/download/source"} {
		s.expect(t, s.get("/api/builds/"+mine.ID+p, H{"X-Build-Token": other.Token}),
			http.StatusForbidden, "Invalid or expired build token", "other token "+p)
	}

	// Nothing else changed: each build is still held by its worker (mine is
	// building since its assignee's keyless snapshot), no result stored.
	for _, tc := range []struct{ id, worker, status string }{{mine.ID, w, "building"}, {other.ID, w2, "assigned"}} {
		st := s.get("/api/builds/"+tc.id+"/status", c.KeyH()).Object(t)
		require.Equal(t, tc.status, st["status"], "%v", st)
		require.Equal(t, tc.worker, st["worker_id"])
	}
	secRequireOnlyStoredFiles(t, c.Dir)
	require.NotContains(t, storageFiles(t, filepath.Join(c.Dir, "storage")), "results/"+mine.ID+".ipa")
	// The answers themselves never name a worker id to the unauthenticated.
	for _, a := range s.seen {
		if a.r.Status == http.StatusUnauthorized {
			require.NotContains(t, string(a.r.Body), w)
			var m map[string]any
			require.NoError(t, json.Unmarshal(a.r.Body, &m))
		}
	}
}
