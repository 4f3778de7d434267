package main

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Secrets the v2 fake hands out. Their prefix makes a leak easy to find.
const (
	v2OTP       = "SECRET-otp-dGhpcyBpcyBhIG9uZS10aW1lIHBhc3N3b3Jk"
	v2VMToken   = "SECRET-vm-token-Zm9yIHRoZSBWTSBvbmx5IGFuZCBjZXJ0cw"
	v2HostToken = "SECRET-host-token-b25seSBmb3IgaGVhcnRiZWF0cw"
	v2P12Pass   = "SECRET-p12-password"
)

// v2WorkerToken is the worker token minted by the n-th registration.
func v2WorkerToken(n int) string { return fmt.Sprintf("SECRET-worker-token-%d", n) }

// v2Poll is the fake's answer to one poll.
type v2Poll struct {
	status int    // non-zero: answer this error status
	rotate string // non-empty: hand out this new worker token
	job    bool   // hand out the job
	noOTP  bool   // ... without its otp
}

// fakeV2 answers the newer worker generation's requests for one build,
// checks their credentials the way the controller does (a wrong one gets
// 401), and records every request in order.
type fakeV2 struct {
	t        *testing.T
	platform string
	source   []byte

	// Knobs, set before the worker starts.
	polls           []v2Poll // answers to the first polls, then idle
	certsStatus     int      // non-zero: answer certs-secure with this status
	noProfiles      bool     // certs-secure lists no provisioning profile
	vmStatusStatus  int      // non-zero: answer vm-status with this status
	heartbeatStatus int      // non-zero: answer heartbeats with this status

	mu       sync.Mutex
	reqs     []request
	regs     int             // registrations so far
	tokens   map[string]bool // valid worker tokens
	current  string          // the newest worker token
	workerID string          // the id of the last registration
	vmReady  bool
	statuses int           // vm-status requests so far
	polled   chan struct{} // a token per idle poll
}

func newFakeV2(t *testing.T, platform string) *fakeV2 {
	return &fakeV2{t: t, platform: platform, source: bytes.Repeat([]byte("PK\x03\x04source"), 5000),
		polls: []v2Poll{{job: true}}, tokens: map[string]bool{}, polled: make(chan struct{}, 1000)}
}

func (f *fakeV2) start() *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(f.serve))
	f.t.Cleanup(srv.Close)
	return srv
}

func (f *fakeV2) requests() []request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]request(nil), f.reqs...)
}

func (f *fakeV2) serve(w http.ResponseWriter, r *http.Request) {
	rec, ok := readRequest(f.t, w, r)
	if !ok {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, rec)
	build := "/api/builds/" + testBuildID
	vmOK := r.Header.Get("X-VM-Token") == v2VMToken
	keyOK := r.Header.Get("X-API-Key") == testKey
	switch route := r.Method + " " + r.URL.Path; {
	case route == "POST /api/workers/register" && keyOK:
		f.register(w, rec)
	case route == "GET /api/workers/poll":
		f.poll(w, r.Header.Get("X-Worker-Token"))
	case route == "POST "+build+"/authenticate":
		if rec.JSON["otp"] != v2OTP {
			fail(w, 401, "Invalid OTP")
			return
		}
		writeJSON(w, 200, map[string]string{"vm_token": v2VMToken, "expires_at": "2026-11-27T16:00:00.000Z"})
	case route == "GET "+build+"/certs-secure" && vmOK:
		f.certs(w)
	case route == "POST "+build+"/vm-ready" && vmOK:
		f.vmReady = true
		writeJSON(w, 200, map[string]any{"success": true, "vm_ready_at": "2026-11-27T10:00:00.000Z"})
	case route == "GET "+build+"/vm-status":
		f.vmStatus(w)
	case route == "GET "+build+"/source" && vmOK:
		w.Header().Set("Content-Length", fmt.Sprint(len(f.source)))
		_, _ = w.Write(f.source)
	case route == "POST "+build+"/logs" && vmOK:
		logs, _ := rec.JSON["logs"].([]any)
		writeJSON(w, 200, map[string]any{"success": true, "count": len(logs)})
	case route == "POST "+build+"/heartbeat" && r.Header.Get("X-VM-Token") == v2HostToken:
		if f.heartbeatStatus != 0 {
			fail(w, f.heartbeatStatus, "Build not assigned to this worker")
			return
		}
		writeJSON(w, 200, map[string]any{"status": "ok", "timestamp": time.Now().UnixMilli()})
	case route == "POST "+build+"/artifact" && vmOK:
		writeJSON(w, 200, map[string]bool{"success": true})
	case route == "POST /api/workers/upload" && keyOK:
		outcome := "failed"
		if len(rec.Parts) > 2 && rec.Parts[2].Value == "true" {
			outcome = "success"
		}
		writeJSON(w, 200, map[string]string{"status": outcome})
	case route == "POST /api/workers/unregister" && keyOK && f.tokens[r.Header.Get("X-Worker-Token")]:
		writeJSON(w, 200, map[string]any{"success": true, "message": "Worker unregistered", "builds_reassigned": 0})
	case strings.Contains(route, build):
		fail(w, 401, "Invalid or expired VM token")
	default:
		fail(w, 401, "Missing X-API-Key header")
	}
}

// register keeps a known id, else hands out a new one, and mints a token.
func (f *fakeV2) register(w http.ResponseWriter, rec request) {
	f.regs++
	id, _ := rec.JSON["id"].(string)
	status := "re-registered"
	if id == "" {
		id, status = testWorkerID, "registered"
		if f.regs > 1 {
			id = fmt.Sprintf("%08d-0000-4000-8000-000000000000", f.regs)
		}
	}
	f.workerID, f.current = id, v2WorkerToken(f.regs)
	f.tokens[f.current] = true
	writeJSON(w, 200, map[string]string{"id": id, "status": status, "access_token": f.current,
		"token_expires_at": "2026-11-27T11:00:00.000Z"})
}

func (f *fakeV2) poll(w http.ResponseWriter, token string) {
	if !f.tokens[token] {
		fail(w, 401, "Invalid or expired worker token")
		return
	}
	if len(f.polls) == 0 {
		f.polled <- struct{}{}
		writeJSON(w, 200, map[string]any{"job": nil, "access_token": f.current})
		return
	}
	p := f.polls[0]
	f.polls = f.polls[1:]
	if p.status != 0 {
		fail(w, p.status, http.StatusText(p.status))
		return
	}
	if p.rotate != "" {
		f.current = p.rotate
		f.tokens[p.rotate] = true
	}
	var job map[string]any
	if p.job {
		build := "/api/builds/" + testBuildID
		job = map[string]any{"id": testBuildID, "platform": f.platform, "source_url": build + "/source",
			"certs_url": nil, "baseImageId": "ghcr.io/example/base:0.1.31", "otp": v2OTP}
		if f.platform == "ios" {
			job["certs_url"] = build + "/certs"
		}
		if p.noOTP {
			delete(job, "otp")
		}
	}
	writeJSON(w, 200, map[string]any{"job": job, "access_token": f.current})
}

func (f *fakeV2) certs(w http.ResponseWriter) {
	if f.certsStatus != 0 {
		fail(w, f.certsStatus, "No certs for this build")
		return
	}
	b64 := base64.StdEncoding.EncodeToString
	profiles := []string{b64([]byte("profile"))}
	if f.noProfiles {
		profiles = []string{}
	}
	writeJSON(w, 200, map[string]any{"p12": b64([]byte("fake p12 bytes")), "p12Password": v2P12Pass,
		"keychainPassword": b64([]byte("kc")), "provisioningProfiles": profiles})
}

// vmStatus says "not ready" at least once, so the host has to ask again.
func (f *fakeV2) vmStatus(w http.ResponseWriter) {
	f.statuses++
	switch {
	case f.vmStatusStatus != 0:
		fail(w, f.vmStatusStatus, "Build not found")
	case f.vmReady && f.statuses > 1:
		writeJSON(w, 200, map[string]any{"vm_ready": true, "vm_token": v2HostToken, "vm_ready_at": "2026-11-27T10:00:00.000Z"})
	default:
		writeJSON(w, 200, map[string]any{"vm_ready": false})
	}
}

const v2Build = "/api/builds/" + testBuildID

// v2Config is testConfig speaking v2, verbose (so the secret checks see
// every line), with a short vm-status interval.
func v2Config(t *testing.T, url string) Config {
	cfg := testConfig(t, url)
	cfg.Protocol, cfg.Verbose, cfg.VMStatusInterval = ProtocolV2, true, 5*time.Millisecond
	return cfg
}

// credentials are the credential headers a request carries.
func credentials(r request) map[string]string {
	out := map[string]string{}
	for _, h := range []string{"X-API-Key", "X-Worker-Token", "X-VM-Token", "X-Worker-Id", "X-Build-Id", "X-Build-Token"} {
		if v := r.Header.Get(h); v != "" {
			out[h] = v
		}
	}
	return out
}

// isVMRequest says whether the VM (rather than the host) sends r.
func isVMRequest(r request) bool {
	for _, s := range []string{"/authenticate", "/certs-secure", "/vm-ready", "/source", "/logs", "/artifact"} {
		if r.Path == v2Build+s {
			return true
		}
	}
	return false
}

// steps is the sequence of "METHOD path" of reqs, with runs of the same
// request collapsed into one, and how long each run is.
func steps(reqs []request) ([]string, []int) {
	var names []string
	var runs []int
	for _, r := range reqs {
		name := r.Method + " " + strings.TrimPrefix(r.Path, v2Build)
		if n := len(names); n > 0 && names[n-1] == name {
			runs[n-1]++
			continue
		}
		names, runs = append(names, name), append(runs, 1)
	}
	return names, runs
}

// indexOf is the position of the first (last) request matching method and
// path in reqs, or -1.
func indexOf(reqs []request, method, path string, last bool) int {
	at := -1
	for i, r := range reqs {
		if r.Method == method && r.Path == path {
			if !last {
				return i
			}
			at = i
		}
	}
	return at
}

// requireNoSecrets fails if the console shows a worker, VM or host token,
// the one-time password or the p12 password: all of them start with SECRET.
func requireNoSecrets(t *testing.T, out string) {
	t.Helper()
	require.NotContains(t, out, "SECRET")
}
