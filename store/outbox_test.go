package store_test

import (
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

var receivers = []string{"http://127.0.0.1:1/a", "http://127.0.0.1:1/b"}

// outbox returns every outbox row, in row order (far in the future, all due).
func (d *testDB) outbox(t *testing.T) []store.Delivery {
	t.Helper()
	due, next, err := d.s.DueDeliveries(t.Context(), 1<<62, 1000, nil)
	require.NoError(t, err)
	require.Zero(t, next)
	return due
}

// statusFields keeps only what an outbox snapshot holds: the status object.
func statusFields(b domain.Build) domain.Build {
	return domain.Build{ID: b.ID, Platform: b.Platform, Status: b.Status, WorkerID: b.WorkerID,
		SubmittedAt: b.SubmittedAt, StartedAt: b.StartedAt, CompletedAt: b.CompletedAt, ErrorMessage: b.ErrorMessage}
}

// TestOutboxEvents checks that every change that ends or undoes a build's
// assignment writes its event, one row per receiver, with the build as the
// change left it.
func TestOutboxEvents(t *testing.T) {
	t.Parallel()
	const now = t0 + 60_000
	for _, tc := range []struct {
		name   string
		event  store.Event
		change func(t *testing.T, d *testDB) string // returns the build
	}{
		{"CancelPending", store.EventFailed, func(t *testing.T, d *testDB) string {
			b := d.build(t, t0)
			_, err := d.s.CancelBuild(t.Context(), b, now)
			require.NoError(t, err)
			return b
		}},
		{"CancelRunning", store.EventFailed, func(t *testing.T, d *testDB) string {
			b, _ := d.running(t, "w", t0)
			_, err := d.s.CancelBuild(t.Context(), b, now)
			require.NoError(t, err)
			return b
		}},
		{"Completed", store.EventCompleted, func(t *testing.T, d *testDB) string {
			b, w := d.running(t, "w", t0)
			require.NoError(t, d.s.FinishBuild(t.Context(), store.Finish{BuildID: b, WorkerID: w, Success: true,
				ResultPath: "results/" + b + ".ipa", Now: now}))
			return b
		}},
		{"Failed", store.EventFailed, func(t *testing.T, d *testDB) string {
			b, w := d.running(t, "w", t0)
			require.NoError(t, d.s.FinishBuild(t.Context(), store.Finish{BuildID: b, WorkerID: w,
				ErrorMessage: "xcodebuild exited 65", Now: now}))
			return b
		}},
		{"TimeoutRequeued", store.EventRequeued, func(t *testing.T, d *testDB) string {
			b, w := d.running(t, "w", t0)
			out, err := d.s.TimeoutBuild(t.Context(), b, w, now, now, 3)
			require.NoError(t, err)
			require.Equal(t, domain.TimeoutRequeued, out)
			return b
		}},
		{"TimeoutFailed", store.EventFailed, func(t *testing.T, d *testDB) string {
			b, w := d.running(t, "w", t0)
			out, err := d.s.TimeoutBuild(t.Context(), b, w, now, now, 1)
			require.NoError(t, err)
			require.Equal(t, domain.TimeoutFailed, out)
			return b
		}},
		{"AbandonRequeued", store.EventRequeued, func(t *testing.T, d *testDB) string {
			b, w := d.running(t, "w", t0)
			_, err := d.s.AbandonBuild(t.Context(), b, w, "disk full", now, 3)
			require.NoError(t, err)
			return b
		}},
		{"UnregisterRequeued", store.EventRequeued, func(t *testing.T, d *testDB) string {
			b, w := d.running(t, "w", t0)
			_, err := d.s.RequeueOnUnregister(t.Context(), w, now)
			require.NoError(t, err)
			return b
		}},
		{"RecoverRequeued", store.EventRequeued, func(t *testing.T, d *testDB) string {
			b, w := d.running(t, "w", t0)
			d.exec(t, `DELETE FROM workers WHERE id = ?`, w)
			got, err := d.s.Recover(t.Context(), now)
			require.NoError(t, err)
			require.Equal(t, []string{b}, got)
			return b
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			t.Run("Configured/OneRowPerURL", func(t *testing.T) {
				t.Parallel()
				d := newTestDB(t)
				_, err := d.s.SetWebhookURLs(t.Context(), receivers)
				require.NoError(t, err)
				b := tc.change(t, d)
				rows := d.outbox(t)
				require.Len(t, rows, len(receivers))
				want := statusFields(d.get(t, b))
				for i, r := range rows {
					require.Equal(t, receivers[i], r.URL)
					require.Equal(t, rows[0].DeliveryID, r.DeliveryID, "one event, one id on every URL")
					_, err := uuid.Parse(r.DeliveryID)
					require.NoError(t, err)
					require.Equal(t, tc.event, r.Event)
					require.Equal(t, now, r.CreatedAt)
					require.Equal(t, now, r.NextAttemptAt, "due at once")
					require.Zero(t, r.Attempts)
					require.Empty(t, r.LastError)
					require.Equal(t, want, r.Build, "the build as the change left it")
				}
			})
			t.Run("NotConfigured/NoRow", func(t *testing.T) {
				t.Parallel()
				d := newTestDB(t)
				tc.change(t, d)
				require.Zero(t, d.count(t, `SELECT COUNT(*) FROM outbox`))
			})
		})
	}
}

// TestOutboxSameTransaction shows that the event is part of the change's
// transaction: when its insert fails, the change is not made either.
func TestOutboxSameTransaction(t *testing.T) {
	t.Parallel()
	d := newTestDB(t)
	_, err := d.s.SetWebhookURLs(t.Context(), receivers[:1])
	require.NoError(t, err)
	pending := d.build(t, t0)
	running, w := d.running(t, "w", t0)
	if d.pg {
		d.exec(t, `CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE 'refused'; END $$`)
		d.exec(t, `CREATE TRIGGER outbox_refused BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION refuse()`)
	} else {
		d.exec(t, `CREATE TRIGGER outbox_refused BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'refused'); END`)
	}
	before := d.dump(t)

	_, err = d.s.CancelBuild(t.Context(), pending, t0+1000)
	require.ErrorIs(t, err, store.ErrInternal)
	err = d.s.FinishBuild(t.Context(), store.Finish{BuildID: running, WorkerID: w, Success: true,
		ResultPath: "results/x.ipa", Now: t0 + 1000})
	require.ErrorIs(t, err, store.ErrInternal)
	_, err = d.s.RequeueOnUnregister(t.Context(), w, t0+1000)
	require.ErrorIs(t, err, store.ErrInternal)
	require.Equal(t, before, d.dump(t), "no change without its event")
	require.Equal(t, domain.StatusPending, d.get(t, pending).Status)
	require.Equal(t, domain.StatusAssigned, d.get(t, running).Status)
}

// events writes n build.failed events (cancelled builds) at t0+i.
func (d *testDB) events(t *testing.T, n int) {
	t.Helper()
	for i := range n {
		_, err := d.s.CancelBuild(t.Context(), d.build(t, t0), t0+int64(i))
		require.NoError(t, err)
	}
}

func rowIDs(ds []store.Delivery) []int64 {
	out := []int64{}
	for _, d := range ds {
		out = append(out, d.ID)
	}
	return out
}

func TestDueDeliveries(t *testing.T) {
	t.Parallel()
	d := newTestDB(t)
	_, err := d.s.SetWebhookURLs(t.Context(), receivers[:1])
	require.NoError(t, err)
	d.events(t, 5) // rows due at t0 .. t0+4
	all := rowIDs(d.outbox(t))
	require.Len(t, all, 5)

	t.Run("EarliestFirstBounded", func(t *testing.T) {
		due, next, err := d.s.DueDeliveries(t.Context(), t0+10, 2, nil)
		require.NoError(t, err)
		require.Equal(t, all[:2], rowIDs(due))
		require.Equal(t, t0+2, next, "the earliest of the rest")
	})
	t.Run("NotYetDue", func(t *testing.T) {
		due, next, err := d.s.DueDeliveries(t.Context(), t0+1, 10, nil)
		require.NoError(t, err)
		require.Equal(t, all[:2], rowIDs(due))
		require.Equal(t, t0+2, next)
	})
	t.Run("SkipsInFlight", func(t *testing.T) {
		due, next, err := d.s.DueDeliveries(t.Context(), t0+10, 2, all[:3])
		require.NoError(t, err)
		require.Equal(t, all[3:], rowIDs(due))
		require.Zero(t, next, "nothing else waits")
	})
	t.Run("NoSlots/OnlyNext", func(t *testing.T) {
		due, next, err := d.s.DueDeliveries(t.Context(), t0+10, 0, all[:1])
		require.NoError(t, err)
		require.Empty(t, due)
		require.Equal(t, t0+1, next)
	})
}

func TestMarkDeliveredAndFailed(t *testing.T) {
	t.Parallel()
	d := newTestDB(t)
	_, err := d.s.SetWebhookURLs(t.Context(), receivers[:1])
	require.NoError(t, err)
	d.events(t, 2)
	rows := d.outbox(t)

	long := strings.Repeat("x", 5000)
	require.NoError(t, d.s.MarkFailed(t.Context(), rows[0].ID, t0+5000, long))
	require.NoError(t, d.s.MarkFailed(t.Context(), rows[0].ID, t0+9000, "HTTP 500"))
	require.NoError(t, d.s.MarkDelivered(t.Context(), rows[1].ID))
	require.NoError(t, d.s.MarkDelivered(t.Context(), rows[1].ID), "already gone is fine")
	require.NoError(t, d.s.MarkFailed(t.Context(), rows[1].ID, t0, "x"), "already gone is fine")

	left := d.outbox(t)
	require.Len(t, left, 1)
	require.Equal(t, rows[0].ID, left[0].ID)
	require.Equal(t, 2, left[0].Attempts)
	require.Equal(t, t0+9000, left[0].NextAttemptAt)
	require.Equal(t, "HTTP 500", left[0].LastError)

	require.NoError(t, d.s.MarkFailed(t.Context(), rows[0].ID, t0+9000, long))
	require.LessOrEqual(t, len(d.outbox(t)[0].LastError), store.MaxDeliveryError+40, "cut, with its marker")
}

func TestGiveUpDeliveries(t *testing.T) {
	t.Parallel()
	d := newTestDB(t)
	_, err := d.s.SetWebhookURLs(t.Context(), receivers[:1])
	require.NoError(t, err)
	d.events(t, 4) // created t0 .. t0+3
	rows := d.outbox(t)
	const day = int64(24 * 3600 * 1000)
	now := t0 + day + 10
	cutoff := now - day
	require.NoError(t, d.s.MarkFailed(t.Context(), rows[0].ID, now, "HTTP 500"))   // tried, due: given up
	require.NoError(t, d.s.MarkFailed(t.Context(), rows[1].ID, now+1, "HTTP 500")) // tried, not yet due: kept
	require.NoError(t, d.s.MarkFailed(t.Context(), rows[2].ID, now, "HTTP 500"))   // tried, due, in flight: kept
	// rows[3]: never tried: kept, however old

	gone, err := d.s.GiveUpDeliveries(t.Context(), now, cutoff, []int64{rows[2].ID}, 100)
	require.NoError(t, err)
	require.Equal(t, []int64{rows[0].ID}, rowIDs(gone))
	require.Equal(t, "HTTP 500", gone[0].LastError)
	require.Equal(t, rows[0].DeliveryID, gone[0].DeliveryID)
	require.ElementsMatch(t, rowIDs(rows[1:]), rowIDs(d.outbox(t)))

	gone, err = d.s.GiveUpDeliveries(t.Context(), now, t0-1, nil, 100)
	require.NoError(t, err)
	require.Empty(t, gone, "younger than the cutoff")
}

func TestSetWebhookURLs(t *testing.T) {
	t.Parallel()
	d := newTestDB(t)
	dropped, err := d.s.SetWebhookURLs(t.Context(), append(receivers, receivers[0]))
	require.NoError(t, err)
	require.Zero(t, dropped)
	d.events(t, 1)
	require.Len(t, d.outbox(t), 2, "a repeated URL counts once")

	dropped, err = d.s.SetWebhookURLs(t.Context(), receivers[1:])
	require.NoError(t, err)
	require.Equal(t, int64(1), dropped, "the removed URL's row")
	left := d.outbox(t)
	require.Len(t, left, 1)
	require.Equal(t, receivers[1], left[0].URL)

	dropped, err = d.s.SetWebhookURLs(t.Context(), nil)
	require.NoError(t, err)
	require.Equal(t, int64(1), dropped)
	d.events(t, 1)
	require.Empty(t, d.outbox(t), "webhooks off: nothing written")
}
