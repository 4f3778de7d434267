package httpapi

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
)

// Dashboard sessions: an operator signs in with the admin key and gets a
// session cookie. Sessions live in the server's memory only (a random id →
// expiry and form token): a restart signs everyone out, which costs one
// sign-in and needs no secret on disk. The cookie is HttpOnly and
// SameSite=Strict; every form also carries the session's own token, compared
// in constant time.
const (
	sessionCookie = "efa_session"
	sessionTTL    = 12 * time.Hour
	maxSessions   = 1000
	csrfField     = "csrf"
	maxFormBody   = 64 << 10 // a dashboard form
	ctxForm       = "dashboardForm"
	// Sign-in attempts per client address: 5 at once, then one per 2 s.
	signInEvery = 2 * time.Second
	signInBurst = 5
)

type session struct {
	expires time.Time
	csrf    string
}

// sessions are the signed-in dashboards, keyed by the SHA-256 of the
// cookie's value: a lookup does not time on the secret, and the map holds no
// usable cookie.
type sessions struct {
	now func() time.Time

	mu sync.Mutex
	m  map[[sha256.Size]byte]session
}

func newSessions(now func() time.Time) *sessions {
	return &sessions{now: now, m: map[[sha256.Size]byte]session{}}
}

// randomToken is 32 random bytes, base64url.
func randomToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// create starts a session and returns its cookie value. When full, expired
// sessions go first, then the one closest to expiry.
func (ss *sessions) create() (string, error) {
	id, err := randomToken()
	if err != nil {
		return "", err
	}
	csrf, err := randomToken()
	if err != nil {
		return "", err
	}
	now := ss.now()
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if len(ss.m) >= maxSessions {
		var (
			oldest    [sha256.Size]byte
			oldestExp time.Time
		)
		for k, s := range ss.m {
			if !now.Before(s.expires) {
				delete(ss.m, k)
			} else if oldestExp.IsZero() || s.expires.Before(oldestExp) {
				oldest, oldestExp = k, s.expires
			}
		}
		if len(ss.m) >= maxSessions {
			delete(ss.m, oldest)
		}
	}
	ss.m[sha256.Sum256([]byte(id))] = session{expires: now.Add(sessionTTL), csrf: csrf}
	return id, nil
}

// get returns the live session of a cookie value.
func (ss *sessions) get(id string) (session, bool) {
	if id == "" {
		return session{}, false
	}
	k := sha256.Sum256([]byte(id))
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s, ok := ss.m[k]
	if ok && !ss.now().Before(s.expires) {
		delete(ss.m, k)
		return session{}, false
	}
	return s, ok
}

// end forgets a session.
func (ss *sessions) end(id string) {
	k := sha256.Sum256([]byte(id))
	ss.mu.Lock()
	defer ss.mu.Unlock()
	delete(ss.m, k)
}

// sessionCaller resolves the request's session cookie: the session's
// caller, or ok false.
func (s *Server) sessionCaller(c echo.Context) (Caller, bool) {
	ck, err := c.Cookie(sessionCookie)
	if err != nil {
		return Caller{}, false
	}
	sess, ok := s.sessions.get(ck.Value)
	if !ok {
		return Caller{}, false
	}
	return Caller{Kind: Session, CSRF: sess.csrf}, true
}

// checkForm is the CSRF check of a signed-in form: the Origin, when the
// browser sends one, is this host (as the request or a proxy's
// X-Forwarded-Host names it: a browser cannot send that header to another
// site without a preflight, which is refused), and the form's token is the
// session's.
func checkForm(c echo.Context, cl Caller) error {
	req := c.Request()
	if o := req.Header.Get(echo.HeaderOrigin); o != "" {
		u, err := url.Parse(o)
		fwd := req.Header.Get("X-Forwarded-Host")
		if err != nil || u.Host == "" || (u.Host != req.Host && u.Host != fwd) {
			return fail(http.StatusForbidden, msgBadFormToken)
		}
	}
	form, err := dashboardForm(c)
	if err != nil {
		return err
	}
	got := form.Get(csrfField)
	if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(cl.CSRF)) != 1 {
		return fail(http.StatusForbidden, msgBadFormToken)
	}
	return nil
}

func (s *Server) setSessionCookie(c echo.Context, value string, maxAge int) {
	c.SetCookie(&http.Cookie{Name: sessionCookie, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: c.Scheme() == "https"})
}

// signInView is the sign-in page.
type signInView struct {
	Next, Error string
	SignedIn    bool
	// Reload: the page was reached from another site, whose navigation
	// carries no SameSite=Strict cookie; it loads itself again, same-site,
	// so a signed-in operator following a link is not asked to sign in.
	Reload bool
}

// signInPage is GET /signin: the form that posts the admin key.
func (s *Server) signInPage(c echo.Context) error {
	return s.renderStatus(c, http.StatusOK, "signin.html",
		signInView{Next: safeNext(c.QueryParam("next")), SignedIn: callerOf(c).Kind == Session})
}

// signIn is POST /signin: the admin key from the form (never from the URL)
// starts a session and goes on to the form's next page (303). A wrong key is
// the form again, 401 with one fixed text (400 for none); attempts are paced per client
// address (429).
func (s *Server) signIn(c echo.Context) error {
	form, err := dashboardForm(c)
	if err != nil {
		return err
	}
	next := safeNext(form.Get("next"))
	host, _, err := net.SplitHostPort(c.Request().RemoteAddr)
	if err != nil {
		host = c.Request().RemoteAddr
	}
	if ok, wait := s.signIns.allow(host); !ok {
		return tooMany(c, msgTooManySignIns, wait)
	}
	switch key := form.Get("key"); {
	case key == "":
		return s.renderStatus(c, http.StatusBadRequest, "signin.html", signInView{Next: next, Error: msgKeyRequired})
	case !s.keyMatches(key):
		return s.renderStatus(c, http.StatusUnauthorized, "signin.html", signInView{Next: next, Error: msgWrongKey})
	}
	id, err := s.sessions.create()
	if err != nil {
		return err
	}
	s.setSessionCookie(c, id, int(sessionTTL.Seconds()))
	return c.Redirect(http.StatusSeeOther, next)
}

// signOut is POST /signout: the session ends and its cookie is cleared.
func (s *Server) signOut(c echo.Context) error {
	if ck, err := c.Cookie(sessionCookie); err == nil {
		s.sessions.end(ck.Value)
	}
	s.setSessionCookie(c, "", -1)
	return c.Redirect(http.StatusSeeOther, "/")
}

// dashboardForm is the request's form body, read once: only
// application/x-www-form-urlencoded (what the dashboard's forms send; an
// empty body is an empty form), at most maxFormBody bytes, and never the
// query — a key must not travel in a URL. Answers: 400 Content must be
// application/x-www-form-urlencoded; 413 Request body too large.
func dashboardForm(c echo.Context) (url.Values, error) {
	if f, ok := c.Get(ctxForm).(url.Values); ok {
		return f, nil
	}
	req := c.Request()
	form := url.Values{}
	if req.ContentLength != 0 {
		mt, _, err := mime.ParseMediaType(req.Header.Get(echo.HeaderContentType))
		if err != nil || mt != echo.MIMEApplicationForm {
			return nil, fail(http.StatusBadRequest, msgNotForm)
		}
		body, err := io.ReadAll(io.LimitReader(req.Body, maxFormBody+1))
		if err != nil {
			return nil, fail(http.StatusBadRequest, msgNotForm)
		}
		if len(body) > maxFormBody {
			return nil, tooLarge(msgBodyTooLarge)
		}
		if form, err = url.ParseQuery(string(body)); err != nil {
			return nil, fail(http.StatusBadRequest, msgNotForm)
		}
	}
	c.Set(ctxForm, form)
	return form, nil
}

// safeNext is a local path to go on to after signing in: "/" unless next
// is a path of this site (not "//host" nor a scheme).
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") ||
		strings.ContainsAny(next, "\r\n") {
		return "/"
	}
	return next
}
