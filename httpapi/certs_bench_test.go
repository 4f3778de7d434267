package httpapi_test

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/expo-free-agent/controller/actors/files"
	"github.com/expo-free-agent/controller/httpapi"
	"github.com/expo-free-agent/controller/store/domain"
)

// certsStore is fakeStore whose build has a certs bundle.
type certsStore struct{ *fakeStore }

func (s certsStore) GetBuild(ctx context.Context, id string) (domain.Build, error) {
	b, err := s.fakeStore.GetBuild(ctx, id)
	if err == nil {
		p := "certs/" + fuzzBuildID + ".zip"
		b.CertsPath = &p
	}
	return b, err
}

// certsEnv is a server with the default limits whose one build's stored
// certs bundle is the given zip.
func certsEnv(tb testing.TB, bundle []byte) http.Handler {
	tb.Helper()
	log := slog.New(slog.DiscardHandler)
	root := filepath.Join(tb.TempDir(), "storage")
	fs, err := files.New(root, fastFS{}, log)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "certs", fuzzBuildID+".zip"), bundle, 0o600); err != nil {
		tb.Fatal(err)
	}
	cfg := httpapi.Config{Addr: "127.0.0.1:0", APIKey: fuzzKey}
	return httpapi.New(cfg, &fakeQueue{}, certsStore{&fakeStore{}}, fs, log).Handler()
}

func certsRequest(query string) *http.Request {
	req := httptest.NewRequest(http.MethodGet, "http://controller/api/builds/"+fuzzBuildID+"/certs-secure"+query, nil)
	req.Header.Set("X-API-Key", fuzzKey)
	req.Header.Set("X-Worker-Id", fuzzWorkerID)
	req.Header.Set("X-Build-Id", fuzzBuildID)
	return req
}

// benchCertsZip is a bundle whose .p12 is p12Size random bytes (deflated,
// which random bytes do not shrink), with a password and one profile.
func benchCertsZip(tb testing.TB, p12Size int) []byte {
	tb.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	add := func(name string, r io.Reader) {
		w, err := zw.Create(name)
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := io.Copy(w, r); err != nil {
			tb.Fatal(err)
		}
	}
	add("password.txt", bytes.NewReader([]byte(" s3cret \"<&>\\ pässwörd\n")))
	add("dist/cert.p12", io.LimitReader(rand.Reader, int64(p12Size)))
	add("profiles/app.mobileprovision", bytes.NewReader(bytes.Repeat([]byte("<plist/>"), 2048)))
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	if buf.Len() > httpapi.DefaultMaxCertsSize {
		tb.Fatalf("the bundle (%d bytes) is over --max-certs-size", buf.Len())
	}
	return buf.Bytes()
}

// discardWriter is a ResponseWriter that keeps only a digest and a count of
// the body, so that the benchmark measures the handler and not a recorder.
type discardWriter struct {
	h      http.Header
	status int
	n      int64
	sum    hash.Hash
}

func newDiscardWriter() *discardWriter {
	return &discardWriter{h: http.Header{}, sum: sha256.New()}
}

func (w *discardWriter) Header() http.Header { return w.h }
func (w *discardWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

func (w *discardWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	w.n += int64(len(p))
	w.sum.Write(p)
	return len(p), nil
}

// heapPeak samples the bytes of live and unswept heap objects
// (/memory/classes/heap/objects:bytes, HeapAlloc of runtime.MemStats, which
// runtime/metrics reads without stopping the world) every 100µs until
// stopped. It returns the first sample and a stop function that returns the
// largest one.
func heapPeak() (base uint64, stop func() uint64) {
	var (
		peak atomic.Uint64
		done = make(chan struct{})
		wg   sync.WaitGroup
	)
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	read := func() {
		metrics.Read(s)
		if v := s[0].Value.Uint64(); v > peak.Load() {
			peak.Store(v)
		}
	}
	read()
	base = peak.Load()
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(100 * time.Microsecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				read()
			}
		}
	}()
	return base, func() uint64 {
		close(done)
		wg.Wait()
		read()
		return peak.Load()
	}
}

// BenchmarkCertsSecure serves GET /api/builds/:id/certs-secure through the
// real handler (httpapi.New, the real file store on a temporary directory,
// fakes for the queue and the database) for bundles whose .p12 is 1, 10 and
// just under 50 MiB of random bytes, one request at a time and four at once.
// Besides B/op it reports peak-heap-MiB: the largest growth of the heap's
// live and unswept objects during an operation over the heap after a forced
// GC before it (sampled every 100µs), the maximum over all operations.
//
//	go test -run '^$' -bench BenchmarkCertsSecure -benchtime 10x ./httpapi
func BenchmarkCertsSecure(b *testing.B) {
	for _, size := range []int{1 << 20, 10 << 20, 50<<20 - 64<<10} {
		bundle := benchCertsZip(b, size)
		h := certsEnv(b, bundle)
		want := base64.StdEncoding.EncodedLen(size)
		for _, parallel := range []int{1, 4} {
			b.Run(fmt.Sprintf("p12=%.2fMiB/x%d", float64(size)/(1<<20), parallel), func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(size * parallel))
				var peak uint64
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					runtime.GC()
					base, stop := heapPeak()
					b.StartTimer()
					var wg sync.WaitGroup
					ws := make([]*discardWriter, parallel)
					for j := range ws {
						ws[j] = newDiscardWriter()
						wg.Add(1)
						go func(w *discardWriter) {
							defer wg.Done()
							h.ServeHTTP(w, certsRequest(""))
						}(ws[j])
					}
					wg.Wait()
					b.StopTimer()
					if p := stop(); p > base && p-base > peak {
						peak = p - base
					}
					for _, w := range ws {
						if w.status != http.StatusOK || w.n < int64(want) {
							b.Fatalf("status %d, %d bytes", w.status, w.n)
						}
					}
					b.StartTimer()
				}
				b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
			})
		}
	}
}

// certsFiles is the file store with the stored certs opened through wrap.
type certsFiles struct {
	httpapi.Files
	wrap func(files.File) files.File
}

func (f certsFiles) Open(rel string) (files.File, int64, error) {
	fh, size, err := f.Files.Open(rel)
	if err == nil {
		fh = f.wrap(fh)
	}
	return fh, size, err
}

// readerOnly hides the ReadAt of a stored file.
type readerOnly struct{ files.File }

// failingReadAt is a stored file whose reads fail from the n-th on.
type failingReadAt struct {
	files.File
	n atomic.Int64
}

func (f *failingReadAt) ReadAt(p []byte, off int64) (int, error) {
	if f.n.Add(-1) < 0 {
		return 0, io.ErrUnexpectedEOF
	}
	return f.File.(io.ReaderAt).ReadAt(p, off)
}

// certsEnvWith is certsEnv with the stored file wrapped.
func certsEnvWith(tb testing.TB, bundle []byte, wrap func(files.File) files.File) http.Handler {
	tb.Helper()
	log := slog.New(slog.DiscardHandler)
	root := filepath.Join(tb.TempDir(), "storage")
	fs, err := files.New(root, fastFS{}, log)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "certs", fuzzBuildID+".zip"), bundle, 0o600); err != nil {
		tb.Fatal(err)
	}
	cfg := httpapi.Config{Addr: "127.0.0.1:0", APIKey: fuzzKey}
	return httpapi.New(cfg, &fakeQueue{}, certsStore{&fakeStore{}}, certsFiles{fs, wrap}, log).Handler()
}

// TestCertsSecureAnswer checks the answer through the real handler, reading
// the stored zip in place or (a File without ReadAt) from memory: a 200 whose
// body is exactly what Echo's c.JSON (json.Encoder) writes for the decoded
// answer, compact or with ?pretty, with the bundle's content and an exact
// Content-Length.
func TestCertsSecureAnswer(t *testing.T) {
	t.Parallel()
	bundle := benchCertsZip(t, 100<<10+1)
	for name, h := range map[string]http.Handler{
		"ReaderAt": certsEnv(t, bundle),
		"Reader":   certsEnvWith(t, bundle, func(f files.File) files.File { return readerOnly{f} }),
	} {
		for _, query := range []string{"", "?pretty"} {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, certsRequest(query))
			if rec.Code != http.StatusOK {
				t.Fatalf("%s%q: status %d: %s", name, query, rec.Code, rec.Body.Bytes())
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Fatalf("%s%q: Content-Type %q", name, query, ct)
			}
			var got struct {
				P12                  string   `json:"p12"`
				P12Password          string   `json:"p12Password"`
				KeychainPassword     string   `json:"keychainPassword"`
				ProvisioningProfiles []string `json:"provisioningProfiles"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			var want bytes.Buffer
			enc := json.NewEncoder(&want)
			if query != "" {
				enc.SetIndent("", "  ")
			}
			if err := enc.Encode(got); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(want.Bytes(), rec.Body.Bytes()) {
				t.Fatalf("%s%q: the answer is not what c.JSON writes", name, query)
			}
			if got.P12Password != "s3cret \"<&>\\ pässwörd" || len(got.ProvisioningProfiles) != 1 || len(got.P12) != 4*(100<<10/3+1) {
				t.Fatalf("%s%q: password %q, %d profiles", name, query, got.P12Password, len(got.ProvisioningProfiles))
			}
			if cl := rec.Header().Get("Content-Length"); cl != fmt.Sprint(rec.Body.Len()) {
				t.Fatalf("%s%q: Content-Length %s for %d bytes", name, query, cl, rec.Body.Len())
			}
		}
	}
}

// TestCertsSecureRefusals: a bad bundle, or a stored file that cannot be
// read while it is checked, is the 500 of §4.4 and nothing else.
func TestCertsSecureRefusals(t *testing.T) {
	t.Parallel()
	bad := benchCertsZip(t, 1000)
	bad = bytes.Replace(bad, []byte("dist/cert.p12"), []byte("../../cert.p12"), -1) // a zip slip, in both headers
	for name, h := range map[string]http.Handler{
		"BadBundle": certsEnv(t, bad),
		"NotAZip":   certsEnv(t, []byte("a bare .p12, not a zip")),
		"ReadError": certsEnvWith(t, benchCertsZip(t, 1000), func(f files.File) files.File {
			r := &failingReadAt{File: f}
			r.n.Store(3) // reads fail while the bundle is checked
			return r
		}),
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, certsRequest(""))
		if rec.Code != http.StatusInternalServerError || rec.Body.String() != `{"error":"Failed to process certs file"}`+"\n" {
			t.Fatalf("%s: %d %q", name, rec.Code, rec.Body.Bytes())
		}
	}
}

// TestCertsSecureCutShort: a read failing after the 200 was sent cuts the
// answer short of its Content-Length, and the client sees the connection
// end early rather than a whole answer.
func TestCertsSecureCutShort(t *testing.T) {
	t.Parallel()
	bundle := benchCertsZip(t, 1<<20)
	// Count the reads of a whole answer, then fail one of its last.
	var counted *failingReadAt
	h := certsEnvWith(t, bundle, func(f files.File) files.File {
		counted = &failingReadAt{File: f}
		counted.n.Store(1 << 30)
		return counted
	})
	h.ServeHTTP(newDiscardWriter(), certsRequest(""))
	reads := 1<<30 - counted.n.Load()

	srv := httptest.NewServer(certsEnvWith(t, bundle, func(f files.File) files.File {
		r := &failingReadAt{File: f}
		r.n.Store(reads - 3)
		return r
	}))
	defer srv.Close()
	req := certsRequest("")
	req.RequestURI = ""
	req.URL.Scheme, req.URL.Host = "http", srv.Listener.Addr().String()
	res, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d", res.StatusCode)
	}
	n, err := io.Copy(io.Discard, res.Body)
	if err == nil || n >= res.ContentLength {
		t.Fatalf("read %d of %d bytes, err %v: the cut was not seen", n, res.ContentLength, err)
	}
}
