package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"

	"github.com/jackc/pgx/v5"
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
	Node   string   `json:"n"`
	Status []string `json:"s,omitempty"` // builds whose status changed
	Logs   []string `json:"l,omitempty"` // builds with new log entries
	All    bool     `json:"a,omitempty"` // too many to list: assume every build changed
}

// notification is the notice of what the transaction collected, "" when it
// changed no build.
func (c *changes) notification(node string) string {
	if c == nil || (len(c.logs) == 0 && len(c.status) == 0) {
		return ""
	}
	n := notice{Node: node}
	for id := range c.status {
		n.Status = append(n.Status, id)
	}
	for id := range c.logs {
		n.Logs = append(n.Logs, id)
	}
	sort.Strings(n.Status)
	sort.Strings(n.Logs)
	b, err := json.Marshal(n)
	if err != nil || len(b) > maxNotice {
		b, _ = json.Marshal(notice{Node: node, All: true})
	}
	return string(b)
}

// Shared reports whether other nodes may write the same database
// (PostgreSQL): memory that mirrors the database is then a cache.
func (s *Store) Shared() bool { return s.pg }

// Listener delivers the other nodes' notices to this one (PostgreSQL; nil on
// SQLite). onQueue is called, and must not block, with the builds whose
// status another node changed, or all=true when any build may have changed
// (too many to name, or notices were missed).
func (s *Store) Listener(onQueue func(ids []string, all bool)) *Listener {
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
	onQueue func(ids []string, all bool)
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
		l.onQueue(n.Status, n.All)
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
