package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/expo-free-agent/controller/cmd/internal/bytesize"
	"github.com/expo-free-agent/controller/cmd/internal/usage"
)

// Config is everything a scenario needs: where the controller is, how hard
// to push it and for how long. Zero values are not meaningful; start from
// defaults().
type Config struct {
	URL      string
	Spread   string // several nodes: "request" (each request to the next node) or "worker" (a dispatch worker's requests to one node)
	APIKey   string
	Platform string
	Timeout  time.Duration // per ordinary request; transfers have none
	// CPUProfile, if set, is where the load tool writes a CPU profile of
	// its own run (go tool pprof), to see what measuring costs.
	CPUProfile string

	// idle
	Duration    time.Duration // idle and logs
	Concurrency int

	// dispatch
	Workers    int
	Builds     int
	Submitters int
	IdlePause  time.Duration
	ResultSize int64

	// transfer
	Size int64

	// logs
	LogBatch   int
	LogWorkers int

	// longpoll
	Wait          time.Duration // ?wait= of every long-poll, whole seconds (also logstream's setup)
	LPWorkers     int           // workers holding polls while builds are submitted
	SubmitRate    float64       // builds submitted per second
	LPIdleWorkers int           // workers holding polls with nothing to do
	LPIdleWindow  time.Duration // how long their cost is measured

	// logstream
	Streams      int     // live log streams open at once
	StreamBuilds int     // builds the streams follow (0: one per stream)
	LineRate     float64 // lines per second posted to each build
	StreamBatch  int     // lines per POST

	// PID, when not 0, is the controller's process: its VmRSS is sampled
	// every RSSInterval during each scenario.
	PID         int
	RSSInterval time.Duration

	// Progress receives one-line progress notes (stderr); nil discards them.
	Progress io.Writer
}

// defaults returns the configuration of a run without flags.
func defaults() Config {
	return Config{
		URL: "http://localhost:3000", Spread: "request", Platform: "android", Timeout: 60 * time.Second,
		Duration: 10 * time.Second, Concurrency: 32,
		Workers: 16, Builds: 2000, Submitters: 4, IdlePause: 5 * time.Millisecond, ResultSize: 4 << 10,
		Size:     1 << 30,
		LogBatch: 100, LogWorkers: 8,
		Wait: 30 * time.Second, LPWorkers: 200, SubmitRate: 50, LPIdleWorkers: 1000, LPIdleWindow: 35 * time.Second,
		Streams: 1000, LineRate: 100, StreamBatch: 10,
		RSSInterval: 50 * time.Millisecond,
	}
}

// scenarioOrder is the order "all" runs them in.
var scenarioOrder = []string{"idle", "dispatch", "transfer", "logs", "longpoll", "logstream", "reads"}

// errVersion is parseConfig's answer to --version.
var errVersion = errors.New("version requested")

// parseConfig reads the command line (and CONTROLLER_API_KEY through
// getenv). It returns the configuration and the scenarios to run, in order.
// -h gives flag.ErrHelp, --version errVersion; any other mistake is an error
// after the usage.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (Config, []string, error) {
	cfg := defaults()
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	scenario := "all"
	fs.StringVar(&cfg.URL, "url", cfg.URL, "controller base URL; several nodes of one database: comma-separated, used in turn")
	fs.StringVar(&cfg.Spread, "spread", cfg.Spread, "several nodes: request (each request to the next node) or worker (each dispatch worker's requests to one node, as a balancer that keeps a client on one node)")
	fs.StringVar(&cfg.APIKey, "api-key", "", "admin API key") // the environment's is read after Parse: --help must not print it
	fs.StringVar(&scenario, "scenario", scenario, "idle, dispatch, transfer, logs, longpoll, logstream, reads, all, or a comma-separated list")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "how long idle, logs and logstream run, and longpoll submits")
	fs.IntVar(&cfg.Concurrency, "concurrency", cfg.Concurrency, "idle: polling workers (one goroutine each)")
	fs.IntVar(&cfg.Workers, "workers", cfg.Workers, "dispatch: workers taking builds")
	fs.IntVar(&cfg.Builds, "builds", cfg.Builds, "dispatch: builds to submit")
	fs.IntVar(&cfg.Submitters, "submitters", cfg.Submitters, "dispatch: goroutines submitting builds")
	fs.DurationVar(&cfg.IdlePause, "idle-pause", cfg.IdlePause, "dispatch: pause of a worker after an empty poll")
	sizeFlag(fs, &cfg.ResultSize, "result-size", "dispatch: result uploaded per build")
	sizeFlag(fs, &cfg.Size, "size", "transfer: source and result size")
	fs.IntVar(&cfg.PID, "pid", 0, "controller pid: sample /proc/<pid>/status VmRSS every 50ms (0: none)")
	fs.IntVar(&cfg.LogBatch, "log-batch", cfg.LogBatch, "logs: lines per POST")
	fs.IntVar(&cfg.LogWorkers, "log-workers", cfg.LogWorkers, "logs: workers posting logs (one build each)")
	fs.DurationVar(&cfg.Wait, "wait", cfg.Wait, "longpoll: ?wait= of every poll (whole seconds, 1s to 50s)")
	fs.IntVar(&cfg.LPWorkers, "lp-workers", cfg.LPWorkers, "longpoll: workers holding polls while builds are submitted")
	fs.Float64Var(&cfg.SubmitRate, "submit-rate", cfg.SubmitRate, "longpoll: builds submitted per second, for --duration")
	fs.IntVar(&cfg.LPIdleWorkers, "lp-idle-workers", cfg.LPIdleWorkers, "longpoll: workers holding polls with nothing to do")
	fs.DurationVar(&cfg.LPIdleWindow, "lp-idle-window", cfg.LPIdleWindow, "longpoll: how long the idle workers' cost is measured (cover --wait to include a renewal)")
	fs.IntVar(&cfg.Streams, "streams", cfg.Streams, "logstream: live log streams open at once")
	fs.IntVar(&cfg.StreamBuilds, "stream-builds", cfg.StreamBuilds, "logstream: running builds the streams follow (0: one per stream)")
	fs.Float64Var(&cfg.LineRate, "line-rate", cfg.LineRate, "logstream: lines per second posted to each build")
	fs.IntVar(&cfg.StreamBatch, "stream-batch", cfg.StreamBatch, "logstream: lines per POST")
	fs.StringVar(&cfg.Platform, "platform", cfg.Platform, "platform of submitted builds: android or ios")
	fs.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "per-request timeout (transfers have none)")
	fs.StringVar(&cfg.CPUProfile, "cpu-profile", "", "write the load tool's own CPU profile to this file (go tool pprof)")
	showVersion := fs.Bool("version", false, "print the version and revision and exit")
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: loadgen [flags]\n\nMeasures an Expo Free Agent controller: idle polling, dispatch, large transfers, log ingestion,\n"+
			"long-poll dispatch and idle held polls, live log streams.\n"+
			"Figures go to stdout as `figure name=value unit` lines, a summary to stderr.\n"+
			"Sizes need a unit: B, KiB, MiB or GiB (4KiB; a bare 4096 is refused). Durations use Go syntax (500ms, 10s).\n\nFlags:\n")
		usage.Print(stderr, usage.FromFlagSet(fs, map[string]string{"api-key": "CONTROLLER_API_KEY"}))
	}
	if err := fs.Parse(args); err != nil {
		return cfg, nil, err
	}
	if *showVersion {
		return cfg, nil, errVersion
	}
	if cfg.APIKey == "" {
		cfg.APIKey = getenv("CONTROLLER_API_KEY")
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return cfg, nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	scenarios, err := parseScenarios(scenario)
	if err != nil {
		return cfg, nil, err
	}
	if err := cfg.validate(); err != nil {
		return cfg, nil, err
	}
	cfg.URL = strings.Join(cfg.bases(), ",")
	return cfg, scenarios, nil
}

// bases are the controller URLs of --url: several, comma-separated, are
// nodes sharing one database, and the requests go to them in turn (as a
// round-robin load balancer sends them).
func (c Config) bases() []string {
	var out []string
	for _, u := range strings.Split(c.URL, ",") {
		out = append(out, strings.TrimRight(strings.TrimSpace(u), "/"))
	}
	return out
}

func (c Config) validate() error {
	for _, b := range c.bases() {
		u, err := url.Parse(b)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("invalid --url %q: want http(s)://host:port (several: comma-separated)", b)
		}
	}
	if c.APIKey == "" {
		return errors.New("an API key is required: --api-key or CONTROLLER_API_KEY")
	}
	if c.Spread != "request" && c.Spread != "worker" {
		return fmt.Errorf("invalid --spread %q: request or worker", c.Spread)
	}
	if c.Platform != "android" && c.Platform != "ios" {
		return fmt.Errorf("invalid --platform %q: android or ios", c.Platform)
	}
	for _, v := range []struct {
		name string
		n    int
	}{{"concurrency", c.Concurrency}, {"workers", c.Workers}, {"builds", c.Builds},
		{"submitters", c.Submitters}, {"log-batch", c.LogBatch}, {"log-workers", c.LogWorkers},
		{"lp-workers", c.LPWorkers}, {"lp-idle-workers", c.LPIdleWorkers}, {"streams", c.Streams}, {"stream-batch", c.StreamBatch}} {
		if v.n < 1 {
			return fmt.Errorf("--%s must be at least 1", v.name)
		}
	}
	if c.Duration <= 0 || c.Timeout <= 0 {
		return errors.New("--duration and --timeout must be positive")
	}
	if c.IdlePause < 0 || c.PID < 0 {
		return errors.New("--idle-pause and --pid cannot be negative")
	}
	if c.ResultSize < 1 || c.Size < 1 {
		return errors.New("--result-size and --size must be at least 1 byte")
	}
	if c.Wait < time.Second || c.Wait > maxWait || c.Wait%time.Second != 0 {
		return fmt.Errorf("--wait must be whole seconds from 1s to %s", maxWait)
	}
	if c.LPIdleWindow <= 0 {
		return errors.New("--lp-idle-window must be positive")
	}
	if !(c.SubmitRate > 0) || !(c.LineRate > 0) {
		return errors.New("--submit-rate and --line-rate must be positive")
	}
	if c.StreamBuilds < 0 || c.StreamBuilds > c.Streams {
		return errors.New("--stream-builds must be from 0 to --streams")
	}
	return nil
}

// maxWait is the longest hold the controller grants a poll (docs/API.md
// §4.18).
const maxWait = 50 * time.Second

func parseScenarios(s string) ([]string, error) {
	want := map[string]bool{}
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		switch name {
		case "all":
			for _, n := range scenarioOrder {
				want[n] = true
			}
		case "idle", "dispatch", "transfer", "logs", "longpoll", "logstream", "reads":
			want[name] = true
		default:
			return nil, fmt.Errorf("unknown scenario %q: idle, dispatch, transfer, logs, longpoll, logstream, reads or all", name)
		}
	}
	var out []string
	for _, n := range scenarioOrder {
		if want[n] {
			out = append(out, n)
		}
	}
	return out, nil
}

type sizeValue struct{ p *int64 }

func (s sizeValue) String() string {
	if s.p == nil {
		return ""
	}
	return formatSize(*s.p)
}

func (s sizeValue) Set(v string) error {
	n, err := parseSize(v)
	if err == nil {
		*s.p = n
	}
	return err
}

func sizeFlag(fs *flag.FlagSet, p *int64, name, usage string) { fs.Var(sizeValue{p}, name, usage) }

// parseSize reads a byte count with a binary unit: B, K/KB/KiB, M/MB/MiB,
// G/GB/GiB (all powers of 1024, as the controller's own flags).
func parseSize(s string) (int64, error) { return bytesize.Parse(s) }

// formatSize prints a byte count with the largest exact binary unit.
func formatSize(n int64) string { return bytesize.Format(n) }
