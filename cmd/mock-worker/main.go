// Command mock-worker is a fake Expo Free Agent worker for Linux. It speaks
// the macOS worker's side of the controller's wire contract: it registers,
// polls, downloads the source (and certs), streams fake build logs and
// telemetry, and uploads a fake result. Use it to try the controller without
// a Mac, and in end-to-end tests.
//
//	mock-worker [--url http://localhost:3000] [--api-key KEY] [--once] ...
//
// Run with -h for every flag; see README.md for an example session.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() { os.Exit(run()) }

// run is main with an exit status: 0 normal, 1 fatal error, 2 usage error.
func run() int {
	cfg, err := ParseArgs(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		var ue *UsageError
		if errors.As(err, &ue) {
			fmt.Fprintf(os.Stderr, "mock-worker: %v (see -h)\n", err)
		}
		return 2 // the flag package has printed its own errors
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := Run(ctx, cfg, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "mock-worker: %v\n", err)
		return 1
	}
	return 0
}
