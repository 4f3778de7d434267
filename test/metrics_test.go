package test

import (
	"bytes"
	"net/http"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/cmd/app"
)

// scrape fetches /metrics and parses it as Prometheus does.
func scrape(t *testing.T, c *Controller, h H) map[string][]*metricSample {
	t.Helper()
	r := c.Get("/metrics", h)
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	require.Contains(t, r.Header.Get("Content-Type"), "text/plain")
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(r.Body))
	require.NoError(t, err)
	out := map[string][]*metricSample{}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			s := &metricSample{labels: map[string]string{}}
			for _, l := range m.GetLabel() {
				s.labels[l.GetName()] = l.GetValue()
			}
			switch {
			case m.GetGauge() != nil:
				s.value = m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				s.value = m.GetCounter().GetValue()
			case m.GetHistogram() != nil:
				s.value = float64(m.GetHistogram().GetSampleCount())
			}
			out[name] = append(out[name], s)
		}
	}
	return out
}

type metricSample struct {
	labels map[string]string
	value  float64
}

func value(t *testing.T, fams map[string][]*metricSample, name string, labels map[string]string) float64 {
	t.Helper()
	for _, s := range fams[name] {
		match := true
		for k, v := range labels {
			if s.labels[k] != v {
				match = false
			}
		}
		if match {
			return s.value
		}
	}
	t.Fatalf("no sample %s%v", name, labels)
	return 0
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	c := Start(t)
	r := c.Get("/metrics", nil)
	require.Equal(t, http.StatusUnauthorized, r.Status)
	require.Equal(t, "Missing X-API-Key header", r.Error(t))

	a := c.Submit("ios", []byte("12345"), nil)
	c.Submit("ios", []byte("67890"), nil)
	w := c.Register("w")
	c.Poll(w)
	require.Equal(t, http.StatusOK, c.Upload(a.ID, w, true, []byte("result!"), "").Status)
	c.Get("/api/builds/"+a.ID+"/download", c.KeyH())
	c.Get("/nope", nil)

	fams := scrape(t, c, c.KeyH())
	require.Equal(t, 1.0, value(t, fams, "controller_builds", map[string]string{"status": "pending"}))
	require.Equal(t, 1.0, value(t, fams, "controller_builds", map[string]string{"status": "completed"}))
	require.Equal(t, 0.0, value(t, fams, "controller_builds", map[string]string{"status": "building"}))
	require.Equal(t, 1.0, value(t, fams, "controller_workers", map[string]string{"status": "idle"}))
	require.Equal(t, 1.0, value(t, fams, "controller_queue_depth", nil))
	require.Equal(t, 1.0, value(t, fams, "controller_assignments_total", nil))
	require.Equal(t, 0.0, value(t, fams, "controller_requeues_total", nil))
	require.Equal(t, 0.0, value(t, fams, "controller_build_timeouts_total", nil))
	require.Equal(t, 1.0, value(t, fams, "controller_database_up", nil))
	require.Equal(t, 10.0, value(t, fams, "controller_upload_bytes_total", map[string]string{"kind": "source"}))
	require.Equal(t, 7.0, value(t, fams, "controller_upload_bytes_total", map[string]string{"kind": "result"}))
	require.Equal(t, 7.0, value(t, fams, "controller_download_bytes_total", map[string]string{"kind": "result"}))
	require.Equal(t, 2.0, value(t, fams, "controller_http_requests_total",
		map[string]string{"method": "POST", "route": "/api/builds/submit", "status": "200"}))
	require.Equal(t, 1.0, value(t, fams, "controller_http_requests_total",
		map[string]string{"method": "GET", "route": "(unmatched)", "status": "404"}))
	require.Equal(t, 1.0, value(t, fams, "controller_http_request_duration_seconds",
		map[string]string{"method": "POST", "route": "/api/workers/register"}))
	require.Contains(t, fams, "go_goroutines")
	require.NotContains(t, string(c.Get("/metrics", c.KeyH()).Body), a.ID, "no ids in labels")

	// Unregister requeues count.
	b := c.Poll(w)
	require.NotNil(t, b)
	c.PostJSON("/api/workers/"+w+"/unregister", nil, c.KeyH())
	require.Equal(t, 1.0, value(t, scrape(t, c, c.KeyH()), "controller_requeues_total", nil))
}

func TestMetricsPublic(t *testing.T) {
	t.Parallel()
	c := Start(t, WithConfig(func(cfg *app.Config) { cfg.MetricsPublic = true }))
	fams := scrape(t, c, nil)
	require.Contains(t, fams, "controller_builds")
}
