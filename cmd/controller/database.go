package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/expo-free-agent/controller/cmd/app"
	"github.com/expo-free-agent/controller/cmd/internal/usage"
	"github.com/expo-free-agent/controller/store"
)

// defaultDB is the database the controller would use: CONTROLLER_DB, else
// DATABASE_URL, else the default file (as the server resolves it).
func defaultDB(getenv func(string) string) string {
	if v := getenv("CONTROLLER_DB"); v != "" {
		return v
	}
	if v := getenv("DATABASE_URL"); v != "" {
		return v
	}
	return app.Defaults().DBPath
}

// migrate is "controller migrate [--db path-or-url]": brings the database to
// this version's schema and exits (store.Open applies the migrations; on
// PostgreSQL under an advisory lock, so nodes starting together apply each
// once). For upgrades where an operator wants the schema change done before
// the nodes start (docs/DEPLOYMENT.md, Upgrading). Exit 0 done, 2 a mistake
// to mend, 1 any other failure.
func migrate(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	db := defaultDB(getenv)
	fs := flag.NewFlagSet("controller migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&db, "db", db, "the controller's SQLite database file or postgres:// URL")
	fs.Lookup("db").DefValue = store.RedactURL(db) // --help never shows a password
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: controller migrate [--db path-or-url]\n\n"+
			"Applies the database migrations of this version and exits. The controller applies them at\n"+
			"start too; run this before starting several nodes of a new version (docs/DEPLOYMENT.md).\n\nFlags:\n")
		usage.Print(stderr, usage.FromFlagSet(fs, map[string]string{"db": "CONTROLLER_DB, DATABASE_URL"}))
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 0 {
		fs.Usage()
		fmt.Fprintln(stderr, "controller migrate: takes no arguments (flags only)")
		return 2
	}
	st, err := store.Open(ctx, db)
	if err != nil {
		fmt.Fprintln(stderr, "controller migrate:", err)
		return exitStatus(err)
	}
	defer st.Close()
	applied, err := st.Migrations(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "controller migrate:", err)
		return 1
	}
	last := ""
	if len(applied) > 0 {
		last = applied[len(applied)-1]
	}
	fmt.Fprintf(stdout, "%s is at schema %s (%d migrations)\n", store.RedactURL(db), last, len(applied))
	return 0
}

// copyDB is "controller copy --from <db> --to <db>": moves every worker,
// build, log line, token and pending webhook from one database to a new,
// empty one — a SQLite file to PostgreSQL, or back (docs/MIGRATION.md,
// SQLite → PostgreSQL). Stop the controller first. Exit 0 copied, 2 a
// mistake to mend (a missing flag, a destination that is not empty, different
// schema versions), 1 any other failure.
func copyDB(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var from, to string
	fs := flag.NewFlagSet("controller copy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&from, "from", "", "the database to copy: a SQLite file or postgres:// URL")
	fs.StringVar(&to, "to", "", "a new, empty database: a SQLite file or postgres:// URL")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: controller copy --from <db> --to <db>\n\n"+
			"Copies every worker, build, log line, token and pending webhook into a new database (SQLite\n"+
			"to PostgreSQL, or back). Stop the controller first; the storage root is not touched\n"+
			"(docs/MIGRATION.md).\n\nFlags:\n")
		usage.Print(stderr, usage.FromFlagSet(fs, nil))
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if from == "" || to == "" || fs.NArg() != 0 {
		fs.Usage()
		fmt.Fprintln(stderr, "controller copy: give --from and --to, and nothing else")
		return 2
	}
	if from == to {
		fmt.Fprintln(stderr, "controller copy: --from and --to name the same database")
		return 2
	}
	src, err := store.Open(ctx, from)
	if err != nil {
		fmt.Fprintln(stderr, "controller copy:", err)
		return exitStatus(err)
	}
	defer src.Close()
	dst, err := store.Open(ctx, to)
	if err != nil {
		fmt.Fprintln(stderr, "controller copy:", err)
		return exitStatus(err)
	}
	defer dst.Close()
	rep, err := store.Copy(ctx, src, dst, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "controller copy:", err)
		if errors.Is(err, store.ErrNotEmpty) || errors.Is(err, store.ErrSchemaMismatch) {
			return 2
		}
		return 1
	}
	fmt.Fprintf(stdout, "copied %s to %s:\n", store.RedactURL(from), store.RedactURL(to))
	for _, t := range rep.Tables {
		fmt.Fprintf(stdout, "  %-18s %d\n", t, rep.Rows[t])
	}
	return 0
}
