package test

import (
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/internal/testkit"
)

// mockResult regenerates what cmd/mock-worker uploads for a build (see its
// resultReader): ChaCha8 seeded with SHA-256 of a fixed prefix and the id.
func mockResult(buildID string, size int64) []byte {
	seed := sha256.Sum256([]byte("expo-free-agent mock result " + buildID))
	b, _ := io.ReadAll(io.LimitReader(rand.NewChaCha8(seed), size))
	return b
}

// TestEndToEndWithMockWorker starts the real controller binary and the real
// mock-worker binary, submits a build with certs over HTTP, and follows it:
// assigned, logs arrive, completed, the downloaded bytes are the uploaded
// result, and the worker's stats count it once.
func TestEndToEndWithMockWorker(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("end-to-end test skipped in -short mode")
	}
	dir := t.TempDir()
	p := StartProcess(t, dir)
	cl := p.Client(t)
	defer cl.Stop()
	b := cl.Submit("ios", []byte("PK\x03\x04 e2e source"), DefaultCerts(t))

	out := &testkit.LockedBuffer{}
	cmd := exec.Command(buildBinary(t, "mock-worker"), "--url", p.URL, "--api-key", testKey,
		"--name", "e2e-mock", "--platforms", "ios", "--poll-interval", "100ms", "--heartbeat-interval", "100ms",
		"--build-time", "800ms", "--result-size", "300KiB", "--log-batch", "3", "--once",
		"--state-file", filepath.Join(dir, "mock-worker.json"))
	cmd.Stdout, cmd.Stderr = out, out
	worker := startBackground(t, cmd)

	// Assigned to the mock worker, and its log lines arrive while it builds.
	eventually(t, 30*time.Second, func() bool {
		st := cl.Status(b.ID)
		return st["status"] == "building" && st["worker_id"] != nil
	}, "the build is assigned and building")
	eventually(t, 30*time.Second, func() bool {
		n := 0
		for _, m := range cl.LogMessages(b.ID) {
			if !strings.HasPrefix(m, "Build ") && !strings.HasPrefix(m, "Assigned") {
				n++
			}
		}
		return n >= 3
	}, "worker log lines arrive")

	select {
	case <-worker.Done:
		require.NoError(t, worker.Err(), "mock worker output:\n%s", out.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("mock worker did not finish:\n%s", out.String())
	}
	st := cl.Status(b.ID)
	require.Equal(t, "completed", st["status"], "mock worker output:\n%s", out.String())
	workerID := st["worker_id"].(string)
	msgs := cl.LogMessages(b.ID)
	require.Equal(t, "Build submitted", msgs[0])
	require.Equal(t, "Assigned to worker e2e-mock", msgs[1])
	require.Contains(t, msgs, "[VM] Monitor started")
	require.Equal(t, "Build completed successfully", msgs[len(msgs)-1])

	dl := cl.Get("/api/builds/"+b.ID+"/download", H{"X-Build-Token": b.Token})
	require.Equal(t, http.StatusOK, dl.Status)
	require.Equal(t, `attachment; filename="`+b.ID+`.ipa"`, dl.Header.Get("Content-Disposition"))
	require.Equal(t, mockResult(b.ID, 300<<10), dl.Body, "downloaded bytes equal the uploaded result")

	ws := cl.WorkerStats(workerID)
	require.Equal(t, 1.0, ws["totalBuilds"])
	require.Equal(t, 1.0, ws["successfulBuilds"])
	require.Equal(t, "e2e-mock", ws["workerName"])
	require.Equal(t, "offline", ws["status"], "the mock worker unregisters when it exits")
	stats := cl.Get("/api/stats", nil).Object(t)
	require.Greater(t, stats["totalCpuCycles"], 0.0, "keyless cpu snapshots were stored")
}

// TestEndToEndWithMockWorkerV2 is the same with the mock worker speaking the
// newer generation (--protocol v2): worker token, one-time password traded
// for a VM token, vm-ready, vm-status and host-token heartbeats, the
// artifact from the VM side and the host's file-less success. It runs an iOS
// build (certs-secure with the VM token) and an Android build.
func TestEndToEndWithMockWorkerV2(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("end-to-end test skipped in -short mode")
	}
	dir := t.TempDir()
	p := StartProcess(t, dir)
	cl := p.Client(t)
	defer cl.Stop()
	ios := cl.Submit("ios", []byte("PK\x03\x04 e2e v2 source"), DefaultCerts(t))
	android := cl.Submit("android", []byte("PK\x03\x04 e2e v2 android"), nil)

	out := &testkit.LockedBuffer{}
	cmd := exec.Command(buildBinary(t, "mock-worker"), "--protocol", "v2", "--url", p.URL, "--api-key", testKey,
		"--name", "e2e-mock-v2", "--platforms", "ios,android", "--poll-interval", "100ms",
		"--heartbeat-interval", "100ms", "--vm-status-interval", "100ms", "--build-time", "500ms",
		"--result-size", "200KiB", "--log-batch", "3", "--max-builds", "2", "--verbose",
		"--state-file", filepath.Join(dir, "mock-worker-v2.json"))
	cmd.Stdout, cmd.Stderr = out, out
	worker := startBackground(t, cmd)
	select {
	case <-worker.Done:
		require.NoError(t, worker.Err(), "mock worker output:\n%s", out.String())
	case <-time.After(90 * time.Second):
		t.Fatalf("mock worker did not finish:\n%s", out.String())
	}
	var workerID string
	for _, b := range []struct {
		Submitted
		ext string
	}{{ios, ".ipa"}, {android, ".apk"}} {
		st := cl.Status(b.ID)
		require.Equal(t, "completed", st["status"], "mock worker output:\n%s", out.String())
		workerID = st["worker_id"].(string)
		msgs := cl.LogMessages(b.ID)
		for _, want := range []string{"VM authenticated", "VM ready", "Build completed successfully"} {
			require.Contains(t, msgs, want)
		}
		dl := cl.Get("/api/builds/"+b.ID+"/download", H{"X-Build-Token": b.Token})
		require.Equal(t, http.StatusOK, dl.Status)
		require.Equal(t, `attachment; filename="`+b.ID+b.ext+`"`, dl.Header.Get("Content-Disposition"))
		require.Equal(t, mockResult(b.ID, 200<<10), dl.Body, "downloaded bytes equal the VM's artifact")
	}
	ws := cl.WorkerStats(workerID)
	require.Equal(t, 2.0, ws["totalBuilds"], "each build counted once")
	require.Equal(t, 2.0, ws["successfulBuilds"])
	require.Equal(t, "offline", ws["status"], "the mock worker unregisters when it exits")
	require.NotContains(t, out.String(), ios.Token)
}
