package app

import (
	"context"

	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

// kickingStore is the store as the services see it when webhooks are on:
// each operation that can write an outbox row (docs/API.md §3.5) kicks the
// webhook sender when it returns, so an event is sent at once instead of at
// the sender's next timer. The kick follows the commit, and a spurious one
// (the operation changed nothing) costs the sender one read; the sender
// makes the row durable (Store.Sync) before it sends it, since the queue
// manager commits without waiting for the fsync.
//
// The store cannot kick by itself: its transaction helper stays the one
// place that commits, and knows nothing of outboxes.
type kickingStore struct {
	Store
	kick func()
}

func (s kickingStore) CancelBuild(ctx context.Context, id string, now int64) (domain.Build, error) {
	defer s.kick()
	return s.Store.CancelBuild(ctx, id, now)
}

func (s kickingStore) FinishBuild(ctx context.Context, f store.Finish) error {
	defer s.kick()
	return s.Store.FinishBuild(ctx, f)
}

func (s kickingStore) TimeoutBuild(ctx context.Context, buildID, workerID string, cutoff, now int64, maxAttempts int) (domain.TimeoutOutcome, error) {
	defer s.kick()
	return s.Store.TimeoutBuild(ctx, buildID, workerID, cutoff, now, maxAttempts)
}

func (s kickingStore) AbandonBuild(ctx context.Context, buildID, workerID, reason string, now int64, maxAttempts int) (domain.TimeoutOutcome, error) {
	defer s.kick()
	return s.Store.AbandonBuild(ctx, buildID, workerID, reason, now, maxAttempts)
}

func (s kickingStore) RequeueOnUnregister(ctx context.Context, workerID string, now int64) (string, error) {
	defer s.kick()
	return s.Store.RequeueOnUnregister(ctx, workerID, now)
}
