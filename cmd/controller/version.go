package main

import (
	"fmt"
	"io"

	"github.com/expo-free-agent/controller/internal/version"
)

// versionCommand is `controller version` (and `controller --version`): one
// line with the version, the revision, whether the tree was modified, and
// the Go release, e.g.
//
//	controller v1.2.0 (revision 9ac83e2f…, go1.26.8)
//
// It takes no arguments: any is a usage error (exit 2).
func versionCommand(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		fmt.Fprintf(stderr, "controller: version takes no arguments, got %q\n", args[0])
		return 2
	}
	fmt.Fprintln(stdout, "controller", version.Get())
	return 0
}
