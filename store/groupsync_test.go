package store_test

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/store"
)

// TestGroupSyncerCoversEveryCaller: every Sync returns only after an fsync
// that began after the caller's write, and concurrent callers share fsyncs.
func TestGroupSyncerCoversEveryCaller(t *testing.T) {
	t.Parallel()
	var (
		writes  atomic.Int64 // writes finished
		durable atomic.Int64 // writes covered by a completed fsync
		release = make(chan struct{})
		first   atomic.Bool
	)
	g := store.NewGroupSyncer(func() error {
		covered := writes.Load() // what this fsync covers: writes done before it began
		if first.CompareAndSwap(false, true) {
			<-release // hold the first fsync so that others pile up behind it
		}
		for {
			cur := durable.Load()
			if cur >= covered || durable.CompareAndSwap(cur, covered) {
				return nil
			}
		}
	})
	const callers = 64
	var wg sync.WaitGroup
	started := make(chan struct{}, callers)
	for i := 0; i < callers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := writes.Add(1)
			started <- struct{}{}
			require.NoError(t, g.Sync())
			require.GreaterOrEqual(t, durable.Load(), mine, "returned before its write was covered")
		}()
	}
	for i := 0; i < callers; i++ {
		<-started
	}
	close(release)
	wg.Wait()
	calls, syncs := g.Stats()
	require.Equal(t, int64(callers), calls)
	require.Less(t, syncs, int64(callers), "concurrent callers share fsyncs")
}

func TestGroupSyncerError(t *testing.T) {
	t.Parallel()
	boom := errors.New("EIO")
	var fail atomic.Bool
	fail.Store(true)
	g := store.NewGroupSyncer(func() error {
		if fail.Load() {
			return boom
		}
		return nil
	})
	require.ErrorIs(t, g.Sync(), boom)
	fail.Store(false)
	require.NoError(t, g.Sync(), "a later call leads its own fsync")
}

// TestDeferSyncAndSync: under DeferSync a write returns after its commit
// without an fsync; Sync then makes it durable, and a Sync with nothing new
// to cover does not fsync.
func TestDeferSyncAndSync(t *testing.T) {
	t.Parallel()
	s := newTestDB(t).s
	ctx := t.Context()
	_, fsyncs0 := s.SyncStats()
	_, _, err := s.RegisterWorker(store.DeferSync(ctx), store.Registration{Name: "w", Capabilities: "{}", Now: 1})
	require.NoError(t, err)
	_, fsyncs1 := s.SyncStats()
	require.Equal(t, fsyncs0, fsyncs1, "no fsync under DeferSync")
	require.NoError(t, s.Sync())
	_, fsyncs2 := s.SyncStats()
	require.Equal(t, fsyncs1+1, fsyncs2)
	require.NoError(t, s.Sync())
	_, fsyncs3 := s.SyncStats()
	require.Equal(t, fsyncs2, fsyncs3, "nothing new: no fsync")
	_, _, err = s.RegisterWorker(ctx, store.Registration{Name: "w2", Capabilities: "{}", Now: 1})
	require.NoError(t, err)
	_, fsyncs4 := s.SyncStats()
	require.Equal(t, fsyncs3+1, fsyncs4, "a normal write waits for its fsync")
}
