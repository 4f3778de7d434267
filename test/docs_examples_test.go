package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/internal/testkit"
)

// The README's worked example and docs/INTEGRATION_EXAMPLES.md promise that
// their shell blocks, pasted in order on a fresh machine, work. This file
// keeps that promise: it extracts the blocks and runs them with bash, as
// docs/TESTING.md ("The docs examples") describes, including the
// `<!-- doctest: … -->` directives a block may carry.

// docTools are the programs the examples use besides the shell's builtins
// and coreutils.
var docTools = []string{"bash", "curl", "jq"}

const (
	// docURL is the controller address the examples write; the test puts
	// its own controller's address in its place.
	docURL = "http://localhost:3000"
	// docMarker starts the line the test prints before each block, so that
	// the output can be split by block.
	docMarker = "::doctest block "
)

var (
	fenceLine     = regexp.MustCompile("^```\\s*(\\S*)\\s*$")
	directiveLine = regexp.MustCompile(`^<!-- doctest: ([a-z]+)(?: (.*?))? -->$`)
	goRunCmd      = regexp.MustCompile(`\bgo run \./cmd/([a-z-]+)`)
	docKeyLine    = regexp.MustCompile(`CONTROLLER_API_KEY=(\S+)`)
)

// shellBlock is a fenced sh or bash block of a doc.
type shellBlock struct {
	doc       string // the file, relative to the repository root
	line      int    // the line of the opening fence, from 1
	directive string // "" (run it), "background", "skip" or "file"
	file      string // a "file" block's file name
	text      string
}

func (b shellBlock) String() string { return fmt.Sprintf("%s:%d", b.doc, b.line) }

// shellBlocks returns the shell blocks of the repository file doc, in order:
// all of them, or those of the section under the heading line section (up to
// the next heading of the same level). It fails the test on a directive it
// cannot read or does not know, or one that is not right before a shell
// block's opening fence.
func shellBlocks(t *testing.T, doc, section string) []shellBlock {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", doc))
	require.NoError(t, err)
	lines := strings.Split(string(raw), "\n")
	first, last := 0, len(lines)
	if section != "" {
		first = -1
		level := section[:strings.IndexByte(section, ' ')+1]
		for i, l := range lines {
			if first < 0 && l == section {
				first = i
			} else if first >= 0 && strings.HasPrefix(l, level) {
				last = i
				break
			}
		}
		require.GreaterOrEqual(t, first, 0, "%s has no heading %q", doc, section)
	}

	var blocks []shellBlock
	var directive, arg string
	directiveAt := -1
	for i := first; i < last; i++ {
		if strings.HasPrefix(lines[i], "<!-- doctest") {
			m := directiveLine.FindStringSubmatch(lines[i])
			require.NotNil(t, m, "%s:%d: a doctest directive reads <!-- doctest: NAME [ARGUMENT] -->", doc, i+1)
			require.True(t, i+1 < last && fenceLine.MatchString(lines[i+1]),
				"%s:%d: a doctest directive goes on the line right before a block's opening fence", doc, i+1)
			directive, arg, directiveAt = m[1], m[2], i
			continue
		}
		m := fenceLine.FindStringSubmatch(lines[i])
		if m == nil {
			continue
		}
		start := i
		for i++; i < last && !strings.HasPrefix(lines[i], "```"); i++ {
		}
		require.Less(t, i, last, "%s:%d: the block is not closed", doc, start+1)
		d, a := "", ""
		if directiveAt == start-1 {
			d, a = directive, arg
		}
		directiveAt = -1
		if m[1] != "sh" && m[1] != "bash" {
			require.Empty(t, d, "%s:%d: a doctest directive belongs right before a sh or bash block", doc, start+1)
			continue
		}
		b := shellBlock{doc: doc, line: start + 1, directive: d, text: strings.Join(lines[start+1:i], "\n")}
		switch d {
		case "", "background":
			require.Empty(t, a, "%s: %q takes no argument", b, d)
		case "skip":
			require.Regexp(t, `^\(.+\)$`, a, "%s: say why a block is skipped: <!-- doctest: skip (reason) -->", b)
		case "file":
			require.Regexp(t, `^[A-Za-z0-9._-]+$`, a, "%s: <!-- doctest: file NAME -->", b)
			b.file = a
		default:
			t.Fatalf("%s: unknown doctest directive %q (background, skip, file)", b, d)
		}
		blocks = append(blocks, b)
	}
	return blocks
}

// TestDocsExamplesRunInOrder pastes the README's worked example, then
// docs/INTEGRATION_EXAMPLES.md, into bash, block after block, in one working
// directory, and checks the outcome: every block exits 0 and gets no error
// answer more often than its text shows it, the mock build completes, the
// cancels cancel, no build is left unfinished, and every result the examples
// download is a completed build's.
func TestDocsExamplesRunInOrder(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("docs examples skipped in -short mode (they run the binaries)")
	}
	requireDocTools(t)

	readme := shellBlocks(t, "README.md", "## A worked example")
	integration := shellBlocks(t, filepath.Join("docs", "INTEGRATION_EXAMPLES.md"), "")
	require.GreaterOrEqual(t, countBlocks(readme, "background"), 2, "the worked example starts a controller and a mock worker")
	require.GreaterOrEqual(t, countBlocks(readme, ""), 3, "the worked example submits, follows and downloads")
	require.GreaterOrEqual(t, countBlocks(integration, ""), 15, "the integration examples' blocks are found")
	var key string
	for _, b := range readme {
		if m := docKeyLine.FindStringSubmatch(b.text); m != nil && b.directive == "background" {
			key = m[1]
			break
		}
	}
	require.NotEmpty(t, key, "the worked example starts the controller with a known key")

	r := newDocRun(t)
	r.run(readme)
	require.NotEmpty(t, r.url, "the worked example starts a controller")
	c := &Controller{t: t, URL: r.url, Key: key, Client: newClient(), logBuf: &testkit.LockedBuffer{}}
	defer c.Stop()

	// The worked example: one Android build, completed by the mock worker,
	// and its result downloaded.
	builds := listBuilds(c)
	require.Len(t, builds, 1, "the worked example submits one build")
	require.Equal(t, "completed", builds[0]["status"])
	require.Equal(t, "android", c.Status(builds[0]["id"].(string))["platform"])
	r.requireResult(c, "app.apk", builds)

	r.run(integration)
	builds = listBuilds(c)
	cancelled := 0
	for _, b := range builds {
		require.Contains(t, []any{"completed", "failed"}, b["status"], "the examples leave no build unfinished: %v", b)
		if c.Status(b["id"].(string))["error_message"] == "Build cancelled by user" {
			cancelled++
		}
	}
	require.Equal(t, 2, cancelled, "section 3 cancels a build and its retry")
	for _, f := range []string{"app.apk", "build.ipa", "ci-app.apk"} {
		r.requireResult(c, f, builds)
	}
	r.requireBackgroundRunning()
}

// requireDocTools skips the test when a program the examples use is
// missing, or fails it under CI (CI set), so that the test cannot silently
// vanish there.
func requireDocTools(t *testing.T) {
	t.Helper()
	var missing []string
	for _, name := range docTools {
		if _, err := exec.LookPath(name); err != nil {
			missing = append(missing, name)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("the docs examples need %s (Debian/Ubuntu: apt-get install -y %s)",
		strings.Join(missing, ", "), strings.Join(missing, " "))
	if os.Getenv("CI") != "" {
		t.Fatalf("%s; CI is set, so the test may not be skipped", msg)
	}
	t.Skipf("%s; skipped (with CI set this test fails instead)", msg)
}

// errorAnswer is an error answer of the controller, as curl prints it.
var errorAnswer = regexp.MustCompile(`\{"error":"[^"]*"\}`)

// countErrorAnswers counts each error answer in s.
func countErrorAnswers(s string) map[string]int {
	n := map[string]int{}
	for _, e := range errorAnswer.FindAllString(s, -1) {
		n[e]++
	}
	return n
}

func countBlocks(blocks []shellBlock, directive string) int {
	n := 0
	for _, b := range blocks {
		if b.directive == directive {
			n++
		}
	}
	return n
}

// listBuilds is GET /api/builds with the key.
func listBuilds(c *Controller) []map[string]any {
	c.t.Helper()
	r := c.Get("/api/builds", c.KeyH())
	require.Equal(c.t, http.StatusOK, r.Status, "%s", r.Body)
	var out []map[string]any
	require.NoError(c.t, json.Unmarshal(r.Body, &out))
	return out
}

// docRun is one newcomer's session: a working directory, the environment of
// a fresh terminal, the background blocks still running, and the
// controller's address once its block has started it.
type docRun struct {
	t          *testing.T
	dir        string
	env        []string
	url        string
	background []*docBackground
}

type docBackground struct {
	block shellBlock
	out   *testkit.LockedBuffer
	done  chan struct{}
}

func newDocRun(t *testing.T) *docRun {
	home := t.TempDir()
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + home,
		"XDG_CONFIG_HOME=" + filepath.Join(home, ".config"),
		"LANG=C.UTF-8",
		// Read by the controller: a free port, and no listening beyond
		// this machine.
		"PORT=0",
		"CONTROLLER_HOST=127.0.0.1",
	}
	if tmp := os.Getenv("TMPDIR"); tmp != "" {
		env = append(env, "TMPDIR="+tmp)
	}
	return &docRun{t: t, dir: t.TempDir(), env: env}
}

// prepare returns the block's text as the test runs it: `go run ./cmd/NAME`
// becomes the binary built from ./cmd/NAME, and the docs' controller address
// the address of the controller that was started.
func (r *docRun) prepare(b shellBlock) string {
	s := goRunCmd.ReplaceAllStringFunc(b.text, func(m string) string {
		return buildBinary(r.t, goRunCmd.FindStringSubmatch(m)[1])
	})
	if strings.Contains(s, docURL) {
		require.NotEmpty(r.t, r.url, "%s: the block calls the controller before a block started it", b)
		s = strings.ReplaceAll(s, docURL, r.url)
	}
	return s
}

// run runs one doc's blocks in order: its background blocks each in a bash
// of their own (a terminal of its own), then its other blocks in one bash,
// as if pasted into one terminal.
func (r *docRun) run(blocks []shellBlock) {
	r.t.Helper()
	var fg []shellBlock
	for _, b := range blocks {
		switch b.directive {
		case "skip":
		case "background":
			require.Empty(r.t, fg, "%s: a background block comes before the doc's other blocks", b)
			r.startBackground(b)
		default:
			fg = append(fg, b)
		}
	}
	if len(fg) == 0 {
		return
	}

	var script strings.Builder
	script.WriteString("set -euo pipefail\n")
	for i, b := range fg {
		fmt.Fprintf(&script, "printf '\\n%s%d\\n'\n", docMarker, i)
		if b.directive == "file" {
			require.NotContains(r.t, b.text, "\nDOCTEST_EOF\n", "%s", b)
			fmt.Fprintf(&script, "cat > %s <<'DOCTEST_EOF'\n%s\nDOCTEST_EOF\n", b.file, r.prepare(b))
			continue
		}
		script.WriteString(r.prepare(b) + "\n")
	}
	fmt.Fprintf(&script, "printf '\\n%send\\n'\n", docMarker)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script.String())
	cmd.Dir, cmd.Env = r.dir, r.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	began := time.Now()
	err := cmd.Run()

	// Split the output at the markers: parts[i] is block i's output.
	parts := map[int]string{}
	reached, ended := -1, false
	for _, chunk := range strings.Split(out.String(), "\n"+docMarker)[1:] {
		head, body, _ := strings.Cut(chunk, "\n")
		if head == "end" {
			ended = true
			break
		}
		i, convErr := strconv.Atoi(head)
		require.NoError(r.t, convErr, "marker %q", head)
		parts[i], reached = body, i
	}
	if err != nil || !ended {
		why := "stopped the shell"
		switch {
		case ctx.Err() != nil:
			why = "still running after 3m"
		case err != nil:
			why = err.Error()
		}
		if reached < 0 {
			r.t.Fatalf("%s: the shell failed before the first block (%s):\n%s", fg[0].doc, why, out.String())
		}
		b := fg[reached]
		r.t.Fatalf("%s: the block failed (%s)%s\n--- block ---\n%s\n--- its output ---\n%s",
			b, why, r.backgroundOutput(), b.text, parts[reached])
	}
	for i, b := range fg {
		for e, n := range countErrorAnswers(parts[i]) {
			if shown := countErrorAnswers(b.text)[e]; n > shown {
				r.t.Fatalf("%s: the block got %s %d times, its doc shows it %d times\n--- block ---\n%s\n--- its output ---\n%s",
					b, e, n, shown, b.text, parts[i])
			}
		}
	}
	r.t.Logf("%s: %d blocks ran in %s", fg[0].doc, len(fg), time.Since(began).Round(time.Millisecond))
}

// startBackground starts a background block in a process group of its own,
// stopped (SIGTERM, then SIGKILL) when the test ends. The first one starts
// the controller: the test waits for its "listening" line and takes the
// address from it.
func (r *docRun) startBackground(b shellBlock) {
	r.t.Helper()
	cmd := exec.Command("bash", "-c", "set -euo pipefail\n"+r.prepare(b))
	cmd.Dir, cmd.Env = r.dir, r.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	bg := &docBackground{block: b, out: &testkit.LockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = bg.out, bg.out
	require.NoError(r.t, cmd.Start(), "%s", b)
	go func() {
		cmd.Wait() //nolint:errcheck // a background block runs until the test stops it
		close(bg.done)
	}()
	r.t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-bg.done:
		case <-time.After(15 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-bg.done
		}
	})
	r.background = append(r.background, bg)
	if r.url != "" {
		return
	}
	eventually(r.t, 60*time.Second, func() bool {
		select {
		case <-bg.done:
			r.t.Fatalf("%s: the controller exited at start:\n%s", b, bg.out.String())
		default:
		}
		if m := listenRe.FindStringSubmatch(bg.out.String()); m != nil {
			r.url = "http://" + m[1]
			return true
		}
		return false
	}, b.String()+": the controller listens")
}

// requireBackgroundRunning fails the test if a background block ended
// before the test stopped it.
func (r *docRun) requireBackgroundRunning() {
	r.t.Helper()
	for _, bg := range r.background {
		select {
		case <-bg.done:
			r.t.Fatalf("%s: the background block ended early:\n%s", bg.block, bg.out.String())
		default:
		}
	}
}

// backgroundOutput is what the background blocks printed, for a failure.
func (r *docRun) backgroundOutput() string {
	var s strings.Builder
	for _, bg := range r.background {
		fmt.Fprintf(&s, "\n--- background %s ---\n%s", bg.block, bg.out.String())
	}
	return s.String()
}

// requireResult checks that the file the examples wrote in the working
// directory is the result of one of the completed builds.
func (r *docRun) requireResult(c *Controller, name string, builds []map[string]any) {
	r.t.Helper()
	got, err := os.ReadFile(filepath.Join(r.dir, name))
	require.NoError(r.t, err, "the examples write %s", name)
	require.NotEmpty(r.t, got, name)
	for _, b := range builds {
		if b["status"] != "completed" {
			continue
		}
		dl := c.Get("/api/builds/"+b["id"].(string)+"/download", c.KeyH())
		require.Equal(r.t, http.StatusOK, dl.Status, "%s", dl.Body)
		if bytes.Equal(dl.Body, got) {
			return
		}
	}
	r.t.Fatalf("%s (%d bytes) is no completed build's result", name, len(got))
}
