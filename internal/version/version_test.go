package version

import (
	"runtime"
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestResolve(t *testing.T) {
	t.Parallel()
	vcs := []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: "9ac83e2f0123456789abcdef0123456789abcdef"},
		{Key: "vcs.modified", Value: "true"}}
	built := func(version string, settings []debug.BuildSetting) *debug.BuildInfo {
		return &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/expo-free-agent/controller", Version: version},
			Settings: settings}
	}
	for _, tc := range []struct {
		name   string
		linked stamp
		bi     *debug.BuildInfo
		want   Info
	}{
		{"StampWins", stamp{"v1.2.0-3-g9ac83e2", "9ac83e2f0123456789abcdef0123456789abcdef", "false"},
			built("v0.0.0-20261127165800-0123456789ab+dirty", vcs),
			Info{"v1.2.0-3-g9ac83e2", "9ac83e2f0123456789abcdef0123456789abcdef", false, "go1.26.8"}},
		{"StampedVersionOnly", stamp{version: "v1.2.0-3-g9ac83e2-dirty"}, built("v0.0.0-20261127165800-9ac83e2f0123+dirty", vcs),
			Info{"v1.2.0-3-g9ac83e2-dirty", "9ac83e2f0123456789abcdef0123456789abcdef", true, "go1.26.8"}},
		{"StampInWorktree", stamp{"9ac83e2-dirty", "9ac83e2f0123456789abcdef0123456789abcdef", "true"}, built("(devel)", nil),
			Info{"9ac83e2-dirty", "9ac83e2f0123456789abcdef0123456789abcdef", true, "go1.26.8"}},
		{"ModuleVersion", stamp{}, built("v0.0.0-20261127165800-9ac83e2f0123+dirty", vcs),
			Info{"v0.0.0-20261127165800-9ac83e2f0123+dirty", "9ac83e2f0123456789abcdef0123456789abcdef", true, "go1.26.8"}},
		{"CleanCheckout", stamp{}, built("v1.2.0", []debug.BuildSetting{{Key: "vcs.revision", Value: "abc"}, {Key: "vcs.modified", Value: "false"}}),
			Info{"v1.2.0", "abc", false, "go1.26.8"}},
		{"GoRun", stamp{}, built("(devel)", nil), Info{Dev, Unknown, false, "go1.26.8"}},
		{"EmptyModuleVersion", stamp{}, built("", nil), Info{Dev, Unknown, false, "go1.26.8"}},
		{"StampWithoutGit", stamp{version: " v2.0.0\n"}, built("(devel)", nil), Info{"v2.0.0", Unknown, false, "go1.26.8"}},
		{"NoBuildInfo", stamp{}, nil, Info{Dev, Unknown, false, runtime.Version()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tc.want, resolve(tc.linked, tc.bi))
		})
	}
}

func TestString(t *testing.T) {
	t.Parallel()
	require.Equal(t, "v1.2.0 (revision abc, modified, go1.26.8)", Info{"v1.2.0", "abc", true, "go1.26.8"}.String())
	require.Equal(t, "dev (revision unknown, go1.26.8)", Info{Dev, Unknown, false, "go1.26.8"}.String())
}

// TestGet: a test binary has no link-time version and no VCS information,
// so it reports the fallbacks, never an empty field.
func TestGet(t *testing.T) {
	t.Parallel()
	i := Get()
	require.NotEmpty(t, i.Version)
	require.NotEmpty(t, i.Revision)
	require.Equal(t, runtime.Version(), i.GoVersion)
	require.Equal(t, i, Get(), "read once")
}
