package main

import (
	"bytes"
	"io"
	"mime"
	"mime/multipart"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

type parsedPart struct {
	name, filename, contentType string
	data                        []byte
}

// parseMultipart reads a multipart body back into its parts, in order.
func parseMultipart(t *testing.T, contentType string, body io.Reader) []parsedPart {
	t.Helper()
	mediaType, params, err := mime.ParseMediaType(contentType)
	require.NoError(t, err)
	require.Equal(t, "multipart/form-data", mediaType)
	mr := multipart.NewReader(body, params["boundary"])
	var parts []parsedPart
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			return parts
		}
		require.NoError(t, err)
		data, err := io.ReadAll(p)
		require.NoError(t, err)
		parts = append(parts, parsedPart{name: p.FormName(), filename: p.FileName(),
			contentType: p.Header.Get("Content-Type"), data: data})
	}
}

func partNames(parts []parsedPart) []string {
	names := make([]string, len(parts))
	for i, p := range parts {
		names[i] = p.name
	}
	return names
}

func TestUploadBody(t *testing.T) {
	t.Parallel()

	t.Run("Success", func(t *testing.T) {
		t.Parallel()
		const size = 300<<10 + 11 // several pipe writes, not a round number
		body, ct, wait := uploadBody(uploadForm{BuildID: "b-1", WorkerID: "w-1", Success: true,
			ErrorMessage: "ignored on success", FileName: "build.ipa", File: resultReader("b-1", size)})
		parts := parseMultipart(t, ct, body)
		wait()

		require.Equal(t, []string{"build_id", "worker_id", "success", "result"}, partNames(parts))
		require.Equal(t, "b-1", string(parts[0].data))
		require.Equal(t, "w-1", string(parts[1].data))
		require.Equal(t, "true", string(parts[2].data))
		require.Equal(t, "build.ipa", parts[3].filename)
		require.Equal(t, "application/octet-stream", parts[3].contentType)
		want, err := io.ReadAll(resultReader("b-1", size))
		require.NoError(t, err)
		require.Len(t, parts[3].data, size)
		require.True(t, bytes.Equal(want, parts[3].data))
	})

	t.Run("Failure", func(t *testing.T) {
		t.Parallel()
		body, ct, wait := uploadBody(uploadForm{BuildID: "b-2", WorkerID: "w-2", Success: false,
			ErrorMessage: "Gradle exploded"})
		parts := parseMultipart(t, ct, body)
		wait()
		require.Equal(t, []string{"build_id", "worker_id", "success", "error_message"}, partNames(parts))
		require.Equal(t, "false", string(parts[2].data))
		require.Equal(t, "Gradle exploded", string(parts[3].data))
		require.Empty(t, parts[3].filename)
	})

	t.Run("AbandonedReader", func(t *testing.T) {
		t.Parallel()
		// The request stops reading early: wait must still end the writer.
		body, _, wait := uploadBody(uploadForm{BuildID: "b", WorkerID: "w", Success: true,
			FileName: "build.apk", File: resultReader("b", 10<<20)})
		buf := make([]byte, 1000)
		_, err := io.ReadFull(body, buf)
		require.NoError(t, err)
		require.True(t, strings.Contains(string(buf), `name="build_id"`))
		wait()
	})
}

func TestResultReader(t *testing.T) {
	t.Parallel()
	a, err := io.ReadAll(resultReader("one", 4096))
	require.NoError(t, err)
	b, err := io.ReadAll(resultReader("one", 4096))
	require.NoError(t, err)
	c, err := io.ReadAll(resultReader("two", 4096))
	require.NoError(t, err)
	require.Len(t, a, 4096)
	require.Equal(t, a, b)
	require.NotEqual(t, a, c)
	require.Equal(t, "build.ipa", resultFileName("ios"))
	require.Equal(t, "build.apk", resultFileName("android"))
}
