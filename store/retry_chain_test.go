package store_test

import (
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/expo-free-agent/controller/internal/testkit"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

// retry creates a retry of original through the store, with the given chain
// bound (0: none), and returns its id and CreateBuild's error.
func (d *testDB) retry(t *testing.T, original string, maxChain int) (string, error) {
	t.Helper()
	b := uuid.NewString()
	return b, d.s.CreateBuild(t.Context(), store.NewBuild{
		ID: b, Platform: domain.PlatformIOS, SubmittedAt: t0 + 1, SourcePath: "builds/" + b + ".zip",
		TokenHash: tokenHash("retry-" + b), OriginalBuildID: &original, MaxChain: maxChain,
	})
}

func (d *testDB) countRetries(t *testing.T, root string) int {
	t.Helper()
	n, err := d.s.CountRetries(t.Context(), root)
	require.NoError(t, err)
	return n
}

func TestRetryChain(t *testing.T) {
	t.Parallel()

	t.Run("RootIsTheSubmittedBuild", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		sub := d.build(t, t0)
		require.Nil(t, d.get(t, sub).RootBuildID, "a submitted build has no root")
		require.Zero(t, d.countRetries(t, sub))

		r1, err := d.retry(t, sub, 0)
		require.NoError(t, err)
		require.Equal(t, &sub, d.get(t, r1).RootBuildID, "a retry of a submitted build: the original")
		r2, err := d.retry(t, r1, 0)
		require.NoError(t, err)
		require.Equal(t, &sub, d.get(t, r2).RootBuildID, "a retry of a retry: the original's root")
		require.Equal(t, &r1, d.get(t, r2).OriginalBuildID)
		_, err = d.retry(t, sub, 0)
		require.NoError(t, err)

		require.Equal(t, 3, d.countRetries(t, sub), "every retry of the chain, not the root")
		require.Zero(t, d.countRetries(t, r1), "only roots have retries counted")
		other := d.build(t, t0)
		require.Zero(t, d.countRetries(t, other))
	})

	t.Run("GivenRootIsStored", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		sub := d.build(t, t0)
		b := uuid.NewString()
		require.NoError(t, d.s.CreateBuild(t.Context(), store.NewBuild{
			ID: b, Platform: domain.PlatformIOS, SubmittedAt: t0, SourcePath: "builds/" + b + ".zip",
			TokenHash: tokenHash("x"), OriginalBuildID: &sub, RootBuildID: &sub,
		}))
		require.Equal(t, &sub, d.get(t, b).RootBuildID)
		require.Equal(t, 1, d.countRetries(t, sub))
	})

	t.Run("MaxChainReached/RetryLimit", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		sub := d.build(t, t0)
		last := sub
		for range 3 { // a retry of the last retry each time, as a token holder chains
			var err error
			last, err = d.retry(t, last, 3)
			require.NoError(t, err)
		}
		before := d.dump(t)
		_, err := d.retry(t, last, 3)
		require.ErrorIs(t, err, store.ErrRetryLimit)
		requireNoDriverError(t, err)
		_, err = d.retry(t, sub, 3)
		require.ErrorIs(t, err, store.ErrRetryLimit, "the bound is per chain, whichever build of it is retried")
		require.Equal(t, before, d.dump(t), "a refused retry writes nothing")

		_, err = d.retry(t, last, 0)
		require.NoError(t, err, "without a bound (the admin) the chain grows")
		_, err = d.retry(t, last, 5)
		require.NoError(t, err, "a larger bound")
		require.Equal(t, 5, d.countRetries(t, sub))

		// Another chain has its own count.
		other := d.build(t, t0)
		_, err = d.retry(t, other, 3)
		require.NoError(t, err)
	})

	t.Run("ConcurrentRetries/NeverOvershoot", func(t *testing.T) {
		t.Parallel()
		d := newTestDB(t)
		sub := d.build(t, t0)
		const limit, tries = 5, 40
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			ok, lim int
		)
		for range tries {
			wg.Go(func() {
				_, err := d.retry(t, sub, limit)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					ok++
				case errors.Is(err, store.ErrRetryLimit):
					lim++
				default:
					t.Errorf("unexpected error: %v", err)
				}
			})
		}
		wg.Wait()
		require.Equal(t, limit, ok, "the count and the insert are one transaction")
		require.Equal(t, tries-limit, lim)
		require.Equal(t, limit, d.countRetries(t, sub))
	})

	t.Run("CountUsesTheRootIndex", func(t *testing.T) {
		t.Parallel()
		testkit.SQLiteOnly(t, "query plan")
		d := newTestDB(t)
		rows, err := d.raw.QueryContext(t.Context(),
			`EXPLAIN QUERY PLAN SELECT COUNT(*) FROM builds WHERE root_build_id = ?`, "x")
		require.NoError(t, err)
		defer rows.Close()
		var plan []string
		for rows.Next() {
			var id, parent, notused int
			var detail string
			require.NoError(t, rows.Scan(&id, &parent, &notused, &detail))
			plan = append(plan, detail)
		}
		require.NoError(t, rows.Err())
		require.Len(t, plan, 1)
		require.Contains(t, plan[0], "builds_by_root", "one index lookup, not a scan")
	})
}

// TestMigrationRetryRoot: a database of the first schema, holding retry
// chains made before 0002_retry_root.sql, gets the root_build_id column and
// its index when it is opened, and every old retry its chain's root.
func TestMigrationRetryRoot(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "controller.db")
	raw, err := sql.Open("sqlite3", "file:"+path)
	require.NoError(t, err)
	defer raw.Close()
	schema, err := os.ReadFile(filepath.Join("migrations", "0001_init.sql"))
	require.NoError(t, err)
	_, err = raw.ExecContext(t.Context(), `CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at INTEGER NOT NULL);
		INSERT INTO schema_migrations VALUES ('0001_init.sql', 1);`+string(schema))
	require.NoError(t, err)
	// sub ← r1 ← r2, sub ← r3; lone has no retries.
	sub, r1, r2, r3, lone := id(1), id(2), id(3), id(4), id(5)
	for _, b := range [][2]any{{sub, nil}, {r1, sub}, {r2, r1}, {r3, sub}, {lone, nil}} {
		_, err := raw.ExecContext(t.Context(), `INSERT INTO builds (id, platform, status, submitted_at,
			source_path, token_hash, original_build_id) VALUES (?, 'ios', 'failed', 1, 'builds/x.zip', x'00', ?)`, b[0], b[1])
		require.NoError(t, err)
	}

	s, err := store.Open(t.Context(), path)
	require.NoError(t, err)
	defer func() { require.NoError(t, s.Close()) }()
	names, err := s.Migrations(t.Context())
	require.NoError(t, err)
	require.Equal(t, []string{"0001_init.sql", "0002_retry_root.sql"}, names[:2])

	root := func(b string) *string {
		got, err := s.GetBuild(t.Context(), b)
		require.NoError(t, err)
		return got.RootBuildID
	}
	require.Nil(t, root(sub))
	require.Nil(t, root(lone))
	require.Equal(t, &sub, root(r1))
	require.Equal(t, &sub, root(r2), "a retry of a retry")
	require.Equal(t, &sub, root(r3))
	n, err := s.CountRetries(t.Context(), sub)
	require.NoError(t, err)
	require.Equal(t, 3, n)

	var idx int
	require.NoError(t, raw.QueryRowContext(t.Context(),
		`SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'builds_by_root'`).Scan(&idx))
	require.Equal(t, 1, idx)
}
