package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

// registerRequest is the body of POST /api/workers/register.
type registerRequest struct {
	Name         string          `json:"name"`
	Capabilities json.RawMessage `json:"capabilities"` // an object, stored as sent
	ID           string          `json:"id"`           // optional: re-register this worker
}

// register is POST /api/workers/register (§4.1).
func (s *Server) register(c echo.Context) error {
	var req registerRequest
	if _, err := readJSON(c, &req); err != nil {
		return err
	}
	if req.Name == "" || !isObject(req.Capabilities) {
		return fail(http.StatusBadRequest, msgNameAndCapabilities)
	}
	reg := store.Registration{Name: req.Name, Capabilities: string(req.Capabilities)}
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
	return c.JSON(http.StatusOK, map[string]string{"id": w.ID, "status": status, "baseImageId": s.cfg.BaseImageID})
}

type jobJSON struct {
	ID          string          `json:"id"`
	Platform    domain.Platform `json:"platform"`
	SourceURL   string          `json:"source_url"`
	CertsURL    *string         `json:"certs_url"`
	BaseImageID string          `json:"baseImageId"`
}

// poll is GET /api/workers/poll (§4.2).
func (s *Server) poll(c echo.Context) error {
	wid, ok := domain.ParseID(callerOf(c).WorkerID)
	if !ok {
		return fail(http.StatusNotFound, msgWorkerNotFound)
	}
	job, err := s.queue.Poll(c.Request().Context(), wid)
	if err != nil {
		return err
	}
	if job == nil {
		return c.JSON(http.StatusOK, map[string]any{"job": nil})
	}
	out := jobJSON{ID: job.BuildID, Platform: job.Platform, SourceURL: "/api/builds/" + job.BuildID + "/source",
		BaseImageID: s.cfg.BaseImageID}
	if job.HasCerts {
		u := "/api/builds/" + job.BuildID + "/certs"
		out.CertsURL = &u
	}
	return c.JSON(http.StatusOK, map[string]any{"job": out})
}

// unregister is POST /api/workers/:id/unregister and POST
// /api/workers/unregister (§4.9): the worker is named by the path, else
// ?worker_id=, else X-Worker-Id, else the body's worker_id.
func (s *Server) unregister(c echo.Context) error {
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
	if raw == "" {
		return fail(http.StatusBadRequest, msgWorkerIDRequired)
	}
	wid, ok := domain.ParseID(raw)
	if !ok {
		return fail(http.StatusNotFound, msgWorkerNotFound)
	}
	n, err := s.queue.Unregister(c.Request().Context(), wid)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"success": true, "message": "Worker unregistered", "builds_reassigned": n})
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
