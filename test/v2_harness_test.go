package test

import (
	"net/http"

	"github.com/stretchr/testify/require"
)

// Helpers that speak the newer worker generation (docs/API.md §4.12–§4.16).

// testWorkerKey is the worker key of controllers started WithWorkerKey.
const testWorkerKey = "test-worker-key-0123456789abcdef"

// RegisterV2 registers a worker with the key, as the newer host does, and
// returns its id and worker token.
func (c *Controller) RegisterV2(name string, platforms ...string) (id, token string) {
	c.t.Helper()
	caps := map[string]any{}
	if len(platforms) > 0 {
		caps["platforms"] = platforms
	}
	r := c.PostJSON("/api/workers/register", map[string]any{"name": name, "capabilities": caps}, c.KeyH())
	require.Equal(c.t, http.StatusOK, r.Status, "%s", r.Body)
	m := r.Object(c.t)
	return m["id"].(string), m["access_token"].(string)
}

// PollToken polls with only the worker token and returns the answer.
func (c *Controller) PollToken(token string) map[string]any {
	c.t.Helper()
	r := c.Get("/api/workers/poll", H{"X-Worker-Token": token})
	require.Equal(c.t, http.StatusOK, r.Status, "%s", r.Body)
	return r.Object(c.t)
}

// Authenticate trades a job's one-time password for a VM token.
func (c *Controller) Authenticate(buildID, otp string) string {
	c.t.Helper()
	r := c.PostJSON("/api/builds/"+buildID+"/authenticate", map[string]string{"otp": otp}, nil)
	require.Equal(c.t, http.StatusOK, r.Status, "%s", r.Body)
	vm := r.Object(c.t)["vm_token"].(string)
	require.NotEmpty(c.t, vm)
	return vm
}

// HostToken says the build's VM is ready and returns the host token that
// vm-status then hands out.
func (c *Controller) HostToken(buildID, vmToken string) string {
	c.t.Helper()
	r := c.Do(http.MethodPost, "/api/builds/"+buildID+"/vm-ready", nil, H{"X-VM-Token": vmToken})
	require.Equal(c.t, http.StatusOK, r.Status, "%s", r.Body)
	st := c.Get("/api/builds/"+buildID+"/vm-status", nil)
	require.Equal(c.t, http.StatusOK, st.Status)
	m := st.Object(c.t)
	require.Equal(c.t, true, m["vm_ready"])
	return m["vm_token"].(string)
}
