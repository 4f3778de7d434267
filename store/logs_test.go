package store_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

func seqs(entries []domain.LogEntry) []int64 {
	out := make([]int64, 0, len(entries))
	for _, e := range entries {
		out = append(out, e.Seq)
	}
	return out
}

func TestAppendLogs(t *testing.T) {
	t.Parallel()

	t.Run("SequenceAcrossCalls/OK", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		b := d.build(t, t0) // "Build submitted" is seq 1

		n, err := d.s.AppendLogs(t.Context(), b, "", []store.LogInput{
			{Level: domain.LevelInfo, Message: "one"},
			{Level: domain.LevelWarn, Message: "two"},
			{Level: domain.LevelError, Message: "three"},
		}, t0+100)
		require.NoError(t, err)
		require.Equal(t, 3, n)
		n, err = d.s.AppendLogs(t.Context(), b, "", []store.LogInput{
			{Level: domain.LevelInfo, Message: "four"},
			{Level: domain.LevelInfo, Message: "four"}, // duplicates are kept
		}, t0+200)
		require.NoError(t, err)
		require.Equal(t, 2, n)

		require.Equal(t, []domain.LogEntry{
			{Seq: 1, Timestamp: t0, Level: domain.LevelInfo, Message: "Build submitted"},
			{Seq: 2, Timestamp: t0 + 100, Level: domain.LevelInfo, Message: "one"},
			{Seq: 3, Timestamp: t0 + 100, Level: domain.LevelWarn, Message: "two"},
			{Seq: 4, Timestamp: t0 + 100, Level: domain.LevelError, Message: "three"},
			{Seq: 5, Timestamp: t0 + 200, Level: domain.LevelInfo, Message: "four"},
			{Seq: 6, Timestamp: t0 + 200, Level: domain.LevelInfo, Message: "four"},
		}, d.logs(t, b))
	})

	// Lines go in several rows per statement (64, 16, 4, 1): every count
	// across those sizes keeps every line, in order, with its own sequence
	// number, and the feed carries the same entries.
	t.Run("ManyRowsPerStatement", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		b := d.build(t, t0)
		sub := d.s.Subscribe(b)
		defer sub.Close()
		want := d.logs(t, b)
		levels := []domain.LogLevel{domain.LevelInfo, domain.LevelWarn, domain.LevelError}
		for call, n := range []int{1, 3, 4, 5, 15, 16, 17, 63, 64, 65, 69, 100, 150, 2000} {
			lines := make([]store.LogInput, n)
			for i := range lines {
				lines[i] = store.LogInput{Level: levels[i%3], Message: fmt.Sprintf("call %d line %d é\x00✓", call, i)}
				want = append(want, domain.LogEntry{Seq: int64(len(want) + 1), Timestamp: t0 + int64(call),
					Level: lines[i].Level, Message: fmt.Sprintf("call %d line %d é\uFFFD✓", call, i)}) // NUL is U+FFFD
			}
			got, err := d.s.AppendLogs(t.Context(), b, "", lines, t0+int64(call))
			require.NoError(t, err)
			require.Equal(t, n, got)
		}
		require.Equal(t, want, d.logs(t, b))
		var fed []domain.LogEntry
		for len(fed) < len(want)-1 {
			kicked(t, sub)
			entries, lagged, _ := sub.Take()
			require.False(t, lagged)
			fed = append(fed, entries...)
		}
		require.Equal(t, want[1:], fed, "the feed: every entry after the submission's, in order")
	})

	// A line too long is stored cut, a NUL as U+FFFD; the caller's lines
	// are left as they were.
	t.Run("ClippedNotTheCallers", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		b := d.build(t, t0)
		long := strings.Repeat("x", domain.MaxLogMessage+100)
		lines := []store.LogInput{{Level: domain.LevelInfo, Message: "fine"}, {Level: domain.LevelWarn, Message: long},
			{Level: domain.LevelInfo, Message: "nul\x00"}}
		_, err := d.s.AppendLogs(t.Context(), b, "", lines, t0+1)
		require.NoError(t, err)
		require.Equal(t, long, lines[1].Message)
		require.Equal(t, "nul\x00", lines[2].Message)
		got := d.logs(t, b)
		require.Len(t, got, 4)
		require.Equal(t, "fine", got[1].Message)
		require.Equal(t, domain.Clip(long, domain.MaxLogMessage), got[2].Message)
		require.True(t, strings.HasSuffix(got[2].Message, " … [100 bytes cut]"))
		require.Equal(t, "nul\uFFFD", got[3].Message)
	})

	t.Run("SequencesArePerBuild", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		a, b := d.build(t, t0), d.build(t, t0)
		for range 3 {
			_, err := d.s.AppendLogs(t.Context(), a, "", []store.LogInput{{Level: domain.LevelInfo, Message: "a"}}, t0)
			require.NoError(t, err)
		}
		_, err := d.s.AppendLogs(t.Context(), b, "", []store.LogInput{{Level: domain.LevelInfo, Message: "b"}}, t0)
		require.NoError(t, err)
		require.Equal(t, []int64{1, 2, 3, 4}, seqs(d.logs(t, a)))
		require.Equal(t, []int64{1, 2}, seqs(d.logs(t, b)))
	})

	t.Run("Empty/OK", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		b := d.build(t, t0)
		before := d.dump(t)
		n, err := d.s.AppendLogs(t.Context(), b, "", nil, t0+1)
		require.NoError(t, err)
		require.Zero(t, n)
		require.Equal(t, before, d.dump(t))
	})

	t.Run("Worker/OK", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		b, w := d.running(t, "w", t0)
		n, err := d.s.AppendLogs(t.Context(), b, w, []store.LogInput{{Level: domain.LevelInfo, Message: "from VM"}}, t0+7000)
		require.NoError(t, err)
		require.Equal(t, 1, n)
		got := d.get(t, b)
		require.Equal(t, domain.StatusBuilding, got.Status, "a worker's log starts building")
		require.Equal(t, ptr(t0+7000), got.LastActivityAt)
		msgs := d.messages(t, b)
		require.Equal(t, "info: from VM", msgs[len(msgs)-1])
	})

	t.Run("WorkerEmptyBatch/Liveness", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		b, w := d.running(t, "w", t0)
		n, err := d.s.AppendLogs(t.Context(), b, w, []store.LogInput{}, t0+7000)
		require.NoError(t, err)
		require.Zero(t, n)
		require.Equal(t, ptr(t0+7000), d.get(t, b).LastActivityAt)
	})

	refusals := []struct {
		name    string
		setup   func(t *testing.T, d *testDB) (buildID, workerID string)
		wantErr error
	}{
		{"OtherWorker/NotAssignee", func(t *testing.T, d *testDB) (string, string) {
			b, _ := d.running(t, "owner", t0)
			return b, d.worker(t, "other", t0)
		}, store.ErrNotAssignee},
		{"UnknownWorker/NotAssignee", func(t *testing.T, d *testDB) (string, string) {
			b, _ := d.running(t, "owner", t0)
			return b, uuid.NewString()
		}, store.ErrNotAssignee},
		{"PendingBuild/NotAssignee", func(t *testing.T, d *testDB) (string, string) {
			return d.build(t, t0), d.worker(t, "w", t0)
		}, store.ErrNotAssignee},
		{"FinishedBuild/NotAssignee", func(t *testing.T, d *testDB) (string, string) {
			b, w := d.running(t, "w", t0)
			require.NoError(t, d.s.FinishBuild(t.Context(), store.Finish{BuildID: b, WorkerID: w, Now: t0 + 2000}))
			return b, w
		}, store.ErrNotAssignee},
		{"WorkerNotFoundBuild/NotFound", func(t *testing.T, d *testDB) (string, string) {
			return uuid.NewString(), d.worker(t, "w", t0)
		}, store.ErrNotFound},
		{"AdminNotFoundBuild/NotFound", func(t *testing.T, d *testDB) (string, string) {
			d.build(t, t0)
			return uuid.NewString(), ""
		}, store.ErrNotFound},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := newTestDB(t)
			b, w := tc.setup(t, d)
			before := d.dump(t)
			n, err := d.s.AppendLogs(t.Context(), b, w, []store.LogInput{
				{Level: domain.LevelInfo, Message: "x"}, {Level: domain.LevelError, Message: "y"},
			}, t0+50_000)
			require.ErrorIs(t, err, tc.wantErr)
			require.Zero(t, n)
			require.Equal(t, before, d.dump(t), "nothing is written")
		})
	}

	t.Run("BadLevel/AllOrNothing", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		b := d.build(t, t0)
		before := d.dump(t)
		n, err := d.s.AppendLogs(t.Context(), b, "", []store.LogInput{
			{Level: domain.LevelInfo, Message: "fine"},
			{Level: "debug", Message: "not a level"},
		}, t0+1)
		require.ErrorIs(t, err, store.ErrInternal)
		requireNoDriverError(t, err)
		require.Zero(t, n)
		require.Equal(t, before, d.dump(t))
	})

	t.Run("Concurrent/UniqueContiguous", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		b := d.build(t, t0)
		const writers, each = 8, 5
		errs := make(chan error, writers*each)
		var wg sync.WaitGroup
		for i := range writers {
			wg.Go(func() {
				for j := range each {
					_, err := d.s.AppendLogs(t.Context(), b, "", []store.LogInput{
						{Level: domain.LevelInfo, Message: fmt.Sprintf("%d-%d", i, j)},
					}, t0+1)
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		logs := d.logs(t, b)
		require.Len(t, logs, 1+writers*each)
		for i, e := range logs {
			require.Equal(t, int64(i+1), e.Seq)
		}
	})
}

func TestLogsAfter(t *testing.T) {
	t.Parallel()
	d := newTestDB(t)
	b := d.build(t, t0)
	_, err := d.s.AppendLogs(t.Context(), b, "", []store.LogInput{
		{Level: domain.LevelInfo, Message: "2"}, {Level: domain.LevelInfo, Message: "3"},
		{Level: domain.LevelInfo, Message: "4"},
	}, t0+1)
	require.NoError(t, err)
	empty := d.build(t, t0)
	d.exec(t, `DELETE FROM build_logs WHERE build_id = ?`, empty)

	cases := []struct {
		name    string
		build   string
		after   int64
		want    []int64
		wantErr error
	}{
		{"All", b, 0, []int64{1, 2, 3, 4}, nil},
		{"NegativeIsAll", b, -5, []int64{1, 2, 3, 4}, nil},
		{"Newer", b, 2, []int64{3, 4}, nil},
		{"NothingNewer", b, 4, []int64{}, nil},
		{"BeyondEnd", b, 100, []int64{}, nil},
		{"BuildWithoutLogs", empty, 0, []int64{}, nil},
		{"NotFound", uuid.NewString(), 0, nil, store.ErrNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := d.s.LogsAfter(t.Context(), tc.build, tc.after)
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				require.Nil(t, got)
				return
			}
			require.NoError(t, err)
			require.NotNil(t, got, "an empty log is [], not null")
			require.Equal(t, tc.want, seqs(got))
		})
	}

	t.Run("LogsIsLogsAfterZero", func(t *testing.T) {
		t.Parallel()
		all, err := d.s.Logs(t.Context(), b)
		require.NoError(t, err)
		after, err := d.s.LogsAfter(t.Context(), b, 0)
		require.NoError(t, err)
		require.Equal(t, after, all)
		require.Equal(t, []string{"Build submitted", "2", "3", "4"},
			[]string{all[0].Message, all[1].Message, all[2].Message, all[3].Message})
	})

	t.Run("Logs/NotFound", func(t *testing.T) {
		t.Parallel()
		_, err := d.s.Logs(t.Context(), uuid.NewString())
		require.ErrorIs(t, err, store.ErrNotFound)
	})
}
