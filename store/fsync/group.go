package fsync

import (
	"sync"
	"sync/atomic"
)

// Group shares one fsync among every caller waiting at the time (group
// commit). A caller that has finished its write calls Sync; Sync returns once
// an fsync that started after the call has completed, so the caller's write
// is durable. Callers that arrive while an fsync runs wait for the next one,
// which then covers them all. The file storage service uses it for directory
// syncs after renames; the store uses it for the WAL after commits.
type Group struct {
	flush func() error

	mu      sync.Mutex
	cond    *sync.Cond
	issued  uint64 // tickets handed out
	synced  uint64 // every ticket up to this one is durable
	running bool

	syncs atomic.Int64 // fsyncs performed
	calls atomic.Int64 // Sync calls
}

// NewGroup returns a group whose flush (an fsync) makes writes durable.
func NewGroup(flush func() error) *Group {
	g := &Group{flush: flush}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// Sync returns when every write finished before the call is durable, or the
// fsync's error.
func (g *Group) Sync() error {
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
		err := g.flush()
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
func (g *Group) Stats() (calls, syncs int64) { return g.calls.Load(), g.syncs.Load() }
