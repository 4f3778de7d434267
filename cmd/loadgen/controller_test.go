package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/expo-free-agent/controller/cmd/app"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testKey = "loadgen-test-key-0123456789abcdef"

// startController runs the real controller in this process on a temporary
// directory and port 0 and returns its URL. It is stopped at cleanup.
func startController(t *testing.T, change func(*app.Config)) string {
	t.Helper()
	dir := t.TempDir()
	cfg := app.Defaults()
	cfg.Host, cfg.Port = "127.0.0.1", 0
	cfg.DBPath = filepath.Join(dir, "data", "controller.db")
	cfg.StoragePath = filepath.Join(dir, "storage")
	cfg.APIKey = testKey
	cfg.LogLevel = "warn"
	cfg.DrainTimeout = 5 * time.Second
	if change != nil {
		change(&cfg)
	}
	a, err := app.New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		stop()
		require.NoError(t, <-done)
	})
	select {
	case <-a.HTTP.Ready():
	case err := <-done:
		t.Fatalf("controller stopped at start: %v", err)
	}
	return "http://" + a.HTTP.Addr().String()
}

// parseFigures reads the figure lines of out: name → value and unit. Every
// line of stdout must be a figure line, each name once.
func parseFigures(t *testing.T, out string) map[string]string {
	t.Helper()
	figs := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, "figure ")
		require.True(t, ok, "stdout line %q is not a figure", line)
		name, valueUnit, ok := strings.Cut(rest, "=")
		require.True(t, ok, line)
		value, unit, ok := strings.Cut(valueUnit, " ")
		require.True(t, ok, line)
		require.NotEmpty(t, unit, line)
		_, err := strconv.ParseFloat(value, 64)
		require.NoError(t, err, line)
		require.NotContains(t, figs, name, "figure %s printed twice", name)
		figs[name] = valueUnit
	}
	return figs
}

func TestAgainstController(t *testing.T) {
	url := startController(t, nil)
	var stdout, stderr bytes.Buffer
	code := run([]string{"--url", url, "--api-key", testKey, "--scenario", "idle,dispatch,logs,transfer,longpoll,logstream,reads",
		"--duration", "200ms", "--concurrency", "4", "--workers", "4", "--builds", "20", "--submitters", "2",
		"--log-workers", "2", "--log-batch", "10", "--size", "3MiB", "--idle-pause", "2ms",
		"--wait", "1s", "--lp-workers", "3", "--submit-rate", "20", "--lp-idle-workers", "5", "--lp-idle-window", "300ms",
		"--streams", "4", "--stream-builds", "2", "--line-rate", "50", "--stream-batch", "5",
		"--pid", strconv.Itoa(os.Getpid())}, func(string) string { return "" }, &stdout, &stderr)
	require.Equal(t, 0, code, "stderr:\n%s", stderr.String())

	figs := parseFigures(t, stdout.String())
	for name, unit := range map[string]string{
		"idle_poll_rps": "req/s", "idle_poll_p50": "ms", "idle_poll_p99": "ms", "idle_rss_growth": "MiB",
		"dispatch_builds_per_s": "builds/s", "dispatch_assign_p50": "ms", "dispatch_assign_p99": "ms",
		"dispatch_rss_peak":    "MiB",
		"transfer_submit_mb_s": "MB/s", "transfer_upload_mb_s": "MB/s", "transfer_download_mb_s": "MB/s",
		"transfer_rss_growth": "MiB", "transfer_upload_rss_baseline": "MiB",
		"logs_lines_per_s": "lines/s", "logs_batch_p99": "ms",
		"longpoll_job_p50": "ms", "longpoll_job_p99": "ms", "longpoll_assign_p99": "ms", "longpoll_submit_rate": "builds/s",
		"longpoll_rss_growth": "MiB", "longpoll_idle_cpu": "%core", "longpoll_idle_loadgen_cpu": "%core",
		"longpoll_idle_rss_peak": "MiB", "longpoll_idle_polls": "count",
		"logstream_lines_per_s": "lines/s", "logstream_target_lines_per_s": "lines/s", "logstream_latency_p99": "ms",
		"logstream_latency_max": "ms", "logstream_post_p99": "ms", "logstream_cpu": "%core", "logstream_rss_growth": "MiB",
		"reads_status_p99": "ms", "reads_page_p99": "ms", "reads_deep_page_p99": "ms", "reads_stats_p99": "ms",
		"reads_metrics_p99": "ms", "reads_dashboard_p99": "ms", "reads_idle_poll_p99": "ms", "reads_rps": "req/s",
	} {
		require.Contains(t, figs, name)
		require.True(t, strings.HasSuffix(figs[name], " "+unit), "%s=%s", name, figs[name])
	}
	for name, want := range map[string]string{
		"idle_errors": "0 count", "dispatch_errors": "0 count", "logs_errors": "0 count", "transfer_errors": "0 count",
		"dispatch_double_assigned": "0 count", "dispatch_not_completed": "0 count", "dispatch_completed": "20 count",
		"dispatch_status_checked": "20 count", "transfer_sha256_mismatch": "0 count", "logs_missing": "0 count",
		"longpoll_errors": "0 count", "longpoll_submitted": "4 count", "longpoll_completed": "4 count",
		"longpoll_double_assigned": "0 count", "longpoll_not_completed": "0 count", "longpoll_early_empty": "0 count",
		"longpoll_idle_held": "5 count", "longpoll_idle_early": "0 count",
		"logstream_errors": "0 count", "logstream_streams": "4 count", "logstream_builds": "2 count",
		"logstream_lost": "0 count", "logstream_reordered": "0 count", "logstream_seq_gaps": "0 count",
		"logstream_unfinished": "0 count", "logstream_target_lines_per_s": "100 lines/s", "reads_errors": "0 count",
	} {
		require.Equal(t, want, figs[name], name)
	}
	require.Contains(t, stderr.String(), "loadgen summary")
	require.Contains(t, stderr.String(), "--- dispatch: OK")

	// Every line posted reached both streams of its build.
	lines, err := strconv.ParseFloat(strings.Fields(figs["logstream_lines"])[0], 64)
	require.NoError(t, err)
	require.Positive(t, lines)
	require.Equal(t, strconv.FormatFloat(2*lines, 'f', -1, 64)+" count", figs["logstream_delivered"])
}

func TestLogStreamsOverLimitShowHint(t *testing.T) {
	url := startController(t, func(c *app.Config) { c.MaxStreams = 2 })
	var stdout, stderr bytes.Buffer
	code := run([]string{"--url", url, "--api-key", testKey, "--scenario", "logstream", "--streams", "3",
		"--stream-builds", "1", "--duration", "100ms", "--wait", "1s"}, func(string) string { return "" }, &stdout, &stderr)
	require.Equal(t, 1, code)
	figs := parseFigures(t, stdout.String())
	require.Equal(t, "2 count", figs["logstream_streams"])
	require.Equal(t, "1 count", figs["logstream_errors"], "the third stream was refused")
	require.Contains(t, stderr.String(), "503")
	require.Contains(t, stderr.String(), "--max-streams 3")
}

func TestTransferRefusedShowsHint(t *testing.T) {
	url := startController(t, func(c *app.Config) { c.MaxSourceSize = 1 << 20 })
	var stdout, stderr bytes.Buffer
	code := run([]string{"--url", url, "--api-key", testKey, "--scenario", "transfer", "--size", "2MiB"},
		func(string) string { return "" }, &stdout, &stderr)
	require.Equal(t, 1, code)
	figs := parseFigures(t, stdout.String())
	require.Equal(t, "1 count", figs["transfer_errors"])
	require.Contains(t, stderr.String(), "HINT")
	require.Contains(t, stderr.String(), "--max-source-size 1GiB")
}

func TestWrongKeyCountsErrors(t *testing.T) {
	url := startController(t, nil)
	var stdout, stderr bytes.Buffer
	code := run([]string{"--url", url, "--api-key", "wrong-key-0123456789abcdef", "--scenario", "idle",
		"--duration", "50ms", "--concurrency", "2"}, func(string) string { return "" }, &stdout, &stderr)
	require.Equal(t, 1, code)
	figs := parseFigures(t, stdout.String())
	require.Equal(t, "2 count", figs["idle_errors"], "both registrations were refused")
	require.Contains(t, stderr.String(), "403")
}
