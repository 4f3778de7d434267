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
