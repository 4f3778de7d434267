package queue

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

// staleRead is the real store whose first GetBuild answers what the build
// was before retention took it: the purge lands between the retry's read
// and its transaction.
type staleRead struct {
	*store.Store
	reads atomic.Int64
}

func (s *staleRead) GetBuild(ctx context.Context, id string) (domain.Build, error) {
	b, err := s.Store.GetBuild(ctx, id)
	if s.reads.Add(1) == 1 {
		b.PurgedAt = nil
	}
	return b, err
}

// purge takes the build's files as a retention pass would: mark, then (if
// deleteFiles) delete.
func (b *bundle) purge(t *testing.T, id string, deleteFiles bool) {
	t.Helper()
	now := b.clock.Now().UnixMilli()
	items, err := b.st.MarkPurged(t.Context(), store.RetentionScope{Cutoff: now + 1}, now, 100)
	require.NoError(t, err)
	require.Len(t, items, 1)
	require.Equal(t, id, items[0].ID)
	if deleteFiles {
		for _, rel := range items[0].Paths {
			require.NoError(t, b.fs.Delete(rel))
		}
	}
}

// TestRetryOfPurgedBuild: a retry of a build whose files retention took is
// refused with store.ErrPurged (410) and leaves nothing, also when the purge
// lands while the retry runs.
func TestRetryOfPurgedBuild(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		stale       bool // the purge lands after the retry read the build
		deleteFiles bool // and the files are gone before the retry links them
	}{
		{"Refused", false, true},
		{"PurgedBeforeTheTransaction", true, false},
		{"FilesDeletedBeforeTheLink", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var wrap []option
			if tc.stale {
				wrap = append(wrap, withStore(func(st *store.Store) Store { return &staleRead{Store: st} }))
			}
			b := setup(t, wrap...)
			orig := b.cancelled(t)
			b.purge(t, orig, tc.deleteFiles)
			before := [2][]string{b.listDir(t, "builds"), b.listDir(t, "certs")}

			_, err := b.q.RetryWith(t.Context(), orig, RetryOptions{Limited: true})
			require.ErrorIs(t, err, store.ErrPurged)
			require.Equal(t, before, [2][]string{b.listDir(t, "builds"), b.listDir(t, "certs")},
				"the retry's links are removed")
			require.Empty(t, b.pending(t), "no build was created")
		})
	}
}
