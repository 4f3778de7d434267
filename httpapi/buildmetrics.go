package httpapi

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/expo-free-agent/controller/store/domain"
)

// BuildObserver is the queue manager's observer (queue.Observer) that
// records build timings as Prometheus histograms (docs/API.md §3.4):
// queue wait (submission → assignment) and build duration (assignment →
// finish), by platform.
type BuildObserver struct {
	queueWait *prometheus.HistogramVec
	duration  *prometheus.HistogramVec
}

// NewBuildObserver returns an observer; pass it to the queue manager's
// Config and to the server's Config, which serves it on /metrics.
func NewBuildObserver() *BuildObserver {
	return &BuildObserver{
		queueWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "controller_queue_wait_seconds",
			Help:    "Time from a build's submission to its assignment to a worker, by platform.",
			Buckets: []float64{.01, .05, .1, .5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200, 14400},
		}, []string{"platform"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "controller_build_duration_seconds",
			Help:    "Time from a build's last assignment to its end, by platform and outcome (completed, failed).",
			Buckets: []float64{10, 30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600, 5400, 7200},
		}, []string{"platform", "outcome"}),
	}
}

// Assigned records a queue wait.
func (o *BuildObserver) Assigned(p domain.Platform, wait time.Duration) {
	o.queueWait.WithLabelValues(string(p)).Observe(wait.Seconds())
}

// Finished records a build duration.
func (o *BuildObserver) Finished(p domain.Platform, outcome string, d time.Duration) {
	o.duration.WithLabelValues(string(p), outcome).Observe(d.Seconds())
}
