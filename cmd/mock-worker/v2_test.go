package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/internal/testkit"
)

func TestV2FullCycle(t *testing.T) {
	t.Parallel()
	for _, platform := range []string{"ios", "android"} {
		t.Run(platform, func(t *testing.T) {
			t.Parallel()
			fc := newFakeV2(t, platform)
			srv := fc.start()
			cfg := v2Config(t, srv.URL)
			var out testkit.LockedBuffer
			require.NoError(t, runWorker(t, context.Background(), cfg, &out))
			reqs := fc.requests()
			checkV2Host(t, cfg, filter(reqs, func(r request) bool { return !isVMRequest(r) }))
			checkV2VM(t, cfg, platform, fc, filter(reqs, isVMRequest))
			checkV2Order(t, reqs)

			st, err := loadState(cfg.StateFile)
			require.NoError(t, err)
			require.Equal(t, state{WorkerID: testWorkerID, Name: cfg.Name, Controller: cfg.URL, AccessToken: v2WorkerToken(1)}, st)

			text := out.String()
			for _, s := range []string{"protocol v2", "registered as test-worker (id 8d2f6c7e…)", "got build 9f1c2a4b… (" + platform + ")",
				"vm: authenticated", "vm: signalled ready", "VM ready for build 9f1c2a4b…", "vm: uploaded artifact " + artifactName(platform),
				"reported build 9f1c2a4b… done → success", "unregistered"} {
				require.Contains(t, text, s)
			}
			requireNoSecrets(t, text)
		})
	}
}

// checkV2Host checks the host's requests, in order.
func checkV2Host(t *testing.T, cfg Config, host []request) {
	names, runs := steps(host)
	require.Equal(t, []string{"POST /api/workers/register", "GET /api/workers/poll", "GET /vm-status",
		"POST /heartbeat", "POST /api/workers/upload", "POST /api/workers/unregister"}, names)
	require.GreaterOrEqual(t, runs[2], 2, "vm-status is asked until the VM is ready")
	key, token := map[string]string{"X-API-Key": testKey}, map[string]string{"X-Worker-Token": v2WorkerToken(1)}
	progress := 0.0
	for _, r := range host {
		switch r.Path {
		case "/api/workers/register":
			require.Equal(t, key, credentials(r))
			require.Equal(t, map[string]any{"name": cfg.Name, "capabilities": map[string]any{
				"platforms": []any{"ios", "android"}, "maxConcurrentBuilds": float64(1), "mock": true}}, r.JSON)
		case "/api/workers/poll":
			require.Equal(t, token, credentials(r))
			require.Empty(t, r.Query)
		case v2Build + "/vm-status":
			require.Empty(t, credentials(r))
			require.Empty(t, r.Query)
		case v2Build + "/heartbeat":
			require.Equal(t, map[string]string{"X-VM-Token": v2HostToken}, credentials(r))
			require.Equal(t, "worker_id="+testWorkerID, r.Query)
			if p, ok := r.JSON["progress"]; ok {
				require.Len(t, r.JSON, 1)
				require.GreaterOrEqual(t, p.(float64), progress)
				require.LessOrEqual(t, p.(float64), 100.0)
				progress = p.(float64)
			} else {
				require.Equal(t, "{}", string(r.Body))
			}
		case "/api/workers/upload":
			require.Equal(t, key, credentials(r))
			require.Equal(t, []formPart{{Name: "build_id", Value: testBuildID}, {Name: "worker_id", Value: testWorkerID},
				{Name: "success", Value: "true"}}, r.Parts, "no file: the VM uploaded the artifact")
		case "/api/workers/unregister":
			require.Equal(t, map[string]string{"X-API-Key": testKey, "X-Worker-Token": v2WorkerToken(1)}, credentials(r))
			require.Empty(t, r.Query)
			require.Empty(t, r.Body)
		}
	}
}

// checkV2VM checks the VM's requests, in order.
func checkV2VM(t *testing.T, cfg Config, platform string, fc *fakeV2, vm []request) {
	want := []string{"POST /authenticate", "GET /certs-secure", "POST /vm-ready", "GET /source", "POST /logs", "POST /artifact"}
	if platform == "android" {
		want = append(want[:1], want[2:]...)
	}
	names, _ := steps(vm)
	require.Equal(t, want, names)
	var logs []logLine
	for _, r := range vm {
		if r.Path == v2Build+"/authenticate" {
			require.Empty(t, credentials(r))
			require.Equal(t, map[string]any{"otp": v2OTP}, r.JSON)
			continue
		}
		require.Equal(t, map[string]string{"X-VM-Token": v2VMToken}, credentials(r), r.Path)
		switch r.Path {
		case v2Build + "/certs-secure":
			require.Equal(t, "application/json", r.Header.Get("Accept"))
		case v2Build + "/vm-ready":
			require.Empty(t, r.Body)
		case v2Build + "/logs":
			var body struct {
				Logs []logLine `json:"logs"`
			}
			require.NoError(t, json.Unmarshal(r.Body, &body))
			require.LessOrEqual(t, len(body.Logs), cfg.LogBatch)
			logs = append(logs, body.Logs...)
		case v2Build + "/artifact":
			require.Len(t, r.Parts, 1)
			p := r.Parts[0]
			require.Equal(t, "artifact", p.Name)
			require.Equal(t, artifactName(platform), p.FileName)
			require.Equal(t, cfg.ResultSize, p.Size)
			h := sha256.New()
			_, _ = io.Copy(h, resultReader(testBuildID, cfg.ResultSize))
			require.Equal(t, h.Sum(nil), p.SHA256[:])
			require.Equal(t, []string{"chunked"}, r.TransferEncoding, "the artifact streams")
		}
	}
	script, _ := buildScript(platform, int64(len(fc.source)), platform == "ios", true, cfg.ResultSize)
	require.Len(t, logs, len(script))
	for i := range script {
		require.Equal(t, script[i].Message, logs[i].Message)
	}
}

// checkV2Order checks the order between the host and the VM.
func checkV2Order(t *testing.T, reqs []request) {
	job := indexOf(reqs, "GET", "/api/workers/poll", true)
	require.Less(t, job, indexOf(reqs, "POST", v2Build+"/authenticate", false), "the VM boots after the job")
	ready := indexOf(reqs, "POST", v2Build+"/vm-ready", false)
	require.Less(t, ready, indexOf(reqs, "GET", v2Build+"/vm-status", true), "vm-status is ready only after vm-ready")
	require.Less(t, ready, indexOf(reqs, "POST", v2Build+"/heartbeat", false))
	require.Less(t, indexOf(reqs, "POST", v2Build+"/artifact", false), indexOf(reqs, "POST", "/api/workers/upload", false))
	require.Equal(t, len(reqs)-1, indexOf(reqs, "POST", "/api/workers/unregister", false), "the goodbye comes last")
}

func TestV2LongPoll(t *testing.T) {
	t.Parallel()
	fc := newFakeV2(t, "android")
	fc.polls = []v2Poll{{}, {job: true}} // an empty answer first
	srv := fc.start()
	cfg := v2Config(t, srv.URL)
	cfg.Wait = 25 * time.Second
	var out testkit.LockedBuffer
	require.NoError(t, runWorker(t, context.Background(), cfg, &out))
	polls := byPath(fc.requests(), "GET", "/api/workers/poll")
	require.Len(t, polls, 2)
	for _, p := range polls {
		require.Equal(t, "wait=25", p.Query, "no worker_id: the token names the worker")
		require.Equal(t, map[string]string{"X-Worker-Token": v2WorkerToken(1)}, credentials(p))
	}
	require.Contains(t, out.String(), "long-poll 25s, protocol v2")
	requireNoSecrets(t, out.String())
}

func TestV2TokenRotation(t *testing.T) {
	t.Parallel()
	const rotated = "SECRET-rotated-worker-token"
	fc := newFakeV2(t, "android")
	fc.polls = []v2Poll{{rotate: rotated}, {job: true}}
	srv := fc.start()
	cfg := v2Config(t, srv.URL)
	var out testkit.LockedBuffer
	require.NoError(t, runWorker(t, context.Background(), cfg, &out))
	reqs := fc.requests()
	polls := byPath(reqs, "GET", "/api/workers/poll")
	require.Len(t, polls, 2)
	require.Equal(t, v2WorkerToken(1), polls[0].Header.Get("X-Worker-Token"))
	require.Equal(t, rotated, polls[1].Header.Get("X-Worker-Token"), "the next poll uses the new token")
	un := byPath(reqs, "POST", "/api/workers/unregister")
	require.Len(t, un, 1)
	require.Equal(t, rotated, un[0].Header.Get("X-Worker-Token"))
	st, err := loadState(cfg.StateFile)
	require.NoError(t, err)
	require.Equal(t, rotated, st.AccessToken, "the new token is saved")
	require.Contains(t, out.String(), "the controller rotated the worker token")
	requireNoSecrets(t, out.String())
}

func TestV2PollReregisters(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		status int
		id     string // the id after the re-registration
	}{
		{"UnauthorizedKeepsID", http.StatusUnauthorized, testWorkerID},
		{"NotFoundGetsNewID", http.StatusNotFound, "00000002-0000-4000-8000-000000000000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fc := newFakeV2(t, "android")
			fc.polls = []v2Poll{{status: tc.status}, {job: true}}
			srv := fc.start()
			cfg := v2Config(t, srv.URL)
			var out testkit.LockedBuffer
			require.NoError(t, runWorker(t, context.Background(), cfg, &out))
			reqs := fc.requests()
			regs := byPath(reqs, "POST", "/api/workers/register")
			require.Len(t, regs, 2)
			if tc.status == http.StatusUnauthorized {
				require.Equal(t, testWorkerID, regs[1].JSON["id"], "a 401 keeps the id")
			} else {
				require.NotContains(t, regs[1].JSON, "id", "a 404 drops the id")
			}
			polls := byPath(reqs, "GET", "/api/workers/poll")
			require.Len(t, polls, 2)
			require.Equal(t, v2WorkerToken(2), polls[1].Header.Get("X-Worker-Token"))
			for _, hb := range byPath(reqs, "POST", v2Build+"/heartbeat") {
				require.Equal(t, "worker_id="+tc.id, hb.Query)
			}
			ups := byPath(reqs, "POST", "/api/workers/upload")
			require.Len(t, ups, 1)
			require.Equal(t, formPart{Name: "worker_id", Value: tc.id}, ups[0].Parts[1])
			st, err := loadState(cfg.StateFile)
			require.NoError(t, err)
			require.Equal(t, tc.id, st.WorkerID)
			require.Equal(t, v2WorkerToken(2), st.AccessToken)
			requireNoSecrets(t, out.String())
		})
	}
}

func TestParseArgsProtocol(t *testing.T) {
	t.Parallel()
	cfg, err := ParseArgs(nil, env(nil), io.Discard)
	require.NoError(t, err)
	require.Equal(t, ProtocolV1, cfg.Protocol)
	require.Equal(t, 2*time.Second, cfg.VMStatusInterval)

	cfg, err = ParseArgs([]string{"--protocol", "v2", "--vm-status-interval", "50ms"}, env(nil), io.Discard)
	require.NoError(t, err)
	require.Equal(t, ProtocolV2, cfg.Protocol)
	require.Equal(t, 50*time.Millisecond, cfg.VMStatusInterval)

	cfg, err = ParseArgs(nil, env(map[string]string{"MOCK_WORKER_PROTOCOL": "V2", "MOCK_WORKER_VM_STATUS_INTERVAL": "1s"}), io.Discard)
	require.NoError(t, err)
	require.Equal(t, ProtocolV2, cfg.Protocol)
	require.Equal(t, time.Second, cfg.VMStatusInterval)

	for _, args := range [][]string{{"--protocol", "v3"}, {"--vm-status-interval", "0s"}} {
		_, err := ParseArgs(args, env(nil), io.Discard)
		var ue *UsageError
		require.True(t, errors.As(err, &ue), "%v: want a UsageError, got %v", args, err)
	}
}
