package files

import (
	"archive/zip"
	"bytes"
	"fmt"
	"hash/crc32"
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
	t.Run("TooManyEntries", func(t *testing.T) {
		entries := []string{"app.json", `{"expo":{"name":"x"}}`}
		for i := 0; i < maxZipEntries; i++ {
			entries = append(entries, fmt.Sprint("f", i), "")
		}
		_, err := read(zipOf(t, false, entries...))
		require.Error(t, err, "the directory is not loaded")
	})
	for name, r := range map[string]*bytes.Reader{
		"NoAppJSON":  zipOf(t, false, "package.json", `{"name":"x"}`),
		"NoExpoName": zipOf(t, false, "app.json", `{"name":"x"}`),
		"NotJSON":    zipOf(t, false, "app.json", `{"expo":`),
		"NotAZip":    bytes.NewReader([]byte("PK\x03\x04 not really a zip")),
		"Empty":      bytes.NewReader(nil),
		// A bomb that says how large it is: refused unread.
		"Bomb":      zipOf(t, true, "app.json", `{"expo":{"name":"x"}}`+strings.Repeat(" ", 4<<20)),
		"LyingBomb": lyingBomb(t),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := read(r)
			require.Error(t, err)
		})
	}
}

// lyingBomb is a zip whose stored app.json declares 21 bytes and holds
// 300 KiB: the read stops early (Go's reader at the declared size, ours at
// the cap).
func lyingBomb(t *testing.T) *bytes.Reader {
	t.Helper()
	body := []byte(`{"expo":{"name":"x"}}` + strings.Repeat(" ", 300<<10))
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.CreateRaw(&zip.FileHeader{Name: "app.json", Method: zip.Store, CRC32: crc32.ChecksumIEEE(body),
		CompressedSize64: uint64(len(body)), UncompressedSize64: 21})
	require.NoError(t, err)
	_, err = w.Write(body)
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	return bytes.NewReader(buf.Bytes())
}
