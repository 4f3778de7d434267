package httpapi

import (
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
func batchLinesByDecodeStrict(batch []json.RawMessage) []store.LogInput {
	lines := make([]store.LogInput, 0, len(batch))
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
	}
	var batch []json.RawMessage
	for _, e := range elements {
		require.True(t, json.Valid([]byte(e)), e)
		batch = append(batch, json.RawMessage(e))
	}
	want := batchLinesByDecodeStrict(batch)
	require.Equal(t, want, batchLines(batch))
	require.Len(t, want, 10, "the well-formed elements, the last of duplicate keys, the long line")
	for i, e := range batch {
		require.Equal(t, batchLinesByDecodeStrict(batch[i:i+1]), batchLines(batch[i:i+1]), "%s", e)
	}
}

// BenchmarkBatchLines decodes a worker's batch of 100 typical lines.
func BenchmarkBatchLines(b *testing.B) {
	batch := make([]json.RawMessage, 100)
	for i := range batch {
		batch[i] = json.RawMessage(fmt.Sprintf(`{"level":"info","message":"▸ Compiling Module%d.m (in target 'App' from project 'App')"}`, i))
	}
	for _, impl := range []struct {
		name string
		fn   func([]json.RawMessage) []store.LogInput
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
