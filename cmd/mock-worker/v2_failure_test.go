package main

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/internal/testkit"
)

// runV2Failure runs one build that fails and returns the requests, the
// single upload's parts and the console output. With a build time of an
// hour, the run ending at all shows that the host stopped its VM.
func runV2Failure(t *testing.T, fc *fakeV2, cfg Config) ([]request, []formPart, string) {
	t.Helper()
	srv := fc.start()
	cfg.URL = srv.URL
	var out testkit.LockedBuffer
	require.NoError(t, runWorker(t, context.Background(), cfg, &out))
	reqs := fc.requests()
	require.Empty(t, byPath(reqs, "POST", v2Build+"/artifact"), "a failed build uploads no artifact")
	ups := byPath(reqs, "POST", "/api/workers/upload")
	require.Len(t, ups, 1)
	require.Equal(t, map[string]string{"X-API-Key": testKey}, credentials(ups[0]))
	require.Len(t, ups[0].Parts, 4)
	require.Equal(t, []formPart{{Name: "build_id", Value: testBuildID}, {Name: "worker_id", Value: testWorkerID},
		{Name: "success", Value: "false"}}, ups[0].Parts[:3])
	require.Equal(t, "error_message", ups[0].Parts[3].Name)
	require.Len(t, byPath(reqs, "POST", "/api/workers/unregister"), 1)
	requireNoSecrets(t, out.String())
	return reqs, ups[0].Parts, out.String()
}

func TestV2FailRateReportsFailure(t *testing.T) {
	t.Parallel()
	cfg := v2Config(t, "")
	cfg.FailRate = 1
	reqs, parts, out := runV2Failure(t, newFakeV2(t, "android"), cfg)
	_, msg := buildScript("android", 0, false, false, 0)
	require.Equal(t, msg, parts[3].Value)
	batches := byPath(reqs, "POST", v2Build+"/logs")
	require.NotEmpty(t, batches)
	logs := batches[len(batches)-1].JSON["logs"].([]any)
	require.Equal(t, "error", logs[len(logs)-1].(map[string]any)["level"])
	require.NotEmpty(t, byPath(reqs, "POST", v2Build+"/heartbeat"))
	require.Contains(t, out, "reported failure")
}

func TestV2VMStatusNotFoundFailsBuild(t *testing.T) {
	t.Parallel()
	fc := newFakeV2(t, "android")
	fc.vmStatusStatus = http.StatusNotFound
	cfg := v2Config(t, "")
	cfg.BuildTime = time.Hour // only the abort can end this build
	reqs, parts, out := runV2Failure(t, fc, cfg)
	require.Len(t, byPath(reqs, "GET", v2Build+"/vm-status"), 1, "a 404 is not asked again")
	require.Empty(t, byPath(reqs, "POST", v2Build+"/heartbeat"))
	require.Equal(t, "VM status check failed (404 Build not found)", parts[3].Value)
	require.Contains(t, out, "build 9f1c2a4b… aborted")
}

func TestV2HeartbeatRefusedAbortsBuild(t *testing.T) {
	t.Parallel()
	fc := newFakeV2(t, "ios")
	fc.heartbeatStatus = http.StatusForbidden
	cfg := v2Config(t, "")
	cfg.BuildTime = time.Hour // only the abort can end this build
	reqs, parts, _ := runV2Failure(t, fc, cfg)
	require.Len(t, byPath(reqs, "POST", v2Build+"/heartbeat"), 1, "the first refusal aborts")
	require.Equal(t, "heartbeat failed (403 Build not assigned to this worker)", parts[3].Value)
}

func TestV2CertsRefusedFailsBeforeReady(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		set  func(*fakeV2)
		msg  string
	}{
		{"NotFound", func(f *fakeV2) { f.certsStatus = http.StatusNotFound }, "no signing certificates provided for iOS build"},
		{"NoProfiles", func(f *fakeV2) { f.noProfiles = true }, "no provisioning profiles provided for iOS build"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fc := newFakeV2(t, "ios")
			tc.set(fc)
			cfg := v2Config(t, "")
			cfg.VMStatusInterval = time.Hour // the host learns it from the VM, not from vm-status
			reqs, parts, _ := runV2Failure(t, fc, cfg)
			require.Equal(t, tc.msg, parts[3].Value)
			require.Empty(t, byPath(reqs, "POST", v2Build+"/vm-ready"))
			require.Empty(t, byPath(reqs, "GET", v2Build+"/source"))
			logs := byPath(reqs, "POST", v2Build+"/logs")
			require.Len(t, logs, 1, "the VM posts its error")
			require.Equal(t, []any{map[string]any{"level": "error", "message": tc.msg}}, logs[0].JSON["logs"])
		})
	}
}

func TestV2StopSignalUnregisters(t *testing.T) {
	t.Parallel()
	fc := newFakeV2(t, "ios")
	srv := fc.start()
	cfg := v2Config(t, srv.URL)
	cfg.Once, cfg.BuildTime = false, time.Hour // the stop comes mid-build
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &notifyingBuffer{match: "vm: building ios", seen: make(chan struct{})}
	go func() {
		<-out.seen
		cancel()
	}()
	require.NoError(t, runWorker(t, ctx, cfg, out))
	reqs := fc.requests()
	require.Empty(t, byPath(reqs, "POST", "/api/workers/upload"), "an abandoned build reports nothing")
	un := byPath(reqs, "POST", "/api/workers/unregister")
	require.Len(t, un, 1)
	require.Equal(t, map[string]string{"X-API-Key": testKey, "X-Worker-Token": v2WorkerToken(1)}, credentials(un[0]))
	require.Contains(t, out.String(), "stopping: abandoning build 9f1c2a4b…")
	requireNoSecrets(t, out.String())
}

func TestV2JobWithoutOTPIsAnError(t *testing.T) {
	t.Parallel()
	fc := newFakeV2(t, "android")
	fc.polls = []v2Poll{{job: true, noOTP: true}}
	srv := fc.start()
	cfg := v2Config(t, srv.URL)
	cfg.Once = false
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-fc.polled // polling again after the bad job
		cancel()
	}()
	var out testkit.LockedBuffer
	require.NoError(t, runWorker(t, ctx, cfg, &out))
	require.Empty(t, byPath(fc.requests(), "POST", v2Build+"/authenticate"))
	require.Contains(t, out.String(), "poll failed (poll answered a job without id, source_url or otp)")
}

func TestV2RegisterNeedsAccessToken(t *testing.T) {
	t.Parallel()
	fc := newFakeController(t) // a v1 controller: no access_token
	srv := fc.start()
	err := runWorker(t, context.Background(), v2Config(t, srv.URL), io.Discard)
	require.True(t, isFatal(err), "%v", err)
	require.Contains(t, err.Error(), "no access_token")
}
