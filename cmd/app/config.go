// Package app turns flags and environment into a Config, constructs every
// service of the controller and runs the supervision tree. It is the only
// package that knows every concrete type; cmd/controller is its thin main,
// and the black-box tests in test/ start the same App.
package app

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/expo-free-agent/controller/actors/clock"
	"github.com/expo-free-agent/controller/actors/files"
	"github.com/expo-free-agent/controller/actors/liveness"
	"github.com/expo-free-agent/controller/actors/queue"
	"github.com/expo-free-agent/controller/actors/webhooks"
	"github.com/expo-free-agent/controller/cmd/internal/bytesize"
	"github.com/expo-free-agent/controller/cmd/internal/usage"
	"github.com/expo-free-agent/controller/store/domain"

	"github.com/expo-free-agent/controller/httpapi"
	"github.com/expo-free-agent/controller/store"
)

// Config is the controller's configuration (docs/API.md §7).
type Config struct {
	Host           string
	Port           int
	DBPath         string
	StoragePath    string
	APIKey         string
	APIKeyFrom     string // where APIKey came from: "--api-key" or "CONTROLLER_API_KEY"; "" when set otherwise
	WorkerKey      string // optional: opens only the worker routes
	BaseImageID    string
	BaseImageV2    string
	WorkerTokenTTL time.Duration
	OTPTTL         time.Duration
	VMTokenTTL     time.Duration
	MaxSourceSize  int64
	MaxCertsSize   int64
	MaxResultSize  int64
	MinFreeDisk    int64 // below this on either volume, submits, retries and uploads get 507; 0: no floor
	BuildTimeout   time.Duration
	WorkerTimeout  time.Duration
	MaxAttempts    int
	MaxWaiters     int    // polls held at once (long-poll)
	MaxStreams     int    // live log streams open at once
	LogFormat      string // text or json
	LogLevel       string // debug, info, warn, error
	MetricsPublic  bool   // serve /metrics without the API key
	// DashboardPublic opens the dashboard's build pages and logs without
	// sign-in.
	DashboardPublic bool
	PprofAddr       string // if set, serve net/http/pprof there (e.g. 127.0.0.1:6060)
	// Retention: builds finished longer ago lose their files; 0 keeps
	// everything (docs/API.md §6.4).
	Retention time.Duration

	// Webhooks (docs/API.md §3.5): off without a URL.
	WebhookURLs   []string // receivers of the build events
	WebhookSecret string   // signs every webhook body; required with a URL

	// Not settable from the command line; tests inject them.
	Clock           clock.Clock
	MonitorInterval time.Duration
	DrainTimeout    time.Duration
	Files           files.FS                 // nil: the real file system
	WrapStore       func(*store.Store) Store // nil: the store itself (fault-injection tests wrap it)
	HeaderTimeout   time.Duration            // 0: 10 s
	BodyReadTimeout time.Duration            // 0: 30 s
	FailureBackoff  time.Duration
	// FreeBytes reads a volume's free bytes (nil: statfs); tests simulate
	// a nearly full disk with it.
	FreeBytes func(dir string) (int64, error)
}

// Defaults returns the configuration with every default of docs/API.md §7.
// Each default is written once, beside the service that owns it; --help
// prints these values.
func Defaults() Config {
	return Config{
		Host: "0.0.0.0", Port: 3000, DBPath: "./data/controller.db", StoragePath: "./storage",
		BaseImageID: httpapi.DefaultBaseImageID, BaseImageV2: httpapi.DefaultBaseImageV2,
		WorkerTokenTTL: httpapi.DefaultWorkerTokenTTL, OTPTTL: httpapi.DefaultOTPTTL, VMTokenTTL: httpapi.DefaultVMTokenTTL,
		MaxSourceSize: httpapi.DefaultMaxSourceSize,
		MaxCertsSize:  httpapi.DefaultMaxCertsSize, MaxResultSize: httpapi.DefaultMaxResultSize, MinFreeDisk: httpapi.DefaultMinFreeDisk,
		BuildTimeout: liveness.DefaultBuildTimeout, WorkerTimeout: liveness.DefaultWorkerTimeout,
		MaxAttempts: domain.DefaultMaxAttempts, MaxWaiters: queue.DefaultMaxWaiters, MaxStreams: httpapi.DefaultMaxStreams, LogFormat: "text", LogLevel: "info",
	}
}

// ErrHelp is returned by ParseArgs for -h/--help (usage was printed).
var ErrHelp = flag.ErrHelp

// ErrVersion is returned by ParseArgs for --version: the caller prints the
// version and exits 0, whatever the other settings say.
var ErrVersion = errors.New("version requested")

// UsageError is a command-line mistake; the usage was printed.
type UsageError struct{ msg string }

func (e *UsageError) Error() string { return e.msg }

// setting binds one flag to its environment variable.
type setting struct {
	flag, env, help string
	apply           func(string) error
	def             string
}

// boolFlags may be given without a value ("--metrics-public" means true).
var boolFlags = map[string]bool{"metrics-public": true, "dashboard-public": true}

// multiFlags may be repeated, each value applied in order; their
// environment variable holds a comma-separated list.
var multiFlags = map[string]bool{"webhook-url": true}

// ParseArgs reads the configuration: each setting from its flag, else its
// environment variable (getenv), else the default. A leading "start" is
// accepted and ignored; any other positional argument is a UsageError.
func ParseArgs(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	if len(args) > 0 && args[0] == "start" {
		args = args[1:]
	}
	const versionHelp = "print the version and revision and exit (same as: controller version)"
	var showVersion bool
	return parseArgs(args, getenv, stderr, command{
		usage: "Usage: controller [start] [flags]\n" +
			"       controller gc [--dry-run] [flags]       (one retention pass now)\n" +
			"       controller backup [--db path] <file>   (a checked snapshot of the live database)\n" +
			"       controller version\n\nRuns the Expo Free Agent build controller.\n",
		flags: func(fs *flag.FlagSet) { fs.BoolVar(&showVersion, "version", false, versionHelp) },
		extra: []usage.Flag{{Name: "version", Help: versionHelp}},
		parsed: func() error {
			if showVersion {
				return ErrVersion
			}
			return nil
		},
	})
}

// command is what a subcommand adds to the settings: its usage text, flags
// of its own with their usage lines, and a check right after the flags are
// parsed (before the settings are applied).
type command struct {
	usage  string
	flags  func(*flag.FlagSet)
	extra  []usage.Flag
	parsed func() error
}

func parseArgs(args []string, getenv func(string) string, stderr io.Writer, cmd command) (Config, error) {
	cfg := Defaults()
	if v := getenv("DATABASE_URL"); v != "" { // the usual name of a PostgreSQL URL; --db and CONTROLLER_DB win
		cfg.DBPath = v
	}
	var port string
	settings := []setting{
		{"host", "CONTROLLER_HOST", "listen address", func(v string) error { cfg.Host = v; return nil }, cfg.Host},
		{"port", "PORT", "listen port (also -p)", func(v string) error { port = v; return nil }, strconv.Itoa(cfg.Port)},
		{"db", "CONTROLLER_DB", "SQLite database file (its directory is created), or a postgres:// URL (several nodes; default: DATABASE_URL when set)", func(v string) error { cfg.DBPath = v; return nil }, store.RedactURL(cfg.DBPath)},
		{"storage", "CONTROLLER_STORAGE", "storage root for sources, certs and results", func(v string) error { cfg.StoragePath = v; return nil }, cfg.StoragePath},
		{"api-key", "CONTROLLER_API_KEY", "admin API key (default: read from or generated into <db dir>/api-key; with PostgreSQL <storage>/api-key)", func(v string) error { cfg.APIKey = v; return nil }, ""},
		{"worker-key", "CONTROLLER_WORKER_KEY", "a second key that opens only the worker routes (optional; at least 16 characters, not the admin key)", func(v string) error { cfg.WorkerKey = v; return nil }, ""},
		{"base-image", "BASE_IMAGE_ID", "VM base image handed to key-authenticated (older) workers", func(v string) error { cfg.BaseImageID = v; return nil }, cfg.BaseImageID},
		{"base-image-v2", "BASE_IMAGE_ID_V2", "VM base image handed to token-authenticated (newer) workers", func(v string) error { cfg.BaseImageV2 = v; return nil }, cfg.BaseImageV2},
		{"worker-token-ttl", "CONTROLLER_WORKER_TOKEN_TTL", "lifetime of a worker token (rotated by polls past half of it)", durationSetter(&cfg.WorkerTokenTTL), seconds(cfg.WorkerTokenTTL)},
		{"otp-ttl", "CONTROLLER_OTP_TTL", "lifetime of a job's one-time password", durationSetter(&cfg.OTPTTL), seconds(cfg.OTPTTL)},
		{"vm-token-ttl", "CONTROLLER_VM_TOKEN_TTL", "longest life of a VM token (it ends with its assignment)", durationSetter(&cfg.VMTokenTTL), seconds(cfg.VMTokenTTL)},
		{"max-source-size", "CONTROLLER_MAX_SOURCE_SIZE", "largest source upload", sizeSetter(&cfg.MaxSourceSize), bytesize.Format(cfg.MaxSourceSize)},
		{"max-certs-size", "CONTROLLER_MAX_CERTS_SIZE", "largest certs upload", sizeSetter(&cfg.MaxCertsSize), bytesize.Format(cfg.MaxCertsSize)},
		{"max-result-size", "CONTROLLER_MAX_RESULT_SIZE", "largest result upload", sizeSetter(&cfg.MaxResultSize), bytesize.Format(cfg.MaxResultSize)},
		{"min-free-disk", "CONTROLLER_MIN_FREE_DISK", "free space to keep on the database's and the storage's volumes: below it, submits, retries and uploads get 507 Insufficient storage (0: no floor)", floorSetter(&cfg.MinFreeDisk), bytesize.Format(cfg.MinFreeDisk)},
		{"build-timeout", "CONTROLLER_BUILD_TIMEOUT", "no liveness for this long requeues a build", durationSetter(&cfg.BuildTimeout), seconds(cfg.BuildTimeout)},
		{"worker-timeout", "CONTROLLER_WORKER_TIMEOUT", "not seen for this long marks a worker offline", durationSetter(&cfg.WorkerTimeout), seconds(cfg.WorkerTimeout)},
		{"max-waiters", "CONTROLLER_MAX_WAITERS", "worker polls held at once by ?wait= (beyond, a poll is answered at once)", intSetter(&cfg.MaxWaiters), strconv.Itoa(cfg.MaxWaiters)},
		{"max-streams", "CONTROLLER_MAX_STREAMS", "live log streams open at once (beyond, 503 Too many log streams)", intSetter(&cfg.MaxStreams), strconv.Itoa(cfg.MaxStreams)},
		{"max-attempts", "CONTROLLER_MAX_ATTEMPTS", "timeouts before a build fails", intSetter(&cfg.MaxAttempts), strconv.Itoa(cfg.MaxAttempts)},
		{"log-format", "CONTROLLER_LOG_FORMAT", "server log format: text or json", choiceSetter(&cfg.LogFormat, "text", "json"), cfg.LogFormat},
		{"log-level", "CONTROLLER_LOG_LEVEL", "server log level: debug, info, warn or error", choiceSetter(&cfg.LogLevel, "debug", "info", "warn", "error"), cfg.LogLevel},
		{"metrics-public", "CONTROLLER_METRICS_PUBLIC", "serve /metrics without the API key", boolSetter(&cfg.MetricsPublic), strconv.FormatBool(cfg.MetricsPublic)},
		{"dashboard-public", "CONTROLLER_DASHBOARD_PUBLIC", "show build pages, history and logs without sign-in", boolSetter(&cfg.DashboardPublic), strconv.FormatBool(cfg.DashboardPublic)},
		{"pprof-addr", "CONTROLLER_PPROF_ADDR", "serve Go profiles (net/http/pprof) on this address, e.g. 127.0.0.1:6060; off when empty", func(v string) error { cfg.PprofAddr = v; return nil }, ""},
		{"webhook-url", "CONTROLLER_WEBHOOK_URLS", "POST build events to this http(s) URL; repeat for more (the environment takes a comma-separated list); off when none", webhookURLSetter(&cfg.WebhookURLs), ""},
		{"retention", "CONTROLLER_RETENTION", "delete the files of builds finished longer ago than this (e.g. 720h or 30d); 0 keeps everything", retentionSetter(&cfg.Retention), "0"},
		{"webhook-secret", "CONTROLLER_WEBHOOK_SECRET", "key of the webhooks' HMAC-SHA256 signature; required with --webhook-url, at least 16 characters", func(v string) error { cfg.WebhookSecret = v; return nil }, ""},
	}
	fs := flag.NewFlagSet("controller", flag.ContinueOnError)
	fs.SetOutput(stderr)
	given := map[string]string{}
	lists := map[string][]string{} // every value of a multiFlags flag
	for _, s := range settings {
		name := s.flag
		record := func(v string) error {
			given[name] = v
			lists[name] = append(lists[name], v)
			return nil
		}
		if boolFlags[name] {
			fs.BoolFunc(name, s.help, record)
		} else {
			fs.Func(name, s.help, record)
		}
	}
	fs.Func("p", "listen port (same as --port)", func(v string) error { given["port"] = v; return nil })
	if cmd.flags != nil {
		cmd.flags(fs)
	}
	fs.Usage = func() {
		fmt.Fprint(stderr, cmd.usage+
			"Each setting comes from its flag, else its environment variable, else the default.\n"+
			"Sizes need a unit: B, KiB, MiB or GiB (500MiB; a bare 500 is refused). Durations use Go syntax (90s, 5m).\n"+
			"Switches take true or false (--metrics-public alone is true).\n\nFlags:\n")
		lines := make([]usage.Flag, 0, len(settings)+1)
		for _, s := range settings {
			lines = append(lines, usage.Flag{Name: s.flag, Help: s.help, Env: s.env, Default: s.def})
		}
		usage.Print(stderr, append(lines, cmd.extra...))
	}
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if cmd.parsed != nil {
		if err := cmd.parsed(); err != nil {
			return cfg, err
		}
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return cfg, &UsageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	for _, s := range settings {
		v, ok := given[s.flag]
		values := []string{v}
		if multiFlags[s.flag] {
			values = lists[s.flag]
		}
		if !ok {
			v = getenv(s.env)
			if v == "" {
				continue
			}
			values = []string{v}
			if multiFlags[s.flag] {
				values = splitList(v)
			}
		}
		for _, v := range values {
			if err := s.apply(v); err != nil {
				return cfg, &UsageError{fmt.Sprintf("invalid --%s %q: %v", s.flag, v, err)}
			}
		}
	}
	if err := cfg.checkWebhooks(); err != nil {
		return cfg, &UsageError{err.Error()}
	}
	if port != "" {
		p, err := strconv.Atoi(port)
		if err != nil || p < 0 || p > 65535 {
			return cfg, &UsageError{fmt.Sprintf("invalid --port %q: must be a number from 0 to 65535 (0: any free port)", port)}
		}
		cfg.Port = p
	}
	if _, flagged := given["api-key"]; cfg.APIKey != "" && flagged {
		cfg.APIKeyFrom = "--api-key"
	} else if cfg.APIKey != "" {
		cfg.APIKeyFrom = "CONTROLLER_API_KEY"
	}
	return cfg, nil
}

// seconds writes a duration the way --help shows it: "300s", "1h", "10m".
func seconds(d time.Duration) string {
	switch {
	case d >= time.Hour && d%time.Hour == 0:
		return strconv.Itoa(int(d/time.Hour)) + "h"
	case d > 5*time.Minute && d%time.Minute == 0:
		return strconv.Itoa(int(d/time.Minute)) + "m"
	}
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s"
}

// splitList reads a comma-separated list, ignoring spaces and empty items.
func splitList(v string) []string {
	var out []string
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// webhookURLSetter adds an absolute http or https URL to the list, once.
func webhookURLSetter(dst *[]string) func(string) error {
	return func(v string) error {
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return errors.New("must be an absolute http or https URL")
		}
		if !slices.Contains(*dst, v) {
			*dst = append(*dst, v)
		}
		return nil
	}
}

// checkWebhooks refuses webhook URLs without a secret of at least
// webhooks.MinSecretLength characters (docs/API.md §7).
func (c Config) checkWebhooks() error {
	switch {
	case len(c.WebhookURLs) == 0:
		return nil
	case c.WebhookSecret == "":
		return errors.New("--webhook-secret is required with --webhook-url")
	case len(c.WebhookSecret) < webhooks.MinSecretLength:
		return fmt.Errorf("webhook secret must be at least %d characters", webhooks.MinSecretLength)
	}
	return nil
}

func sizeSetter(dst *int64) func(string) error {
	return func(v string) error {
		n, err := ParseSize(v)
		if err == nil {
			*dst = n
		}
		return err
	}
}

// floorSetter is sizeSetter, but takes 0 too (no floor).
func floorSetter(dst *int64) func(string) error {
	return func(v string) error {
		n, err := bytesize.Parse(v)
		if err == nil {
			*dst = n
		}
		return err
	}
}

func durationSetter(dst *time.Duration) func(string) error {
	return func(v string) error {
		d, err := time.ParseDuration(v)
		switch {
		case err != nil:
			return errors.New("must be a duration with a unit, e.g. 90s, 5m or 1h")
		case d <= 0:
			return errors.New("must be positive")
		}
		*dst = d
		return nil
	}
}

// retentionSetter reads a retention: a Go duration (720h) or whole days
// (30d), 0 or more; 0 keeps everything.
func retentionSetter(dst *time.Duration) func(string) error {
	return func(v string) error {
		var d time.Duration
		var err error
		if days, ok := strings.CutSuffix(v, "d"); ok {
			var n int
			n, err = strconv.Atoi(days)
			if err == nil && n > 1<<20 {
				err = errors.New("too many days")
			}
			d = time.Duration(n) * 24 * time.Hour
		} else {
			d, err = time.ParseDuration(v)
		}
		if err == nil && d < 0 {
			err = errors.New("must not be negative")
		}
		if err != nil {
			return errors.New("must be a duration such as 720h or 30d, or 0")
		}
		*dst = d
		return nil
	}
}

func intSetter(dst *int) func(string) error {
	return func(v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return errors.New("must be a whole number, at least 1")
		}
		*dst = n
		return nil
	}
}

func boolSetter(dst *bool) func(string) error {
	return func(v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return errors.New("must be true or false (or 1 or 0)")
		}
		*dst = b
		return nil
	}
}

func choiceSetter(dst *string, choices ...string) func(string) error {
	return func(v string) error {
		for _, c := range choices {
			if v == c {
				*dst = v
				return nil
			}
		}
		return fmt.Errorf("must be one of %s", strings.Join(choices, ", "))
	}
}

// ParseSize reads a byte size: a positive number with a B, KiB, MiB or GiB
// (or KB, MB, GB, K, M, G, all binary) unit. A bare number is refused: 500
// meant as megabytes would be 500 bytes and refuse every upload.
func ParseSize(s string) (int64, error) {
	n, err := bytesize.Parse(s)
	if err == nil && n <= 0 {
		err = errors.New("size must be positive")
	}
	return n, err
}

// MinAPIKeyLength is the shortest admin key accepted.
const MinAPIKeyLength = 16

var keyChars = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// ErrConfig marks a configuration mistake: retrying cannot help, so the
// controller exits with status 2 (docs/API.md §7).
var ErrConfig = errors.New("configuration error")

// configError is a configuration mistake with its own message.
type configError struct{ msg string }

func (e configError) Error() string        { return e.msg }
func (e configError) Is(target error) bool { return target == ErrConfig }

// why is the reason a file operation failed, without the operation and the
// path ("permission denied").
func why(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// KeyFile is where the admin key is read from or generated into when none is
// configured: <db dir>/api-key beside a SQLite database; with PostgreSQL,
// <storage>/api-key, in the storage root the nodes share, so that every node
// reads the one key the first generated.
func KeyFile(cfg Config) string {
	if store.IsPostgresURL(cfg.DBPath) {
		return filepath.Join(cfg.StoragePath, "api-key")
	}
	return filepath.Join(filepath.Dir(cfg.DBPath), "api-key")
}

// saveNewKey creates path holding key, unless it exists: then it returns
// the key already there. The file is written whole under a temporary name
// and linked into place, so a reader never sees it half written.
func saveNewKey(path, key string) (string, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".api-key-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return "", err
	}
	if _, err := tmp.WriteString(key + "\n"); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	if err := os.Link(tmp.Name(), path); errors.Is(err, os.ErrExist) {
		b, err := os.ReadFile(path)
		return strings.TrimSpace(string(b)), err
	} else if err != nil {
		return "", err
	}
	return key, nil
}

// ResolveAPIKey settles the admin key: the configured one, else the trimmed
// contents of the key file (KeyFile), else a new 43-character key written there
// with mode 0600 and printed once to out. It says on out where the key came
// from. A key under 16 characters is an error (ErrConfig); characters
// outside [A-Za-z0-9_-], and a key file that holds another key than the
// configured one (its readers would be refused), give warnings.
func ResolveAPIKey(cfg *Config, out io.Writer) (warnings []string, err error) {
	path := KeyFile(*cfg)
	if cfg.APIKey != "" {
		switch cfg.APIKeyFrom {
		case "--api-key":
			fmt.Fprintln(out, "API key from the --api-key flag")
		case "CONTROLLER_API_KEY":
			fmt.Fprintln(out, "API key from the environment (CONTROLLER_API_KEY)")
		default:
			fmt.Fprintln(out, "API key from the configuration")
		}
		if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) != cfg.APIKey {
			warnings = append(warnings, fmt.Sprintf("%s holds a different key than the configured one and is not used; "+
				"clients that read it get 403 Invalid API key: delete it or put the configured key in it", path))
		}
	}
	if cfg.APIKey == "" {
		b, err := os.ReadFile(path)
		switch {
		case err == nil:
			cfg.APIKey = strings.TrimSpace(string(b))
			fmt.Fprintf(out, "API key read from %s\n", path)
		case errors.Is(err, os.ErrNotExist):
			var raw [32]byte
			if _, err := rand.Read(raw[:]); err != nil {
				return nil, err
			}
			cfg.APIKey = base64.RawURLEncoding.EncodeToString(raw[:])
			if store.IsPostgresURL(cfg.DBPath) {
				if err := os.MkdirAll(cfg.StoragePath, 0o750); err != nil {
					return nil, configError{fmt.Sprintf("cannot create the storage directory %s: %s", cfg.StoragePath, why(err))}
				}
			} else if err := store.PrepareDir(path); err != nil {
				return nil, err
			}
			// Created, never overwritten: nodes that start together on one
			// storage root all end up with the first one's key.
			saved, err := saveNewKey(path, cfg.APIKey)
			if err != nil {
				return nil, configError{fmt.Sprintf("cannot save the generated API key to %s: %s", path, why(err))}
			}
			if saved != cfg.APIKey {
				cfg.APIKey = saved
				fmt.Fprintf(out, "API key read from %s\n", path)
				break
			}
			fmt.Fprintf(out, "Generated API key (saved to %s; shown only this once):\n\n    %s\n\n", path, cfg.APIKey)
		default:
			return nil, configError{fmt.Sprintf("cannot read the API key file %s: %s (make it readable for the "+
				"controller's user, or give the key with --api-key or CONTROLLER_API_KEY)", path, why(err))}
		}
	}
	if len(cfg.APIKey) < MinAPIKeyLength {
		return nil, configError{"API key must be at least 16 characters"}
	}
	if cfg.WorkerKey != "" && len(cfg.WorkerKey) < MinAPIKeyLength {
		return nil, configError{"worker key must be at least 16 characters"}
	}
	if cfg.WorkerKey != "" && cfg.WorkerKey == cfg.APIKey {
		return nil, configError{"worker key must differ from the API key (it opens only the worker routes)"}
	}
	if !keyChars.MatchString(cfg.APIKey) {
		warnings = append(warnings, "API key contains characters outside [A-Za-z0-9_-]; the worker VM bootstrap refuses such keys")
	}
	if cfg.WorkerKey != "" && !keyChars.MatchString(cfg.WorkerKey) {
		warnings = append(warnings, "worker key contains characters outside [A-Za-z0-9_-]; the older worker VMs, which are given it, refuse such keys")
	}
	return warnings, nil
}
