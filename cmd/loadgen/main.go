// Command loadgen measures an Expo Free Agent controller under load. It runs
// against any controller URL and API key, with the standard library only.
//
//	loadgen --url http://localhost:3000 --api-key KEY [--scenario all] [--pid PID]
//	loadgen --version
//
// Scenarios: idle (many idle workers polling), dispatch (builds flowing
// from submitters through polling workers), transfer (one large source,
// result and download), logs (batched log ingestion), longpoll (builds
// reaching workers that hold long-polls, and the cost of many held polls)
// and logstream (many live log streams while their builds log). Each figure is
// printed to stdout as one line `figure <name>=<value> <unit>`; a readable
// summary follows on stderr. The exit status is 1 when any scenario had a
// failed request or a broken guarantee, 2 on a usage error. See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/expo-free-agent/controller/internal/version"
)

func main() { os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr)) }

func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, scenarios, err := parseConfig(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if errors.Is(err, errVersion) {
		fmt.Fprintln(stdout, "loadgen", version.Get())
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "loadgen:", err)
		return 2
	}
	cfg.Progress = stderr
	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(stderr, "loadgen: CPU profile:", err)
			return 2
		}
		defer f.Close()
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	results := runScenarios(ctx, cfg, scenarios, stdout)
	writeSummary(stderr, cfg, results)
	for _, r := range results {
		if r.Failed() {
			return 1
		}
	}
	return 0
}

// scenarioFunc runs one scenario and returns what it measured.
type scenarioFunc func(ctx context.Context, cfg Config) Result

var scenarioFuncs = map[string]scenarioFunc{
	"idle": runIdle, "dispatch": runDispatch, "transfer": runTransfer, "logs": runLogs,
	"longpoll": runLongPoll, "logstream": runLogStream, "reads": runReads,
}

// runScenarios runs the named scenarios in order, printing each one's
// figure lines to out as soon as it ends. An interrupt stops the run after
// the current scenario.
func runScenarios(ctx context.Context, cfg Config, names []string, out io.Writer) []Result {
	var results []Result
	for _, name := range names {
		if ctx.Err() != nil {
			break
		}
		t0 := time.Now()
		r := scenarioFuncs[name](ctx, cfg)
		r.Took = time.Since(t0)
		writeFigures(out, r)
		results = append(results, r)
	}
	return results
}

func fprintfln(w io.Writer, format string, args ...any) {
	fmt.Fprintf(w, "loadgen: "+format+"\n", args...)
}
