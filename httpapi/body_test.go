package httpapi

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"
)

// TestReadAll: whatever length a body declares, readAll returns what it
// holds, as io.ReadAll would, and a read error.
func TestReadAll(t *testing.T) {
	body := strings.Repeat("0123456789", 1000)
	for _, declared := range []int64{-1, 0, 1, 9_999, 10_000, 10_001, maxPreallocatedBody, 1 << 20} {
		for name, r := range map[string]func() io.Reader{
			"whole":   func() io.Reader { return strings.NewReader(body) },
			"bytes":   func() io.Reader { return iotest.OneByteReader(strings.NewReader(body)) },
			"dataEOF": func() io.Reader { return iotest.DataErrReader(strings.NewReader(body)) },
		} {
			got, err := readAll(r(), declared)
			require.NoError(t, err, "%s declared %d", name, declared)
			require.True(t, bytes.Equal([]byte(body), got), "%s declared %d", name, declared)
		}
	}
	// A large declared length with nothing sent holds only the first buffer.
	got, err := readAll(strings.NewReader(""), 1<<20)
	require.NoError(t, err)
	require.Empty(t, got)
	require.LessOrEqual(t, cap(got), maxPreallocatedBody)
	boom := errors.New("boom")
	_, err = readAll(io.MultiReader(strings.NewReader("abc"), iotest.ErrReader(boom)), 10)
	require.ErrorIs(t, err, boom)
}
