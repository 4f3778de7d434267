package httpapi

import (
	"encoding/json"
	"math"
	"net/http"
	"strconv"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/expo-free-agent/controller/store/domain"
)

var diagnosticStatuses = map[string]bool{"healthy": true, "warning": true, "critical": true}

// diagnosticRequest is the body of POST /api/diagnostics/report.
type diagnosticRequest struct {
	WorkerID   string          `json:"worker_id"`
	Status     string          `json:"status"`
	DurationMS float64         `json:"duration_ms"`
	Checks     json.RawMessage `json:"checks"` // an array, stored as sent
	AutoFixed  bool            `json:"auto_fixed"`
}

// addDiagnostic is POST /api/diagnostics/report (§4.11).
func (s *Server) addDiagnostic(c echo.Context) error {
	var req diagnosticRequest
	got, err := readJSON(c, &req)
	if err != nil {
		return err
	}
	for _, k := range []string{"worker_id", "status", "duration_ms", "checks"} {
		if !got.has(k) {
			return fail(http.StatusBadRequest, msgDiagnosticFields)
		}
	}
	if got.wrongType("duration_ms") {
		return fail(http.StatusBadRequest, msgDiagnosticFields)
	}
	if !diagnosticStatuses[req.Status] {
		return fail(http.StatusBadRequest, msgDiagnosticStatus)
	}
	wid, ok := domain.ParseID(req.WorkerID)
	if !ok {
		return fail(http.StatusNotFound, msgWorkerNotFound)
	}
	if _, err := s.store.GetWorker(c.Request().Context(), wid); err != nil {
		return err
	}
	if !isArray(req.Checks) {
		return fail(http.StatusBadRequest, msgChecksNotArray)
	}
	d := domain.Diagnostic{ID: uuid.NewString(), WorkerID: wid, Status: req.Status, RunAt: s.now(),
		DurationMS: truncateMillis(req.DurationMS), AutoFixed: req.AutoFixed, Checks: string(req.Checks)}
	if err := s.store.AddDiagnostic(c.Request().Context(), d); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]string{"id": d.ID, "status": "stored"})
}

// truncateMillis truncates a duration to an integer, clamped to int64 (a
// float64 beyond it would otherwise convert to an arbitrary value).
func truncateMillis(f float64) int64 {
	switch {
	case f >= math.MaxInt64:
		return math.MaxInt64
	case f <= math.MinInt64:
		return math.MinInt64
	}
	return int64(f)
}

type diagnosticJSON struct {
	ID         string          `json:"id"`
	WorkerID   string          `json:"worker_id"`
	Status     string          `json:"status"`
	RunAt      int64           `json:"run_at"`
	DurationMS int64           `json:"duration_ms"`
	AutoFixed  bool            `json:"auto_fixed"`
	Checks     json.RawMessage `json:"checks"`
}

func toDiagnosticJSON(d domain.Diagnostic) diagnosticJSON {
	return diagnosticJSON{ID: d.ID, WorkerID: d.WorkerID, Status: d.Status, RunAt: d.RunAt,
		DurationMS: d.DurationMS, AutoFixed: d.AutoFixed, Checks: json.RawMessage(d.Checks)}
}

// diagnostics loads up to limit reports of the :worker_id worker.
func (s *Server) diagnostics(c echo.Context, limit int) (string, []domain.Diagnostic, error) {
	wid, ok := domain.ParseID(c.Param("worker_id"))
	if !ok {
		return "", nil, fail(http.StatusNotFound, msgWorkerNotFound)
	}
	reports, err := s.store.Diagnostics(c.Request().Context(), wid, limit)
	return wid, reports, err
}

// listDiagnostics is GET /api/diagnostics/:worker_id (§4.11).
func (s *Server) listDiagnostics(c echo.Context) error {
	limit, err := strconv.Atoi(c.QueryParam("limit"))
	if err != nil || limit < 1 || limit > 100 {
		limit = 10
	}
	wid, reports, err := s.diagnostics(c, limit)
	if err != nil {
		return err
	}
	out := make([]diagnosticJSON, len(reports))
	for i, d := range reports {
		out[i] = toDiagnosticJSON(d)
	}
	return c.JSON(http.StatusOK, map[string]any{"worker_id": wid, "reports": out})
}

// latestDiagnostic is GET /api/diagnostics/:worker_id/latest (§4.11).
func (s *Server) latestDiagnostic(c echo.Context) error {
	_, reports, err := s.diagnostics(c, 1)
	if err != nil {
		return err
	}
	if len(reports) == 0 {
		return fail(http.StatusNotFound, msgNoDiagnostics)
	}
	return c.JSON(http.StatusOK, toDiagnosticJSON(reports[0]))
}
