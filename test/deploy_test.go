package test

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/cmd/app"
)

// helpSetting is how --help names a setting's variable and its default.
var helpSetting = regexp.MustCompile(`\(env (\w+)(?:, default ([^)]*))?\)`)

// TestDeployEnvExample keeps deploy/controller.env.example true to the
// code: it names every setting the controller reads from its environment
// (set, or commented out), a commented-out setting shows its default, the
// file is valid in systemd's EnvironmentFile= format, and the values it sets
// are accepted. README.md's configuration table names every variable too.
func TestDeployEnvExample(t *testing.T) {
	t.Parallel()
	var help bytes.Buffer
	_, err := app.ParseArgs([]string{"-h"}, func(string) string { return "" }, &help)
	require.ErrorIs(t, err, app.ErrHelp)
	defaults := map[string]string{}
	for _, m := range helpSetting.FindAllStringSubmatch(help.String(), -1) {
		defaults[m[1]] = m[2]
	}
	require.Contains(t, defaults, "CONTROLLER_API_KEY", "the usage names the variables")

	b, err := os.ReadFile(filepath.Join("..", "deploy", "controller.env.example"))
	require.NoError(t, err)
	set, shown := map[string]string{}, map[string]bool{}
	commented := regexp.MustCompile(`^#\s?([A-Z][A-Z0-9_]*)=(.*)$`)
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if m := commented.FindStringSubmatch(line); m != nil {
			require.Contains(t, defaults, m[1], "line %d: %s is not a setting", n, m[1])
			if def := defaults[m[1]]; def != "" {
				require.Equal(t, def, m[2], "line %d: a commented-out %s shows its default", n, m[1])
			}
			shown[m[1]] = true
			continue
		}
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		name, value, ok := strings.Cut(line, "=")
		require.True(t, ok, "line %d is NAME=value: %q", n, line)
		require.Contains(t, defaults, name, "line %d: %s is not a setting", n, name)
		// systemd keeps a "# ..." after a value as part of the value.
		require.NotContains(t, value, "#", "line %d: a comment goes on a line of its own", n)
		set[name], shown[name] = value, true
	}
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	require.NoError(t, err)
	for name := range defaults {
		require.True(t, shown[name], "deploy/controller.env.example names %s", name)
		require.Contains(t, string(readme), "`"+name+"`", "README.md's configuration table names %s", name)
	}
	_, err = app.ParseArgs(nil, func(k string) string { return set[k] }, &bytes.Buffer{})
	require.NoError(t, err, "the example's values are accepted")
}
