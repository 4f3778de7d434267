package store

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/expo-free-agent/controller/store/domain"
	"github.com/google/uuid"
)

func benchStore(b *testing.B) *Store {
	b.Helper()
	s, err := Open(context.Background(), filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// benchRunning creates a worker holding a running build.
func benchRunning(b testing.TB, s *Store) (buildID, workerID string) {
	b.Helper()
	ctx := context.Background()
	w, _, err := s.RegisterWorker(ctx, Registration{Name: "bench", Capabilities: "{}", Now: 1})
	if err != nil {
		b.Fatal(err)
	}
	id := uuid.NewString()
	if err := s.CreateBuild(ctx, NewBuild{ID: id, Platform: domain.PlatformIOS, SubmittedAt: 1,
		SourcePath: "builds/" + id + ".zip", TokenHash: make([]byte, 32)}); err != nil {
		b.Fatal(err)
	}
	if err := s.AssignBuild(ctx, id, w.ID, 2); err != nil {
		b.Fatal(err)
	}
	return id, w.ID
}

// BenchmarkAppendLogs100 is a worker's batch of 100 log lines: one
// transaction checking the assignee, refreshing liveness and inserting.
func BenchmarkAppendLogs100(b *testing.B) {
	s := benchStore(b)
	build, worker := benchRunning(b, s)
	lines := make([]LogInput, 100)
	for i := range lines {
		lines[i] = LogInput{Level: domain.LevelInfo, Message: fmt.Sprintf("Compiling module %d of 100 (a typical xcodebuild line)", i)}
	}
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.AppendLogs(ctx, build, worker, lines, int64(i)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "lines/s")
}

// BenchmarkTouchBuild is one liveness update (heartbeat, download).
func BenchmarkTouchBuild(b *testing.B) {
	s := benchStore(b)
	build, worker := benchRunning(b, s)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := s.TouchBuild(ctx, build, worker, int64(i)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBuildLifecycle is the state changes of one build: create,
// assign, finish — three write transactions.
func BenchmarkBuildLifecycle(b *testing.B) {
	s := benchStore(b)
	ctx := context.Background()
	w, _, err := s.RegisterWorker(ctx, Registration{Name: "bench", Capabilities: "{}", Now: 1})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := uuid.NewString()
		if err := s.CreateBuild(ctx, NewBuild{ID: id, Platform: domain.PlatformIOS, SubmittedAt: int64(i),
			SourcePath: "builds/" + id + ".zip", TokenHash: make([]byte, 32)}); err != nil {
			b.Fatal(err)
		}
		if err := s.AssignBuild(ctx, id, w.ID, int64(i)); err != nil {
			b.Fatal(err)
		}
		if err := s.FinishBuild(ctx, Finish{BuildID: id, WorkerID: w.ID, Success: true,
			ResultPath: "results/" + id + ".ipa", ResultSize: 1, ResultSHA256: "x", Now: int64(i)}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "builds/s")
}

// BenchmarkGetBuild is the read every authorized request starts with.
func BenchmarkGetBuild(b *testing.B) {
	s := benchStore(b)
	build, _ := benchRunning(b, s)
	ctx := context.Background()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.GetBuild(ctx, build); err != nil {
				b.Fatal(err)
			}
		}
	})
}
