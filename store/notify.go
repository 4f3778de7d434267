package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"

	"github.com/jackc/pgx/v5"

	"github.com/expo-free-agent/controller/store/domain"
)

// Several nodes on one PostgreSQL database (docs/DEPLOYMENT.md, Several
// nodes): a write transaction that changed builds — a status, new log
// entries — sends a notice on notifyChannel in its own commit (pgTxOnce).
// Each node's Listener receives the other nodes' notices and hands them to
// the node: live-log subscribers read the new entries from the database,
// and the queue manager reloads its cache of the queue.

// notifyChannel is the LISTEN/NOTIFY channel of build changes: one per
// schema, since channels are per database and installations (or tests) may
// share one database in schemas of their own.
func notifyChannel(schema string) string {
	c := "efa_changes:" + schema
	if len(c) > 63 { // PostgreSQL's identifier length
		c = c[:63]
	}
	return c
}

// maxNotice keeps a notice under PostgreSQL's 8000-byte payload limit; a
// transaction that changed more builds than fit says "everything".
const maxNotice = 7000

// ListenerApplicationName names the Listener's connection in
// pg_stat_activity.
const ListenerApplicationName = "efa-listener"

// notice is one transaction's changes, as other nodes learn of them.
type notice struct {
	Node    string        `json:"n"`
	Status  []string      `json:"s,omitempty"` // builds whose status changed
	Changes []BuildChange `json:"c,omitempty"` // what some of them became (the rest: read them)
	Logs    []string      `json:"l,omitempty"` // builds with new log entries
	All     bool          `json:"a,omitempty"` // too many to list: assume every build changed
}

// ChangeKind is what a build became, as far as a node's queue is
// concerned.
type ChangeKind string

// The kinds of BuildChange.
const (
	ChangeUnknown ChangeKind = ""  // not said: read the build
	ChangePending ChangeKind = "p" // waiting in the queue
	ChangeRunning ChangeKind = "r" // assigned or building, held by WorkerID
	ChangeEnded   ChangeKind = "e" // finished or deleted: final
)

// BuildChange is what a committed transaction made of one build, enough
// for another node's queue to apply it without reading the build.
// Assignment orders a build's changes: a pending build has had Assignment
// assignments, a running one is in its Assignment-th, and an ended one
// changes no more — so a node can tell a change it already has (or a newer
// one) from one it lacks. Platform is set when the queue fields
// (Platform, SubmittedAt, Certs) are; without them a node that does not
// know the build reads it.
type BuildChange struct {
	ID          string          `json:"i"`
	Kind        ChangeKind      `json:"k,omitempty"`
	Assignment  int             `json:"a,omitempty"`
	WorkerID    string          `json:"w,omitempty"`
	StartedAt   int64           `json:"t,omitempty"`
	Platform    domain.Platform `json:"p,omitempty"`
	SubmittedAt int64           `json:"s,omitempty"`
	Certs       bool            `json:"c,omitempty"`
}

// ChangeOf is what the build b is, as a BuildChange with its queue
// fields.
func ChangeOf(b domain.Build) BuildChange {
	c := BuildChange{ID: b.ID, Assignment: b.Assignment, Platform: b.Platform,
		SubmittedAt: b.SubmittedAt, Certs: b.CertsPath != nil}
	switch {
	case b.Status == domain.StatusPending:
		c.Kind = ChangePending
	case b.Running() && b.WorkerID != nil:
		c.Kind, c.WorkerID = ChangeRunning, *b.WorkerID
		if b.StartedAt != nil {
			c.StartedAt = *b.StartedAt
		}
	case b.Finished():
		c.Kind = ChangeEnded
	}
	return c
}

// notification is the notice of what the transaction collected, "" when it
// changed no build. When the changes do not fit, only the builds' ids are
// sent (the other nodes read them); when those do not fit either, "all".
func (c *changes) notification(node string) string {
	if c == nil || (len(c.logs) == 0 && len(c.status) == 0) {
		return ""
	}
	n := notice{Node: node}
	for id, ch := range c.status {
		n.Status = append(n.Status, id)
		if ch.Kind != ChangeUnknown {
			n.Changes = append(n.Changes, ch)
		}
	}
	for id := range c.logs {
		n.Logs = append(n.Logs, id)
	}
	sort.Strings(n.Status)
	sort.Slice(n.Changes, func(i, j int) bool { return n.Changes[i].ID < n.Changes[j].ID })
	sort.Strings(n.Logs)
	b, err := json.Marshal(n)
	if err == nil && len(b) > maxNotice {
		n.Changes = nil
		b, err = json.Marshal(n)
	}
	if err != nil || len(b) > maxNotice {
		b, _ = json.Marshal(notice{Node: node, All: true})
	}
	return string(b)
}

// changed is what the notice says of the builds whose status changed: its
// BuildChange where it has one, else the id alone (ChangeUnknown) — a
// notice of a node that does not send changes names ids only.
func (n notice) changed() []BuildChange {
	known := make(map[string]BuildChange, len(n.Changes))
	for _, c := range n.Changes {
		known[c.ID] = c
	}
	out := make([]BuildChange, 0, len(n.Status))
	for _, id := range n.Status {
		c, ok := known[id]
		if !ok {
			c = BuildChange{ID: id}
		}
		out = append(out, c)
	}
	return out
}

// Shared reports whether other nodes may write the same database
// (PostgreSQL): memory that mirrors the database is then a cache.
func (s *Store) Shared() bool { return s.pg }

// Listener delivers the other nodes' notices to this one (PostgreSQL; nil on
// SQLite). onQueue is called, in commit order, and must not block, with what
// another node's transaction made of the builds whose status it changed, or
// all=true when any build may have changed (too many to name, or notices
// were missed).
func (s *Store) Listener(onQueue func(changed []BuildChange, all bool)) *Listener {
	if !s.pg {
		return nil
	}
	return &Listener{s: s, onQueue: onQueue}
}

// Listener is a supervised service holding one connection that LISTENs.
// When the connection cannot be made or is lost, Serve tells the node that
// anything may have changed (live logs re-read, the queue reloads) and
// returns the error; its supervisor starts it again with backoff, so while
// the database cannot be reached the node still reloads periodically.
type Listener struct {
	s       *Store
	onQueue func(changed []BuildChange, all bool)
}

func (l *Listener) String() string { return "notification listener" }

// Serve listens until ctx ends or the connection fails.
func (l *Listener) Serve(ctx context.Context) error {
	cfg, err := pgx.ParseConfig(l.s.dsn)
	if err != nil {
		return fmt.Errorf("listener: %w", err)
	}
	cfg.RuntimeParams["application_name"] = ListenerApplicationName
	cctx, cancel := context.WithTimeout(ctx, l.s.opTimeout)
	conn, err := pgx.ConnectConfig(cctx, cfg)
	cancel()
	if err != nil {
		l.deliver(notice{All: true})
		return fmt.Errorf("listener: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx)) //nolint:errcheck // closing
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{l.s.channel}.Sanitize()); err != nil {
		l.deliver(notice{All: true})
		return fmt.Errorf("listener: listen: %w", err)
	}
	// Whatever changed while nobody listened.
	l.deliver(notice{All: true})
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			l.deliver(notice{All: true})
			return fmt.Errorf("listener: %w", err)
		}
		var got notice
		if err := json.Unmarshal([]byte(n.Payload), &got); err != nil {
			got = notice{All: true}
		}
		if got.Node == l.s.node {
			continue // this node's own commit: already published
		}
		l.deliver(got)
	}
}

func (l *Listener) deliver(n notice) {
	l.s.feed.remote(n)
	if (n.All || len(n.Status) > 0) && l.onQueue != nil {
		l.onQueue(n.changed(), n.All)
	}
}

// remote tells the subscribers of builds another node changed to read them
// from the database.
func (f *feed) remote(n notice) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n.All {
		for _, subs := range f.subs {
			for sub := range subs {
				sub.behind(true)
			}
		}
		return
	}
	status := make(map[string]bool, len(n.Status))
	for _, id := range n.Status {
		status[id] = true
		if !slices.Contains(n.Logs, id) {
			for sub := range f.subs[id] {
				sub.pushStatus()
			}
		}
	}
	for _, id := range n.Logs {
		for sub := range f.subs[id] {
			sub.behind(status[id])
		}
	}
}

// behind marks the subscription lagging: its reader reads the log from the
// database after the last entry it has.
func (sub *Subscription) behind(status bool) {
	sub.mu.Lock()
	sub.entries, sub.size, sub.lagged = nil, 0, true
	sub.status = sub.status || status
	sub.mu.Unlock()
	sub.kick()
}

func (sub *Subscription) pushStatus() { sub.push(nil, true) }

func (sub *Subscription) kick() {
	select {
	case sub.C <- struct{}{}:
	default:
	}
}
