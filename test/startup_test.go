package test

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// runBinary runs the controller binary to completion (bounded) in dir.
func runBinary(t *testing.T, dir string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, buildBinary(t, "controller"), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CONTROLLER_API_KEY=", "PORT=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee, "%s", out)
	}
	return cmd.ProcessState.ExitCode(), string(out)
}

func TestBinaryStartupChecks(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("binary test skipped in -short mode")
	}
	dir := t.TempDir()
	// Configuration and data-file mistakes exit 2: a service manager must
	// not restart into them (RestartPreventExitStatus=2).
	code, out := runBinary(t, dir, "start", "--api-key", "too-short")
	require.Equal(t, 2, code, "%s", out)
	require.Contains(t, out, "API key must be at least 16 characters")
	require.NotContains(t, out, "listening")

	code, out = runBinary(t, dir, "--api-key", testKey, "--worker-key", testKey)
	require.Equal(t, 2, code, "%s", out)
	require.Contains(t, out, "worker key must differ from the API key")

	notDB := filepath.Join(dir, "notes.txt")
	require.NoError(t, os.WriteFile(notDB, []byte("not a database"), 0o600))
	code, out = runBinary(t, dir, "--api-key", testKey, "--db", notDB)
	require.Equal(t, 2, code, "%s", out)
	require.Contains(t, out, "is not a SQLite database; point --db at a new file")
	b, err := os.ReadFile(notDB)
	require.NoError(t, err)
	require.Equal(t, "not a database", string(b))

	code, out = runBinary(t, dir, "start", "now")
	require.Equal(t, 2, code)
	require.Contains(t, out, `unexpected argument "now"`)

	code, out = runBinary(t, dir, "-h")
	require.Equal(t, 0, code)
	require.Contains(t, out, "Usage: controller [start] [flags]")

	// A port in use: a clear message and a non-zero exit, not a retry loop.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	code, out = runBinary(t, dir, "--host", "127.0.0.1", "--port", port, "--api-key", testKey)
	require.Equal(t, 1, code)
	require.Contains(t, out, "cannot listen")
}

// TestBinaryFirstRunAndGracefulStop: a first run with no flags generates and
// saves a key (mode 0600), serves with it, and SIGTERM exits 0 after
// finishing; the next start reads the same key.
func TestBinaryFirstRunAndGracefulStop(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("binary test skipped in -short mode")
	}
	dir := t.TempDir()
	cmd := exec.Command(buildBinary(t, "controller"), "--host", "127.0.0.1", "--port", "0")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CONTROLLER_API_KEY=")
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	logs := newSyncBuffer()
	cmd.Stderr = logs
	ctl := startBackground(t, cmd)
	first := make([]byte, 4096)
	n, _ := stdout.Read(first)
	require.Contains(t, string(first[:n]), "Generated API key")
	keyFile := filepath.Join(dir, "data", "api-key")
	key, err := os.ReadFile(keyFile)
	require.NoError(t, err)
	st, err := os.Stat(keyFile)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	require.Contains(t, string(first[:n]), strings.TrimSpace(string(key)))

	var addr string
	eventually(t, 20*time.Second, func() bool {
		m := listenRe.FindStringSubmatch(logs.String())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	}, "listening")
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/api/builds", nil)
	req.Header.Set("X-API-Key", strings.TrimSpace(string(key)))
	hc := &http.Client{}
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.NotContains(t, logs.String(), strings.TrimSpace(string(key)), "the key never reaches the server log")

	require.NoError(t, cmd.Process.Signal(os.Interrupt))
	select {
	case <-ctl.Done:
		require.NoError(t, ctl.Err(), "exit 0 after SIGINT:\n%s", logs.String())
	case <-time.After(40 * time.Second):
		t.Fatal("no exit after SIGINT")
	}
	require.Contains(t, logs.String(), "controller stopped")
	require.FileExists(t, filepath.Join(dir, "data", "controller.db"))
	require.DirExists(t, filepath.Join(dir, "storage", "results"))

	code, out := runBinary(t, dir, "--help")
	require.Equal(t, 0, code, out)
}
