package test

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/cmd/app"
)

// The orders in which an upload's parts are sent (POST /api/workers/upload
// takes them in any order).
const (
	uoFieldsFirst = "fields-first" // build_id, worker_id, success, result: the older clients
	uoFileFirst   = "file-first"   // result, build_id, worker_id, success
	uoSplit       = "split"        // build_id, result, worker_id, success
)

// uoFields are an upload's text parts; an empty one is left out.
type uoFields struct{ build, worker, success string }

// uoParts lays the parts out in order; a nil file sends no result part, an
// empty (non-nil) one a zero-byte result part.
func uoParts(order string, f uoFields, file []byte) []Part {
	field := func(name, v string) []Part {
		if v == "" {
			return nil
		}
		return []Part{{Name: name, Data: []byte(v)}}
	}
	var result []Part
	if file != nil {
		result = []Part{{Name: "result", Filename: "build.ipa", ContentType: "application/octet-stream", Data: file}}
	}
	b, w, s := field("build_id", f.build), field("worker_id", f.worker), field("success", f.success)
	switch order {
	case uoFieldsFirst:
		return slices.Concat(b, w, s, result)
	case uoFileFirst:
		return slices.Concat(result, b, w, s)
	case uoSplit:
		return slices.Concat(b, result, w, s)
	}
	panic("unknown order " + order)
}

// uoUpload posts an upload with the parts in order.
func uoUpload(c *Controller, h H, order string, f uoFields, file []byte) Response {
	c.t.Helper()
	return c.PostMultipart("/api/workers/upload", h, uoParts(order, f, file)...)
}

// uoResults lists the files under the storage root's results/ directory.
func uoResults(t testing.TB, c *Controller) []string {
	t.Helper()
	return uoResultsIn(t, c.Dir)
}

// uoOpenResultFiles lists the descriptors of this test process (the
// controller runs in it) open on a file inside the controller's results/
// directory: an unnamed temporary shows as "results/#<inode> (deleted)".
// A refused or finished upload keeps none.
func uoOpenResultFiles(t testing.TB, c *Controller) []string {
	t.Helper()
	dir, err := filepath.EvalSymlinks(filepath.Join(c.Dir, "storage", "results"))
	require.NoError(t, err)
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil // no /proc: only the directory listing is checked
	}
	var out []string
	for _, e := range ents {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err == nil && strings.HasPrefix(target, dir+"/") {
			out = append(out, target)
		}
	}
	return out
}

// uoNoResultFilesOpen waits (bounded) until no descriptor is open on a file
// in results/.
func uoNoResultFilesOpen(t testing.TB, c *Controller, what string) {
	t.Helper()
	var open []string
	eventually(t, 5*time.Second, func() bool {
		open = uoOpenResultFiles(t, c)
		return len(open) == 0
	}, fmt.Sprintf("%s: no file of results/ left open (still open: %v)", what, open))
}

// uoRandom returns n random bytes.
func uoRandom(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return b
}

// uoUUID is a random, well-formed UUID that names nothing.
func uoUUID(t testing.TB) string {
	b := uoRandom(t, 16)
	b[6], b[8] = b[6]&0x0f|0x40, b[8]&0x3f|0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// uoWorker is a worker with its generation's credentials.
type uoWorker struct {
	id, token string // token "" for an older worker
}

func (w uoWorker) h(c *Controller) H {
	if w.token != "" {
		return H{"X-Worker-Token": w.token}
	}
	return c.KeyH()
}

func uoRegister(c *Controller, name string, newer bool) uoWorker {
	c.t.Helper()
	if newer {
		id, tok := c.RegisterV2(name)
		return uoWorker{id: id, token: tok}
	}
	return uoWorker{id: c.Register(name)}
}

// uoTake submits a build and has w poll it.
func uoTake(t testing.TB, c *Controller, w uoWorker) string {
	t.Helper()
	b := c.Submit("ios", []byte("src"), nil)
	var job map[string]any
	if w.token != "" {
		job, _ = c.PollToken(w.token)["job"].(map[string]any)
	} else {
		job = c.Poll(w.id)
	}
	require.NotNil(t, job, "a job for %s", w.id)
	require.Equal(t, b.ID, job["id"])
	return b.ID
}

// uoRequireResult checks that build id is completed by worker with exactly
// data as its result, stored as results/<id>.ipa.
func uoRequireResult(t testing.TB, c *Controller, id, worker string, data []byte, what string) {
	t.Helper()
	st := c.Status(id)
	require.Equal(t, "completed", st["status"], what)
	require.Equal(t, worker, st["worker_id"], what)
	r := c.Get("/api/builds/"+id+"/download", c.KeyH())
	require.Equal(t, http.StatusOK, r.Status, "%s: download: %s", what, r.Body)
	require.Equal(t, len(data), len(r.Body), "%s: downloaded size", what)
	require.Equal(t, sha256.Sum256(data), sha256.Sum256(r.Body), "%s: downloaded SHA-256", what)
	fi, err := os.Stat(filepath.Join(c.Dir, "storage", "results", id+".ipa"))
	require.NoError(t, err, what)
	require.Equal(t, int64(len(data)), fi.Size(), "%s: stored size", what)
}

// uoRequireRefused sends a request that must be refused and checks its
// exact answer, that nothing was added under results/, and that no file in
// results/ is left open: a refused file is discarded before the answer is
// written (so this is checked at once, not eventually, which a leaked
// descriptor closed later by the garbage collector would pass). Before the
// request it waits until no earlier download still holds a result open.
func uoRequireRefused(t testing.TB, c *Controller, send func() Response, status int, msg, what string) {
	t.Helper()
	uoNoResultFilesOpen(t, c, what+": before")
	before := uoResults(t, c)
	r := send()
	require.Equal(t, status, r.Status, "%s: %s", what, r.Body)
	require.Equal(t, msg, r.Error(t), what)
	require.Equal(t, before, uoResults(t, c), "%s: nothing kept under results/", what)
	require.Empty(t, uoOpenResultFiles(t, c), "%s: the refused file is not held open", what)
}

// TestUploadPartOrder: a worker's upload completes its build with the exact
// bytes whether the text parts precede the result file (ownership checked as
// the file begins) or follow it (the file staged, checked when the body
// ends), with the older credentials (key + worker_id field) and with a worker
// token (no worker_id field, or a matching one). A file-less success of a
// build the worker completed stays 200 with no change. Every refusal has its
// exact answer in both orders, and a refused file is never kept.
func TestUploadPartOrder(t *testing.T) {
	t.Parallel()
	orders := []string{uoFieldsFirst, uoFileFirst}

	t.Run("Completes", func(t *testing.T) {
		t.Parallel()
		c := Start(t)
		for _, cr := range []struct {
			name        string
			newer       bool
			workerField bool
		}{
			{"key+worker_id", false, true},
			{"token", true, false},
			{"token+matching worker_id", true, true},
		} {
			for i, order := range orders {
				what := cr.name + ", " + order
				w := uoRegister(c, fmt.Sprintf("%s-%d", cr.name, i), cr.newer)
				id := uoTake(t, c, w)
				f := uoFields{build: id, success: "true"}
				if cr.workerField {
					f.worker = w.id
				}
				data := uoRandom(t, 300<<10+i*7+1) // several 64 KiB chunks, odd length
				before := uoResults(t, c)
				r := uoUpload(c, w.h(c), order, f, data)
				require.Equal(t, http.StatusOK, r.Status, "%s: %s", what, r.Body)
				require.Equal(t, map[string]any{"status": "success"}, r.Object(t), what)
				require.ElementsMatch(t, append(slices.Clone(before), "results/"+id+".ipa"), uoResults(t, c), what)
				uoRequireResult(t, c, id, w.id, data, what)
				uoNoResultFilesOpen(t, c, what)

				// The file-less success of the build it completed is 200 with
				// no change: no result part, or a zero-byte one in either place.
				st := c.Status(id)
				after := uoResults(t, c)
				for _, again := range []struct {
					order string
					file  []byte
				}{{uoFieldsFirst, nil}, {uoFieldsFirst, []byte{}}, {uoFileFirst, []byte{}}} {
					what := fmt.Sprintf("%s, file-less %s (part=%v)", what, again.order, again.file != nil)
					r := uoUpload(c, w.h(c), again.order, f, again.file)
					require.Equal(t, http.StatusOK, r.Status, "%s: %s", what, r.Body)
					require.Equal(t, map[string]any{"status": "success"}, r.Object(t), what)
					require.Equal(t, st, c.Status(id), "%s: no change", what)
					require.Equal(t, after, uoResults(t, c), what)
					uoRequireResult(t, c, id, w.id, data, what)
				}
				require.Equal(t, 1.0, c.WorkerStats(w.id)["successfulBuilds"], what)
			}
		}
	})

	t.Run("Refused", func(t *testing.T) {
		t.Parallel()
		uoRefusals(t, orders)
	})

	t.Run("TooLarge", func(t *testing.T) {
		t.Parallel()
		const limit = 64 << 10
		c := Start(t, WithConfig(func(cfg *app.Config) { cfg.MaxResultSize = limit }))
		older, newer := uoRegister(c, "older", false), uoRegister(c, "newer", true)
		for _, w := range []uoWorker{older, newer} {
			id := uoTake(t, c, w)
			f := uoFields{build: id, success: "true"}
			if w.token == "" {
				f.worker = w.id
			}
			for _, order := range orders {
				for _, n := range []int{limit + 1, 4 * limit} {
					what := fmt.Sprintf("worker %s (token=%v), %s, %d bytes", w.id, w.token != "", order, n)
					data := uoRandom(t, n)
					uoRequireRefused(t, c, func() Response { return uoUpload(c, w.h(c), order, f, data) },
						http.StatusRequestEntityTooLarge, "Result file too large", what)
					st := c.Status(id)
					require.Equal(t, "assigned", st["status"], what)
					require.Equal(t, w.id, st["worker_id"], what)
				}
			}
			// Exactly the limit is accepted (the older worker's fields first,
			// the newer one's file first).
			data := uoRandom(t, limit)
			order := uoFieldsFirst
			if w.token != "" {
				order = uoFileFirst
			}
			r := uoUpload(c, w.h(c), order, f, data)
			require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
			uoRequireResult(t, c, id, w.id, data, "at the limit, "+order)
		}
	})
}

// uoRefusals runs every refusal of an upload, in each of orders, on a fresh
// controller: the exact answer, nothing kept, the builds unchanged.
func uoRefusals(t *testing.T, orders []string) {
	c := Start(t)
	a, b := uoRegister(c, "older-a", false), uoRegister(c, "older-b", false)
	tw, uw := uoRegister(c, "newer-t", true), uoRegister(c, "newer-u", true)

	// D and E: completed by A (key) and T (token); X and Y: assigned to A
	// and T; P: pending.
	dData, eData := uoRandom(t, 100<<10), uoRandom(t, 100<<10+3)
	d := uoTake(t, c, a)
	require.Equal(t, http.StatusOK, uoUpload(c, a.h(c), uoFieldsFirst, uoFields{d, a.id, "true"}, dData).Status)
	e := uoTake(t, c, tw)
	require.Equal(t, http.StatusOK, uoUpload(c, tw.h(c), uoFieldsFirst, uoFields{e, "", "true"}, eData).Status)
	x := uoTake(t, c, a)
	y := uoTake(t, c, tw)
	p := c.Submit("ios", []byte("src"), nil).ID

	const (
		required   = "build_id and worker_id required"
		noBuild    = "Build not found"
		noWorker   = "Worker not found"
		notMine    = "Build not assigned to this worker"
		finished   = "Build already finished"
		noMatching = "Worker token does not match worker_id"
	)
	key, tokT, tokU := c.KeyH(), tw.h(c), uw.h(c)
	cases := []struct {
		name   string
		h      H
		f      uoFields
		status int
		msg    string
	}{
		{"key, no worker_id", key, uoFields{x, "", "true"}, 400, required},
		{"key, no build_id", key, uoFields{"", a.id, "true"}, 400, required},
		{"key, neither", key, uoFields{"", "", "true"}, 400, required},
		{"token, no build_id", tokT, uoFields{"", "", "true"}, 400, required},
		{"token+worker_id, no build_id", tokT, uoFields{"", tw.id, "true"}, 400, required},

		{"key, unknown build", key, uoFields{uoUUID(t), a.id, "true"}, 404, noBuild},
		{"key, malformed build", key, uoFields{"not-a-build", a.id, "true"}, 404, noBuild},
		{"token, unknown build", tokT, uoFields{uoUUID(t), "", "true"}, 404, noBuild},

		{"key, unknown worker", key, uoFields{x, uoUUID(t), "true"}, 404, noWorker},
		{"key, malformed worker", key, uoFields{x, "not-a-worker", "true"}, 404, noWorker},

		{"key, another worker's build", key, uoFields{x, b.id, "true"}, 403, notMine},
		{"key, a token worker's build", key, uoFields{y, a.id, "true"}, 403, notMine},
		{"key, a pending build", key, uoFields{p, b.id, "true"}, 403, notMine},
		{"key, a build another completed", key, uoFields{e, a.id, "true"}, 403, notMine},
		{"token, another worker's build", tokU, uoFields{y, "", "true"}, 403, notMine},
		{"token, a key worker's build", tokU, uoFields{x, "", "true"}, 403, notMine},
		{"token+worker_id, another worker's build", tokU, uoFields{x, uw.id, "true"}, 403, notMine},

		{"key, completed, success", key, uoFields{d, a.id, "true"}, 409, finished},
		{"key, completed, failure", key, uoFields{d, a.id, "false"}, 409, finished},
		{"token, completed, success", tokT, uoFields{e, "", "true"}, 409, finished},
		{"token+worker_id, completed", tokT, uoFields{e, tw.id, "true"}, 409, finished},

		{"token, worker_id of another token worker", tokT, uoFields{y, uw.id, "true"}, 403, noMatching},
		{"token, worker_id of the build's key worker", tokT, uoFields{x, a.id, "true"}, 403, noMatching},
		{"token, unknown worker_id", tokT, uoFields{y, uoUUID(t), "true"}, 403, noMatching},
		{"token, worker_id of another worker, completed", tokT, uoFields{e, uw.id, "true"}, 403, noMatching},
	}
	file := uoRandom(t, 200<<10)
	for _, order := range orders {
		for _, tc := range cases {
			what := tc.name + ", " + order
			uoRequireRefused(t, c, func() Response { return uoUpload(c, tc.h, order, tc.f, file) }, tc.status, tc.msg, what)
		}
		// Nothing changed.
		for id, w := range map[string]uoWorker{x: a, y: tw} {
			st := c.Status(id)
			require.Equal(t, "assigned", st["status"], order)
			require.Equal(t, w.id, st["worker_id"], order)
		}
		require.Equal(t, "pending", c.Status(p)["status"], order)
		uoRequireResult(t, c, d, a.id, dData, "D after "+order+" refusals")
		uoRequireResult(t, c, e, tw.id, eData, "E after "+order+" refusals")
	}
	// The assignees still complete their builds.
	xData, yData := uoRandom(t, 70<<10), uoRandom(t, 70<<10+1)
	require.Equal(t, http.StatusOK, uoUpload(c, a.h(c), orders[len(orders)-1], uoFields{x, a.id, "true"}, xData).Status)
	require.Equal(t, http.StatusOK, uoUpload(c, tw.h(c), orders[len(orders)-1], uoFields{y, "", "true"}, yData).Status)
	uoRequireResult(t, c, x, a.id, xData, "X")
	uoRequireResult(t, c, y, tw.id, yData, "Y")
	require.ElementsMatch(t, []string{"results/" + d + ".ipa", "results/" + e + ".ipa", "results/" + x + ".ipa",
		"results/" + y + ".ipa"}, uoResults(t, c))
}

// TestUploadSplitOrder: parts in any order means also build_id before the
// file and worker_id after it. Every refusal of TestUploadPartOrder holds
// then too — in particular a worker token with a worker_id that names
// another worker is refused even though the file began before worker_id
// arrived.
func TestUploadSplitOrder(t *testing.T) {
	t.Parallel()
	uoRefusals(t, []string{uoSplit})
}

// uoFileFirstStream posts a size-byte result as the FIRST part, streamed from
// a ChaCha8 generator (never held in memory), followed by build_id, worker_id
// and success. half is closed once half the file is sent. It returns the
// status and the SHA-256 of what was sent.
func uoFileFirstStream(base, buildID, workerID string, size int64, seed uint64, half chan<- struct{}) (int, [32]byte, error) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	sum := make(chan [32]byte, 1)
	go func() {
		h := sha256.New()
		defer func() {
			var s [32]byte
			copy(s[:], h.Sum(nil))
			sum <- s
		}()
		fw, err := mw.CreateFormFile("result", "build.ipa")
		if err != nil {
			pw.CloseWithError(err)
			return
		}
		gen := mrand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 'u', 'o'})
		buf := make([]byte, 256<<10)
		var sent int64
		for sent < size {
			n := min(int64(len(buf)), size-sent)
			gen.Read(buf[:n])
			h.Write(buf[:n])
			if _, err := fw.Write(buf[:n]); err != nil {
				pw.CloseWithError(err)
				return
			}
			if sent < size/2 && sent+n >= size/2 && half != nil {
				close(half)
			}
			sent += n
		}
		for _, kv := range [][2]string{{"build_id", buildID}, {"worker_id", workerID}, {"success", "true"}} {
			if err := mw.WriteField(kv[0], kv[1]); err != nil {
				pw.CloseWithError(err)
				return
			}
		}
		pw.CloseWithError(mw.Close())
	}()
	req, err := http.NewRequest(http.MethodPost, base+"/api/workers/upload", pr)
	if err != nil {
		return 0, [32]byte{}, err
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("X-API-Key", testKey)
	hc := &http.Client{}
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	pr.Close()
	s := <-sum
	if err != nil {
		return 0, s, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, s, nil
}

// TestFileFirstUploadMemory: a 1 GiB result sent before the text parts (so
// it streams to an unnamed temporary and is checked when the body ends)
// completes the build with the exact bytes, and the controller binary's peak
// resident set grows by less than 64 MiB during the upload.
func TestFileFirstUploadMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a controller binary and uploads 1 GiB")
	}
	t.Parallel()
	if _, err := os.Stat("/proc/self/clear_refs"); err != nil {
		t.Skip("needs Linux /proc to reset the peak RSS")
	}
	const size = 1 << 30 // the default --max-result-size, exactly
	dir := t.TempDir()
	p := StartProcess(t, dir)
	c := p.Client(t)
	defer c.Stop()
	w := c.Register("big-uploader")
	b := c.Submit("ios", []byte("src"), nil)
	require.Equal(t, b.ID, c.Poll(w)["id"])

	pid := p.cmd.Process.Pid
	require.NoError(t, os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)) // reset the peak
	base := peakRSS(t, pid)
	type result struct {
		code int
		sum  [32]byte
		err  error
	}
	done := make(chan result, 1)
	half := make(chan struct{})
	began := time.Now()
	go func() {
		code, sum, err := uoFileFirstStream(p.URL, b.ID, w, size, 42, half)
		done <- result{code, sum, err}
	}()
	var res result
	select {
	case <-half:
		// Halfway through, the build is not completed and its result has no
		// name yet.
		require.NotContains(t, uoResultsIn(t, dir), "results/"+b.ID+".ipa")
		require.Equal(t, "assigned", c.Status(b.ID)["status"])
		res = <-done
	case res = <-done:
	}
	elapsed := time.Since(began)
	growth := peakRSS(t, pid) - base
	require.NoError(t, res.err)
	require.Equal(t, http.StatusOK, res.code, "upload: %s", p.Log())
	t.Logf("1 GiB file-first upload in %s (%.0f MiB/s); peak RSS %d MiB before, growth %d KiB",
		elapsed.Round(time.Millisecond), float64(size>>20)/elapsed.Seconds(), base>>20, growth>>10)
	require.Less(t, growth, int64(64<<20), "peak RSS growth during a 1 GiB file-first upload")

	st := c.Status(b.ID)
	require.Equal(t, "completed", st["status"])
	require.Equal(t, w, st["worker_id"])
	require.Equal(t, []string{"results/" + b.ID + ".ipa"}, uoResultsIn(t, dir))
	fi, err := os.Stat(filepath.Join(dir, "storage", "results", b.ID+".ipa"))
	require.NoError(t, err)
	require.Equal(t, int64(size), fi.Size(), "stored size")

	// The stored result, as downloaded, is byte for byte what was sent.
	req, err := http.NewRequest(http.MethodGet, p.URL+"/api/builds/"+b.ID+"/download", nil)
	require.NoError(t, err)
	req.Header.Set("X-API-Key", testKey)
	resp, err := c.Client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	h := sha256.New()
	n, err := io.CopyBuffer(h, resp.Body, make([]byte, 256<<10))
	require.NoError(t, err)
	require.Equal(t, int64(size), n, "downloaded size")
	require.Equal(t, res.sum[:], h.Sum(nil), "downloaded SHA-256")
}

// uoResultsIn lists results/ of the storage root of a controller on dir.
func uoResultsIn(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	for _, f := range storageFiles(t, filepath.Join(dir, "storage")) {
		if strings.HasPrefix(f, "results/") {
			out = append(out, f)
		}
	}
	return out
}
