package test

import (
	"context"
	"database/sql"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/internal/testkit"
)

// runBinary runs the controller binary to completion (bounded) in dir.
func runBinary(t *testing.T, dir string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, buildBinary(t, "controller"), args...)
	cmd.Dir = dir
	// Any free port on the loopback unless a test names one: a start that
	// gets as far as listening must not depend on :3000 being free (other
	// tests and programs run beside this one).
	cmd.Env = append(os.Environ(), "CONTROLLER_API_KEY=", "PORT=0", "CONTROLLER_HOST=127.0.0.1")
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
	require.Contains(t, out, "\ncontroller: "+notDB+" is not a SQLite database; it was left untouched: point --db at a new file\n")
	b, err := os.ReadFile(notDB)
	require.NoError(t, err)
	require.Equal(t, "not a database", string(b))

	code, out = runBinary(t, dir, "start", "now")
	require.Equal(t, 2, code)
	require.Contains(t, out, `unexpected argument "now"`)

	code, out = runBinary(t, dir, "-h")
	require.Equal(t, 0, code)
	require.Contains(t, out, "Usage: controller [start] [flags]")

}

// TestBinaryStartupMessages: each start-up mistake gets one line that says
// what to do, and the exit status that tells a service manager whether a
// restart may help (2: no; 1: perhaps).
func TestBinaryStartupMessages(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("binary test skipped in -short mode")
	}
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("notes"), 0o600))
	keyLine := "API key from the --api-key flag\n"
	for _, tc := range []struct {
		name string
		args []string
		code int
		out  string
	}{
		{"BareSize", []string{"--max-source-size", "500"}, 2,
			`controller: invalid --max-source-size "500": 500 needs a unit: 500B for bytes, or 500KiB, 500MiB, 500GiB` + "\n"},
		{"BadBool", []string{"--metrics-public=yes"}, 2,
			`controller: invalid --metrics-public "yes": must be true or false (or 1 or 0)` + "\n"},
		{"BadDuration", []string{"--build-timeout", "300"}, 2,
			`controller: invalid --build-timeout "300": must be a duration with a unit, e.g. 90s, 5m or 1h` + "\n"},
		{"BadInt", []string{"--max-attempts", "three"}, 2,
			`controller: invalid --max-attempts "three": must be a whole number, at least 1` + "\n"},
		{"BadPort", []string{"--port", "http"}, 2,
			`controller: invalid --port "http": must be a number from 0 to 65535 (0: any free port)` + "\n"},
		// A path through a file stands for any directory that cannot be
		// created (permissions cannot be tested as root).
		{"DatabaseDirectoryNotCreatable", []string{"--db", filepath.Join(dir, "notes.txt", "controller.db"), "--api-key", testKey}, 2,
			keyLine + "controller: cannot create the database directory " + filepath.Join(dir, "notes.txt") +
				": not a directory (create it writable for the controller's user, or choose another --db)\n"},
		{"StorageDirectoryNotCreatable", []string{"--db", filepath.Join(dir, "storage-case", "controller.db"), "--api-key", testKey,
			"--storage", filepath.Join(dir, "notes.txt", "storage")}, 2,
			keyLine + "controller: cannot create the storage directory " + filepath.Join(dir, "notes.txt", "storage") +
				": not a directory (create it writable for the controller's user, or choose another --storage)\n"},
		{"KeyFileDirectoryNotCreatable", []string{"--db", filepath.Join(dir, "notes.txt", "controller.db")}, 2,
			"controller: cannot read the API key file " + filepath.Join(dir, "notes.txt", "api-key") +
				": not a directory (make it readable for the controller's user, or give the key with --api-key or CONTROLLER_API_KEY)\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, out := runBinary(t, dir, tc.args...)
			require.Equal(t, tc.code, code, "%s", out)
			require.Equal(t, tc.out, out)
		})
	}

	t.Run("PortInUse", func(t *testing.T) {
		t.Parallel()
		// One line and exit 1 (a restart may find the port free), before
		// the database is touched: no supervisor retry lines.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer ln.Close()
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		sub := t.TempDir()
		code, out := runBinary(t, sub, "--host", "127.0.0.1", "--port", port, "--api-key", testKey)
		require.Equal(t, 1, code, "%s", out)
		require.Equal(t, keyLine+"controller: cannot listen on 127.0.0.1:"+port+
			": address already in use (another controller running? choose another --port)\n", out)
		require.NoDirExists(t, filepath.Join(sub, "data"), "the database is not opened")
	})

	t.Run("TypeScriptDatabase", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "controller.db")
		db, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=DELETE")
		require.NoError(t, err)
		for _, stmt := range []string{"CREATE TABLE builds (id TEXT PRIMARY KEY)", "CREATE TABLE workers (id TEXT PRIMARY KEY)",
			"INSERT INTO builds VALUES ('V1StGXR8_Z5jdHi6B-myT')"} {
			_, err := db.Exec(stmt)
			require.NoError(t, err)
		}
		require.NoError(t, db.Close())
		before, err := os.ReadFile(path)
		require.NoError(t, err)
		code, out := runBinary(t, filepath.Dir(path), "--db", path, "--api-key", testKey)
		require.Equal(t, 2, code, "%s", out)
		require.Equal(t, keyLine+"controller: "+path+" was written by the older TypeScript controller; it was left untouched: "+
			"start with a new --db path (docs/MIGRATION.md)\n", out)
		after, err := os.ReadFile(path)
		require.NoError(t, err)
		require.Equal(t, before, after, "the TypeScript database was changed")
		entries, err := os.ReadDir(filepath.Dir(path))
		require.NoError(t, err)
		require.Len(t, entries, 1, "no -wal, -shm or key file beside it")
	})
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
	logs := &testkit.LockedBuffer{}
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
