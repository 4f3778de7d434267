package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/expo-free-agent/controller/actors/queue"
	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

// registerRequest is the body of POST /api/workers/register.
type registerRequest struct {
	Name         string          `json:"name"`
	Capabilities json.RawMessage `json:"capabilities"` // an object, stored as sent
	ID           string          `json:"id"`           // optional: re-register this worker
}

// register is POST /api/workers/register (§4.1): it also mints the
// worker's token (§4.12), which replaces every earlier one.
func (s *Server) register(c echo.Context) error {
	var req registerRequest
	if _, err := readJSON(c, &req); err != nil {
		return err
	}
	if req.Name == "" || !isObject(req.Capabilities) {
		return fail(http.StatusBadRequest, msgNameAndCapabilities)
	}
	token, grant, err := s.newGrant(s.cfg.WorkerTokenTTL)
	if err != nil {
		return err
	}
	reg := store.Registration{Name: req.Name, Capabilities: string(req.Capabilities), Token: grant}
	if id, ok := domain.ParseID(req.ID); ok {
		reg.ID = id
	}
	w, created, err := s.queue.Register(c.Request().Context(), reg)
	if err != nil {
		return err
	}
	status := "re-registered"
	if created {
		status = "registered"
	}
	return c.JSON(http.StatusOK, map[string]string{"id": w.ID, "status": status, "baseImageId": s.cfg.BaseImageID,
		"access_token": token, "token_expires_at": isoMillis(grant.ExpiresAt)})
}

// newGrant mints a token valid for ttl: the secret, and what is stored.
func (s *Server) newGrant(ttl time.Duration) (string, store.TokenGrant, error) {
	token, digest, err := domain.NewToken()
	return token, store.TokenGrant{Digest: digest, ExpiresAt: s.now() + ttl.Milliseconds()}, err
}

type jobJSON struct {
	ID          string          `json:"id"`
	Platform    domain.Platform `json:"platform"`
	SourceURL   string          `json:"source_url"`
	CertsURL    *string         `json:"certs_url"`
	BaseImageID string          `json:"baseImageId"`
	OTP         string          `json:"otp"` // the one-time password its VM trades for a VM token
}

// pollJSON is poll's answer; a token poll also carries the worker's current
// token.
type pollJSON struct {
	Job         *jobJSON `json:"job"`
	AccessToken string   `json:"access_token,omitempty"`
}

// poll is GET /api/workers/poll (§4.2): every job carries a fresh one-time
// password for its VM (§4.13). With ?wait=<seconds> a poll that finds
// nothing is held until a build becomes assignable or the wait ends (§4.18). A token poll (§4.12) is answered with the
// newer generation's base image and the worker's token, rotated when less
// than half its lifetime remains.
func (s *Server) poll(c echo.Context) error {
	cl := callerOf(c)
	wid, ok := domain.ParseID(cl.WorkerID)
	if !ok {
		return fail(http.StatusNotFound, msgWorkerNotFound)
	}
	wait, err := waitParam(c)
	if err != nil {
		return err
	}
	job, err := s.queue.PollWait(c.Request().Context(), wid, wait)
	if err != nil {
		return err
	}
	var out pollJSON
	if cl.Kind == WorkerToken {
		if out.AccessToken, err = s.currentToken(c, cl); err != nil {
			return err
		}
	}
	if job != nil {
		if out.Job, err = s.deliver(c, job, wid, cl.Kind == WorkerToken); err != nil {
			return err
		}
	}
	if out.Job == nil && out.AccessToken == "" {
		return c.JSON(http.StatusOK, map[string]any{"job": nil}) // v1, byte for byte
	}
	return c.JSON(http.StatusOK, out)
}

// maxWait caps a long-poll (§4.18).
const maxWait = 50 * time.Second

// waitParam reads ?wait=: an integer number of seconds from 0, capped at
// maxWait; absent is 0. Anything else is 400 Invalid wait.
func waitParam(c echo.Context) (time.Duration, error) {
	v := c.QueryParam("wait")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, fail(http.StatusBadRequest, msgInvalidWait)
	}
	return time.Duration(min(n, int(maxWait/time.Second))) * time.Second, nil
}

// deliver is the answer for a job: its URLs, base image and a fresh OTP of
// the assignment — minted and stored with the assignment itself by the
// queue manager (queue.Config.OTPTTL), or here for a re-delivery. A build
// the worker lost in between is no job (nil).
func (s *Server) deliver(c echo.Context, job *queue.Job, workerID string, tokenPoll bool) (*jobJSON, error) {
	otp := job.OTP
	if otp == "" {
		var grant store.TokenGrant
		var err error
		if otp, grant, err = s.newGrant(s.cfg.OTPTTL); err != nil {
			return nil, err
		}
		err = s.store.IssueOTP(c.Request().Context(), job.BuildID, workerID, grant)
		if errors.Is(err, store.ErrNotAssignee) || errors.Is(err, store.ErrNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
	}
	out := &jobJSON{ID: job.BuildID, Platform: job.Platform, SourceURL: "/api/builds/" + job.BuildID + "/source",
		BaseImageID: s.cfg.BaseImageID, OTP: otp}
	if tokenPoll {
		out.BaseImageID = s.cfg.BaseImageV2
	}
	if job.HasCerts {
		u := "/api/builds/" + job.BuildID + "/certs"
		out.CertsURL = &u
	}
	return out, nil
}

// currentToken is the worker token a token poll answers with: the one
// presented, or a new one when less than half its lifetime remains (the
// presented one then stays valid for tokenRotationGrace).
func (s *Server) currentToken(c echo.Context, cl Caller) (string, error) {
	now := s.now()
	if cl.TokenExpiresAt-now >= s.cfg.WorkerTokenTTL.Milliseconds()/2 {
		return cl.Token, nil
	}
	token, grant, err := s.newGrant(s.cfg.WorkerTokenTTL)
	if err != nil {
		return "", err
	}
	err = s.store.RotateWorkerToken(c.Request().Context(), cl.WorkerID, domain.Digest(cl.Token), grant, now,
		now+tokenRotationGrace.Milliseconds())
	if errors.Is(err, store.ErrBadToken) { // a concurrent poll rotated it first: keep answering with this one
		return cl.Token, nil
	}
	return token, err
}

// unregister is POST /api/workers/:id/unregister and POST
// /api/workers/unregister (§4.9): the worker is named by the path, else
// ?worker_id=, else X-Worker-Id, else the body's worker_id; with a worker
// token, the token's worker (a named one must match). It also revokes the
// worker's tokens.
func (s *Server) unregister(c echo.Context) error {
	cl := callerOf(c)
	raw := c.Param("id")
	if c.Path() == "/api/workers/:id/unregister" {
		if raw == "" { // "/api/workers//unregister": an empty id is not a UUID
			return fail(http.StatusNotFound, msgWorkerNotFound)
		}
	} else if raw = c.QueryParam("worker_id"); raw == "" {
		raw = c.Request().Header.Get(headerWorkerID)
	}
	if raw == "" {
		var body struct {
			WorkerID string `json:"worker_id"`
		}
		if _, err := readJSON(c, &body); err != nil {
			return err
		}
		raw = body.WorkerID
	}
	if err := settleClaim(&cl, raw, ""); err != nil {
		return err
	}
	if cl.WorkerID == "" {
		return fail(http.StatusBadRequest, msgWorkerIDRequired)
	}
	wid, ok := domain.ParseID(cl.WorkerID)
	if !ok {
		return fail(http.StatusNotFound, msgWorkerNotFound)
	}
	n, err := s.queue.Unregister(c.Request().Context(), wid)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"success": true, "message": "Worker unregistered", "builds_reassigned": n})
}

// abandonRequest is the body of POST /api/workers/abandon.
type abandonRequest struct {
	BuildID  string `json:"build_id"`
	WorkerID string `json:"worker_id"`
	Reason   string `json:"reason"`
}

// abandon is POST /api/workers/abandon (§4.16): the worker gives its build
// back; it counts an attempt, as a timeout does.
func (s *Server) abandon(c echo.Context) error {
	var req abandonRequest
	if _, err := readJSON(c, &req); err != nil {
		return err
	}
	cl := callerOf(c)
	if err := settleClaim(&cl, req.WorkerID, ""); err != nil {
		return err
	}
	if req.BuildID == "" || cl.WorkerID == "" {
		return fail(http.StatusBadRequest, msgUploadIDsRequired)
	}
	bid, ok := domain.ParseID(req.BuildID)
	if !ok {
		return fail(http.StatusNotFound, msgBuildNotFound)
	}
	if _, err := s.queue.Abandon(c.Request().Context(), bid, claimedID(cl.WorkerID), req.Reason); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"success": true, "message": "Build requeued successfully"})
}

// loadWorker resolves a worker id parameter: 404 Worker not found for a
// non-UUID or an unknown id.
func (s *Server) loadWorker(c echo.Context, param string) (domain.Worker, error) {
	wid, ok := domain.ParseID(c.Param(param))
	if !ok {
		return domain.Worker{}, fail(http.StatusNotFound, msgWorkerNotFound)
	}
	return s.store.GetWorker(c.Request().Context(), wid)
}

// workerStats is GET /api/workers/:id/stats (§4.10).
func (s *Server) workerStats(c echo.Context) error {
	w, err := s.loadWorker(c, "id")
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{
		"totalBuilds":      w.BuildsCompleted + w.BuildsFailed,
		"successfulBuilds": w.BuildsCompleted,
		"failedBuilds":     w.BuildsFailed,
		"workerName":       w.Name,
		"status":           w.Status,
		"uptime":           formatUptime(s.cfg.Clock.Now().Sub(time.UnixMilli(w.RegisteredAt))),
	})
}

// formatUptime renders a duration as "Nd Nh", "Nh Nm", "Nm Ns" or "Ns".
func formatUptime(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	secs := int64(d / time.Second)
	days, hours, mins := secs/86400, secs/3600%24, secs/60%60
	switch {
	case secs >= 86400:
		return fmt.Sprintf("%dd %dh", days, hours)
	case secs >= 3600:
		return fmt.Sprintf("%dh %dm", secs/3600, mins)
	case secs >= 60:
		return fmt.Sprintf("%dm %ds", secs/60, secs%60)
	default:
		return fmt.Sprintf("%ds", secs)
	}
}
