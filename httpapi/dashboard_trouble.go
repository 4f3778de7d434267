package httpapi

import (
	"fmt"
	"sort"

	"github.com/expo-free-agent/controller/store/domain"
)

// troubleItem is one warning of the overview's banner.
type troubleItem struct {
	Kind string // stuck, timeout, offline, failures
	Text string
}

// failureAlarm: the banner warns when at least this share of the builds
// finished in the last hour failed (cancellations left out), and at least
// failureAlarmMin of them.
const (
	failureAlarm    = 0.5
	failureAlarmMin = 2
)

// trouble is what an operator should look at now: pending builds that no
// online worker can take, running builds near their timeout, workers gone
// offline holding a build, and a high failure rate in the last hour.
func (s *Server) trouble(d dashboardData, v *dashboardView) []troubleItem {
	var out []troubleItem
	platforms := make([]domain.Platform, 0, len(d.facts.PendingByPlatform))
	for p := range d.facts.PendingByPlatform {
		platforms = append(platforms, p)
	}
	sort.Slice(platforms, func(i, j int) bool { return platforms[i] < platforms[j] })
	for _, p := range platforms {
		n := d.facts.PendingByPlatform[p]
		if n == 0 || anyOnlineTakes(d, p) {
			continue
		}
		out = append(out, troubleItem{Kind: "stuck",
			Text: fmt.Sprintf("%d %s %s waiting; no online worker takes %s", n, p, plural(n, "build", "builds"), p)})
	}
	workers := map[string]dashWorker{}
	for _, w := range v.Workers {
		workers[w.ID] = w
	}
	for i, b := range d.running {
		db := v.Running[i]
		if b.WorkerID != nil {
			if w, ok := workers[*b.WorkerID]; ok && !w.Online {
				out = append(out, troubleItem{Kind: "offline",
					Text: fmt.Sprintf("Worker %s is offline and holds build %s", w.Name, db.Title())})
				continue
			}
		}
		if db.NearTimeout {
			out = append(out, troubleItem{Kind: "timeout",
				Text: fmt.Sprintf("Build %s not heard from for %s; it times out in %s", db.Title(), db.Heard, db.TimeoutIn)})
		}
	}
	if f, n := v.FailedLastHour, v.FinishedLastHour; f >= failureAlarmMin && float64(f) >= failureAlarm*float64(n) {
		out = append(out, troubleItem{Kind: "failures",
			Text: fmt.Sprintf("%d of %d builds finished in the last hour failed", f, n)})
	}
	return out
}

// anyOnlineTakes reports whether an online worker accepts platform p.
func anyOnlineTakes(d dashboardData, p domain.Platform) bool {
	for _, w := range d.workers {
		if !online(w, d.at) {
			continue
		}
		if ps := domain.PlatformsOf(w.Capabilities); ps == nil || ps[p] {
			return true
		}
	}
	return false
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
