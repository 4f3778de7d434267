package bytesize

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParse(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{"0": 0, "1B": 1, "7B": 7, "64KiB": 64 << 10, "64k": 64 << 10,
		"50 MiB": 50 << 20, "10mb": 10 << 20, "1GiB": 1 << 30, "2g": 2 << 30, " 3 GB ": 3 << 30} {
		got, err := Parse(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "1", "500", "MiB", "-1", "1.5GiB", "1TiB", "1 XB", "99999999999999999999", "9999999999GiB"} {
		_, err := Parse(in)
		require.Error(t, err, in)
	}
}

func TestBareNumberNamesTheUnits(t *testing.T) {
	t.Parallel()
	_, err := Parse("500")
	require.EqualError(t, err, "500 needs a unit: 500B for bytes, or 500KiB, 500MiB, 500GiB")
}

func TestFormatRoundTrips(t *testing.T) {
	t.Parallel()
	for n, want := range map[int64]string{7: "7B", 64 << 10: "64KiB", 500 << 20: "500MiB", 1 << 30: "1GiB", 1536: "1536B"} {
		require.Equal(t, want, Format(n))
		back, err := Parse(Format(n))
		require.NoError(t, err)
		require.Equal(t, n, back)
	}
}
