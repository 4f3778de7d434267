package files

import (
	"archive/zip"
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// zipOf builds a zip of name → content, stored or deflated.
func zipOf(t *testing.T, deflate bool, entries ...string) *bytes.Reader {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	method := zip.Store
	if deflate {
		method = zip.Deflate
	}
	for i := 0; i+1 < len(entries); i += 2 {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: entries[i], Method: method})
		require.NoError(t, err)
		_, err = w.Write([]byte(entries[i+1]))
		require.NoError(t, err)
	}
	require.NoError(t, zw.Close())
	return bytes.NewReader(buf.Bytes())
}

func TestReadAppInfo(t *testing.T) {
	t.Parallel()
	read := func(r *bytes.Reader) (AppInfo, error) { return ReadAppInfo(r, r.Size()) }

	t.Run("OK", func(t *testing.T) {
		info, err := read(zipOf(t, true,
			"my-app/node_modules/x/app.json", `{"expo":{"name":"Wrong","version":"0"}}`,
			"my-app/sub/app.json", `{"expo":{"name":"Deeper","version":"0"}}`,
			"my-app/app.json", `{"expo":{"name":"  Coffee\u0007 Club ","version":"1.4.2"}}`))
		require.NoError(t, err)
		require.Equal(t, AppInfo{Name: "Coffee Club", Version: "1.4.2"}, info)
	})
	t.Run("NoVersion", func(t *testing.T) {
		info, err := read(zipOf(t, false, "app.json", `{"expo":{"name":"Bare","version":3}}`))
		require.NoError(t, err)
		require.Equal(t, AppInfo{Name: "Bare"}, info)
	})
	t.Run("LongNameCut", func(t *testing.T) {
		info, err := read(zipOf(t, false, "app.json", `{"expo":{"name":"`+strings.Repeat("é", 300)+`"}}`))
		require.NoError(t, err)
		require.Equal(t, strings.Repeat("é", maxAppField), info.Name)
	})
	for name, r := range map[string]*bytes.Reader{
		"NoAppJSON":  zipOf(t, false, "package.json", `{"name":"x"}`),
		"NoExpoName": zipOf(t, false, "app.json", `{"name":"x"}`),
		"NotJSON":    zipOf(t, false, "app.json", `{"expo":`),
		"NotAZip":    bytes.NewReader([]byte("PK\x03\x04 not really a zip")),
		"Empty":      bytes.NewReader(nil),
		// A bomb: 64 MiB of spaces deflate to a few KiB; the read stops
		// at the cap.
		"Bomb": zipOf(t, true, "app.json", `{"expo":{"name":"x"}}`+strings.Repeat(" ", 64<<20)),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := read(r)
			require.Error(t, err)
		})
	}
}
