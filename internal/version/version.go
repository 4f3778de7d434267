// Package version says which build of the controller is running: its
// version, the VCS revision it was built from and the Go release that built
// it. The commands print it (--version), the controller logs it at start,
// and the HTTP layer shows it on /health, /metrics and the dashboard.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
)

// Set at link time. The Makefile passes `git describe --tags --always
// --dirty`, `git rev-parse HEAD` and whether the former ends in -dirty:
//
//	go build -ldflags "-X github.com/expo-free-agent/controller/internal/version.version=v1.2.0 ..." ./cmd/controller
//
// The revision is stamped too because the Go toolchain records none in some
// checkouts (a git worktree, GOFLAGS=-buildvcs=false).
var version, revision, modified string

const (
	// Dev is the version of a build that was given none: no -X at link
	// time and no module version (go run, go test, a plain go build
	// outside a git checkout).
	Dev = "dev"
	// Unknown is the revision of a build that recorded none (go run, go
	// test, a build outside a git checkout or with -buildvcs=false).
	Unknown = "unknown"
)

// Info describes the running build.
type Info struct {
	Version   string // set at link time, else the module version, else Dev
	Revision  string // the VCS revision (vcs.revision), else Unknown
	Modified  bool   // the work tree had uncommitted changes (vcs.modified)
	GoVersion string // the Go release that built it, e.g. go1.26.8
}

// Get returns the running build's Info, read once.
func Get() Info { return get() }

var get = sync.OnceValue(func() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = nil
	}
	return resolve(stamp{version, revision, modified}, bi)
})

// stamp is what was set at link time; "" where nothing was.
type stamp struct{ version, revision, modified string }

// resolve combines the link-time stamp with the build information the Go
// toolchain embeds (nil when the binary has none). The revision and the
// modified flag come from the same source: the stamp if it has a revision,
// else the toolchain's vcs.revision and vcs.modified.
func resolve(linked stamp, bi *debug.BuildInfo) Info {
	i := Info{Version: strings.TrimSpace(linked.version), Revision: strings.TrimSpace(linked.revision),
		Modified: linked.modified == "true", GoVersion: runtime.Version()}
	if bi != nil {
		// "(devel)" is what go run, go test and builds without VCS
		// information record for the main module: no version at all.
		if i.Version == "" && bi.Main.Version != "(devel)" {
			i.Version = bi.Main.Version
		}
		if i.Revision == "" {
			for _, s := range bi.Settings {
				switch s.Key {
				case "vcs.revision":
					i.Revision = s.Value
				case "vcs.modified":
					i.Modified = s.Value == "true"
				}
			}
		}
		if bi.GoVersion != "" {
			i.GoVersion = bi.GoVersion
		}
	}
	if i.Version == "" {
		i.Version = Dev
	}
	if i.Revision == "" {
		i.Revision = Unknown
	}
	return i
}

// String is the line the commands print after their name, e.g.
// "v1.2.0 (revision 9ac83e2f…, modified, go1.26.8)".
func (i Info) String() string {
	modified := ""
	if i.Modified {
		modified = ", modified"
	}
	return fmt.Sprintf("%s (revision %s%s, %s)", i.Version, i.Revision, modified, i.GoVersion)
}
