package queue

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/google/uuid"

	"github.com/expo-free-agent/controller/actors/clock"
	"github.com/expo-free-agent/controller/actors/files"
	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

// benchQueue runs a queue manager on a real store in a temp dir.
func benchQueue(b *testing.B) (*Manager, *store.Store) {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := store.Open(ctx, filepath.Join(b.TempDir(), "q.db"))
	if err != nil {
		b.Fatal(err)
	}
	fs, err := files.New(filepath.Join(b.TempDir(), "storage"), nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	q := New(st, fs, clock.System{}, slog.New(slog.NewTextHandler(io.Discard, nil)), Config{})
	done := make(chan struct{})
	go func() { q.Serve(ctx); close(done) }()
	b.Cleanup(func() { cancel(); <-done; st.Close() })
	return q, st
}

// BenchmarkPollIdle is a poll with no work: a message round trip and a map
// update, no database write.
func BenchmarkPollIdle(b *testing.B) {
	q, _ := benchQueue(b)
	ctx := context.Background()
	w, _, err := q.Register(ctx, store.Registration{Name: "idle", Capabilities: `{"platforms":[]}`})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if job, err := q.Poll(ctx, w.ID); err != nil || job != nil {
				b.Fatal(job, err)
			}
		}
	})
}

// BenchmarkAssign is the assignment path: submit a build, a worker polls
// and gets it (one committed transaction), then reports it failed to free
// itself (no file I/O).
func BenchmarkAssign(b *testing.B) {
	q, st := benchQueue(b)
	ctx := context.Background()
	w, _, err := q.Register(ctx, store.Registration{Name: "w", Capabilities: `{}`})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := uuid.NewString()
		// The row and the queueing of Submit, without its file I/O.
		nb := store.NewBuild{ID: id, Platform: domain.PlatformIOS, SubmittedAt: int64(i),
			SourcePath: "builds/" + id + ".zip", TokenHash: make([]byte, 32)}
		if err := st.CreateBuild(ctx, nb); err != nil {
			b.Fatal(err)
		}
		q.enqueue(ctx, queuedBuild{id: id, platform: nb.Platform, submittedAt: nb.SubmittedAt})
		job, err := q.Poll(ctx, w.ID)
		if err != nil || job == nil || job.BuildID != id {
			b.Fatal(job, err)
		}
		if _, err := q.Finish(ctx, FinishRequest{BuildID: id, WorkerID: w.ID}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "builds/s")
}
