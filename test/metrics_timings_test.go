package test

import (
	"bytes"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
)

// histogram is one histogram sample's count and sum.
type histogram struct {
	count uint64
	sum   float64
}

func scrapeHistograms(t *testing.T, c *Controller, name string) map[string]histogram {
	t.Helper()
	r := c.Get("/metrics", c.KeyH())
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(r.Body))
	require.NoError(t, err)
	out := map[string]histogram{}
	f, ok := families[name]
	if !ok {
		return out
	}
	for _, m := range f.GetMetric() {
		key := ""
		for _, l := range m.GetLabel() {
			key += l.GetName() + "=" + l.GetValue() + ","
		}
		out[key] = histogram{count: m.GetHistogram().GetSampleCount(), sum: m.GetHistogram().GetSampleSum()}
	}
	return out
}

// TestBuildTimingMetrics: the queue wait (submission → assignment) and the
// build duration (assignment → end) are histograms by platform (docs/API.md
// §3.4), measured on the controller's clock.
func TestBuildTimingMetrics(t *testing.T) {
	t.Parallel()
	c := Start(t, WithManualClock())
	ios := c.Submit("ios", []byte("i"), nil)
	c.Clock.Advance(time.Second) // queue order by time, not by the ids' tie-break
	droid := c.Submit("android", []byte("a"), nil)
	w := c.Register("w")

	c.Clock.Advance(90 * time.Second)
	require.Equal(t, ios.ID, c.Poll(w)["id"])
	c.Clock.Advance(600 * time.Second)
	require.Equal(t, http.StatusOK, c.Upload(ios.ID, w, true, []byte("ipa"), "").Status)

	c.Clock.Advance(30 * time.Second)
	require.Equal(t, droid.ID, c.Poll(w)["id"])
	c.Clock.Advance(45 * time.Second)
	require.Equal(t, http.StatusOK, c.Upload(droid.ID, w, false, nil, "gradle failed").Status)

	wait := scrapeHistograms(t, c, "controller_queue_wait_seconds")
	require.Equal(t, histogram{count: 1, sum: 91}, wait["platform=ios,"])      // 1 + 90
	require.Equal(t, histogram{count: 1, sum: 720}, wait["platform=android,"]) // 90 + 600 + 30
	dur := scrapeHistograms(t, c, "controller_build_duration_seconds")
	require.Equal(t, histogram{count: 1, sum: 600}, dur["outcome=completed,platform=ios,"])
	require.Equal(t, histogram{count: 1, sum: 45}, dur["outcome=failed,platform=android,"])
	require.Len(t, dur, 2)

	// Re-delivery of a held build is not a second assignment.
	third := c.Submit("ios", []byte("again"), nil)
	require.Equal(t, third.ID, c.Poll(w)["id"])
	require.Equal(t, third.ID, c.Poll(w)["id"])
	require.Equal(t, uint64(2), scrapeHistograms(t, c, "controller_queue_wait_seconds")["platform=ios,"].count)
}
