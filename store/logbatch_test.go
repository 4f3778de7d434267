package store

// Inside the package: these tests hold the single write connection to make
// appends queue up, and read the queue.

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/internal/testkit"
	"github.com/expo-free-agent/controller/store/domain"
)

// holdWriter takes the single write connection until the returned function
// is called, so that every write waits.
func holdWriter(t *testing.T, s *Store) func() {
	t.Helper()
	conn, err := s.write.Conn(t.Context())
	require.NoError(t, err)
	var once sync.Once
	release := func() { once.Do(func() { require.NoError(t, conn.Close()) }) }
	t.Cleanup(release)
	return release
}

// queueUp waits until the i-th call (from 0) has queued: the first one has
// taken itself into a batch and leads, blocked on the writer; the later
// ones wait in the queue.
func queueUp(t *testing.T, s *Store, i int) {
	t.Helper()
	testkit.Eventually(t, 10*time.Second, func() bool {
		s.appender.mu.Lock()
		defer s.appender.mu.Unlock()
		return s.appender.leading && len(s.appender.queue) == i
	}, "call %d to queue", i)
}

func logLines(prefix string, n int) []LogInput {
	out := make([]LogInput, n)
	for i := range out {
		out[i] = LogInput{Level: domain.LevelInfo, Message: fmt.Sprintf("%s %d", prefix, i)}
	}
	return out
}

// TestAppendsShareATransaction: appends that arrive while the writer is busy
// are stored together in one transaction, each call's lines contiguous and
// in order, and a call refused (not the assignee, unknown build) fails alone.
func TestAppendsShareATransaction(t *testing.T) {
	s := openListStore(t)
	b1, w1 := benchRunning(t, s)
	b2, w2 := benchRunning(t, s)
	release := holdWriter(t, s)
	before := s.Version()

	const calls = 40
	type outcome struct {
		n   int
		err error
	}
	out := make([]outcome, calls)
	var wg sync.WaitGroup
	for i := range calls {
		build, worker := b1, w1
		switch {
		case i%2 == 1:
			build, worker = b2, w2
		case i == 10:
			worker = w2 // not b1's assignee
		case i == 20:
			build = uuid.NewString() // no such build
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := s.AppendLogs(context.Background(), build, worker, logLines(fmt.Sprintf("call %02d line", i), 5), 100)
			out[i] = outcome{n, err}
		}()
		queueUp(t, s, i) // in order: a call's place in the queue is its place in the log
	}
	release()
	wg.Wait()

	for i, o := range out {
		switch i {
		case 10:
			require.ErrorIs(t, o.err, ErrNotAssignee)
		case 20:
			require.ErrorIs(t, o.err, ErrNotFound)
		default:
			require.NoError(t, o.err, "call %d", i)
			require.Equal(t, 5, o.n)
		}
	}
	// The first call led alone (the queue was empty when it took its
	// batch); every later one went into the second transaction.
	require.Equal(t, before+2, s.Version(), "40 appends in two transactions")

	for _, b := range []struct {
		id    string
		calls []int
	}{{b1, []int{0, 2, 4, 6, 8, 12, 14, 16, 18, 22, 24, 26, 28, 30, 32, 34, 36, 38}}, {b2, nil}} {
		entries, err := s.Logs(t.Context(), b.id)
		require.NoError(t, err)
		var got []string
		for i, e := range entries {
			require.Equal(t, int64(i+1), e.Seq, "sequence numbers without gaps")
			if strings.HasPrefix(e.Message, "call ") {
				got = append(got, e.Message)
			}
		}
		if b.calls == nil {
			for i := 1; i < calls; i += 2 {
				b.calls = append(b.calls, i)
			}
		}
		var want []string
		for _, c := range b.calls {
			for j := range 5 {
				want = append(want, fmt.Sprintf("call %02d line %d", c, j))
			}
		}
		require.Equal(t, want, got)
	}
}

// TestAppendQueueIsBounded: past maxQueuedLogBytes waiting, an append is
// refused at once with ErrBusy and writes nothing; the queued ones are
// stored once the writer is free.
func TestAppendQueueIsBounded(t *testing.T) {
	s := openListStore(t)
	build, worker := benchRunning(t, s)
	release := holdWriter(t, s)

	big := make([]LogInput, 64) // 1 MiB per call
	for i := range big {
		big[i] = LogInput{Level: domain.LevelInfo, Message: strings.Repeat("x", domain.MaxLogMessage)}
	}
	var wg sync.WaitGroup
	var stored sync.Map
	// The first call is taken at once; 16 MiB then wait.
	for i := 0; i <= maxQueuedLogBytes>>20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := s.AppendLogs(context.Background(), build, worker, big, 100)
			if err == nil {
				stored.Store(i, n)
			}
		}()
		queueUp(t, s, i)
	}
	_, err := s.AppendLogs(context.Background(), build, worker, logLines("refused", 1), 100)
	require.ErrorIs(t, err, ErrBusy)

	release()
	wg.Wait()
	n := 0
	stored.Range(func(_, v any) bool { n += v.(int); return true })
	require.Equal(t, 17*64, n, "every queued call is stored")
	entries, err := s.Logs(t.Context(), build)
	require.NoError(t, err)
	for _, e := range entries {
		require.NotContains(t, e.Message, "refused")
	}
}

// TestAppendGivenUpWhileQueued: a call whose caller gives up before a batch
// takes it is not stored, and the others are.
func TestAppendGivenUpWhileQueued(t *testing.T) {
	s := openListStore(t)
	build, worker := benchRunning(t, s)
	release := holdWriter(t, s)

	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the first call leads, blocked on the writer
		defer wg.Done()
		_, err := s.AppendLogs(context.Background(), build, worker, logLines("first", 1), 100)
		require.NoError(t, err)
	}()
	queueUp(t, s, 0)
	ctx, cancel := context.WithCancel(context.Background())
	gaveUp := make(chan error, 1)
	go func() {
		_, err := s.AppendLogs(ctx, build, worker, logLines("given up", 1), 100)
		gaveUp <- err
	}()
	queueUp(t, s, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, err := s.AppendLogs(context.Background(), build, worker, logLines("third", 1), 100)
		require.NoError(t, err)
	}()
	queueUp(t, s, 2)
	cancel()
	require.ErrorIs(t, <-gaveUp, ErrTimeout)
	release()
	wg.Wait()

	entries, err := s.Logs(t.Context(), build)
	require.NoError(t, err)
	var got []string
	for _, e := range entries {
		got = append(got, e.Message)
	}
	require.Contains(t, got, "first 0")
	require.Contains(t, got, "third 0")
	require.NotContains(t, got, "given up 0")
	s.appender.mu.Lock()
	defer s.appender.mu.Unlock()
	require.False(t, s.appender.leading, "nobody leads an empty queue")
}

// TestLeadPassesOnWithdraw: a call told to lead that withdraws passes the
// lead to the next call waiting, or leaves nobody leading.
func TestLeadPassesOnWithdraw(t *testing.T) {
	var q logAppender
	call := func() *logAppend {
		return &logAppend{ctx: context.Background(), lead: make(chan struct{}, 1), done: make(chan error, 1)}
	}
	a, b := call(), call()
	require.NoError(t, q.join(a))
	require.NoError(t, q.join(b))
	require.Len(t, a.lead, 1, "the first call leads")
	require.Empty(t, b.lead)
	require.True(t, q.withdraw(a))
	require.Len(t, b.lead, 1, "the lead passed on")
	require.True(t, q.leading)
	require.True(t, q.withdraw(b))
	require.False(t, q.leading)
	require.False(t, q.withdraw(b), "gone already")
}

// BenchmarkAppendLogsConcurrent is many workers posting batches of 10 or
// 100 lines at once, every one on its own build: the calls share
// transactions, so it measures the single writer.
func BenchmarkAppendLogsConcurrent(b *testing.B) {
	for _, size := range []int{10, 100} {
		b.Run(fmt.Sprintf("batch%d", size), func(b *testing.B) { benchAppendConcurrent(b, size) })
	}
}

func benchAppendConcurrent(b *testing.B, size int) {
	s, err := Open(context.Background(), filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	const builds = 64
	type running struct{ build, worker string }
	var rs []running
	for range builds {
		id, w := benchRunning(b, s)
		rs = append(rs, running{id, w})
	}
	batch := make([]LogInput, size)
	for i := range batch {
		batch[i] = LogInput{Level: domain.LevelInfo, Message: fmt.Sprintf("Compiling module %d of %d (a typical xcodebuild line)", i, size)}
	}
	var next sync.Mutex
	k := 0
	b.SetParallelism(builds / 2) // GOMAXPROCS × this many posting goroutines
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		next.Lock()
		r := rs[k%builds]
		k++
		next.Unlock()
		for pb.Next() {
			if _, err := s.AppendLogs(context.Background(), r.build, r.worker, batch, 100); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "lines/s")
}
