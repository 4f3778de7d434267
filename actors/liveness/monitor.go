// Package liveness holds the liveness monitor: it watches build deadlines and
// worker presence and asks the queue manager to act on what expired.
package liveness

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/expo-free-agent/controller/actors/clock"
	"github.com/expo-free-agent/controller/actors/queue"
	"github.com/expo-free-agent/controller/store/domain"
)

// The liveness defaults (docs/API.md §5.3, §7).
const (
	DefaultBuildTimeout  = 300 * time.Second // no liveness for this long: the build times out
	DefaultWorkerTimeout = 300 * time.Second // not seen for this long: the worker is offline
	DefaultInterval      = 5 * time.Second   // how often deadlines are checked
	maxInterval          = 15 * time.Second
)

// Store is what the monitor reads.
type Store interface {
	ExpiredBuilds(ctx context.Context, cutoff int64) ([]domain.Build, error)
	PruneTokens(ctx context.Context, now int64) (int64, error)
}

// Queue is what the monitor asks of the queue manager.
type Queue interface {
	ExpireBuild(ctx context.Context, buildID, workerID string, cutoff int64) (domain.TimeoutOutcome, error)
	SweepWorkers(ctx context.Context, cutoff int64) (int, error)
}

// Config holds the liveness timings; zero values take the defaults.
type Config struct {
	BuildTimeout  time.Duration // DefaultBuildTimeout
	WorkerTimeout time.Duration // DefaultWorkerTimeout
	Interval      time.Duration // DefaultInterval, at most 15 s
}

// Monitor watches build deadlines and worker presence. Every Interval it
// finds the running builds whose last liveness signal is older than the
// build timeout and asks the queue manager to expire each one (the queue
// manager re-checks under its own serialization, so a heartbeat that arrives
// in between wins), then asks it to save last-seen times and mark silent
// workers offline, and prunes expired tokens.
type Monitor struct {
	store Store
	queue Queue
	clock clock.Clock
	log   *slog.Logger
	cfg   Config
	kick  chan chan error // CheckNow requests
}

// New returns a monitor; it starts nothing.
func New(st Store, q Queue, clk clock.Clock, log *slog.Logger, cfg Config) *Monitor {
	if cfg.BuildTimeout <= 0 {
		cfg.BuildTimeout = DefaultBuildTimeout
	}
	if cfg.WorkerTimeout <= 0 {
		cfg.WorkerTimeout = DefaultWorkerTimeout
	}
	if cfg.Interval <= 0 || cfg.Interval > maxInterval {
		cfg.Interval = DefaultInterval
	}
	return &Monitor{store: st, queue: q, clock: clk, log: log, cfg: cfg, kick: make(chan chan error)}
}

// String names the service in supervisor logs.
func (m *Monitor) String() string { return "liveness-monitor" }

// Serve checks deadlines every Interval and on CheckNow until ctx ends.
func (m *Monitor) Serve(ctx context.Context) error {
	t := time.NewTicker(m.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			if err := m.check(ctx); err != nil && ctx.Err() == nil {
				m.log.Warn("liveness check failed", "err", err)
			}
		case done := <-m.kick:
			done <- m.check(ctx)
		}
	}
}

// CheckNow runs one check at once and returns its error; tests use it after
// moving a manual clock. It returns queue.ErrUnavailable if the monitor does
// not answer within ctx.
func (m *Monitor) CheckNow(ctx context.Context) error {
	done := make(chan error, 1)
	select {
	case m.kick <- done:
	case <-ctx.Done():
		return fmt.Errorf("%w: %v", queue.ErrUnavailable, ctx.Err())
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%w: %v", queue.ErrUnavailable, ctx.Err())
	}
}

func (m *Monitor) check(ctx context.Context) error {
	now := m.clock.Now()
	cutoff := now.Add(-m.cfg.BuildTimeout).UnixMilli()
	expired, err := m.store.ExpiredBuilds(ctx, cutoff)
	if err != nil {
		return err
	}
	var errs []error
	for _, b := range expired {
		if _, err := m.queue.ExpireBuild(ctx, b.ID, *b.WorkerID, cutoff); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := m.queue.SweepWorkers(ctx, now.Add(-m.cfg.WorkerTimeout).UnixMilli()); err != nil {
		errs = append(errs, err)
	}
	// Expired worker and VM tokens and one-time passwords: refused already,
	// deleted here so that the tables do not grow.
	if _, err := m.store.PruneTokens(ctx, now.UnixMilli()); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
