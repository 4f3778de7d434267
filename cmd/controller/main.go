// Command controller runs the Expo Free Agent build controller.
//
//	controller [start] [--port 3000] [--db ./data/controller.db] [--storage ./storage] ...
//
// See README.md for every setting.
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

func main() { os.Exit(run()) }

func run() int {
	cfg, err := app.ParseArgs(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, app.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "controller:", err)
		return 2
	}
	warning, err := app.ResolveAPIKey(&cfg, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	log := app.NewLogger(cfg, os.Stderr)
	if warning != "" {
		log.Warn(warning)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	a, err := app.New(ctx, cfg, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "controller:", err)
		return 1
	}
	log.Info("controller starting", "addr", fmt.Sprintf("%s:%d", cfg.Host, cfg.Port), "db", cfg.DBPath,
		"storage", cfg.StoragePath)
	if err := a.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "controller:", err)
		return 1
	}
	log.Info("controller stopped")
	return 0
}
