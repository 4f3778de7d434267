package httpapi

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/expo-free-agent/controller/store"
)

const (
	headerAPIKey     = "X-API-Key"
	headerBuildToken = "X-Build-Token"
	headerWorkerID   = "X-Worker-Id"
	headerBuildID    = "X-Build-Id"

	msgMissingKey        = "Missing X-API-Key header"
	msgInvalidKey        = "Invalid API key"
	msgMissingKeyOrToken = "Missing X-API-Key or X-Build-Token header"
	msgBadToken          = "Invalid or expired build token"
	msgMissingWorkerID   = "Missing X-Worker-Id header"
	msgMissingBuildID    = "Missing X-Build-Id header"
)

// keyMatches compares a presented key with the admin key in constant time,
// whatever their lengths (it compares SHA-256 digests).
func (s *Server) keyMatches(presented string) bool {
	sum := sha256.Sum256([]byte(presented))
	return subtle.ConstantTimeCompare(sum[:], s.keySum[:]) == 1
}

// checkKey applies the Key class: 401 without a key, 403 with a wrong one.
func (s *Server) checkKey(c echo.Context) error {
	k := c.Request().Header.Get(headerAPIKey)
	if k == "" {
		return fail(http.StatusUnauthorized, msgMissingKey)
	}
	if !s.keyMatches(k) {
		return fail(http.StatusForbidden, msgInvalidKey)
	}
	return nil
}

// requireKey is the Key class as middleware.
func (s *Server) requireKey(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if err := s.checkKey(c); err != nil {
			return err
		}
		return next(c)
	}
}

// requireKeyOrToken is the "Key or token" class (§1.2): the admin key, or the
// addressed build's own token, which works alone and beats a wrong key.
func (s *Server) requireKeyOrToken(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Request().Header
		key, token := h.Get(headerAPIKey), h.Get(headerBuildToken)
		switch {
		case key == "" && token == "":
			return fail(http.StatusUnauthorized, msgMissingKeyOrToken)
		case key != "" && s.keyMatches(key):
			return next(c)
		case token == "":
			return fail(http.StatusForbidden, msgInvalidKey)
		}
		id, ok := store.ParseID(c.Param("id"))
		if !ok {
			return fail(http.StatusNotFound, msgBuildNotFound)
		}
		b, err := s.store.GetBuild(c.Request().Context(), id)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return internal(failMsg(c), err)
		}
		if err == nil && tokenMatches(token, b.TokenHash) {
			return next(c)
		}
		if key != "" {
			return fail(http.StatusForbidden, msgInvalidKey)
		}
		return fail(http.StatusForbidden, msgBadToken)
	}
}

// newToken returns a build access token (32 random bytes, base64url without
// padding: 43 characters) and the hash that is stored.
func newToken() (string, []byte, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", nil, err
	}
	tok := base64.RawURLEncoding.EncodeToString(b[:])
	sum := sha256.Sum256([]byte(tok))
	return tok, sum[:], nil
}

func tokenMatches(token string, hash []byte) bool {
	sum := sha256.Sum256([]byte(token))
	return len(hash) == sha256.Size && subtle.ConstantTimeCompare(sum[:], hash) == 1
}

// buildID returns the canonical :id, or 404 Build not found for a non-UUID,
// before any database or file access.
func buildID(c echo.Context) (string, error) {
	id, ok := store.ParseID(c.Param("id"))
	if !ok {
		return "", fail(http.StatusNotFound, msgBuildNotFound)
	}
	return id, nil
}

// claimedID canonicalizes an identity claim; a malformed one is returned
// unchanged, so it simply never matches an assignee.
func claimedID(v string) string {
	if id, ok := store.ParseID(v); ok {
		return id
	}
	return v
}
