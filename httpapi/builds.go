package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/expo-free-agent/controller/actors/files"
	"github.com/expo-free-agent/controller/actors/queue"
	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

// submittedJSON is the answer to submit and retry.
type submittedJSON struct {
	ID              string             `json:"id"`
	Status          domain.BuildStatus `json:"status"`
	SubmittedAt     int64              `json:"submitted_at"`
	AccessToken     string             `json:"access_token"`
	OriginalBuildID string             `json:"original_build_id,omitempty"`
}

func toSubmittedJSON(out queue.Submitted) submittedJSON {
	return submittedJSON{ID: out.ID, Status: domain.StatusPending, SubmittedAt: out.SubmittedAt,
		AccessToken: out.Token, OriginalBuildID: out.OriginalBuildID}
}

// submit is POST /api/builds/submit (§2.1): source and certs stream to
// temporary files; the queue manager keeps them only for a valid request,
// and answers after the files are fsynced and the row committed.
func (s *Server) submit(c echo.Context) error {
	f, err := s.readForm(c, formSpec{
		limit:  s.cfg.MaxSourceSize + s.cfg.MaxCertsSize + 1<<20,
		fields: []string{"platform", "label"}, // profile, appleId, applePassword and the rest are dropped
		files: map[string]fileSpec{
			"source": {kind: files.KindSource, limit: s.cfg.MaxSourceSize, tooLarge: msgSourceTooLarge},
			"certs":  {kind: files.KindCerts, limit: s.cfg.MaxCertsSize, tooLarge: msgCertsTooLarge},
		},
	})
	if err != nil {
		return err
	}
	defer f.discard()
	if f.files["source"] == nil {
		return fail(http.StatusBadRequest, msgSourceRequired)
	}
	platform, ok := domain.ParsePlatform(f.text["platform"])
	if !ok {
		return fail(http.StatusBadRequest, msgInvalidPlatform)
	}
	label, ok := buildLabel(f.text["label"])
	if !ok {
		return fail(http.StatusBadRequest, msgInvalidLabel)
	}
	src := f.take("source")
	app, err := src.ReadAppInfo()
	if err != nil { // a build without a known name is still a build
		s.log.Debug("submit: no app name from the source", "err", err)
	}
	out, err := s.queue.Submit(c.Request().Context(),
		queue.Submission{Platform: platform, Source: src, Certs: f.take("certs"), App: app, Label: label})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, toSubmittedJSON(out))
}

// maxLabel is the longest label a submit may carry, in characters.
const maxLabel = 100

// buildLabel is the submit's optional label, trimmed: valid UTF-8 of at most
// maxLabel characters and no control characters, else not ok.
func buildLabel(v string) (string, bool) {
	v = strings.TrimSpace(v)
	if !utf8.ValidString(v) || utf8.RuneCountInString(v) > maxLabel {
		return "", false
	}
	for _, r := range v {
		if unicode.IsControl(r) {
			return "", false
		}
	}
	return v, true
}

// isoMillis formats epoch milliseconds as ISO-8601 UTC with milliseconds.
func isoMillis(ms int64) string {
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z")
}

type listItem struct {
	ID          string             `json:"id"`
	Status      domain.BuildStatus `json:"status"`
	CreatedAt   string             `json:"createdAt"`
	CompletedAt *string            `json:"completedAt,omitempty"`
}

// toListItem is a build as the list shows it: completedAt only on finished
// builds.
func toListItem(b domain.Build) listItem {
	it := listItem{ID: b.ID, Status: b.Status, CreatedAt: isoMillis(b.SubmittedAt)}
	if b.Finished() && b.CompletedAt != nil {
		t := isoMillis(*b.CompletedAt)
		it.CompletedAt = &t
	}
	return it
}

// listParams are the query parameters of a filtered page of the build list
// (§2.2): any one of them asks for a page. Other parameters are ignored.
var listParams = [...]string{"status", "platform", "worker_id", "limit", "before"}

// defaultListLimit is the length of a page of the build list when the client
// names filters but no limit (§2.2).
const defaultListLimit = 100

// listBuilds is GET /api/builds (§2.2): an array, newest first. Without any
// of listParams it is the whole list, as it always was (listAll); with any,
// one filtered page (listPage).
func (s *Server) listBuilds(c echo.Context) error {
	qs := c.QueryParams()
	for _, p := range listParams {
		if qs.Has(p) {
			return s.listPage(c)
		}
	}
	return s.listAll(c)
}

// listAll is the whole list, every build, newest first. It is read
// store.MaxBuildPage builds at a time and written as it is read, so the size
// of the history costs no memory; the bytes are those c.JSON writes of the
// whole array (compact, or indented with ?pretty). The first page is read
// before the 200 is sent, so a database that fails at once gets the route's
// 500; a failure after that cuts the body short (invalid JSON) and is
// logged. Each page is read by the key (submitted_at, id), which never
// changes, so every build that exists when the answer starts is in it once,
// and a build submitted meanwhile at most once (it is newer: normally left
// out).
func (s *Server) listAll(c echo.Context) error {
	ctx := c.Request().Context()
	q := store.BuildQuery{Limit: store.MaxBuildPage}
	page, more, err := s.store.BuildPage(ctx, q)
	if err != nil {
		return err
	}
	indent := "" // as c.JSON indents
	if _, pretty := c.QueryParams()["pretty"]; c.Echo().Debug || pretty {
		indent = "  "
	}
	w := c.Response()
	w.Header().Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	w.WriteHeader(http.StatusOK)
	// What json.Encoder writes of a slice: "[", the items joined by "," (with
	// an indent, each on a line of its own), "]" and a newline.
	first, next, last := "[", ",", "]\n"
	if indent != "" {
		first, next, last = "[\n"+indent, ",\n"+indent, "\n]\n"
	}
	n := 0
	for {
		for _, b := range page {
			var item []byte
			if indent == "" {
				item, err = json.Marshal(toListItem(b))
			} else {
				item, err = json.MarshalIndent(toListItem(b), indent, indent)
			}
			if err != nil { // a struct of strings: cannot happen
				s.log.Error("encoding the build list", "build_id", b.ID, "err", err)
				return nil
			}
			sep := next
			if n == 0 {
				sep = first
			}
			if _, err := w.Write(append([]byte(sep), item...)); err != nil {
				return nil // the client went away
			}
			n++
		}
		if !more {
			break
		}
		q.Before = page[len(page)-1].ID
		if page, more, err = s.store.BuildPage(ctx, q); err != nil {
			// The status is sent: end the body early; the client sees broken JSON.
			s.log.Error("streaming the build list", "before", q.Before, "err", err)
			return nil
		}
	}
	if n == 0 {
		last = "[]\n"
	}
	w.Write([]byte(last))
	return nil
}

// listPage is one filtered page of the list (§2.2), in the array of
// listAll, with Link: <…>; rel="next" when more builds follow. It is 400
// Invalid filter, Invalid limit or Invalid before for bad parameters.
func (s *Server) listPage(c echo.Context) error {
	q, err := listQuery(c.QueryParams())
	if err != nil {
		return err
	}
	page, more, err := s.store.BuildPage(c.Request().Context(), q)
	if errors.Is(err, store.ErrNotFound) { // before names no build
		return fail(http.StatusBadRequest, msgInvalidBefore)
	}
	if err != nil {
		return err
	}
	if more {
		c.Response().Header().Set("Link", nextPageLink(q, page[len(page)-1].ID))
	}
	out := make([]listItem, len(page))
	for i, b := range page {
		out[i] = toListItem(b)
	}
	return c.JSON(http.StatusOK, out)
}

// listQuery reads the parameters of a page of the list (§2.2). A parameter
// may be given once; a repeated one is refused like a bad value.
//   - status: a status as the list shows it (a cancelled build is failed,
//     so "cancelled" is not a value); else 400 Invalid filter.
//   - platform: ios or android; else 400 Invalid filter.
//   - worker_id: any non-empty text, matched against the build's worker
//     (a UUID in any case); an id of no worker finds no build. Empty is 400
//     Invalid filter.
//   - limit: a whole number from 1 to store.MaxBuildPage (default
//     defaultListLimit); else 400 Invalid limit.
//   - before: a build's UUID; else 400 Invalid before (an unknown build is
//     told by the store, store.ErrNotFound).
func listQuery(qs url.Values) (store.BuildQuery, error) {
	q := store.BuildQuery{Limit: defaultListLimit}
	bad := func(msg string) (store.BuildQuery, error) {
		return store.BuildQuery{}, fail(http.StatusBadRequest, msg)
	}
	if v, given, ok := oneValue(qs, "status"); given {
		switch st := domain.BuildStatus(v); {
		case !ok:
			return bad(msgInvalidFilter)
		case st == domain.StatusPending, st == domain.StatusAssigned, st == domain.StatusBuilding,
			st == domain.StatusCompleted, st == domain.StatusFailed:
			q.Status = st
		default:
			return bad(msgInvalidFilter)
		}
	}
	if v, given, ok := oneValue(qs, "platform"); given {
		p, valid := domain.ParsePlatform(v)
		if !ok || !valid {
			return bad(msgInvalidFilter)
		}
		q.Platform = p
	}
	if v, given, ok := oneValue(qs, "worker_id"); given {
		if !ok || v == "" {
			return bad(msgInvalidFilter)
		}
		q.WorkerID = v
		if id, isUUID := domain.ParseID(v); isUUID {
			q.WorkerID = id // worker ids are lower case
		}
	}
	if v, given, ok := oneValue(qs, "limit"); given {
		n, err := strconv.ParseInt(v, 10, 64)
		if !ok || err != nil || n < 1 || n > store.MaxBuildPage {
			return bad(msgInvalidLimit)
		}
		q.Limit = int(n)
	}
	if v, given, ok := oneValue(qs, "before"); given {
		id, valid := domain.ParseID(v)
		if !ok || !valid {
			return bad(msgInvalidBefore)
		}
		q.Before = id
	}
	return q, nil
}

// oneValue is the value of query parameter name, whether it was given, and
// whether it was given only once.
func oneValue(qs url.Values, name string) (value string, given, once bool) {
	v, given := qs[name]
	if len(v) != 1 {
		return "", given, false
	}
	return v[0], true, true
}

// nextPageLink is the Link header of a page that more builds follow: the
// same filters and limit, before the page's last build.
func nextPageLink(q store.BuildQuery, last string) string {
	var sb strings.Builder
	sb.WriteString("</api/builds?")
	for _, f := range [...]struct{ name, value string }{
		{"status", string(q.Status)}, {"platform", string(q.Platform)}, {"worker_id", q.WorkerID},
	} {
		if f.value != "" {
			sb.WriteString(f.name + "=" + url.QueryEscape(f.value) + "&")
		}
	}
	fmt.Fprintf(&sb, "limit=%d&before=%s>; rel=\"next\"", q.Limit, url.QueryEscape(last))
	return sb.String()
}

type activeItem struct {
	ID        string             `json:"id"`
	Status    domain.BuildStatus `json:"status"`
	Platform  domain.Platform    `json:"platform"`
	WorkerID  *string            `json:"worker_id"`
	StartedAt *int64             `json:"started_at"`
}

// activeBuilds is GET /api/builds/active (§2.3).
func (s *Server) activeBuilds(c echo.Context) error {
	builds, err := s.store.RunningBuilds(c.Request().Context())
	if err != nil {
		return err
	}
	out := make([]activeItem, len(builds))
	for i, b := range builds {
		out[i] = activeItem{ID: b.ID, Status: b.Status, Platform: b.Platform, WorkerID: b.WorkerID, StartedAt: b.StartedAt}
	}
	return c.JSON(http.StatusOK, map[string]any{"builds": out})
}

// addressedBuild is the :id build: the one the caller's rule already loaded,
// else loaded now (404 Build not found).
func (s *Server) addressedBuild(c echo.Context) (domain.Build, error) {
	if b := callerOf(c).Build; b != nil {
		return *b, nil
	}
	return s.loadBuild(c)
}

// buildStatus is GET /api/builds/:id/status (§2.4): exactly eight fields.
func (s *Server) buildStatus(c echo.Context) error {
	b, err := s.addressedBuild(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, b.StatusObject())
}

type logJSON struct {
	Timestamp int64           `json:"timestamp"`
	Level     domain.LogLevel `json:"level"`
	Message   string          `json:"message"`
}

// logPageSize is how many log entries are read and encoded at a time, so
// that a log of any length streams in bounded memory.
const logPageSize = 1000

// getLogs is GET /api/builds/:id/logs (§2.5): the whole log, in order,
// streamed page by page, so a log of any size is sent in bounded memory
// (store.LogPageBytes).
func (s *Server) getLogs(c echo.Context) error {
	id, err := buildID(c)
	if err != nil {
		return err
	}
	if c.QueryParams().Has("after") || c.QueryParams().Has("limit") {
		return s.logsAfter(c, id)
	}
	ctx := c.Request().Context()
	page, more, err := s.store.LogPage(ctx, id, 0, logPageSize)
	if err != nil {
		return err
	}
	w := c.Response()
	w.Header().Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	fmt.Fprintf(w, `{"build_id":%q,"logs":[`, id)
	first := true
	for {
		for _, e := range page {
			if !first {
				w.Write([]byte{','})
			}
			first = false
			if err := enc.Encode(logJSON{Timestamp: e.Timestamp, Level: e.Level, Message: e.Message}); err != nil {
				return nil // the client went away
			}
		}
		if !more {
			break
		}
		if page, more, err = s.store.LogPage(ctx, id, page[len(page)-1].Seq, logPageSize); err != nil {
			// The status is sent: end the body early; the client sees broken JSON.
			s.log.Error("streaming logs", "build_id", id, "err", err)
			return nil
		}
	}
	w.Write([]byte("]}\n"))
	return nil
}

// seqLogJSON is a log entry with its sequence number (§2.5, incremental).
type seqLogJSON struct {
	Seq int64 `json:"seq"`
	logJSON
}

// The bounds of an incremental read of a log (§2.5).
const (
	defaultLogLimit = 1000
	maxLogLimit     = 10_000
)

// logsAfter is GET /api/builds/:id/logs?after=<seq>&limit=<n>: the entries
// after seq, ascending, at most limit of them (and at most one page of text,
// store.LogPageBytes: a client reads on from the last seq it got).
func (s *Server) logsAfter(c echo.Context, id string) error {
	after, err := intParam(c, "after", 0, 0, math.MaxInt64, msgInvalidAfter)
	if err != nil {
		return err
	}
	limit, err := intParam(c, "limit", defaultLogLimit, 1, maxLogLimit, msgInvalidLimit)
	if err != nil {
		return err
	}
	page, _, err := s.store.LogPage(c.Request().Context(), id, after, int(limit))
	if err != nil {
		return err
	}
	out := make([]seqLogJSON, len(page))
	for i, e := range page {
		out[i] = seqLogJSON{Seq: e.Seq, logJSON: logJSON{Timestamp: e.Timestamp, Level: e.Level, Message: e.Message}}
	}
	return c.JSON(http.StatusOK, map[string]any{"build_id": id, "logs": out})
}

// intParam reads an integer query parameter within [lo, hi]; absent is def.
// Anything else is 400 msg.
func intParam(c echo.Context, name string, def, lo, hi int64, msg string) (int64, error) {
	v := c.QueryParam(name)
	if v == "" && !c.QueryParams().Has(name) {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < lo || n > hi {
		return 0, fail(http.StatusBadRequest, msg)
	}
	return n, nil
}

// download is GET /api/builds/:id/download[/:type] (§2.6).
func (s *Server) download(c echo.Context) error {
	b, err := s.addressedBuild(c)
	if err != nil {
		return err
	}
	switch c.Param("type") {
	case "", "result":
		if b.Status != domain.StatusCompleted {
			return fail(http.StatusBadRequest, msgBuildNotCompleted)
		}
		if b.ResultPath == nil {
			return fail(http.StatusNotFound, msgResultNotFound)
		}
		return s.sendFile(c, stored{rel: *b.ResultPath, contentType: echo.MIMEOctetStream,
			filename: b.ID + b.Platform.ResultExt(), notFound: msgResultNotFound, failed: msgReadResultFailed,
			purged: b.PurgedAt != nil})
	case "source":
		return s.sendFile(c, stored{rel: b.SourcePath, contentType: "application/zip",
			filename: b.ID + ".zip", notFound: msgSourceNotFound, failed: msgReadSourceFailed, purged: b.PurgedAt != nil})
	default:
		return fail(http.StatusBadRequest, msgInvalidFileType)
	}
}

// cancel is POST /api/builds/:id/cancel (§2.7); the body is ignored.
func (s *Server) cancel(c echo.Context) error {
	if _, err := s.cancelBuild(c); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "cancelled"})
}

// cancelBuild cancels the :id build through the queue manager: the API's
// cancel and the dashboard's. It returns the build's id, or the queue's
// errors.
func (s *Server) cancelBuild(c echo.Context) (string, error) {
	id, err := buildID(c)
	if err != nil {
		return "", err
	}
	_, err = s.queue.Cancel(c.Request().Context(), id)
	return id, err
}

// retry is POST /api/builds/:id/retry (§2.8): a new build sharing the
// original's source and certs. A build-token holder is paced per retry chain
// (429 Too many retries with Retry-After) and bounded per submitted build
// (queue.ErrTooManyRetries, 429); the admin key is neither.
func (s *Server) retry(c echo.Context) error {
	id, err := buildID(c)
	if err != nil {
		return err
	}
	cl := callerOf(c)
	limited := cl.Kind != Admin
	if limited {
		// Paced per chain, not per token: each retry answers with a new
		// token, so a per-token pace would start afresh at every link.
		chain := id
		if cl.Build != nil && cl.Build.RootBuildID != nil {
			chain = *cl.Build.RootBuildID
		}
		if ok, wait := s.retries.allow(chain); !ok {
			return tooMany(c, msgTooManyRetries, wait)
		}
	}
	out, err := s.queue.RetryWith(c.Request().Context(), id, queue.RetryOptions{Limited: limited})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, toSubmittedJSON(out))
}
