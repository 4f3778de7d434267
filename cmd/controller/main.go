// Command controller runs the Expo Free Agent build controller.
//
//	controller [start] [--port 3000] [--db ./data/controller.db] [--storage ./storage] ...
//	controller version
//	controller gc [--dry-run] --retention 30d [--db ...] [--storage ...]
//	controller backup [--db ./data/controller.db] <file>
//	controller migrate [--db path-or-postgres-url]
//	controller copy --from <db> --to <db>
//
// See README.md for every setting.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/expo-free-agent/controller/cmd/app"
	"github.com/expo-free-agent/controller/internal/version"
	"github.com/expo-free-agent/controller/store"
)

func main() { os.Exit(run(os.Args[1:])) }

// run dispatches on the first word: a subcommand, else the server (whose
// optional first word is "start").
func run(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(args) > 0 {
		switch args[0] {
		case "version":
			return versionCommand(args[1:], os.Stdout, os.Stderr)
		case "gc":
			return gc(args[1:])
		case "backup":
			return backup(ctx, args[1:], os.Getenv, os.Stdout, os.Stderr)
		case "migrate":
			return migrate(ctx, args[1:], os.Getenv, os.Stdout, os.Stderr)
		case "copy":
			return copyDB(ctx, args[1:], os.Stdout, os.Stderr)
		}
	}
	return serve(ctx, args)
}

// serve runs the controller until ctx ends (SIGINT or SIGTERM).
func serve(ctx context.Context, args []string) int {
	cfg, err := app.ParseArgs(args, os.Getenv, os.Stderr)
	if errors.Is(err, app.ErrHelp) {
		return 0
	}
	if errors.Is(err, app.ErrVersion) {
		return versionCommand(nil, os.Stdout, os.Stderr)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "controller:", err)
		return 2
	}
	warnings, err := app.ResolveAPIKey(&cfg, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "controller:", err)
		return exitStatus(err)
	}
	log := app.NewLogger(cfg, os.Stderr)
	for _, w := range warnings {
		log.Warn(w)
	}
	a, err := app.New(ctx, cfg, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "controller:", err)
		return exitStatus(err)
	}
	if cfg.PprofAddr != "" {
		go servePprof(cfg.PprofAddr, log)
	}
	build := version.Get()
	log.Info("controller starting", "version", build.Version, "revision", build.Revision,
		"addr", fmt.Sprintf("%s:%d", cfg.Host, cfg.Port), "db", store.RedactURL(cfg.DBPath), "storage", cfg.StoragePath)
	if err := a.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "controller:", err)
		return 1
	}
	log.Info("controller stopped")
	return 0
}

// exitStatus is 2 for a mistake that retrying cannot mend — the
// configuration, a database file that is not this controller's, a database
// directory the controller may not write — so that a service manager stops
// restarting (RestartPreventExitStatus=2), and 1 for the rest (a port still
// taken, a full disk), which a restart may mend.
func exitStatus(err error) int {
	if errors.Is(err, app.ErrConfig) || errors.Is(err, store.ErrNotADatabase) || errors.Is(err, store.ErrForeignDatabase) ||
		errors.Is(err, store.ErrUnwritable) || errors.Is(err, store.ErrBadURL) {
		return 2
	}
	return 1
}

// servePprof serves the Go profiler on its own listener (never on the API
// port), for performance work: go tool pprof http://<addr>/debug/pprof/profile
func servePprof(addr string, log *slog.Logger) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	log.Warn("profiler listening; do not expose it", "addr", addr)
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if err := srv.ListenAndServe(); err != nil {
		log.Error("profiler stopped", "err", err)
	}
}
