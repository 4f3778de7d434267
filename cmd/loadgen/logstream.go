package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// runLogStream measures live logs (docs/API.md §2.9): cfg.Streams Server-Sent
// Event streams follow cfg.StreamBuilds running builds (one build per stream
// by default), while each build's worker posts batches of cfg.StreamBatch
// lines at cfg.LineRate lines per second for cfg.Duration. Every line carries
// its number and the time its POST was sent, so each stream checks that it
// receives every line once, in order, with no gap in the sequence numbers,
// and measures post → received. Then every build is completed and each
// stream must end with its end event. Figures: logstream_lines_per_s (stored)
// against logstream_target_lines_per_s, logstream_latency_p50/p99/max (ms),
// logstream_lost, _reordered, _seq_gaps, _unfinished (all must be 0), the
// controller's CPU while posting and RSS (--pid), logstream_errors.
func runLogStream(ctx context.Context, cfg Config) (r Result) {
	r = Result{Scenario: "logstream"}
	nb := cfg.StreamBuilds
	if nb == 0 {
		nb = cfg.Streams
	}
	c := newClient(cfg, nb+8)
	defer c.close()
	defer r.finish(c)

	progress(cfg, "logstream: %d workers, each with one running build", nb)
	wids, err := c.registerMany(ctx, "loadgen-logstream", nb, []string{cfg.Platform})
	if err != nil {
		r.fail("%v", err)
		return r
	}
	// A poll an earlier scenario left held (its client gone, the controller
	// not yet aware) would be handed one of these builds.
	if _, err := c.waitGaugeAtMost(ctx, heldPollsGauge, 0, cfg.Wait+5*time.Second); err != nil {
		r.note("earlier polls still held (%v)", err)
	}
	source := zipLike(1 << 10)
	if err := submitMany(ctx, c, nb, cfg.Platform, source); err != nil {
		r.fail("submit: %v", err)
		return r
	}
	builds, err := takeBuilds(ctx, cfg, c, wids)
	completed := false
	defer func() { // whatever is left running
		if !completed {
			completeMany(context.WithoutCancel(ctx), c, wids, builds, source)
		}
	}()
	if err != nil {
		r.fail("%v", err)
		return r
	}

	// Open the streams: each one is ready once it has sent the backlog and
	// the status.
	progress(cfg, "logstream: opening %d streams on %d builds", cfg.Streams, nb)
	rss := startRSS(cfg.PID, cfg.RSSInterval, readRSS)
	st := newStreamTransport(cfg)
	defer st.CloseIdleConnections()
	sctx, closeStreams := context.WithCancel(ctx)
	defer closeStreams()
	streams := make([]*logStream, cfg.Streams)
	ready := make(chan error, cfg.Streams)
	var swg sync.WaitGroup
	for i := range streams {
		s := &logStream{build: i % nb, lastN: -1}
		streams[i] = s
		swg.Add(1)
		go func() {
			defer swg.Done()
			s.follow(sctx, c, &http.Client{Transport: st}, builds[s.build], ready)
		}()
	}
	opened := 0
	openTimer := time.NewTimer(cfg.Timeout)
	defer openTimer.Stop()
wait:
	for range streams {
		select {
		case err := <-ready:
			if err == nil {
				opened++
			}
		case <-openTimer.C:
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	r.add("streams", float64(opened), "count")
	r.add("builds", float64(nb), "count")
	if opened < cfg.Streams {
		r.fail("only %d of %d streams opened", opened, cfg.Streams)
		r.hint(fmt.Sprintf("the controller serves at most --max-streams live logs (default 1000); start it with --max-streams %d or more", cfg.Streams))
		closeStreams()
		swg.Wait()
		rss.Stop()
		return r
	}

	// Post for cfg.Duration, each build's worker at cfg.LineRate.
	every := time.Duration(float64(cfg.StreamBatch) / cfg.LineRate * float64(time.Second))
	progress(cfg, "logstream: posting %g lines/s to each of %d builds (batches of %d every %s) for %s",
		cfg.LineRate, nb, cfg.StreamBatch, every, cfg.Duration)
	acked := make([]int64, nb)
	postLat := make([][]time.Duration, nb)
	cpu := startCPU(cfg.PID, readCPU)
	self := startCPU(os.Getpid(), readCPU)
	pctx, stopPosting := context.WithTimeout(ctx, cfg.Duration)
	defer stopPosting()
	var pwg sync.WaitGroup
	start := time.Now()
	for b := range nb {
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			pause(pctx, every*time.Duration(b)/time.Duration(nb)) // spread the posters over the interval
			acked[b], postLat[b] = postStreamLines(ctx, pctx, c, builds[b], wids[b], cfg.StreamBatch, every)
		}()
	}
	pwg.Wait()
	span := time.Since(start)
	use, selfUse := cpu.Stop(), self.Stop()

	// Finish every build: each stream must then deliver what is left, the
	// status and the end.
	progress(cfg, "logstream: completing the builds; waiting for every stream to end")
	completeMany(ctx, c, wids, builds, source)
	completed = true
	streamsDone := make(chan struct{})
	go func() { swg.Wait(); close(streamsDone) }()
	endTimer := time.NewTimer(cfg.Timeout)
	defer endTimer.Stop()
	select {
	case <-streamsDone:
	case <-endTimer.C:
		closeStreams()
		<-streamsDone
	case <-ctx.Done():
		closeStreams()
		<-streamsDone
	}
	rssUse := rss.Stop()

	var stored int64
	for _, n := range acked {
		stored += n
	}
	var lat [][]time.Duration
	var got, lost, reordered, gaps, unfinished, malformed int64
	for _, s := range streams {
		lat = append(lat, s.lat)
		got += s.got
		lost += max(acked[s.build]-s.got, 0)
		reordered += s.reordered
		gaps += s.gaps
		malformed += s.malformed
		if !s.ended {
			unfinished++
		}
	}
	all := mergeSorted(lat...)
	target := cfg.LineRate * float64(nb)
	r.add("target_lines_per_s", target, "lines/s")
	r.add("lines_per_s", perSecond(float64(stored), span), "lines/s")
	r.add("events_per_s", perSecond(float64(got), span), "events/s")
	r.addLatency("latency", all)
	r.add("latency_max", ms(percentile(all, 100)), "ms")
	r.addLatency("post", mergeSorted(postLat...))
	r.add("lines", float64(stored), "count")
	r.add("delivered", float64(got), "count")
	r.add("lost", float64(lost), "count")
	r.add("reordered", float64(reordered), "count")
	r.add("seq_gaps", float64(gaps), "count")
	r.add("unfinished", float64(unfinished), "count")
	r.addCPU("cpu", use)
	r.addCPU("loadgen_cpu", selfUse)
	r.addRSS("rss", rssUse)
	for _, f := range []struct {
		n    int64
		what string
	}{{lost, "lines stored but never delivered to a stream"}, {reordered, "events delivered twice or out of order"},
		{gaps, "sequence numbers skipped by a stream"}, {unfinished, "streams that did not end with an end event"},
		{malformed, "log events that could not be read"}} {
		if f.n > 0 {
			r.fail("%d %s", f.n, f.what)
		}
	}
	if got := perSecond(float64(stored), span); got < 0.95*target {
		r.note("posting reached %.0f of the %.0f lines/s asked (%.0f%%): the posters could not keep up", got, target, 100*got/target)
	}
	r.note("%d streams on %d builds; %d lines stored in %s, %d deliveries", opened, nb, stored, span.Round(time.Millisecond), got)
	return r
}

// newStreamTransport is the transport of the streams: one connection each,
// never reused while it streams, no compression, a bounded wait for headers.
func newStreamTransport(cfg Config) *http.Transport {
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost:   8,
		DisableCompression:    true,
		ResponseHeaderTimeout: cfg.Timeout,
		ReadBufferSize:        16 << 10,
	}
}

// logStream is one live log being followed. Only its goroutine touches it
// until that goroutine has ended.
type logStream struct {
	build     int   // index of the build it follows
	lastSeq   int64 // the last sequence number received
	lastN     int64 // the last loadgen line number received
	got       int64 // loadgen lines received in order
	reordered int64 // events at or below the last sequence number or line number
	gaps      int64 // sequence numbers skipped
	malformed int64 // log events that could not be read
	ended     bool  // the end event came
	lat       []time.Duration
}

// follow opens the live log of buildID and reads it until its end event,
// the end of ctx, or a failure. It sends on ready exactly once: nil once the
// backlog and the status have come, or why the stream did not open.
func (s *logStream) follow(ctx context.Context, c *client, hc *http.Client, buildID string, ready chan<- error) {
	const what = "GET /api/builds/:id/logs/stream"
	signalled := false
	signal := func(err error) {
		if !signalled {
			signalled = true
			ready <- err
		}
	}
	req := c.newRequest(ctx, http.MethodGet, "/api/builds/"+buildID+"/logs/stream", nil, "")
	req.Header.Set("X-API-Key", c.key)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := hc.Do(req)
	if err != nil {
		c.record(ctx, what, err)
		signal(err)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		err := &statusError{Code: resp.StatusCode, Body: strings.TrimSpace(string(b))}
		c.record(ctx, what, err)
		signal(err)
		return
	}
	rd := newSSEReader(resp.Body)
	for {
		ev, err := rd.Next()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF // the stream must end with its end event
			}
			c.record(ctx, what, fmt.Errorf("stream of build %s: %w", buildID, err))
			signal(err)
			return
		}
		switch ev.Event {
		case "log":
			s.onLog(ev, time.Now())
		case "status":
			signal(nil)
		case "end":
			s.ended = true
			signal(nil)
			return
		}
	}
}

// onLog checks one log event against what came before and times it when it
// is one of ours.
func (s *logStream) onLog(ev sseEvent, at time.Time) {
	e, ok := decodeLogEvent(ev.Data)
	if !ok || logEventID(ev) != e.Seq {
		s.malformed++
		return
	}
	switch {
	case e.Seq <= s.lastSeq:
		s.reordered++
		return
	case e.Seq > s.lastSeq+1:
		s.gaps += e.Seq - s.lastSeq - 1
	}
	s.lastSeq = e.Seq
	n, sent, ok := parseStreamLine(e.Message)
	if !ok {
		return // one of the controller's own lines
	}
	if n <= s.lastN {
		s.reordered++
		return
	}
	s.lastN = n
	s.got++
	s.lat = append(s.lat, at.Sub(sent))
}

// logEventData is what the scenario reads of a log event's data.
type logEventData struct {
	Seq     int64  `json:"seq"`
	Message string `json:"message"`
}

// decodeLogEvent reads a log event's data. The controller's usual shape,
// {"seq":N,"timestamp":N,"level":"…","message":"…"} with no escapes in the
// strings, is read directly (1,000 streams at 100 lines/s each are 100,000
// events/s, and encoding/json was ~40 % of the load tool's CPU); anything
// else goes through encoding/json, which decides what is malformed.
func decodeLogEvent(data string) (logEventData, bool) {
	if e, ok := decodeLogEventFast(data); ok {
		return e, true
	}
	var e logEventData
	if json.Unmarshal([]byte(data), &e) != nil {
		return logEventData{}, false
	}
	return e, true
}

func decodeLogEventFast(d string) (logEventData, bool) {
	var e logEventData
	var ok bool
	if d, ok = strings.CutPrefix(d, `{"seq":`); !ok {
		return e, false
	}
	if e.Seq, d, ok = cutInt(d); !ok {
		return e, false
	}
	if d, ok = strings.CutPrefix(d, `,"timestamp":`); !ok {
		return e, false
	}
	if _, d, ok = cutInt(d); !ok {
		return e, false
	}
	if d, ok = strings.CutPrefix(d, `,"level":"`); !ok {
		return e, false
	}
	i := strings.IndexByte(d, '"')
	if i < 0 || strings.IndexByte(d[:i], '\\') >= 0 {
		return e, false
	}
	if d, ok = strings.CutPrefix(d[i+1:], `,"message":"`); !ok {
		return e, false
	}
	msg, ok := strings.CutSuffix(d, `"}`)
	if !ok {
		return e, false
	}
	if strings.IndexByte(msg, '\\') >= 0 { // the HTML characters encoding/json escapes, only
		if msg, ok = unescapeHTML(msg); !ok {
			return e, false
		}
	}
	if strings.IndexByte(msg, '"') >= 0 {
		return e, false
	}
	for j := 0; j < len(msg); j++ {
		if msg[j] < 0x20 {
			return e, false
		}
	}
	if !utf8.ValidString(msg) {
		return e, false
	}
	e.Message = msg
	return e, true
}

// unescapeHTML undoes encoding/json's escapes of <, > and &; any other
// escape is not ok.
func unescapeHTML(s string) (string, bool) {
	var b strings.Builder
	b.Grow(len(s))
	for {
		i := strings.IndexByte(s, '\\')
		if i < 0 {
			b.WriteString(s)
			return b.String(), true
		}
		b.WriteString(s[:i])
		switch {
		case strings.HasPrefix(s[i:], `\u003c`):
			b.WriteByte('<')
		case strings.HasPrefix(s[i:], `\u003e`):
			b.WriteByte('>')
		case strings.HasPrefix(s[i:], `\u0026`):
			b.WriteByte('&')
		default:
			return "", false
		}
		s = s[i+6:]
	}
}

// cutInt reads a JSON integer at the start of d.
func cutInt(d string) (int64, string, bool) {
	i := 0
	if i < len(d) && d[i] == '-' {
		i++
	}
	start := i
	for i < len(d) && d[i] >= '0' && d[i] <= '9' {
		i++
	}
	if i-start > 1 && d[start] == '0' { // JSON has no leading zeros
		return 0, d, false
	}
	n, err := strconv.ParseInt(d[:i], 10, 64)
	return n, d[i:], err == nil
}

// streamLinePrefix starts every line the scenario posts.
const streamLinePrefix = "lsg "

// appendStreamBatch appends the {"logs": [...]} body of count lines numbered
// from first, each carrying sent (Unix nanoseconds) and a build-log-like
// text. The messages need no JSON escaping, so no encoder is needed.
func appendStreamBatch(b []byte, first int64, count int, sent time.Time) []byte {
	b = append(b, `{"logs":[`...)
	for i := range count {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"level":"info","message":"`+streamLinePrefix...)
		b = strconv.AppendInt(b, first+int64(i), 10)
		b = append(b, ' ')
		b = strconv.AppendInt(b, sent.UnixNano(), 10)
		b = append(b, ` > Task :app:compileReleaseKotlin UP-TO-DATE"}`...)
	}
	return append(b, "]}"...)
}

// parseStreamLine reads the number and the send time of a line written by
// appendStreamBatch; ok is false for any other message.
func parseStreamLine(msg string) (n int64, sent time.Time, ok bool) {
	rest, ok := strings.CutPrefix(msg, streamLinePrefix)
	if !ok {
		return 0, time.Time{}, false
	}
	num, rest, _ := strings.Cut(rest, " ")
	ns, _, _ := strings.Cut(rest, " ")
	n, err1 := strconv.ParseInt(num, 10, 64)
	t, err2 := strconv.ParseInt(ns, 10, 64)
	if err1 != nil || err2 != nil || n < 0 {
		return 0, time.Time{}, false
	}
	return n, time.Unix(0, t), true
}

// postStreamLines posts batches of batch lines to one build every interval
// until pctx ends (each POST runs under ctx, so the last one is not cut
// short). It returns how many lines the controller stored and the latency of
// each POST. A POST slower than the interval delays the next one: the rate
// reached is reported, not forced.
func postStreamLines(ctx, pctx context.Context, c *client, buildID, workerID string, batch int, every time.Duration) (int64, []time.Duration) {
	var stored, next int64
	var lat []time.Duration
	var body []byte
	tick := time.NewTicker(every)
	defer tick.Stop()
	for pctx.Err() == nil {
		t0 := time.Now()
		body = appendStreamBatch(body[:0], next, batch, t0)
		n, err := c.postLogs(ctx, buildID, workerID, body)
		if err == nil {
			lat = append(lat, time.Since(t0))
			stored += int64(n)
			if n != batch {
				c.record(ctx, "POST /api/builds/:id/logs", fmt.Errorf("stored %d of %d lines", n, batch))
			}
		}
		next += int64(batch)
		select {
		case <-pctx.Done():
		case <-tick.C:
		}
	}
	return stored, lat
}

// submitMany submits n builds, 8 at a time.
func submitMany(ctx context.Context, c *client, n int, platform string, source []byte) error {
	body, ct := smallMultipart([][2]string{{"platform", platform}}, "source", "project.zip", source)
	errs := make([]error, n)
	forEach(n, 8, func(i int) {
		_, errs[i] = c.submit(ctx, c.hc, bytes.NewReader(body), int64(len(body)), ct)
	})
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// takeBuilds has each worker long-poll until it holds a build (32 at a
// time) and returns the builds, in the order of wids.
func takeBuilds(ctx context.Context, cfg Config, c *client, wids []string) ([]string, error) {
	hc := longPollClient(cfg, c)
	builds := make([]string, len(wids))
	errs := make([]error, len(wids))
	forEach(len(wids), 32, func(i int) {
		j, err := c.pollWait(ctx, hc, wids[i], waitSeconds(cfg))
		switch {
		case err != nil:
			errs[i] = err
		case j == nil:
			errs[i] = fmt.Errorf("worker %d was handed no build within %s", i+1, cfg.Wait)
		default:
			builds[i] = j.ID
		}
	})
	for _, err := range errs {
		if err != nil {
			return builds, err
		}
	}
	return builds, nil
}

// completeMany uploads success for each worker's build (16 at a time);
// failures are counted by the client.
func completeMany(ctx context.Context, c *client, wids, builds []string, result []byte) {
	forEach(len(builds), 16, func(i int) {
		if builds[i] != "" {
			_ = c.completeSmall(ctx, builds[i], wids[i], result)
		}
	})
}

// forEach calls f(0) … f(n-1), conc at a time, and waits for all of them.
func forEach(n, conc int, f func(i int)) {
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			f(i)
		}()
	}
	wg.Wait()
}
