package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/expo-free-agent/controller/cmd/internal/bytesize"
	"github.com/expo-free-agent/controller/cmd/internal/usage"
	"github.com/expo-free-agent/controller/store"
)

// backup is "controller backup [--db path] <file>": a consistent snapshot of
// the database, taken while the controller runs, written to a new file and
// checked (store.Backup). The database path is --db, else CONTROLLER_DB,
// else the controller's default — the same as the controller's, so the
// service's environment file serves both. Exit status: 0 written and
// checked; 2 a mistake to mend (usage, the file exists, --db names no
// database of this controller); 1 any other failure (a full disk, a copy
// that fails its check).
func backup(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	dbPath := defaultDB(getenv)
	fs := flag.NewFlagSet("controller backup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&dbPath, "db", dbPath, "the controller's SQLite database")
	fs.Lookup("db").DefValue = store.RedactURL(dbPath) // --help never shows a password
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: controller backup [--db path] <file>\n\n"+
			"Writes a consistent snapshot of the database to <file> (which must not exist) while the\n"+
			"controller runs, then checks it (PRAGMA integrity_check). Back up the storage root after it\n"+
			"(docs/DEPLOYMENT.md, Backup and restore).\n\nFlags:\n")
		usage.Print(stderr, usage.FromFlagSet(fs, map[string]string{"db": "CONTROLLER_DB"}))
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 1 || fs.Arg(0) == "" {
		fs.Usage()
		fmt.Fprintln(stderr, "controller backup: name exactly one file to write (flags go before it)")
		return 2
	}
	rep, err := store.Backup(ctx, dbPath, fs.Arg(0))
	if err != nil {
		fmt.Fprintln(stderr, "controller backup:", err)
		if errors.Is(err, store.ErrFull) {
			fmt.Fprintf(stderr, "controller backup: no space left for the copy beside %s; nothing was kept\n", fs.Arg(0))
		}
		if errors.Is(err, store.ErrBackupExists) || errors.Is(err, store.ErrNotADatabase) || errors.Is(err, store.ErrForeignDatabase) {
			return 2
		}
		return 1
	}
	fmt.Fprintf(stdout, "backup of %s written to %s (%s)\nintegrity_check: %s\nbuilds: %d, workers: %d, schema: %s (%d migrations)\n",
		dbPath, rep.Path, bytesize.Format(rep.Size), rep.Integrity, rep.Builds, rep.Workers, rep.Schema, rep.Migrations)
	return 0
}
