// Package usage prints the flag list of the commands' --help, one line per
// flag with its environment variable and default, the same way in every
// command.
package usage

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// Flag is one line of a --help.
type Flag struct {
	Name    string // without dashes
	Help    string // backquotes (flag.UnquoteUsage's argument names) are dropped
	Env     string // the environment variable; "" when there is none
	Default string // as the flag takes it (500MiB, 30s); "" when there is none
}

// Print writes the flags in the order given, one per line, the help aligned:
//
//	--max-source-size  largest source upload (env CONTROLLER_MAX_SOURCE_SIZE, default 500MiB)
func Print(w io.Writer, flags []Flag) {
	width := 0
	for _, f := range flags {
		width = max(width, len(f.Name))
	}
	for _, f := range flags {
		var notes []string
		if f.Env != "" {
			notes = append(notes, "env "+f.Env)
		}
		if f.Default != "" {
			notes = append(notes, "default "+f.Default)
		}
		line := fmt.Sprintf("  --%-*s  %s", width, f.Name, strings.ReplaceAll(f.Help, "`", ""))
		if len(notes) > 0 {
			line += " (" + strings.Join(notes, ", ") + ")"
		}
		fmt.Fprintln(w, line)
	}
}

// FromFlagSet lists the flags of fs in name order, with their defaults;
// env names the environment variable of the flags that have one.
func FromFlagSet(fs *flag.FlagSet, env map[string]string) []Flag {
	var out []Flag
	fs.VisitAll(func(f *flag.Flag) {
		out = append(out, Flag{Name: f.Name, Help: f.Usage, Env: env[f.Name], Default: f.DefValue})
	})
	return out
}
