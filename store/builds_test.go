package store_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

func buildIDs(bs []domain.Build) []string {
	out := make([]string, 0, len(bs))
	for _, b := range bs {
		out = append(out, b.ID)
	}
	return out
}

func TestCreateBuild(t *testing.T) {
	t.Parallel()

	t.Run("OK", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		b := uuid.NewString()
		certs := "certs/" + b + ".zip"
		require.NoError(t, d.s.CreateBuild(t.Context(), store.NewBuild{
			ID: b, Platform: domain.PlatformAndroid, SubmittedAt: t0, SourcePath: "builds/" + b + ".zip",
			CertsPath: &certs, TokenHash: tokenHash("secret"),
		}))

		got := d.get(t, b)
		require.Equal(t, domain.Build{
			ID: b, Platform: domain.PlatformAndroid, Status: domain.StatusPending, SubmittedAt: t0,
			SourcePath: "builds/" + b + ".zip", CertsPath: &certs, TokenHash: tokenHash("secret"),
		}, got)
		require.False(t, got.Running())
		require.False(t, got.Finished())
		require.Equal(t, []domain.LogEntry{{Seq: 1, Timestamp: t0, Level: domain.LevelInfo, Message: "Build submitted"}},
			d.logs(t, b))
	})

	t.Run("WithoutCerts", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		b := d.build(t, t0)
		got := d.get(t, b)
		require.Nil(t, got.CertsPath)
		require.Nil(t, got.OriginalBuildID)
		require.Zero(t, got.Attempts)
	})

	t.Run("Retry", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		old := d.build(t, t0)
		_, err := d.s.CancelBuild(t.Context(), old, t0+100)
		require.NoError(t, err)

		retry := uuid.NewString()
		require.NoError(t, d.s.CreateBuild(t.Context(), store.NewBuild{
			ID: retry, Platform: domain.PlatformIOS, SubmittedAt: t0 + 200, SourcePath: "builds/" + retry + ".zip",
			TokenHash: tokenHash("new"), OriginalBuildID: &old,
		}))

		got := d.get(t, retry)
		require.Equal(t, domain.StatusPending, got.Status)
		require.Zero(t, got.Attempts)
		require.Equal(t, &old, got.OriginalBuildID)
		require.Equal(t, []domain.LogEntry{{Seq: 1, Timestamp: t0 + 200, Level: domain.LevelInfo,
			Message: "Build submitted (retry of " + old + ")"}}, d.logs(t, retry))

		oldLogs := d.logs(t, old)
		require.Equal(t, domain.LogEntry{Seq: 3, Timestamp: t0 + 200, Level: domain.LevelInfo,
			Message: "Retried as build " + retry}, oldLogs[len(oldLogs)-1])
		require.Equal(t, domain.StatusFailed, d.get(t, old).Status, "the original is untouched")
	})

	t.Run("RetryOfMissingOriginal/NotFound", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		d.build(t, t0)
		before := d.dump(t)
		missing := uuid.NewString()
		b := uuid.NewString()
		err := d.s.CreateBuild(t.Context(), store.NewBuild{
			ID: b, Platform: domain.PlatformIOS, SubmittedAt: t0, SourcePath: "builds/" + b + ".zip",
			TokenHash: tokenHash("x"), OriginalBuildID: &missing,
		})
		require.ErrorIs(t, err, store.ErrNotFound)
		require.Equal(t, before, d.dump(t))
	})

	t.Run("DuplicateID/Internal", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		b := d.build(t, t0)
		before := d.dump(t)
		err := d.s.CreateBuild(t.Context(), store.NewBuild{
			ID: b, Platform: domain.PlatformIOS, SubmittedAt: t0 + 1, SourcePath: "builds/" + b + ".zip",
			TokenHash: tokenHash("x"),
		})
		require.ErrorIs(t, err, store.ErrInternal)
		requireNoDriverError(t, err)
		require.Equal(t, before, d.dump(t))
	})

	t.Run("BadPlatform/Internal", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		before := d.dump(t)
		b := uuid.NewString()
		err := d.s.CreateBuild(t.Context(), store.NewBuild{
			ID: b, Platform: "windows", SubmittedAt: t0, SourcePath: "builds/" + b + ".zip", TokenHash: tokenHash("x"),
		})
		require.ErrorIs(t, err, store.ErrInternal)
		requireNoDriverError(t, err)
		require.Equal(t, before, d.dump(t))
	})
}

func TestGetBuild(t *testing.T) {
	t.Parallel()
	d := newTestDB(t)
	b := d.build(t, t0)

	t.Run("OK", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, b, d.get(t, b).ID)
	})
	t.Run("NotFound", func(t *testing.T) {
		t.Parallel()
		_, err := d.s.GetBuild(t.Context(), uuid.NewString())
		require.ErrorIs(t, err, store.ErrNotFound)
		requireNoDriverError(t, err)
	})
	t.Run("UppercaseIsAnotherKey/NotFound", func(t *testing.T) {
		t.Parallel()
		// Callers lower ids with ParseID; the store compares exactly.
		_, err := d.s.GetBuild(t.Context(), "ABC")
		require.ErrorIs(t, err, store.ErrNotFound)
	})
}

func TestListBuilds(t *testing.T) {
	t.Parallel()

	t.Run("Empty", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		all, err := d.s.ListBuilds(t.Context())
		require.NoError(t, err)
		require.NotNil(t, all)
		require.Empty(t, all)
	})

	t.Run("NewestFirst", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		d.createBuild(t, id(2), t0+10, domain.PlatformIOS)
		d.createBuild(t, id(1), t0+30, domain.PlatformAndroid)
		d.createBuild(t, id(5), t0+20, domain.PlatformIOS)
		d.createBuild(t, id(4), t0+20, domain.PlatformIOS) // same time: higher id first
		_, err := d.s.CancelBuild(t.Context(), id(2), t0+40)
		require.NoError(t, err)

		all, err := d.s.ListBuilds(t.Context())
		require.NoError(t, err)
		require.Equal(t, []string{id(1), id(5), id(4), id(2)}, buildIDs(all))
		require.Equal(t, domain.StatusFailed, all[3].Status, "every state is listed")
	})
}

func TestRecentBuilds(t *testing.T) {
	t.Parallel()
	d := newTestDB(t)
	for i := 1; i <= 5; i++ {
		d.createBuild(t, id(i), t0+int64(i), domain.PlatformIOS)
	}
	cases := []struct {
		name  string
		limit int
		want  []string
	}{
		{"Limited", 2, []string{id(5), id(4)}},
		{"LimitAboveCount", 10, []string{id(5), id(4), id(3), id(2), id(1)}},
		{"Zero", 0, []string{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := d.s.RecentBuilds(t.Context(), tc.limit)
			require.NoError(t, err)
			require.Equal(t, tc.want, buildIDs(got))
		})
	}
}

func TestPendingBuilds(t *testing.T) {
	t.Parallel()

	t.Run("Empty", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		got, err := d.s.PendingBuilds(t.Context())
		require.NoError(t, err)
		require.NotNil(t, got)
		require.Empty(t, got)
	})

	t.Run("SubmitOrderThenID", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		d.createBuild(t, id(9), t0+30, domain.PlatformIOS)
		d.createBuild(t, id(3), t0+10, domain.PlatformAndroid)
		d.createBuild(t, id(7), t0+20, domain.PlatformIOS)
		d.createBuild(t, id(6), t0+20, domain.PlatformIOS)
		d.createBuild(t, id(1), t0+40, domain.PlatformIOS) // will be cancelled
		d.createBuild(t, id(2), t0+5, domain.PlatformIOS)  // will be running
		_, err := d.s.CancelBuild(t.Context(), id(1), t0+50)
		require.NoError(t, err)
		w := d.worker(t, "w", t0)
		require.NoError(t, d.s.AssignBuild(t.Context(), id(2), w, t0+60))

		got, err := d.s.PendingBuilds(t.Context())
		require.NoError(t, err)
		require.Equal(t, []string{id(3), id(6), id(7), id(9)}, buildIDs(got))
	})

	t.Run("RequeuedRegainsItsPlace", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		d.createBuild(t, id(1), t0+10, domain.PlatformIOS)
		w := d.worker(t, "w", t0)
		require.NoError(t, d.s.AssignBuild(t.Context(), id(1), w, t0+20))
		d.createBuild(t, id(2), t0+30, domain.PlatformIOS)
		out, err := d.s.TimeoutBuild(t.Context(), id(1), w, t0+1000, t0+1000, 3)
		require.NoError(t, err)
		require.Equal(t, domain.TimeoutRequeued, out)

		got, err := d.s.PendingBuilds(t.Context())
		require.NoError(t, err)
		require.Equal(t, []string{id(1), id(2)}, buildIDs(got))
	})
}

func TestRunningBuilds(t *testing.T) {
	t.Parallel()
	d := newTestDB(t)
	d.build(t, t0) // pending
	w1, w2, w3 := d.worker(t, "w1", t0), d.worker(t, "w2", t0), d.worker(t, "w3", t0)
	d.createBuild(t, id(1), t0+1, domain.PlatformIOS)
	d.createBuild(t, id(2), t0+2, domain.PlatformIOS)
	d.createBuild(t, id(3), t0+3, domain.PlatformIOS)
	// Assigned in the order 2, 1, 3: the answer follows the assignment time.
	require.NoError(t, d.s.AssignBuild(t.Context(), id(2), w1, t0+100))
	require.NoError(t, d.s.AssignBuild(t.Context(), id(1), w2, t0+200))
	require.NoError(t, d.s.AssignBuild(t.Context(), id(3), w3, t0+300))
	require.NoError(t, d.s.TouchBuild(t.Context(), id(1), w2, t0+400)) // building
	require.NoError(t, d.s.FinishBuild(t.Context(), store.Finish{BuildID: id(3), WorkerID: w3, Now: t0 + 500}))

	got, err := d.s.RunningBuilds(t.Context())
	require.NoError(t, err)
	require.Equal(t, []string{id(2), id(1)}, buildIDs(got))
	require.Equal(t, domain.StatusAssigned, got[0].Status)
	require.Equal(t, domain.StatusBuilding, got[1].Status)
	require.Equal(t, &w1, got[0].WorkerID)
	require.Equal(t, ptr(t0+100), got[0].StartedAt)
}

func TestExpiredBuilds(t *testing.T) {
	t.Parallel()
	d := newTestDB(t)
	d.build(t, t0) // pending builds never expire
	wA, wB := d.worker(t, "a", t0), d.worker(t, "b", t0)
	d.createBuild(t, id(1), t0+1, domain.PlatformIOS)
	d.createBuild(t, id(2), t0+2, domain.PlatformIOS)
	require.NoError(t, d.s.AssignBuild(t.Context(), id(1), wA, t0+1000))
	require.NoError(t, d.s.AssignBuild(t.Context(), id(2), wB, t0+2000))
	require.NoError(t, d.s.TouchBuild(t.Context(), id(2), wB, t0+5000))

	cases := []struct {
		name   string
		cutoff int64
		want   []string
	}{
		{"NoneBeforeAnyActivity", t0 + 1000, []string{}},
		{"StrictlyOlder", t0 + 1001, []string{id(1)}},
		{"LivenessAtCutoffIsAlive", t0 + 5000, []string{id(1)}},
		{"Both", t0 + 5001, []string{id(1), id(2)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := d.s.ExpiredBuilds(t.Context(), tc.cutoff)
			require.NoError(t, err)
			require.Equal(t, tc.want, buildIDs(got))
		})
	}
}

func TestAssignBuild(t *testing.T) {
	t.Parallel()

	t.Run("OK", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		b := d.build(t, t0)
		w := d.worker(t, "mac-mini-1", t0)
		require.ErrorIs(t, d.s.Heartbeat(t.Context(), b, w, nil, t0+1), store.ErrNotAssignee,
			"nobody holds a pending build")
		require.NoError(t, d.s.AssignBuild(t.Context(), b, w, t0+500))

		got := d.get(t, b)
		require.Equal(t, domain.StatusAssigned, got.Status)
		require.Equal(t, &w, got.WorkerID)
		require.Equal(t, ptr(t0+500), got.StartedAt)
		require.Equal(t, ptr(t0+500), got.LastActivityAt)
		require.Nil(t, got.CompletedAt)
		require.True(t, got.AssignedTo(w))
		require.False(t, got.AssignedTo(uuid.NewString()))

		wk := d.getWorker(t, w)
		require.Equal(t, domain.WorkerBuilding, wk.Status)
		require.Equal(t, t0+500, wk.LastSeenAt)
		require.Equal(t, []string{"info: Build submitted", "info: Assigned to worker mac-mini-1"}, d.messages(t, b))
		require.Equal(t, t0+500, d.logs(t, b)[1].Timestamp)
	})

	t.Run("OfflineWorkerBecomesBuilding", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		b := d.build(t, t0)
		w := d.worker(t, "w", t0+900)
		require.NoError(t, d.s.SetWorkerStatus(t.Context(), w, domain.WorkerOffline, t0))
		require.NoError(t, d.s.AssignBuild(t.Context(), b, w, t0+500))
		wk := d.getWorker(t, w)
		require.Equal(t, domain.WorkerBuilding, wk.Status)
		require.Equal(t, t0+900, wk.LastSeenAt, "last seen is never lowered")
	})

	refusals := []struct {
		name    string
		setup   func(t *testing.T, d *testDB) (buildID, workerID string)
		wantErr error
	}{
		{"AlreadyAssigned/Conflict", func(t *testing.T, d *testDB) (string, string) {
			b, _ := d.running(t, "first", t0)
			return b, d.worker(t, "second", t0)
		}, store.ErrConflict},
		{"Building/Conflict", func(t *testing.T, d *testDB) (string, string) {
			b, w := d.running(t, "first", t0)
			require.NoError(t, d.s.TouchBuild(t.Context(), b, w, t0+2000))
			return b, d.worker(t, "second", t0)
		}, store.ErrConflict},
		{"SameWorkerAgain/Conflict", func(t *testing.T, d *testDB) (string, string) {
			return d.running(t, "first", t0)
		}, store.ErrConflict},
		{"Completed/Conflict", func(t *testing.T, d *testDB) (string, string) {
			b, w := d.running(t, "first", t0)
			require.NoError(t, d.s.FinishBuild(t.Context(), store.Finish{BuildID: b, WorkerID: w, Success: true,
				ResultPath: "results/" + b + ".ipa", Now: t0 + 3000}))
			return b, w
		}, store.ErrConflict},
		{"Cancelled/Conflict", func(t *testing.T, d *testDB) (string, string) {
			b := d.build(t, t0)
			_, err := d.s.CancelBuild(t.Context(), b, t0+1)
			require.NoError(t, err)
			return b, d.worker(t, "w", t0)
		}, store.ErrConflict},
		{"WorkerHoldsBuild/Conflict", func(t *testing.T, d *testDB) (string, string) {
			_, w := d.running(t, "busy", t0)
			return d.build(t, t0+5), w
		}, store.ErrConflict},
		{"WorkerHoldsBuildingBuild/Conflict", func(t *testing.T, d *testDB) (string, string) {
			held, w := d.running(t, "busy", t0)
			require.NoError(t, d.s.TouchBuild(t.Context(), held, w, t0+2000))
			return d.build(t, t0+5), w
		}, store.ErrConflict},
		{"WorkerNotFound", func(t *testing.T, d *testDB) (string, string) {
			return d.build(t, t0), uuid.NewString()
		}, store.ErrWorkerNotFound},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := newTestDB(t)
			b, w := tc.setup(t, d)
			before := d.dump(t)
			err := d.s.AssignBuild(t.Context(), b, w, t0+10_000)
			require.ErrorIs(t, err, tc.wantErr)
			requireNoDriverError(t, err)
			require.Equal(t, before, d.dump(t), "a refused assignment writes nothing")
		})
	}

	t.Run("MissingBuild/WritesNothing", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		w := d.worker(t, "w", t0)
		before := d.dump(t)
		err := d.s.AssignBuild(t.Context(), uuid.NewString(), w, t0+10)
		require.Error(t, err)
		requireNoDriverError(t, err)
		require.Equal(t, before, d.dump(t))
	})

	t.Run("Race/OneWinner", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		b := d.build(t, t0)
		const n = 8
		workers := make([]string, n)
		for i := range workers {
			workers[i] = d.worker(t, "w", t0)
		}
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { errs[i] = d.s.AssignBuild(t.Context(), b, workers[i], t0+100) })
		}
		wg.Wait()
		winners := 0
		for i, err := range errs {
			if err == nil {
				winners++
				require.Equal(t, &workers[i], d.get(t, b).WorkerID)
				continue
			}
			require.ErrorIs(t, err, store.ErrConflict)
		}
		require.Equal(t, 1, winners, "no build goes to two workers")
		require.Equal(t, 1, d.count(t, `SELECT COUNT(*) FROM workers WHERE status = 'building'`))
		require.Equal(t, 1, d.count(t, `SELECT COUNT(*) FROM build_logs WHERE message LIKE 'Assigned to worker%'`))
	})
}

func TestCancelBuild(t *testing.T) {
	t.Parallel()

	t.Run("Pending/OK", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		b := d.build(t, t0)
		before, err := d.s.CancelBuild(t.Context(), b, t0+100)
		require.NoError(t, err)
		require.Equal(t, domain.StatusPending, before.Status, "the build as it was before")

		got := d.get(t, b)
		require.Equal(t, domain.StatusFailed, got.Status)
		require.True(t, got.Cancelled)
		require.Equal(t, ptr("Build cancelled by user"), got.ErrorMessage)
		require.Equal(t, ptr(t0+100), got.CompletedAt)
		require.Nil(t, got.WorkerID)
		require.Equal(t, []string{"info: Build submitted", "info: Build cancelled"}, d.messages(t, b))

		pending, err := d.s.PendingBuilds(t.Context())
		require.NoError(t, err)
		require.Empty(t, pending, "a cancelled build leaves the queue")
	})

	for _, building := range []bool{false, true} {
		name := "Assigned/OK"
		if building {
			name = "Building/OK"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			d := newTestDB(t)
			b, w := d.running(t, "w", t0)
			if building {
				require.NoError(t, d.s.TouchBuild(t.Context(), b, w, t0+1500))
			}
			workerBefore := d.getWorker(t, w)

			before, err := d.s.CancelBuild(t.Context(), b, t0+2000)
			require.NoError(t, err)
			require.True(t, before.Running())
			require.Equal(t, &w, before.WorkerID)

			got := d.get(t, b)
			require.Equal(t, domain.StatusFailed, got.Status)
			require.True(t, got.Cancelled)
			require.Equal(t, &w, got.WorkerID, "worker_id is kept")
			require.Equal(t, ptr(t0+1000), got.StartedAt)
			require.Equal(t, ptr(t0+2000), got.CompletedAt)
			require.False(t, got.AssignedTo(w), "the worker is no longer the assignee")

			wk := d.getWorker(t, w)
			require.Equal(t, domain.WorkerIdle, wk.Status)
			require.Equal(t, workerBefore.BuildsCompleted, wk.BuildsCompleted)
			require.Equal(t, workerBefore.BuildsFailed, wk.BuildsFailed)
			require.Zero(t, wk.BuildsCompleted+wk.BuildsFailed, "counters unchanged")

			msgs := d.messages(t, b)
			require.Equal(t, "info: Build cancelled", msgs[len(msgs)-1])

			// The former assignee's later writes are refused.
			require.ErrorIs(t, d.s.TouchBuild(t.Context(), b, w, t0+3000), store.ErrNotAssignee)
			require.ErrorIs(t, d.s.FinishBuild(t.Context(), store.Finish{BuildID: b, WorkerID: w, Now: t0 + 3000}),
				store.ErrNotAssignee)
			// The worker may take new work.
			require.NoError(t, d.s.AssignBuild(t.Context(), d.build(t, t0+4000), w, t0+5000))
		})
	}

	t.Run("OfflineWorkerStaysOffline", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		b, w := d.running(t, "w", t0)
		require.NoError(t, d.s.SetWorkerStatus(t.Context(), w, domain.WorkerOffline, t0))
		_, err := d.s.CancelBuild(t.Context(), b, t0+2000)
		require.NoError(t, err)
		require.Equal(t, domain.WorkerOffline, d.getWorker(t, w).Status)
	})

	refusals := []struct {
		name    string
		setup   func(t *testing.T, d *testDB) string
		wantErr error
	}{
		{"Completed/Conflict", func(t *testing.T, d *testDB) string {
			b, w := d.running(t, "w", t0)
			require.NoError(t, d.s.FinishBuild(t.Context(), store.Finish{BuildID: b, WorkerID: w, Success: true,
				ResultPath: "results/" + b + ".ipa", Now: t0 + 3000}))
			return b
		}, store.ErrConflict},
		{"Failed/Conflict", func(t *testing.T, d *testDB) string {
			b, w := d.running(t, "w", t0)
			require.NoError(t, d.s.FinishBuild(t.Context(), store.Finish{BuildID: b, WorkerID: w, Now: t0 + 3000}))
			return b
		}, store.ErrConflict},
		{"AlreadyCancelled/Conflict", func(t *testing.T, d *testDB) string {
			b := d.build(t, t0)
			_, err := d.s.CancelBuild(t.Context(), b, t0+1)
			require.NoError(t, err)
			return b
		}, store.ErrConflict},
		{"NotFound", func(t *testing.T, d *testDB) string {
			d.build(t, t0)
			return uuid.NewString()
		}, store.ErrNotFound},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := newTestDB(t)
			b := tc.setup(t, d)
			before := d.dump(t)
			_, err := d.s.CancelBuild(t.Context(), b, t0+10_000)
			require.ErrorIs(t, err, tc.wantErr)
			require.Equal(t, before, d.dump(t))
		})
	}
}

func TestFinishBuild(t *testing.T) {
	t.Parallel()

	t.Run("Success/OK", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		b, w := d.running(t, "w", t0)
		// A leftover message must not survive completion (§9).
		d.exec(t, `UPDATE builds SET error_message = 'stale' WHERE id = ?`, b)

		require.NoError(t, d.s.FinishBuild(t.Context(), store.Finish{
			BuildID: b, WorkerID: w, Success: true, ResultPath: "results/" + b + ".ipa",
			ResultSize: 1234, ResultSHA256: "abcdef", Now: t0 + 9000,
		}))
		got := d.get(t, b)
		require.Equal(t, domain.StatusCompleted, got.Status)
		require.Equal(t, ptr(t0+9000), got.CompletedAt)
		require.Nil(t, got.ErrorMessage)
		require.Equal(t, ptr("results/"+b+".ipa"), got.ResultPath)
		require.Equal(t, ptr(int64(1234)), got.ResultSize)
		require.Equal(t, ptr("abcdef"), got.ResultSHA256)
		require.Equal(t, &w, got.WorkerID, "the worker at finish is kept")
		require.False(t, got.Cancelled)

		wk := d.getWorker(t, w)
		require.Equal(t, domain.WorkerIdle, wk.Status)
		require.Equal(t, 1, wk.BuildsCompleted)
		require.Zero(t, wk.BuildsFailed)
		require.Equal(t, t0+9000, wk.LastSeenAt)
		msgs := d.messages(t, b)
		require.Equal(t, "info: Build completed successfully", msgs[len(msgs)-1])
	})

	failures := []struct {
		name, message, want string
	}{
		{"Failure/DefaultMessage", "", "Build failed"},
		{"Failure/GivenMessage", "xcodebuild exited with 65", "xcodebuild exited with 65"},
	}
	for _, tc := range failures {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := newTestDB(t)
			b, w := d.running(t, "w", t0)
			require.NoError(t, d.s.TouchBuild(t.Context(), b, w, t0+2000))
			require.NoError(t, d.s.FinishBuild(t.Context(), store.Finish{
				BuildID: b, WorkerID: w, ErrorMessage: tc.message, ResultPath: "ignored", Now: t0 + 9000,
			}))
			got := d.get(t, b)
			require.Equal(t, domain.StatusFailed, got.Status)
			require.Equal(t, ptr(tc.want), got.ErrorMessage)
			require.Equal(t, ptr(t0+9000), got.CompletedAt)
			require.Nil(t, got.ResultPath, "a failure stores no result")
			require.False(t, got.Cancelled)

			wk := d.getWorker(t, w)
			require.Equal(t, domain.WorkerIdle, wk.Status)
			require.Zero(t, wk.BuildsCompleted)
			require.Equal(t, 1, wk.BuildsFailed)
			last := d.logs(t, b)[len(d.logs(t, b))-1]
			require.Equal(t, domain.LogEntry{Seq: last.Seq, Timestamp: t0 + 9000, Level: domain.LevelError,
				Message: "Build failed: " + tc.want}, last)
		})
	}

	t.Run("SecondFinish/NotAssignee", func(t *testing.T) {
		t.Parallel()
		for _, first := range []bool{true, false} {
			d := newTestDB(t)
			b, w := d.running(t, "w", t0)
			require.NoError(t, d.s.FinishBuild(t.Context(), store.Finish{BuildID: b, WorkerID: w, Success: first,
				ResultPath: "results/" + b + ".ipa", Now: t0 + 5000}))
			before := d.dump(t)
			for _, second := range []bool{true, false} {
				err := d.s.FinishBuild(t.Context(), store.Finish{BuildID: b, WorkerID: w, Success: second,
					ResultPath: "results/" + b + ".ipa", Now: t0 + 6000})
				require.ErrorIs(t, err, store.ErrNotAssignee)
			}
			require.Equal(t, before, d.dump(t))
			wk := d.getWorker(t, w)
			require.Equal(t, 1, wk.BuildsCompleted+wk.BuildsFailed, "counters move exactly once")
		}
	})

	refusals := []struct {
		name    string
		setup   func(t *testing.T, d *testDB) (buildID, workerID string)
		wantErr error
	}{
		{"OtherWorker/NotAssignee", func(t *testing.T, d *testDB) (string, string) {
			b, _ := d.running(t, "owner", t0)
			return b, d.worker(t, "intruder", t0)
		}, store.ErrNotAssignee},
		{"UnknownWorker/NotAssignee", func(t *testing.T, d *testDB) (string, string) {
			b, _ := d.running(t, "owner", t0)
			return b, uuid.NewString()
		}, store.ErrNotAssignee},
		{"Pending/NotAssignee", func(t *testing.T, d *testDB) (string, string) {
			return d.build(t, t0), d.worker(t, "w", t0)
		}, store.ErrNotAssignee},
		{"Cancelled/NotAssignee", func(t *testing.T, d *testDB) (string, string) {
			b, w := d.running(t, "w", t0)
			_, err := d.s.CancelBuild(t.Context(), b, t0+2000)
			require.NoError(t, err)
			return b, w
		}, store.ErrNotAssignee},
		{"TimedOut/NotAssignee", func(t *testing.T, d *testDB) (string, string) {
			b, w := d.running(t, "w", t0)
			out, err := d.s.TimeoutBuild(t.Context(), b, w, t0+5000, t0+5000, 3)
			require.NoError(t, err)
			require.Equal(t, domain.TimeoutRequeued, out)
			return b, w
		}, store.ErrNotAssignee},
		{"NotFound", func(t *testing.T, d *testDB) (string, string) {
			return uuid.NewString(), d.worker(t, "w", t0)
		}, store.ErrNotFound},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := newTestDB(t)
			b, w := tc.setup(t, d)
			before := d.dump(t)
			for _, success := range []bool{true, false} {
				err := d.s.FinishBuild(t.Context(), store.Finish{BuildID: b, WorkerID: w, Success: success,
					ResultPath: "results/" + b + ".ipa", Now: t0 + 10_000})
				require.ErrorIs(t, err, tc.wantErr)
			}
			require.Equal(t, before, d.dump(t))
		})
	}
}

func TestTimeoutBuild(t *testing.T) {
	t.Parallel()

	t.Run("RequeueThenFail", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		b := d.build(t, t0)
		w := d.worker(t, "mac-1", t0)
		const maxAttempts = 3
		now := t0
		for n := 1; n <= maxAttempts; n++ {
			now += 1000
			require.NoError(t, d.s.AssignBuild(t.Context(), b, w, now))
			require.NoError(t, d.s.Heartbeat(t.Context(), b, w, ptr(10.0), now+1))
			now += 400_000
			out, err := d.s.TimeoutBuild(t.Context(), b, w, now-300_000, now, maxAttempts)
			require.NoError(t, err)
			got := d.get(t, b)
			require.Equal(t, n, got.Attempts)
			require.Nil(t, got.WorkerID)
			require.Nil(t, got.LastActivityAt)
			require.Equal(t, domain.WorkerIdle, d.getWorker(t, w).Status)
			last := d.logs(t, b)[len(d.logs(t, b))-1]
			require.Equal(t, now, last.Timestamp)

			if n < maxAttempts {
				require.Equal(t, domain.TimeoutRequeued, out)
				require.Equal(t, domain.StatusPending, got.Status)
				require.Nil(t, got.StartedAt)
				require.Nil(t, got.Progress)
				require.Nil(t, got.ErrorMessage)
				require.Nil(t, got.CompletedAt)
				require.Equal(t, domain.LevelWarn, last.Level)
				require.Equal(t, fmt.Sprintf(
					"Build timeout - worker stopped responding; requeued (attempt %d of 3)", n), last.Message)
				continue
			}
			require.Equal(t, domain.TimeoutFailed, out)
			require.Equal(t, domain.StatusFailed, got.Status)
			require.Equal(t, ptr("Build timeout - worker stopped responding"), got.ErrorMessage)
			require.Equal(t, ptr(now), got.CompletedAt)
			require.False(t, got.Cancelled)
			require.Equal(t, domain.LevelError, last.Level)
			require.Contains(t, last.Message, "mac-1", "the error log names the worker")
		}
		wk := d.getWorker(t, w)
		require.Zero(t, wk.BuildsCompleted+wk.BuildsFailed, "a timeout moves no counter")

		pending, err := d.s.PendingBuilds(t.Context())
		require.NoError(t, err)
		require.Empty(t, pending)
		require.ErrorIs(t, d.s.AssignBuild(t.Context(), b, w, now+1), store.ErrConflict, "a failed build is never handed out")
	})

	t.Run("MaxAttemptsOne/Failed", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		b, w := d.running(t, "w", t0)
		out, err := d.s.TimeoutBuild(t.Context(), b, w, t0+1001, t0+2000, 1)
		require.NoError(t, err)
		require.Equal(t, domain.TimeoutFailed, out)
		require.Equal(t, 1, d.get(t, b).Attempts)
	})

	t.Run("WorkerRowGone/Requeued", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		b, w := d.running(t, "w", t0)
		d.exec(t, `DELETE FROM workers WHERE id = ?`, w)
		out, err := d.s.TimeoutBuild(t.Context(), b, w, t0+1001, t0+2000, 3)
		require.NoError(t, err)
		require.Equal(t, domain.TimeoutRequeued, out)
		require.Equal(t, domain.StatusPending, d.get(t, b).Status)
	})

	none := []struct {
		name  string
		setup func(t *testing.T, d *testDB) (buildID, workerID string)
	}{
		{"LivenessAtCutoff", func(t *testing.T, d *testDB) (string, string) {
			b, w := d.running(t, "w", t0) // liveness t0+1000
			require.NoError(t, d.s.TouchBuild(t.Context(), b, w, t0+5000))
			return b, w
		}},
		{"LivenessNewerThanCutoff", func(t *testing.T, d *testDB) (string, string) {
			b, w := d.running(t, "w", t0)
			require.NoError(t, d.s.TouchBuild(t.Context(), b, w, t0+6000))
			return b, w
		}},
		{"OtherWorkerHoldsIt", func(t *testing.T, d *testDB) (string, string) {
			b, _ := d.running(t, "holder", t0)
			return b, d.worker(t, "other", t0)
		}},
		{"Pending", func(t *testing.T, d *testDB) (string, string) {
			return d.build(t, t0), d.worker(t, "w", t0)
		}},
		{"Finished", func(t *testing.T, d *testDB) (string, string) {
			b, w := d.running(t, "w", t0)
			require.NoError(t, d.s.FinishBuild(t.Context(), store.Finish{BuildID: b, WorkerID: w, Now: t0 + 2000}))
			return b, w
		}},
	}
	for _, tc := range none {
		t.Run(tc.name+"/None", func(t *testing.T) {
			t.Parallel()
			d := newTestDB(t)
			b, w := tc.setup(t, d)
			before := d.dump(t)
			out, err := d.s.TimeoutBuild(t.Context(), b, w, t0+5000, t0+400_000, 3)
			require.NoError(t, err)
			require.Equal(t, domain.TimeoutNone, out)
			require.Equal(t, before, d.dump(t))
		})
	}

	t.Run("NotFound", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		out, err := d.s.TimeoutBuild(t.Context(), uuid.NewString(), d.worker(t, "w", t0), t0, t0, 3)
		require.ErrorIs(t, err, store.ErrNotFound)
		require.Equal(t, domain.TimeoutNone, out)
	})
}

func TestTouchBuild(t *testing.T) {
	t.Parallel()

	t.Run("OK", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		b, w := d.running(t, "w", t0)
		logsBefore := d.logs(t, b)
		require.NoError(t, d.s.TouchBuild(t.Context(), b, w, t0+5000))
		got := d.get(t, b)
		require.Equal(t, domain.StatusBuilding, got.Status)
		require.Equal(t, ptr(t0+5000), got.LastActivityAt)
		require.Equal(t, ptr(t0+1000), got.StartedAt, "the start time stays")
		require.Equal(t, logsBefore, d.logs(t, b), "a touch logs nothing")

		// A late, older signal never lowers liveness, and building stays building.
		require.NoError(t, d.s.TouchBuild(t.Context(), b, w, t0+3000))
		got = d.get(t, b)
		require.Equal(t, domain.StatusBuilding, got.Status)
		require.Equal(t, ptr(t0+5000), got.LastActivityAt)
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
		{"Pending/NotAssignee", func(t *testing.T, d *testDB) (string, string) {
			return d.build(t, t0), d.worker(t, "w", t0)
		}, store.ErrNotAssignee},
		{"EmptyWorker/NotAssignee", func(t *testing.T, d *testDB) (string, string) {
			b, _ := d.running(t, "owner", t0)
			return b, ""
		}, store.ErrNotAssignee},
		{"Completed/NotAssignee", func(t *testing.T, d *testDB) (string, string) {
			b, w := d.running(t, "w", t0)
			require.NoError(t, d.s.FinishBuild(t.Context(), store.Finish{BuildID: b, WorkerID: w, Success: true,
				ResultPath: "results/" + b + ".ipa", Now: t0 + 2000}))
			return b, w
		}, store.ErrNotAssignee},
		{"NotFound", func(t *testing.T, d *testDB) (string, string) {
			return uuid.NewString(), d.worker(t, "w", t0)
		}, store.ErrNotFound},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := newTestDB(t)
			b, w := tc.setup(t, d)
			before := d.dump(t)
			require.ErrorIs(t, d.s.TouchBuild(t.Context(), b, w, t0+50_000), tc.wantErr)
			require.ErrorIs(t, d.s.Heartbeat(t.Context(), b, w, ptr(42.0), t0+50_000), tc.wantErr)
			require.ErrorIs(t, d.s.RecordTelemetry(t.Context(), b, w, t0+50_000,
				&store.LogInput{Level: domain.LevelInfo, Message: "[VM] Monitor started"},
				&domain.CPUSnapshot{CPUPercent: 10, MemoryMB: 10}), tc.wantErr)
			require.Equal(t, before, d.dump(t), "a refused signal writes nothing")
		})
	}
}

func TestHeartbeat(t *testing.T) {
	t.Parallel()
	d := newTestDB(t)
	b, w := d.running(t, "w", t0)
	base := len(d.logs(t, b))

	steps := []struct {
		progress *float64
		now      int64
		wantLog  string // "" means no new line
	}{
		{nil, t0 + 2000, ""},
		{ptr(50.0), t0 + 3000, "Build progress: 50%"},
		{ptr(50.0), t0 + 4000, ""},
		{nil, t0 + 5000, ""},
		{ptr(12.5), t0 + 6000, "Build progress: 12.5%"},
		{ptr(100.0), t0 + 7000, "Build progress: 100%"},
		{ptr(0.0), t0 + 8000, "Build progress: 0%"},
	}
	want := d.logs(t, b)
	for _, st := range steps {
		require.NoError(t, d.s.Heartbeat(t.Context(), b, w, st.progress, st.now))
		got := d.get(t, b)
		require.Equal(t, domain.StatusBuilding, got.Status)
		require.Equal(t, ptr(st.now), got.LastActivityAt)
		if st.progress != nil {
			require.Equal(t, st.progress, got.Progress)
		}
		if st.wantLog != "" {
			want = append(want, domain.LogEntry{Seq: int64(len(want) + 1), Timestamp: st.now,
				Level: domain.LevelInfo, Message: st.wantLog})
		}
		require.Equal(t, want, d.logs(t, b))
	}
	require.Len(t, d.logs(t, b), base+4)
}

func TestRecordTelemetry(t *testing.T) {
	t.Parallel()

	t.Run("LineAndSnapshot/OK", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		b, w := d.running(t, "w", t0)
		require.NoError(t, d.s.RecordTelemetry(t.Context(), b, w, t0+3000,
			&store.LogInput{Level: domain.LevelInfo, Message: "[VM] Stage: build | CPU: 80%"},
			&domain.CPUSnapshot{CPUPercent: 87.5, MemoryMB: 2048}))
		got := d.get(t, b)
		require.Equal(t, domain.StatusBuilding, got.Status)
		require.Equal(t, ptr(t0+3000), got.LastActivityAt)
		msgs := d.messages(t, b)
		require.Equal(t, "info: [VM] Stage: build | CPU: 80%", msgs[len(msgs)-1])

		var (
			sb, sw     string
			ts         int64
			cpu, memMB float64
		)
		require.NoError(t, d.raw.QueryRowContext(t.Context(),
			`SELECT build_id, worker_id, timestamp, cpu_percent, memory_mb FROM cpu_snapshots`).
			Scan(&sb, &sw, &ts, &cpu, &memMB))
		require.Equal(t, []any{b, w, t0 + 3000, 87.5, 2048.0}, []any{sb, sw, ts, cpu, memMB})
	})

	t.Run("Stage/KeptUntilTheNextAssignment", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		b, w := d.running(t, "w", t0)
		require.NoError(t, d.s.RecordTelemetry(t.Context(), b, w, t0+3000,
			&store.LogInput{Level: domain.LevelInfo, Message: "[VM] Stage: archive", Stage: "archive"}, nil))
		require.Equal(t, "archive", d.get(t, b).Stage)
		out, err := d.s.TimeoutBuild(t.Context(), b, w, t0+5000, t0+5000, 3)
		require.NoError(t, err)
		require.Equal(t, domain.TimeoutRequeued, out)
		require.Equal(t, "archive", d.get(t, b).Stage, "shown until a worker takes it again")
		require.NoError(t, d.s.AssignBuild(t.Context(), b, w, t0+6000))
		require.Empty(t, d.get(t, b).Stage)
	})

	t.Run("SnapshotOnly/NoLogLine", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		b, w := d.running(t, "w", t0)
		logs := d.logs(t, b)
		require.NoError(t, d.s.RecordTelemetry(t.Context(), b, w, t0+3000, nil,
			&domain.CPUSnapshot{CPUPercent: 10, MemoryMB: 1}))
		require.Equal(t, logs, d.logs(t, b))
		require.Equal(t, 1, d.count(t, `SELECT COUNT(*) FROM cpu_snapshots WHERE build_id = ?`, b))
	})

	t.Run("Nothing/LivenessOnly", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		b, w := d.running(t, "w", t0)
		logs := d.logs(t, b)
		require.NoError(t, d.s.RecordTelemetry(t.Context(), b, w, t0+3000, nil, nil))
		require.Equal(t, logs, d.logs(t, b))
		require.Zero(t, d.count(t, `SELECT COUNT(*) FROM cpu_snapshots`))
		require.Equal(t, ptr(t0+3000), d.get(t, b).LastActivityAt)
		require.Equal(t, domain.StatusBuilding, d.get(t, b).Status)
	})

	t.Run("BadLevel/WritesNothing", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		b, w := d.running(t, "w", t0)
		before := d.dump(t)
		err := d.s.RecordTelemetry(t.Context(), b, w, t0+3000,
			&store.LogInput{Level: "debug", Message: "x"}, &domain.CPUSnapshot{CPUPercent: 1})
		require.ErrorIs(t, err, store.ErrInternal)
		requireNoDriverError(t, err)
		require.Equal(t, before, d.dump(t), "one transaction: the touch is rolled back too")
	})
}

func TestRequeueOnUnregister(t *testing.T) {
	t.Parallel()

	t.Run("HoldsBuild/Requeued", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		b, w := d.running(t, "mac-2", t0)
		require.NoError(t, d.s.Heartbeat(t.Context(), b, w, ptr(30.0), t0+2000))
		d.exec(t, `UPDATE builds SET attempts = 1 WHERE id = ?`, b)

		got, err := d.s.RequeueOnUnregister(t.Context(), w, t0+5000)
		require.NoError(t, err)
		require.Equal(t, b, got)

		bl := d.get(t, b)
		require.Equal(t, domain.StatusPending, bl.Status)
		require.Equal(t, 1, bl.Attempts, "attempts unchanged")
		require.Nil(t, bl.WorkerID)
		require.Nil(t, bl.StartedAt)
		require.Nil(t, bl.LastActivityAt)
		require.Nil(t, bl.Progress)
		last := d.logs(t, b)[len(d.logs(t, b))-1]
		require.Equal(t, domain.LogEntry{Seq: last.Seq, Timestamp: t0 + 5000, Level: domain.LevelWarn,
			Message: "Build requeued: worker mac-2 unregistered"}, last)

		wk := d.getWorker(t, w)
		require.Equal(t, domain.WorkerOffline, wk.Status)
		require.Zero(t, wk.BuildsCompleted+wk.BuildsFailed)
		pending, err := d.s.PendingBuilds(t.Context())
		require.NoError(t, err)
		require.Equal(t, []string{b}, buildIDs(pending))
	})

	t.Run("Idle/NothingRequeued", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		pending := d.build(t, t0)
		w := d.worker(t, "w", t0)
		logs := d.logs(t, pending)
		got, err := d.s.RequeueOnUnregister(t.Context(), w, t0+5000)
		require.NoError(t, err)
		require.Empty(t, got)
		require.Equal(t, domain.WorkerOffline, d.getWorker(t, w).Status)
		require.Equal(t, logs, d.logs(t, pending))
	})

	t.Run("FinishedBuildUntouched", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		b, w := d.running(t, "w", t0)
		require.NoError(t, d.s.FinishBuild(t.Context(), store.Finish{BuildID: b, WorkerID: w, Success: true,
			ResultPath: "results/" + b + ".ipa", Now: t0 + 2000}))
		got, err := d.s.RequeueOnUnregister(t.Context(), w, t0+5000)
		require.NoError(t, err)
		require.Empty(t, got)
		require.Equal(t, domain.StatusCompleted, d.get(t, b).Status)
	})

	t.Run("WorkerNotFound", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		d.running(t, "w", t0)
		before := d.dump(t)
		_, err := d.s.RequeueOnUnregister(t.Context(), uuid.NewString(), t0+5000)
		require.ErrorIs(t, err, store.ErrWorkerNotFound)
		require.Equal(t, before, d.dump(t))
	})
}

func TestRecover(t *testing.T) {
	t.Parallel()
	d := newTestDB(t)

	pending := d.build(t, t0)
	kept, keeper := d.running(t, "keeper", t0+10) // liveness t0+1010
	require.NoError(t, d.s.TouchBuild(t.Context(), kept, keeper, t0+2000))
	orphan, gone := d.running(t, "gone", t0+20)
	require.NoError(t, d.s.Heartbeat(t.Context(), orphan, gone, ptr(40.0), t0+2000))
	d.exec(t, `DELETE FROM workers WHERE id = ?`, gone)

	// Worker states that disagree with the builds they hold.
	stale := d.worker(t, "stale-building", t0)
	require.NoError(t, d.s.SetWorkerStatus(t.Context(), stale, domain.WorkerBuilding, t0))
	wrongIdle, wrongIdleWorker := d.running(t, "wrong-idle", t0+30)
	require.NoError(t, d.s.SetWorkerStatus(t.Context(), wrongIdleWorker, domain.WorkerIdle, t0))
	offline, offlineWorker := d.running(t, "offline", t0+40)
	require.NoError(t, d.s.SetWorkerStatus(t.Context(), offlineWorker, domain.WorkerOffline, t0))
	pendingLogs := d.logs(t, pending)

	const now = t0 + 86_400_000 // a day of downtime
	requeued, err := d.s.Recover(t.Context(), now)
	require.NoError(t, err)
	require.Equal(t, []string{orphan}, requeued)

	t.Run("PendingStaysPending", func(t *testing.T) {
		got := d.get(t, pending)
		require.Equal(t, domain.StatusPending, got.Status)
		require.Equal(t, pendingLogs, d.logs(t, pending))
	})

	t.Run("RunningWithWorkerStaysAssigned", func(t *testing.T) {
		for _, b := range []struct {
			id, worker string
			status     domain.BuildStatus
		}{
			{kept, keeper, domain.StatusBuilding},
			{wrongIdle, wrongIdleWorker, domain.StatusAssigned},
			{offline, offlineWorker, domain.StatusAssigned},
		} {
			got := d.get(t, b.id)
			require.Equal(t, b.status, got.Status)
			require.Equal(t, &b.worker, got.WorkerID)
			require.Equal(t, ptr(now), got.LastActivityAt, "downtime never counts against a worker")
			require.NotNil(t, got.StartedAt)
		}
		expired, err := d.s.ExpiredBuilds(t.Context(), now)
		require.NoError(t, err)
		require.Empty(t, expired)
	})

	t.Run("WorkerGone/Requeued", func(t *testing.T) {
		got := d.get(t, orphan)
		require.Equal(t, domain.StatusPending, got.Status)
		require.Nil(t, got.WorkerID)
		require.Nil(t, got.StartedAt)
		require.Nil(t, got.LastActivityAt)
		require.Nil(t, got.Progress)
		require.Zero(t, got.Attempts)
		last := d.logs(t, orphan)[len(d.logs(t, orphan))-1]
		require.Equal(t, domain.LogEntry{Seq: last.Seq, Timestamp: now, Level: domain.LevelWarn,
			Message: "Build requeued: worker gone at restart"}, last)
		p, err := d.s.PendingBuilds(t.Context())
		require.NoError(t, err)
		require.Equal(t, []string{pending, orphan}, buildIDs(p), "submit order")
	})

	t.Run("WorkerStatesFixed", func(t *testing.T) {
		require.Equal(t, domain.WorkerBuilding, d.getWorker(t, keeper).Status)
		require.Equal(t, domain.WorkerIdle, d.getWorker(t, stale).Status)
		require.Equal(t, domain.WorkerBuilding, d.getWorker(t, wrongIdleWorker).Status)
		require.Equal(t, domain.WorkerOffline, d.getWorker(t, offlineWorker).Status,
			"an offline worker stays offline until seen")
	})

	t.Run("SecondRecover/NothingToDo", func(t *testing.T) {
		again, err := d.s.Recover(t.Context(), now)
		require.NoError(t, err)
		require.Empty(t, again)
	})
}

func TestRecoverEmpty(t *testing.T) {
	t.Parallel()
	d := newTestDB(t)
	got, err := d.s.Recover(t.Context(), t0)
	require.NoError(t, err)
	require.Empty(t, got)
}

func TestErrorsAreDistinct(t *testing.T) {
	t.Parallel()
	all := []error{store.ErrNotFound, store.ErrWorkerNotFound, store.ErrConflict, store.ErrNotAssignee,
		store.ErrTimeout, store.ErrInternal}
	for i, a := range all {
		for j, b := range all {
			require.Equal(t, i == j, errors.Is(a, b), "%v vs %v", a, b)
		}
	}
}

// TestAssignNext: the database picks the worker's build — the oldest
// pending one (submit time, then id) of its platforms — and assigns it as
// AssignBuild does, OTP included; nothing qualifies: ok false, nothing
// changed; a worker holding a build: ErrConflict; an unknown worker:
// ErrWorkerNotFound.
func TestAssignNext(t *testing.T) {
	t.Parallel()
	d := newTestDB(t)
	ios := []domain.Platform{domain.PlatformIOS}
	android := uuid.NewString()
	d.createBuild(t, android, t0, domain.PlatformAndroid)
	later := d.build(t, t0+20)
	first := d.build(t, t0+10)
	w := d.worker(t, "mac-mini-1", t0)

	otp, digest, err := domain.NewToken()
	require.NoError(t, err)
	c, ok, err := d.s.AssignNext(t.Context(), w, "", ios, t0+500, &store.TokenGrant{Digest: digest, ExpiresAt: t0 + 600_000})
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, store.BuildChange{ID: first, Kind: store.ChangeRunning, Assignment: 1, WorkerID: w, StartedAt: t0 + 500,
		Platform: domain.PlatformIOS, SubmittedAt: t0 + 10}, c, "the oldest iOS build; the older Android one is not the worker's")
	got := d.get(t, first)
	require.Equal(t, domain.StatusAssigned, got.Status)
	require.True(t, got.AssignedTo(w))
	require.Equal(t, domain.WorkerBuilding, d.getWorker(t, w).Status)
	require.Equal(t, []string{"info: Build submitted", "info: Assigned to worker mac-mini-1"}, d.messages(t, first))
	vm := store.TokenGrant{Digest: domain.Digest("vm-token"), ExpiresAt: t0 + 3_600_000}
	require.NoError(t, d.s.RedeemOTP(t.Context(), first, domain.Digest(otp), vm, t0+510), "the job's OTP is stored")

	_, _, err = d.s.AssignNext(t.Context(), w, "", ios, t0+600, nil)
	require.ErrorIs(t, err, store.ErrConflict, "the worker holds a build")
	_, _, err = d.s.AssignNext(t.Context(), uuid.NewString(), "", nil, t0+600, nil)
	require.ErrorIs(t, err, store.ErrWorkerNotFound)

	w2 := d.worker(t, "w2", t0)
	_, ok, err = d.s.AssignNext(t.Context(), w2, "", []domain.Platform{}, t0+700, nil)
	require.NoError(t, err)
	require.False(t, ok, "no platform: nothing")
	c, ok, err = d.s.AssignNext(t.Context(), w2, first, nil, t0+700, nil)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, android, c.ID, "the preferred build is no longer pending: the oldest of all (any platform)")
	newest := d.build(t, t0+30)
	w3 := d.worker(t, "w3", t0)
	c, ok, err = d.s.AssignNext(t.Context(), w3, newest, ios, t0+800, nil)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, newest, c.ID, "the preferred build, while pending")
	w5 := d.worker(t, "w5", t0)
	c, ok, err = d.s.AssignNext(t.Context(), w5, "", ios, t0+850, nil)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, later, c.ID)
	w4 := d.worker(t, "w4", t0)
	commits := d.s.Version()
	_, ok, err = d.s.AssignNext(t.Context(), w4, "", nil, t0+900, nil)
	require.NoError(t, err)
	require.False(t, ok, "nothing pending")
	require.Equal(t, commits, d.s.Version(), "rolled back: no commit to wait for")
	require.Equal(t, domain.WorkerIdle, d.getWorker(t, w4).Status, "nothing changed")
}
