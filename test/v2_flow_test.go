package test

import (
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestNewerWorkerFlow runs the newer worker generation's whole sequence
// (docs/API.md §4.12–§4.16) through the real tree, the Mac host and the
// build VM as two clients that know only what each really knows: the host
// its worker token and, from vm-status, the host token; the VM the job's
// one-time password and then its VM token.
func TestNewerWorkerFlow(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		platform string
		certs    []byte
		ext      string
	}{{"ios", DefaultCerts(t), ".ipa"}, {"android", nil, ".apk"}} {
		t.Run(tc.platform, func(t *testing.T) {
			t.Parallel()
			c := Start(t)
			host := &hostClient{c: c}
			host.register(t)
			b := c.Submit(tc.platform, []byte("SOURCE-"+tc.platform), tc.certs)
			job := host.poll(t)
			require.Equal(t, b.ID, job["id"])
			require.Equal(t, "ghcr.io/sethwebster/expo-free-agent-base:0.1.31", job["baseImageId"], "the newer image for token polls")
			vm := &vmClient{c: c, build: b.ID}
			vm.authenticate(t, job["otp"].(string))

			// The host waits for the VM: not ready yet.
			require.Equal(t, map[string]any{"vm_ready": false}, c.Get("/api/builds/"+b.ID+"/vm-status", nil).Object(t))

			if tc.certs != nil {
				bundle := vm.getJSON(t, "/certs-secure")
				require.Equal(t, base64.StdEncoding.EncodeToString([]byte("P12-BYTES")), bundle["p12"])
				require.Equal(t, "s3cret", bundle["p12Password"])
				require.Equal(t, []any{base64.StdEncoding.EncodeToString([]byte("PROFILE-1"))}, bundle["provisioningProfiles"])
			}
			ready := c.Do(http.MethodPost, vm.path("/vm-ready"), nil, vm.headers())
			require.Equal(t, http.StatusOK, ready.Status, "%s", ready.Body)
			require.Equal(t, true, ready.Object(t)["success"])
			ht := host.waitVMReady(t, b.ID) // then heartbeats with the host token while the VM works
			require.NotEqual(t, vm.token, ht, "vm-status never hands out the VM token")
			host.heartbeat(t, b.ID, ht, map[string]any{"progress": 10})

			src := c.Get(vm.path("/source"), vm.headers())
			require.Equal(t, http.StatusOK, src.Status)
			require.Equal(t, "SOURCE-"+tc.platform, string(src.Body))
			logs := c.PostJSON(vm.path("/logs"), map[string]any{"logs": []map[string]string{
				{"level": "info", "message": "Compiling"}, {"level": "warn", "message": "A warning"}}}, vm.headers())
			require.Equal(t, http.StatusOK, logs.Status, "%s", logs.Body)
			host.heartbeat(t, b.ID, ht, map[string]any{})

			artifact := []byte("ARTIFACT-" + tc.platform)
			r := c.PostMultipart(vm.path("/artifact"), vm.headers(), Part{Name: "artifact", Filename: "app" + tc.ext, Data: artifact})
			require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
			require.Equal(t, map[string]any{"success": true}, r.Object(t))

			// The host raced the artifact: its heartbeat is still welcome,
			// its file-less success changes nothing.
			beat := c.PostJSON("/api/builds/"+b.ID+"/heartbeat?worker_id="+host.id, map[string]any{}, H{"X-VM-Token": ht})
			require.Equal(t, http.StatusOK, beat.Status)
			require.Equal(t, map[string]any{"status": "ok"}, beat.Object(t))
			up := c.PostMultipart("/api/workers/upload", c.KeyH(), Part{Name: "build_id", Data: []byte(b.ID)},
				Part{Name: "worker_id", Data: []byte(host.id)}, Part{Name: "success", Data: []byte("true")})
			require.Equal(t, http.StatusOK, up.Status, "%s", up.Body)
			require.Equal(t, map[string]any{"status": "success"}, up.Object(t))

			dl := c.Get("/api/builds/"+b.ID+"/download", H{"X-Build-Token": b.Token})
			require.Equal(t, http.StatusOK, dl.Status)
			require.Equal(t, sha256.Sum256(artifact), sha256.Sum256(dl.Body))
			require.Equal(t, `attachment; filename="`+b.ID+tc.ext+`"`, dl.Header.Get("Content-Disposition"))
			require.Equal(t, "completed", c.Status(b.ID)["status"])
			st := c.WorkerStats(host.id)
			require.Equal(t, 1.0, st["successfulBuilds"], "counted once")
			require.Equal(t, 1.0, st["totalBuilds"])
			msgs := c.LogMessages(b.ID)
			for _, want := range []string{"VM authenticated", "VM ready", "Compiling", "Build completed successfully"} {
				require.Contains(t, msgs, want)
			}
			require.Equal(t, http.StatusUnauthorized, c.Get(vm.path("/source"), vm.headers()).Status,
				"the VM token ended with its assignment")

			bye := c.Do(http.MethodPost, "/api/workers/unregister", nil, c.KeyH("X-Worker-Token", host.token))
			require.Equal(t, http.StatusOK, bye.Status, "%s", bye.Body)
			require.Equal(t, http.StatusUnauthorized, c.Get("/api/workers/poll", H{"X-Worker-Token": host.token}).Status,
				"unregister revoked the token")
		})
	}
}

// hostClient is the newer Mac host: the key to register, then its worker
// token only.
type hostClient struct {
	c         *Controller
	id, token string
}

func (h *hostClient) register(t *testing.T) {
	t.Helper()
	h.id, h.token = h.c.RegisterV2("mac-v2")
}

// poll polls until a job comes, taking any rotated token.
func (h *hostClient) poll(t *testing.T) map[string]any {
	t.Helper()
	m := h.c.PollToken(h.token)
	require.Equal(t, h.token, m["access_token"], "a token poll answers with the current token")
	job, ok := m["job"].(map[string]any)
	require.True(t, ok, "a job: %v", m)
	require.NotEmpty(t, job["otp"])
	return job
}

// waitVMReady polls vm-status with no credentials, as the host does, until
// the VM is ready, and returns the host token.
func (h *hostClient) waitVMReady(t *testing.T, buildID string) string {
	t.Helper()
	var token string
	eventually(t, 10*time.Second, func() bool {
		r := h.c.Get("/api/builds/"+buildID+"/vm-status", nil)
		if r.Status != http.StatusOK {
			return false
		}
		m := r.Object(t)
		if m["vm_ready"] != true {
			require.Equal(t, map[string]any{"vm_ready": false}, m)
			return false
		}
		token, _ = m["vm_token"].(string)
		return token != ""
	}, "vm-status says the VM is ready")
	return token
}

func (h *hostClient) heartbeat(t *testing.T, buildID, hostToken string, body map[string]any) {
	t.Helper()
	r := h.c.PostJSON("/api/builds/"+buildID+"/heartbeat?worker_id="+h.id, body, H{"X-VM-Token": hostToken})
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
}

// vmClient is the build VM: the job's one-time password, then its VM token.
type vmClient struct {
	c            *Controller
	build, token string
}

func (v *vmClient) path(suffix string) string { return "/api/builds/" + v.build + suffix }

func (v *vmClient) headers() H { return H{"X-VM-Token": v.token} }

func (v *vmClient) authenticate(t *testing.T, otp string) {
	t.Helper()
	v.token = v.c.Authenticate(v.build, otp)
}

func (v *vmClient) getJSON(t *testing.T, suffix string) map[string]any {
	t.Helper()
	r := v.c.Get(v.path(suffix), v.headers())
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	return r.Object(t)
}
