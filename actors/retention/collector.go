// Package retention holds the retention collector: at start and every hour
// it deletes the files of builds finished longer ago than --retention, marks
// them purged, and prunes CPU snapshots and diagnostic reports of the same
// age (docs/API.md §6.4). The build rows and their logs stay.
package retention

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/expo-free-agent/controller/actors/clock"
	"github.com/expo-free-agent/controller/actors/files"
	"github.com/expo-free-agent/controller/store"
)

// The collector's defaults.
const (
	DefaultInterval = time.Hour // between two passes
	// DefaultBatch is how many builds (or records) one transaction takes:
	// small enough that a poll or submit waiting for the write connection
	// waits for one batch at most (docs/BENCHMARKS.md, Retention).
	DefaultBatch = 200
	// DefaultPause is the breath after each batch's transaction, so that
	// writers already waiting get the write connection before the next
	// batch asks for it (database/sql hands a freed connection to any
	// waiter, not the oldest). Real time: it shares the database, it is not
	// a policy.
	DefaultPause = 2 * time.Millisecond
)

// ErrDisabled means the retention is 0: everything is kept.
var ErrDisabled = errors.New("retention: disabled (--retention 0 keeps everything)")

// Store is what the collector asks of the database. Each method is one
// short transaction or read.
type Store interface {
	RetentionScopeAt(ctx context.Context, cutoff int64) (store.RetentionScope, error)
	PurgingBuilds(ctx context.Context, limit int) ([]store.PurgeItem, error)
	MarkPurged(ctx context.Context, scope store.RetentionScope, now int64, limit int) ([]store.PurgeItem, error)
	MarkFilesRemoved(ctx context.Context, items []store.PurgeItem, now int64) error
	PruneCPUSnapshots(ctx context.Context, scope store.RetentionScope, limit int) (int64, error)
	PruneDiagnostics(ctx context.Context, scope store.RetentionScope, limit int) (int64, error)
	PurgeableBuilds(ctx context.Context, scope store.RetentionScope, after store.PurgeCursor, limit int) ([]store.PurgeItem, error)
	Prunable(ctx context.Context, scope store.RetentionScope) (snapshots, diagnostics int64, err error)
}

// Files is the file storage service (files.Store), which owns the storage
// root: every delete goes through it.
type Files interface {
	Size(rel string) (int64, error)
	Delete(rel string) error
}

// Config holds the collector's settings; zero values take the defaults,
// except Retention, whose zero disables the collector.
type Config struct {
	Retention time.Duration // builds finished longer ago lose their files
	Interval  time.Duration // DefaultInterval
	Batch     int           // DefaultBatch
	Pause     time.Duration // DefaultPause; negative: none
}

// Report is what one pass did (or, for Plan, would do).
type Report struct {
	Builds      int64 // builds whose files went
	Bytes       int64 // their sizes, summed (a file hard-linked by a retry frees its space with its last name)
	Snapshots   int64 // CPU snapshots pruned
	Diagnostics int64 // diagnostic reports pruned
}

// OnBuild is told of each build whose files a pass deleted (or would
// delete), with their bytes.
type OnBuild func(id string, bytes int64)

// Collector runs retention passes. Serve runs one at start and one every
// Interval on the injected clock; Pass and Plan run one on the caller's
// goroutine (`controller gc`). Passes may run at once, in this process or
// another: every step is conditional in the store and every delete
// idempotent.
type Collector struct {
	store Store
	files Files
	clock clock.Clock
	log   *slog.Logger
	cfg   Config

	// Monotonic counts since start, read by the metrics and tests.
	passes, builds, bytes atomic.Int64
}

// New returns a collector; it starts nothing.
func New(st Store, fs Files, clk clock.Clock, log *slog.Logger, cfg Config) *Collector {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Batch <= 0 {
		cfg.Batch = DefaultBatch
	}
	if cfg.Pause == 0 {
		cfg.Pause = DefaultPause
	}
	return &Collector{store: st, files: fs, clock: clk, log: log, cfg: cfg}
}

// String names the service in supervisor logs.
func (c *Collector) String() string { return "retention-collector" }

// Purged returns how many builds' files, and how many bytes, the passes of
// this collector deleted since start (a build whose pass stopped is counted
// again by the pass that finishes it). A nil collector counts nothing.
func (c *Collector) Purged() (builds, bytes int64) {
	if c == nil {
		return 0, 0
	}
	return c.builds.Load(), c.bytes.Load()
}

// Passes returns how many passes Serve has ended; each is counted once the
// next one is scheduled, so a test that sees n may move the clock.
func (c *Collector) Passes() int64 { return c.passes.Load() }

// Serve runs a pass at once and then every Interval until ctx ends. A failed
// pass is logged and left to the next one, which finishes its work: nothing
// of a pass lives in memory.
func (c *Collector) Serve(ctx context.Context) error {
	for {
		began := time.Now() // how long it took is real time, whatever the clock says
		r, err := c.Pass(ctx, nil)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			c.log.Warn("retention pass failed; the next one finishes it", "builds", r.Builds, "bytes", r.Bytes, "err", err)
		case r != Report{}:
			c.log.Info("retention pass", "builds", r.Builds, "bytes", r.Bytes, "cpu_snapshots", r.Snapshots,
				"diagnostics", r.Diagnostics, "took", time.Since(began).Round(time.Millisecond))
		}
		t := c.clock.NewTimer(c.cfg.Interval)
		c.passes.Add(1)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C():
		}
	}
}

// Pass runs one retention pass with the clock's time now: it first deletes
// again the files of builds an earlier, stopped pass took but did not record
// as deleted, then takes the expired builds a batch at a time — mark (one
// durable transaction: the rows then claim no file), delete their files,
// record them deleted (another) — then prunes CPU snapshots and diagnostic
// reports, a batch per transaction. onBuild, if set, is told of each build.
// It returns what it did so far and the first error (the store's, a file
// deletion's, ErrDisabled, or the context's).
func (c *Collector) Pass(ctx context.Context, onBuild OnBuild) (Report, error) {
	var r Report
	if c.cfg.Retention <= 0 {
		return r, ErrDisabled
	}
	now := c.clock.Now().UnixMilli()
	scope, err := c.store.RetentionScopeAt(ctx, now-c.cfg.Retention.Milliseconds())
	if err != nil {
		return r, err
	}
	// Builds taken by a pass that stopped between its two steps first: their
	// rows claim no file already, so their files are ours to delete. Then
	// the expired builds.
	for _, take := range []func() ([]store.PurgeItem, error){
		func() ([]store.PurgeItem, error) { return c.store.PurgingBuilds(ctx, c.cfg.Batch) },
		func() ([]store.PurgeItem, error) { return c.store.MarkPurged(ctx, scope, now, c.cfg.Batch) },
	} {
		for {
			items, err := take()
			if err != nil {
				return r, err
			}
			if len(items) == 0 {
				break
			}
			if err := c.remove(ctx, items, now, &r, onBuild); err != nil {
				return r, err
			}
		}
	}
	for _, p := range []struct {
		prune func(context.Context, store.RetentionScope, int) (int64, error)
		count *int64
	}{{c.store.PruneCPUSnapshots, &r.Snapshots}, {c.store.PruneDiagnostics, &r.Diagnostics}} {
		for {
			n, err := p.prune(ctx, scope, c.cfg.Batch)
			if err != nil {
				return r, err
			}
			*p.count += n
			if n < int64(c.cfg.Batch) {
				break
			}
			if err := c.pause(ctx); err != nil {
				return r, err
			}
		}
	}
	return r, nil
}

// remove deletes the files of taken builds, then records them deleted. A
// deletion that fails stops here: the builds stay "purging" and the next
// pass deletes again.
func (c *Collector) remove(ctx context.Context, items []store.PurgeItem, now int64, r *Report, onBuild OnBuild) error {
	for _, it := range items {
		bytes, err := c.deleteFiles(it)
		if err != nil {
			return fmt.Errorf("delete the files of build %s: %w", it.ID, err)
		}
		r.Builds++
		r.Bytes += bytes
		c.builds.Add(1)
		c.bytes.Add(bytes)
		if onBuild != nil {
			onBuild(it.ID, bytes)
		}
	}
	if err := c.store.MarkFilesRemoved(ctx, items, now); err != nil {
		return err
	}
	return c.pause(ctx)
}

// deleteFiles deletes a build's files and returns their sizes, summed; an
// absent file counts nothing.
func (c *Collector) deleteFiles(it store.PurgeItem) (int64, error) {
	var total int64
	for _, rel := range it.Paths {
		n, err := c.size(rel)
		if err != nil {
			return total, err
		}
		if err := c.files.Delete(rel); err != nil {
			return total, err
		}
		total += n
	}
	return total, nil
}

func (c *Collector) size(rel string) (int64, error) {
	n, err := c.files.Size(rel)
	if errors.Is(err, files.ErrFileNotFound) {
		return 0, nil
	}
	return n, err
}

// pause lets writers waiting for the database go first (DefaultPause); it
// returns the context's error once ctx ends.
func (c *Collector) pause(ctx context.Context) error {
	if c.cfg.Pause > 0 {
		t := time.NewTimer(c.cfg.Pause)
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
	return ctx.Err()
}

// Plan is a dry run of Pass with the clock's time now: it changes nothing,
// tells onBuild of each build whose files a pass would delete (the builds a
// stopped pass left first), and counts the records it would prune.
func (c *Collector) Plan(ctx context.Context, onBuild OnBuild) (Report, error) {
	var r Report
	if c.cfg.Retention <= 0 {
		return r, ErrDisabled
	}
	scope, err := c.store.RetentionScopeAt(ctx, c.clock.Now().UnixMilli()-c.cfg.Retention.Milliseconds())
	if err != nil {
		return r, err
	}
	note := func(items []store.PurgeItem) error {
		for _, it := range items {
			var bytes int64
			for _, rel := range it.Paths {
				n, err := c.size(rel)
				if err != nil {
					return fmt.Errorf("size of a file of build %s: %w", it.ID, err)
				}
				bytes += n
			}
			r.Builds++
			r.Bytes += bytes
			if onBuild != nil {
				onBuild(it.ID, bytes)
			}
		}
		return nil
	}
	// A stopped pass leaves at most a batch per stop: read them at once.
	purging, err := c.store.PurgingBuilds(ctx, 1<<30)
	if err == nil {
		err = note(purging)
	}
	var after store.PurgeCursor
	for err == nil {
		var items []store.PurgeItem
		if items, err = c.store.PurgeableBuilds(ctx, scope, after, c.cfg.Batch); err != nil || len(items) == 0 {
			break
		}
		err = note(items)
		last := items[len(items)-1]
		after = store.PurgeCursor{CompletedAt: last.CompletedAt, ID: last.ID}
	}
	if err != nil {
		return r, err
	}
	r.Snapshots, r.Diagnostics, err = c.store.Prunable(ctx, scope)
	return r, err
}
