package test

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/google/uuid"
)

// seedPending writes n pending builds straight into a stopped controller's
// database, in one transaction (the counts triggers keep build_counts).
func seedPending(b *testing.B, dbPath string, n int) {
	b.Helper()
	db, err := sql.Open("sqlite3", "file:"+dbPath+"?_journal_mode=WAL&_busy_timeout=5000")
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	tx, err := db.BeginTx(context.Background(), nil)
	if err != nil {
		b.Fatal(err)
	}
	stmt, err := tx.Prepare(`INSERT INTO builds (id, platform, status, submitted_at, source_path, token_hash)
		VALUES (?, 'ios', 'pending', ?, ?, x'00')`)
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < n; i++ {
		id := uuid.NewString()
		if _, err := stmt.Exec(id, int64(1_700_000_000_000+i), "builds/"+id+".zip"); err != nil {
			b.Fatal(err)
		}
	}
	stmt.Close()
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkPublicPages measures the public pages with 10 and with 100,000
// pending builds: their cost must not grow with the queue (bounded queries,
// counts kept by the store, one shared dashboard snapshot). "dashboard" is
// the page recomputed after every change (a write between requests);
// "dashboard-shared" the page many viewers get while nothing changes.
func BenchmarkPublicPages(b *testing.B) {
	for _, pending := range []int{10, 100_000} {
		dir := b.TempDir()
		c := StartIn(b, dir)
		c.Stop()
		seedPending(b, filepath.Join(dir, "data", "controller.db"), pending)
		c = StartIn(b, dir)
		w := c.Register("bench")
		build := c.Submit("ios", []byte("s"), nil)
		for _, page := range []struct {
			name, path string
			change     bool
		}{
			{"dashboard", "/", true},
			{"dashboard-shared", "/", false},
			{"fragment", "/dashboard/fragment", false},
			{"health", "/health", false},
			{"stats", "/api/stats", false},
			{"build-page", "/builds/" + build.ID, false},
		} {
			b.Run(fmt.Sprintf("pending=%d/%s", pending, page.name), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					if page.change {
						b.StopTimer()
						c.Register("bench") // a commit: the shared snapshot is stale
						b.StartTimer()
					}
					// The key opens the build page as a session would, and is
					// ignored by the public pages.
					if r := c.Get(page.path, c.KeyH()); r.Status != http.StatusOK {
						b.Fatalf("%s: %d", page.path, r.Status)
					}
				}
			})
		}
		_ = w
		c.Stop()
	}
}
