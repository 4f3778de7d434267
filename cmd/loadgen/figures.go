package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Figure is one measured value. It prints as the machine-readable line
// `figure <name>=<value> <unit>`.
type Figure struct {
	Name  string
	Value float64
	Unit  string
}

func (f Figure) String() string {
	return "figure " + f.Name + "=" + formatValue(f.Value) + " " + f.Unit
}

// formatValue prints v with about three significant decimals for small
// values and one decimal for large ones, without trailing zeros: 12345.6,
// 612, 3.25, 0.812. NaN and infinities (never produced on purpose) print as
// Go does.
func formatValue(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	prec := 3
	switch a := math.Abs(v); {
	case a >= 100:
		prec = 1
	case a >= 1:
		prec = 2
	}
	s := strconv.FormatFloat(v, 'f', prec, 64)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	if s == "-0" {
		s = "0"
	}
	return s
}

// Result is what one scenario measured and what went wrong in it.
type Result struct {
	Scenario string
	Figures  []Figure
	// Errors counts non-2xx answers and failed requests (not those cut
	// short by an interrupt).
	Errors int64
	// Failures are broken guarantees or aborted steps (a build never
	// completed, a digest mismatch, a setup that could not finish).
	Failures []string
	// ErrorSamples are the first few failed requests, for the summary.
	ErrorSamples []string
	// Notes and Hints are readable remarks for the summary.
	Notes []string
	Hints []string
	Took  time.Duration
}

// add appends the figure <scenario>_<name>.
func (r *Result) add(name string, v float64, unit string) {
	r.Figures = append(r.Figures, Figure{Name: r.Scenario + "_" + name, Value: v, Unit: unit})
}

func (r *Result) fail(format string, args ...any) {
	r.Failures = append(r.Failures, fmt.Sprintf(format, args...))
}

func (r *Result) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

func (r *Result) hint(h string) {
	if !slices.Contains(r.Hints, h) {
		r.Hints = append(r.Hints, h)
	}
}

// Failed reports whether the scenario had errors or broken guarantees.
func (r *Result) Failed() bool { return r.Errors > 0 || len(r.Failures) > 0 }

// finish takes over the client's error count and samples and appends the
// errors figure, always last.
func (r *Result) finish(c *client) {
	if c != nil {
		n, samples := c.errorReport()
		r.Errors += n
		r.ErrorSamples = append(r.ErrorSamples, samples...)
	}
	r.add("errors", float64(r.Errors), "count")
}

// writeFigures prints the figure lines of r.
func writeFigures(w io.Writer, r Result) {
	for _, f := range r.Figures {
		fmt.Fprintln(w, f.String())
	}
}

// writeSummary prints the readable report of all scenarios.
func writeSummary(w io.Writer, cfg Config, results []Result) {
	fmt.Fprintf(w, "\n==================== loadgen summary ====================\n")
	fmt.Fprintf(w, "controller %s, platform %s\n", cfg.URL, cfg.Platform)
	for _, r := range results {
		state := "OK"
		if r.Failed() {
			state = "FAILED"
		}
		fmt.Fprintf(w, "\n--- %s: %s (%s)\n", r.Scenario, state, r.Took.Round(time.Millisecond))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, f := range r.Figures {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", strings.TrimPrefix(f.Name, r.Scenario+"_"), formatValue(f.Value), f.Unit)
		}
		tw.Flush()
		for _, n := range r.Notes {
			fmt.Fprintf(w, "  note: %s\n", n)
		}
		for _, f := range r.Failures {
			fmt.Fprintf(w, "  FAILURE: %s\n", f)
		}
		for _, s := range r.ErrorSamples {
			fmt.Fprintf(w, "  error: %s\n", s)
		}
		for _, h := range r.Hints {
			fmt.Fprintf(w, "  HINT: %s\n", h)
		}
	}
	fmt.Fprintf(w, "=========================================================\n")
}
