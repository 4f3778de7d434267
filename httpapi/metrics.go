package httpapi

import (
	"context"
	"strconv"
	"time"

	"github.com/expo-free-agent/controller/actors/files"
	"github.com/expo-free-agent/controller/actors/queue"
	"github.com/expo-free-agent/controller/internal/version"
	"github.com/expo-free-agent/controller/store/domain"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// QueueMetrics is what the metrics read from the queue manager.
type QueueMetrics interface {
	Stats(ctx context.Context) (queue.Stats, error)
	Counters() queue.Counters
	Waiting() int64
}

// metrics are the Prometheus metrics of GET /metrics. Request metrics are
// recorded by the request middleware; build, worker and queue figures are
// read at scrape time from the same sources /health uses (the database and
// the queue manager), so they never drift.
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	bytesIn  *prometheus.CounterVec
	bytesOut *prometheus.CounterVec
}

func newMetrics(st Store, q QueueMetrics) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "controller_http_requests_total", Help: "HTTP requests by method, route and status.",
		}, []string{"method", "route", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "controller_http_request_duration_seconds", Help: "HTTP request latency by method and route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"method", "route"}),
		bytesIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "controller_upload_bytes_total", Help: "Bytes of files stored, by kind (source, certs, result).",
		}, []string{"kind"}),
		bytesOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "controller_download_bytes_total", Help: "Bytes of stored files sent to clients.",
		}, []string{"kind"}),
	}
	m.reg.MustRegister(m.requests, m.latency, m.bytesIn, m.bytesOut, buildInfo(version.Get()),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&stateCollector{store: st, queue: q})
	return m
}

// buildInfo is the gauge controller_build_info, always 1, whose labels name
// the running build: join on it to see which version a series came from.
func buildInfo(b version.Info) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "controller_build_info", Help: "The running build: version, VCS revision and Go release; always 1.",
		ConstLabels: prometheus.Labels{"version": b.Version, "revision": b.Revision, "goversion": b.GoVersion},
	})
	g.Set(1)
	return g
}

func (m *metrics) observeRequest(method, route string, status int, d time.Duration) {
	m.requests.WithLabelValues(method, route, strconv.Itoa(status)).Inc()
	m.latency.WithLabelValues(method, route).Observe(d.Seconds())
}

func kindName(k files.Kind) string {
	switch k {
	case files.KindSource:
		return "source"
	case files.KindCerts:
		return "certs"
	default:
		return "result"
	}
}

var (
	descBuilds = prometheus.NewDesc("controller_builds", "Builds by status (cancelled builds count as failed).",
		[]string{"status"}, nil)
	descWorkers = prometheus.NewDesc("controller_workers", "Workers by status.", []string{"status"}, nil)
	descQueue   = prometheus.NewDesc("controller_queue_depth", "Builds waiting in the queue manager's queue.", nil, nil)
	descRunning = prometheus.NewDesc("controller_builds_running", "Builds held by a worker, as the queue manager sees them.", nil, nil)
	descAssign  = prometheus.NewDesc("controller_assignments_total", "Builds handed to a worker.", nil, nil)
	descRequeue = prometheus.NewDesc("controller_requeues_total", "Running builds returned to pending (timeout or unregister).", nil, nil)
	descTimeout = prometheus.NewDesc("controller_build_timeouts_total", "Builds whose liveness expired.", nil, nil)
	descTOFail  = prometheus.NewDesc("controller_build_timeout_failures_total", "Builds failed after their last allowed timeout.", nil, nil)
	descFinish  = prometheus.NewDesc("controller_finishes_total", "Uploads that completed or failed a build.", nil, nil)
	descUp      = prometheus.NewDesc("controller_database_up", "1 if the database answered the scrape's queries.", nil, nil)
	descHeld    = prometheus.NewDesc("controller_held_polls", "Worker polls held waiting for a build (long-poll).", nil, nil)
)

// stateCollector reads the current state at scrape time.
type stateCollector struct {
	store Store
	queue QueueMetrics
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descBuilds, descWorkers, descQueue, descRunning, descAssign, descRequeue,
		descTimeout, descTOFail, descFinish, descUp, descHeld} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	up := 1.0
	if counts, err := c.store.BuildCounts(ctx); err == nil {
		for status, n := range map[domain.BuildStatus]int{domain.StatusPending: counts.Pending, domain.StatusAssigned: counts.Assigned,
			domain.StatusBuilding: counts.Building, domain.StatusCompleted: counts.Completed, domain.StatusFailed: counts.Failed} {
			ch <- prometheus.MustNewConstMetric(descBuilds, prometheus.GaugeValue, float64(n), string(status))
		}
	} else {
		up = 0
	}
	if workers, err := c.store.ListWorkers(ctx); err == nil {
		by := map[domain.WorkerStatus]int{domain.WorkerIdle: 0, domain.WorkerBuilding: 0, domain.WorkerOffline: 0}
		for _, w := range workers {
			by[w.Status]++
		}
		for status, n := range by {
			ch <- prometheus.MustNewConstMetric(descWorkers, prometheus.GaugeValue, float64(n), string(status))
		}
	} else {
		up = 0
	}
	ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, up)
	if qs, err := c.queue.Stats(ctx); err == nil {
		ch <- prometheus.MustNewConstMetric(descQueue, prometheus.GaugeValue, float64(qs.Pending))
		ch <- prometheus.MustNewConstMetric(descRunning, prometheus.GaugeValue, float64(qs.Running))
	}
	ch <- prometheus.MustNewConstMetric(descHeld, prometheus.GaugeValue, float64(c.queue.Waiting()))
	k := c.queue.Counters()
	ch <- prometheus.MustNewConstMetric(descAssign, prometheus.CounterValue, float64(k.Assignments))
	ch <- prometheus.MustNewConstMetric(descRequeue, prometheus.CounterValue, float64(k.Requeues))
	ch <- prometheus.MustNewConstMetric(descTimeout, prometheus.CounterValue, float64(k.Timeouts))
	ch <- prometheus.MustNewConstMetric(descTOFail, prometheus.CounterValue, float64(k.TimeoutFailures))
	ch <- prometheus.MustNewConstMetric(descFinish, prometheus.CounterValue, float64(k.Finishes))
}

// metricsHandler is GET /metrics in the Prometheus text format.
func (s *Server) metricsHandler() echo.HandlerFunc {
	h := promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
	return func(c echo.Context) error {
		h.ServeHTTP(c.Response(), c.Request())
		return nil
	}
}

// WebhookMetrics is what the metrics read from the webhook sender.
type WebhookMetrics interface {
	DeliveryCounts() (delivered, retried, gaveUp int64)
}

var descWebhooks = prometheus.NewDesc("controller_webhook_deliveries_total",
	"Webhook attempts by outcome: delivered (2xx), retried (failed, tried again later), gave_up (given up after a day).",
	[]string{"outcome"}, nil)

// webhookCollector reads the webhook sender's counts at scrape time.
type webhookCollector struct{ sender WebhookMetrics }

func (c webhookCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descWebhooks }

func (c webhookCollector) Collect(ch chan<- prometheus.Metric) {
	delivered, retried, gaveUp := c.sender.DeliveryCounts()
	ch <- prometheus.MustNewConstMetric(descWebhooks, prometheus.CounterValue, float64(delivered), "delivered")
	ch <- prometheus.MustNewConstMetric(descWebhooks, prometheus.CounterValue, float64(retried), "retried")
	ch <- prometheus.MustNewConstMetric(descWebhooks, prometheus.CounterValue, float64(gaveUp), "gave_up")
}

// ReportWebhooks adds controller_webhook_deliveries_total to /metrics, read
// from w at scrape time (docs/API.md §3.4). A nil w (webhooks off) adds
// nothing. Call it before the server serves.
func (s *Server) ReportWebhooks(w WebhookMetrics) {
	if w == nil {
		return
	}
	s.metrics.reg.MustRegister(webhookCollector{w})
}

// RetentionMetrics is what the metrics read from the retention collector.
type RetentionMetrics interface {
	Purged() (builds, bytes int64)
}

var (
	descPurgedBuilds = prometheus.NewDesc("controller_retention_purged_builds_total",
		"Builds whose files the retention collector deleted.", nil, nil)
	descPurgedBytes = prometheus.NewDesc("controller_retention_purged_bytes_total",
		"Bytes of the files the retention collector deleted.", nil, nil)
)

// retentionCollector reads the retention collector's counts at scrape time.
type retentionCollector struct{ r RetentionMetrics }

func (c retentionCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descPurgedBuilds
	ch <- descPurgedBytes
}

func (c retentionCollector) Collect(ch chan<- prometheus.Metric) {
	builds, bytes := c.r.Purged()
	ch <- prometheus.MustNewConstMetric(descPurgedBuilds, prometheus.CounterValue, float64(builds))
	ch <- prometheus.MustNewConstMetric(descPurgedBytes, prometheus.CounterValue, float64(bytes))
}

// ReportRetention adds controller_retention_purged_builds_total and
// controller_retention_purged_bytes_total to /metrics, read from r at scrape
// time (docs/API.md §3.4). A nil r (retention off) adds nothing. Call it
// before the server serves.
func (s *Server) ReportRetention(r RetentionMetrics) {
	if r == nil {
		return
	}
	s.metrics.reg.MustRegister(retentionCollector{r})
}
