package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

const (
	headerAPIKey     = "X-API-Key"
	headerBuildToken = "X-Build-Token"
	headerWorkerID   = "X-Worker-Id"
	headerBuildID    = "X-Build-Id"
)

// Kind is what a caller's credential proves (§1.2).
type Kind int

// The kinds of caller.
const (
	// Anonymous: no credential. Public routes, and keyless telemetry, whose
	// caller only names a worker and its build (§4.7).
	Anonymous Kind = iota
	// Admin: the X-API-Key. Developers' CLIs and the older workers, which
	// add a claimed worker id (X-Worker-Id, ?worker_id=, or a form field).
	Admin
	// BuildToken: the X-Build-Token of the addressed build, which opens that
	// build's key-or-token routes only.
	BuildToken
)

func (k Kind) String() string {
	return [...]string{"anonymous", "admin", "build-token"}[k]
}

// Caller is who is calling, resolved once per request, before the handler,
// by the route's access rule.
type Caller struct {
	Kind     Kind
	WorkerID string        // the worker the caller acts as (a claim, canonical when it is a UUID)
	BuildID  string        // the build the caller is scoped to, or whose assignee it is
	Build    *domain.Build // that build, when the rule loaded it
	// Keyless is set for an Anonymous caller admitted by a keyless rule: it
	// is told only 401 Missing X-API-Key header for any refusal.
	Keyless bool
}

// claim is where a route's caller names the worker it acts as.
type claim int

const (
	claimNone    claim = iota
	claimHeader        // X-Worker-Id (401 Missing X-Worker-Id header)
	claimQuery         // ?worker_id= (400 worker_id required)
	claimHeaders       // X-Worker-Id and X-Build-Id, which must name :id (§4.4 checks 2–5)
)

// access is a route's rule of who may call it.
type access struct {
	name     string // for the route table and the auth-matrix test
	public   bool   // anyone: no credential is checked
	token    bool   // the addressed build's token opens it (besides the key)
	keyless  bool   // no credential at all is allowed too; every refusal is then 401 Missing X-API-Key header
	claim    claim
	assignee bool // the claimed worker must be the :id build's current assignee (403 route.notMine)
}

// The access rules; each route names one.
var (
	public        = access{name: "public", public: true}
	adminOnly     = access{name: "key"}
	adminOrToken  = access{name: "keyOrToken", token: true}
	pollingWorker = access{name: "key", claim: claimQuery}
	// The assignee of :id, with its claim where its route reads it.
	assigneeByHeader  = access{name: "worker", claim: claimHeader, assignee: true}
	assigneeByQuery   = access{name: "worker", claim: claimQuery, assignee: true}
	assigneeByHeaders = access{name: "worker", claim: claimHeaders, assignee: true}
	telemetryCaller   = access{name: "worker", claim: claimHeaders, assignee: true, keyless: true}
)

const ctxCaller = "caller"

// callerOf returns the request's caller (Anonymous before it is resolved).
func callerOf(c echo.Context) Caller {
	cl, _ := c.Get(ctxCaller).(Caller)
	return cl
}

// authorize is the route's access rule as middleware: it resolves the caller
// or answers the refusal.
func (s *Server) authorize(r *route) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			cl, err := s.resolve(c, r.access)
			c.Set(ctxCaller, cl)
			if err != nil {
				var ae *apiError
				if cl.Keyless && errors.As(err, &ae) && ae.status < 500 {
					return fail(http.StatusUnauthorized, msgMissingKey)
				}
				return err
			}
			return next(c)
		}
	}
}

// resolve applies an access rule. The order of its checks is the order of
// the refusals in §1.2, §4.3, §4.4 and §4.6.
func (s *Server) resolve(c echo.Context, a access) (Caller, error) {
	cl, err := s.credential(c, a)
	if err != nil || a.public {
		return cl, err
	}
	if err := claimWorker(c, a.claim, &cl); err != nil {
		return cl, err
	}
	if a.assignee {
		b, err := s.loadBuild(c)
		if err != nil {
			return cl, err
		}
		if !b.AssignedTo(cl.WorkerID) {
			return cl, store.ErrNotAssignee
		}
		cl.BuildID, cl.Build = b.ID, &b
	}
	return cl, nil
}

// credential checks the key or the build token.
func (s *Server) credential(c echo.Context, a access) (Caller, error) {
	if a.public {
		return Caller{Kind: Anonymous}, nil
	}
	h := c.Request().Header
	key, token := h.Get(headerAPIKey), h.Get(headerBuildToken)
	switch {
	case key != "" && s.keyMatches(key):
		return Caller{Kind: Admin}, nil
	case a.token && token != "":
		// The token works alone and beats a wrong (stale) key.
		b, err := s.loadBuild(c)
		if errors.Is(err, store.ErrNotFound) {
			err = nil // an unknown build's token is just a wrong token
		}
		if err != nil {
			return Caller{}, err
		}
		if b.ID != "" && domain.TokenMatches(token, b.TokenHash) {
			return Caller{Kind: BuildToken, BuildID: b.ID, Build: &b}, nil
		}
		if key != "" {
			return Caller{}, fail(http.StatusForbidden, msgInvalidKey)
		}
		return Caller{}, fail(http.StatusForbidden, msgBadToken)
	case a.keyless && key == "":
		return Caller{Kind: Anonymous, Keyless: true}, nil
	case key != "":
		return Caller{}, fail(http.StatusForbidden, msgInvalidKey)
	case a.token:
		return Caller{}, fail(http.StatusUnauthorized, msgMissingKeyOrToken)
	default:
		return Caller{}, fail(http.StatusUnauthorized, msgMissingKey)
	}
}

// claimWorker reads the worker a caller names, where the rule says.
func claimWorker(c echo.Context, where claim, cl *Caller) error {
	h := c.Request().Header
	switch where {
	case claimHeader:
		if h.Get(headerWorkerID) == "" {
			return fail(http.StatusUnauthorized, msgMissingWorkerID)
		}
		cl.WorkerID = claimedID(h.Get(headerWorkerID))
	case claimQuery:
		q := c.QueryParam("worker_id")
		if q == "" {
			return fail(http.StatusBadRequest, msgWorkerIDRequired)
		}
		cl.WorkerID = claimedID(q)
	case claimHeaders:
		wh, bh := h.Get(headerWorkerID), h.Get(headerBuildID)
		if wh == "" {
			return fail(http.StatusUnauthorized, msgMissingWorkerID)
		}
		if bh == "" {
			return fail(http.StatusUnauthorized, msgMissingBuildID)
		}
		id, err := buildID(c)
		if err != nil {
			return err
		}
		if claimedID(bh) != id {
			return fail(http.StatusForbidden, msgBuildIDMismatch)
		}
		cl.WorkerID = claimedID(wh)
	}
	return nil
}

// keyMatches compares a presented key with the admin key in constant time,
// whatever their lengths (it compares SHA-256 digests).
func (s *Server) keyMatches(presented string) bool {
	sum := sha256.Sum256([]byte(presented))
	return subtle.ConstantTimeCompare(sum[:], s.keySum[:]) == 1
}

// buildID returns the canonical :id, or 404 Build not found for a non-UUID,
// before any database or file access.
func buildID(c echo.Context) (string, error) {
	id, ok := domain.ParseID(c.Param("id"))
	if !ok {
		return "", fail(http.StatusNotFound, msgBuildNotFound)
	}
	return id, nil
}

// loadBuild resolves :id to a build: 404 Build not found for a non-UUID, and
// store.ErrNotFound for an unknown id.
func (s *Server) loadBuild(c echo.Context) (domain.Build, error) {
	id, err := buildID(c)
	if err != nil {
		return domain.Build{}, err
	}
	return s.store.GetBuild(c.Request().Context(), id)
}

// claimedID canonicalizes an identity claim; a malformed one is returned
// unchanged, so it simply never matches an assignee.
func claimedID(v string) string {
	if id, ok := domain.ParseID(v); ok {
		return id
	}
	return v
}
