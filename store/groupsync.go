package store

import (
	"sync"
	"sync/atomic"
)

// GroupSyncer shares one fsync among every caller waiting at the time (group
// commit). A caller that has finished its write calls Sync; Sync returns once
// an fsync that started after the call has completed, so the caller's write
// is durable. Callers that arrive while an fsync runs wait for the next one,
// which then covers them all. The file storage service uses it for directory
// syncs after renames; the store uses it for the WAL after commits.
type GroupSyncer struct {
	fsync func() error

	mu      sync.Mutex
	cond    *sync.Cond
	issued  uint64 // tickets handed out
	synced  uint64 // every ticket up to this one is durable
	running bool

	syncs atomic.Int64 // fsyncs performed
	calls atomic.Int64 // Sync calls
}

// NewGroupSyncer returns a syncer that makes writes durable with fsync.
func NewGroupSyncer(fsync func() error) *GroupSyncer {
	g := &GroupSyncer{fsync: fsync}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// Sync returns when every write finished before the call is durable, or the
// fsync's error.
func (g *GroupSyncer) Sync() error {
	g.calls.Add(1)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.issued++
	ticket := g.issued
	for g.synced < ticket {
		if g.running {
			g.cond.Wait()
			continue
		}
		// Lead an fsync covering every ticket issued so far: their writes
		// all finished before their tickets were taken.
		g.running = true
		target := g.issued
		g.mu.Unlock()
		err := g.fsync()
		g.syncs.Add(1)
		g.mu.Lock()
		g.running = false
		g.cond.Broadcast()
		if err != nil {
			return err // the waiters lead their own attempt
		}
		g.synced = target
	}
	return nil
}

// Stats returns how many Sync calls were made and how many fsyncs served them.
func (g *GroupSyncer) Stats() (calls, syncs int64) { return g.calls.Load(), g.syncs.Load() }
