package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/expo-free-agent/controller/cmd/app"
)

// gc is `controller gc [--dry-run]`: one retention pass now, with the
// settings of start (docs/DEPLOYMENT.md, Retention). It prints each build
// whose files go, with their bytes, and a total line on stdout; the log goes
// to stderr. Exit 0 when the pass is done, 2 for a configuration mistake
// (no retention), 1 when the pass stopped (the next one finishes it).
func gc(args []string) int {
	cfg, dryRun, err := app.ParseGCArgs(args, os.Getenv, os.Stderr)
	if errors.Is(err, app.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "controller gc:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := app.GC(ctx, cfg, dryRun, os.Stdout, app.NewLogger(cfg, os.Stderr)); err != nil {
		fmt.Fprintln(os.Stderr, "controller gc:", err)
		return exitStatus(err)
	}
	return 0
}
