package store

import (
	"context"
	"sync"

	"github.com/expo-free-agent/controller/store/domain"
)

// The feed tells subscribers, as transactions commit, about a build's new
// log entries and status changes, so that a live log (docs/API.md §2.9) is
// pushed, not found by querying the database per stream.

// subscriptionBuffer bounds the log text one subscription holds between
// two reads; past it the subscription is marked lagging and its reader
// catches up from the database. 64 KiB keeps a thousand stalled streams
// within 64 MiB.
const subscriptionBuffer = 64 << 10

// feed is the store's subscriptions, by build.
type feed struct {
	mu   sync.Mutex
	subs map[string]map[*Subscription]struct{}
}

// Subscription receives one build's changes. C is kicked (coalescing) when
// there is something to Take.
type Subscription struct {
	C       chan struct{}
	feed    *feed
	buildID string

	mu      sync.Mutex
	entries []domain.LogEntry
	size    int
	lagged  bool
	status  bool
}

// Subscribe starts receiving the build's changes from now on. Close it when
// done.
func (s *Store) Subscribe(buildID string) *Subscription {
	sub := &Subscription{C: make(chan struct{}, 1), feed: &s.feed, buildID: buildID}
	s.feed.mu.Lock()
	defer s.feed.mu.Unlock()
	if s.feed.subs == nil {
		s.feed.subs = map[string]map[*Subscription]struct{}{}
	}
	if s.feed.subs[buildID] == nil {
		s.feed.subs[buildID] = map[*Subscription]struct{}{}
	}
	s.feed.subs[buildID][sub] = struct{}{}
	return sub
}

// Close stops the subscription.
func (sub *Subscription) Close() {
	f := sub.feed
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.subs[sub.buildID], sub)
	if len(f.subs[sub.buildID]) == 0 {
		delete(f.subs, sub.buildID)
	}
}

// Take returns what arrived since the last Take: the new log entries in
// order, whether some were dropped because the reader fell behind (it must
// then read the log from the database after the last entry it has), and
// whether the build's status changed.
func (sub *Subscription) Take() (entries []domain.LogEntry, lagged, statusChanged bool) {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	entries, lagged, statusChanged = sub.entries, sub.lagged, sub.status
	sub.entries, sub.size, sub.lagged, sub.status = nil, 0, false, false
	return entries, lagged, statusChanged
}

func (sub *Subscription) push(entries []domain.LogEntry, status bool) {
	sub.mu.Lock()
	if !sub.lagged && len(entries) > 0 {
		size := sub.size
		for _, e := range entries {
			size += len(e.Message)
		}
		if size > subscriptionBuffer {
			sub.entries, sub.size, sub.lagged = nil, 0, true
		} else {
			if len(sub.entries) == 0 {
				// Shared with the other subscribers, read only: its capacity
				// cut to its length, so that a later push copies.
				sub.entries = entries[:len(entries):len(entries)]
			} else {
				sub.entries = append(sub.entries, entries...)
			}
			sub.size = size
		}
	}
	sub.status = sub.status || status
	sub.mu.Unlock()
	select {
	case sub.C <- struct{}{}:
	default:
	}
}

// changes is what one operation's transaction did, collected as it runs
// and published when it commits.
type changes struct {
	logs   map[string][]domain.LogEntry
	status map[string]BuildChange // what each build became (the last note wins)
}

type changesKey struct{}

// withChanges gives an operation a collector.
func withChanges(ctx context.Context) context.Context {
	return context.WithValue(ctx, changesKey{}, &changes{})
}

func changesOf(ctx context.Context) *changes {
	c, _ := ctx.Value(changesKey{}).(*changes)
	return c
}

// noteLog records an appended log entry.
func noteLog(ctx context.Context, buildID string, e domain.LogEntry) {
	noteLogs(ctx, buildID, []domain.LogEntry{e})
}

// noteLogs records appended log entries, in order; the collector keeps
// entries (the caller must not change them after).
func noteLogs(ctx context.Context, buildID string, entries []domain.LogEntry) {
	if c := changesOf(ctx); c != nil {
		if c.logs == nil {
			c.logs = map[string][]domain.LogEntry{}
		}
		if prev := c.logs[buildID]; len(prev) > 0 {
			c.logs[buildID] = append(prev, entries...)
		} else {
			c.logs[buildID] = entries // the caller's, handed over
		}
	}
}

// noteStatus records that a build's status changed and what it became
// (Kind ChangeUnknown when the transaction does not know: other nodes read
// the build).
func noteStatus(ctx context.Context, change BuildChange) {
	if c := changesOf(ctx); c != nil {
		if c.status == nil {
			c.status = map[string]BuildChange{}
		}
		c.status[change.ID] = change
	}
}

// publish hands a committed transaction's changes to the subscribers, and
// forgets them (a retried transaction collects afresh).
func (f *feed) publish(ctx context.Context) {
	c := changesOf(ctx)
	if c == nil || (len(c.logs) == 0 && len(c.status) == 0) {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, entries := range c.logs {
		for sub := range f.subs[id] {
			_, status := c.status[id]
			sub.push(entries, status)
		}
	}
	for id := range c.status {
		if _, done := c.logs[id]; done {
			continue
		}
		for sub := range f.subs[id] {
			sub.push(nil, true)
		}
	}
	c.logs, c.status = nil, nil
}

// discard forgets what a transaction that did not commit collected.
func (c *changes) discard() {
	if c != nil {
		c.logs, c.status = nil, nil
	}
}
