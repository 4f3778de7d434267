package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/expo-free-agent/controller/actors/clock"
	"github.com/expo-free-agent/controller/actors/files"
	"github.com/expo-free-agent/controller/actors/retention"
	"github.com/expo-free-agent/controller/cmd/internal/usage"
	"github.com/expo-free-agent/controller/store"
)

// ParseGCArgs reads the configuration of `controller gc`: the settings of
// start (ParseArgs), plus --dry-run. Without a retention it is an ErrConfig.
func ParseGCArgs(args []string, getenv func(string) string, stderr io.Writer) (cfg Config, dryRun bool, err error) {
	const dryRunHelp = "list what would go; change nothing"
	cfg, err = parseArgs(args, getenv, stderr, command{
		usage: "Usage: controller gc [--dry-run] [flags]\n\nRuns one retention pass now on the database and storage root of the flags,\n" +
			"beside a running controller or not: deletes the files of builds finished longer ago than\n" +
			"--retention and prunes CPU snapshots and diagnostic reports of that age, printing each\n" +
			"build with its bytes and a total. --dry-run lists what would go and changes nothing.\n",
		flags: func(fs *flag.FlagSet) { fs.BoolVar(&dryRun, "dry-run", false, dryRunHelp) },
		extra: []usage.Flag{{Name: "dry-run", Help: dryRunHelp}},
	})
	if err == nil && cfg.Retention <= 0 {
		err = configError{"gc needs a retention: set --retention or CONTROLLER_RETENTION (e.g. 30d)"}
	}
	return cfg, dryRun, err
}

// GC runs one retention pass (or, with dryRun, plans one) on the configured
// database and storage root, and writes to out a line per build — its id and
// the bytes of its files — and a total. It is safe beside a running
// controller: it only opens the database (migrations, no recovery) and the
// storage root (no orphan pass, which would take the files of uploads under
// way); every step is a short conditional transaction, SQLite serializes it
// with the controller's writes (the busy timeout waits for the lock), and it
// deletes only the files of builds marked purged.
func GC(ctx context.Context, cfg Config, dryRun bool, out io.Writer, log *slog.Logger) error {
	if cfg.Clock == nil {
		cfg.Clock = clock.System{}
	}
	// gc works on a controller's data: a mistyped path must not create an
	// empty database or storage root and report that nothing was there.
	for _, p := range []struct{ path, flag string }{{cfg.DBPath, "--db"}, {cfg.StoragePath, "--storage"}} {
		if store.IsPostgresURL(p.path) {
			continue // store.Open says if it cannot connect
		}
		if _, err := os.Stat(p.path); err != nil {
			return configError{fmt.Sprintf("no controller data at %s (check %s): %v", p.path, p.flag, errors.Unwrap(err))}
		}
	}
	st, err := store.Open(ctx, cfg.DBPath)
	if err != nil {
		return fmt.Errorf("open database: %w", err)
	}
	defer st.Close()
	fs, err := files.New(cfg.StoragePath, cfg.Files, log)
	if err != nil {
		return fmt.Errorf("open storage: %w", err)
	}
	c := retention.New(st, fs, cfg.Clock, log, retention.Config{Retention: cfg.Retention})
	line := func(id string, bytes int64) { fmt.Fprintf(out, "%s\t%d\n", id, bytes) }
	run, verb := c.Pass, "deleted"
	if dryRun {
		run, verb = c.Plan, "would delete"
	}
	r, err := run(ctx, line)
	fmt.Fprintf(out, "total: %s the files of %d builds, %d bytes (%s); %d CPU snapshots, %d diagnostic reports\n",
		verb, r.Builds, r.Bytes, readableBytes(r.Bytes), r.Snapshots, r.Diagnostics)
	if errors.Is(err, retention.ErrDisabled) {
		return configError{err.Error()}
	}
	return err
}

// readableBytes writes n in the largest binary unit it reaches, with one
// decimal: 1.5 GiB, 12.0 KiB, 7 B.
func readableBytes(n int64) string {
	for _, u := range []struct {
		suffix string
		size   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.size {
			return fmt.Sprintf("%.1f %s", float64(n)/float64(u.size), u.suffix)
		}
	}
	return fmt.Sprintf("%d B", n)
}
