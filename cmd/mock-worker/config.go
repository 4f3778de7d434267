package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/expo-free-agent/controller/cmd/internal/bytesize"
	"github.com/expo-free-agent/controller/cmd/internal/usage"
)

// DefaultAPIKey is the development key the TypeScript mock worker defaults
// to. Using it prints a warning: a real controller generates its own key.
const DefaultAPIKey = "dev-insecure-key-change-in-production"

// Config is everything the worker loop needs. ParseArgs fills the settings
// from flags and environment; the fields after the blank line are for tests.
type Config struct {
	URL               string        // controller base URL, no trailing slash
	APIKey            string        // admin key sent as X-API-Key
	APIKeyDefaulted   bool          // APIKey is DefaultAPIKey because none was given
	Name              string        // worker name shown on the dashboard
	Platforms         []string      // ios and/or android
	PollInterval      time.Duration // time between polls while idle (interval polling), and the first backoff
	Wait              time.Duration // long-poll: how long the controller may hold a poll (?wait=, whole seconds); 0 = interval polling
	HeartbeatInterval time.Duration // time between telemetry heartbeats during a build
	BuildTime         time.Duration // how long a fake build takes
	FailRate          float64       // probability that a build reports failure
	ResultSize        int64         // bytes of the fake result file
	StateFile         string        // where the worker id is kept; "" keeps nothing
	Once              bool          // exit after one build
	MaxBuilds         int           // exit after this many builds; 0 = unlimited
	LogBatch          int           // build log lines per POST
	Quiet             bool          // only warnings and errors
	Verbose           bool          // also every request
	Protocol          string        // worker generation: ProtocolV1 or ProtocolV2
	VMStatusInterval  time.Duration // v2: time between the host's vm-status checks

	HTTPClient     *http.Client     // nil: a client of our own
	Seed           uint64           // non-zero: a fixed seed for the fake metrics and failures
	TempDir        string           // where downloaded sources go; "" = os.TempDir()
	Now            func() time.Time // nil: time.Now
	VMReadyTimeout time.Duration    // v2: how long the host waits for the VM; 0 = 300 s
}

// The worker generations the mock can speak.
const (
	ProtocolV1 = "v1" // admin key and worker id on every request
	ProtocolV2 = "v2" // worker token for the host, one-time password and VM token for the VM
)

// ErrVersion is returned by ParseArgs for --version: print the version and
// exit 0, whatever the other settings say.
var ErrVersion = errors.New("version requested")

// UsageError is a command-line mistake (exit status 2).
type UsageError struct{ msg string }

func (e *UsageError) Error() string { return e.msg }

// setting binds one flag to its environment variable and its default.
type setting struct {
	flag, env, def, help string
	isBool               bool
	apply                func(string) error
}

// ParseArgs reads the configuration: each setting from its flag, else its
// environment variable (read through getenv), else its default. It returns
// flag.ErrHelp after printing the usage for -h, ErrVersion for --version,
// and a *UsageError for any other mistake.
func ParseArgs(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	cfg := Config{}
	var name, stateFile string
	settings := []setting{
		{flag: "url", env: "CONTROLLER_URL", def: "http://localhost:3000", help: "controller base `URL`",
			apply: func(v string) error { return setURL(&cfg.URL, v) }},
		{flag: "api-key", env: "CONTROLLER_API_KEY", def: "", help: "controller API `key`; if unset, the insecure development key " + DefaultAPIKey + " (with a warning)",
			apply: func(v string) error { cfg.APIKey = v; return nil }},
		{flag: "name", env: "MOCK_WORKER_NAME", def: "mock-worker-<hostname>", help: "worker `name` shown by the controller",
			apply: func(v string) error { name = v; return nil }},
		{flag: "platforms", env: "MOCK_WORKER_PLATFORMS", def: "ios,android", help: "comma-separated `platforms` to accept (ios, android)",
			apply: func(v string) error { return setPlatforms(&cfg.Platforms, v) }},
		{flag: "wait", env: "MOCK_WORKER_WAIT", def: "30s", help: "long-poll: how long the controller may hold a poll that finds no build (`duration`, whole seconds, at most 50s); 0 polls every --poll-interval instead",
			apply: func(v string) error {
				d, err := parseWait(v)
				cfg.Wait = d
				return err
			}},
		{flag: "poll-interval", env: "MOCK_WORKER_POLL_INTERVAL", def: "5s", help: "`time` between polls while idle with --wait 0 (and after an empty answer that came back early); the first retry delay",
			apply: durationSetter(&cfg.PollInterval)},
		{flag: "heartbeat-interval", env: "MOCK_WORKER_HEARTBEAT_INTERVAL", def: "10s", help: "`time` between telemetry heartbeats during a build",
			apply: durationSetter(&cfg.HeartbeatInterval)},
		{flag: "build-time", env: "MOCK_WORKER_BUILD_TIME", def: "3s", help: "how long a fake build takes (`duration`)",
			apply: durationSetter(&cfg.BuildTime)},
		{flag: "fail-rate", env: "MOCK_WORKER_FAIL_RATE", def: "0", help: "`probability` (0..1) that a build reports failure",
			apply: func(v string) error {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil || f < 0 || f > 1 {
					return errors.New("must be a number between 0 and 1")
				}
				cfg.FailRate = f
				return nil
			}},
		{flag: "result-size", env: "MOCK_WORKER_RESULT_SIZE", def: "1MiB", help: "`size` of the fake result file (B, KiB, MiB, GiB)",
			apply: func(v string) error {
				n, err := parseSize(v)
				cfg.ResultSize = n
				return err
			}},
		{flag: "state-file", env: "MOCK_WORKER_STATE_FILE", def: "~/.config/expo-free-agent/mock-worker-<name>.json", help: "`file` keeping the worker id across restarts (\"-\": none)",
			apply: func(v string) error { stateFile = v; return nil }},
		{flag: "once", env: "MOCK_WORKER_ONCE", def: "false", help: "exit after one build", isBool: true,
			apply: boolSetter(&cfg.Once)},
		{flag: "max-builds", env: "MOCK_WORKER_MAX_BUILDS", def: "0", help: "exit after `N` builds (0: unlimited)",
			apply: func(v string) error {
				n, err := strconv.Atoi(v)
				if err != nil || n < 0 {
					return errors.New("must be a whole number, 0 or more")
				}
				cfg.MaxBuilds = n
				return nil
			}},
		{flag: "log-batch", env: "MOCK_WORKER_LOG_BATCH", def: "10", help: "build log `lines` per POST",
			apply: func(v string) error {
				n, err := strconv.Atoi(v)
				if err != nil || n < 1 || n > 1000 {
					return errors.New("must be between 1 and 1000")
				}
				cfg.LogBatch = n
				return nil
			}},
		{flag: "protocol", env: "MOCK_WORKER_PROTOCOL", def: ProtocolV1, help: "worker `generation` to speak: v1 (admin key and worker id) or v2 (worker token, VM one-time password and tokens)",
			apply: func(v string) error {
				v = strings.ToLower(strings.TrimSpace(v))
				if v != ProtocolV1 && v != ProtocolV2 {
					return errors.New("must be v1 or v2")
				}
				cfg.Protocol = v
				return nil
			}},
		{flag: "vm-status-interval", env: "MOCK_WORKER_VM_STATUS_INTERVAL", def: "2s", help: "v2: `time` between the host's checks whether the VM is ready",
			apply: durationSetter(&cfg.VMStatusInterval)},
		{flag: "quiet", env: "MOCK_WORKER_QUIET", def: "false", help: "print only warnings and errors", isBool: true,
			apply: boolSetter(&cfg.Quiet)},
		{flag: "verbose", env: "MOCK_WORKER_VERBOSE", def: "false", help: "also print every request", isBool: true,
			apply: boolSetter(&cfg.Verbose)},
	}

	fs := flag.NewFlagSet("mock-worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	given := map[string]string{}
	for _, s := range settings {
		name := s.flag
		record := func(v string) error { given[name] = v; return nil }
		if s.isBool {
			fs.BoolFunc(name, s.help, record)
		} else {
			fs.Func(name, s.help, record)
		}
	}
	showVersion := fs.Bool("version", false, "print the version and revision and exit")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: mock-worker [flags]

A fake Expo Free Agent worker for Linux: it registers with a controller, polls
for builds (long-polls: each poll may be held up to --wait), downloads the
source, streams fake logs and telemetry and uploads a fake result, like the
macOS worker does on the wire. With --protocol v2 it plays the newer macOS
host and its build VM (worker token, one-time password, VM token).

Each setting comes from its flag, else its environment variable, else the
default. Sizes need a unit: B, KiB, MiB or GiB (2048B, 1MiB; a bare 2048 is
refused). Durations use Go syntax (500ms, 5s, 2m). Switches take true or
false (--once alone is true).

Flags:
`)
		lines := make([]usage.Flag, len(settings))
		for i, s := range settings {
			lines[i] = usage.Flag{Name: s.flag, Help: s.help, Env: s.env, Default: s.def}
		}
		usage.Print(stderr, lines)
	}
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if *showVersion {
		return cfg, ErrVersion
	}
	if fs.NArg() > 0 {
		return cfg, &UsageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	for _, s := range settings {
		v, ok := given[s.flag]
		if !ok {
			if v = getenv(s.env); v == "" {
				v = s.def
				if strings.Contains(v, "<") || v == "" {
					continue // computed below
				}
			}
		}
		if err := s.apply(v); err != nil {
			return cfg, &UsageError{fmt.Sprintf("invalid --%s %q: %v", s.flag, v, err)}
		}
	}
	if cfg.APIKey == "" {
		cfg.APIKey, cfg.APIKeyDefaulted = DefaultAPIKey, true
	}
	if name == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "linux"
		}
		name = "mock-worker-" + host
	}
	cfg.Name = name
	switch stateFile {
	case "-":
		cfg.StateFile = ""
	case "":
		cfg.StateFile = defaultStateFile(name, getenv)
	default:
		cfg.StateFile = expandHome(stateFile, getenv)
	}
	if cfg.Quiet && cfg.Verbose {
		return cfg, &UsageError{"--quiet and --verbose exclude each other"}
	}
	return cfg, nil
}

func setURL(dst *string, v string) error {
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("must be an http:// or https:// URL")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return errors.New("must not have a query or fragment")
	}
	*dst = strings.TrimRight(v, "/")
	return nil
}

func setPlatforms(dst *[]string, v string) error {
	var out []string
	seen := map[string]bool{}
	for _, p := range strings.Split(v, ",") {
		p = strings.ToLower(strings.TrimSpace(p))
		if p == "" {
			continue
		}
		if p != "ios" && p != "android" {
			return fmt.Errorf("unknown platform %q (want ios, android)", p)
		}
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return errors.New("need at least one platform")
	}
	*dst = out
	return nil
}

func durationSetter(dst *time.Duration) func(string) error {
	return func(v string) error {
		d, err := time.ParseDuration(v)
		if err != nil {
			return errors.New("must be a duration with a unit, e.g. 500ms, 5s or 2m")
		}
		if d <= 0 {
			return errors.New("must be positive")
		}
		*dst = d
		return nil
	}
}

func boolSetter(dst *bool) func(string) error {
	return func(v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return errors.New("must be true or false")
		}
		*dst = b
		return nil
	}
}

// maxWait is the longest hold the controller grants a poll (docs/API.md
// §4.18): it takes a larger ?wait= as 50 s.
const maxWait = 50 * time.Second

// parseWait reads --wait: a Go duration or a bare number of seconds, in whole
// seconds from 0 to maxWait (the controller's ?wait= is whole seconds).
func parseWait(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		n, nerr := strconv.Atoi(strings.TrimSpace(v))
		if nerr != nil {
			return 0, errors.New("must be a duration such as 30s, or 0")
		}
		d = time.Duration(n) * time.Second
	}
	switch {
	case d < 0 || d > maxWait:
		return 0, fmt.Errorf("must be between 0 and %s", maxWait)
	case d%time.Second != 0:
		return 0, errors.New("must be whole seconds")
	}
	return d, nil
}

// parseSize reads a byte count: a whole number with a binary unit (B,
// K/KB/KiB, M/MB/MiB, G/GB/GiB). Zero is refused: the controller
// treats an empty result file as no file.
func parseSize(s string) (int64, error) {
	n, err := bytesize.Parse(s)
	if err == nil && (n <= 0 || n > 1<<40) {
		err = errors.New("must be between 1 byte and 1 TiB")
	}
	return n, err
}

// configDir is $XDG_CONFIG_HOME, else $HOME/.config, else os.UserConfigDir.
func configDir(getenv func(string) string) string {
	if x := getenv("XDG_CONFIG_HOME"); filepath.IsAbs(x) {
		return x
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".config")
	}
	if d, err := os.UserConfigDir(); err == nil {
		return d
	}
	return ""
}

// defaultStateFile is <config dir>/expo-free-agent/mock-worker-<name>.json,
// with the name reduced to file-safe characters; "" when there is no
// configuration directory.
func defaultStateFile(name string, getenv func(string) string) string {
	dir := configDir(getenv)
	if dir == "" {
		return ""
	}
	safe := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '_'
	}, name)
	return filepath.Join(dir, "expo-free-agent", "mock-worker-"+safe+".json")
}

// expandHome replaces a leading ~/ by $HOME.
func expandHome(p string, getenv func(string) string) string {
	if strings.HasPrefix(p, "~/") {
		if h := getenv("HOME"); h != "" {
			return filepath.Join(h, p[2:])
		}
	}
	return p
}
