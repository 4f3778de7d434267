package test

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/cmd/app"
)

// The credentials of the newer worker generation (docs/API.md §4.12 worker
// tokens, §4.13 one-time passwords and VM tokens, §4.14 the VM endpoints,
// the host token and the grace after completion, §4.16 abandon, §4.17 the
// worker key), driven through the real tree with a manual clock.

const (
	tkMsgBadWorkerToken = "Invalid or expired worker token"
	tkMsgBadVMToken     = "Invalid or expired VM token"
	tkMsgTokenMismatch  = "Worker token does not match worker_id"
	tkMsgNotAssigned    = "Build not assigned to this worker"
	tkMsgInvalidKey     = "Invalid API key"
	tkMsgMissingKey     = "Missing X-API-Key header"
)

// tkTokenRe is a token as minted: 32 random bytes, base64url, unpadded.
var tkTokenRe = regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`)

// tkStart starts a controller on a manual clock whose build and worker
// timeouts lie far beyond anything a test moves the clock by, so the
// monitor's own ticks never change what a test looks at; opts come after.
func tkStart(t *testing.T, opts ...Option) *Controller {
	t.Helper()
	base := []Option{WithManualClock(), WithConfig(func(cfg *app.Config) {
		cfg.BuildTimeout, cfg.WorkerTimeout = 24*time.Hour, 24*time.Hour
		// The monitor's own ticks as rare as allowed: tests run its check
		// with CheckNow after moving the clock.
		cfg.MonitorInterval = 15 * time.Second
	})}
	return Start(t, append(base, opts...)...)
}

// tkISO is a time as the new endpoints write it.
func tkISO(at time.Time) string { return at.UTC().Format("2006-01-02T15:04:05.000Z") }

// tkRefused requires an error answer with exactly this status and text.
func tkRefused(t *testing.T, r Response, status int, msg string, what string, args ...any) {
	t.Helper()
	w := fmt.Sprintf(what, args...)
	require.Equal(t, status, r.Status, "%s: %s", w, r.Body)
	require.Equal(t, msg, r.Error(t), w)
}

// tkOK requires 200.
func tkOK(t *testing.T, r Response, what string, args ...any) Response {
	t.Helper()
	require.Equal(t, http.StatusOK, r.Status, "%s: %s", fmt.Sprintf(what, args...), r.Body)
	return r
}

// tkWT is the worker-token header, plus extra headers.
func tkWT(token string, extra ...string) H {
	h := H{"X-Worker-Token": token}
	for i := 0; i+1 < len(extra); i += 2 {
		h[extra[i]] = extra[i+1]
	}
	return h
}

// tkVMH is the X-VM-Token header.
func tkVMH(token string) H { return H{"X-VM-Token": token} }

// tkPoll polls with the worker token only (the newer host's poll).
func tkPoll(c *Controller, token string) Response {
	c.t.Helper()
	return c.Get("/api/workers/poll", tkWT(token))
}

// tkPollToken polls with the token, requires 200 and returns the token the
// answer carries (the current one, rotated or not) and the job, if any.
func tkPollToken(t *testing.T, c *Controller, token string) (string, map[string]any) {
	t.Helper()
	r := tkOK(t, tkPoll(c, token), "token poll")
	m := r.Object(t)
	require.Contains(t, m, "job")
	next, ok := m["access_token"].(string)
	require.True(t, ok, "a token poll always answers with a top-level access_token: %s", r.Body)
	require.Regexp(t, tkTokenRe, next)
	job, _ := m["job"].(map[string]any)
	return next, job
}

// tkTokenAccepted tells whether a worker token is accepted, without using
// a poll (which may rotate it): an abandon naming no build is refused 400
// by the handler once the credential passed, 401 before.
func tkTokenAccepted(t *testing.T, c *Controller, token string) bool {
	t.Helper()
	r := c.PostJSON("/api/workers/abandon", `{}`, tkWT(token))
	switch r.Status {
	case http.StatusBadRequest:
		require.Equal(t, "build_id and worker_id required", r.Error(t))
		return true
	case http.StatusUnauthorized:
		require.Equal(t, tkMsgBadWorkerToken, r.Error(t))
		return false
	}
	t.Fatalf("probe with a worker token: %d %s", r.Status, r.Body)
	return false
}

// tkRequireBadWorkerToken requires a token poll to be refused as a bad
// worker token, also next to the valid admin key.
func tkRequireBadWorkerToken(t *testing.T, c *Controller, token, what string) {
	t.Helper()
	tkRefused(t, tkPoll(c, token), http.StatusUnauthorized, tkMsgBadWorkerToken, "%s: poll", what)
	tkRefused(t, c.Get("/api/workers/poll", c.KeyH("X-Worker-Token", token)), http.StatusUnauthorized,
		tkMsgBadWorkerToken, "%s: poll next to a valid key", what)
}

// tkRegister registers (or re-registers id) with the admin key and returns
// the whole answer.
func tkRegister(t *testing.T, c *Controller, name, id string) map[string]any {
	t.Helper()
	body := map[string]any{"name": name, "capabilities": map[string]any{}}
	if id != "" {
		body["id"] = id
	}
	return tkOK(t, c.PostJSON("/api/workers/register", body, c.KeyH()), "register").Object(t)
}

// tkCheckNow runs one liveness check at the manual clock's time.
func tkCheckNow(t *testing.T, c *Controller) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, c.App.Monitor.CheckNow(ctx))
}

// tkAssignment is a build held by a worker of the newer generation, with
// the one-time password of its delivery.
type tkAssignment struct {
	build  Submitted
	source []byte
	worker string // the host's worker id
	token  string // its worker token
	otp    string
}

// tkAssign submits a build, registers a newer host and hands it the build
// with a token poll. No other build may be pending.
func tkAssign(t *testing.T, c *Controller, name, platform string, certs []byte) tkAssignment {
	t.Helper()
	a := tkAssignment{source: []byte("SOURCE-OF-" + name)}
	a.build = c.Submit(platform, a.source, certs)
	a.worker, a.token = c.RegisterV2(name)
	_, job := tkPollToken(t, c, a.token)
	require.NotNil(t, job, "a job")
	require.Equal(t, a.build.ID, job["id"])
	otp, ok := job["otp"].(string)
	require.True(t, ok, "every job carries an otp: %v", job)
	require.Regexp(t, tkTokenRe, otp)
	a.otp = otp
	return a
}

// tkAuthenticate trades an OTP, requires 200 and returns the VM token.
func tkAuthenticate(t *testing.T, c *Controller, buildID, otp string) string {
	t.Helper()
	r := tkOK(t, c.PostJSON("/api/builds/"+buildID+"/authenticate", map[string]string{"otp": otp}, nil), "authenticate")
	m := r.Object(t)
	require.Len(t, m, 2, "%s", r.Body)
	vm, _ := m["vm_token"].(string)
	require.Regexp(t, tkTokenRe, vm)
	return vm
}

// tkAuthRefused requires an authenticate to be refused.
func tkAuthRefused(t *testing.T, c *Controller, path string, body any, status int, msg, what string) {
	t.Helper()
	tkRefused(t, c.PostJSON(path, body, nil), status, msg, "%s", what)
}

// tkVMStatus returns the public vm-status answer.
func tkVMStatus(t *testing.T, c *Controller, buildID string) map[string]any {
	t.Helper()
	return tkOK(t, c.Get("/api/builds/"+buildID+"/vm-status", nil), "vm-status").Object(t)
}

// tkReady says the VM is ready and returns the host token vm-status hands
// out, checking that it never is the VM token.
func tkReady(t *testing.T, c *Controller, buildID, vm string) string {
	t.Helper()
	tkOK(t, c.Do(http.MethodPost, "/api/builds/"+buildID+"/vm-ready", nil, tkVMH(vm)), "vm-ready")
	st := tkVMStatus(t, c, buildID)
	require.Equal(t, true, st["vm_ready"])
	host, _ := st["vm_token"].(string)
	require.NotEmpty(t, host)
	require.NotEqual(t, vm, host, "vm-status never hands out the VM token")
	return host
}

// tkCall is one call of an assignee route with the given headers.
type tkCall struct {
	name string
	do   func(H) Response
}

// tkAssigneeCalls are the routes a VM token opens for its build (§4.13),
// each with a body that is accepted when the caller is.
func tkAssigneeCalls(c *Controller, buildID string) []tkCall {
	p := "/api/builds/" + buildID
	return []tkCall{
		{"source", func(h H) Response { return c.Get(p+"/source", h) }},
		{"certs", func(h H) Response { return c.Get(p+"/certs", h) }},
		{"certs-secure", func(h H) Response { return c.Get(p+"/certs-secure", h) }},
		{"logs", func(h H) Response {
			return c.PostJSON(p+"/logs", map[string]any{"logs": []map[string]string{{"level": "info", "message": "line from the vm"}}}, h)
		}},
		{"telemetry", func(h H) Response { return c.PostJSON(p+"/telemetry", `{"type":"monitor_started"}`, h) }},
		{"heartbeat", func(h H) Response { return c.PostJSON(p+"/heartbeat", `{"progress":20}`, h) }},
		{"vm-ready", func(h H) Response { return c.Do(http.MethodPost, p+"/vm-ready", nil, h) }},
		{"artifact", func(h H) Response {
			return c.PostMultipart(p+"/artifact", h, Part{Name: "artifact", Filename: "app.ipa", Data: []byte("ARTIFACT")})
		}},
	}
}

// tkRequireVMTokenEnded requires every assignee route but those in
// except to refuse the token as a bad VM token.
func tkRequireVMTokenEnded(t *testing.T, c *Controller, buildID, token, what string, except ...string) {
	t.Helper()
	skip := map[string]bool{}
	for _, e := range except {
		skip[e] = true
	}
	for _, call := range tkAssigneeCalls(c, buildID) {
		if skip[call.name] {
			continue
		}
		tkRefused(t, call.do(tkVMH(token)), http.StatusUnauthorized, tkMsgBadVMToken, "%s: %s", what, call.name)
	}
}

func TestWorkerTokenLifecycle(t *testing.T) {
	t.Parallel()

	t.Run("RegisterMintsA43CharacterTokenValidForTheTTL", func(t *testing.T) {
		t.Parallel()
		c := tkStart(t)
		m := tkRegister(t, c, "mac", "")
		token, _ := m["access_token"].(string)
		require.Regexp(t, tkTokenRe, token)
		require.Equal(t, tkISO(c.Clock.Now().Add(time.Hour)), m["token_expires_at"])
		require.Equal(t, "registered", m["status"])
		// A second worker's token is its own.
		other, _ := tkRegister(t, c, "mac-2", "")["access_token"].(string)
		require.NotEqual(t, token, other)
	})

	t.Run("PollAnswersThePresentedTokenWhileHalfItsLifeRemains", func(t *testing.T) {
		t.Parallel()
		c := tkStart(t)
		_, token := c.RegisterV2("mac")
		r := tkOK(t, tkPoll(c, token), "token poll")
		require.Equal(t, map[string]any{"job": nil, "access_token": token}, r.Object(t))
		c.Clock.Advance(30 * time.Minute) // exactly half the lifetime remains: not less
		next, job := tkPollToken(t, c, token)
		require.Nil(t, job)
		require.Equal(t, token, next)
	})

	t.Run("KeyPollKeepsTheOlderShape", func(t *testing.T) {
		t.Parallel()
		c := tkStart(t)
		id, _ := c.RegisterV2("mac")
		r := tkOK(t, c.Get("/api/workers/poll?worker_id="+id, c.KeyH()), "key poll")
		require.JSONEq(t, `{"job":null}`, string(r.Body))
	})

	t.Run("PollPastHalfLifeRotatesAndThePreviousTokenHasFiveMinutes", func(t *testing.T) {
		t.Parallel()
		c := tkStart(t)
		_, old := c.RegisterV2("mac")
		c.Clock.Advance(30*time.Minute + time.Millisecond)
		next, _ := tkPollToken(t, c, old)
		require.NotEqual(t, old, next, "less than half the lifetime remained: a new token")
		rotatedAt := c.Clock.Now()

		// A lost answer does not lock the worker out: the previous token
		// still polls for 5 minutes, and polling with it does not extend that.
		c.Clock.Advance(4 * time.Minute)
		again, _ := tkPollToken(t, c, old)
		require.NotEqual(t, old, again, "the answer to the previous token is never the previous token")
		c.Clock.Advance(time.Minute - time.Millisecond)
		require.True(t, tkTokenAccepted(t, c, old), "valid until 5 minutes after the rotation")
		c.Clock.Advance(time.Millisecond)
		require.Equal(t, rotatedAt.Add(5*time.Minute), c.Clock.Now())
		tkRequireBadWorkerToken(t, c, old, "the previous token 5 minutes after the rotation")

		// The new tokens work, each for a full lifetime from its minting.
		cur, _ := tkPollToken(t, c, next)
		require.Equal(t, next, cur, "a fresh token is answered unchanged")
		cur, _ = tkPollToken(t, c, again)
		require.Equal(t, again, cur)
	})

	t.Run("TokenExpiresAfterItsTTLWithoutPolls", func(t *testing.T) {
		t.Parallel()
		c := tkStart(t)
		id, token := c.RegisterV2("mac")
		c.Clock.Advance(time.Hour - time.Millisecond)
		require.True(t, tkTokenAccepted(t, c, token))
		c.Clock.Advance(time.Millisecond)
		tkRequireBadWorkerToken(t, c, token, "a token past its TTL")
		// The newer host answers 401 by re-registering with its id.
		m := tkRegister(t, c, "mac", id)
		require.Equal(t, id, m["id"])
		fresh, _ := tkPollToken(t, c, m["access_token"].(string))
		require.Equal(t, m["access_token"], fresh)
	})

	t.Run("ConfiguredTTLRulesExpiryAndRotation", func(t *testing.T) {
		t.Parallel()
		c := tkStart(t, WithConfig(func(cfg *app.Config) { cfg.WorkerTokenTTL = 10 * time.Minute }))
		m := tkRegister(t, c, "mac", "")
		token := m["access_token"].(string)
		require.Equal(t, tkISO(c.Clock.Now().Add(10*time.Minute)), m["token_expires_at"])
		c.Clock.Advance(5 * time.Minute)
		next, _ := tkPollToken(t, c, token)
		require.Equal(t, token, next)
		c.Clock.Advance(time.Millisecond)
		next, _ = tkPollToken(t, c, token)
		require.NotEqual(t, token, next)
		c.Clock.Advance(10*time.Minute - time.Millisecond)
		require.True(t, tkTokenAccepted(t, c, next))
		c.Clock.Advance(time.Millisecond)
		tkRequireBadWorkerToken(t, c, next, "the rotated token past the configured TTL")
	})

	t.Run("ReRegisterRevokesEarlierTokens", func(t *testing.T) {
		t.Parallel()
		c := tkStart(t)
		id, first := c.RegisterV2("mac")
		otherID, otherToken := c.RegisterV2("other-mac")
		c.Clock.Advance(31 * time.Minute)
		second, _ := tkPollToken(t, c, first) // first is now in its grace, second current
		require.NotEqual(t, first, second)

		m := tkRegister(t, c, "mac", id)
		require.Equal(t, id, m["id"])
		require.Equal(t, "re-registered", m["status"])
		third := m["access_token"].(string)
		require.Regexp(t, tkTokenRe, third)
		require.NotContains(t, []string{first, second}, third)
		tkRequireBadWorkerToken(t, c, first, "a token in its grace, after re-register")
		tkRequireBadWorkerToken(t, c, second, "the current token, after re-register")
		cur, _ := tkPollToken(t, c, third)
		require.Equal(t, third, cur)
		// Another worker's token is untouched.
		require.True(t, tkTokenAccepted(t, c, otherToken))
		require.NotEqual(t, otherID, id)
	})

	t.Run("UnregisterRevokes", func(t *testing.T) {
		t.Parallel()
		c := tkStart(t)
		id, first := c.RegisterV2("mac")
		c.Clock.Advance(31 * time.Minute)
		second, _ := tkPollToken(t, c, first)
		require.NotEqual(t, first, second)

		r := tkOK(t, c.Do(http.MethodPost, "/api/workers/unregister", nil, tkWT(second)), "unregister with the token alone")
		require.Equal(t, map[string]any{"success": true, "message": "Worker unregistered", "builds_reassigned": 0.0}, r.Object(t))
		tkRequireBadWorkerToken(t, c, second, "the current token after unregister")
		tkRequireBadWorkerToken(t, c, first, "the previous token after unregister")
		tkRefused(t, c.Do(http.MethodPost, "/api/workers/unregister", nil, c.KeyH("X-Worker-Token", second)),
			http.StatusUnauthorized, tkMsgBadWorkerToken, "unregister again, next to the valid key")
		require.Equal(t, "offline", c.WorkerStats(id)["status"])
	})

	t.Run("TokensSurviveARestartExactly", func(t *testing.T) {
		t.Parallel()
		c := tkStart(t)
		_, graced := c.RegisterV2("rotated")
		c.Clock.Advance(31 * time.Minute)
		rotated, _ := tkPollToken(t, c, graced) // graced now has 5 minutes of grace
		require.NotEqual(t, graced, rotated)
		rotatedAt := c.Clock.Now()
		_, valid := c.RegisterV2("valid")
		revokedID, revoked := c.RegisterV2("revoked")
		reissued := tkRegister(t, c, "revoked", revokedID)["access_token"].(string)
		_, gone := c.RegisterV2("gone")
		tkOK(t, c.Do(http.MethodPost, "/api/workers/unregister", nil, tkWT(gone)), "unregister")

		c = c.Restart()
		cur, _ := tkPollToken(t, c, valid)
		require.Equal(t, valid, cur, "a valid token stays valid, with its lifetime")
		require.True(t, tkTokenAccepted(t, c, reissued), "a re-registered worker's token stays valid")
		require.True(t, tkTokenAccepted(t, c, rotated), "a rotated-in token stays valid")
		tkRequireBadWorkerToken(t, c, revoked, "a token revoked by re-register, after a restart")
		tkRequireBadWorkerToken(t, c, gone, "a token revoked by unregister, after a restart")
		// The grace and the expiry are kept to the millisecond.
		c.Clock.Advance(5*time.Minute - time.Millisecond)
		require.True(t, tkTokenAccepted(t, c, graced), "the previous token keeps its grace")
		c.Clock.Advance(time.Millisecond)
		tkRequireBadWorkerToken(t, c, graced, "the previous token past its grace, after a restart")
		c.Clock.Advance(rotatedAt.Add(time.Hour).Sub(c.Clock.Now()) - time.Millisecond)
		require.True(t, tkTokenAccepted(t, c, valid))
		c.Clock.Advance(time.Millisecond)
		tkRequireBadWorkerToken(t, c, valid, "a token past its TTL, after a restart")
		tkRequireBadWorkerToken(t, c, rotated, "a rotated-in token past its TTL, after a restart")
	})
}

func TestOTPAndVMToken(t *testing.T) {
	t.Parallel()

	t.Run("OTPIsSingleUse", func(t *testing.T) {
		t.Parallel()
		c := tkStart(t)
		a := tkAssign(t, c, "mac", "ios", nil)
		r := tkOK(t, c.PostJSON("/api/builds/"+a.build.ID+"/authenticate", map[string]string{"otp": a.otp}, nil), "authenticate")
		m := r.Object(t)
		require.Regexp(t, tkTokenRe, m["vm_token"])
		require.Equal(t, tkISO(c.Clock.Now().Add(6*time.Hour)), m["expires_at"])
		require.Equal(t, "building", c.Status(a.build.ID)["status"], "authenticate starts building")
		tkAuthRefused(t, c, "/api/builds/"+a.build.ID+"/authenticate", map[string]string{"otp": a.otp},
			http.StatusUnauthorized, "Invalid OTP", "the same OTP twice")
		n := 0
		for _, msg := range c.LogMessages(a.build.ID) {
			if msg == "VM authenticated" {
				n++
			}
		}
		require.Equal(t, 1, n, "one VM authenticated")
	})

	t.Run("EachDeliveryMintsAnOTPValidUntilItsOwnExpiry", func(t *testing.T) {
		t.Parallel()
		c := tkStart(t)
		a := tkAssign(t, c, "mac", "ios", nil)
		path := "/api/builds/" + a.build.ID + "/authenticate"
		c.Clock.Advance(5 * time.Minute)
		_, job := tkPollToken(t, c, a.token) // the held build, re-delivered
		require.Equal(t, a.build.ID, job["id"])
		second := job["otp"].(string)
		keyJob := c.Poll(a.worker) // the older re-delivery mints one too
		require.Equal(t, a.build.ID, keyJob["id"])
		third := keyJob["otp"].(string)
		require.Regexp(t, tkTokenRe, third)
		require.Len(t, map[string]bool{a.otp: true, second: true, third: true}, 3, "a fresh OTP per delivery")

		// The first delivery's OTP expires 10 minutes after that delivery,
		// the later ones 10 minutes after theirs.
		c.Clock.Advance(5*time.Minute - time.Millisecond)
		vm1 := tkAuthenticate(t, c, a.build.ID, second)
		c.Clock.Advance(time.Millisecond)
		tkAuthRefused(t, c, path, map[string]string{"otp": a.otp}, http.StatusUnauthorized, "OTP expired", "the first OTP")
		vm2 := tkAuthenticate(t, c, a.build.ID, third)
		require.NotEqual(t, vm1, vm2)
		tkAuthRefused(t, c, path, map[string]string{"otp": second}, http.StatusUnauthorized, "Invalid OTP", "a used OTP")
		// Both VM tokens are of the current assignment.
		for _, vm := range []string{vm1, vm2} {
			tkOK(t, c.Get("/api/builds/"+a.build.ID+"/source", tkVMH(vm)), "source")
		}
	})

	t.Run("OTPExpiresAfterTheOTPTTL", func(t *testing.T) {
		t.Parallel()
		c := tkStart(t)
		a := tkAssign(t, c, "mac", "ios", nil)
		path := "/api/builds/" + a.build.ID + "/authenticate"
		_, job := tkPollToken(t, c, a.token)
		other := job["otp"].(string)
		c.Clock.Advance(10*time.Minute - time.Millisecond)
		tkAuthenticate(t, c, a.build.ID, a.otp)
		c.Clock.Advance(time.Millisecond)
		tkAuthRefused(t, c, path, map[string]string{"otp": other}, http.StatusUnauthorized, "OTP expired", "10 minutes on")
		c.Clock.Advance(time.Minute)
		tkAuthRefused(t, c, path, map[string]string{"otp": other}, http.StatusUnauthorized, "OTP expired", "11 minutes on")
	})

	// The monitor's periodic check (every few seconds in production) must
	// not turn an expired OTP into an unknown one: a VM that comes up late
	// is told why it cannot authenticate (§4.13).
	t.Run("OTPExpiredAlsoAfterTheMonitorRan", func(t *testing.T) {
		t.Parallel()
		c := tkStart(t)
		a := tkAssign(t, c, "mac", "ios", nil)
		c.Clock.Advance(11 * time.Minute)
		tkCheckNow(t, c)
		tkAuthRefused(t, c, "/api/builds/"+a.build.ID+"/authenticate", map[string]string{"otp": a.otp},
			http.StatusUnauthorized, "OTP expired", "11 minutes on, after a liveness check")
	})

	t.Run("OTPOfAnotherBuildIsInvalid", func(t *testing.T) {
		t.Parallel()
		c := tkStart(t)
		a := tkAssign(t, c, "mac-a", "ios", nil)
		b := tkAssign(t, c, "mac-b", "ios", nil)
		tkAuthRefused(t, c, "/api/builds/"+b.build.ID+"/authenticate", map[string]string{"otp": a.otp},
			http.StatusUnauthorized, "Invalid OTP", "a's OTP on b")
		tkAuthRefused(t, c, "/api/builds/"+b.build.ID+"/authenticate", map[string]string{"otp": "not-an-otp"},
			http.StatusUnauthorized, "Invalid OTP", "a made-up OTP")
		tkAuthenticate(t, c, a.build.ID, a.otp) // not used up by the refusal
		tkAuthenticate(t, c, b.build.ID, b.otp)
	})

	t.Run("MissingOTPIsA400", func(t *testing.T) {
		t.Parallel()
		c := tkStart(t)
		a := tkAssign(t, c, "mac", "ios", nil)
		path := "/api/builds/" + a.build.ID + "/authenticate"
		for name, body := range map[string]any{"no otp": `{}`, "empty otp": map[string]string{"otp": ""}} {
			tkAuthRefused(t, c, path, body, http.StatusBadRequest, "Missing required parameter: otp", name)
		}
		tkAuthenticate(t, c, a.build.ID, a.otp)
	})

	t.Run("UnknownOrMalformedBuildIsNotFound", func(t *testing.T) {
		t.Parallel()
		c := tkStart(t)
		a := tkAssign(t, c, "mac", "ios", nil)
		for _, id := range []string{"not-a-uuid", "00000000-0000-4000-8000-000000000000"} {
			for name, body := range map[string]any{"with otp": map[string]string{"otp": a.otp}, "without otp": `{}`} {
				tkAuthRefused(t, c, "/api/builds/"+id+"/authenticate", body, http.StatusNotFound, "Build not found", id+" "+name)
			}
		}
		tkAuthenticate(t, c, a.build.ID, a.otp)
	})

	t.Run("PendingBuildHasNoValidOTP", func(t *testing.T) {
		t.Parallel()
		c := tkStart(t)
		a := tkAssign(t, c, "mac", "ios", nil)
		pending := c.Submit("ios", []byte("pending"), nil)
		tkAuthRefused(t, c, "/api/builds/"+pending.ID+"/authenticate", map[string]string{"otp": a.otp},
			http.StatusUnauthorized, "Invalid OTP", "a pending build")
		require.Equal(t, "pending", c.Status(pending.ID)["status"])
	})

	t.Run("VMTokenOpensItsOwnBuild", func(t *testing.T) {
		t.Parallel()
		c := tkStart(t)
		certs := DefaultCerts(t)
		a := tkAssign(t, c, "mac", "ios", certs)
		vm := tkAuthenticate(t, c, a.build.ID, a.otp)
		h := tkVMH(vm)
		calls := map[string]Response{}
		for _, call := range tkAssigneeCalls(c, a.build.ID) {
			if call.name != "artifact" { // the artifact ends the assignment: last
				calls[call.name] = tkOK(t, call.do(h), "%s with the VM token alone", call.name)
			}
		}
		require.Equal(t, a.source, calls["source"].Body)
		require.Equal(t, certs, calls["certs"].Body)
		require.Equal(t, "s3cret", calls["certs-secure"].Object(t)["p12Password"])
		require.Equal(t, map[string]any{"status": "ok"}, calls["telemetry"].Object(t))
		require.Equal(t, "ok", calls["heartbeat"].Object(t)["status"])
		ready := calls["vm-ready"].Object(t)
		require.Equal(t, true, ready["success"])
		require.Equal(t, tkISO(c.Clock.Now()), ready["vm_ready_at"])
		msgs := c.LogMessages(a.build.ID)
		for _, want := range []string{"line from the vm", "[VM] Monitor started", "Build progress: 20%", "VM ready"} {
			require.Contains(t, msgs, want)
		}
		r := tkOK(t, tkAssigneeCalls(c, a.build.ID)[7].do(h), "artifact with the VM token")
		require.Equal(t, map[string]any{"success": true}, r.Object(t))
		require.Equal(t, "completed", c.Status(a.build.ID)["status"])
	})

	t.Run("VMTokenOfAnotherBuildIsRefused", func(t *testing.T) {
		t.Parallel()
		c := tkStart(t)
		a := tkAssign(t, c, "mac-a", "ios", DefaultCerts(t))
		b := tkAssign(t, c, "mac-b", "ios", DefaultCerts(t))
		vmA := tkAuthenticate(t, c, a.build.ID, a.otp)
		before := len(c.LogMessages(b.build.ID))
		tkRequireVMTokenEnded(t, c, b.build.ID, vmA, "a's VM token on b")
		require.Len(t, c.LogMessages(b.build.ID), before, "nothing happened to b")
		require.Equal(t, "assigned", c.Status(b.build.ID)["status"])
		require.Equal(t, map[string]any{"vm_ready": false}, tkVMStatus(t, c, b.build.ID))
		tkOK(t, c.Get("/api/builds/"+a.build.ID+"/source", tkVMH(vmA)), "a's VM token still opens a")
	})

	t.Run("VMTokenIsNoWorkerToken", func(t *testing.T) {
		t.Parallel()
		c := tkStart(t)
		a := tkAssign(t, c, "mac", "ios", nil)
		vm := tkAuthenticate(t, c, a.build.ID, a.otp)
		host := tkReady(t, c, a.build.ID, vm)
		for name, tok := range map[string]string{"vm token": vm, "host token": host} {
			tkRefused(t, tkPoll(c, tok), http.StatusUnauthorized, tkMsgBadWorkerToken, "%s as X-Worker-Token on poll", name)
			tkRefused(t, c.Get("/api/builds/"+a.build.ID+"/source", tkWT(tok)), http.StatusUnauthorized, tkMsgBadWorkerToken,
				"%s as X-Worker-Token on source", name)
			tkRefused(t, c.Do(http.MethodPost, "/api/workers/unregister", nil, tkWT(tok)), http.StatusUnauthorized,
				tkMsgBadWorkerToken, "%s as X-Worker-Token on unregister", name)
		}
		require.Equal(t, "building", c.WorkerStats(a.worker)["status"], "the worker was not unregistered")
	})

	// Each way an assignment ends ends its VM token and its host token.
	for _, end := range []struct {
		name string
		do   func(t *testing.T, c *Controller, a tkAssignment)
		// afterCompletion: the build completed, so heartbeat and telemetry
		// stay open for a while (TestAfterCompletionGrace).
		afterCompletion bool
		status          string
	}{
		{"EndsOnCompletion", func(t *testing.T, c *Controller, a tkAssignment) {
			// With the older credentials, so the VM token is still fresh.
			tkOK(t, c.PostMultipart("/api/builds/"+a.build.ID+"/artifact", c.KeyH("X-Worker-Id", a.worker),
				Part{Name: "artifact", Filename: "app.ipa", Data: []byte("IPA")}), "artifact")
		}, true, "completed"},
		{"EndsOnCancel", func(t *testing.T, c *Controller, a tkAssignment) {
			tkOK(t, c.PostJSON("/api/builds/"+a.build.ID+"/cancel", nil, c.KeyH()), "cancel")
		}, false, "failed"},
		{"EndsOnTimeout", func(t *testing.T, c *Controller, a tkAssignment) {
			c.Clock.Advance(20*time.Minute + time.Second)
			tkCheckNow(t, c)
		}, false, "pending"},
		{"EndsOnAbandon", func(t *testing.T, c *Controller, a tkAssignment) {
			tkOK(t, c.PostJSON("/api/workers/abandon", map[string]string{"build_id": a.build.ID, "reason": "disk full"},
				tkWT(a.token)), "abandon")
		}, false, "pending"},
		{"EndsOnUnregister", func(t *testing.T, c *Controller, a tkAssignment) {
			tkOK(t, c.Do(http.MethodPost, "/api/workers/unregister", nil, tkWT(a.token)), "unregister")
		}, false, "pending"},
	} {
		t.Run("VMAndHostToken"+end.name, func(t *testing.T) {
			t.Parallel()
			c := tkStart(t, WithConfig(func(cfg *app.Config) { cfg.BuildTimeout = 20 * time.Minute }))
			a := tkAssign(t, c, "mac", "ios", DefaultCerts(t))
			vm := tkAuthenticate(t, c, a.build.ID, a.otp)
			host := tkReady(t, c, a.build.ID, vm)
			// A second OTP, never used, of the same assignment.
			_, job := tkPollToken(t, c, a.token)
			spare := job["otp"].(string)
			end.do(t, c, a)
			require.Equal(t, end.status, c.Status(a.build.ID)["status"])

			var except []string
			if end.afterCompletion {
				except = []string{"heartbeat", "telemetry"}
			}
			tkRequireVMTokenEnded(t, c, a.build.ID, vm, "the VM token after the assignment ended", except...)
			if !end.afterCompletion {
				tkRefused(t, c.PostJSON("/api/builds/"+a.build.ID+"/heartbeat?worker_id="+a.worker, `{}`, tkVMH(host)),
					http.StatusUnauthorized, tkMsgBadVMToken, "the host token after the assignment ended")
			}
			tkRefused(t, c.Get("/api/builds/"+a.build.ID+"/source", tkVMH(host)), http.StatusUnauthorized, tkMsgBadVMToken,
				"the host token never opens source")
			tkAuthRefused(t, c, "/api/builds/"+a.build.ID+"/authenticate", map[string]string{"otp": spare},
				http.StatusUnauthorized, "Invalid OTP", "an unused OTP of the ended assignment")
			require.Equal(t, map[string]any{"vm_ready": false}, tkVMStatus(t, c, a.build.ID))
		})
	}

	t.Run("RequeuedAndReassignedBuildKeepsTheOldTokensInvalid", func(t *testing.T) {
		t.Parallel()
		c := tkStart(t, WithConfig(func(cfg *app.Config) { cfg.BuildTimeout = 20 * time.Minute }))
		a := tkAssign(t, c, "mac", "ios", DefaultCerts(t))
		vm := tkAuthenticate(t, c, a.build.ID, a.otp)
		host := tkReady(t, c, a.build.ID, vm)
		// A re-delivery shortly before the timeout: an OTP of this
		// assignment that is unused and unexpired when the next one begins
		// (a poll is no liveness signal of the build).
		c.Clock.Advance(15 * time.Minute)
		_, job := tkPollToken(t, c, a.token)
		spare := job["otp"].(string)
		c.Clock.Advance(5*time.Minute + time.Second)
		tkCheckNow(t, c)
		require.Equal(t, "pending", c.Status(a.build.ID)["status"])

		// The same worker takes it again: a new assignment.
		_, job = tkPollToken(t, c, a.token)
		require.Equal(t, a.build.ID, job["id"])
		otp := job["otp"].(string)
		require.Equal(t, map[string]any{"vm_ready": false}, tkVMStatus(t, c, a.build.ID), "the new VM is not ready")
		tkRequireVMTokenEnded(t, c, a.build.ID, vm, "the old VM token after reassignment")
		tkRefused(t, c.PostJSON("/api/builds/"+a.build.ID+"/heartbeat?worker_id="+a.worker, `{}`, tkVMH(host)),
			http.StatusUnauthorized, tkMsgBadVMToken, "the old host token after reassignment")
		tkRefused(t, c.PostJSON("/api/builds/"+a.build.ID+"/telemetry", `{"type":"monitor_started"}`, tkVMH(host)),
			http.StatusUnauthorized, tkMsgBadVMToken, "the old host token's telemetry after reassignment")
		for name, old := range map[string]string{"used": a.otp, "spare": spare} {
			tkAuthRefused(t, c, "/api/builds/"+a.build.ID+"/authenticate", map[string]string{"otp": old},
				http.StatusUnauthorized, "Invalid OTP", "the old assignment's "+name+" OTP")
		}
		vm2 := tkAuthenticate(t, c, a.build.ID, otp)
		tkOK(t, c.Get("/api/builds/"+a.build.ID+"/source", tkVMH(vm2)), "the new VM token")
		host2 := tkReady(t, c, a.build.ID, vm2)
		require.NotEqual(t, host, host2)
		tkRequireVMTokenEnded(t, c, a.build.ID, vm, "the old VM token next to a ready new one")
		tkRefused(t, c.PostJSON("/api/builds/"+a.build.ID+"/heartbeat", `{}`, tkVMH(host)),
			http.StatusUnauthorized, tkMsgBadVMToken, "the old host token next to a new one")
	})

	t.Run("EveryUseOfTheVMOrHostTokenIsLiveness", func(t *testing.T) {
		t.Parallel()
		c := tkStart(t, WithConfig(func(cfg *app.Config) { cfg.BuildTimeout = 20 * time.Minute }))
		a := tkAssign(t, c, "mac", "ios", DefaultCerts(t))
		var vm, host string
		p := "/api/builds/" + a.build.ID
		signals := []tkCall{{"authenticate", func(H) Response {
			vm = tkAuthenticate(t, c, a.build.ID, a.otp)
			return Response{Status: http.StatusOK}
		}}}
		for _, call := range tkAssigneeCalls(c, a.build.ID) {
			if call.name != "artifact" {
				call := call
				signals = append(signals, tkCall{call.name, func(H) Response { return call.do(tkVMH(vm)) }})
			}
		}
		signals = append(signals,
			tkCall{"host heartbeat", func(H) Response {
				host = tkVMStatus(t, c, a.build.ID)["vm_token"].(string)
				return c.PostJSON(p+"/heartbeat?worker_id="+a.worker, `{}`, tkVMH(host))
			}},
			tkCall{"host telemetry", func(H) Response {
				return c.PostJSON(p+"/telemetry", `{"type":"monitor_started"}`, tkVMH(host))
			}})
		for i, signal := range signals {
			if i == 0 {
				c.Clock.Advance(9 * time.Minute) // within the OTP's lifetime
			} else {
				c.Clock.Advance(19 * time.Minute)
			}
			tkOK(t, signal.do(nil), "%s", signal.name)
			c.Clock.Advance(19 * time.Minute)
			tkCheckNow(t, c)
			require.Equal(t, "building", c.Status(a.build.ID)["status"], "%s keeps the build alive", signal.name)
		}
		c.Clock.Advance(20*time.Minute + time.Second)
		tkCheckNow(t, c)
		require.Equal(t, "pending", c.Status(a.build.ID)["status"])
	})

	t.Run("VMAndHostTokensAndOTPsSurviveARestart", func(t *testing.T) {
		t.Parallel()
		c := tkStart(t)
		a := tkAssign(t, c, "mac", "ios", nil)
		_, job := tkPollToken(t, c, a.token)
		spare := job["otp"].(string)
		vm := tkAuthenticate(t, c, a.build.ID, a.otp)
		host := tkReady(t, c, a.build.ID, vm)
		st := tkVMStatus(t, c, a.build.ID)
		c = c.Restart()
		require.Equal(t, st, tkVMStatus(t, c, a.build.ID), "vm-status is kept")
		tkOK(t, c.Get("/api/builds/"+a.build.ID+"/source", tkVMH(vm)), "the VM token after a restart")
		tkOK(t, c.PostJSON("/api/builds/"+a.build.ID+"/heartbeat?worker_id="+a.worker, `{}`, tkVMH(host)), "the host token")
		tkAuthRefused(t, c, "/api/builds/"+a.build.ID+"/authenticate", map[string]string{"otp": a.otp},
			http.StatusUnauthorized, "Invalid OTP", "a used OTP stays used")
		tkAuthenticate(t, c, a.build.ID, spare)
		c.Clock.Advance(6*time.Hour - time.Minute)
		tkOK(t, c.Get("/api/builds/"+a.build.ID+"/source", tkVMH(vm)), "just before its TTL")
		c.Clock.Advance(time.Minute)
		tkRequireVMTokenEnded(t, c, a.build.ID, vm, "the VM token keeps its expiry across a restart")
	})

	t.Run("VMTokenExpiresAfterTheVMTokenTTL", func(t *testing.T) {
		t.Parallel()
		c := tkStart(t)
		a := tkAssign(t, c, "mac", "ios", nil)
		vm := tkAuthenticate(t, c, a.build.ID, a.otp)
		c.Clock.Advance(6*time.Hour - time.Millisecond)
		tkOK(t, c.Get("/api/builds/"+a.build.ID+"/source", tkVMH(vm)), "just before the TTL")
		c.Clock.Advance(time.Millisecond)
		tkRequireVMTokenEnded(t, c, a.build.ID, vm, "the VM token past its TTL")
	})

	t.Run("HostTokenOnlyAfterVMReady", func(t *testing.T) {
		t.Parallel()
		c := tkStart(t)
		a := tkAssign(t, c, "mac", "ios", nil)
		pending := c.Submit("android", []byte("pending"), nil)
		require.Equal(t, map[string]any{"vm_ready": false}, tkVMStatus(t, c, pending.ID), "pending")
		require.Equal(t, map[string]any{"vm_ready": false}, tkVMStatus(t, c, a.build.ID), "assigned, no VM yet")
		vm := tkAuthenticate(t, c, a.build.ID, a.otp)
		require.Equal(t, map[string]any{"vm_ready": false}, tkVMStatus(t, c, a.build.ID), "authenticated, not ready")
		readyAt := c.Clock.Now()
		host := tkReady(t, c, a.build.ID, vm)
		st := tkVMStatus(t, c, a.build.ID)
		require.Equal(t, map[string]any{"vm_ready": true, "vm_ready_at": tkISO(readyAt), "vm_token": host}, st)

		// vm-ready again: the same time, the same host token, one log line.
		c.Clock.Advance(time.Minute)
		r := tkOK(t, c.Do(http.MethodPost, "/api/builds/"+a.build.ID+"/vm-ready", nil, tkVMH(vm)), "vm-ready again")
		require.Equal(t, tkISO(readyAt), r.Object(t)["vm_ready_at"])
		require.Equal(t, st, tkVMStatus(t, c, a.build.ID))
		n := 0
		for _, m := range c.LogMessages(a.build.ID) {
			if m == "VM ready" {
				n++
			}
		}
		require.Equal(t, 1, n)

		for _, id := range []string{"not-a-uuid", "00000000-0000-4000-8000-000000000000"} {
			tkRefused(t, c.Get("/api/builds/"+id+"/vm-status", nil), http.StatusNotFound, "Build not found", "vm-status of %s", id)
		}
		// Finished: not ready, no token.
		tkOK(t, c.PostMultipart("/api/builds/"+a.build.ID+"/artifact", tkVMH(vm),
			Part{Name: "artifact", Filename: "app.ipa", Data: []byte("IPA")}), "artifact")
		require.Equal(t, map[string]any{"vm_ready": false}, tkVMStatus(t, c, a.build.ID), "finished")
	})

	t.Run("HostTokenOpensOnlyHeartbeatAndTelemetry", func(t *testing.T) {
		t.Parallel()
		c := tkStart(t)
		a := tkAssign(t, c, "mac", "ios", DefaultCerts(t))
		other := tkAssign(t, c, "mac-other", "ios", nil)
		vm := tkAuthenticate(t, c, a.build.ID, a.otp)
		host := tkReady(t, c, a.build.ID, vm)
		p := "/api/builds/" + a.build.ID
		r := tkOK(t, c.PostJSON(p+"/heartbeat?worker_id="+a.worker, `{"progress":30}`, tkVMH(host)), "heartbeat as the host does")
		require.Equal(t, "ok", r.Object(t)["status"])
		tkOK(t, c.PostJSON(p+"/heartbeat", `{}`, tkVMH(host)), "heartbeat without worker_id")
		tkRefused(t, c.PostJSON(p+"/heartbeat?worker_id="+other.worker, `{}`, tkVMH(host)), http.StatusForbidden,
			tkMsgNotAssigned, "heartbeat naming another worker")
		r = tkOK(t, c.PostJSON(p+"/telemetry", `{"type":"monitor_started"}`, tkVMH(host)), "telemetry")
		require.Equal(t, map[string]any{"status": "ok"}, r.Object(t))
		msgs := c.LogMessages(a.build.ID)
		require.Contains(t, msgs, "Build progress: 30%")
		require.Contains(t, msgs, "[VM] Monitor started")
		before := len(msgs)
		tkRequireVMTokenEnded(t, c, a.build.ID, host, "the host token", "heartbeat", "telemetry")
		require.Len(t, c.LogMessages(a.build.ID), before, "nothing the host token was refused left a trace")
		require.Equal(t, "building", c.Status(a.build.ID)["status"])
		// Not on another build either.
		for _, route := range []string{"/heartbeat", "/telemetry"} {
			tkRefused(t, c.PostJSON("/api/builds/"+other.build.ID+route, `{"type":"monitor_started"}`, tkVMH(host)),
				http.StatusUnauthorized, tkMsgBadVMToken, "the host token on another build's %s", route)
		}
	})
}

func TestAfterCompletionGrace(t *testing.T) {
	t.Parallel()

	// ready is a build whose VM is ready, with every credential for it.
	type ready struct {
		tkAssignment
		vm, host string
	}
	setup := func(t *testing.T, c *Controller) ready {
		a := tkAssign(t, c, "mac", "ios", nil)
		vm := tkAuthenticate(t, c, a.build.ID, a.otp)
		return ready{a, vm, tkReady(t, c, a.build.ID, vm)}
	}
	beat := func(c *Controller, r ready, h H) Response {
		return c.PostJSON("/api/builds/"+r.build.ID+"/heartbeat?worker_id="+r.worker, `{"progress":55}`, h)
	}

	t.Run("HeartbeatsAreAnsweredOKWithNoChangeForTenMinutes", func(t *testing.T) {
		t.Parallel()
		c := tkStart(t)
		r := setup(t, c)
		otherWorker := c.Register("other-mac")
		tkOK(t, c.PostMultipart("/api/builds/"+r.build.ID+"/artifact", tkVMH(r.vm),
			Part{Name: "artifact", Filename: "app.ipa", Data: []byte("IPA")}), "artifact")
		done := c.Status(r.build.ID)
		require.Equal(t, "completed", done["status"])
		logs := c.LogMessages(r.build.ID)
		stats := c.WorkerStats(r.worker)
		keyless := H{"X-Worker-Id": r.worker, "X-Build-Id": r.build.ID}

		check := func(when string) {
			t.Helper()
			for name, h := range map[string]H{"host token": tkVMH(r.host), "key and worker_id": c.KeyH(),
				"vm token": tkVMH(r.vm)} {
				got := tkOK(t, beat(c, r, h), "%s: heartbeat with the %s", when, name)
				require.Equal(t, map[string]any{"status": "ok"}, got.Object(t), "%s: %s", when, name)
			}
			got := tkOK(t, c.PostJSON("/api/builds/"+r.build.ID+"/telemetry", `{"type":"monitor_started"}`, tkVMH(r.host)),
				"%s: telemetry with the host token", when)
			require.Equal(t, map[string]any{"status": "ok"}, got.Object(t))
			got = tkOK(t, c.PostJSON("/api/builds/"+r.build.ID+"/telemetry", `{"type":"monitor_started"}`, keyless),
				"%s: the host's keyless telemetry", when)
			require.Equal(t, map[string]any{"status": "ok"}, got.Object(t))
			tkRefused(t, c.PostJSON("/api/builds/"+r.build.ID+"/heartbeat?worker_id="+otherWorker, `{}`, c.KeyH()),
				http.StatusForbidden, tkMsgNotAssigned, "%s: another worker's heartbeat", when)
			require.Equal(t, logs, c.LogMessages(r.build.ID), "%s: no log line", when)
			require.Equal(t, done, c.Status(r.build.ID), "%s: the build is unchanged", when)
			require.Equal(t, stats["totalBuilds"], c.WorkerStats(r.worker)["totalBuilds"])
			// Only heartbeat and telemetry: the VM's token opens nothing else.
			tkRefused(t, c.Get("/api/builds/"+r.build.ID+"/source", tkVMH(r.vm)), http.StatusUnauthorized, tkMsgBadVMToken,
				"%s: source", when)
		}
		check("at once")
		c.Clock.Advance(10*time.Minute - time.Millisecond)
		check("just under 10 minutes on")
		c.Clock.Advance(time.Millisecond)
		tkRefused(t, beat(c, r, tkVMH(r.host)), http.StatusUnauthorized, tkMsgBadVMToken, "host token 10 minutes on")
		tkRefused(t, beat(c, r, tkVMH(r.vm)), http.StatusUnauthorized, tkMsgBadVMToken, "vm token 10 minutes on")
		tkRefused(t, beat(c, r, c.KeyH()), http.StatusForbidden, tkMsgNotAssigned, "key and worker_id 10 minutes on")
		tkRefused(t, c.PostJSON("/api/builds/"+r.build.ID+"/telemetry", `{"type":"monitor_started"}`, tkVMH(r.host)),
			http.StatusUnauthorized, tkMsgBadVMToken, "telemetry 10 minutes on")
		tkRefused(t, c.PostJSON("/api/builds/"+r.build.ID+"/telemetry", `{"type":"monitor_started"}`, keyless),
			http.StatusUnauthorized, tkMsgMissingKey, "keyless telemetry 10 minutes on")
		require.Equal(t, logs, c.LogMessages(r.build.ID))
	})

	for _, end := range []struct {
		name string
		do   func(t *testing.T, c *Controller, r ready)
	}{
		{"CancelRefusesAtOnce", func(t *testing.T, c *Controller, r ready) {
			tkOK(t, c.PostJSON("/api/builds/"+r.build.ID+"/cancel", nil, c.KeyH()), "cancel")
		}},
		{"FailureRefusesAtOnce", func(t *testing.T, c *Controller, r ready) {
			tkOK(t, c.Upload(r.build.ID, r.worker, false, nil, "xcodebuild failed"), "failure upload")
		}},
	} {
		t.Run(end.name, func(t *testing.T) {
			t.Parallel()
			c := tkStart(t)
			r := setup(t, c)
			end.do(t, c, r)
			logs := c.LogMessages(r.build.ID)
			tkRefused(t, beat(c, r, c.KeyH()), http.StatusForbidden, tkMsgNotAssigned, "key and worker_id")
			tkRefused(t, beat(c, r, tkVMH(r.host)), http.StatusUnauthorized, tkMsgBadVMToken, "host token")
			tkRefused(t, beat(c, r, tkVMH(r.vm)), http.StatusUnauthorized, tkMsgBadVMToken, "vm token")
			require.Equal(t, logs, c.LogMessages(r.build.ID))
			require.Equal(t, "failed", c.Status(r.build.ID)["status"])
		})
	}
}

func TestWorkerTokenClaims(t *testing.T) {
	t.Parallel()

	// fixture: worker a holds build b; worker other is idle; a later build
	// waits.
	type fixture struct {
		c               *Controller
		a               tkAssignment
		other, otherTok string
		waiting         Submitted
		aLogs           int
	}
	setup := func(t *testing.T) fixture {
		c := tkStart(t, WithConfig(func(cfg *app.Config) { cfg.WorkerKey = testWorkerKey }))
		f := fixture{c: c, a: tkAssign(t, c, "mac-a", "ios", DefaultCerts(t))}
		f.other, f.otherTok = c.RegisterV2("mac-other")
		f.waiting = c.Submit("ios", []byte("waiting"), nil)
		f.aLogs = len(c.LogMessages(f.a.build.ID))
		return f
	}
	unchanged := func(t *testing.T, f fixture) {
		t.Helper()
		c := f.c
		st := c.Status(f.a.build.ID)
		require.Equal(t, "assigned", st["status"])
		require.Equal(t, f.a.worker, st["worker_id"])
		require.Equal(t, "pending", c.Status(f.waiting.ID)["status"])
		require.Len(t, c.LogMessages(f.a.build.ID), f.aLogs)
		require.Equal(t, "building", c.WorkerStats(f.a.worker)["status"])
		require.Equal(t, "idle", c.WorkerStats(f.other)["status"])
		require.True(t, tkTokenAccepted(t, c, f.a.token))
		require.True(t, tkTokenAccepted(t, c, f.otherTok))
	}

	t.Run("MismatchingWorkerIDIsForbiddenAndChangesNothing", func(t *testing.T) {
		t.Parallel()
		f := setup(t)
		c, a, b := f.c, f.a, f.a.build.ID
		resultFirst := []Part{{Name: "result", Filename: "app.ipa", Data: []byte("IPA")},
			{Name: "build_id", Data: []byte(b)}, {Name: "worker_id", Data: []byte(f.other)}, {Name: "success", Data: []byte("true")}}
		for name, r := range map[string]Response{
			"poll ?worker_id=":      c.Get("/api/workers/poll?worker_id="+f.other, tkWT(a.token)),
			"source X-Worker-Id":    c.Get("/api/builds/"+b+"/source", tkWT(a.token, "X-Worker-Id", f.other)),
			"certs-secure":          c.Get("/api/builds/"+b+"/certs-secure", tkWT(a.token, "X-Worker-Id", f.other)),
			"heartbeat ?worker_id=": c.PostJSON("/api/builds/"+b+"/heartbeat?worker_id="+f.other, `{"progress":5}`, tkWT(a.token)),
			"logs X-Worker-Id": c.PostJSON("/api/builds/"+b+"/logs", map[string]string{"level": "info", "message": "x"},
				tkWT(a.token, "X-Worker-Id", f.other)),
			"upload worker_id, text first": c.PostMultipart("/api/workers/upload", tkWT(a.token),
				Part{Name: "build_id", Data: []byte(b)}, Part{Name: "worker_id", Data: []byte(f.other)},
				Part{Name: "success", Data: []byte("true")}, Part{Name: "result", Filename: "app.ipa", Data: []byte("IPA")}),
			"upload worker_id, file first": c.PostMultipart("/api/workers/upload", tkWT(a.token), resultFirst...),
			"upload worker_id, no file": c.PostMultipart("/api/workers/upload", tkWT(a.token),
				Part{Name: "build_id", Data: []byte(b)}, Part{Name: "worker_id", Data: []byte(f.other)},
				Part{Name: "success", Data: []byte("false")}, Part{Name: "error_message", Data: []byte("nope")}),
			"unregister path id":        c.Do(http.MethodPost, "/api/workers/"+f.other+"/unregister", nil, tkWT(a.token)),
			"unregister ?worker_id=":    c.Do(http.MethodPost, "/api/workers/unregister?worker_id="+f.other, nil, tkWT(a.token)),
			"unregister X-Worker-Id":    c.Do(http.MethodPost, "/api/workers/unregister", nil, tkWT(a.token, "X-Worker-Id", f.other)),
			"unregister body worker_id": c.PostJSON("/api/workers/unregister", map[string]string{"worker_id": f.other}, tkWT(a.token)),
			"abandon body worker_id":    c.PostJSON("/api/workers/abandon", map[string]string{"build_id": b, "worker_id": f.other, "reason": "x"}, tkWT(a.token)),
			"other's token, a's claim":  c.PostJSON("/api/workers/abandon", map[string]string{"build_id": b, "worker_id": a.worker, "reason": "x"}, tkWT(f.otherTok)),
		} {
			tkRefused(t, r, http.StatusForbidden, tkMsgTokenMismatch, "%s", name)
		}
		unchanged(t, f)
		for _, file := range storageFiles(t, c.Dir+"/storage") {
			require.False(t, strings.HasPrefix(file, "results/"), "no result stored: %s", file)
		}
	})

	t.Run("MatchingWorkerIDIsAccepted", func(t *testing.T) {
		t.Parallel()
		f := setup(t)
		c, a := f.c, f.a
		upper := strings.ToUpper(a.worker)
		r := tkOK(t, c.Get("/api/workers/poll?worker_id="+upper, tkWT(a.token)), "poll with its own id, upper case")
		require.Equal(t, a.build.ID, r.Object(t)["job"].(map[string]any)["id"])
		tkOK(t, c.Get("/api/builds/"+a.build.ID+"/source", tkWT(a.token, "X-Worker-Id", a.worker)), "source")
		tkOK(t, c.Get("/api/builds/"+a.build.ID+"/source", tkWT(a.token)), "source, token alone")
	})

	t.Run("TokenOfAnUnregisteredWorkerIsUnauthorized", func(t *testing.T) {
		t.Parallel()
		f := setup(t)
		c := f.c
		tkOK(t, c.Do(http.MethodPost, "/api/workers/unregister", nil, tkWT(f.otherTok)), "unregister")
		tkRequireBadWorkerToken(t, c, f.otherTok, "an unregistered worker's token")
		tkRefused(t, c.Get("/api/builds/"+f.a.build.ID+"/source", tkWT(f.otherTok)), http.StatusUnauthorized,
			tkMsgBadWorkerToken, "source")
		tkRefused(t, c.PostMultipart("/api/workers/upload", tkWT(f.otherTok), Part{Name: "build_id", Data: []byte(f.a.build.ID)},
			Part{Name: "success", Data: []byte("true")}), http.StatusUnauthorized, tkMsgBadWorkerToken, "upload")
	})

	t.Run("WorkerTokenOpensNoAdminRoute", func(t *testing.T) {
		t.Parallel()
		f := setup(t)
		c, b := f.c, f.a.build.ID
		for name, r := range map[string]Response{
			"list":    c.Get("/api/builds", tkWT(f.a.token)),
			"status":  c.Get("/api/builds/"+b+"/status", tkWT(f.a.token)),
			"cancel":  c.PostJSON("/api/builds/"+b+"/cancel", nil, tkWT(f.a.token)),
			"stats":   c.Get("/api/workers/"+f.a.worker+"/stats", tkWT(f.a.token)),
			"metrics": c.Get("/metrics", tkWT(f.a.token)),
		} {
			require.Equal(t, http.StatusUnauthorized, r.Status, "%s: %s", name, r.Body)
			require.Contains(t, r.Error(t), "Missing X-API-Key", name)
		}
		unchanged(t, f)
	})

	t.Run("WorkerKeyOpensTheWorkerRoutesOnly", func(t *testing.T) {
		t.Parallel()
		f := setup(t)
		c, b := f.c, f.a.build.ID
		wk := H{"X-API-Key": testWorkerKey}
		// Register, poll and upload.
		r := tkOK(t, c.PostJSON("/api/workers/register", map[string]any{"name": "keyed", "capabilities": map[string]any{}}, wk), "register")
		reg := r.Object(t)
		keyed := reg["id"].(string)
		require.Regexp(t, tkTokenRe, reg["access_token"])
		r = tkOK(t, c.Get("/api/workers/poll?worker_id="+keyed, wk), "poll")
		job := r.Object(t)["job"].(map[string]any)
		require.Equal(t, f.waiting.ID, job["id"])
		require.Regexp(t, tkTokenRe, job["otp"])
		require.Equal(t, reg["baseImageId"], job["baseImageId"], "a key poll gets the older image")
		r = tkOK(t, c.PostMultipart("/api/workers/upload", wk, Part{Name: "build_id", Data: []byte(f.waiting.ID)},
			Part{Name: "worker_id", Data: []byte(keyed)}, Part{Name: "success", Data: []byte("true")},
			Part{Name: "result", Filename: "app.ipa", Data: []byte("IPA")}), "upload")
		require.Equal(t, map[string]any{"status": "success"}, r.Object(t))
		require.Equal(t, "completed", c.Status(f.waiting.ID)["status"])

		submitBody, ct := Multipart(t, Part{Name: "source", Filename: "s.zip", Data: []byte("s")}, Part{Name: "platform", Data: []byte("ios")})
		before := len(tkOK(t, c.Get("/api/builds", c.KeyH()), "list").JSON(t).([]any))
		for name, r := range map[string]Response{
			"submit":             c.Do(http.MethodPost, "/api/builds/submit", submitBody, H{"X-API-Key": testWorkerKey, "Content-Type": ct}),
			"list":               c.Get("/api/builds", wk),
			"active":             c.Get("/api/builds/active", wk),
			"status":             c.Get("/api/builds/"+b+"/status", wk),
			"logs":               c.Get("/api/builds/"+b+"/logs", wk),
			"download":           c.Get("/api/builds/"+f.waiting.ID+"/download", wk),
			"cancel":             c.PostJSON("/api/builds/"+b+"/cancel", nil, wk),
			"retry":              c.PostJSON("/api/builds/"+f.waiting.ID+"/retry", nil, wk),
			"worker stats":       c.Get("/api/workers/"+f.a.worker+"/stats", wk),
			"diagnostics":        c.Get("/api/diagnostics/"+f.a.worker, wk),
			"diagnostics latest": c.Get("/api/diagnostics/"+f.a.worker+"/latest", wk),
			"metrics":            c.Get("/metrics", wk),
		} {
			tkRefused(t, r, http.StatusForbidden, tkMsgInvalidKey, "the worker key on %s", name)
		}
		require.Len(t, tkOK(t, c.Get("/api/builds", c.KeyH()), "list").JSON(t).([]any), before, "nothing submitted or retried")
		f.waiting = c.Submit("ios", []byte("waiting again"), nil) // keep the fixture's invariant
		unchanged(t, f)
	})
}

func TestAbandon(t *testing.T) {
	t.Parallel()
	abandon := func(c *Controller, body map[string]string, h H) Response {
		return c.PostJSON("/api/workers/abandon", body, h)
	}

	t.Run("BuildReturnsToItsQueuePlaceCountingAnAttempt", func(t *testing.T) {
		t.Parallel()
		c := tkStart(t)
		a := tkAssign(t, c, "mac-a", "ios", nil)
		c.Clock.Advance(time.Millisecond) // queue order is the submit time
		later := c.Submit("ios", []byte("later"), nil)
		vm := tkAuthenticate(t, c, a.build.ID, a.otp)

		r := tkOK(t, abandon(c, map[string]string{"build_id": a.build.ID, "reason": "VM failed to boot"}, tkWT(a.token)), "abandon")
		require.Equal(t, map[string]any{"success": true, "message": "Build requeued successfully"}, r.Object(t))
		st := c.Status(a.build.ID)
		require.Equal(t, "pending", st["status"])
		require.Nil(t, st["worker_id"])
		require.Equal(t, "idle", c.WorkerStats(a.worker)["status"])
		page := tkOK(t, c.Get("/builds/"+a.build.ID+"/logs.json", c.KeyH()), "build page").Object(t)
		require.Equal(t, 1.0, page["attempts"])
		logs := tkOK(t, c.Get("/api/builds/"+a.build.ID+"/logs", c.KeyH()), "logs").Object(t)["logs"].([]any)
		last := logs[len(logs)-1].(map[string]any)
		require.Equal(t, "warn", last["level"])
		require.Equal(t, "Build abandoned by worker mac-a: VM failed to boot", last["message"])
		tkRequireVMTokenEnded(t, c, a.build.ID, vm, "the abandoned assignment's VM token")

		// A second worker gets it before the later build.
		_, tok := c.RegisterV2("mac-b")
		_, job := tkPollToken(t, c, tok)
		require.Equal(t, a.build.ID, job["id"])
		_, job = tkPollToken(t, c, a.token)
		require.Equal(t, later.ID, job["id"])
	})

	t.Run("NonAssigneeIsForbidden", func(t *testing.T) {
		t.Parallel()
		c := tkStart(t)
		a := tkAssign(t, c, "mac-a", "ios", nil)
		otherID, other := c.RegisterV2("mac-b")
		logs := len(c.LogMessages(a.build.ID))
		body := map[string]string{"build_id": a.build.ID, "reason": "x"}
		tkRefused(t, abandon(c, body, tkWT(other)), http.StatusForbidden, tkMsgNotAssigned, "another worker's token")
		keyBody := map[string]string{"build_id": a.build.ID, "worker_id": otherID, "reason": "x"}
		tkRefused(t, abandon(c, keyBody, c.KeyH()), http.StatusForbidden, tkMsgNotAssigned, "the key naming another worker")
		require.Equal(t, "assigned", c.Status(a.build.ID)["status"])
		require.Len(t, c.LogMessages(a.build.ID), logs)
	})

	t.Run("UnknownBuildIsNotFound", func(t *testing.T) {
		t.Parallel()
		c := tkStart(t)
		a := tkAssign(t, c, "mac-a", "ios", nil)
		for _, id := range []string{"00000000-0000-4000-8000-000000000000", "not-a-uuid"} {
			tkRefused(t, abandon(c, map[string]string{"build_id": id, "reason": "x"}, tkWT(a.token)), http.StatusNotFound,
				"Build not found", "build %s", id)
		}
		require.Equal(t, "assigned", c.Status(a.build.ID)["status"])
	})

	t.Run("AbandonedUpToMaxAttemptsFails", func(t *testing.T) {
		t.Parallel()
		c := tkStart(t, WithConfig(func(cfg *app.Config) { cfg.MaxAttempts = 2 }))
		a := tkAssign(t, c, "mac-a", "ios", nil)
		tkOK(t, abandon(c, map[string]string{"build_id": a.build.ID, "reason": "first"}, tkWT(a.token)), "first abandon")
		// The second worker speaks the older form: the key and worker_id.
		b := c.Register("mac-b")
		require.Equal(t, a.build.ID, c.Poll(b)["id"])
		tkOK(t, abandon(c, map[string]string{"build_id": a.build.ID, "worker_id": b, "reason": "second"}, c.KeyH()), "second abandon")
		st := c.Status(a.build.ID)
		require.Equal(t, "failed", st["status"])
		require.Equal(t, "Build abandoned by worker mac-b: second", st["error_message"])
		require.Equal(t, 2.0, tkOK(t, c.Get("/builds/"+a.build.ID+"/logs.json", c.KeyH()), "build page").Object(t)["attempts"])
		msgs := c.LogMessages(a.build.ID)
		require.Equal(t, "Build abandoned by worker mac-b: second; failed after 2 of 2 attempts", msgs[len(msgs)-1])
		require.Equal(t, "idle", c.WorkerStats(b)["status"])
		_, job := tkPollToken(t, c, a.token)
		require.Nil(t, job, "a failed build is handed to nobody")
	})
}

func TestSecretsNeverLogged(t *testing.T) {
	t.Parallel()
	const p12Password = "Zq8-p12-PASSWORD-nobody-logs-7Hx"
	c := tkStart(t, WithConfig(func(cfg *app.Config) { cfg.WorkerKey = testWorkerKey }))
	secrets := map[string]string{"admin key": testKey, "worker key": testWorkerKey, "p12 password": p12Password}
	keep := func(what, s string) {
		t.Helper()
		require.NotEmpty(t, s, what)
		secrets[what] = s
	}

	certs := CertsZip(t, map[string]string{"dist/cert.p12": "P12-BYTES", "password.txt": p12Password,
		"profiles/app.mobileprovision": "PROFILE"}, "dist/cert.p12", "password.txt", "profiles/app.mobileprovision")
	b := c.Submit("ios", []byte("SOURCE"), certs)
	keep("build token", b.Token)
	reg := tkRegister(t, c, "mac", "")
	id, first := reg["id"].(string), reg["access_token"].(string)
	keep("registered token", first)
	c.Clock.Advance(31 * time.Minute)
	rotated, job := tkPollToken(t, c, first)
	require.NotEqual(t, first, rotated)
	keep("rotated access_token", rotated)
	require.Equal(t, b.ID, job["id"])
	keep("otp", job["otp"].(string))
	_, job = tkPollToken(t, c, rotated) // a re-delivery: a second OTP
	keep("second otp", job["otp"].(string))
	vm := tkAuthenticate(t, c, b.ID, secrets["otp"])
	keep("vm token", vm)
	bundle := tkOK(t, c.Get("/api/builds/"+b.ID+"/certs-secure", tkVMH(vm)), "certs-secure").Object(t)
	require.Equal(t, p12Password, bundle["p12Password"])
	keep("keychain password", bundle["keychainPassword"].(string))
	host := tkReady(t, c, b.ID, vm)
	keep("host token", host)
	tkOK(t, c.PostJSON("/api/builds/"+b.ID+"/heartbeat?worker_id="+id, `{"progress":40}`, tkVMH(host)), "host heartbeat")
	tkOK(t, c.PostJSON("/api/builds/"+b.ID+"/logs", map[string]any{"logs": []map[string]string{{"level": "info", "message": "Compiling"}}},
		tkVMH(vm)), "logs")
	tkOK(t, c.PostMultipart("/api/builds/"+b.ID+"/artifact", tkVMH(vm), Part{Name: "artifact", Filename: "app.ipa", Data: []byte("IPA")}), "artifact")
	up := tkOK(t, c.PostMultipart("/api/workers/upload", c.KeyH(), Part{Name: "build_id", Data: []byte(b.ID)},
		Part{Name: "worker_id", Data: []byte(id)}, Part{Name: "success", Data: []byte("true")}), "file-less success")
	require.Equal(t, map[string]any{"status": "success"}, up.Object(t))
	// Refused secrets are not logged either.
	tkRefused(t, c.PostJSON("/api/builds/"+b.ID+"/authenticate", map[string]string{"otp": secrets["otp"]}, nil),
		http.StatusUnauthorized, "Invalid OTP", "a used OTP")
	tkOK(t, c.Do(http.MethodPost, "/api/workers/unregister", nil, c.KeyH("X-Worker-Token", rotated)), "unregister")
	tkRefused(t, tkPoll(c, rotated), http.StatusUnauthorized, tkMsgBadWorkerToken, "a revoked token")
	require.Equal(t, "completed", c.Status(b.ID)["status"])

	logs := c.Logs()
	require.Contains(t, logs, b.ID, "the log is collected")
	for what, s := range secrets {
		require.NotContains(t, logs, s, "the %s is logged", what)
		if len(s) >= 16 {
			require.NotContains(t, logs, s[:12], "a prefix of the %s is logged", what)
		}
	}
}
