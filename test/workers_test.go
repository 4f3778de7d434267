package test

import (
	"bytes"
	"encoding/base64"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/expo-free-agent/controller/internal/testkit"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/cmd/app"
)

func TestRegister(t *testing.T) {
	t.Parallel()
	c := Start(t)
	// The Swift worker's body.
	body := map[string]any{"name": "Seth's Mac", "capabilities": map[string]any{"platforms": []string{"ios"},
		"maxConcurrentBuilds": 1, "xcode_version": "15.0"}}
	r := c.PostJSON("/api/workers/register", body, c.KeyH())
	require.Equal(t, http.StatusOK, r.Status)
	m := r.Object(t)
	id := m["id"].(string)
	require.Regexp(t, uuidRe, id)
	// The newer workers' token (§4.12) rides along; the older ones ignore it.
	token := m["access_token"].(string)
	require.Regexp(t, tokenRe, token)
	expires, err := time.Parse("2006-01-02T15:04:05.000Z", m["token_expires_at"].(string))
	require.NoError(t, err)
	require.WithinDuration(t, time.Now().Add(time.Hour), expires, time.Minute)
	require.Equal(t, map[string]any{"id": id, "status": "registered", "access_token": token,
		"token_expires_at": m["token_expires_at"], "baseImageId": "ghcr.io/sethwebster/expo-free-agent-base:0.1.23"}, m)

	// Re-registration by id keeps id and counters, replaces the name.
	b := c.Submit("ios", []byte("s"), nil)
	c.Poll(id)
	require.Equal(t, http.StatusOK, c.Upload(b.ID, id, true, []byte("ipa"), "").Status)
	body["id"] = strings.ToUpper(id)
	body["name"] = "Renamed Mac"
	r = c.PostJSON("/api/workers/register", body, c.KeyH())
	require.Equal(t, http.StatusOK, r.Status)
	m = r.Object(t)
	require.Equal(t, map[string]any{"id": id, "status": "re-registered", "access_token": m["access_token"],
		"token_expires_at": m["token_expires_at"], "baseImageId": "ghcr.io/sethwebster/expo-free-agent-base:0.1.23"}, m)
	require.NotEqual(t, token, m["access_token"], "each registration mints a new token")
	st := c.WorkerStats(id)
	require.Equal(t, "Renamed Mac", st["workerName"])
	require.Equal(t, 1.0, st["successfulBuilds"])

	// A stale or malformed id must not fail: a new worker.
	for _, stale := range []any{"00000000-0000-4000-8000-000000000000", "not-a-uuid", 42} {
		r = c.PostJSON("/api/workers/register", map[string]any{"name": "n", "capabilities": map[string]any{}, "id": stale}, c.KeyH())
		require.Equal(t, http.StatusOK, r.Status)
		got := r.Object(t)
		require.Equal(t, "registered", got["status"])
		require.NotEqual(t, stale, got["id"])
	}
	for _, bad := range []string{`{}`, `{"name":"","capabilities":{}}`, `{"name":"n"}`, `{"name":"n","capabilities":[]}`,
		`{"name":5,"capabilities":{}}`, `[]`, `"x"`} {
		r = c.PostJSON("/api/workers/register", bad, c.KeyH())
		require.Equal(t, http.StatusBadRequest, r.Status, bad)
		require.Equal(t, "Name and capabilities required", r.Error(t), bad)
	}
}

func TestRegisterBaseImage(t *testing.T) {
	t.Parallel()
	c := Start(t, WithConfig(func(cfg *app.Config) { cfg.BaseImageID = "registry.local/base:9" }))
	r := c.PostJSON("/api/workers/register", map[string]any{"name": "n", "capabilities": map[string]any{}}, c.KeyH())
	require.Equal(t, "registry.local/base:9", r.Object(t)["baseImageId"])
	b := c.Submit("ios", []byte("s"), nil)
	job := c.Poll(r.Object(t)["id"].(string))
	require.Equal(t, b.ID, job["id"])
	require.Equal(t, "registry.local/base:9", job["baseImageId"])
}

func TestPoll(t *testing.T) {
	t.Parallel()
	c := Start(t)
	r := c.Get("/api/workers/poll", c.KeyH())
	require.Equal(t, http.StatusBadRequest, r.Status)
	require.Equal(t, "worker_id required", r.Error(t))
	for _, id := range []string{"00000000-0000-4000-8000-000000000000", "nope"} {
		r = c.Get("/api/workers/poll?worker_id="+id, c.KeyH())
		require.Equal(t, http.StatusNotFound, r.Status)
		require.Equal(t, "Worker not found", r.Error(t))
	}
	ios := c.Register("ios-only", "ios")
	droid := c.Register("android-only", "android")
	anyw := c.Register("any")
	r = c.Get("/api/workers/poll?worker_id="+ios, c.KeyH())
	require.Equal(t, http.StatusOK, r.Status)
	require.Equal(t, `{"job":null}`, strings.TrimSpace(string(r.Body)))

	a1 := c.Submit("android", []byte("a1"), nil)
	i1 := c.Submit("ios", []byte("i1"), DefaultCerts(t))
	a2 := c.Submit("android", []byte("a2"), nil)
	// A build the worker cannot take does not block the ones behind it.
	job := c.Poll(ios)
	otp := job["otp"].(string) // every job carries a fresh one-time password for its VM (§4.13)
	require.Regexp(t, tokenRe, otp)
	require.Equal(t, map[string]any{"id": i1.ID, "platform": "ios", "source_url": "/api/builds/" + i1.ID + "/source",
		"certs_url": "/api/builds/" + i1.ID + "/certs", "baseImageId": "ghcr.io/sethwebster/expo-free-agent-base:0.1.23",
		"otp": otp}, job)
	// The same job again, unchanged but for a new one-time password, with no new log line.
	logs := len(c.LogMessages(i1.ID))
	again := c.Poll(ios)
	require.NotEqual(t, otp, again["otp"])
	delete(job, "otp")
	delete(again, "otp")
	require.Equal(t, job, again)
	require.Len(t, c.LogMessages(i1.ID), logs)
	require.Equal(t, a1.ID, c.Poll(droid)["id"])
	require.Equal(t, a2.ID, c.Poll(anyw)["id"])
	require.Equal(t, "building", c.WorkerStats(anyw)["status"])
	require.Equal(t, "Assigned to worker any", c.LogMessages(a2.ID)[1])
}

func TestWorkerSourceAndCerts(t *testing.T) {
	t.Parallel()
	c := Start(t)
	certs := DefaultCerts(t)
	b := c.Submit("ios", []byte("SOURCE"), certs)
	nocerts := c.Submit("ios", []byte("S2"), nil)
	w := c.Register("assignee")
	other := c.Register("other")

	// Pending builds are closed to every worker id.
	for _, p := range []string{"/source", "/certs"} {
		r := c.Get("/api/builds/"+b.ID+p, c.KeyH("X-Worker-Id", w))
		require.Equal(t, http.StatusForbidden, r.Status)
		require.Equal(t, "Worker not authorized for this build", r.Error(t))
	}
	require.Equal(t, b.ID, c.Poll(w)["id"])
	require.Equal(t, nocerts.ID, c.Poll(other)["id"])

	cases := []struct {
		name, path string
		h          H
		status     int
		msg        string
	}{
		{"MissingWorkerHeader", "/source", c.KeyH(), 401, "Missing X-Worker-Id header"},
		{"OtherWorker", "/source", c.KeyH("X-Worker-Id", other), 403, "Worker not authorized for this build"},
		{"UnknownWorker", "/certs", c.KeyH("X-Worker-Id", "00000000-0000-4000-8000-000000000000"), 403, "Worker not authorized for this build"},
		{"MalformedWorker", "/certs", c.KeyH("X-Worker-Id", "../../etc"), 403, "Worker not authorized for this build"},
	}
	for _, tc := range cases {
		r := c.Get("/api/builds/"+b.ID+tc.path, tc.h)
		require.Equal(t, tc.status, r.Status, tc.name)
		require.Equal(t, tc.msg, r.Error(t), tc.name)
	}
	r := c.Get("/api/builds/nope/source", c.KeyH("X-Worker-Id", w))
	require.Equal(t, http.StatusNotFound, r.Status)
	require.Equal(t, "Build not found", r.Error(t))
	r = c.Get("/api/builds/"+nocerts.ID+"/certs", c.KeyH("X-Worker-Id", other))
	require.Equal(t, http.StatusNotFound, r.Status)
	require.Equal(t, "Certs not found", r.Error(t))

	require.Equal(t, "assigned", c.Status(b.ID)["status"])
	r = c.Get("/api/builds/"+b.ID+"/source", c.KeyH("X-Worker-Id", w))
	require.Equal(t, http.StatusOK, r.Status)
	require.Equal(t, "SOURCE", string(r.Body))
	require.Equal(t, "application/zip", r.Header.Get("Content-Type"))
	require.Equal(t, "6", r.Header.Get("Content-Length"))
	require.Equal(t, `attachment; filename="`+b.ID+`.zip"`, r.Header.Get("Content-Disposition"))
	require.Equal(t, "building", c.Status(b.ID)["status"], "a download starts the build")
	r = c.Get("/api/builds/"+b.ID+"/certs", c.KeyH("X-Worker-Id", strings.ToUpper(w)))
	require.Equal(t, http.StatusOK, r.Status)
	require.Equal(t, certs, r.Body)
	require.Equal(t, `attachment; filename="`+b.ID+`-certs.zip"`, r.Header.Get("Content-Disposition"))

	// A vanished source file is its 404.
	require.NoError(t, os.Remove(filepath.Join(c.Dir, "storage", "builds", nocerts.ID+".zip")))
	r = c.Get("/api/builds/"+nocerts.ID+"/source", c.KeyH("X-Worker-Id", other))
	require.Equal(t, http.StatusNotFound, r.Status)
	require.Equal(t, "Source file not found", r.Error(t))
}

func TestCertsSecure(t *testing.T) {
	t.Parallel()
	c := Start(t)
	b := c.Submit("ios", []byte("s"), DefaultCerts(t))
	badZip := c.Submit("ios", []byte("s"), []byte("a bare .p12, not a zip"))
	slip := c.Submit("ios", []byte("s"), CertsZip(t, map[string]string{"../evil.p12": "x"}))
	noCerts := c.Submit("ios", []byte("s"), nil)
	w := c.Register("w")
	other := c.Register("other")
	require.Equal(t, b.ID, c.Poll(w)["id"])

	path := "/api/builds/" + b.ID + "/certs-secure"
	h := func(kv ...string) H { return c.KeyH(append([]string{"Accept", "application/json"}, kv...)...) }
	cases := []struct {
		name   string
		path   string
		h      H
		status int
		msg    string
	}{
		{"NoKey", path, H{"X-Worker-Id": w, "X-Build-Id": b.ID}, 401, "Missing X-API-Key header"},
		{"NoWorker", path, h("X-Build-Id", b.ID), 401, "Missing X-Worker-Id header"},
		{"NoBuildHeader", path, h("X-Worker-Id", w), 401, "Missing X-Build-Id header"},
		{"NonUUIDPath", "/api/builds/nope/certs-secure", h("X-Worker-Id", w, "X-Build-Id", "nope"), 404, "Build not found"},
		{"Mismatch", path, h("X-Worker-Id", w, "X-Build-Id", noCerts.ID), 403, "X-Build-Id header does not match build ID in URL"},
		{"Unknown", "/api/builds/00000000-0000-4000-8000-000000000000/certs-secure", h("X-Worker-Id", w, "X-Build-Id", "00000000-0000-4000-8000-000000000000"), 404, "Build not found"},
		{"OtherWorker", path, h("X-Worker-Id", other, "X-Build-Id", b.ID), 403, "Worker not assigned to this build"},
		{"PendingBuild", "/api/builds/" + noCerts.ID + "/certs-secure", h("X-Worker-Id", w, "X-Build-Id", noCerts.ID), 403, "Worker not assigned to this build"},
	}
	for _, tc := range cases {
		r := c.Get(tc.path, tc.h)
		require.Equal(t, tc.status, r.Status, tc.name)
		require.Equal(t, tc.msg, r.Error(t), tc.name)
	}
	r := c.Get(path, h("X-Worker-Id", w, "X-Build-Id", b.ID))
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	m := r.Object(t)
	require.Len(t, m, 4)
	p12, err := base64.StdEncoding.DecodeString(m["p12"].(string))
	require.NoError(t, err)
	require.Equal(t, "P12-BYTES", string(p12))
	require.Equal(t, "s3cret", m["p12Password"])
	require.Len(t, m["keychainPassword"], 32)
	profiles := m["provisioningProfiles"].([]any)
	require.Len(t, profiles, 1)
	prof, _ := base64.StdEncoding.DecodeString(profiles[0].(string))
	require.Equal(t, "PROFILE-1", string(prof))
	again := c.Get(path, h("X-Worker-Id", w, "X-Build-Id", b.ID)).Object(t)
	require.NotEqual(t, m["keychainPassword"], again["keychainPassword"], "fresh on every call")
	require.Equal(t, "building", c.Status(b.ID)["status"])
	require.NotContains(t, c.Logs(), "s3cret", "secrets are never logged")

	// Bundles that are not zips or break the rules, and builds without certs.
	for _, tc := range []struct {
		id, msg string
		status  int
	}{{badZip.ID, "Failed to process certs file", 500}, {slip.ID, "Failed to process certs file", 500}, {noCerts.ID, "Certs not found", 404}} {
		c.PostJSON("/api/builds/"+b.ID+"/cancel", nil, c.KeyH()) // free w
		for {
			job := c.Poll(w)
			require.NotNil(t, job)
			if job["id"] == tc.id {
				break
			}
			c.PostJSON("/api/builds/"+job["id"].(string)+"/cancel", nil, c.KeyH())
		}
		r := c.Get("/api/builds/"+tc.id+"/certs-secure", h("X-Worker-Id", w, "X-Build-Id", tc.id))
		require.Equal(t, tc.status, r.Status)
		require.Equal(t, tc.msg, r.Error(t))
		c.PostJSON("/api/builds/"+tc.id+"/cancel", nil, c.KeyH())
	}
}

func TestPostLogs(t *testing.T) {
	t.Parallel()
	c := Start(t)
	b := c.Submit("ios", []byte("s"), nil)
	w := c.Register("w")
	other := c.Register("other")
	path := "/api/builds/" + b.ID + "/logs"
	// Pending: closed to everyone.
	r := c.PostJSON(path, map[string]string{"level": "info", "message": "x"}, c.KeyH("X-Worker-Id", w))
	require.Equal(t, http.StatusForbidden, r.Status)
	require.Equal(t, "Worker not authorized for this build", r.Error(t))
	c.Poll(w)
	wh := c.KeyH("X-Worker-Id", w)

	r = c.PostJSON(path, map[string]string{"level": "info", "message": "x"}, c.KeyH())
	require.Equal(t, http.StatusUnauthorized, r.Status)
	require.Equal(t, "Missing X-Worker-Id header", r.Error(t))
	r = c.PostJSON(path, map[string]string{"level": "info", "message": "x"}, c.KeyH("X-Worker-Id", other))
	require.Equal(t, http.StatusForbidden, r.Status)

	r = c.PostJSON(path, map[string]string{"level": "warn", "message": "single line"}, wh)
	require.Equal(t, http.StatusOK, r.Status)
	require.Equal(t, map[string]any{"success": true}, r.Object(t))
	require.Equal(t, "building", c.Status(b.ID)["status"])

	r = c.PostJSON(path, map[string]any{"logs": []any{
		map[string]any{"level": "info", "message": "one"},
		map[string]any{"level": "debug", "message": "skipped: level"},
		map[string]any{"level": "info"},
		"not an object",
		map[string]any{"level": "error", "message": "two"},
	}}, wh)
	require.Equal(t, http.StatusOK, r.Status)
	require.Equal(t, map[string]any{"success": true, "count": 2.0}, r.Object(t))
	msgs := c.LogMessages(b.ID)
	require.Equal(t, []string{"single line", "one", "two"}, msgs[len(msgs)-3:])

	for _, tc := range []struct{ body, msg string }{
		{`{"level":"verbose","message":"x"}`, "Invalid log level. Must be: info, warn, or error"},
		{`{"level":"info"}`, "Invalid body. Expected { level, message } or { logs: [...] }"},
		{`{"message":"x"}`, "Invalid body. Expected { level, message } or { logs: [...] }"},
		{`{"level":1,"message":"x"}`, "Invalid body. Expected { level, message } or { logs: [...] }"},
		{`{"logs":"nope"}`, "Invalid body. Expected { level, message } or { logs: [...] }"},
		{``, "Invalid body. Expected { level, message } or { logs: [...] }"},
		{`[1,2]`, "Invalid body. Expected { level, message } or { logs: [...] }"},
		{`{"level":`, "Invalid JSON body"},
	} {
		r := c.PostJSON(path, tc.body, wh)
		require.Equal(t, http.StatusBadRequest, r.Status, tc.body)
		require.Equal(t, tc.msg, r.Error(t), tc.body)
	}
	require.Len(t, c.LogMessages(b.ID), len(msgs), "refused posts change nothing")
}

func TestHeartbeat(t *testing.T) {
	t.Parallel()
	c := Start(t)
	b := c.Submit("ios", []byte("s"), nil)
	w := c.Register("w")
	other := c.Register("other")
	hb := func(id, query, body string) Response {
		return c.PostJSON("/api/builds/"+id+"/heartbeat"+query, body, c.KeyH())
	}
	r := hb(b.ID, "?worker_id="+w, "")
	require.Equal(t, http.StatusForbidden, r.Status, "pending build")
	require.Equal(t, "Build not assigned to this worker", r.Error(t))
	c.Poll(w)
	for _, tc := range []struct {
		name, id, query, body string
		status                int
		msg                   string
	}{
		{"NoWorker", b.ID, "", "", 400, "worker_id required"},
		{"NotFound", "00000000-0000-4000-8000-000000000000", "?worker_id=" + w, "", 404, "Build not found"},
		{"NonUUID", "nope", "?worker_id=" + w, "", 404, "Build not found"},
		{"OtherWorker", b.ID, "?worker_id=" + other, "", 403, "Build not assigned to this worker"},
		{"BadJSON", b.ID, "?worker_id=" + w, "{", 400, "Invalid JSON body"},
		{"ProgressString", b.ID, "?worker_id=" + w, `{"progress":"50"}`, 400, "progress must be a number between 0 and 100"},
		{"ProgressHigh", b.ID, "?worker_id=" + w, `{"progress":100.5}`, 400, "progress must be a number between 0 and 100"},
		{"ProgressNegative", b.ID, "?worker_id=" + w, `{"progress":-1}`, 400, "progress must be a number between 0 and 100"},
	} {
		r := hb(tc.id, tc.query, tc.body)
		require.Equal(t, tc.status, r.Status, tc.name)
		require.Equal(t, tc.msg, r.Error(t), tc.name)
	}
	for _, body := range []string{"", "{}", `{"progress":50}`, `{"progress":50}`, `{"progress":100}`} {
		r := hb(b.ID, "?worker_id="+w, body)
		require.Equal(t, http.StatusOK, r.Status, body)
		m := r.Object(t)
		require.Equal(t, "ok", m["status"])
		require.IsType(t, float64(0), m["timestamp"])
	}
	msgs := c.LogMessages(b.ID)
	require.Equal(t, []string{"Build progress: 50%", "Build progress: 100%"}, msgs[len(msgs)-2:], "logged when it changes")
	require.Equal(t, "building", c.Status(b.ID)["status"])
}

func TestTelemetry(t *testing.T) {
	t.Parallel()
	c := Start(t)
	b := c.Submit("ios", []byte("s"), nil)
	pending := c.Submit("android", []byte("p"), nil)
	w := c.Register("w", "ios")
	other := c.Register("other", "ios")
	c.Poll(w)
	path := "/api/builds/" + b.ID + "/telemetry"
	ident := func(kv ...string) H { return c.KeyH(append([]string{"X-Worker-Id", w, "X-Build-Id", b.ID}, kv...)...) }

	// With the key: checks 1–7 of certs-secure.
	for _, tc := range []struct {
		name   string
		path   string
		h      H
		status int
		msg    string
	}{
		{"WrongKey", path, H{"X-API-Key": "wrong-wrong-wrong-wrong", "X-Worker-Id": w, "X-Build-Id": b.ID}, 403, "Invalid API key"},
		{"NoWorker", path, c.KeyH("X-Build-Id", b.ID), 401, "Missing X-Worker-Id header"},
		{"NoBuild", path, c.KeyH("X-Worker-Id", w), 401, "Missing X-Build-Id header"},
		{"Mismatch", path, c.KeyH("X-Worker-Id", w, "X-Build-Id", pending.ID), 403, "X-Build-Id header does not match build ID in URL"},
		{"Other", path, c.KeyH("X-Worker-Id", other, "X-Build-Id", b.ID), 403, "Worker not assigned to this build"},
	} {
		r := c.PostJSON(tc.path, `{"type":"monitor_started"}`, tc.h)
		require.Equal(t, tc.status, r.Status, tc.name)
		require.Equal(t, tc.msg, r.Error(t), tc.name)
	}
	// Keyless: every identity failure is 401 Missing X-API-Key header.
	for name, h := range map[string]H{
		"NoIdentity":   nil,
		"OtherWorker":  {"X-Worker-Id": other, "X-Build-Id": b.ID},
		"Mismatch":     {"X-Worker-Id": w, "X-Build-Id": pending.ID},
		"PendingBuild": {"X-Worker-Id": w, "X-Build-Id": pending.ID},
	} {
		target := path
		if name == "PendingBuild" {
			target = "/api/builds/" + pending.ID + "/telemetry"
		}
		r := c.PostJSON(target, `{"type":"cpu_snapshot","data":{"cpu_percent":1,"memory_mb":1}}`, h)
		require.Equal(t, http.StatusUnauthorized, r.Status, name)
		require.Equal(t, "Missing X-API-Key header", r.Error(t), name)
	}
	// The keyless form opens nothing else.
	r := c.Get("/api/builds/"+b.ID+"/source", H{"X-Worker-Id": w, "X-Build-Id": b.ID})
	require.Equal(t, http.StatusUnauthorized, r.Status)

	before := len(c.LogMessages(b.ID))
	send := func(h H, body string) {
		t.Helper()
		r := c.PostJSON(path, body, h)
		require.Equal(t, http.StatusOK, r.Status, "%s: %s", body, r.Body)
		require.Equal(t, map[string]any{"status": "ok"}, r.Object(t))
	}
	keyless := H{"X-Worker-Id": w, "X-Build-Id": b.ID}
	send(ident(), `{"type":"monitor_started","timestamp":"2026-11-26T10:00:00Z","data":{}}`)
	send(ident(), `{"type":"heartbeat","timestamp":"2026-11-26T10:00:30Z","data":{"heartbeat_count":1,"stage":"xcodebuild","metrics":{"cpu_percent":85.5,"memory_mb":2048,"disk_percent":40,"processes":312},"uptime_seconds":30}}`)
	send(ident(), `{"type":"heartbeat","data":{"stage":"archive"}}`)
	send(keyless, `{"type":"cpu_snapshot","timestamp":"2026-11-26T10:00:35Z","data":{"cpu_percent":42.5,"memory_mb":8192}}`)
	send(keyless, `{"type":"cpu_snapshot","data":{"cpu_percent":5000,"memory_mb":1}}`) // out of range: ignored, still 200
	send(ident(), `{"type":"disk_warning","data":{"free_gb":3,"path":"/Volumes/x"}}`)
	send(ident(), `{"type":"big","data":{"blob":"`+strings.Repeat("é", 2000)+`"}}`)
	msgs := c.LogMessages(b.ID)[before:]
	require.Equal(t, "[VM] Monitor started", msgs[0])
	require.Equal(t, "[VM] Stage: xcodebuild | CPU: 85.5% | Memory: 2048 MB | Disk: 40% | Processes: 312", msgs[1])
	require.Equal(t, "[VM] Stage: archive", msgs[2])
	require.Equal(t, `[VM] disk_warning: {"free_gb":3,"path":"/Volumes/x"}`, msgs[3], "cpu_snapshot writes no log line")
	require.Len(t, []rune(msgs[4]), len("[VM] big: ")+1000)
	require.Len(t, msgs, 5)
	require.Equal(t, "building", c.Status(b.ID)["status"])

	for _, body := range []string{`{}`, `{"type":""}`, `{"type":5}`, `{"type":"x","data":[1]}`, `{"type":"x","timestamp":5}`, `[]`} {
		r := c.PostJSON(path, body, ident())
		require.Equal(t, http.StatusBadRequest, r.Status, body)
		require.Equal(t, "Invalid telemetry data", r.Error(t), body)
	}
}

func TestUpload(t *testing.T) {
	t.Parallel()
	c := Start(t, WithConfig(func(cfg *app.Config) { cfg.MaxResultSize = 1000 }))
	b := c.Submit("ios", []byte("s"), nil)
	w := c.Register("w")
	other := c.Register("other")
	c.Poll(w)
	// Before the checks: content type, declared length, framing.
	r := c.PostJSON("/api/workers/upload", `{"build_id":"x"}`, c.KeyH())
	require.Equal(t, http.StatusBadRequest, r.Status)
	require.Equal(t, "Content must be multipart/form-data", r.Error(t))
	for _, tc := range []struct {
		name   string
		parts  []Part
		status int
		msg    string
	}{
		{"NoIDs", []Part{{Name: "success", Data: []byte("true")}}, 400, "build_id and worker_id required"},
		{"NoWorkerID", []Part{{Name: "build_id", Data: []byte(b.ID)}, {Name: "result", Filename: "r", Data: []byte("x")}}, 400, "build_id and worker_id required"},
		{"UnknownBuild", []Part{{Name: "build_id", Data: []byte("00000000-0000-4000-8000-000000000000")}, {Name: "worker_id", Data: []byte(w)}}, 404, "Build not found"},
		{"NonUUIDBuild", []Part{{Name: "build_id", Data: []byte("../../x")}, {Name: "worker_id", Data: []byte(w)}}, 404, "Build not found"},
		{"UnknownWorker", []Part{{Name: "build_id", Data: []byte(b.ID)}, {Name: "worker_id", Data: []byte("00000000-0000-4000-8000-000000000000")}}, 404, "Worker not found"},
		{"OtherWorker", []Part{{Name: "build_id", Data: []byte(b.ID)}, {Name: "worker_id", Data: []byte(other)}, {Name: "success", Data: []byte("true")}, {Name: "result", Filename: "r", Data: []byte("x")}}, 403, "Build not assigned to this worker"},
		{"TooLarge", []Part{{Name: "build_id", Data: []byte(b.ID)}, {Name: "worker_id", Data: []byte(w)}, {Name: "success", Data: []byte("true")}, {Name: "result", Filename: "r", Data: bytes.Repeat([]byte("r"), 1001)}}, 413, "Result file too large"},
	} {
		r := c.PostMultipart("/api/workers/upload", c.KeyH(), tc.parts...)
		require.Equal(t, tc.status, r.Status, tc.name)
		require.Equal(t, tc.msg, r.Error(t), tc.name)
	}
	require.Equal(t, "assigned", c.Status(b.ID)["status"], "refused uploads change nothing")
	require.Empty(t, storageFiles(t, filepath.Join(c.Dir, "storage", "results")))

	// Exactly at the limit, on the alias.
	result := bytes.Repeat([]byte("r"), 1000)
	r = c.PostMultipart("/api/workers/result", c.KeyH(), Part{Name: "build_id", Data: []byte(b.ID)},
		Part{Name: "worker_id", Data: []byte(w)}, Part{Name: "success", Data: []byte("true")},
		Part{Name: "result", Filename: "whatever.zip", Data: result})
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	require.Equal(t, map[string]any{"status": "success"}, r.Object(t))
	st := c.Status(b.ID)
	require.Equal(t, "completed", st["status"])
	require.Nil(t, st["error_message"])
	require.Equal(t, 1.0, c.WorkerStats(w)["successfulBuilds"])
	require.Equal(t, "idle", c.WorkerStats(w)["status"])

	// The VM already delivered: a file-less success is a no-op 200; with a file, 409.
	r = c.Upload(b.ID, w, true, nil, "")
	require.Equal(t, http.StatusOK, r.Status)
	require.Equal(t, map[string]any{"status": "success"}, r.Object(t))
	r = c.Upload(b.ID, w, true, []byte("again"), "")
	require.Equal(t, http.StatusConflict, r.Status)
	require.Equal(t, "Build already finished", r.Error(t))
	r = c.Upload(b.ID, w, false, nil, "late failure")
	require.Equal(t, http.StatusConflict, r.Status)
	r = c.Upload(b.ID, other, true, nil, "")
	require.Equal(t, http.StatusForbidden, r.Status)
	ws := c.WorkerStats(w)
	require.Equal(t, 1.0, ws["totalBuilds"], "counted once")
	got := c.Get("/api/builds/"+b.ID+"/download", c.KeyH())
	require.Equal(t, result, got.Body)

	// Failure: message or default; any file discarded; error log.
	f1 := c.Submit("ios", []byte("s"), nil)
	c.Poll(w)
	r = c.Upload(f1.ID, w, false, []byte("partial"), "")
	require.Equal(t, http.StatusOK, r.Status)
	require.Equal(t, map[string]any{"status": "failed"}, r.Object(t))
	st = c.Status(f1.ID)
	require.Equal(t, "failed", st["status"])
	require.Equal(t, "Build failed", st["error_message"])
	msgs := c.LogMessages(f1.ID)
	require.Equal(t, "Build failed: Build failed", msgs[len(msgs)-1])
	require.NoFileExists(t, filepath.Join(c.Dir, "storage", "results", f1.ID+".ipa"))
	f2 := c.Submit("ios", []byte("s"), nil)
	c.Poll(w)
	// success=true without a file is not a success.
	r = c.Upload(f2.ID, w, true, nil, "")
	require.Equal(t, map[string]any{"status": "failed"}, r.Object(t))
	f3 := c.Submit("ios", []byte("s"), nil)
	c.Poll(w)
	require.Equal(t, http.StatusOK, c.Upload(f3.ID, w, false, nil, "Code signing failed").Status)
	require.Equal(t, "Code signing failed", c.Status(f3.ID)["error_message"])
	ws = c.WorkerStats(w)
	require.Equal(t, map[string]any{"totalBuilds": 4.0, "successfulBuilds": 1.0, "failedBuilds": 3.0,
		"workerName": "w", "status": "idle", "uptime": ws["uptime"]}, ws)
}

func TestUploadSwiftMultipart(t *testing.T) {
	t.Parallel()
	c := Start(t)
	b := c.Submit("ios", []byte("s"), nil)
	w := c.Register("w")
	c.Poll(w)
	// The Swift worker builds its multipart body by hand.
	boundary := "Boundary-7E2C8A10-1F3D-4B5A-9C6E-1234567890AB"
	var body bytes.Buffer
	field := func(name, value string) {
		body.WriteString("--" + boundary + "\r\nContent-Disposition: form-data; name=\"" + name + "\"\r\n\r\n" + value + "\r\n")
	}
	field("build_id", b.ID)
	field("worker_id", w)
	field("success", "true")
	body.WriteString("--" + boundary + "\r\nContent-Disposition: form-data; name=\"result\"; filename=\"App.ipa\"\r\nContent-Type: application/octet-stream\r\n\r\n")
	body.WriteString("IPA-CONTENT\r\n--" + boundary + "--\r\n")
	r := c.Do(http.MethodPost, "/api/workers/upload", &body, c.KeyH("Content-Type", "multipart/form-data; boundary="+boundary))
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	require.Equal(t, "IPA-CONTENT", string(c.Get("/api/builds/"+b.ID+"/download", c.KeyH()).Body))
}

func TestUnregister(t *testing.T) {
	t.Parallel()
	c := Start(t)
	first := c.Submit("ios", []byte("1"), nil)
	second := c.Submit("ios", []byte("2"), nil)
	w := c.Register("w")
	require.Equal(t, first.ID, c.Poll(w)["id"])
	r := c.PostJSON("/api/workers/"+w+"/unregister", nil, c.KeyH())
	require.Equal(t, http.StatusOK, r.Status)
	require.Equal(t, map[string]any{"success": true, "message": "Worker unregistered", "builds_reassigned": 1.0}, r.Object(t))
	st := c.Status(first.ID)
	require.Equal(t, "pending", st["status"])
	require.Nil(t, st["worker_id"])
	require.Nil(t, st["started_at"])
	msgs := c.LogMessages(first.ID)
	require.Equal(t, "Build requeued: worker w unregistered", msgs[len(msgs)-1])
	require.Equal(t, "offline", c.WorkerStats(w)["status"])
	// It regains its place ahead of later submissions.
	w2 := c.Register("w2")
	require.Equal(t, first.ID, c.Poll(w2)["id"])
	// Polling again brings the first worker back.
	require.Equal(t, second.ID, c.Poll(w)["id"])
	require.Equal(t, "building", c.WorkerStats(w)["status"])

	// The second path: query, header, then body.
	for _, tc := range []struct {
		query string
		h     H
		body  any
	}{
		{"?worker_id=" + w2, c.KeyH(), nil},
		{"", c.KeyH("X-Worker-Id", w2), nil},
		{"", c.KeyH(), map[string]string{"worker_id": w2}},
	} {
		r = c.PostJSON("/api/workers/unregister"+tc.query, tc.body, tc.h)
		require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	}
	r = c.PostJSON("/api/workers/unregister", nil, c.KeyH())
	require.Equal(t, http.StatusBadRequest, r.Status)
	require.Equal(t, "worker_id required", r.Error(t))
	for _, path := range []string{"/api/workers/nope/unregister", "/api/workers/00000000-0000-4000-8000-000000000000/unregister"} {
		r = c.PostJSON(path, nil, c.KeyH())
		require.Equal(t, http.StatusNotFound, r.Status)
		require.Equal(t, "Worker not found", r.Error(t))
	}
}

func TestWorkerStats(t *testing.T) {
	t.Parallel()
	c := Start(t, WithManualClock())
	w := c.Register("stats-worker")
	for _, tc := range []struct {
		advance time.Duration
		uptime  string
	}{{0, "0s"}, {59 * time.Second, "59s"}, {61 * time.Second, "2m 0s"}, {time.Hour, "1h 2m"}, {25 * time.Hour, "1d 2h"}} {
		c.Clock.Advance(tc.advance)
		st := c.WorkerStats(w)
		require.Equal(t, tc.uptime, st["uptime"])
	}
	require.Equal(t, map[string]any{"totalBuilds": 0.0, "successfulBuilds": 0.0, "failedBuilds": 0.0,
		"workerName": "stats-worker", "status": "idle", "uptime": "1d 2h"}, c.WorkerStats(w))
	for _, id := range []string{"nope", "00000000-0000-4000-8000-000000000000"} {
		r := c.Get("/api/workers/"+id+"/stats", c.KeyH())
		require.Equal(t, http.StatusNotFound, r.Status)
		require.Equal(t, "Worker not found", r.Error(t))
	}
}

func TestDiagnostics(t *testing.T) {
	t.Parallel()
	c := Start(t)
	w := c.Register("diag")
	path := "/api/diagnostics/report"
	r := c.Get("/api/diagnostics/"+w+"/latest", c.KeyH())
	require.Equal(t, http.StatusNotFound, r.Status)
	require.Equal(t, "No diagnostic reports found", r.Error(t))
	for _, tc := range []struct {
		body   string
		status int
		msg    string
	}{
		{`{}`, 400, "Missing required fields: worker_id, status, duration_ms, checks"},
		{`{"worker_id":"` + w + `","status":"healthy","duration_ms":null,"checks":[]}`, 400, "Missing required fields: worker_id, status, duration_ms, checks"},
		{`{"worker_id":"` + w + `","status":"fine","duration_ms":1,"checks":[]}`, 400, "Invalid status. Must be: healthy, warning, or critical"},
		{`{"worker_id":"00000000-0000-4000-8000-000000000000","status":"healthy","duration_ms":1,"checks":[]}`, 404, "Worker not found"},
		{`{"worker_id":"nope","status":"healthy","duration_ms":1,"checks":[]}`, 404, "Worker not found"},
		{`{"worker_id":"` + w + `","status":"healthy","duration_ms":1,"checks":{}}`, 400, "checks must be an array"},
		{`{"worker_id":`, 400, "Invalid JSON body"},
	} {
		r := c.PostJSON(path, tc.body, c.KeyH())
		require.Equal(t, tc.status, r.Status, tc.body)
		require.Equal(t, tc.msg, r.Error(t), tc.body)
	}
	var ids []string
	for i, status := range []string{"healthy", "warning", "critical"} {
		r := c.PostJSON(path, map[string]any{"worker_id": w, "status": status, "run_at": 1, "duration_ms": 1234.9 + float64(i),
			"auto_fixed": i == 1, "checks": []any{map[string]any{"name": "disk", "status": "pass", "message": "ok", "extra": []int{1}}}}, c.KeyH())
		require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
		m := r.Object(t)
		require.Equal(t, "stored", m["status"])
		ids = append(ids, m["id"].(string))
	}
	r = c.Get("/api/diagnostics/"+w+"?limit=2", c.KeyH())
	require.Equal(t, http.StatusOK, r.Status)
	m := r.Object(t)
	require.Equal(t, w, m["worker_id"])
	reports := m["reports"].([]any)
	require.Len(t, reports, 2)
	latest := reports[0].(map[string]any)
	require.Equal(t, ids[2], latest["id"], "newest first")
	require.Equal(t, 1236.0, latest["duration_ms"], "truncated")
	require.NotEqual(t, 1.0, latest["run_at"], "server receive time")
	require.Equal(t, false, latest["auto_fixed"])
	require.Equal(t, []any{map[string]any{"name": "disk", "status": "pass", "message": "ok", "extra": []any{1.0}}}, latest["checks"])
	for _, q := range []string{"", "?limit=0", "?limit=101", "?limit=x"} {
		r = c.Get("/api/diagnostics/"+w+q, c.KeyH())
		require.Len(t, r.Object(t)["reports"], 3, q)
	}
	r = c.Get("/api/diagnostics/"+w+"/latest", c.KeyH())
	require.Equal(t, http.StatusOK, r.Status)
	require.Equal(t, latest, r.Object(t))
	for _, p := range []string{"/api/diagnostics/nope", "/api/diagnostics/00000000-0000-4000-8000-000000000000/latest"} {
		r = c.Get(p, c.KeyH())
		require.Equal(t, http.StatusNotFound, r.Status)
		require.Equal(t, "Worker not found", r.Error(t))
	}
}

// Regressions found by fuzzing: encoding/json's struct decoding matches keys
// case-insensitively, so a case variant could replace the value that passed
// validation; an empty path id must not fall back to the query.
func TestCaseVariantKeysAreNotStored(t *testing.T) {
	t.Parallel()
	c := Start(t)
	r := c.PostJSON("/api/workers/register", `{"name":"mac","capabilities":{"platforms":["android"]},"Capabilities":"x"}`, c.KeyH())
	require.Equal(t, http.StatusOK, r.Status)
	w := r.Object(t)["id"].(string)
	c.Submit("ios", []byte("s"), nil)
	require.Nil(t, c.Poll(w), "an android-only worker must not get an ios build")

	d := c.Register("diag")
	r = c.PostJSON("/api/diagnostics/report", `{"worker_id":"`+d+`","status":"healthy","duration_ms":1e300,"checks":[],"CHECKS":{"not":"an array"}}`, c.KeyH())
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	latest := c.Get("/api/diagnostics/"+d+"/latest", c.KeyH()).Object(t)
	require.Equal(t, []any{}, latest["checks"])
	require.Greater(t, latest["duration_ms"], 0.0, "clamped, not overflowed")

	r = c.Do(http.MethodPost, "/api/workers//unregister", nil, c.KeyH("X-Worker-Id", d))
	require.Equal(t, http.StatusNotFound, r.Status)
	require.Equal(t, "Worker not found", r.Error(t))
	require.Equal(t, "idle", c.WorkerStats(d)["status"])
}

// TestCapabilitiesAndChecksStoredAsSent: the protocol stores capabilities
// "as sent" and checks "verbatim" — whitespace and key order included.
func TestCapabilitiesAndChecksStoredAsSent(t *testing.T) {
	t.Parallel()
	c := Start(t)
	caps := `{ "platforms" : [ "ios" ],  "z": 1, "a": {"n": 2} }`
	r := c.PostJSON("/api/workers/register", `{"name":"n","capabilities":`+caps+`}`, c.KeyH())
	require.Equal(t, http.StatusOK, r.Status)
	w := r.Object(t)["id"].(string)
	checks := `[ {"name": "disk",  "status":"pass"} ]`
	r = c.PostJSON("/api/diagnostics/report", `{"worker_id":"`+w+`","status":"healthy","duration_ms":1,"checks":`+checks+`}`, c.KeyH())
	require.Equal(t, http.StatusOK, r.Status)
	c.Stop()
	db := testkit.OpenRaw(t, c.App.Config.DBPath)
	var gotCaps, gotChecks string
	require.NoError(t, db.QueryRow(testkit.Q(`SELECT capabilities FROM workers WHERE id = ?`), w).Scan(&gotCaps))
	require.NoError(t, db.QueryRow(testkit.Q(`SELECT checks FROM diagnostics WHERE worker_id = ?`), w).Scan(&gotChecks))
	require.Equal(t, caps, gotCaps)
	require.Equal(t, checks, gotChecks)
}
