package httpapi

import (
	"encoding/json"
	"html/template"
	"sort"
	"strconv"
	"strings"
	"time"
)

// How the dashboard writes times, durations, sizes and platforms.

func short(id string) string {
	if len(id) >= 8 {
		return id[:8]
	}
	return id
}

func fmtTime(ms int64) string {
	return time.UnixMilli(ms).UTC().Format("2006-01-02 15:04:05 UTC")
}

func fmtDuration(ms int64) string {
	if ms < 0 {
		ms = 0
	}
	d := time.Duration(ms) * time.Millisecond
	switch {
	case d < time.Minute:
		return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s"
	case d < time.Hour:
		return strconv.Itoa(int(d.Minutes())) + "m " + strconv.Itoa(int(d.Seconds())%60) + "s"
	default:
		return strconv.Itoa(int(d.Hours())) + "h " + strconv.Itoa(int(d.Minutes())%60) + "m"
	}
}

func fmtBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	f, suffix := float64(n), []string{"KiB", "MiB", "GiB", "TiB"}
	i := -1
	for f >= unit && i < len(suffix)-1 {
		f /= unit
		i++
	}
	return strconv.FormatFloat(f, 'f', 1, 64) + " " + suffix[i]
}

// platformsText shows capabilities.platforms, or "any".
func platformsText(capabilities string) string {
	var caps struct {
		Platforms []any `json:"platforms"`
	}
	if json.Unmarshal([]byte(capabilities), &caps) != nil || caps.Platforms == nil {
		return "any"
	}
	var out []string
	for _, p := range caps.Platforms {
		if s, ok := p.(string); ok {
			out = append(out, s)
		}
	}
	sort.Strings(out)
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}

// agoHTML is a moment as the dashboard shows it: the full UTC time, which
// the page's script turns into "3 min ago" with the viewer's local time on
// hover. Zero is empty.
func agoHTML(ms int64) template.HTML {
	if ms == 0 {
		return ""
	}
	t := time.UnixMilli(ms).UTC()
	full := fmtTime(ms)
	return template.HTML(`<time class="ago" datetime="` + t.Format(time.RFC3339) + `" data-ts="` +
		strconv.FormatInt(ms, 10) + `" title="` + full + `">` + full + `</time>`) //nolint:gosec // digits and fixed text
}
