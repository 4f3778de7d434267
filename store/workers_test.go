package store_test

import (
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

func TestRegisterWorker(t *testing.T) {
	t.Parallel()

	t.Run("New/OK", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		w, created, err := d.s.RegisterWorker(t.Context(), store.Registration{
			Name: "mac-mini", Capabilities: `{"platforms":["ios"],"xcode_version":"15.0"}`, Now: t0,
		})
		require.NoError(t, err)
		require.True(t, created)
		canon, ok := domain.ParseID(w.ID)
		require.True(t, ok)
		require.Equal(t, canon, w.ID, "a fresh canonical UUID")
		require.Equal(t, domain.Worker{
			ID: w.ID, Name: "mac-mini", Capabilities: `{"platforms":["ios"],"xcode_version":"15.0"}`,
			Status: domain.WorkerIdle, RegisteredAt: t0, LastSeenAt: t0,
		}, w)
		require.Equal(t, w, d.getWorker(t, w.ID))
	})

	unknownIDs := []struct{ name, id string }{
		{"UnknownUUID", uuid.NewString()},
		{"NotAUUID", "not-a-uuid"},
	}
	for _, tc := range unknownIDs {
		t.Run(tc.name+"/Created", func(t *testing.T) {
			t.Parallel()
			d := newTestDB(t)
			w, created, err := d.s.RegisterWorker(t.Context(), store.Registration{
				ID: tc.id, Name: "w", Capabilities: "{}", Now: t0,
			})
			require.NoError(t, err)
			require.True(t, created, "a stale id must not fail")
			require.NotEqual(t, tc.id, w.ID)
			_, err = d.s.GetWorker(t.Context(), tc.id)
			require.ErrorIs(t, err, store.ErrWorkerNotFound)
		})
	}

	t.Run("ReRegister/KeepsIdentity", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		first := d.worker(t, "old-name", t0)
		// Give it counters and take it offline.
		for _, success := range []bool{true, false, true} {
			b := d.build(t, t0)
			require.NoError(t, d.s.AssignBuild(t.Context(), b, first, t0+10))
			require.NoError(t, d.s.FinishBuild(t.Context(), store.Finish{BuildID: b, WorkerID: first,
				Success: success, ResultPath: "results/" + b + ".ipa", Now: t0 + 20}))
		}
		require.NoError(t, d.s.SetWorkerStatus(t.Context(), first, domain.WorkerOffline, t0+20))

		w, created, err := d.s.RegisterWorker(t.Context(), store.Registration{
			ID: first, Name: "new-name", Capabilities: `{"platforms":["android"]}`, Now: t0 + 5000,
		})
		require.NoError(t, err)
		require.False(t, created)
		require.Equal(t, domain.Worker{
			ID: first, Name: "new-name", Capabilities: `{"platforms":["android"]}`, Status: domain.WorkerIdle,
			RegisteredAt: t0, LastSeenAt: t0 + 5000, BuildsCompleted: 2, BuildsFailed: 1,
		}, w)
		require.Equal(t, w, d.getWorker(t, first))

		all, err := d.s.ListWorkers(t.Context())
		require.NoError(t, err)
		require.Len(t, all, 1, "no new worker per restart")
	})

	t.Run("ReRegisterHoldingBuild/Building", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		b, w := d.running(t, "w", t0)
		require.NoError(t, d.s.SetWorkerStatus(t.Context(), w, domain.WorkerOffline, t0))
		got, created, err := d.s.RegisterWorker(t.Context(), store.Registration{
			ID: w, Name: "w", Capabilities: "{}", Now: t0 + 5000,
		})
		require.NoError(t, err)
		require.False(t, created)
		require.Equal(t, domain.WorkerBuilding, got.Status)
		require.True(t, d.get(t, b).AssignedTo(w), "the build stays with it")
	})

	t.Run("ReRegisterOlderTime/LastSeenKept", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		w := d.worker(t, "w", t0+9000)
		got, _, err := d.s.RegisterWorker(t.Context(), store.Registration{ID: w, Name: "w", Capabilities: "{}", Now: t0})
		require.NoError(t, err)
		require.Equal(t, t0+9000, got.LastSeenAt)
		require.Equal(t, t0+9000, got.RegisteredAt)
	})

	t.Run("TwoNewWorkers/DistinctIDs", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		require.NotEqual(t, d.worker(t, "same", t0), d.worker(t, "same", t0))
	})
}

func TestGetWorker(t *testing.T) {
	t.Parallel()
	d := newTestDB(t)
	w := d.worker(t, "w", t0)

	t.Run("OK", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, "w", d.getWorker(t, w).Name)
	})
	t.Run("NotFound", func(t *testing.T) {
		t.Parallel()
		_, err := d.s.GetWorker(t.Context(), uuid.NewString())
		require.ErrorIs(t, err, store.ErrWorkerNotFound)
		requireNoDriverError(t, err)
	})
}

func TestListWorkers(t *testing.T) {
	t.Parallel()

	t.Run("Empty", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		got, err := d.s.ListWorkers(t.Context())
		require.NoError(t, err)
		require.NotNil(t, got)
		require.Empty(t, got)
	})

	t.Run("ByNameThenID", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		c := d.worker(t, "charlie", t0)
		a1 := d.worker(t, "alpha", t0)
		b := d.worker(t, "bravo", t0)
		a2 := d.worker(t, "alpha", t0)
		if a2 < a1 {
			a1, a2 = a2, a1
		}
		got, err := d.s.ListWorkers(t.Context())
		require.NoError(t, err)
		ids := make([]string, 0, len(got))
		for _, w := range got {
			ids = append(ids, w.ID)
		}
		require.Equal(t, []string{a1, a2, b, c}, ids)
	})
}

func TestSetWorkerStatus(t *testing.T) {
	t.Parallel()

	for _, status := range []domain.WorkerStatus{domain.WorkerIdle, domain.WorkerBuilding, domain.WorkerOffline} {
		t.Run(string(status)+"/OK", func(t *testing.T) {
			t.Parallel()
			d := newTestDB(t)
			w := d.worker(t, "w", t0+100)
			require.NoError(t, d.s.SetWorkerStatus(t.Context(), w, status, t0+500))
			got := d.getWorker(t, w)
			require.Equal(t, status, got.Status)
			require.Equal(t, t0+500, got.LastSeenAt)

			require.NoError(t, d.s.SetWorkerStatus(t.Context(), w, status, t0))
			require.Equal(t, t0+500, d.getWorker(t, w).LastSeenAt, "last seen is never lowered")
		})
	}

	t.Run("NotFound", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		d.worker(t, "w", t0)
		before := d.dump(t)
		require.ErrorIs(t, d.s.SetWorkerStatus(t.Context(), uuid.NewString(), domain.WorkerIdle, t0),
			store.ErrWorkerNotFound)
		require.Equal(t, before, d.dump(t))
	})

	t.Run("InvalidStatus/Internal", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		w := d.worker(t, "w", t0)
		before := d.dump(t)
		err := d.s.SetWorkerStatus(t.Context(), w, "sleeping", t0+1)
		require.ErrorIs(t, err, store.ErrInternal)
		requireNoDriverError(t, err)
		require.Equal(t, before, d.dump(t))
	})
}

func TestSaveLastSeen(t *testing.T) {
	t.Parallel()
	d := newTestDB(t)
	a := d.worker(t, "a", t0+1000)
	b := d.worker(t, "b", t0+1000)
	c := d.worker(t, "c", t0+1000)

	require.NoError(t, d.s.SaveLastSeen(t.Context(), nil))
	require.NoError(t, d.s.SaveLastSeen(t.Context(), map[string]int64{}))
	require.NoError(t, d.s.SaveLastSeen(t.Context(), map[string]int64{
		a:                t0 + 5000, // raised
		b:                t0,        // older: never lowered
		uuid.NewString(): t0 + 9000, // unknown: ignored
	}))
	require.Equal(t, t0+5000, d.getWorker(t, a).LastSeenAt)
	require.Equal(t, t0+1000, d.getWorker(t, b).LastSeenAt)
	require.Equal(t, t0+1000, d.getWorker(t, c).LastSeenAt)
	all, err := d.s.ListWorkers(t.Context())
	require.NoError(t, err)
	require.Len(t, all, 3, "an unknown id creates nothing")
	for _, w := range all {
		require.Equal(t, domain.WorkerIdle, w.Status, "status is left alone")
	}
}

func TestDiagnostics(t *testing.T) {
	t.Parallel()
	d := newTestDB(t)
	w := d.worker(t, "w", t0)
	other := d.worker(t, "other", t0)

	reports := []domain.Diagnostic{
		{ID: id(1), WorkerID: w, Status: "healthy", RunAt: t0 + 100, DurationMS: 12, AutoFixed: false,
			Checks: `[{"name":"disk","status":"pass","message":"ok"}]`},
		{ID: id(2), WorkerID: w, Status: "critical", RunAt: t0 + 300, DurationMS: 34, AutoFixed: true,
			Checks: `[]`},
		{ID: id(3), WorkerID: w, Status: "warning", RunAt: t0 + 200, DurationMS: 56, AutoFixed: false,
			Checks: `[ {"name": "vm", "extra": [1, 2]} ]`},
		{ID: id(4), WorkerID: other, Status: "healthy", RunAt: t0 + 999, Checks: `[]`},
	}
	for _, r := range reports {
		require.NoError(t, d.s.AddDiagnostic(t.Context(), r))
	}

	t.Run("NewestFirst", func(t *testing.T) {
		t.Parallel()
		got, err := d.s.Diagnostics(t.Context(), w, 10)
		require.NoError(t, err)
		require.Equal(t, []domain.Diagnostic{reports[1], reports[2], reports[0]}, got, "fields round-trip verbatim")
	})

	t.Run("Limit", func(t *testing.T) {
		t.Parallel()
		got, err := d.s.Diagnostics(t.Context(), w, 1)
		require.NoError(t, err)
		require.Equal(t, []domain.Diagnostic{reports[1]}, got)
	})

	t.Run("NoReports/Empty", func(t *testing.T) {
		t.Parallel()
		lonely := d.worker(t, "lonely", t0)
		got, err := d.s.Diagnostics(t.Context(), lonely, 10)
		require.NoError(t, err)
		require.NotNil(t, got)
		require.Empty(t, got)
	})

	t.Run("Read/WorkerNotFound", func(t *testing.T) {
		t.Parallel()
		got, err := d.s.Diagnostics(t.Context(), uuid.NewString(), 10)
		require.ErrorIs(t, err, store.ErrWorkerNotFound)
		require.Nil(t, got)
	})

	t.Run("Add/WorkerNotFound", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		before := d.dump(t)
		err := d.s.AddDiagnostic(t.Context(), domain.Diagnostic{ID: uuid.NewString(), WorkerID: uuid.NewString(),
			Status: "healthy", RunAt: t0, Checks: "[]"})
		require.ErrorIs(t, err, store.ErrWorkerNotFound)
		require.Equal(t, before, d.dump(t))
	})

	t.Run("Add/InvalidStatus/Internal", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		wk := d.worker(t, "w", t0)
		before := d.dump(t)
		err := d.s.AddDiagnostic(t.Context(), domain.Diagnostic{ID: uuid.NewString(), WorkerID: wk,
			Status: "great", RunAt: t0, Checks: "[]"})
		require.ErrorIs(t, err, store.ErrInternal)
		requireNoDriverError(t, err)
		require.Equal(t, before, d.dump(t))
	})
}
