// Command mock-worker is a fake Expo Free Agent worker for Linux. It speaks
// the macOS worker's side of the controller's wire contract: it registers,
// polls, downloads the source (and certs), streams fake build logs and
// telemetry, and uploads a fake result. Use it to try the controller without
// a Mac, and in end-to-end tests.
//
//	mock-worker [--url http://localhost:3000] [--api-key KEY] [--once] ...
//	mock-worker --version
//
// Run with -h for every flag; see README.md for an example session.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/expo-free-agent/controller/internal/version"
)

func main() { os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr)) }

// run is main with an exit status: 0 normal, 1 fatal error, 2 usage error.
func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, err := ParseArgs(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if errors.Is(err, ErrVersion) {
		fmt.Fprintln(stdout, "mock-worker", version.Get())
		return 0
	}
	if err != nil {
		var ue *UsageError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "mock-worker: %v (see -h)\n", err)
		}
		return 2 // the flag package has printed its own errors
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := Run(ctx, cfg, stderr); err != nil {
		fmt.Fprintf(stderr, "mock-worker: %v\n", err)
		return 1
	}
	return 0
}
