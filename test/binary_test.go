package test

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/internal/testkit"
)

var (
	binMu    sync.Mutex
	binDir   string
	binBuilt = map[string]string{}
)

// buildBinary compiles ./cmd/<name> with the extra go build flags once per
// test process and returns its path. The directory is removed by TestMain's
// cleanup (see cleanupBinaries).
func buildBinary(t testing.TB, name string, flags ...string) string {
	t.Helper()
	binMu.Lock()
	defer binMu.Unlock()
	key := strings.Join(append([]string{name}, flags...), " ")
	if p, ok := binBuilt[key]; ok {
		return p
	}
	if binDir == "" {
		d, err := os.MkdirTemp("", "controller-test-bin-")
		require.NoError(t, err)
		binDir = d
	}
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(file))
	out := filepath.Join(binDir, name)
	if len(flags) > 0 {
		out += "-" + strconv.Itoa(len(binBuilt))
	}
	cmd := exec.Command("go", append(append([]string{"build", "-o", out}, flags...), "./cmd/"+name)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, "go build ./cmd/%s: %s", name, b)
	binBuilt[key] = out
	return out
}

func cleanupBinaries() {
	binMu.Lock()
	defer binMu.Unlock()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}

// Process is a controller binary running on a data directory.
type Process struct {
	t    testing.TB
	cmd  *exec.Cmd
	URL  string
	Dir  string
	done chan struct{}
	mu   sync.Mutex
	log  strings.Builder
}

var listenRe = regexp.MustCompile(`msg=listening addr=(\S+)`)

// StartProcess runs the controller binary on dir with a fixed key and port
// 0, and waits for its "listening" log line.
func StartProcess(t testing.TB, dir string, extra ...string) *Process {
	t.Helper()
	return startBinary(t, buildBinary(t, "controller"), dir, extra...)
}

// startBinary is StartProcess with the controller binary at bin.
func startBinary(t testing.TB, bin, dir string, extra ...string) *Process {
	t.Helper()
	args := append([]string{"start", "--host", "127.0.0.1", "--port", "0", "--api-key", testKey,
		"--db", testkit.DB(t, dir), "--storage", filepath.Join(dir, "storage"),
		"--min-free-disk", "0"}, extra...) // as StartIn: no floor (a later flag in extra wins)
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	cmd.Stdout = io.Discard
	require.NoError(t, cmd.Start())
	p := &Process{t: t, cmd: cmd, Dir: dir, done: make(chan struct{})}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.log.WriteString(line + "\n")
			p.mu.Unlock()
			if m := listenRe.FindStringSubmatch(line); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
		cmd.Wait() //nolint:errcheck // the exit status is read through ProcessState
		close(p.done)
	}()
	select {
	case a := <-addr:
		p.URL = "http://" + a
	case <-p.done:
		t.Fatalf("controller exited at start: %s", p.Log())
	case <-time.After(30 * time.Second):
		p.Kill()
		t.Fatalf("controller did not listen within 30s: %s", p.Log())
	}
	t.Cleanup(p.Kill)
	return p
}

// Log returns what the process wrote to stderr.
func (p *Process) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// Kill sends SIGKILL and waits for the process to exit.
func (p *Process) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Client returns a Controller-like handle for issuing requests to the process.
func (p *Process) Client(t testing.TB) *Controller {
	return &Controller{t: t, URL: p.URL, Key: testKey, Dir: p.Dir, Client: newClient(), logBuf: &testkit.LockedBuffer{}}
}

// background is a started command: Done is closed when it exits, and Err is
// then its exit error. The test's cleanup kills it if it is still running.
type background struct {
	Done <-chan struct{}
	err  error
}

// Err is the command's exit error; only read it after Done.
func (b *background) Err() error { return b.err }

// startBackground starts cmd and waits for it in the background.
func startBackground(t testing.TB, cmd *exec.Cmd) *background {
	t.Helper()
	require.NoError(t, cmd.Start())
	done := make(chan struct{})
	b := &background{Done: done}
	go func() { b.err = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			cmd.Process.Kill()
			<-done
		}
	})
	return b
}
