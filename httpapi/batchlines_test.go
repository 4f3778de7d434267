package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

// batchLinesByDecodeStrict is the general rule batchLines writes out: each
// element through decodeStrict, kept when both keys are strings and the
// level is valid.
func batchLinesByDecodeStrict(arr json.RawMessage) []store.LogInput {
	var batch []json.RawMessage
	if json.Unmarshal(arr, &batch) != nil {
		panic("not an array: " + string(arr))
	}
	var lines []store.LogInput
	for _, el := range batch {
		var l struct {
			Level   string `json:"level"`
			Message string `json:"message"`
		}
		got := decodeStrict(el, &l)
		ok := got.has("level") && got.has("message") && !got.wrongType("level") && !got.wrongType("message")
		if ok && domain.LogLevel(l.Level).Valid() {
			lines = append(lines, store.LogInput{Level: domain.LogLevel(l.Level), Message: l.Message})
		}
	}
	return lines
}

// TestBatchLinesIsDecodeStrict: the batch decoder keeps exactly the lines
// decodeStrict's rule keeps, on well-formed and hostile elements alike.
func TestBatchLinesIsDecodeStrict(t *testing.T) {
	elements := []string{
		`{"level":"info","message":"ok"}`,
		`{"message":"order","level":"warn"}`,
		`{"level":"error","message":"é \u00e9 \n tab\t"}`,
		`{"level":"info","message":"say \"hi\" \\ done \/"}`,
		`{"level":"warn","message":"no escapes: <a href='x'>&amp;</a> ✓"}`,
		`{"level":"info","message":"x","extra":1}`,
		`{"Level":"info","message":"case variant"}`,
		`{"level":"INFO","message":"upper level"}`,
		`{"level":"debug","message":"unknown level"}`,
		`{"level":"info"}`,
		`{"message":"no level"}`,
		`{"level":null,"message":"null level"}`,
		`{"level":"info","message":null}`,
		`{"level":"info","message":5}`,
		`{"level":5,"message":"x"}`,
		`{"level":"info","message":{"a":1}}`,
		`{"level":"info","message":["a"]}`,
		`{"level":"error","message":"dup","level":"info"}`,
		`{"level":"info","message":"a","message":"last wins"}`,
		`{"level":"info","message":"a","message":7}`,
		`{"level":"info","message":7,"message":"b"}`,
		`"just a string"`, `42`, `null`, `[]`, `[{"level":"info","message":"nested"}]`, `{}`, `true`,
		`{"level":"info","message":"` + strings.Repeat("z", 20_000) + `"}`,
		// Escaped keys name the same fields; other keys' values of every kind
		// are skipped, brackets and quotes inside strings included.
		`{"\u006cevel":"warn","message":"escaped key"}`,
		`{"level":"info","mess\u0061ge":"escaped key 2","message":"shadowed by the escaped one?"}`,
		`{"x":{"a":["]","}",{"\"":"\\"}]},"level":"info","y":[1,-2.5e3,true,false,null],"message":"after nesting"}`,
		` { "level" : "error" , "message" : "spaced" , "z" : [ ] } `,
		"{\n\t\"level\":\"info\",\r\n\"message\":\"tabs and newlines\"\n}",
		`{"level":"info","message":"x","level":"warn"}`,
		`{"level":"info","message":"a\u0000b"}`,
		`{"message":"","level":"info"}`,
	}
	arr := "[" + strings.Join(elements, ",") + "]"
	require.True(t, json.Valid([]byte(arr)))
	want := batchLinesByDecodeStrict(json.RawMessage(arr))
	require.Equal(t, want, batchLines(json.RawMessage(arr)))
	require.Len(t, want, 18, "the well-formed elements, the last of duplicate keys, the long line")
	for _, e := range elements {
		for _, arr := range []string{"[" + e + "]", "[ \n" + e + " ,\t" + e + "\r\n]"} {
			require.Equal(t, batchLinesByDecodeStrict(json.RawMessage(arr)), batchLines(json.RawMessage(arr)), "%s", arr)
		}
	}
	for _, arr := range []string{"[]", "[ ]", "[\n]", "[1, 2]", "[[], {}]"} {
		require.Empty(t, batchLines(json.RawMessage(arr)), arr)
	}
}

// FuzzBatchLines: on any JSON array, as readJSON hands it over (valid UTF-8),
// the batch reader keeps exactly the lines decodeStrict's rule keeps.
func FuzzBatchLines(f *testing.F) {
	f.Add(`[{"level":"info","message":"ok"},{"level":"warn","message":"a\"b","x":[{"]":"}"}]}]`)
	f.Add(`[ {"\u006cevel":"error" , "message":"e"} , 1, "s", null, [] ]`)
	f.Fuzz(func(t *testing.T, s string) {
		arr := bytes.ToValidUTF8([]byte(s), []byte("\uFFFD"))
		if !json.Valid(arr) || !isArray(bytes.TrimSpace(arr)) {
			return
		}
		arr = bytes.TrimSpace(arr)
		require.Equal(t, batchLinesByDecodeStrict(arr), batchLines(arr))
	})
}

// BenchmarkBatchLines decodes a worker's batch of 100 typical lines.
func BenchmarkBatchLines(b *testing.B) {
	elements := make([]string, 100)
	for i := range elements {
		elements[i] = fmt.Sprintf(`{"level":"info","message":"▸ Compiling Module%d.m (in target 'App' from project 'App')"}`, i)
	}
	batch := json.RawMessage("[" + strings.Join(elements, ",") + "]")
	for _, impl := range []struct {
		name string
		fn   func(json.RawMessage) []store.LogInput
	}{{"batchLines", batchLines}, {"decodeStrict", batchLinesByDecodeStrict}} {
		b.Run(impl.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if len(impl.fn(batch)) != 100 {
					b.Fatal("lines lost")
				}
			}
		})
	}
}

// logBodies are log POST bodies of every shape: single lines, batches,
// refusals, escaped and duplicate keys, space.
var logBodies = []string{
	`{"level":"info","message":"one"}`,
	` {"message":"two","level":"warn"} `,
	`{"level":"debug","message":"bad level"}`,
	`{"level":"info"}`, `{"message":"x"}`, `{"level":null,"message":"x"}`, `{"level":"info","message":null}`,
	`{"level":"info","message":5}`, `{"level":["info"],"message":"x"}`,
	`{"logs":[{"level":"info","message":"a"},{"level":"bad","message":"b"},7]}`,
	`{"logs":[]}`, `{"logs":null}`, `{"logs":{}}`, `{"logs":"x"}`,
	`{"logs":[{"level":"info","message":"a"}],"level":"info","message":"single ignored"}`,
	`{"level":"info","message":"single","logs":[{"level":"warn","message":"batch wins"}]}`,
	`{"logs":[{"level":"info","message":"first"}],"logs":[{"level":"info","message":"last wins"}]}`,
	`{"logs":[],"logs":null}`,
	`{"\u006cogs":[{"level":"info","message":"escaped top key"}]}`,
	`{"level":"info","mess\u0061ge":"escaped","extra":{"a":[1,"]"]}}`,
	`{"Level":"info","message":"case variant"}`,
	`[]`, `"s"`, `null`, `1`, `{}`,
	`{"level":"info","message":"é \u00e9 \"q\" \\ <>&"}`,
}

// TestLogBodyIsDecoded: the one-pass reading of a log body gives what
// decodeStrict's gives: the lines, batch or not, the refusal.
func TestLogBodyIsDecoded(t *testing.T) {
	for _, b := range logBodies {
		require.True(t, json.Valid([]byte(b)), b)
		lines, batch, refusal := logBody([]byte(b))
		wl, wb, wr := logBodyDecoded([]byte(b))
		require.Equal(t, wl, lines, b)
		require.Equal(t, wb, batch, b)
		require.Equal(t, wr, refusal, b)
	}
	lines, _, refusal := logBody([]byte(`{"logs":[{"level":"info","message":"a"},{"level":"bad","message":"b"},7]}`))
	require.Empty(t, refusal)
	require.Equal(t, []store.LogInput{{Level: domain.LevelInfo, Message: "a"}}, lines)
	_, _, refusal = logBody([]byte(`{"level":"debug","message":"x"}`))
	require.Equal(t, msgInvalidLogLevel, refusal)
}

// FuzzLogBody: as above, for any JSON value as readJSONBody hands it over.
func FuzzLogBody(f *testing.F) {
	for _, b := range logBodies {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, s string) {
		raw := bytes.ToValidUTF8([]byte(s), []byte("\uFFFD"))
		if !json.Valid(raw) {
			return
		}
		lines, batch, refusal := logBody(raw)
		wl, wb, wr := logBodyDecoded(raw)
		require.Equal(t, wl, lines)
		require.Equal(t, wb, batch)
		require.Equal(t, wr, refusal)
	})
}
