package domain_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/store/domain"
)

func TestParseID(t *testing.T) {
	t.Parallel()
	const canonical = "0f8fad5b-d9cb-469f-a165-70867728950e"
	ok := []struct {
		name, in, want string
	}{
		{"Lowercase", canonical, canonical},
		{"UppercaseLowered", strings.ToUpper(canonical), canonical},
		{"MixedCaseLowered", "0F8fad5B-d9cb-469F-a165-70867728950E", canonical},
		{"Nil", "00000000-0000-0000-0000-000000000000", "00000000-0000-0000-0000-000000000000"},
	}
	for _, tc := range ok {
		t.Run("OK/"+tc.name, func(t *testing.T) {
			t.Parallel()
			got, valid := domain.ParseID(tc.in)
			require.True(t, valid)
			require.Equal(t, tc.want, got)
		})
	}
	bad := []struct{ name, in string }{
		{"Empty", ""},
		{"Traversal", "../etc/passwd"},
		{"PercentEncodedTraversal", "%2e%2e%2f"},
		{"EncodedTraversalPath", "%2e%2e%2f%2e%2e%2fetc%2fpasswd"},
		{"Braces", "{" + canonical + "}"},
		{"URN", "urn:uuid:" + canonical},
		{"NoHyphens", strings.ReplaceAll(canonical, "-", "")},
		{"TooLong", strings.Repeat("a", 300)},
		{"TrailingNewline", canonical + "\n"},
		{"LeadingSpace", " " + canonical[1:]},
		{"NonHexDigit", "0f8fad5b-d9cb-469f-a165-70867728950g"},
		{"HyphenMisplaced", "0f8fad5bd-9cb-469f-a165-70867728950e"},
		{"SlashInside", "0f8fad5b-d9cb-469f-a165-7086772895/e"},
		{"DotsInside", "0f8fad5b-d9cb-469f-a165-708677289..e"},
		{"Truncated", canonical[:35]},
		{"NonASCII", "0f8fad5b-d9cb-469f-a165-7086772895é"},
	}
	for _, tc := range bad {
		t.Run("Refused/"+tc.name, func(t *testing.T) {
			t.Parallel()
			got, valid := domain.ParseID(tc.in)
			require.False(t, valid)
			require.Empty(t, got)
		})
	}
}

func TestResultExt(t *testing.T) {
	t.Parallel()
	require.Equal(t, ".apk", domain.PlatformAndroid.ResultExt())
	require.Equal(t, ".ipa", domain.PlatformIOS.ResultExt())
}

func TestClip(t *testing.T) {
	t.Parallel()
	require.Equal(t, "short", domain.Clip("short", 10))
	require.Equal(t, "0123456789", domain.Clip("0123456789", 10))
	require.Equal(t, "01234 … [6 bytes cut]", domain.Clip("0123456789a", 5))
	// Never inside a character: "é" is two bytes.
	require.Equal(t, "ab … [3 bytes cut]", domain.Clip("abéc", 3))
	require.Equal(t, "a\uFFFDb", domain.Clip("a\xffb", 10), "invalid UTF-8 is replaced")
	require.Equal(t, "a\uFFFDb\uFFFD", domain.Clip("a\x00b\x00", 10), "and NUL")
	long := domain.Clip(strings.Repeat("x", 1<<20), domain.MaxLogMessage)
	require.Less(t, len(long), domain.MaxLogMessage+40)
	require.True(t, strings.HasSuffix(long, " bytes cut]"))
}
