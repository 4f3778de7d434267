package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"mime"
	"mime/multipart"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestPercentile(t *testing.T) {
	t.Parallel()
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	cases := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"Empty", nil, 50, 0},
		{"Single", []time.Duration{7}, 99, 7},
		{"P50Of100", hundred, 50, 50 * time.Millisecond},
		{"P99Of100", hundred, 99, 99 * time.Millisecond},
		{"P100Of100", hundred, 100, 100 * time.Millisecond},
		{"P1Of100", hundred, 1, 1 * time.Millisecond},
		{"P0IsTheMinimum", hundred, 0, 1 * time.Millisecond},
		{"P50OfTwo", []time.Duration{1, 9}, 50, 1},
		{"P99OfTen", []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 99, 10},
		{"P90OfTen", []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 90, 9},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, percentile(tc.sorted, tc.p))
		})
	}
}

func TestMergeSorted(t *testing.T) {
	t.Parallel()
	got := mergeSorted([]time.Duration{5, 1}, nil, []time.Duration{3, 2, 4})
	require.Equal(t, []time.Duration{1, 2, 3, 4, 5}, got)
	require.Empty(t, mergeSorted())
}

func TestFigureString(t *testing.T) {
	t.Parallel()
	cases := []struct {
		f    Figure
		want string
	}{
		{Figure{"idle_poll_rps", 12345.6123, "req/s"}, "figure idle_poll_rps=12345.6 req/s"},
		{Figure{"idle_poll_p50", 0.8, "ms"}, "figure idle_poll_p50=0.8 ms"},
		{Figure{"idle_poll_p99", 4.1, "ms"}, "figure idle_poll_p99=4.1 ms"},
		{Figure{"dispatch_builds_per_s", 612, "builds/s"}, "figure dispatch_builds_per_s=612 builds/s"},
		{Figure{"dispatch_assign_p99", 21.004, "ms"}, "figure dispatch_assign_p99=21 ms"},
		{Figure{"dispatch_assign_p50", 3.2456, "ms"}, "figure dispatch_assign_p50=3.25 ms"},
		{Figure{"transfer_submit_mb_s", 310.04, "MB/s"}, "figure transfer_submit_mb_s=310 MB/s"},
		{Figure{"transfer_rss_growth", 23.1, "MiB"}, "figure transfer_rss_growth=23.1 MiB"},
		{Figure{"idle_poll_p50", 0.01234, "ms"}, "figure idle_poll_p50=0.012 ms"},
		{Figure{"dispatch_errors", 0, "count"}, "figure dispatch_errors=0 count"},
		{Figure{"transfer_rss_growth", -0.0001, "MiB"}, "figure transfer_rss_growth=0 MiB"},
		{Figure{"transfer_rss_growth", -2.5, "MiB"}, "figure transfer_rss_growth=-2.5 MiB"},
	}
	for _, tc := range cases {
		t.Run(tc.want, func(t *testing.T) {
			require.Equal(t, tc.want, tc.f.String())
		})
	}
}

func TestResultFinishAddsErrorsLast(t *testing.T) {
	t.Parallel()
	r := Result{Scenario: "idle"}
	r.add("poll_rps", 10, "req/s")
	r.Errors = 2
	r.finish(nil)
	require.Equal(t, Figure{"idle_errors", 2, "count"}, r.Figures[len(r.Figures)-1])
	require.True(t, r.Failed())
	var out bytes.Buffer
	writeFigures(&out, r)
	require.Equal(t, "figure idle_poll_rps=10 req/s\nfigure idle_errors=2 count\n", out.String())
}

const procStatus = `Name:	controller
Umask:	0022
State:	S (sleeping)
Tgid:	4242
Pid:	4242
VmPeak:	 1299364 kB
VmSize:	 1234752 kB
VmLck:	       0 kB
VmHWM:	   51672 kB
VmRSS:	   48212 kB
RssAnon:	   20436 kB
RssFile:	   27776 kB
Threads:	9
`

func TestParseVmRSS(t *testing.T) {
	t.Parallel()
	t.Run("OK", func(t *testing.T) {
		n, err := parseVmRSS([]byte(procStatus))
		require.NoError(t, err)
		require.Equal(t, int64(48212*1024), n)
	})
	t.Run("NoVmRSS", func(t *testing.T) {
		_, err := parseVmRSS([]byte("Name:\tkthreadd\nState:\tS (sleeping)\n"))
		require.Error(t, err)
	})
	t.Run("BadUnit", func(t *testing.T) {
		_, err := parseVmRSS([]byte("VmRSS:\t 12 MB\n"))
		require.Error(t, err)
	})
	t.Run("BadNumber", func(t *testing.T) {
		_, err := parseVmRSS([]byte("VmRSS:\t 1x2 kB\n"))
		require.Error(t, err)
	})
	t.Run("OwnProcess", func(t *testing.T) {
		if runtime.GOOS != "linux" {
			t.Skip("needs /proc")
		}
		n, err := readRSS(os.Getpid())
		require.NoError(t, err)
		require.Positive(t, n)
	})
}

func TestRSSSampler(t *testing.T) {
	t.Parallel()
	t.Run("BaselineAndPeak", func(t *testing.T) {
		values := []int64{100, 300}
		i := 0
		read := func(int) (int64, error) { v := values[min(i, len(values)-1)]; i++; return v, nil }
		// An hour-long interval: only the first and the final sample happen.
		st := startRSS(1, time.Hour, read).Stop()
		require.NoError(t, st.Err)
		require.Equal(t, rssStats{Baseline: 100, Peak: 300, Samples: 2}, st)
		require.Equal(t, int64(200), st.Growth())
	})
	t.Run("FirstReadFails", func(t *testing.T) {
		boom := errors.New("no such process")
		st := startRSS(1, time.Hour, func(int) (int64, error) { return 0, boom }).Stop()
		require.ErrorIs(t, st.Err, boom)
		require.Zero(t, st.Samples)
		r := Result{Scenario: "idle"}
		r.addRSS("rss", st)
		require.Empty(t, r.Figures)
		require.True(t, r.Failed())
	})
	t.Run("NoPid", func(t *testing.T) {
		require.Equal(t, rssStats{}, startRSS(0, time.Hour, nil).Stop())
	})
}

// readStream parses a generated body back with mime/multipart and returns
// the text fields, the file part's size and its SHA-256.
func readStream(t *testing.T, body io.Reader, contentType string) (map[string]string, string, int64, []byte) {
	t.Helper()
	mt, params, err := mime.ParseMediaType(contentType)
	require.NoError(t, err)
	require.Equal(t, "multipart/form-data", mt)
	mr := multipart.NewReader(body, params["boundary"])
	fields := map[string]string{}
	var fileName string
	var size int64
	var sum []byte
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		if p.FileName() == "" {
			b, err := io.ReadAll(p)
			require.NoError(t, err)
			fields[p.FormName()] = string(b)
			continue
		}
		require.Empty(t, fileName, "one file part only")
		fileName = p.FormName() + "/" + p.FileName()
		h := sha256.New()
		size, err = io.Copy(h, p)
		require.NoError(t, err)
		sum = h.Sum(nil)
	}
	return fields, fileName, size, sum
}

func TestMultipartStream(t *testing.T) {
	// Not parallel: it measures the allocations of the whole process.
	const size = 64 << 20
	const chunk = 64 << 10
	fields := [][2]string{{"build_id", "b-1"}, {"worker_id", "w-1"}, {"success", "true"}}

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s, err := newMultipartStream(fields, filePart{Field: "result", FileName: "build.apk", Size: size}, newNoise(7), chunk)
	require.NoError(t, err)
	cr := &countingReader{r: s}
	got, fileName, n, sum := readStream(t, cr, s.ContentType)
	_, err = io.Copy(io.Discard, cr) // whatever follows the closing boundary
	require.NoError(t, err)
	require.NoError(t, s.Close())
	st := s.Wait()
	runtime.ReadMemStats(&after)

	require.NoError(t, st.Err)
	require.Equal(t, map[string]string{"build_id": "b-1", "worker_id": "w-1", "success": "true"}, got)
	require.Equal(t, "result/build.apk", fileName)
	require.Equal(t, int64(size), n)
	require.Equal(t, sum, st.SHA256, "the generator's digest is that of the bytes sent")
	require.Equal(t, s.Length, cr.n, "Content-Length is exact")
	require.Equal(t, s.Length, st.Written)

	// The generator holds one chunk: it never writes more at once, and the
	// whole run allocates far less than the 64 MiB it produced.
	require.Equal(t, chunk, st.BufSize)
	require.LessOrEqual(t, st.MaxWrite, chunk)
	t.Logf("64 MiB streamed with %d bytes allocated, largest write %d", after.TotalAlloc-before.TotalAlloc, st.MaxWrite)
	require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(8<<20),
		"generating and parsing 64 MiB must not allocate in proportion to the size")
}

func TestMultipartStreamReaderGoesAway(t *testing.T) {
	t.Parallel()
	s, err := newMultipartStream(nil, filePart{Field: "source", FileName: "p.zip", Size: 1 << 30}, newNoise(1), 4096)
	require.NoError(t, err)
	_, err = io.ReadFull(s, make([]byte, 10000))
	require.NoError(t, err)
	require.NoError(t, s.Close())
	st := s.Wait() // the generator stops instead of blocking forever
	require.ErrorIs(t, st.Err, io.ErrClosedPipe)
}

func TestSmallMultipart(t *testing.T) {
	t.Parallel()
	data := zipLike(1024)
	body, ct := smallMultipart([][2]string{{"platform", "android"}}, "source", "project.zip", data)
	fields, fileName, n, sum := readStream(t, bytes.NewReader(body), ct)
	require.Equal(t, map[string]string{"platform": "android"}, fields)
	require.Equal(t, "source/project.zip", fileName)
	require.Equal(t, int64(1024), n)
	want := sha256.Sum256(data)
	require.Equal(t, want[:], sum)
	require.Equal(t, "PK\x03\x04", string(data[:4]))
}

func TestNoiseIsDeterministicAndFillsOddLengths(t *testing.T) {
	t.Parallel()
	a, b := make([]byte, 1003), make([]byte, 1003)
	_, _ = newNoise(5).Read(a)
	_, _ = newNoise(5).Read(b)
	require.Equal(t, a, b)
	require.NotEqual(t, make([]byte, 8), a[995:])
}

func TestParseConfig(t *testing.T) {
	t.Parallel()
	env := func(k string) string {
		if k == "CONTROLLER_API_KEY" {
			return "env-key-0123456789abcdef"
		}
		return ""
	}
	t.Run("HelpDoesNotPrintTheKey", func(t *testing.T) {
		var out strings.Builder
		_, _, err := parseConfig([]string{"-h"}, env, &out)
		require.ErrorIs(t, err, flag.ErrHelp)
		require.NotContains(t, out.String(), "env-key-0123456789abcdef")
		require.Regexp(t, `(?m)^  --api-key +admin API key \(env CONTROLLER_API_KEY\)$`, out.String())
		require.Regexp(t, `(?m)^  --size +transfer: source and result size \(default 1GiB\)$`, out.String())
	})
	t.Run("Defaults", func(t *testing.T) {
		cfg, sc, err := parseConfig(nil, env, io.Discard)
		require.NoError(t, err)
		require.Equal(t, []string{"idle", "dispatch", "transfer", "logs", "longpoll", "logstream", "reads"}, sc)
		require.Equal(t, "env-key-0123456789abcdef", cfg.APIKey)
		require.Equal(t, "http://localhost:3000", cfg.URL)
		require.Equal(t, 10*time.Second, cfg.Duration)
		require.Equal(t, 32, cfg.Concurrency)
		require.Equal(t, 16, cfg.Workers)
		require.Equal(t, 2000, cfg.Builds)
		require.Equal(t, int64(4<<10), cfg.ResultSize)
		require.Equal(t, int64(1<<30), cfg.Size)
		require.Equal(t, 100, cfg.LogBatch)
		require.Equal(t, 8, cfg.LogWorkers)
		require.Equal(t, "android", cfg.Platform)
		require.Equal(t, 60*time.Second, cfg.Timeout)
		require.Equal(t, 4, cfg.Submitters)
		require.Equal(t, 5*time.Millisecond, cfg.IdlePause)
		require.Equal(t, 30*time.Second, cfg.Wait)
		require.Equal(t, 200, cfg.LPWorkers)
		require.Equal(t, 50.0, cfg.SubmitRate)
		require.Equal(t, 1000, cfg.LPIdleWorkers)
		require.Equal(t, 35*time.Second, cfg.LPIdleWindow)
		require.Equal(t, 1000, cfg.Streams)
		require.Zero(t, cfg.StreamBuilds)
		require.Equal(t, 100.0, cfg.LineRate)
		require.Equal(t, 10, cfg.StreamBatch)
	})
	t.Run("NewScenarioFlags", func(t *testing.T) {
		cfg, sc, err := parseConfig([]string{"--scenario", "logstream,longpoll", "--wait", "5s", "--lp-workers", "7",
			"--submit-rate", "12.5", "--lp-idle-workers", "9", "--lp-idle-window", "2s", "--streams", "6",
			"--stream-builds", "3", "--line-rate", "40", "--stream-batch", "4"}, env, io.Discard)
		require.NoError(t, err)
		require.Equal(t, []string{"longpoll", "logstream"}, sc)
		require.Equal(t, 5*time.Second, cfg.Wait)
		require.Equal(t, 5, waitSeconds(cfg))
		require.Equal(t, 7, cfg.LPWorkers)
		require.Equal(t, 12.5, cfg.SubmitRate)
		require.Equal(t, 9, cfg.LPIdleWorkers)
		require.Equal(t, 2*time.Second, cfg.LPIdleWindow)
		require.Equal(t, 6, cfg.Streams)
		require.Equal(t, 3, cfg.StreamBuilds)
		require.Equal(t, 40.0, cfg.LineRate)
		require.Equal(t, 4, cfg.StreamBatch)
	})
	t.Run("Flags", func(t *testing.T) {
		cfg, sc, err := parseConfig([]string{"--url", "http://h:1/", "--api-key", "flag-key-0123456789", "--scenario", "logs,idle",
			"--size", "2GiB", "--result-size", "64k", "--pid", "12", "--platform", "ios"}, env, io.Discard)
		require.NoError(t, err)
		require.Equal(t, []string{"idle", "logs"}, sc)
		require.Equal(t, "http://h:1", cfg.URL)
		require.Equal(t, "flag-key-0123456789", cfg.APIKey)
		require.Equal(t, int64(2<<30), cfg.Size)
		require.Equal(t, int64(64<<10), cfg.ResultSize)
		require.Equal(t, 12, cfg.PID)
		require.Equal(t, "ios", cfg.Platform)
	})
	for name, args := range map[string][]string{
		"UnknownScenario": {"--scenario", "soak"},
		"BadSize":         {"--size", "1TB"},
		"BadPlatform":     {"--platform", "web"},
		"BadSpread":       {"--spread", "node"},
		"ZeroWorkers":     {"--workers", "0"},
		"BadURL":          {"--url", "localhost:3000"},
		"Positional":      {"extra"},
		"WaitNotWhole":    {"--wait", "1500ms"},
		"WaitZero":        {"--wait", "0s"},
		"WaitTooLong":     {"--wait", "51s"},
		"ZeroSubmitRate":  {"--submit-rate", "0"},
		"NaNLineRate":     {"--line-rate", "NaN"},
		"ZeroStreams":     {"--streams", "0"},
		"TooManyBuilds":   {"--streams", "4", "--stream-builds", "5"},
		"ZeroIdleWindow":  {"--lp-idle-window", "0s"},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := parseConfig(args, env, io.Discard)
			require.Error(t, err)
		})
	}
	t.Run("NoKey", func(t *testing.T) {
		_, _, err := parseConfig(nil, func(string) string { return "" }, io.Discard)
		require.ErrorContains(t, err, "API key")
	})
}

func TestParseSize(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{"1B": 1, "4KiB": 4 << 10, "4k": 4 << 10, "500MiB": 500 << 20, "1GiB": 1 << 30, "2G": 2 << 30, "7B": 7} {
		n, err := parseSize(in)
		require.NoError(t, err, in)
		require.Equal(t, want, n, in)
	}
	for _, in := range []string{"", "1", "4096", "MiB", "1.5GiB", "-1", "3TiB"} {
		_, err := parseSize(in)
		require.Error(t, err, in)
	}
	require.Equal(t, "1GiB", formatSize(1<<30))
	require.Equal(t, "1025B", formatSize(1025))
	require.Equal(t, "2GiB", roundUpGiB(1<<30+1))
	require.Equal(t, "1GiB", roundUpGiB(2<<20))
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func TestParseProcCPU(t *testing.T) {
	t.Parallel()
	// Fields 14 and 15 (utime 1234, stime 567); the name holds spaces and
	// parentheses.
	const stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 3551 0 0 0 1234 567 0 0 20 0 9 0 12345 1234752000 12053 18446744073709551615\n"
	n, err := parseProcCPU([]byte(stat))
	require.NoError(t, err)
	require.Equal(t, int64(1234+567), n)
	for name, bad := range map[string]string{
		"NoName":        "4242 S 1 2 3",
		"TooFewFields":  "4242 (c) S 1 4242 4242 0 -1 4194560 3551 0 0 0 1234",
		"BadUtime":      "4242 (c) S 1 4242 4242 0 -1 4194560 3551 0 0 0 12x4 567 0",
		"NegativeStime": "4242 (c) S 1 4242 4242 0 -1 4194560 3551 0 0 0 1234 -5 0",
	} {
		_, err := parseProcCPU([]byte(bad))
		require.Error(t, err, name)
	}
	if runtime.GOOS == "linux" {
		d, err := readCPU(os.Getpid())
		require.NoError(t, err)
		require.GreaterOrEqual(t, d, time.Duration(0))
	}
}

func TestCPUMeter(t *testing.T) {
	t.Parallel()
	require.Equal(t, 50.0, cpuUse{CPU: time.Second, Wall: 2 * time.Second}.Percent())
	require.Equal(t, 150.0, cpuUse{CPU: 3 * time.Second, Wall: 2 * time.Second}.Percent(), "two busy cores")
	require.Zero(t, cpuUse{CPU: time.Second}.Percent())
	require.Equal(t, cpuUse{}, startCPU(0, nil).Stop(), "no --pid: nothing measured")

	used := []time.Duration{2 * time.Second, 2*time.Second + 30*time.Millisecond}
	i := 0
	u := startCPU(7, func(pid int) (time.Duration, error) { require.Equal(t, 7, pid); v := used[i]; i++; return v, nil }).Stop()
	require.NoError(t, u.Err)
	require.Equal(t, 30*time.Millisecond, u.CPU)
	require.Positive(t, u.Wall)

	r := Result{Scenario: "longpoll"}
	r.addCPU("idle_cpu", cpuUse{CPU: time.Second, Wall: 4 * time.Second})
	r.addCPU("none", cpuUse{})
	require.Equal(t, []Figure{{"longpoll_idle_cpu", 25, "%core"}}, r.Figures)
	r.addCPU("gone", startCPU(1, func(int) (time.Duration, error) { return 0, errors.New("no such process") }).Stop())
	require.True(t, r.Failed())
}

func TestSSEReader(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 20<<10) // more than the reader's buffer
	stream := ": keep-alive\n\n" +
		"id: 7\nevent: log\ndata: {\"seq\":7}\n\n" +
		"event: status\r\ndata: {\"status\":\"building\"}\r\n\r\n" +
		"data: first\ndata:second\nretry: 10\nunknown: x\n\n" +
		"event: nodata\nid: 9\n\n" + // no data: not an event
		"data\n\n" + // a data field with no colon: empty data
		"data: " + long + "\n\n" +
		"event: end\ndata: {}\n\n" +
		"data: unfinished\n" // dropped at the end of the stream
	rd := newSSEReader(strings.NewReader(stream))
	var got []sseEvent
	for {
		ev, err := rd.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		got = append(got, ev)
	}
	require.Equal(t, []sseEvent{
		{ID: "7", Event: "log", Data: `{"seq":7}`},
		{Event: "status", Data: `{"status":"building"}`},
		{Event: "message", Data: "first\nsecond"},
		{Event: "message", Data: ""},
		{Event: "message", Data: long},
		{Event: "end", Data: "{}"},
	}, got)
	require.Equal(t, int64(7), logEventID(got[0]))
	require.Equal(t, int64(-1), logEventID(got[1]))

	_, err := newSSEReader(strings.NewReader("data: cut in the mid")).Next()
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	_, err = newSSEReader(strings.NewReader("data: " + strings.Repeat("y", maxSSELine+10) + "\n\n")).Next()
	require.ErrorIs(t, err, errSSELineTooLong)
}

func TestStreamBatchRoundTrip(t *testing.T) {
	t.Parallel()
	sent := time.Unix(1795739109, 611000123)
	body := appendStreamBatch(nil, 40, 3, sent)
	var batch struct {
		Logs []struct {
			Level, Message string
		}
	}
	require.NoError(t, json.Unmarshal(body, &batch), string(body))
	require.Len(t, batch.Logs, 3)
	for i, l := range batch.Logs {
		require.Equal(t, "info", l.Level)
		n, at, ok := parseStreamLine(l.Message)
		require.True(t, ok, l.Message)
		require.Equal(t, int64(40+i), n)
		require.True(t, at.Equal(sent))
	}
	require.Equal(t, body, appendStreamBatch(make([]byte, 0, 10), 40, 3, sent), "reusing a buffer gives the same body")
	for _, msg := range []string{"Build submitted", "Assigned to worker w", "lsg", "lsg x 1", "lsg 1 y", "lsg -1 5"} {
		_, _, ok := parseStreamLine(msg)
		require.False(t, ok, msg)
	}
}

func TestLogStreamChecksOrder(t *testing.T) {
	t.Parallel()
	sent := time.Now()
	logEv := func(seq int64, msg string) sseEvent {
		b, _ := json.Marshal(map[string]any{"seq": seq, "timestamp": 1, "level": "info", "message": msg})
		return sseEvent{ID: strconv.FormatInt(seq, 10), Event: "log", Data: string(b)}
	}
	ours := func(n int64) string {
		return "lsg " + strconv.FormatInt(n, 10) + " " + strconv.FormatInt(sent.UnixNano(), 10) + " text"
	}
	s := &logStream{lastN: -1}
	for _, ev := range []sseEvent{
		logEv(1, "Build submitted"), // the controller's own lines
		logEv(2, "Assigned to worker w"),
		logEv(3, ours(0)),
		logEv(4, ours(1)),
		logEv(4, ours(1)),                  // delivered twice
		logEv(7, ours(2)),                  // seq 5 and 6 skipped
		logEv(8, ours(2)),                  // line 2 again under a new seq
		{ID: "9", Event: "log", Data: "{"}, // unreadable
		{ID: "11", Event: "log", Data: `{"seq":9,"message":"x"}`}, // id and seq differ
		logEv(9, ""),
		logEv(10, ours(3)),
	} {
		s.onLog(ev, sent.Add(5*time.Millisecond))
	}
	require.Equal(t, int64(4), s.got)
	require.Equal(t, int64(2), s.reordered)
	require.Equal(t, int64(2), s.gaps)
	require.Equal(t, int64(2), s.malformed)
	require.Equal(t, int64(10), s.lastSeq)
	require.Equal(t, int64(3), s.lastN)
	require.Equal(t, []time.Duration{5 * time.Millisecond, 5 * time.Millisecond, 5 * time.Millisecond, 5 * time.Millisecond}, s.lat)
}

func TestParseGauge(t *testing.T) {
	t.Parallel()
	text := []byte("# HELP controller_held_polls Worker polls held.\n# TYPE controller_held_polls gauge\n" +
		"controller_held_polls_total 99\ncontroller_held_polls 1000\r\ncontroller_log_streams_open 12 1795739109611\n" +
		"controller_builds{status=\"pending\"} 3\n")
	v, ok := parseGauge(text, "controller_held_polls")
	require.True(t, ok)
	require.Equal(t, 1000.0, v)
	v, ok = parseGauge(text, "controller_log_streams_open")
	require.True(t, ok, "a timestamp after the value")
	require.Equal(t, 12.0, v)
	_, ok = parseGauge(text, "controller_builds")
	require.False(t, ok, "labelled metrics are not read")
	_, ok = parseGauge([]byte("controller_held_polls many\n"), "controller_held_polls")
	require.False(t, ok)
}

func TestDispatchTrackerFromSent(t *testing.T) {
	t.Parallel()
	t0 := time.Now()
	tr := newDispatchTracker()
	tr.submitted("a", t0, t0.Add(4*time.Millisecond))
	tr.received("a", "w1", t0.Add(3*time.Millisecond)) // before its submit answer
	tr.submitted("b", t0, t0.Add(2*time.Millisecond))
	tr.received("b", "w2", t0.Add(9*time.Millisecond))
	tr.answer("c", t0) // dispatch's way: no send time
	tr.received("c", "w1", t0.Add(time.Millisecond))
	a := tr.analyse(t0)
	require.Equal(t, []time.Duration{3 * time.Millisecond, 9 * time.Millisecond}, a.fromSent)
	require.Equal(t, []time.Duration{0, time.Millisecond, 7 * time.Millisecond}, a.assign)
	require.Equal(t, 1, a.early)
}

// TestSeveralNodes: --url takes several comma-separated nodes, each
// checked, and the client sends its requests to them in turn.
func TestSeveralNodes(t *testing.T) {
	t.Parallel()
	env := func(string) string { return "" }
	cfg, _, err := parseConfig([]string{"--url", "http://a:1/, http://b:2", "--api-key", "k-0123456789abcdef"}, env, io.Discard)
	require.NoError(t, err)
	require.Equal(t, "http://a:1,http://b:2", cfg.URL)
	require.Equal(t, []string{"http://a:1", "http://b:2"}, cfg.bases())
	c := newClient(cfg, 1)
	var hosts []string
	for i := 0; i < 4; i++ {
		hosts = append(hosts, c.newRequest(t.Context(), "GET", "/health", nil, "").URL.Host)
	}
	require.Equal(t, []string{"b:2", "a:1", "b:2", "a:1"}, hosts)
	hosts = nil
	for i := 0; i < 2; i++ {
		hosts = append(hosts, c.newRequest(onNode(t.Context(), 0), "GET", "/health", nil, "").URL.Host)
	}
	require.Equal(t, []string{"b:2", "a:1"}, hosts, "--spread request: a worker's requests in turn too")

	cfg, _, err = parseConfig([]string{"--url", "http://a:1,http://b:2", "--spread", "worker", "--api-key", "k-0123456789abcdef"}, env, io.Discard)
	require.NoError(t, err)
	c = newClient(cfg, 1)
	hosts = nil
	for _, n := range []int{0, 1, 0, 1, 3} {
		hosts = append(hosts, c.newRequest(onNode(t.Context(), n), "GET", "/health", nil, "").URL.Host)
	}
	require.Equal(t, []string{"a:1", "b:2", "a:1", "b:2", "b:2"}, hosts, "--spread worker: each worker's requests to its node")
	require.Equal(t, "b:2", c.newRequest(t.Context(), "GET", "/health", nil, "").URL.Host, "other requests in turn")
	_, _, err = parseConfig([]string{"--url", "http://a:1,ftp://b", "--api-key", "k-0123456789abcdef"}, env, io.Discard)
	require.ErrorContains(t, err, `invalid --url "ftp://b"`)
}

// TestDecodeLogEvent: the direct reading of a log event agrees with
// encoding/json on the controller's shape, and anything else goes to
// encoding/json.
func TestDecodeLogEvent(t *testing.T) {
	cases := []string{
		`{"seq":7,"timestamp":1795739109611,"level":"info","message":"lsg 12 1795739109611000000 \u003e Task :app:compileReleaseKotlin UP-TO-DATE"}`,
		`{"seq":11,"timestamp":5,"level":"info","message":"\u003ca\u003e \u0026 \u0026amp;"}`,
		`{"seq":12,"timestamp":5,"level":"info","message":"\u003ca\u003e \u00e9"}`,
		`{"seq":13,"timestamp":5,"level":"info","message":"\\u003c is not an escape"}`,
		`{"seq":1,"timestamp":0,"level":"warn","message":""}`,
		`{"seq":2,"timestamp":5,"level":"error","message":"é ✓ <tag> &amp;"}`,
		`{"seq":3,"timestamp":5,"level":"info","message":"escaped \"quote\" and \\ and \u003c"}`,
		`{"seq":4,"timestamp":5,"level":"info","message":"new\nline"}`,
		`{"seq":5,"timestamp":5,"message":"other order","level":"info"}`,
		`{"seq":05,"timestamp":5,"level":"info","message":"leading zero"}`,
		`{"seq":6,"timestamp":5,"level":"info","message":"trailing"} `,
		`{"seq":"8","timestamp":5,"level":"info","message":"seq a string"}`,
		`{"seq":9,"timestamp":5,"level":"info","message":"bad` + "\xff" + `utf8"}`,
		`{"seq":10,"timestamp":5,"level":"info","message":"unterminated`,
		`not json`, ``, `{}`,
	}
	for _, c := range cases {
		got, ok := decodeLogEvent(c)
		var want logEventData
		wantOK := json.Unmarshal([]byte(c), &want) == nil
		require.Equal(t, wantOK, ok, "%s", c)
		if ok {
			require.Equal(t, want, got, "%s", c)
		}
	}
	_, fast := decodeLogEventFast(cases[0])
	require.True(t, fast, "the controller's usual shape is read directly")
}
