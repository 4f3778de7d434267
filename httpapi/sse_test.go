package httpapi

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/store/domain"
)

// jsonStringCases are strings whose JSON encoding has every special case:
// escapes, HTML characters, line separators, invalid UTF-8.
var jsonStringCases = []string{
	"", "plain", `quote " backslash \ slash /`, "tab\tnew\nline\rcr", "\b\f\x00\x01\x1f\x7f",
	"<script>&amp;</script>", "é ✓ 𝄞", "\u2028\u2029", "bad \xff\xfe utf8 \xe2\x82", "\xed\xa0\x80 surrogate",
	"▸ Compiling Module1.m (in target 'App' from project 'App')",
}

// TestAppendJSONStringIsEncodingJSON: the live log's string encoding is
// byte for byte encoding/json's, on the hard cases and on random bytes.
func TestAppendJSONStringIsEncodingJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	cases := append([]string{}, jsonStringCases...)
	for range 2000 {
		b := make([]byte, r.IntN(40))
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		cases = append(cases, string(b))
	}
	for _, s := range cases {
		want, err := json.Marshal(s)
		require.NoError(t, err)
		require.Equal(t, string(want), string(appendJSONString(nil, s)), "%q", s)
	}
}

// FuzzAppendJSONString: as above, for any string.
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range jsonStringCases {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		require.NoError(t, err)
		require.Equal(t, string(want), string(appendJSONString(nil, s)))
	})
}

// TestAppendLogEvent: a log event is the entry's id and seqLogJSON, as
// encoding/json writes it.
func TestAppendLogEvent(t *testing.T) {
	for i, msg := range jsonStringCases {
		e := domain.LogEntry{Seq: int64(i + 1), Timestamp: 1764288000123 + int64(i), Level: domain.LevelWarn, Message: msg}
		data, err := json.Marshal(seqLogJSON{Seq: e.Seq, logJSON: logJSON{Timestamp: e.Timestamp, Level: e.Level, Message: e.Message}})
		require.NoError(t, err)
		want := "id: " + strconv.FormatInt(e.Seq, 10) + "\nevent: log\ndata: " + string(data) + "\n\n"
		require.Equal(t, want, string(appendLogEvent(nil, e)))
	}
}

// BenchmarkAppendLogEvent encodes a typical line's event.
func BenchmarkAppendLogEvent(b *testing.B) {
	e := domain.LogEntry{Seq: 12345, Timestamp: 1764288000123, Level: domain.LevelInfo,
		Message: "▸ Compiling Module1.m (in target 'App' from project 'App')"}
	var buf []byte
	for b.Loop() {
		buf = appendLogEvent(buf[:0], e)
	}
}

// TestStreamConnsReleaseEndsStalledWrite: a live log whose client stopped
// reading is blocked in a write; a shutdown ends that write at once, and a
// write begun after it fails at once (it cannot set a later deadline).
func TestStreamConnsReleaseEndsStalledWrite(t *testing.T) {
	server, client := net.Pipe() // a write blocks until the other end reads
	defer client.Close()
	defer server.Close()
	var sc streamConns
	require.True(t, sc.add(server))
	sink := &connSink{conn: server, conns: &sc, head: []byte("HTTP/1.1 200 OK\r\n\r\n")}
	errc := make(chan error, 1)
	go func() { errc <- sink.send([]byte("data: x\n\n")) }()
	sc.release()
	select {
	case err := <-errc:
		require.Error(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("the stalled write did not end when the server shut down")
	}
	require.ErrorIs(t, sink.send([]byte("data: y\n\n")), errStreamsClosed)
	require.False(t, sc.add(client), "no stream starts once the server shuts down")
	sc.done(server)
	sc.wait()
}

// TestConnSinkChunks: the head goes out with the first chunk; each send is
// one chunk; end is the last chunk.
func TestConnSinkChunks(t *testing.T) {
	server, client := net.Pipe()
	defer client.Close()
	var sc streamConns
	require.True(t, sc.add(server))
	sink := &connSink{conn: server, conns: &sc, head: streamHead(http.Header{"X-Request-Id": {"r1"}})}
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(client)
		got <- b
	}()
	require.NoError(t, sink.send([]byte("event: a\n\n")))
	require.NoError(t, sink.send(make([]byte, 300)))
	require.NoError(t, sink.end())
	server.Close()
	sc.done(server)
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(<-got)), nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, []string{"chunked"}, resp.TransferEncoding)
	require.True(t, resp.Close)
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	require.Equal(t, "no", resp.Header.Get("X-Accel-Buffering"))
	require.Equal(t, "r1", resp.Header.Get("X-Request-Id"))
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, append([]byte("event: a\n\n"), make([]byte, 300)...), body)
}
