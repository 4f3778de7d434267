package fsync_test

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/store/fsync"
)

// TestGroupCoversEveryCaller: every Sync returns only after an fsync
// that began after the caller's write, and concurrent callers share fsyncs.
func TestGroupCoversEveryCaller(t *testing.T) {
	t.Parallel()
	var (
		writes  atomic.Int64 // writes finished
		durable atomic.Int64 // writes covered by a completed fsync
		release = make(chan struct{})
		first   atomic.Bool
	)
	g := fsync.NewGroup(func() error {
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

func TestGroupError(t *testing.T) {
	t.Parallel()
	boom := errors.New("EIO")
	var fail atomic.Bool
	fail.Store(true)
	g := fsync.NewGroup(func() error {
		if fail.Load() {
			return boom
		}
		return nil
	})
	require.ErrorIs(t, g.Sync(), boom)
	fail.Store(false)
	require.NoError(t, g.Sync(), "a later call leads its own fsync")
}
