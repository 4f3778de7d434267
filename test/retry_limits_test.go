package test

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The documented limits of retries by a build-token holder (docs/API.md §2.8).
const (
	maxRetriesPerBuild = 20               // retries per submitted build, the whole chain
	retryPace          = 10 * time.Second // then one per this …
	retryBurst         = 3                // … after a burst of this many
)

func tokenH(token string) H { return H{"X-Build-Token": token} }

// retryAs retries build id with the given headers.
func (c *Controller) retryAs(id string, h H) Response {
	c.t.Helper()
	return c.Do(http.MethodPost, "/api/builds/"+id+"/retry", nil, h)
}

// cancelAs cancels build id with the given headers and requires 200.
func (c *Controller) cancelAs(id string, h H) {
	c.t.Helper()
	r := c.Do(http.MethodPost, "/api/builds/"+id+"/cancel", nil, h)
	require.Equal(c.t, http.StatusOK, r.Status, "cancel: %s", r.Body)
}

// stored stats a file of the storage root.
func (c *Controller) stored(t *testing.T, dir, name string) os.FileInfo {
	t.Helper()
	st, err := os.Stat(filepath.Join(c.Dir, "storage", dir, name))
	require.NoError(t, err)
	return st
}

// TestRetryChainIsBounded reproduces the finding: with build tokens alone, a
// retry → cancel → retry chain (each retry answers with a new token) created
// builds and copies of the source without end. Now every retry shares the
// original's files (hard links: no byte is copied), and the chain stops with
// 429 Too many retries after maxRetriesPerBuild retries; the admin key is
// not bounded.
func TestRetryChainIsBounded(t *testing.T) {
	t.Parallel()
	c := Start(t, WithManualClock())
	source := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	certs := DefaultCerts(t)
	orig := c.Submit("ios", source, certs)
	c.cancelAs(orig.ID, tokenH(orig.Token))
	origSrc, origCerts := c.stored(t, "builds", orig.ID+".zip"), c.stored(t, "certs", orig.ID+".zip")

	cur := orig
	for i := range maxRetriesPerBuild {
		c.Clock.Advance(retryPace) // stay within the pace: only the chain bound is tested here
		r := c.retryAs(cur.ID, tokenH(cur.Token))
		require.Equal(t, http.StatusOK, r.Status, "retry %d: %s", i+1, r.Body)
		m := r.Object(t)
		next := Submitted{ID: m["id"].(string), Token: m["access_token"].(string)}
		require.Equal(t, cur.ID, m["original_build_id"])
		require.True(t, os.SameFile(origSrc, c.stored(t, "builds", next.ID+".zip")),
			"retry %d: the source is a hard link of the original's, not a copy", i+1)
		require.True(t, os.SameFile(origCerts, c.stored(t, "certs", next.ID+".zip")),
			"retry %d: the certs are a hard link of the original's, not a copy", i+1)
		c.cancelAs(next.ID, tokenH(next.Token))
		cur = next
	}

	// The chain is full: neither the newest token nor the original's makes more.
	c.Clock.Advance(retryPace)
	for _, b := range []Submitted{cur, orig} {
		r := c.retryAs(b.ID, tokenH(b.Token))
		require.Equal(t, http.StatusTooManyRequests, r.Status, "%s", r.Body)
		require.Equal(t, "Too many retries", r.Error(t))
		require.Empty(t, r.Header.Get("Retry-After"), "waiting does not help: the bound is final")
	}

	// 1 + maxRetriesPerBuild builds, one source on disk: every builds/ entry
	// is the original's inode, so the bytes used did not grow with the chain.
	entries, err := os.ReadDir(filepath.Join(c.Dir, "storage", "builds"))
	require.NoError(t, err)
	require.Len(t, entries, 1+maxRetriesPerBuild)
	for _, e := range entries {
		require.True(t, os.SameFile(origSrc, c.stored(t, "builds", e.Name())), "%s is a copy", e.Name())
	}
	require.Len(t, c.Get("/api/builds", c.KeyH()).JSON(t), 1+maxRetriesPerBuild)

	// The admin key keeps retrying past the bound, and is never paced.
	for range retryBurst + 2 {
		r := c.retryAs(cur.ID, c.KeyH())
		require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
		id := r.Object(t)["id"].(string)
		require.True(t, os.SameFile(origSrc, c.stored(t, "builds", id+".zip")))
	}
	c.Clock.Advance(retryBurst * retryPace)
	r := c.retryAs(cur.ID, tokenH(cur.Token))
	require.Equal(t, http.StatusTooManyRequests, r.Status, "the token is still refused")
	require.Equal(t, "Too many retries", r.Error(t))
	require.Empty(t, r.Header.Get("Retry-After"))
}

// TestRetryIsPaced: a build-token holder may retry a burst of retryBurst,
// then one per retryPace; the pace is per retry chain, so the new token a
// retry answers with does not start afresh. The 429 says when to come back
// (Retry-After), and the admin key is never paced.
func TestRetryIsPaced(t *testing.T) {
	t.Parallel()
	c := Start(t, WithManualClock())
	orig := c.Submit("ios", []byte("paced"), nil)
	c.cancelAs(orig.ID, tokenH(orig.Token))

	var last Submitted
	for i := range retryBurst {
		r := c.retryAs(orig.ID, tokenH(orig.Token))
		require.Equal(t, http.StatusOK, r.Status, "retry %d of the burst: %s", i+1, r.Body)
		m := r.Object(t)
		last = Submitted{ID: m["id"].(string), Token: m["access_token"].(string)}
	}
	r := c.retryAs(orig.ID, tokenH(orig.Token))
	require.Equal(t, http.StatusTooManyRequests, r.Status, "%s", r.Body)
	require.Equal(t, "Too many retries", r.Error(t))
	require.Equal(t, "10", r.Header.Get("Retry-After"))

	// A token of the same chain is paced with it.
	c.cancelAs(last.ID, tokenH(last.Token))
	r = c.retryAs(last.ID, tokenH(last.Token))
	require.Equal(t, http.StatusTooManyRequests, r.Status, "a new token of the chain does not reset the pace")
	require.Equal(t, "Too many retries", r.Error(t))

	// The admin is not paced; another submitted build has its own pace.
	require.Equal(t, http.StatusOK, c.retryAs(orig.ID, c.KeyH()).Status)
	other := c.Submit("ios", []byte("other"), nil)
	c.cancelAs(other.ID, tokenH(other.Token))
	require.Equal(t, http.StatusOK, c.retryAs(other.ID, tokenH(other.Token)).Status)

	// Not yet: 1 s before the next retry is due.
	c.Clock.Advance(retryPace - time.Second)
	r = c.retryAs(orig.ID, tokenH(orig.Token))
	require.Equal(t, http.StatusTooManyRequests, r.Status)
	require.Equal(t, "1", r.Header.Get("Retry-After"))

	// Due: one retry, then paced again.
	c.Clock.Advance(time.Second)
	r = c.retryAs(last.ID, tokenH(last.Token))
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	r = c.retryAs(orig.ID, tokenH(orig.Token))
	require.Equal(t, http.StatusTooManyRequests, r.Status)
	require.Equal(t, "10", r.Header.Get("Retry-After"))
}
