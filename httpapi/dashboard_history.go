package httpapi

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/expo-free-agent/controller/store"
)

// historyPageSize is the length of a page of the history.
const historyPageSize = 50

type historyView struct {
	Viewer
	Builds  []dashBuild
	Workers []dashWorker // for the worker filter
	// The filters as given, for the form and the next page's link.
	Status, Platform, WorkerID, App, IDPrefix string
	Next                                      string // the next page's URL, "" on the last
	Filtered                                  bool
}

// historyPage is GET /builds: the builds, newest first, a page at a time
// through the build list's pages (store.BuildPage), filtered by status,
// platform and worker, searched by an id prefix or an app name; limit sets
// the page's length (default historyPageSize). Each page
// reads one index range; nothing loads the history. Bad parameters are a
// 400 page.
func (s *Server) historyPage(c echo.Context) error {
	qs := url.Values{}
	for k, v := range c.QueryParams() {
		if len(v) > 0 && v[0] != "" { // the form's "any" is empty
			qs[k] = v
		}
	}
	q, err := listQuery(qs)
	if err != nil {
		return err
	}
	if !qs.Has("limit") {
		q.Limit = historyPageSize
	}
	q.AppName = strings.TrimSpace(qs.Get("app"))
	if p := strings.ToLower(strings.TrimSpace(qs.Get("id"))); p != "" {
		if len(p) > 36 || strings.Trim(p, "0123456789abcdef-") != "" {
			return fail(http.StatusBadRequest, msgInvalidIDPrefix)
		}
		q.IDPrefix = p
	}
	ctx := c.Request().Context()
	page, more, err := s.store.BuildPage(ctx, q)
	if errors.Is(err, store.ErrNotFound) {
		return fail(http.StatusBadRequest, msgInvalidBefore)
	}
	if err != nil {
		return err
	}
	workers, err := s.store.ListWorkers(ctx)
	if err != nil {
		return err
	}
	names := make(map[string]string, len(workers))
	v := historyView{Viewer: s.viewerOf(c), Status: string(q.Status), Platform: string(q.Platform),
		WorkerID: q.WorkerID, App: q.AppName, IDPrefix: q.IDPrefix}
	v.Filtered = v.Status != "" || v.Platform != "" || v.WorkerID != "" || v.App != "" || v.IDPrefix != ""
	for _, w := range workers {
		names[w.ID] = w.Name
		v.Workers = append(v.Workers, dashWorker{ID: w.ID, Name: w.Name})
	}
	now := s.cfg.Clock.Now().UnixMilli()
	for _, b := range page {
		v.Builds = append(v.Builds, s.toDashBuild(b, names, now))
	}
	if more {
		next := url.Values{}
		for k, val := range map[string]string{"status": v.Status, "platform": v.Platform, "worker_id": v.WorkerID,
			"app": v.App, "id": v.IDPrefix, "before": page[len(page)-1].ID, "limit": strconv.Itoa(q.Limit)} {
			if val != "" {
				next.Set(k, val)
			}
		}
		v.Next = "/builds?" + next.Encode()
	}
	return s.render(c, "history.html", v)
}
