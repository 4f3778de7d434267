package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

const (
	headerAPIKey      = "X-API-Key"
	headerBuildToken  = "X-Build-Token"
	headerWorkerID    = "X-Worker-Id"
	headerBuildID     = "X-Build-Id"
	headerWorkerToken = "X-Worker-Token"
	headerVMToken     = "X-VM-Token"
)

// Kind is what a caller's credential proves (§1.2, §4.12).
type Kind int

// The kinds of caller.
const (
	// Anonymous: no credential. Public routes, and keyless telemetry, whose
	// caller only names a worker and its build (§4.7).
	Anonymous Kind = iota
	// Admin: the admin X-API-Key. Developers' CLIs, operators, and the older
	// workers, which add a claimed worker id (X-Worker-Id, ?worker_id=, or a
	// form field).
	Admin
	// BuildToken: the X-Build-Token of the addressed build, which opens that
	// build's key-or-token routes only.
	BuildToken
	// WorkerKey: the worker key as X-API-Key (--worker-key): the worker
	// routes with a claimed worker id, nothing of the developers' (§4.17).
	WorkerKey
	// WorkerToken: an X-Worker-Token, which stands for the key and the
	// worker's identity on every worker route (§4.12).
	WorkerToken
	// VMToken: an X-VM-Token a build's VM traded its one-time password for;
	// it opens that build's files, logs, readiness and artifact, for one
	// assignment (§4.13).
	VMToken
	// HostToken: the host's token from vm-status, sent as X-VM-Token; it
	// opens only that build's heartbeat and telemetry (§4.14).
	HostToken
	// Session: a dashboard session cookie, which the admin key started
	// (POST /signin). It opens the dashboard's pages and, with the
	// session's form token, its actions; no API route.
	Session
)

func (k Kind) String() string {
	return [...]string{"anonymous", "admin", "build-token", "worker-key", "worker-token", "vm-token", "host-token", "session"}[k]
}

// kindSet is the kinds of caller a route admits.
type kindSet uint16

func kinds(ks ...Kind) kindSet {
	var s kindSet
	for _, k := range ks {
		s |= 1 << k
	}
	return s
}

func (s kindSet) has(k Kind) bool { return s&(1<<k) != 0 }

// Caller is who is calling, resolved once per request, before the handler,
// by the route's access rule.
type Caller struct {
	Kind     Kind
	WorkerID string        // the worker the caller acts as (a claim for the key, canonical when it is a UUID)
	BuildID  string        // the build the caller is scoped to, or whose assignee it is
	Build    *domain.Build // that build, when the rule loaded it
	// Keyless is set for an Anonymous caller admitted by a keyless rule: it
	// is told only 401 Missing X-API-Key header for any refusal.
	Keyless bool
	// Token and TokenExpiresAt are a worker token as presented, and when it
	// expires (a poll rotates it near the end of its life).
	Token          string
	TokenExpiresAt int64
	// AfterCompletion is set when the build completed successfully a short
	// while ago and the caller was its last assignee: its heartbeat or
	// telemetry is answered 200, with no change (§4.14).
	AfterCompletion bool
	// CSRF is a Session's form token.
	CSRF string
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
	name    string  // for the route table and the auth-matrix test
	public  bool    // anyone: no credential is checked
	kinds   kindSet // who may call, when not public
	keyless bool    // no credential at all is allowed too; every refusal is then 401 Missing X-API-Key header
	claim   claim   // where the key's caller names its worker (a token's caller may, and must then match)
	// assignee: the caller's worker must be the :id build's current assignee
	// (403 route.notMine); a VM or host token is by itself.
	assignee bool
	// afterCompletion: the build's last assignee is admitted for a while
	// after the build completed (Caller.AfterCompletion).
	afterCompletion bool
	// tokenInQuery: the build token may come as ?token= (a live log in a
	// browser).
	tokenInQuery bool
	// form: a Session caller must send the session's form token (CSRF).
	form bool
}

// The access rules; each route names one.
var (
	public       = access{name: "public", public: true}
	adminOnly    = access{name: "key", kinds: kinds(Admin)}
	adminOrToken = access{name: "keyOrToken", kinds: kinds(Admin, BuildToken)}
	// adminOrTokenStream also takes the build token as ?token=: a browser's
	// EventSource cannot set headers.
	adminOrTokenStream = access{name: "keyOrToken", kinds: kinds(Admin, BuildToken), tokenInQuery: true}
	// The worker routes: the admin or worker key with the worker's claim, or
	// a worker token; the assignee's routes also a VM token of the build.
	workerKeyOnly = access{name: "workerKey", kinds: kinds(Admin, WorkerKey)}
	workerCaller  = access{name: "worker", kinds: kinds(Admin, WorkerKey, WorkerToken)}
	pollingWorker = access{name: "worker", kinds: kinds(Admin, WorkerKey, WorkerToken), claim: claimQuery}
	assigneeFiles = access{name: "assignee", kinds: kinds(Admin, WorkerKey, WorkerToken, VMToken),
		claim: claimHeader, assignee: true}
	assigneeCerts = access{name: "assignee", kinds: kinds(Admin, WorkerKey, WorkerToken, VMToken),
		claim: claimHeaders, assignee: true}
	assigneeBeat = access{name: "assignee", kinds: kinds(Admin, WorkerKey, WorkerToken, VMToken, HostToken),
		claim: claimQuery, assignee: true, afterCompletion: true}
	telemetryCaller = access{name: "assignee", kinds: kinds(Admin, WorkerKey, WorkerToken, VMToken, HostToken),
		claim: claimHeaders, assignee: true, keyless: true, afterCompletion: true}
	vmOnly     = access{name: "vm", kinds: kinds(VMToken)}
	artifactor = access{name: "assignee", kinds: kinds(Admin, WorkerKey, WorkerToken, VMToken), claim: claimHeader}
	// The dashboard: open to anyone, and a signed-in operator is known; the
	// pages that may show secrets (build pages, logs, results) need a
	// session or the admin key; its actions need the session's form token
	// too (the admin key, a header no other site can send, needs none).
	dashboardOpen = access{name: "dashboard", public: true, kinds: kinds(Session)}
	signedIn      = access{name: "session", kinds: kinds(Admin, Session)}
	signedInForm  = access{name: "sessionForm", kinds: kinds(Admin, Session), form: true}
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
			cl, err := s.resolve(c, r)
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

// resolve applies a route's access rule. The order of its checks is the
// order of the refusals in §1.2, §4.3, §4.4, §4.6, §4.12 and §4.13.
func (s *Server) resolve(c echo.Context, r *route) (Caller, error) {
	a := r.access
	cl, err := s.credential(c, a)
	if err != nil || a.public {
		return cl, err
	}
	if a.form && cl.Kind == Session {
		if err := checkForm(c, cl); err != nil {
			return cl, err
		}
	}
	if err := claimWorker(c, a.claim, &cl, r.notMine); err != nil {
		return cl, err
	}
	if !a.assignee || cl.Kind == VMToken || cl.Kind == HostToken {
		return cl, nil // a VM or host token is the assignee's by itself
	}
	b, err := s.loadBuild(c)
	if err != nil {
		return cl, err
	}
	cl.BuildID, cl.Build = b.ID, &b
	switch {
	case b.AssignedTo(cl.WorkerID):
	case a.afterCompletion && s.justCompletedBy(b, cl.WorkerID):
		cl.AfterCompletion = true
	default:
		return cl, store.ErrNotAssignee
	}
	return cl, nil
}

// credential checks the credential the route admits: a dashboard session
// cookie (only when no X-API-Key is sent: a key, if sent, alone decides), a
// VM or host token, a worker token, the admin or worker key, a build token —
// in that order, so a bad token is refused even next to a valid key.
func (s *Server) credential(c echo.Context, a access) (Caller, error) {
	h := c.Request().Header
	if a.kinds.has(Session) && h.Get(headerAPIKey) == "" {
		if cl, ok := s.sessionCaller(c); ok {
			return cl, nil
		}
	}
	if a.public {
		return Caller{Kind: Anonymous}, nil
	}
	if vm := h.Get(headerVMToken); vm != "" && (a.kinds.has(VMToken) || a.kinds.has(HostToken)) {
		return s.assignmentCaller(c, a, vm)
	}
	if wt := h.Get(headerWorkerToken); wt != "" && a.kinds.has(WorkerToken) {
		return s.workerTokenCaller(c.Request().Context(), wt)
	}
	key, token := h.Get(headerAPIKey), h.Get(headerBuildToken)
	if token == "" && a.tokenInQuery {
		token = c.QueryParam("token")
	}
	switch {
	case a.kinds == kinds(VMToken):
		return Caller{}, fail(http.StatusUnauthorized, msgMissingVMToken)
	case key != "" && s.keyMatches(key):
		return Caller{Kind: Admin}, nil
	case key != "" && a.kinds.has(WorkerKey) && s.workerKeyMatches(key):
		return Caller{Kind: WorkerKey}, nil
	case a.kinds.has(BuildToken) && token != "":
		return s.buildTokenCaller(c, key, token)
	case a.keyless && key == "":
		return Caller{Kind: Anonymous, Keyless: true}, nil
	case key != "":
		return Caller{}, fail(http.StatusForbidden, msgInvalidKey)
	case a.kinds.has(Session):
		return Caller{}, fail(http.StatusUnauthorized, msgSignInRequired)
	case a.kinds.has(BuildToken):
		return Caller{}, fail(http.StatusUnauthorized, msgMissingKeyOrToken)
	default:
		return Caller{}, fail(http.StatusUnauthorized, msgMissingKey)
	}
}

// buildTokenCaller checks the addressed build's token. The token works alone
// and beats a wrong (stale) key.
func (s *Server) buildTokenCaller(c echo.Context, key, token string) (Caller, error) {
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
}

// workerTokenCaller checks a worker token: 401 Invalid or expired worker
// token for one that is unknown, expired or revoked.
func (s *Server) workerTokenCaller(ctx context.Context, token string) (Caller, error) {
	wid, expires, err := s.store.WorkerByToken(ctx, domain.Digest(token), s.now())
	if errors.Is(err, store.ErrBadToken) {
		return Caller{}, fail(http.StatusUnauthorized, msgBadWorkerToken)
	}
	if err != nil {
		return Caller{}, err
	}
	return Caller{Kind: WorkerToken, WorkerID: wid, Token: token, TokenExpiresAt: expires}, nil
}

// assignmentCaller checks an X-VM-Token against the :id build's latest
// assignment: the VM's token, or the host's (heartbeat and telemetry only).
// Anything else — unknown, expired, of another build or assignment, a host
// token elsewhere — is 401 Invalid or expired VM token, one text for all.
func (s *Server) assignmentCaller(c echo.Context, a access, token string) (Caller, error) {
	id, err := buildID(c)
	if err != nil {
		return Caller{}, err
	}
	bad := fail(http.StatusUnauthorized, msgBadVMToken)
	b, kind, err := s.store.BuildByAssignmentToken(c.Request().Context(), id, token, s.now())
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrBadToken) {
		return Caller{}, bad
	}
	if err != nil {
		return Caller{}, err
	}
	cl := Caller{Kind: VMToken, WorkerID: deref(b.WorkerID), BuildID: b.ID, Build: &b}
	if kind == store.HostToken {
		cl.Kind = HostToken
	}
	switch {
	case !a.kinds.has(cl.Kind):
		return Caller{}, bad
	case b.Running():
		return cl, nil
	case a.afterCompletion && s.justCompletedBy(b, cl.WorkerID):
		cl.AfterCompletion = true
		return cl, nil
	}
	return Caller{}, bad // the assignment ended
}

// justCompletedBy reports whether workerID completed b successfully less than
// afterCompletionGrace ago (§4.14: the host may heartbeat once more while the
// VM's artifact lands).
func (s *Server) justCompletedBy(b domain.Build, workerID string) bool {
	return b.Status == domain.StatusCompleted && b.WorkerID != nil && *b.WorkerID == workerID &&
		b.CompletedAt != nil && s.now()-*b.CompletedAt < afterCompletionGrace.Milliseconds()
}

// claimWorker reads the worker a caller names, where the rule says. The key
// must name one; a token's caller may, and it must then be the token's worker
// (403 Worker token does not match worker_id; for a VM or host token, the
// route's own refusal of a non-assignee).
func claimWorker(c echo.Context, where claim, cl *Caller, notMine string) error {
	h := c.Request().Header
	byToken := cl.Kind == WorkerToken || cl.Kind == VMToken || cl.Kind == HostToken
	var claimed string
	switch where {
	case claimHeader:
		claimed = h.Get(headerWorkerID)
		if claimed == "" && !byToken {
			return fail(http.StatusUnauthorized, msgMissingWorkerID)
		}
	case claimQuery:
		claimed = c.QueryParam("worker_id")
		if claimed == "" && !byToken {
			return fail(http.StatusBadRequest, msgWorkerIDRequired)
		}
	case claimHeaders:
		claimed = h.Get(headerWorkerID)
		bh := h.Get(headerBuildID)
		if !byToken {
			if claimed == "" {
				return fail(http.StatusUnauthorized, msgMissingWorkerID)
			}
			if bh == "" {
				return fail(http.StatusUnauthorized, msgMissingBuildID)
			}
		}
		id, err := buildID(c)
		if err != nil {
			return err
		}
		if bh != "" && claimedID(bh) != id {
			return fail(http.StatusForbidden, msgBuildIDMismatch)
		}
	}
	return settleClaim(cl, claimed, notMine)
}

// settleClaim records a claimed worker id, or checks it against a token's.
func settleClaim(cl *Caller, claimed, notMine string) error {
	switch {
	case claimed == "":
		return nil
	case cl.Kind == WorkerToken && claimedID(claimed) != cl.WorkerID:
		return fail(http.StatusForbidden, msgWorkerTokenMismatch)
	case (cl.Kind == VMToken || cl.Kind == HostToken) && claimedID(claimed) != cl.WorkerID:
		return store.ErrNotAssignee // answered with the route's own 403
	case cl.Kind != WorkerToken && cl.Kind != VMToken && cl.Kind != HostToken:
		cl.WorkerID = claimedID(claimed)
	}
	return nil
}

// keyMatches compares a presented key with the admin key in constant time,
// whatever their lengths (it compares SHA-256 digests).
func (s *Server) keyMatches(presented string) bool {
	sum := sha256.Sum256([]byte(presented))
	return subtle.ConstantTimeCompare(sum[:], s.keySum[:]) == 1
}

// workerKeyMatches compares a presented key with the worker key, if one is
// configured.
func (s *Server) workerKeyMatches(presented string) bool {
	if s.cfg.WorkerKey == "" {
		return false
	}
	sum := sha256.Sum256([]byte(presented))
	return subtle.ConstantTimeCompare(sum[:], s.workerKeySum[:]) == 1
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

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
