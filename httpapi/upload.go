package httpapi

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/expo-free-agent/controller/actors/files"
	"github.com/expo-free-agent/controller/actors/queue"
	"github.com/expo-free-agent/controller/store/domain"
)

// uploadFields are the text parts of an upload.
var uploadFields = []string{"build_id", "worker_id", "success", "error_message"}

// upload is POST /api/workers/upload (§4.8). Parts come in any order. When
// the build and the worker are known as the result's first byte arrives
// (the older clients send the text parts first), the ownership checks run
// then and a refused file is never stored; otherwise the file streams to an
// unnamed temporary and the checks run when the body ends, a refused file
// being discarded. The queue manager commits the result only for the current
// assignee. With a worker token, the token names the worker.
func (s *Server) upload(c echo.Context) error {
	var target *uploadTarget
	f, err := s.readForm(c, formSpec{
		limit:  s.cfg.MaxResultSize + 1<<20,
		fields: uploadFields,
		files: map[string]fileSpec{"result": {kind: files.KindResult, limit: s.cfg.MaxResultSize, tooLarge: msgResultTooLarge,
			begin: func(text map[string]string) (func(int64), error) {
				if text["build_id"] == "" || (text["worker_id"] == "" && callerOf(c).Kind != WorkerToken) {
					return nil, errCheckLater
				}
				var err error
				if target, err = s.uploadChecks(c, text, true); err != nil {
					target = nil
					if callerOf(c).Kind == WorkerToken && text["worker_id"] == "" {
						return nil, errCheckLater // a worker_id after the file may refuse it otherwise
					}
					return nil, err
				}
				return s.livenessDuringUpload(c, target), nil
			}}},
	})
	if err != nil {
		return err
	}
	defer f.discard()
	if target == nil { // no file, or the file came first: the checks run now
		if target, err = s.uploadChecks(c, f.text, f.files["result"] != nil); err != nil {
			return err
		}
	} else if cl := callerOf(c); cl.Kind == WorkerToken { // a worker_id after the file must match the token too
		if err := settleClaim(&cl, f.text["worker_id"], ""); err != nil {
			return err
		}
	}
	if target.noop {
		return c.JSON(http.StatusOK, map[string]string{"status": "success"})
	}
	out, err := s.queue.Finish(c.Request().Context(), queue.FinishRequest{BuildID: target.buildID, WorkerID: target.workerID,
		Success: f.text["success"] == "true", ErrorMessage: f.text["error_message"], Result: f.take("result")})
	if err != nil {
		return err
	}
	if out == queue.FinishFailed {
		return c.JSON(http.StatusOK, map[string]string{"status": "failed"})
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "success"})
}

// uploadTarget is an upload that passed checks 6–9.
type uploadTarget struct {
	buildID, workerID string
	noop              bool
}

// uploadChecks applies checks 6–9 of §4.8 to the text parts (a worker
// token stands for worker_id, which must then match it) and records the
// worker as seen.
func (s *Server) uploadChecks(c echo.Context, text map[string]string, hasFile bool) (*uploadTarget, error) {
	cl := callerOf(c)
	if err := settleClaim(&cl, text["worker_id"], ""); err != nil {
		return nil, err
	}
	if text["build_id"] == "" || cl.WorkerID == "" {
		return nil, fail(http.StatusBadRequest, msgUploadIDsRequired)
	}
	ctx := c.Request().Context()
	bid, ok := domain.ParseID(text["build_id"])
	if !ok {
		return nil, fail(http.StatusNotFound, msgBuildNotFound)
	}
	b, err := s.store.GetBuild(ctx, bid)
	if err != nil {
		return nil, err
	}
	wid, ok := domain.ParseID(cl.WorkerID)
	if !ok {
		return nil, fail(http.StatusNotFound, msgWorkerNotFound)
	}
	if _, err := s.store.GetWorker(ctx, wid); err != nil {
		return nil, err
	}
	s.seen(c, wid)
	noop, err := queue.CheckUpload(b, wid, text["success"] == "true", hasFile)
	if err != nil {
		return nil, err
	}
	return &uploadTarget{buildID: bid, workerID: wid, noop: noop}, nil
}

// livenessDuringUpload refreshes the build's liveness while the assignee's
// result streams in, so a long upload is not cut off by the build timeout.
func (s *Server) livenessDuringUpload(c echo.Context, t *uploadTarget) func(int64) {
	last := s.cfg.Clock.Now()
	return func(int64) {
		now := s.cfg.Clock.Now()
		if now.Sub(last) < livenessDuringUpload {
			return
		}
		last = now
		if err := s.store.TouchBuild(c.Request().Context(), t.buildID, t.workerID, now.UnixMilli()); err != nil {
			s.log.Debug("liveness during upload", "build_id", t.buildID, "err", err)
		}
	}
}
