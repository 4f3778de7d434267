package httpapi

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/expo-free-agent/controller/actors/files"
	"github.com/expo-free-agent/controller/actors/queue"
	"github.com/expo-free-agent/controller/store/domain"
)

// The build VM of the newer worker generation (§4.13, §4.14): it trades the
// job's one-time password for a VM token, says when it is ready, and
// delivers the artifact; the host asks whether it is ready.

// authenticate is POST /api/builds/:id/authenticate (§4.13): no credentials,
// the job's one-time password in the body, a VM token back.
func (s *Server) authenticate(c echo.Context) error {
	b, err := s.loadBuild(c)
	if err != nil {
		return err
	}
	var req struct {
		OTP string `json:"otp"`
	}
	if _, err := readJSON(c, &req); err != nil {
		return err
	}
	if req.OTP == "" {
		return fail(http.StatusBadRequest, msgMissingOTP)
	}
	token, grant, err := s.newGrant(s.cfg.VMTokenTTL)
	if err != nil {
		return err
	}
	if err := s.store.RedeemOTP(c.Request().Context(), b.ID, domain.Digest(req.OTP), grant, s.now()); err != nil {
		return err
	}
	s.seen(c, deref(b.WorkerID))
	return c.JSON(http.StatusOK, map[string]string{"vm_token": token, "expires_at": isoMillis(grant.ExpiresAt)})
}

// vmReady is POST /api/builds/:id/vm-ready (§4.14, VM token; the body is
// ignored): the first call records the time and makes the host token that
// vm-status hands out; later calls answer the same time.
func (s *Server) vmReady(c echo.Context) error {
	cl := callerOf(c)
	host, _, err := domain.NewToken()
	if err != nil {
		return err
	}
	at, err := s.store.MarkVMReady(c.Request().Context(), cl.BuildID, cl.Build.Assignment, host, s.now())
	if err != nil {
		return err
	}
	s.seen(c, cl.WorkerID)
	return c.JSON(http.StatusOK, map[string]any{"success": true, "vm_ready_at": isoMillis(at)})
}

// vmStatusJSON is vm-status's answer.
type vmStatusJSON struct {
	Ready   bool   `json:"vm_ready"`
	ReadyAt string `json:"vm_ready_at,omitempty"`
	Token   string `json:"vm_token,omitempty"` // the host token, never the VM's
}

// vmStatus is GET /api/builds/:id/vm-status (§4.14, public: the host sends
// no credentials).
func (s *Server) vmStatus(c echo.Context) error {
	id, err := buildID(c)
	if err != nil {
		return err
	}
	ready, at, host, err := s.store.VMStatus(c.Request().Context(), id)
	if err != nil {
		return err
	}
	out := vmStatusJSON{Ready: ready}
	if ready {
		out.ReadyAt, out.Token = isoMillis(at), host
	}
	return c.JSON(http.StatusOK, out)
}

// artifact is POST /api/builds/:id/artifact (§4.14): the VM (or the
// assignee with the older credentials) delivers the result as the file part
// "artifact", through the same streaming code as upload; the build completes
// as a successful upload completes it.
func (s *Server) artifact(c echo.Context) error {
	id, err := buildID(c)
	if err != nil {
		return err
	}
	cl := callerOf(c)
	f, err := s.readForm(c, formSpec{
		limit: s.cfg.MaxResultSize + 1<<20,
		files: map[string]fileSpec{"artifact": {kind: files.KindResult, limit: s.cfg.MaxResultSize, tooLarge: msgResultTooLarge,
			begin: func(map[string]string) (func(int64), error) {
				target, err := s.artifactChecks(c, id, cl)
				if err != nil {
					return nil, err
				}
				return s.livenessDuringUpload(c, target), nil
			}}},
	})
	if err != nil {
		return err
	}
	defer f.discard()
	if f.files["artifact"] == nil {
		return fail(http.StatusBadRequest, msgNoArtifact)
	}
	_, err = s.queue.Finish(c.Request().Context(), queue.FinishRequest{BuildID: id, WorkerID: cl.WorkerID,
		Success: true, Result: f.take("artifact")})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]bool{"success": true})
}

// artifactChecks decides, as the artifact's first byte arrives, whether the
// caller may deliver it: 404 Build not found, 409 Build already finished for
// the worker that finished it, 403 for any other non-assignee.
func (s *Server) artifactChecks(c echo.Context, id string, cl Caller) (*uploadTarget, error) {
	b, err := s.store.GetBuild(c.Request().Context(), id)
	if err != nil {
		return nil, err
	}
	if _, err := queue.CheckUpload(b, cl.WorkerID, true, true); err != nil {
		return nil, err
	}
	s.seen(c, cl.WorkerID)
	return &uploadTarget{buildID: id, workerID: cl.WorkerID}, nil
}
