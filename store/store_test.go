package store_test

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	sqlite3 "github.com/mattn/go-sqlite3"
	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/internal/testkit"
	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

// t0 is an arbitrary fixed instant (2026-01-01T00:00:00Z) in epoch ms; tests
// drive time by hand from there.
const t0 = int64(1_767_225_600_000)

// testDB is a store on a real SQLite file of the test's temporary directory,
// plus a raw connection for looking behind the store's back.
// On PostgreSQL (testkit.Postgres) path is the URL of the test's schema.
type testDB struct {
	s    *store.Store
	path string
	raw  *sql.DB
	pg   bool
}

func newTestDB(t *testing.T, opts ...store.Option) *testDB {
	t.Helper()
	path := testkit.DB(t, t.TempDir())
	s, err := store.Open(t.Context(), path, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return &testDB{s: s, path: path, raw: testkit.OpenRaw(t, path), pg: testkit.Postgres()}
}

// q is a statement in SQLite's spelling as the raw connection's engine
// takes it.
func (d *testDB) q(query string) string { return testkit.Q(query) }

// id returns a fixed canonical UUID whose last digits are n, so that tests
// can control the id tie-break of orderings.
func id(n int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012d", n) }

func tokenHash(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

// createBuild inserts a pending build with the given id and submit time.
func (d *testDB) createBuild(t *testing.T, buildID string, submittedAt int64, platform domain.Platform) {
	t.Helper()
	require.NoError(t, d.s.CreateBuild(t.Context(), store.NewBuild{
		ID:          buildID,
		Platform:    platform,
		SubmittedAt: submittedAt,
		SourcePath:  "builds/" + buildID + ".zip",
		TokenHash:   tokenHash("token-" + buildID),
	}))
}

// build inserts a pending ios build with a fresh id and returns the id.
func (d *testDB) build(t *testing.T, submittedAt int64) string {
	t.Helper()
	b := uuid.NewString()
	d.createBuild(t, b, submittedAt, domain.PlatformIOS)
	return b
}

// worker registers a new worker and returns its id.
func (d *testDB) worker(t *testing.T, name string, now int64) string {
	t.Helper()
	w, created, err := d.s.RegisterWorker(t.Context(), store.Registration{
		Name: name, Capabilities: `{"platforms":["ios","android"]}`, Now: now,
	})
	require.NoError(t, err)
	require.True(t, created)
	return w.ID
}

// running creates a build submitted at submittedAt and a worker, and assigns
// the build to the worker at submittedAt+1000.
func (d *testDB) running(t *testing.T, name string, submittedAt int64) (buildID, workerID string) {
	t.Helper()
	buildID = d.build(t, submittedAt)
	workerID = d.worker(t, name, submittedAt)
	require.NoError(t, d.s.AssignBuild(t.Context(), buildID, workerID, submittedAt+1000))
	return buildID, workerID
}

func (d *testDB) get(t *testing.T, buildID string) domain.Build {
	t.Helper()
	b, err := d.s.GetBuild(t.Context(), buildID)
	require.NoError(t, err)
	return b
}

func (d *testDB) getWorker(t *testing.T, workerID string) domain.Worker {
	t.Helper()
	w, err := d.s.GetWorker(t.Context(), workerID)
	require.NoError(t, err)
	return w
}

func (d *testDB) logs(t *testing.T, buildID string) []domain.LogEntry {
	t.Helper()
	l, err := d.s.Logs(t.Context(), buildID)
	require.NoError(t, err)
	return l
}

// messages returns the build's log as "level: message" lines.
func (d *testDB) messages(t *testing.T, buildID string) []string {
	t.Helper()
	var out []string
	for _, e := range d.logs(t, buildID) {
		out = append(out, string(e.Level)+": "+e.Message)
	}
	return out
}

// exec changes the database behind the store's back (to build states the
// public API cannot reach, such as a vanished worker row).
func (d *testDB) exec(t *testing.T, query string, args ...any) {
	t.Helper()
	_, err := d.raw.ExecContext(t.Context(), d.q(query), args...)
	require.NoError(t, err)
}

func (d *testDB) count(t *testing.T, query string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, d.raw.QueryRowContext(t.Context(), d.q(query), args...).Scan(&n))
	return n
}

// dump renders every row of every table, so that a test can show that a
// refused operation wrote nothing.
func (d *testDB) dump(t *testing.T) string {
	t.Helper()
	var sb strings.Builder
	for _, table := range []string{"schema_migrations", "workers", "builds", "build_logs", "diagnostics", "cpu_snapshots"} {
		rows, err := d.raw.QueryContext(t.Context(), `SELECT * FROM `+table+` ORDER BY 1, 2`)
		require.NoError(t, err)
		cols, err := rows.Columns()
		require.NoError(t, err)
		fmt.Fprintf(&sb, "== %s %v\n", table, cols)
		for rows.Next() {
			fmt.Fprintf(&sb, "%v\n", rowValues(t, rows, len(cols)))
		}
		require.NoError(t, rows.Err())
		require.NoError(t, rows.Close())
	}
	return sb.String()
}

// rowValues scans the current row's n columns, bytes shown as hex.
func rowValues(t *testing.T, rows *sql.Rows, n int) []any {
	t.Helper()
	vals := make([]any, n)
	ptrs := make([]any, n)
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	require.NoError(t, rows.Scan(ptrs...))
	for i, v := range vals {
		if b, ok := v.([]byte); ok {
			vals[i] = fmt.Sprintf("%x", b)
		}
	}
	return vals
}

// requireNoDriverError checks that err carries none of the driver's types.
func requireNoDriverError(t *testing.T, err error) {
	t.Helper()
	var se sqlite3.Error
	require.False(t, errors.As(err, &se), "driver error escaped: %v", err)
	require.False(t, errors.Is(err, sql.ErrNoRows), "sql.ErrNoRows escaped: %v", err)
	require.False(t, errors.Is(err, sql.ErrConnDone), "sql.ErrConnDone escaped: %v", err)
}

func ptr[T any](v T) *T { return &v }

func TestOpen(t *testing.T) {
	t.Parallel()

	t.Run("MigrationsAppliedOnce", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "nested", "dir", "controller.db")
		s, err := store.Open(t.Context(), path)
		require.NoError(t, err)
		first, err := s.Migrations(t.Context())
		require.NoError(t, err)
		require.Equal(t, []string{"0001_init.sql", "0002_retry_root.sql", "0003_bounded_reads.sql", "0004_worker_generation_2.sql",
			"0005_webhook_outbox.sql", "0006_build_list_index.sql", "0007_build_app.sql", "0008_retention.sql", "0009_history_totals.sql"}, first)

		b := uuid.NewString()
		require.NoError(t, s.CreateBuild(t.Context(), store.NewBuild{
			ID: b, Platform: domain.PlatformAndroid, SubmittedAt: t0, SourcePath: "builds/" + b + ".zip",
			TokenHash: tokenHash("x"),
		}))
		require.NoError(t, s.Close())

		raw, err := sql.Open("sqlite3", "file:"+path)
		require.NoError(t, err)
		defer raw.Close()
		var appliedAt int64
		require.NoError(t, raw.QueryRowContext(t.Context(),
			`SELECT MAX(applied_at) FROM schema_migrations`).Scan(&appliedAt))

		for range 2 {
			s, err = store.Open(t.Context(), path)
			require.NoError(t, err)
			again, err := s.Migrations(t.Context())
			require.NoError(t, err)
			require.Equal(t, first, again)
			got, err := s.GetBuild(t.Context(), b)
			require.NoError(t, err, "data survives a reopen")
			require.Equal(t, domain.PlatformAndroid, got.Platform)
			require.NoError(t, s.Close())
		}

		var n int
		var appliedAgain int64
		require.NoError(t, raw.QueryRowContext(t.Context(),
			`SELECT COUNT(*), MAX(applied_at) FROM schema_migrations`).Scan(&n, &appliedAgain))
		require.Equal(t, len(first), n)
		require.Equal(t, appliedAt, appliedAgain, "a reopen does not re-apply a migration")
	})

	t.Run("DirectoryNotCreatable", func(t *testing.T) {
		t.Parallel()
		file := filepath.Join(t.TempDir(), "plain-file")
		require.NoError(t, os.WriteFile(file, []byte("x"), 0o600))
		_, err := store.Open(t.Context(), filepath.Join(file, "controller.db"))
		require.ErrorIs(t, err, store.ErrUnwritable)
		require.EqualError(t, err, "cannot create the database directory "+file+": not a directory "+
			"(create it writable for the controller's user, or choose another --db)")
	})

	t.Run("DirectoryNotWritable", func(t *testing.T) {
		t.Parallel()
		if os.Geteuid() == 0 {
			t.Skip("root writes in any directory")
		}
		dir := filepath.Join(t.TempDir(), "data")
		require.NoError(t, os.Mkdir(dir, 0o500))
		_, err := store.Open(t.Context(), filepath.Join(dir, "controller.db"))
		require.ErrorIs(t, err, store.ErrUnwritable)
		require.EqualError(t, err, "cannot write in the database directory "+dir+": permission denied (the controller "+
			"creates controller.db and its -wal and -shm files there: make the directory writable for the "+
			"controller's user, or choose another --db)")
		entries, err := os.ReadDir(dir)
		require.NoError(t, err)
		require.Empty(t, entries)
	})

	t.Run("ExpiredContext", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithDeadline(t.Context(), time.Now().Add(-time.Second))
		defer cancel()
		path := filepath.Join(t.TempDir(), "controller.db")
		_, err := store.Open(ctx, path)
		require.ErrorIs(t, err, store.ErrTimeout)
		requireNoDriverError(t, err)
		// Printed as it is at start-up: a sentence naming the file, no prefix.
		require.True(t, strings.HasPrefix(err.Error(), "cannot open the database "+path+": "), err.Error())
		require.NotContains(t, err.Error(), "store:")
	})

	t.Run("TinyMigrateTimeout", func(t *testing.T) {
		t.Parallel()
		// The migrations run under their own deadline, not the operation's:
		// an index on a large history takes longer than an operation may
		// (the upgrade to 0008 of a million builds took seconds).
		_, err := store.Open(t.Context(), filepath.Join(t.TempDir(), "controller.db"),
			store.WithMigrateTimeout(time.Nanosecond))
		require.ErrorIs(t, err, store.ErrTimeout)
		s, err := store.Open(t.Context(), filepath.Join(t.TempDir(), "controller.db"),
			store.WithOpTimeout(time.Nanosecond))
		require.NoError(t, err, "an operation deadline no migration could meet does not bind them")
		require.NoError(t, s.Close())
	})

	t.Run("GenerousOpTimeout", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t, store.WithOpTimeout(time.Minute))
		b := d.build(t, t0)
		require.Equal(t, domain.StatusPending, d.get(t, b).Status)
	})
}

// operation is one public store call made against a prepared database.
type operation struct {
	name string
	call func(ctx context.Context, d *testDB, f fixture) error
}

// fixture names the records a prepared database holds.
type fixture struct {
	pending, running, worker, idleWorker string
}

func prepare(t *testing.T, d *testDB) fixture {
	t.Helper()
	var f fixture
	f.pending = d.build(t, t0)
	f.running, f.worker = d.running(t, "busy", t0+10)
	f.idleWorker = d.worker(t, "idle", t0+20)
	require.NoError(t, d.s.AddDiagnostic(t.Context(), domain.Diagnostic{
		ID: uuid.NewString(), WorkerID: f.worker, Status: "healthy", RunAt: t0, Checks: "[]",
	}))
	return f
}

func allOperations() []operation {
	return []operation{
		{"CreateBuild", func(ctx context.Context, d *testDB, f fixture) error {
			b := uuid.NewString()
			return d.s.CreateBuild(ctx, store.NewBuild{ID: b, Platform: domain.PlatformIOS, SubmittedAt: t0,
				SourcePath: "builds/" + b + ".zip", TokenHash: tokenHash("t")})
		}},
		{"CreateRetry", func(ctx context.Context, d *testDB, f fixture) error {
			b := uuid.NewString()
			return d.s.CreateBuild(ctx, store.NewBuild{ID: b, Platform: domain.PlatformIOS, SubmittedAt: t0,
				SourcePath: "builds/" + b + ".zip", TokenHash: tokenHash("t"), OriginalBuildID: &f.pending})
		}},
		{"GetBuild", func(ctx context.Context, d *testDB, f fixture) error {
			_, err := d.s.GetBuild(ctx, f.pending)
			return err
		}},
		{"ListBuilds", func(ctx context.Context, d *testDB, f fixture) error {
			_, err := d.s.ListBuilds(ctx)
			return err
		}},
		{"RecentBuilds", func(ctx context.Context, d *testDB, f fixture) error {
			_, err := d.s.RecentBuilds(ctx, 5)
			return err
		}},
		{"PendingBuilds", func(ctx context.Context, d *testDB, f fixture) error {
			_, err := d.s.PendingBuilds(ctx)
			return err
		}},
		{"RunningBuilds", func(ctx context.Context, d *testDB, f fixture) error {
			_, err := d.s.RunningBuilds(ctx)
			return err
		}},
		{"ExpiredBuilds", func(ctx context.Context, d *testDB, f fixture) error {
			_, err := d.s.ExpiredBuilds(ctx, t0+1_000_000)
			return err
		}},
		{"AssignBuild", func(ctx context.Context, d *testDB, f fixture) error {
			return d.s.AssignBuild(ctx, f.pending, f.idleWorker, t0+5000)
		}},
		{"CancelBuild", func(ctx context.Context, d *testDB, f fixture) error {
			_, err := d.s.CancelBuild(ctx, f.running, t0+5000)
			return err
		}},
		{"FinishBuild", func(ctx context.Context, d *testDB, f fixture) error {
			return d.s.FinishBuild(ctx, store.Finish{BuildID: f.running, WorkerID: f.worker, Success: true,
				ResultPath: "results/" + f.running + ".ipa", ResultSize: 1, ResultSHA256: "00", Now: t0 + 5000})
		}},
		{"TimeoutBuild", func(ctx context.Context, d *testDB, f fixture) error {
			_, err := d.s.TimeoutBuild(ctx, f.running, f.worker, t0+1_000_000, t0+1_000_000, 3)
			return err
		}},
		{"TouchBuild", func(ctx context.Context, d *testDB, f fixture) error {
			return d.s.TouchBuild(ctx, f.running, f.worker, t0+5000)
		}},
		{"Heartbeat", func(ctx context.Context, d *testDB, f fixture) error {
			return d.s.Heartbeat(ctx, f.running, f.worker, ptr(50.0), t0+5000)
		}},
		{"RecordTelemetry", func(ctx context.Context, d *testDB, f fixture) error {
			return d.s.RecordTelemetry(ctx, f.running, f.worker, t0+5000,
				&store.LogInput{Level: domain.LevelInfo, Message: "[VM] Monitor started"},
				&domain.CPUSnapshot{CPUPercent: 50, MemoryMB: 100})
		}},
		{"RequeueOnUnregister", func(ctx context.Context, d *testDB, f fixture) error {
			_, err := d.s.RequeueOnUnregister(ctx, f.worker, t0+5000)
			return err
		}},
		{"Recover", func(ctx context.Context, d *testDB, f fixture) error {
			_, err := d.s.Recover(ctx, t0+5000)
			return err
		}},
		{"AppendLogs", func(ctx context.Context, d *testDB, f fixture) error {
			_, err := d.s.AppendLogs(ctx, f.running, f.worker, []store.LogInput{{Level: domain.LevelInfo, Message: "x"}}, t0+5000)
			return err
		}},
		{"Logs", func(ctx context.Context, d *testDB, f fixture) error {
			_, err := d.s.Logs(ctx, f.pending)
			return err
		}},
		{"LogsAfter", func(ctx context.Context, d *testDB, f fixture) error {
			_, err := d.s.LogsAfter(ctx, f.pending, 1)
			return err
		}},
		{"RegisterWorker", func(ctx context.Context, d *testDB, f fixture) error {
			_, _, err := d.s.RegisterWorker(ctx, store.Registration{Name: "new", Capabilities: "{}", Now: t0 + 5000})
			return err
		}},
		{"ReRegisterWorker", func(ctx context.Context, d *testDB, f fixture) error {
			_, _, err := d.s.RegisterWorker(ctx, store.Registration{ID: f.idleWorker, Name: "renamed",
				Capabilities: "{}", Now: t0 + 5000})
			return err
		}},
		{"GetWorker", func(ctx context.Context, d *testDB, f fixture) error {
			_, err := d.s.GetWorker(ctx, f.worker)
			return err
		}},
		{"ListWorkers", func(ctx context.Context, d *testDB, f fixture) error {
			_, err := d.s.ListWorkers(ctx)
			return err
		}},
		{"SetWorkerStatus", func(ctx context.Context, d *testDB, f fixture) error {
			return d.s.SetWorkerStatus(ctx, f.idleWorker, domain.WorkerOffline, t0+5000)
		}},
		{"SaveLastSeen", func(ctx context.Context, d *testDB, f fixture) error {
			return d.s.SaveLastSeen(ctx, map[string]int64{f.worker: t0 + 5000, f.idleWorker: t0 + 5000})
		}},
		{"AddDiagnostic", func(ctx context.Context, d *testDB, f fixture) error {
			return d.s.AddDiagnostic(ctx, domain.Diagnostic{ID: uuid.NewString(), WorkerID: f.worker,
				Status: "warning", RunAt: t0 + 5000, Checks: "[]"})
		}},
		{"Diagnostics", func(ctx context.Context, d *testDB, f fixture) error {
			_, err := d.s.Diagnostics(ctx, f.worker, 10)
			return err
		}},
		{"BuildCounts", func(ctx context.Context, d *testDB, f fixture) error {
			_, err := d.s.BuildCounts(ctx)
			return err
		}},
		{"Stats", func(ctx context.Context, d *testDB, f fixture) error {
			_, err := d.s.Stats(ctx, t0, t0)
			return err
		}},
		{"Migrations", func(ctx context.Context, d *testDB, f fixture) error {
			_, err := d.s.Migrations(ctx)
			return err
		}},
	}
}

func TestDeadlines(t *testing.T) {
	t.Parallel()
	contexts := []struct {
		name string
		make func(parent context.Context) (context.Context, context.CancelFunc)
	}{
		{"Expired", func(p context.Context) (context.Context, context.CancelFunc) {
			return context.WithDeadline(p, time.Now().Add(-time.Minute))
		}},
		{"Tiny", func(p context.Context) (context.Context, context.CancelFunc) {
			return context.WithTimeout(p, time.Nanosecond)
		}},
	}
	for _, c := range contexts {
		for _, op := range allOperations() {
			t.Run(c.name+"/"+op.name+"/Timeout", func(t *testing.T) {
				t.Parallel()
				d := newTestDB(t)
				f := prepare(t, d)
				before := d.dump(t)
				ctx, cancel := c.make(t.Context())
				defer cancel()
				<-ctx.Done() // the tiny deadline has surely passed

				err := op.call(ctx, d, f)
				require.ErrorIs(t, err, store.ErrTimeout)
				require.NotErrorIs(t, err, store.ErrInternal)
				requireNoDriverError(t, err)
				require.Equal(t, before, d.dump(t), "a timed-out operation writes nothing")

				// The store is still usable afterwards.
				require.NoError(t, op.call(t.Context(), d, f))
			})
		}
	}
}

func TestClosedStore(t *testing.T) {
	t.Parallel()
	for _, op := range allOperations() {
		t.Run(op.name+"/Internal", func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "controller.db")
			s, err := store.Open(t.Context(), path)
			require.NoError(t, err)
			d := &testDB{s: s, path: path}
			f := fixture{pending: uuid.NewString(), running: uuid.NewString(), worker: uuid.NewString(),
				idleWorker: uuid.NewString()}
			require.NoError(t, s.Close())

			err = op.call(t.Context(), d, f)
			require.Error(t, err)
			require.True(t, errors.Is(err, store.ErrInternal) || errors.Is(err, store.ErrTimeout),
				"want ErrInternal or ErrTimeout, got %v", err)
			requireNoDriverError(t, err)
		})
	}
}

// TestDeferSyncAndSync: under DeferSync a write returns after its commit
// without an fsync; Sync then makes it durable, and a Sync with nothing new
// to cover does not fsync.
func TestDeferSyncAndSync(t *testing.T) {
	t.Parallel()
	s := newTestDB(t).s
	ctx := t.Context()
	_, fsyncs0 := s.SyncStats()
	_, _, err := s.RegisterWorker(store.DeferSync(ctx), store.Registration{Name: "w", Capabilities: "{}", Now: 1})
	require.NoError(t, err)
	_, fsyncs1 := s.SyncStats()
	require.Equal(t, fsyncs0, fsyncs1, "no fsync under DeferSync")
	require.NoError(t, s.Sync())
	_, fsyncs2 := s.SyncStats()
	require.Equal(t, fsyncs1+1, fsyncs2)
	require.NoError(t, s.Sync())
	_, fsyncs3 := s.SyncStats()
	require.Equal(t, fsyncs2, fsyncs3, "nothing new: no fsync")
	_, _, err = s.RegisterWorker(ctx, store.Registration{Name: "w2", Capabilities: "{}", Now: 1})
	require.NoError(t, err)
	_, fsyncs4 := s.SyncStats()
	require.Equal(t, fsyncs3+1, fsyncs4, "a normal write waits for its fsync (PostgreSQL: its WAL flush)")
}
