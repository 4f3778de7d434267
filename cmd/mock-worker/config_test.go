package main

import (
	"errors"
	"flag"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// env is a getenv over a map.
func env(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

func TestParseArgs(t *testing.T) {
	t.Parallel()

	t.Run("Defaults", func(t *testing.T) {
		t.Parallel()
		cfg, err := ParseArgs(nil, env(map[string]string{"HOME": "/home/dev"}), io.Discard)
		require.NoError(t, err)
		require.Equal(t, "http://localhost:3000", cfg.URL)
		require.Equal(t, DefaultAPIKey, cfg.APIKey)
		require.True(t, cfg.APIKeyDefaulted)
		require.True(t, strings.HasPrefix(cfg.Name, "mock-worker-"), cfg.Name)
		require.Equal(t, []string{"ios", "android"}, cfg.Platforms)
		require.Equal(t, 5*time.Second, cfg.PollInterval)
		require.Equal(t, 30*time.Second, cfg.Wait, "long-poll by default")
		require.Equal(t, 10*time.Second, cfg.HeartbeatInterval)
		require.Equal(t, 3*time.Second, cfg.BuildTime)
		require.Zero(t, cfg.FailRate)
		require.Equal(t, int64(1<<20), cfg.ResultSize)
		require.Equal(t, 10, cfg.LogBatch)
		require.Zero(t, cfg.MaxBuilds)
		require.False(t, cfg.Once)
		require.False(t, cfg.Quiet)
		require.False(t, cfg.Verbose)
		require.Equal(t, filepath.Join("/home/dev/.config/expo-free-agent", "mock-worker-"+cfg.Name+".json"), cfg.StateFile)
	})

	t.Run("Flags", func(t *testing.T) {
		t.Parallel()
		cfg, err := ParseArgs([]string{
			"--url", "https://ci.example.com/free-agent/", "--api-key", "k-123", "--name", "box 1",
			"--platforms", "android", "--poll-interval", "250ms", "--heartbeat-interval", "1s",
			"--build-time", "50ms", "--fail-rate", "0.25", "--result-size", "512KiB",
			"--state-file", "~/s.json", "--once", "--max-builds=3", "--log-batch", "4", "-verbose", "--wait", "0",
		}, env(map[string]string{"HOME": "/home/dev", "CONTROLLER_URL": "http://ignored:1", "MOCK_WORKER_WAIT": "10s"}), io.Discard)
		require.NoError(t, err)
		require.Equal(t, "https://ci.example.com/free-agent", cfg.URL)
		require.Equal(t, "k-123", cfg.APIKey)
		require.False(t, cfg.APIKeyDefaulted)
		require.Equal(t, "box 1", cfg.Name)
		require.Equal(t, []string{"android"}, cfg.Platforms)
		require.Equal(t, 250*time.Millisecond, cfg.PollInterval)
		require.Equal(t, time.Second, cfg.HeartbeatInterval)
		require.Equal(t, 50*time.Millisecond, cfg.BuildTime)
		require.Equal(t, 0.25, cfg.FailRate)
		require.Equal(t, int64(512<<10), cfg.ResultSize)
		require.Equal(t, "/home/dev/s.json", cfg.StateFile)
		require.True(t, cfg.Once)
		require.Equal(t, 3, cfg.MaxBuilds)
		require.Equal(t, 4, cfg.LogBatch)
		require.True(t, cfg.Verbose)
		require.Zero(t, cfg.Wait, "--wait 0 polls by interval (the flag wins)")
	})

	t.Run("Environment", func(t *testing.T) {
		t.Parallel()
		cfg, err := ParseArgs([]string{"--poll-interval", "2s"}, env(map[string]string{
			"XDG_CONFIG_HOME":                "/xdg",
			"CONTROLLER_URL":                 "http://controller:3000",
			"CONTROLLER_API_KEY":             "from-env-key-123456",
			"MOCK_WORKER_NAME":               "env/worker",
			"MOCK_WORKER_PLATFORMS":          " iOS , ios ",
			"MOCK_WORKER_POLL_INTERVAL":      "9s", // the flag wins
			"MOCK_WORKER_HEARTBEAT_INTERVAL": "20ms",
			"MOCK_WORKER_BUILD_TIME":         "1m",
			"MOCK_WORKER_FAIL_RATE":          "1",
			"MOCK_WORKER_RESULT_SIZE":        "2048B",
			"MOCK_WORKER_ONCE":               "true",
			"MOCK_WORKER_MAX_BUILDS":         "7",
			"MOCK_WORKER_LOG_BATCH":          "1",
			"MOCK_WORKER_QUIET":              "1",
			"MOCK_WORKER_WAIT":               "45",
		}), io.Discard)
		require.NoError(t, err)
		require.Equal(t, "http://controller:3000", cfg.URL)
		require.Equal(t, "from-env-key-123456", cfg.APIKey)
		require.False(t, cfg.APIKeyDefaulted)
		require.Equal(t, "env/worker", cfg.Name)
		require.Equal(t, []string{"ios"}, cfg.Platforms)
		require.Equal(t, 2*time.Second, cfg.PollInterval)
		require.Equal(t, 20*time.Millisecond, cfg.HeartbeatInterval)
		require.Equal(t, time.Minute, cfg.BuildTime)
		require.Equal(t, 1.0, cfg.FailRate)
		require.Equal(t, int64(2048), cfg.ResultSize)
		require.True(t, cfg.Once)
		require.Equal(t, 7, cfg.MaxBuilds)
		require.Equal(t, 1, cfg.LogBatch)
		require.True(t, cfg.Quiet)
		require.Equal(t, 45*time.Second, cfg.Wait)
		require.Equal(t, "/xdg/expo-free-agent/mock-worker-env_worker.json", cfg.StateFile)
	})

	t.Run("NoStateFile", func(t *testing.T) {
		t.Parallel()
		cfg, err := ParseArgs([]string{"--state-file", "-"}, env(nil), io.Discard)
		require.NoError(t, err)
		require.Empty(t, cfg.StateFile)
	})

	t.Run("Help", func(t *testing.T) {
		t.Parallel()
		var out strings.Builder
		_, err := ParseArgs([]string{"-h"}, env(nil), &out)
		require.ErrorIs(t, err, flag.ErrHelp)
		for _, name := range []string{"-url", "CONTROLLER_URL", "CONTROLLER_API_KEY", "-fail-rate", "-once", "-max-builds", "-state-file", "-wait", "MOCK_WORKER_WAIT"} {
			require.Contains(t, out.String(), name)
		}
		require.Regexp(t, `(?m)^  --result-size +size of the fake result file \(B, KiB, MiB, GiB\) \(env MOCK_WORKER_RESULT_SIZE, default 1MiB\)$`, out.String())
		require.Regexp(t, `(?m)^  --url +controller base URL \(env CONTROLLER_URL, default http://localhost:3000\)$`, out.String(), "one line per flag, argument names unquoted")
	})

	bad := []struct {
		name string
		args []string
		env  map[string]string
	}{
		{"BadURL", []string{"--url", "localhost:3000"}, nil},
		{"BadPlatform", []string{"--platforms", "ios,windows"}, nil},
		{"NoPlatform", []string{"--platforms", ","}, nil},
		{"BadDuration", []string{"--poll-interval", "5"}, nil},
		{"ZeroDuration", []string{"--build-time", "0s"}, nil},
		{"FailRateTooHigh", []string{"--fail-rate", "1.5"}, nil},
		{"ZeroResultSize", []string{"--result-size", "0"}, nil},
		{"BadSizeSuffix", []string{"--result-size", "3XB"}, nil},
		{"BareSize", []string{"--result-size", "2048"}, nil},
		{"NegativeMaxBuilds", []string{"--max-builds", "-1"}, nil},
		{"ZeroLogBatch", []string{"--log-batch", "0"}, nil},
		{"WaitNotWholeSeconds", []string{"--wait", "1500ms"}, nil},
		{"WaitTooLong", []string{"--wait", "51s"}, nil},
		{"NegativeWait", []string{"--wait", "-1s"}, nil},
		{"BadWaitEnv", nil, map[string]string{"MOCK_WORKER_WAIT": "soon"}},
		{"QuietAndVerbose", []string{"--quiet", "--verbose"}, nil},
		{"Positional", []string{"start"}, nil},
		{"BadEnv", nil, map[string]string{"MOCK_WORKER_FAIL_RATE": "lots"}},
		{"BadBoolEnv", nil, map[string]string{"MOCK_WORKER_ONCE": "yes please"}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseArgs(tc.args, env(tc.env), io.Discard)
			var ue *UsageError
			require.True(t, errors.As(err, &ue), "want a UsageError, got %v", err)
		})
	}

	t.Run("UnknownFlag", func(t *testing.T) {
		t.Parallel()
		_, err := ParseArgs([]string{"--nope"}, env(nil), io.Discard)
		require.Error(t, err)
		require.NotErrorIs(t, err, flag.ErrHelp)
	})
}

func TestParseWait(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]time.Duration{"0": 0, "0s": 0, "30s": 30 * time.Second, "30": 30 * time.Second,
		"50s": 50 * time.Second, "0.5m": 30 * time.Second, " 7 ": 7 * time.Second} {
		got, err := parseWait(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "x", "1.5s", "999ms", "51", "1m", "-1", "-5s"} {
		_, err := parseWait(in)
		require.Error(t, err, in)
	}
}

func TestParseSize(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{"1B": 1, "10B": 10, "3k": 3 << 10, "1KiB": 1 << 10, "2 MiB": 2 << 20, "1mb": 1 << 20, "1GiB": 1 << 30} {
		got, err := parseSize(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "1", "2048", "MiB", "-1", "0", "1.5MiB", "2TiB", "9999999GiB"} {
		_, err := parseSize(in)
		require.Error(t, err, in)
	}
}
