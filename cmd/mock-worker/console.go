package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// console prints one line per event, prefixed with the local time:
//
//	12:00:06 got build 9f1c2a4b… (ios)
//
// It is safe for concurrent use.
type console struct {
	mu      sync.Mutex
	w       io.Writer
	now     func() time.Time
	quiet   bool // warnings and errors only
	verbose bool // also Debugf
}

func (c *console) print(prefix, format string, args ...any) {
	msg := strings.TrimRight(fmt.Sprintf(format, args...), "\n")
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintf(c.w, "%s %s%s\n", c.now().Format("15:04:05"), prefix, msg)
}

// Debugf prints only with --verbose.
func (c *console) Debugf(format string, args ...any) {
	if c.verbose {
		c.print("  ", format, args...)
	}
}

// Infof prints unless --quiet.
func (c *console) Infof(format string, args ...any) {
	if !c.quiet {
		c.print("", format, args...)
	}
}

// Warnf always prints.
func (c *console) Warnf(format string, args ...any) { c.print("warning: ", format, args...) }

// Errorf always prints.
func (c *console) Errorf(format string, args ...any) { c.print("error: ", format, args...) }

// shortID is the first 8 characters of an id, for the console.
func shortID(id string) string {
	if len(id) <= 8 {
		return id
	}
	return id[:8] + "…"
}

// humanSize renders a byte count as 512 B, 3.0 KiB, 1.2 MiB or 1.0 GiB.
func humanSize(n int64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	case n < 1<<30:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	default:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	}
}
