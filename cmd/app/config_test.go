package app

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestParseArgsDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := ParseArgs(nil, env(nil), &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, Defaults(), cfg)
	require.Equal(t, "0.0.0.0", cfg.Host)
	require.Equal(t, 3000, cfg.Port)
	require.Equal(t, "./data/controller.db", cfg.DBPath)
	require.Equal(t, "./storage", cfg.StoragePath)
	require.Equal(t, int64(500<<20), cfg.MaxSourceSize)
	require.Equal(t, int64(50<<20), cfg.MaxCertsSize)
	require.Equal(t, int64(1<<30), cfg.MaxResultSize)
	require.Equal(t, int64(1<<30), cfg.MinFreeDisk)
	require.Equal(t, 300*time.Second, cfg.BuildTimeout)
	require.Equal(t, 300*time.Second, cfg.WorkerTimeout)
	require.Equal(t, 3, cfg.MaxAttempts)
	require.Equal(t, "ghcr.io/sethwebster/expo-free-agent-base:0.1.23", cfg.BaseImageID)
	require.Empty(t, cfg.APIKey)
}

func TestParseArgsFlagBeatsEnvBeatsDefault(t *testing.T) {
	t.Parallel()
	e := env(map[string]string{
		"PORT": "4000", "CONTROLLER_HOST": "127.0.0.1", "CONTROLLER_DB": "/env/db", "CONTROLLER_STORAGE": "/env/st",
		"CONTROLLER_API_KEY": "env-key-0123456789", "BASE_IMAGE_ID": "img:env", "CONTROLLER_MAX_SOURCE_SIZE": "10MiB",
		"CONTROLLER_MAX_CERTS_SIZE": "1MiB", "CONTROLLER_MAX_RESULT_SIZE": "2GiB", "CONTROLLER_BUILD_TIMEOUT": "90s",
		"CONTROLLER_WORKER_TIMEOUT": "2m", "CONTROLLER_MAX_ATTEMPTS": "5", "CONTROLLER_LOG_FORMAT": "json",
		"CONTROLLER_LOG_LEVEL": "debug", "CONTROLLER_METRICS_PUBLIC": "true", "CONTROLLER_MIN_FREE_DISK": "5GiB",
	})
	cfg, err := ParseArgs([]string{"start", "-p", "5000", "--db", "/flag/db", "--max-source-size", "64KiB", "--max-attempts=7"}, e, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, 5000, cfg.Port)
	require.Equal(t, "127.0.0.1", cfg.Host)
	require.Equal(t, "/flag/db", cfg.DBPath)
	require.Equal(t, "/env/st", cfg.StoragePath)
	require.Equal(t, "env-key-0123456789", cfg.APIKey)
	require.Equal(t, "img:env", cfg.BaseImageID)
	require.Equal(t, int64(64<<10), cfg.MaxSourceSize)
	require.Equal(t, int64(1<<20), cfg.MaxCertsSize)
	require.Equal(t, int64(2<<30), cfg.MaxResultSize)
	require.Equal(t, 90*time.Second, cfg.BuildTimeout)
	require.Equal(t, 2*time.Minute, cfg.WorkerTimeout)
	require.Equal(t, 7, cfg.MaxAttempts)
	require.Equal(t, "json", cfg.LogFormat)
	require.Equal(t, "debug", cfg.LogLevel)
	require.True(t, cfg.MetricsPublic)
	require.Equal(t, int64(5<<30), cfg.MinFreeDisk)

	cfg, err = ParseArgs([]string{"--port", "6000", "--min-free-disk", "0"}, e, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, 6000, cfg.Port)
	require.Zero(t, cfg.MinFreeDisk, "0 turns the floor off")
}

func TestParseArgsErrors(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"serve"}, {"start", "extra"}, {"--port", "x"}, {"--port", "70000"}, {"--max-source-size", "lots"},
		{"--max-certs-size", "5TB"}, {"--build-timeout", "5"}, {"--build-timeout", "-1s"}, {"--max-attempts", "0"},
		{"--log-format", "xml"}, {"--metrics-public", "maybe"}, {"--nope"}, {"--retention", "-1h"}, {"--retention", "30days"},
		{"--retention", "1.5d"}, {"--retention", "d"}, {"--min-free-disk", "-1"}, {"--min-free-disk", "1.5GiB"},
	} {
		var out bytes.Buffer
		_, err := ParseArgs(args, env(nil), &out)
		require.Error(t, err, "%v", args)
		require.False(t, errors.Is(err, ErrHelp))
	}
	var out bytes.Buffer
	_, err := ParseArgs([]string{"-h"}, env(nil), &out)
	require.ErrorIs(t, err, ErrHelp)
	require.Contains(t, out.String(), "Usage: controller [start] [flags]")
	require.Contains(t, out.String(), "CONTROLLER_MAX_RESULT_SIZE")
	// One line per setting: the flag, its help, its variable and default
	// (sizes with their unit).
	require.Regexp(t, `(?m)^  --max-source-size +largest source upload \(env CONTROLLER_MAX_SOURCE_SIZE, default 500MiB\)$`, out.String())
	require.Regexp(t, `(?m)^  --build-timeout +no liveness for this long requeues a build \(env CONTROLLER_BUILD_TIMEOUT, default 300s\)$`, out.String())
	require.Regexp(t, `(?m)^  --api-key +admin API key .*\(env CONTROLLER_API_KEY\)$`, out.String())
	require.Equal(t, strings.Count(out.String(), "\n  --")-1, strings.Count(out.String(), " (env "),
		"every setting names its variable (--version is no setting)")
	require.Regexp(t, `(?m)^  --version +print the version and revision and exit`, out.String())
	require.Greater(t, strings.Count(out.String(), "\n  --"), 20)
}

// TestParseArgsVersion: --version wins over any other setting, however
// wrong, and prints nothing itself (the caller prints the version).
func TestParseArgsVersion(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"--version"}, {"-version"}, {"start", "--version"}, {"--port", "70000", "--version"}} {
		var out bytes.Buffer
		_, err := ParseArgs(args, env(map[string]string{"CONTROLLER_MAX_ATTEMPTS": "0"}), &out)
		require.ErrorIs(t, err, ErrVersion, "%v", args)
		require.Empty(t, out.String())
	}
	var out bytes.Buffer
	_, err := ParseArgs([]string{"-h"}, env(nil), &out)
	require.ErrorIs(t, err, ErrHelp)
	require.Contains(t, out.String(), "print the version and revision and exit")
}

func TestParseSize(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{"1B": 1, "500MiB": 500 << 20, "50 MiB": 50 << 20, "1GiB": 1 << 30,
		"64KiB": 64 << 10, "2g": 2 << 30, "10mb": 10 << 20, "7B": 7} {
		got, err := ParseSize(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "MiB", "-1", "0", "0MiB", "500", "1.5GiB", "1TiB", "99999999999999999999"} {
		_, err := ParseSize(in)
		require.Error(t, err, in)
	}
}

// TestParseArgsErrorMessages: every kind of setting says what it accepts,
// never a Go parser's text (strconv.ParseBool: parsing …).
func TestParseArgsErrorMessages(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		env  map[string]string
		err  string
	}{
		{[]string{"--max-source-size", "500"}, nil, `invalid --max-source-size "500": 500 needs a unit: 500B for bytes, or 500KiB, 500MiB, 500GiB`},
		{nil, map[string]string{"CONTROLLER_MAX_RESULT_SIZE": "2048"}, `invalid --max-result-size "2048": 2048 needs a unit: 2048B for bytes, or 2048KiB, 2048MiB, 2048GiB`},
		{[]string{"--max-certs-size", "0"}, nil, `invalid --max-certs-size "0": size must be positive`},
		{[]string{"--max-certs-size", "5TB"}, nil, `invalid --max-certs-size "5TB": unknown size suffix "TB"`},
		{[]string{"--metrics-public=yes"}, nil, `invalid --metrics-public "yes": must be true or false (or 1 or 0)`},
		{nil, map[string]string{"CONTROLLER_METRICS_PUBLIC": "on"}, `invalid --metrics-public "on": must be true or false (or 1 or 0)`},
		{[]string{"--build-timeout", "300"}, nil, `invalid --build-timeout "300": must be a duration with a unit, e.g. 90s, 5m or 1h`},
		{[]string{"--otp-ttl", "-1s"}, nil, `invalid --otp-ttl "-1s": must be positive`},
		{[]string{"--max-attempts", "three"}, nil, `invalid --max-attempts "three": must be a whole number, at least 1`},
		{[]string{"--max-waiters", "0"}, nil, `invalid --max-waiters "0": must be a whole number, at least 1`},
		{[]string{"--log-format", "xml"}, nil, `invalid --log-format "xml": must be one of text, json`},
		{[]string{"--port", "http"}, nil, `invalid --port "http": must be a number from 0 to 65535 (0: any free port)`},
		{[]string{"--webhook-url", "hooks.example"}, nil, `invalid --webhook-url "hooks.example": must be an absolute http or https URL`},
	} {
		_, err := ParseArgs(tc.args, env(tc.env), &bytes.Buffer{})
		var ue *UsageError
		require.ErrorAs(t, err, &ue, "%v %v", tc.args, tc.env)
		require.EqualError(t, err, tc.err)
	}
}

func TestResolveAPIKey(t *testing.T) {
	t.Parallel()
	t.Run("GeneratedOnceThenRead", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		cfg := Defaults()
		cfg.DBPath = filepath.Join(dir, "data", "controller.db")
		var out bytes.Buffer
		warn, err := ResolveAPIKey(&cfg, &out)
		require.NoError(t, err)
		require.Empty(t, warn)
		require.Regexp(t, `^[A-Za-z0-9_-]{43}$`, cfg.APIKey)
		require.Contains(t, out.String(), cfg.APIKey, "printed once")
		st, err := os.Stat(filepath.Join(dir, "data", "api-key"))
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), st.Mode().Perm())

		again := Defaults()
		again.DBPath = cfg.DBPath
		out.Reset()
		_, err = ResolveAPIKey(&again, &out)
		require.NoError(t, err)
		require.Equal(t, cfg.APIKey, again.APIKey)
		require.NotContains(t, out.String(), cfg.APIKey, "later starts only name the file")
		require.Contains(t, out.String(), "api-key")
	})
	t.Run("SaysWhereTheKeyCameFrom", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		db := filepath.Join(dir, "controller.db")
		for _, tc := range []struct {
			name string
			args []string
			env  map[string]string
			out  string
		}{
			{"Flag", []string{"--api-key", "flag-key-0123456789"}, map[string]string{"CONTROLLER_API_KEY": "env-key-0123456789"},
				"API key from the --api-key flag\n"},
			{"Environment", nil, map[string]string{"CONTROLLER_API_KEY": "env-key-0123456789"},
				"API key from the environment (CONTROLLER_API_KEY)\n"},
			{"Generated", nil, nil, "Generated API key (saved to " + filepath.Join(dir, "api-key") + "; shown only this once):\n\n    "},
			{"File", nil, nil, "API key read from " + filepath.Join(dir, "api-key") + "\n"}, // the one just generated
		} {
			cfg, err := ParseArgs(append([]string{"--db", db}, tc.args...), env(tc.env), &bytes.Buffer{})
			require.NoError(t, err, tc.name)
			var out bytes.Buffer
			_, err = ResolveAPIKey(&cfg, &out)
			require.NoError(t, err, tc.name)
			if tc.name == "Generated" {
				require.Equal(t, tc.out+cfg.APIKey+"\n\n", out.String(), tc.name)
			} else {
				require.Equal(t, tc.out, out.String(), tc.name)
			}
		}
	})
	t.Run("UnreadableKeyFile", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		require.NoError(t, os.Mkdir(filepath.Join(dir, "api-key"), 0o700)) // a directory cannot be read as a file
		cfg := Defaults()
		cfg.DBPath = filepath.Join(dir, "controller.db")
		_, err := ResolveAPIKey(&cfg, &bytes.Buffer{})
		require.ErrorIs(t, err, ErrConfig, "exit status 2")
		require.EqualError(t, err, "cannot read the API key file "+filepath.Join(dir, "api-key")+": is a directory "+
			"(make it readable for the controller's user, or give the key with --api-key or CONTROLLER_API_KEY)")
	})
	t.Run("FileIsTrimmed", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(dir, "api-key"), []byte("  from-file-key-123456 \n"), 0o600))
		cfg := Defaults()
		cfg.DBPath = filepath.Join(dir, "controller.db")
		_, err := ResolveAPIKey(&cfg, &bytes.Buffer{})
		require.NoError(t, err)
		require.Equal(t, "from-file-key-123456", cfg.APIKey)
	})
	t.Run("TooShort", func(t *testing.T) {
		t.Parallel()
		cfg := Defaults()
		cfg.DBPath = filepath.Join(t.TempDir(), "c.db")
		cfg.APIKey = "short-key"
		_, err := ResolveAPIKey(&cfg, &bytes.Buffer{})
		require.EqualError(t, err, "API key must be at least 16 characters")
		require.ErrorIs(t, err, ErrConfig, "exit status 2")
	})
	t.Run("StaleKeyFile", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		file := filepath.Join(dir, "api-key")
		require.NoError(t, os.WriteFile(file, []byte("generated-key-0123456789\n"), 0o600))
		cfg := Defaults()
		cfg.DBPath = filepath.Join(dir, "controller.db")
		cfg.APIKey = "configured-key-0123456789"
		var out bytes.Buffer
		warn, err := ResolveAPIKey(&cfg, &out)
		require.NoError(t, err)
		require.Equal(t, "configured-key-0123456789", cfg.APIKey, "the configured key wins")
		require.Equal(t, "API key from the configuration\n", out.String())
		require.Len(t, warn, 1)
		require.Contains(t, warn[0], file+" holds a different key than the configured one")
		require.NotContains(t, warn[0], "generated-key", "the warning does not print keys")

		cfg.APIKey = "generated-key-0123456789" // the same key: nothing to say
		warn, err = ResolveAPIKey(&cfg, &bytes.Buffer{})
		require.NoError(t, err)
		require.Empty(t, warn)
	})
	t.Run("WorkerKey", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct{ name, key, err, warn string }{
			{"TooShort", "short", "worker key must be at least 16 characters", ""},
			{"SameAsAdmin", "admin-key-0123456789", "worker key must differ from the API key (it opens only the worker routes)", ""},
			{"OddCharactersWarn", "worker key with spaces!", "", "[A-Za-z0-9_-]"},
			{"OK", "worker-key-0123456789", "", ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				cfg := Defaults()
				cfg.DBPath = filepath.Join(t.TempDir(), "c.db")
				cfg.APIKey, cfg.WorkerKey = "admin-key-0123456789", tc.key
				warn, err := ResolveAPIKey(&cfg, &bytes.Buffer{})
				if tc.err != "" {
					require.EqualError(t, err, tc.err)
					require.ErrorIs(t, err, ErrConfig)
					return
				}
				require.NoError(t, err)
				if tc.warn == "" {
					require.Empty(t, warn)
				} else {
					require.Contains(t, strings.Join(warn, "\n"), tc.warn)
				}
			})
		}
	})
	t.Run("OddCharactersWarn", func(t *testing.T) {
		t.Parallel()
		cfg := Defaults()
		cfg.DBPath = filepath.Join(t.TempDir(), "c.db")
		cfg.APIKey = "key with spaces and $ signs!"
		warn, err := ResolveAPIKey(&cfg, &bytes.Buffer{})
		require.NoError(t, err)
		require.Contains(t, strings.Join(warn, "\n"), "[A-Za-z0-9_-]")
	})
}

func TestParseArgsBoolFlag(t *testing.T) {
	t.Parallel()
	for args, want := range map[string]bool{"--metrics-public": true, "--metrics-public=true": true, "--metrics-public=false": false} {
		cfg, err := ParseArgs([]string{args}, env(nil), &bytes.Buffer{})
		require.NoError(t, err, args)
		require.Equal(t, want, cfg.MetricsPublic, args)
	}
	for args, want := range map[string]bool{"--dashboard-public": true, "--dashboard-public=false": false} {
		cfg, err := ParseArgs([]string{args}, env(nil), &bytes.Buffer{})
		require.NoError(t, err, args)
		require.Equal(t, want, cfg.DashboardPublic, args)
	}
	cfg, err := ParseArgs(nil, env(map[string]string{"CONTROLLER_DASHBOARD_PUBLIC": "true"}), &bytes.Buffer{})
	require.NoError(t, err)
	require.True(t, cfg.DashboardPublic)
	cfg, err = ParseArgs([]string{"--pprof-addr", "127.0.0.1:6060"}, env(nil), &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:6060", cfg.PprofAddr)
}

func TestParseArgsWebhooks(t *testing.T) {
	t.Parallel()
	const secret = "webhook-secret-0123"
	t.Run("FlagRepeats", func(t *testing.T) {
		t.Parallel()
		cfg, err := ParseArgs([]string{"--webhook-url", "https://a.example/hook", "--webhook-url=http://127.0.0.1:9/b?x=1,2",
			"--webhook-url", "https://a.example/hook", "--webhook-secret", secret}, env(nil), &bytes.Buffer{})
		require.NoError(t, err)
		require.Equal(t, []string{"https://a.example/hook", "http://127.0.0.1:9/b?x=1,2"}, cfg.WebhookURLs, "in order, once each")
		require.Equal(t, secret, cfg.WebhookSecret)
	})
	t.Run("EnvIsACommaSeparatedList", func(t *testing.T) {
		t.Parallel()
		e := env(map[string]string{"CONTROLLER_WEBHOOK_URLS": " https://a.example/1 ,, https://b.example/2 ",
			"CONTROLLER_WEBHOOK_SECRET": secret})
		cfg, err := ParseArgs(nil, e, &bytes.Buffer{})
		require.NoError(t, err)
		require.Equal(t, []string{"https://a.example/1", "https://b.example/2"}, cfg.WebhookURLs)
		cfg, err = ParseArgs([]string{"--webhook-url", "https://c.example/3"}, e, &bytes.Buffer{})
		require.NoError(t, err)
		require.Equal(t, []string{"https://c.example/3"}, cfg.WebhookURLs, "the flag replaces the environment")
	})
	t.Run("SecretWithoutURL/Ignored", func(t *testing.T) {
		t.Parallel()
		cfg, err := ParseArgs([]string{"--webhook-secret", "short"}, env(nil), &bytes.Buffer{})
		require.NoError(t, err)
		require.Empty(t, cfg.WebhookURLs)
	})
	for _, tc := range []struct {
		name, err string
		args      []string
	}{
		{"NoSecret", "--webhook-secret is required with --webhook-url", []string{"--webhook-url", "https://a.example"}},
		{"ShortSecret", "webhook secret must be at least 16 characters",
			[]string{"--webhook-url", "https://a.example", "--webhook-secret", "fifteen-chars-x"}},
		{"NotHTTP", `invalid --webhook-url "ftp://a.example/x": must be an absolute http or https URL`,
			[]string{"--webhook-url", "ftp://a.example/x", "--webhook-secret", secret}},
		{"Relative", `invalid --webhook-url "/hook": must be an absolute http or https URL`,
			[]string{"--webhook-url", "/hook", "--webhook-secret", secret}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseArgs(tc.args, env(nil), &bytes.Buffer{})
			var usage *UsageError
			require.ErrorAs(t, err, &usage)
			require.EqualError(t, err, tc.err)
		})
	}
	t.Run("NewRefusesToo", func(t *testing.T) {
		t.Parallel()
		cfg := Defaults()
		cfg.DBPath = filepath.Join(t.TempDir(), "c.db")
		cfg.WebhookURLs = []string{"https://a.example"}
		_, err := New(t.Context(), cfg, nil)
		require.EqualError(t, err, "--webhook-secret is required with --webhook-url")
	})
}

func TestParseArgsRetention(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]time.Duration{"0": 0, "0s": 0, "720h": 720 * time.Hour, "30d": 30 * 24 * time.Hour,
		"1d": 24 * time.Hour, "90m": 90 * time.Minute} {
		cfg, err := ParseArgs([]string{"--retention", in}, env(nil), &bytes.Buffer{})
		require.NoError(t, err, in)
		require.Equal(t, want, cfg.Retention, in)
	}
	cfg, err := ParseArgs(nil, env(map[string]string{"CONTROLLER_RETENTION": "7d"}), &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, 7*24*time.Hour, cfg.Retention)
	require.Zero(t, Defaults().Retention, "the default keeps everything")
}

func TestParseGCArgs(t *testing.T) {
	t.Parallel()
	cfg, dry, err := ParseGCArgs([]string{"--dry-run", "--retention", "30d", "--db", "/x/c.db"}, env(nil), &bytes.Buffer{})
	require.NoError(t, err)
	require.True(t, dry)
	require.Equal(t, "/x/c.db", cfg.DBPath)
	_, dry, err = ParseGCArgs(nil, env(map[string]string{"CONTROLLER_RETENTION": "1h"}), &bytes.Buffer{})
	require.NoError(t, err)
	require.False(t, dry)

	_, _, err = ParseGCArgs([]string{"--dry-run"}, env(nil), &bytes.Buffer{})
	require.ErrorIs(t, err, ErrConfig)
	require.ErrorContains(t, err, "gc needs a retention")
	var out bytes.Buffer
	_, _, err = ParseGCArgs([]string{"-h"}, env(nil), &out)
	require.ErrorIs(t, err, ErrHelp)
	require.Contains(t, out.String(), "Usage: controller gc [--dry-run] [flags]")
	require.Contains(t, out.String(), "-dry-run")
}

// TestParseArgsDatabaseURL: DATABASE_URL is the database when neither --db
// nor CONTROLLER_DB is given, and the usage text never shows its password;
// with PostgreSQL the generated key lives in the (shared) storage root.
func TestParseArgsDatabaseURL(t *testing.T) {
	t.Parallel()
	const url = "postgres://ctl:s3cret-pw@db.example/ctl"
	cfg, err := ParseArgs(nil, env(map[string]string{"DATABASE_URL": url}), &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, url, cfg.DBPath)
	require.Equal(t, filepath.Join(cfg.StoragePath, "api-key"), KeyFile(cfg))
	cfg, err = ParseArgs(nil, env(map[string]string{"DATABASE_URL": url, "CONTROLLER_DB": "/x/c.db"}), &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, "/x/c.db", cfg.DBPath, "CONTROLLER_DB wins")
	require.Equal(t, "/x/api-key", KeyFile(cfg))
	cfg, err = ParseArgs([]string{"--db", "/y/c.db"}, env(map[string]string{"DATABASE_URL": url}), &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, "/y/c.db", cfg.DBPath, "--db wins")

	var out bytes.Buffer
	_, err = ParseArgs([]string{"-h"}, env(map[string]string{"DATABASE_URL": url}), &out)
	require.ErrorIs(t, err, ErrHelp)
	require.Contains(t, out.String(), "postgres://ctl:xxxxx@db.example/ctl")
	require.NotContains(t, out.String(), "s3cret-pw")
}

// TestSaveNewKey: the first writer's key wins; a second one reads it.
func TestSaveNewKey(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "api-key")
	got, err := saveNewKey(path, "first-key-0123456789")
	require.NoError(t, err)
	require.Equal(t, "first-key-0123456789", got)
	got, err = saveNewKey(path, "second-key-0123456789")
	require.NoError(t, err)
	require.Equal(t, "first-key-0123456789", got, "never overwritten")
	entries, err := os.ReadDir(filepath.Dir(path))
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary left")
}
