package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/expo-free-agent/controller/store"
)

// MonitorStore is what the liveness monitor reads.
type MonitorStore interface {
	ExpiredBuilds(ctx context.Context, cutoff int64) ([]store.Build, error)
}

// MonitorConfig holds the liveness timings.
type MonitorConfig struct {
	BuildTimeout  time.Duration // no liveness for this long: the build times out (default 300 s)
	WorkerTimeout time.Duration // not seen for this long: the worker is offline (default 300 s)
	Interval      time.Duration // how often deadlines are checked (default 5 s, at most 15 s)
}

// LivenessMonitor watches build deadlines and worker presence. Every Interval
// it finds the running builds whose last liveness signal is older than the
// build timeout and asks the queue manager to expire each one (the queue
// manager re-checks under its own serialization, so a heartbeat that arrives
// in between wins), then asks it to save last-seen times and mark silent
// workers offline.
type LivenessMonitor struct {
	store MonitorStore
	queue *QueueManager
	clock Clock
	log   *slog.Logger
	cfg   MonitorConfig
	kick  chan chan error // CheckNow requests
}

// NewLivenessMonitor returns a monitor; it starts nothing.
func NewLivenessMonitor(st MonitorStore, q *QueueManager, clock Clock, log *slog.Logger, cfg MonitorConfig) *LivenessMonitor {
	if cfg.BuildTimeout <= 0 {
		cfg.BuildTimeout = 300 * time.Second
	}
	if cfg.WorkerTimeout <= 0 {
		cfg.WorkerTimeout = 300 * time.Second
	}
	if cfg.Interval <= 0 || cfg.Interval > 15*time.Second {
		cfg.Interval = 5 * time.Second
	}
	return &LivenessMonitor{store: st, queue: q, clock: clock, log: log, cfg: cfg, kick: make(chan chan error)}
}

// String names the service in supervisor logs.
func (m *LivenessMonitor) String() string { return "liveness-monitor" }

// Serve checks deadlines every Interval and on CheckNow until ctx ends.
func (m *LivenessMonitor) Serve(ctx context.Context) error {
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
// moving a manual clock.
func (m *LivenessMonitor) CheckNow(ctx context.Context) error {
	done := make(chan error, 1)
	select {
	case m.kick <- done:
	case <-ctx.Done():
		return fmt.Errorf("%w: %v", ErrUnavailable, ctx.Err())
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%w: %v", ErrUnavailable, ctx.Err())
	}
}

func (m *LivenessMonitor) check(ctx context.Context) error {
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
	return errors.Join(errs...)
}
