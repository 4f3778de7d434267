package test

import (
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/cmd/app"
	"github.com/expo-free-agent/controller/internal/version"
)

// TestVersionShown: the running build's version is on /health, in
// controller_build_info and in the dashboard's footer. A test binary has no
// stamp, so these are the fallbacks (TestBinaryVersion checks a stamped one).
func TestVersionShown(t *testing.T) {
	t.Parallel()
	c := Start(t, WithConfig(func(cfg *app.Config) { cfg.MetricsPublic = true }))
	build := version.Get()
	h := c.Get("/health", nil).Object(t)
	require.Equal(t, build.Version, h["version"])
	require.Equal(t, build.Revision, h["revision"])

	labels := map[string]string{"version": build.Version, "revision": build.Revision, "goversion": build.GoVersion}
	require.Equal(t, 1.0, value(t, scrape(t, c, nil), "controller_build_info", labels))

	require.Contains(t, string(c.Get("/", nil).Body), `controller <span id="version">`+build.Version+`</span></footer>`)
}

// TestBinaryVersion builds the three commands stamped the way the Makefile
// stamps them and checks every place the stamp shows: `controller version`
// and each command's --version (exit 0, one line on stdout, even beside a
// setting that would be refused), the controller's start-up log line,
// /health, /metrics and the dashboard.
func TestBinaryVersion(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("binary test skipped in -short mode")
	}
	const (
		pkg = "github.com/expo-free-agent/controller/internal/version"
		ver = "v9.8.7-1-g0123abc-dirty"
		rev = "0123abcdef0123abcdef0123abcdef0123abcdef"
	)
	stamp := []string{"-ldflags", "-X " + pkg + ".version=" + ver + " -X " + pkg + ".revision=" + rev + " -X " + pkg + ".modified=true"}
	for _, tc := range []struct {
		name string
		runs [][]string
	}{
		{"controller", [][]string{{"version"}, {"--version"}, {"start", "--version", "--port", "not-a-port"}}},
		{"mock-worker", [][]string{{"--version"}, {"--fail-rate", "2", "-version"}}},
		{"loadgen", [][]string{{"--version"}, {"--scenario", "nope", "-version"}}},
	} {
		bin := buildBinary(t, tc.name, stamp...)
		line := regexp.MustCompile(`^` + tc.name + ` ` + regexp.QuoteMeta(ver) + ` \(revision ` + rev + `, modified, go1\.[^)]+\)\n$`)
		for _, args := range tc.runs {
			var stderr strings.Builder
			cmd := exec.Command(bin, args...)
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			require.NoError(t, err, "%s %v exits 0: %s", tc.name, args, &stderr)
			require.Regexp(t, line, string(out), "%s %v", tc.name, args)
			require.Empty(t, stderr.String())
		}
	}
	bin := buildBinary(t, "controller", stamp...)
	cmd := exec.Command(bin, "version", "extra")
	out, err := cmd.CombinedOutput()
	require.Error(t, err)
	require.Equal(t, 2, cmd.ProcessState.ExitCode())
	require.Contains(t, string(out), `version takes no arguments, got "extra"`)

	p := startBinary(t, bin, t.TempDir(), "--metrics-public")
	require.Contains(t, p.Log(), `msg="controller starting" version=`+ver+` revision=`+rev+` `)
	c := p.Client(t)
	h := c.Get("/health", nil)
	require.Equal(t, http.StatusOK, h.Status)
	require.Equal(t, ver, h.Object(t)["version"])
	require.Equal(t, rev, h.Object(t)["revision"])
	fams := scrape(t, c, nil)
	require.Len(t, fams["controller_build_info"], 1)
	info := fams["controller_build_info"][0]
	require.Equal(t, 1.0, info.value)
	require.Equal(t, ver, info.labels["version"])
	require.Equal(t, rev, info.labels["revision"])
	require.True(t, strings.HasPrefix(info.labels["goversion"], "go1."), info.labels["goversion"])
	require.Contains(t, string(c.Get("/", nil).Body), `controller <span id="version">`+ver+`</span>`)
}
