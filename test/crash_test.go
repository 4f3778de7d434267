package test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/expo-free-agent/controller/internal/testkit"

	"github.com/stretchr/testify/require"
)

// crashCycles is the number of kill -9 cycles: CI default n, CRASH_CYCLES=<n>
// for hundreds.
func crashCycles(t *testing.T, def int) int {
	if v := os.Getenv("CRASH_CYCLES"); v != "" {
		n, err := strconv.Atoi(v)
		require.NoError(t, err)
		return n
	}
	return def
}

type acked struct {
	id, token string
	sum       [32]byte
}

// TestCrashKeepsEveryAnsweredSubmit runs the controller binary, submits
// builds from several concurrent clients, kills the process with SIGKILL at
// a random moment, restarts it on the same directory and checks that every
// build whose submit was answered 200 exists with a byte-identical source,
// that the queue serves every one of them, and that no temporary file is left.
func TestCrashKeepsEveryAnsweredSubmit(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	dir := t.TempDir()
	var all []acked
	cycles := crashCycles(t, 20)
	for cycle := 0; cycle < cycles; cycle++ {
		p := StartProcess(t, dir)
		cl := p.Client(t)
		// Everything answered before the last kill is here.
		verifyAcked(t, cl, all, cycle == 0)
		requireNoTemps(t, dir)
		requireNoOrphans(t, cl, dir)

		ctx, stop := context.WithCancel(context.Background())
		var (
			mu   sync.Mutex
			news []acked
			wg   sync.WaitGroup
		)
		target := 1 + rng.IntN(12)
		reached := make(chan struct{})
		var once sync.Once
		for i := 0; i < 4; i++ {
			wg.Add(1)
			go func(seed uint64) {
				defer wg.Done()
				r := rand.New(rand.NewPCG(seed, 2))
				hc := &http.Client{Timeout: 30 * time.Second}
				defer hc.CloseIdleConnections()
				for ctx.Err() == nil {
					src := make([]byte, 1+r.IntN(256<<10))
					for j := range src {
						src[j] = byte(r.Uint32())
					}
					a, ok := rawSubmit(hc, p.URL, src)
					if !ok {
						continue
					}
					mu.Lock()
					news = append(news, a)
					if len(news) >= target {
						once.Do(func() { close(reached) })
					}
					mu.Unlock()
				}
			}(rng.Uint64())
		}
		select {
		case <-reached:
		case <-time.After(60 * time.Second):
			t.Fatalf("cycle %d: no progress: %s", cycle, p.Log())
		}
		p.Kill() // SIGKILL while the clients are still submitting
		stop()
		wg.Wait()
		cl.Stop()
		all = append(all, news...)
	}
	// The last restart: every build is there, and the queue serves each once.
	p := StartProcess(t, dir)
	cl := p.Client(t)
	defer cl.Stop()
	verifyAcked(t, cl, all, true)
	requireNoTemps(t, dir)
	requireNoOrphans(t, cl, dir)
	want := map[string]bool{}
	for _, a := range all {
		want[a.id] = true
	}
	w := cl.Register("crash-checker")
	served := map[string]bool{}
	for {
		job := cl.Poll(w)
		if job == nil {
			break
		}
		id := job["id"].(string)
		require.False(t, served[id], "served twice: %s", id)
		served[id] = true
		require.Equal(t, http.StatusOK, cl.Upload(id, w, true, []byte("r"), "").Status)
	}
	for id := range want {
		require.True(t, served[id], "acknowledged build %s never served", id)
	}
	t.Logf("%d cycles, %d acknowledged builds, %d served", cycles, len(all), len(served))
}

func rawSubmit(hc *http.Client, base string, src []byte) (acked, bool) {
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fw, _ := mw.CreateFormFile("source", "s.zip")
	fw.Write(src)
	mw.WriteField("platform", "ios")
	mw.Close()
	req, _ := http.NewRequest(http.MethodPost, base+"/api/builds/submit", &body)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("X-API-Key", testKey)
	resp, err := hc.Do(req)
	if err != nil {
		return acked{}, false
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return acked{}, false
	}
	var m struct {
		ID          string `json:"id"`
		AccessToken string `json:"access_token"`
	}
	if json.Unmarshal(b, &m) != nil {
		return acked{}, false
	}
	return acked{id: m.ID, token: m.AccessToken, sum: sha256.Sum256(src)}, true
}

// verifyAcked checks that each build exists, is reachable with its token and
// has its source byte for byte; with full=false only a sample is downloaded.
func verifyAcked(t *testing.T, cl *Controller, all []acked, full bool) {
	t.Helper()
	list := cl.Get("/api/builds", cl.KeyH())
	require.Equal(t, http.StatusOK, list.Status)
	have := map[string]bool{}
	for _, it := range list.JSON(t).([]any) {
		have[it.(map[string]any)["id"].(string)] = true
	}
	for i, a := range all {
		require.True(t, have[a.id], "acknowledged build %s lost", a.id)
		if !full && i%5 != 0 && i < len(all)-20 {
			continue
		}
		r := cl.Get("/api/builds/"+a.id+"/download/source", H{"X-Build-Token": a.token})
		require.Equal(t, http.StatusOK, r.Status, "build %s", a.id)
		require.Equal(t, a.sum, sha256.Sum256(r.Body), "build %s source differs", a.id)
	}
}

// requireNoTemps waits (bounded) until the start-up clean-up removed every
// temporary file of the killed process.
func requireNoTemps(t *testing.T, dir string) {
	t.Helper()
	eventually(t, 10*time.Second, func() bool {
		for _, f := range storageFiles(t, filepath.Join(dir, "storage")) {
			if strings.Contains(f, "/.tmp-") {
				return false
			}
		}
		return true
	}, "temporary files of the killed process removed")
}

// requireNoOrphans waits (bounded) until the start-up pass removed every
// source a killed process named but never committed a build for: then the
// storage root holds exactly the sources of the builds the controller lists.
func requireNoOrphans(t *testing.T, cl *Controller, dir string) {
	t.Helper()
	if testkit.Postgres() {
		// Nodes may share the storage root: a file no build refers to is
		// removed only once older than files.SharedOrphanAge (another node
		// may be about to commit its row). Tested in actors/retention.
		return
	}
	want := map[string]bool{}
	for _, it := range cl.Get("/api/builds", cl.KeyH()).JSON(t).([]any) {
		want["builds/"+it.(map[string]any)["id"].(string)+".zip"] = true
	}
	var extra []string
	eventually(t, 10*time.Second, func() bool {
		extra = extra[:0]
		for _, f := range storageFiles(t, filepath.Join(dir, "storage")) {
			if strings.HasPrefix(f, "builds/") && !want[f] {
				extra = append(extra, f)
			}
		}
		return len(extra) == 0
	}, "files of the killed process that no build refers to removed")
}

// TestCrashDuringLargeUpload kills the controller while a worker uploads a
// large result: after any kill the build is never completed without its
// complete artifact, and the worker can upload again.
func TestCrashDuringLargeUpload(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	const size = 32 << 20
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 3))
	dir := t.TempDir()
	p := StartProcess(t, dir)
	cl := p.Client(t)
	b := cl.Submit("ios", []byte("src"), nil)
	w := cl.Register("uploader")
	require.Equal(t, b.ID, cl.Poll(w)["id"])
	cl.Stop()
	cycles := crashCycles(t, 8)
	for cycle := 0; cycle < cycles; cycle++ {
		killAt := int64(rng.IntN(size + 1))
		var sent atomic.Int64
		hit := make(chan struct{})
		var once sync.Once
		done := make(chan struct{})
		go func() {
			defer close(done)
			streamUpload(p.URL, b.ID, w, size, uint64(cycle), func(n int64) {
				if sent.Add(n) >= killAt {
					once.Do(func() { close(hit) })
				}
			})
		}()
		select {
		case <-hit:
		case <-done:
		}
		p.Kill()
		<-done
		p = StartProcess(t, dir)
		cl = p.Client(t)
		st := cl.Status(b.ID)
		if st["status"] == "completed" {
			// Only if the whole upload was committed before the kill.
			r := cl.Get("/api/builds/"+b.ID+"/download", cl.KeyH())
			require.Equal(t, http.StatusOK, r.Status)
			require.Len(t, r.Body, size)
			require.Equal(t, hex.EncodeToString(sumOf(size, uint64(cycle))), fmt.Sprintf("%x", sha256.Sum256(r.Body)))
			cl.Stop()
			break
		}
		require.Contains(t, []any{"assigned", "building"}, st["status"], "cycle %d", cycle)
		dl := cl.Get("/api/builds/"+b.ID+"/download", cl.KeyH())
		require.Equal(t, http.StatusBadRequest, dl.Status)
		requireNoTemps(t, dir)
		cl.Stop()
	}
	// The worker uploads again, completely.
	cl = p.Client(t)
	defer cl.Stop()
	if cl.Status(b.ID)["status"] != "completed" {
		code := streamUpload(p.URL, b.ID, w, size, 999, nil)
		require.Equal(t, http.StatusOK, code)
		r := cl.Get("/api/builds/"+b.ID+"/download", cl.KeyH())
		require.Equal(t, hex.EncodeToString(sumOf(size, 999)), fmt.Sprintf("%x", sha256.Sum256(r.Body)))
	}
	require.Equal(t, 1.0, cl.WorkerStats(w)["successfulBuilds"])
}

// genReader yields n deterministic pseudo-random bytes for a seed.
type genReader struct {
	rng  *rand.PCG
	left int64
}

func newGen(n int64, seed uint64) *genReader { return &genReader{rng: rand.NewPCG(seed, 7), left: n} }

func (g *genReader) Read(p []byte) (int, error) {
	if g.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > g.left {
		p = p[:g.left]
	}
	for i := 0; i < len(p); i += 8 {
		v := g.rng.Uint64()
		for j := 0; j < 8 && i+j < len(p); j++ {
			p[i+j] = byte(v >> (8 * j))
		}
	}
	g.left -= int64(len(p))
	return len(p), nil
}

func sumOf(n int64, seed uint64) []byte {
	h := sha256.New()
	io.CopyBuffer(h, newGen(n, seed), make([]byte, 64<<10))
	return h.Sum(nil)
}

// streamUpload posts a size-byte result streamed from the generator; progress
// is told how many bytes went out. It returns the status, or 0 on a
// transport error.
func streamUpload(base, buildID, workerID string, size int64, seed uint64, progress func(int64)) int {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		mw.WriteField("build_id", buildID)
		mw.WriteField("worker_id", workerID)
		mw.WriteField("success", "true")
		fw, err := mw.CreateFormFile("result", "build.ipa")
		if err != nil {
			pw.CloseWithError(err)
			return
		}
		buf := make([]byte, 256<<10)
		g := newGen(size, seed)
		for {
			n, rerr := g.Read(buf)
			if n > 0 {
				if _, err := fw.Write(buf[:n]); err != nil {
					pw.CloseWithError(err)
					return
				}
				if progress != nil {
					progress(int64(n))
				}
			}
			if rerr != nil {
				break
			}
		}
		pw.CloseWithError(mw.Close())
	}()
	req, _ := http.NewRequest(http.MethodPost, base+"/api/workers/upload", pr)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("X-API-Key", testKey)
	hc := &http.Client{}
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	pr.Close()
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}
