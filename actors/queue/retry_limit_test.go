package queue

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/actors/files"
	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

// cancelled submits a build with a source and certs and cancels it, so that
// it is finished and can be retried.
func (b *bundle) cancelled(t *testing.T) string {
	t.Helper()
	sub, err := b.q.Submit(t.Context(), Submission{Platform: domain.PlatformIOS,
		Source: b.stage(t, files.KindSource, "the source"), Certs: b.stage(t, files.KindCerts, "the certs")})
	require.NoError(t, err)
	_, err = b.q.Cancel(t.Context(), sub.ID)
	require.NoError(t, err)
	return sub.ID
}

// sameFile reports whether two stored files are one inode.
func (b *bundle) sameFile(t *testing.T, relA, relB string) bool {
	t.Helper()
	a, err := os.Stat(filepath.Join(b.fs.Root(), filepath.FromSlash(relA)))
	require.NoError(t, err)
	c, err := os.Stat(filepath.Join(b.fs.Root(), filepath.FromSlash(relB)))
	require.NoError(t, err)
	return os.SameFile(a, c)
}

// countOnly is the real store whose CountRetries always answers 0, so that
// only the check inside CreateBuild's transaction stands.
type countOnly struct{ *store.Store }

func (countOnly) CountRetries(context.Context, string) (int, error) { return 0, nil }

func TestRetryLimits(t *testing.T) {
	t.Parallel()

	t.Run("DefaultMaxRetries", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		require.Equal(t, DefaultMaxRetries, b.q.cfg.MaxRetries)
		require.Equal(t, 20, DefaultMaxRetries, "docs/API.md §2.8 documents 20")
	})

	t.Run("RetryLinksTheOriginalsFiles", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		orig := b.cancelled(t)
		r, err := b.q.Retry(t.Context(), orig)
		require.NoError(t, err)
		ob, nb := b.build(t, orig), b.build(t, r.ID)
		require.Equal(t, "builds/"+r.ID+".zip", nb.SourcePath, "each build has its own name")
		require.True(t, b.sameFile(t, ob.SourcePath, nb.SourcePath), "the source is shared, not copied")
		require.True(t, b.sameFile(t, *ob.CertsPath, *nb.CertsPath), "the certs are shared, not copied")
		require.Equal(t, &orig, nb.RootBuildID)
	})

	t.Run("ChainBoundedForTokenHolders", func(t *testing.T) {
		t.Parallel()
		b := setup(t, withConfig(Config{MaxRetries: 3}))
		orig := b.cancelled(t)
		last := orig
		for range 3 { // retry → cancel → retry of the new build, as a token holder chains
			r, err := b.q.RetryWith(t.Context(), last, RetryOptions{Limited: true})
			require.NoError(t, err)
			require.Equal(t, &orig, b.build(t, r.ID).RootBuildID, "every retry counts against the submitted build")
			_, err = b.q.Cancel(t.Context(), r.ID)
			require.NoError(t, err)
			last = r.ID
		}
		builds, certs := b.listDir(t, "builds"), b.listDir(t, "certs")
		for _, id := range []string{last, orig} {
			_, err := b.q.RetryWith(t.Context(), id, RetryOptions{Limited: true})
			require.ErrorIs(t, err, ErrTooManyRetries)
		}
		require.Equal(t, builds, b.listDir(t, "builds"), "a refused retry leaves no file")
		require.Equal(t, certs, b.listDir(t, "certs"))
		require.Empty(t, b.pending(t))

		// The admin is not bounded.
		r, err := b.q.Retry(t.Context(), last)
		require.NoError(t, err)
		require.Equal(t, []string{r.ID}, b.pending(t))

		// Another submitted build has its own chain.
		_, err = b.q.RetryWith(t.Context(), b.cancelled(t), RetryOptions{Limited: true})
		require.NoError(t, err)
	})

	t.Run("CheckedInsideTheTransaction", func(t *testing.T) {
		t.Parallel()
		b := setup(t, withConfig(Config{MaxRetries: 2}),
			withStore(func(st *store.Store) Store { return countOnly{st} }))
		orig := b.cancelled(t)
		for range 2 {
			_, err := b.q.RetryWith(t.Context(), orig, RetryOptions{Limited: true})
			require.NoError(t, err)
		}
		_, err := b.q.RetryWith(t.Context(), orig, RetryOptions{Limited: true})
		require.ErrorIs(t, err, ErrTooManyRetries, "the store refuses even when the first check passed")
		require.Len(t, b.listDir(t, "builds"), 3, "the refused retry's links are removed")
		require.Len(t, b.listDir(t, "certs"), 3)
		require.Len(t, b.pending(t), 2)
	})

	t.Run("ConcurrentRetriesNeverOvershoot", func(t *testing.T) {
		t.Parallel()
		const limit, tries = 3, 24
		b := setup(t, withConfig(Config{MaxRetries: limit}))
		orig := b.cancelled(t)
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			ok, lim int
		)
		for range tries {
			wg.Go(func() {
				_, err := b.q.RetryWith(t.Context(), orig, RetryOptions{Limited: true})
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					ok++
				case errors.Is(err, ErrTooManyRetries):
					lim++
				default:
					t.Errorf("unexpected error: %v", err)
				}
			})
		}
		wg.Wait()
		require.Equal(t, limit, ok)
		require.Equal(t, tries-limit, lim)
		require.Len(t, b.listDir(t, "builds"), 1+limit, "no stray file of a refused retry")
		require.Len(t, b.pending(t), limit)
	})
}
