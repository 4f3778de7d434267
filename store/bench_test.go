package store

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

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

// BenchmarkHistoryReads times, on a copy-free open of the database named by
// HISTORY_DB (made by cmd/seed-history, e.g. 1,000,000 finished builds and
// 50,000,000 log lines), the store's side of the everyday reads, uncached:
// /api/stats, the counts of /health and /metrics, a build's status, a page
// of the build list at the start and 2,000 builds deep, a filtered page,
// the dashboard's lists, the first page of a log, and opening the store
// (migrations checked, as at start-up). See docs/BENCHMARKS.md.
//
//	HISTORY_DB=/tmp/hist/data/controller.db go test -run '^$' -bench HistoryReads ./store
func BenchmarkHistoryReads(b *testing.B) {
	path := os.Getenv("HISTORY_DB")
	if path == "" {
		b.Skip("HISTORY_DB is not set: seed a database with cmd/seed-history and name it there")
	}
	ctx := context.Background()
	s, err := Open(ctx, path)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	first, _, err := s.BuildPage(ctx, BuildQuery{Limit: 500})
	if err != nil || len(first) == 0 {
		b.Fatalf("the database holds no build (%v)", err)
	}
	deep := first[len(first)-1].ID
	for range 3 {
		page, _, err := s.BuildPage(ctx, BuildQuery{Limit: 500, Before: deep})
		if err != nil {
			b.Fatal(err)
		}
		if len(page) > 0 {
			deep = page[len(page)-1].ID
		}
	}
	day := time.Now().UTC().Truncate(24 * time.Hour).UnixMilli()
	reads := []struct {
		name string
		read func(i int) error
	}{
		{"Stats", func(int) error { _, err := s.Stats(ctx, time.Now().Add(-time.Minute).UnixMilli(), day); return err }},
		{"BuildCounts", func(int) error { _, err := s.BuildCounts(ctx); return err }},
		{"GetBuild", func(i int) error { _, err := s.GetBuild(ctx, first[i%len(first)].ID); return err }},
		{"PageFirst", func(int) error { _, _, err := s.BuildPage(ctx, BuildQuery{Limit: 100}); return err }},
		{"PageDeep", func(int) error { _, _, err := s.BuildPage(ctx, BuildQuery{Limit: 100, Before: deep}); return err }},
		{"PageFailedIOS", func(int) error {
			_, _, err := s.BuildPage(ctx, BuildQuery{Limit: 100, Status: domain.StatusFailed, Platform: domain.PlatformIOS})
			return err
		}},
		{"Dashboard", func(int) error {
			if _, err := s.RecentBuilds(ctx, 50); err != nil {
				return err
			}
			if _, err := s.FirstPending(ctx, 50); err != nil {
				return err
			}
			if _, err := s.RunningBuilds(ctx); err != nil {
				return err
			}
			_, err := s.ListWorkers(ctx)
			return err
		}},
		{"LogPage", func(i int) error { _, _, err := s.LogPage(ctx, first[i%len(first)].ID, 0, 1000); return err }},
		{"Open", func(int) error {
			o, err := Open(ctx, path)
			if err != nil {
				return err
			}
			return o.Close()
		}},
	}
	for _, r := range reads {
		b.Run(r.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if err := r.read(i); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// seedExpired inserts n completed ios builds, finished at 1001…1000+n, each
// with a source, certs and result path, and a CPU snapshot per build, in one
// transaction (the fast way to a history of n builds).
func seedExpired(b testing.TB, s *Store, n int) {
	b.Helper()
	ctx := context.Background()
	_, err := s.write.ExecContext(ctx, `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
		INSERT INTO builds (id, platform, status, submitted_at, started_at, completed_at, source_path, certs_path,
			result_path, result_size, token_hash)
		SELECT printf('00000000-0000-4000-8000-%012d', i), 'ios', 'completed', i, i, 1000 + i,
			printf('builds/00000000-0000-4000-8000-%012d.zip', i), printf('certs/00000000-0000-4000-8000-%012d.zip', i),
			printf('results/00000000-0000-4000-8000-%012d.ipa', i), 1000, zeroblob(32) FROM n`, n)
	if err != nil {
		b.Fatal(err)
	}
	_, err = s.write.ExecContext(ctx, `INSERT INTO cpu_snapshots (build_id, worker_id, timestamp, cpu_percent, memory_mb)
		SELECT id, 'w', completed_at, 50, 100 FROM builds`)
	if err != nil {
		b.Fatal(err)
	}
	// The seed's WAL is checkpointed now, not by the first timed commit.
	if _, err := s.write.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkRetentionPass is one retention pass over 100,000 expired builds
// in the collector's batches of 200 (actors/retention.DefaultBatch): take a
// batch (MarkPurged), record its files removed (MarkFilesRemoved), then prune
// the CPU snapshots, 200 at a time; each call is one write transaction. Every
// call runs under DeferSync, as the queue manager's do: what is timed holds
// the write connection, the WAL fsync after it does not. The seed is not
// timed.
//
//   - Batches: SQLite's automatic checkpoints are off, so each figure is the
//     transaction alone: the longest (max-batch-ms), the 99th percentile and
//     the median are how long a poll or submit can wait behind one batch.
//   - Submits: checkpoints on, as in production, and a submit every 2 ms
//     (500/s) meanwhile; then the same submits for as long again without the
//     pass. max- and p99-submit-ms with the pass against base-max- and
//     base-p99-submit-ms without it: the difference is what the pass costs a
//     submit (a commit that crosses the WAL's 1000 pages also checkpoints,
//     with an fsync of the database file, whoever makes it).
func BenchmarkRetentionPass(b *testing.B) {
	const builds, batch = 100_000, 200
	ctx := DeferSync(context.Background())
	pass := func(b *testing.B, s *Store) []time.Duration {
		scope, err := s.RetentionScopeAt(ctx, 1_000_000) // a read at the start of the pass
		if err != nil {
			b.Fatal(err)
		}
		var took []time.Duration
		timed := func(f func() error) {
			start := time.Now()
			if err := f(); err != nil {
				b.Fatal(err)
			}
			took = append(took, time.Since(start))
			if err := s.Sync(); err != nil {
				b.Fatal(err)
			}
		}
		taken := 0
		for {
			var items []PurgeItem
			timed(func() (err error) { items, err = s.MarkPurged(ctx, scope, 2_000_000, batch); return err })
			if len(items) == 0 {
				break
			}
			timed(func() error { return s.MarkFilesRemoved(ctx, items, 2_000_000) })
			taken += len(items)
		}
		for {
			var n int64
			timed(func() (err error) { n, err = s.PruneCPUSnapshots(ctx, scope, batch); return err })
			if n == 0 {
				break
			}
		}
		if taken != builds-1 { // the newest completed build is kept
			b.Fatalf("took %d builds, want %d", taken, builds-1)
		}
		return took
	}
	b.Run("Batches", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			s := benchStore(b)
			seedExpired(b, s, builds)
			if _, err := s.write.ExecContext(ctx, `PRAGMA wal_autocheckpoint = 0`); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			took := pass(b, s)
			b.ReportMetric(ms(quantile(took, 1)), "max-batch-ms")
			b.ReportMetric(ms(quantile(took, 0.99)), "p99-batch-ms")
			b.ReportMetric(ms(quantile(took, 0.5)), "p50-batch-ms")
			b.ReportMetric(float64(len(took)), "batches")
		}
	})
	b.Run("Submits", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			s := benchStore(b)
			seedExpired(b, s, builds)
			b.StartTimer()
			stop, done := make(chan struct{}), make(chan []time.Duration, 1)
			go func() { done <- submitEvery(s, 2*time.Millisecond, stop) }()
			start := time.Now()
			pass(b, s)
			close(stop)
			with := <-done
			stop, done = make(chan struct{}), make(chan []time.Duration, 1)
			go func() { done <- submitEvery(s, 2*time.Millisecond, stop) }()
			time.Sleep(time.Since(start)) // the baseline: as long, without the pass
			close(stop)
			without := <-done
			b.ReportMetric(ms(quantile(with, 1)), "max-submit-ms")
			b.ReportMetric(ms(quantile(with, 0.99)), "p99-submit-ms")
			b.ReportMetric(ms(quantile(without, 1)), "base-max-submit-ms")
			b.ReportMetric(ms(quantile(without, 0.99)), "base-p99-submit-ms")
		}
	})
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// quantile returns the q-quantile (0 < q ≤ 1) of ds.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(math.Ceil(q*float64(len(s))))-1)]
}

// submitEvery creates a pending build every interval, as submits do, until
// stop closes, and returns how long each took.
func submitEvery(s *Store, interval time.Duration, stop <-chan struct{}) []time.Duration {
	ctx := DeferSync(context.Background())
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var took []time.Duration
	for {
		select {
		case <-stop:
			return took
		case <-tick.C:
		}
		id := uuid.NewString()
		start := time.Now()
		if err := s.CreateBuild(ctx, NewBuild{ID: id, Platform: domain.PlatformAndroid, SubmittedAt: 3_000_000,
			SourcePath: "builds/" + id + ".zip", TokenHash: make([]byte, 32)}); err != nil {
			panic(err)
		}
		took = append(took, time.Since(start))
		if err := s.Sync(); err != nil {
			panic(err)
		}
	}
}
