package test

import (
	"bufio"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/cmd/app"
)

// TestRequestLogLines: with --log-format json every request is one JSON
// line with method, route, status and duration, and no secret — key, build
// token, certificate password, Apple fields, query strings — ever reaches
// the log.
func TestRequestLogLines(t *testing.T) {
	t.Parallel()
	c := Start(t, WithConfig(func(cfg *app.Config) { cfg.LogFormat = "json" }))
	certs := CertsZip(t, map[string]string{"c.p12": "P12", "password.txt": "cert-pass-XYZ"})
	r := c.PostMultipart("/api/builds/submit", c.KeyH(), CLISubmitParts([]byte("src"), certs)...)
	require.Equal(t, 200, r.Status)
	token := r.Object(t)["access_token"].(string)
	id := r.Object(t)["id"].(string)
	w := c.Register("logger")
	c.Poll(w)
	c.Get("/api/builds/"+id+"/status", H{"X-Build-Token": token, "X-API-Key": "stale-key-123456789"})
	c.Get("/api/builds/"+id+"/certs-secure", c.KeyH("X-Worker-Id", w, "X-Build-Id", id))
	c.Get("/nope?secret=query-secret", nil)
	c.Stop()

	var requests []map[string]any
	sc := bufio.NewScanner(strings.NewReader(c.Logs()))
	for sc.Scan() {
		var line map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &line), "not a JSON line: %s", sc.Text())
		if line["msg"] == "request" {
			requests = append(requests, line)
		}
	}
	require.Len(t, requests, 6)
	for _, l := range requests {
		for _, k := range []string{"method", "route", "status", "duration_ms"} {
			require.Contains(t, l, k)
		}
	}
	require.Equal(t, "/api/builds/submit", requests[0]["route"])
	require.Equal(t, 200.0, requests[0]["status"])
	require.Equal(t, "(unmatched)", requests[5]["route"])
	require.Equal(t, 404.0, requests[5]["status"])
	logs := c.Logs()
	for _, secret := range []string{c.Key, token, "stale-key-123456789", "cert-pass-XYZ", "hunter2-apple-secret",
		"dev@example.com", "query-secret"} {
		require.NotContains(t, logs, secret)
	}
}
