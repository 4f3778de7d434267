// Command seed-history fills a fresh controller database with a large
// history of finished builds, so that the controller's speed can be measured
// as it will be after years of use (docs/BENCHMARKS.md, "Large history").
//
//	seed-history --db /tmp/h/data/controller.db [--builds 1000000] [--lines 50] [--workers 50] [--days 365]
//
// The database is created and migrated by the store itself (store.Open), so
// it has the controller's schema, indexes and triggers; then the rows are
// written in large transactions through the same tables, the triggers
// keeping the counters the controller reads. Only finished builds are
// written (completed, one in ten failed), spread over --days up to now, each
// with --lines log lines and three CPU snapshots; their files are not
// created. The database must hold no build yet.
//
// It prints the database's size after the builds and after their logs, so
// that the bytes per build and per log line can be written down.
package main

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	_ "github.com/mattn/go-sqlite3"

	"github.com/expo-free-agent/controller/cmd/internal/usage"
	"github.com/expo-free-agent/controller/store"
)

type config struct {
	db                   string
	builds, lines, works int
	days                 int
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	var cfg config
	fs := flag.NewFlagSet("seed-history", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.db, "db", "", "database file to create (required; must hold no build)")
	fs.IntVar(&cfg.builds, "builds", 1_000_000, "finished builds to write")
	fs.IntVar(&cfg.lines, "lines", 50, "log lines per build")
	fs.IntVar(&cfg.works, "workers", 50, "workers the builds ran on")
	fs.IntVar(&cfg.days, "days", 365, "the builds end over this many days up to now")
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: seed-history --db <file> [flags]\n\n"+
			"Fills a fresh controller database with finished builds and their logs, for the\n"+
			"large-history measurements (docs/BENCHMARKS.md).\n\nFlags:\n")
		usage.Print(stderr, usage.FromFlagSet(fs, nil))
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if cfg.db == "" || cfg.builds < 1 || cfg.lines < 0 || cfg.works < 1 || cfg.days < 1 {
		fmt.Fprintln(stderr, "seed-history: --db is required; --builds, --workers and --days must be at least 1, --lines at least 0")
		return 2
	}
	if err := seed(context.Background(), cfg, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "seed-history:", err)
		return 1
	}
	return 0
}

func seed(ctx context.Context, cfg config, out, progress io.Writer) error {
	s, err := store.Open(ctx, cfg.db) // the schema, exactly as the controller makes it
	if err != nil {
		return err
	}
	if err := s.Close(); err != nil {
		return err
	}
	db, err := sql.Open("sqlite3", "file:"+cfg.db+"?_journal_mode=WAL&_synchronous=OFF&_fk=1&_busy_timeout=5000")
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, `PRAGMA cache_size = -1000000`); err != nil { // 1 GB of pages
		return err
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM builds`).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return fmt.Errorf("%s already holds %d builds: seed a fresh database", cfg.db, n)
	}

	rng := rand.New(rand.NewPCG(1, 2)) // the same history every run
	workers := make([]string, cfg.works)
	now := time.Now().UnixMilli()
	for i := range workers {
		workers[i] = uuid.NewString()
		if _, err := db.ExecContext(ctx, `INSERT INTO workers (id, name, capabilities, status, registered_at,
			last_seen_at) VALUES (?, ?, '{}', 'offline', ?, ?)`, workers[i], fmt.Sprintf("history-%02d", i),
			now-int64(cfg.days)*86_400_000, now-3_600_000); err != nil {
			return err
		}
	}
	// Ids in order, so that each build's log lines go to the end of the
	// log table (random ids would make seeding far slower; the table then
	// is denser than a real one — see docs/BENCHMARKS.md).
	ids := make([]string, cfg.builds)
	for i := range ids {
		ids[i] = uuid.NewString()
	}
	slices.Sort(ids)

	start := time.Now()
	span := int64(cfg.days) * 86_400_000
	type done struct{ completed, failed int }
	perWorker := make(map[string]*done, len(workers))
	for _, w := range workers {
		perWorker[w] = &done{}
	}
	err = inBatches(ctx, db, progress, len(ids), 5000, func(tx *sql.Tx, from, to int) error {
		build, err := tx.PrepareContext(ctx, `INSERT INTO builds (id, platform, status, worker_id, submitted_at,
			started_at, completed_at, last_activity_at, error_message, source_path, certs_path, result_path,
			result_size, result_sha256, token_hash, assignment) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)`)
		if err != nil {
			return err
		}
		defer build.Close()
		snap, err := tx.PrepareContext(ctx, `INSERT INTO cpu_snapshots (build_id, worker_id, timestamp, cpu_percent,
			memory_mb) VALUES (?, ?, ?, ?, ?)`)
		if err != nil {
			return err
		}
		defer snap.Close()
		for i := from; i < to; i++ {
			id := ids[i]
			w := workers[rng.IntN(len(workers))]
			platform := "ios"
			if rng.IntN(3) == 0 {
				platform = "android"
			}
			submitted := now - span + rng.Int64N(span)
			started := submitted + rng.Int64N(60_000)
			ended := started + 120_000 + rng.Int64N(900_000)
			status, errMsg, result, size, sum := "completed", any(nil), any("results/"+id+".ipa"), any(int64(40<<20)),
				any(fmt.Sprintf("%x", sha256.Sum256([]byte(id))))
			if rng.IntN(10) == 0 {
				status, errMsg, result, size, sum = "failed", "Build failed: xcodebuild exited with 65", nil, nil, nil
				perWorker[w].failed++
			} else {
				perWorker[w].completed++
			}
			token := sha256.Sum256([]byte("token-" + id))
			if _, err := build.ExecContext(ctx, id, platform, status, w, submitted, started, ended, ended, errMsg,
				"builds/"+id+".zip", "certs/"+id+".zip", result, size, sum, token[:]); err != nil {
				return err
			}
			for k := range 3 {
				if _, err := snap.ExecContext(ctx, id, w, started+int64(k)*30_000, 20+rng.Float64()*70,
					2000+rng.Float64()*4000); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for w, d := range perWorker {
		if _, err := db.ExecContext(ctx, `UPDATE workers SET builds_completed = ?, builds_failed = ? WHERE id = ?`,
			d.completed, d.failed, w); err != nil {
			return err
		}
	}
	if err := report(ctx, db, cfg.db, out, fmt.Sprintf("%d builds (with 3 CPU snapshots each) in %s",
		len(ids), time.Since(start).Round(time.Second))); err != nil {
		return err
	}
	if cfg.lines == 0 {
		return nil
	}

	start = time.Now()
	perTx := max(1, 100_000/cfg.lines) // ~100,000 lines per transaction
	err = inBatches(ctx, db, progress, len(ids), perTx, func(tx *sql.Tx, from, to int) error {
		line, err := tx.PrepareContext(ctx, `INSERT INTO build_logs (build_id, seq, timestamp, level, message)
			VALUES (?, ?, ?, ?, ?)`)
		if err != nil {
			return err
		}
		defer line.Close()
		for i := from; i < to; i++ {
			for seq := 1; seq <= cfg.lines; seq++ {
				level, msg := logLine(rng, seq, cfg.lines)
				if _, err := line.ExecContext(ctx, ids[i], seq, now-span+int64(seq)*1000, level, msg); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return report(ctx, db, cfg.db, out, fmt.Sprintf("%d log lines in %s", len(ids)*cfg.lines,
		time.Since(start).Round(time.Second)))
}

// logLine is a plausible build log line (~60–100 bytes).
func logLine(rng *rand.Rand, seq, of int) (string, string) {
	switch {
	case seq == 1:
		return "info", "Assigned to worker history"
	case seq == of:
		return "info", "Build completed successfully"
	case rng.IntN(20) == 0:
		return "warn", fmt.Sprintf("warning: 'UIWebView' is deprecated: first deprecated in iOS 12.0 (module %d)", seq)
	default:
		return "info", fmt.Sprintf("▸ Compiling %s.m (in target 'App' from project 'App') step %d/%d",
			strings.Repeat("Module", 1+rng.IntN(3)), seq, of)
	}
}

// inBatches calls fn for [from, to) ranges of n items, each range in one
// transaction, writing progress lines to progress.
func inBatches(ctx context.Context, db *sql.DB, progress io.Writer, n, size int, fn func(tx *sql.Tx, from, to int) error) error {
	for from := 0; from < n; from += size {
		to := min(from+size, n)
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if err := fn(tx, from, to); err != nil {
			tx.Rollback() //nolint:errcheck // the error above is the one to report
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
		if from/size%20 == 0 {
			fmt.Fprintf(progress, "seed-history: %d/%d\n", to, n)
		}
	}
	return nil
}

// report checkpoints the WAL into the database file and prints its size.
func report(ctx context.Context, db *sql.DB, path string, out io.Writer, what string) error {
	if _, err := db.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		return err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "seed-history: %s; database now %d bytes (%.1f MiB)\n", what, fi.Size(), float64(fi.Size())/(1<<20))
	return nil
}
