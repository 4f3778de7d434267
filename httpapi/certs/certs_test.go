package certs

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"encoding/base64"
	"hash/crc32"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// entry is one member of a test zip; a name ending in "/" is a directory.
type entry struct {
	name string
	body []byte
}

func makeZip(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		w, err := zw.Create(e.name)
		require.NoError(t, err)
		if !strings.HasSuffix(e.name, "/") {
			_, err = w.Write(e.body)
			require.NoError(t, err)
		}
	}
	require.NoError(t, zw.Close())
	return buf.Bytes()
}

func decodeStd(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	require.NoError(t, err, "standard padded base64")
	return b
}

func TestParseCerts(t *testing.T) {
	t.Parallel()
	oldP12 := []byte("old identity, must lose")
	p12 := []byte("\x30\x82\x0a\x00 the last p12 wins! \xff") // 25 bytes: base64 needs padding
	profB := []byte("profile B <plist/> \x00\x01")
	profA := []byte("profile A")

	t.Run("OK", func(t *testing.T) {
		t.Parallel()
		data := makeZip(t,
			entry{name: "certs/"},
			entry{name: "certs/old.p12", body: oldP12},
			entry{name: "profiles/"},
			entry{name: "profiles/b.mobileprovision", body: profB},
			entry{name: "password.txt", body: []byte("  s3cret pass \r\n")},
			entry{name: "README.md", body: []byte("ignored")},
			entry{name: "a.mobileprovision", body: profA},
			entry{name: "deep/er/still/identity.p12", body: p12},
		)
		got, err := Parse(data, DefaultUnzipLimit)
		require.NoError(t, err)

		require.Equal(t, p12, decodeStd(t, got.P12), "the last .p12 in zip order, at any depth")
		require.NotZero(t, len(p12)%3)
		require.True(t, strings.HasSuffix(got.P12, "="), "padded")
		require.Equal(t, "s3cret pass", got.P12Password)
		require.Len(t, got.ProvisioningProfiles, 2)
		require.Equal(t, profB, decodeStd(t, got.ProvisioningProfiles[0]), "zip order, not name order")
		require.Equal(t, profA, decodeStd(t, got.ProvisioningProfiles[1]))

		require.Len(t, got.KeychainPassword, 32)
		require.Len(t, decodeStd(t, got.KeychainPassword), 24)

		again, err := Parse(data, DefaultUnzipLimit)
		require.NoError(t, err)
		require.NotEqual(t, got.KeychainPassword, again.KeychainPassword, "fresh on every call")
		require.Equal(t, got.P12, again.P12)
	})

	t.Run("Minimal/OK", func(t *testing.T) {
		t.Parallel()
		got, err := Parse(makeZip(t, entry{name: "id.p12", body: p12}), DefaultUnzipLimit)
		require.NoError(t, err)
		require.Equal(t, p12, decodeStd(t, got.P12))
		require.Empty(t, got.P12Password)
		require.NotNil(t, got.ProvisioningProfiles, "[] rather than null")
		require.Empty(t, got.ProvisioningProfiles)
	})

	t.Run("EmptyP12/OK", func(t *testing.T) {
		t.Parallel()
		got, err := Parse(makeZip(t, entry{name: "id.p12"}), DefaultUnzipLimit)
		require.NoError(t, err)
		require.Empty(t, got.P12)
	})

	t.Run("PasswordNotAtRoot/Ignored", func(t *testing.T) {
		t.Parallel()
		got, err := Parse(makeZip(t,
			entry{name: "sub/password.txt", body: []byte("nested")},
			entry{name: "xpassword.txt", body: []byte("prefixed")},
			entry{name: "id.p12", body: p12},
		), DefaultUnzipLimit)
		require.NoError(t, err)
		require.Empty(t, got.P12Password)
	})

	t.Run("PasswordNotUTF8/BadCerts", func(t *testing.T) {
		t.Parallel()
		_, err := Parse(makeZip(t,
			entry{name: "password.txt", body: []byte{0xff, 0xfe, 0x00}},
			entry{name: "id.p12", body: p12},
		), DefaultUnzipLimit)
		require.ErrorIs(t, err, ErrInvalid)
	})

	noIdentity := []struct {
		name    string
		entries []entry
	}{
		{"EmptyZip", nil},
		{"OnlyProfiles", []entry{{name: "a.mobileprovision", body: profA}, {name: "password.txt", body: []byte("x")}}},
		{"UppercaseP12", []entry{{name: "ID.P12", body: p12}}},
		{"MixedCaseP12", []entry{{name: "id.P12", body: p12}}},
		{"DirectoryNamedP12", []entry{{name: "folder.p12/"}}},
		{"P12NotSuffix", []entry{{name: "id.p12.bak", body: p12}}},
	}
	for _, tc := range noIdentity {
		t.Run("NoP12/"+tc.name+"/BadCerts", func(t *testing.T) {
			t.Parallel()
			got, err := Parse(makeZip(t, tc.entries...), DefaultUnzipLimit)
			require.ErrorIs(t, err, ErrInvalid)
			require.Nil(t, got)
		})
	}

	unsafe := []string{
		"../id.p12",
		"certs/../../id.p12",
		"certs/..",
		`certs\id.p12`,
		`..\..\id.p12`,
		"/id.p12",
		"/etc/passwd",
		"../README.md", // an unused entry still rejects the bundle
	}
	for _, name := range unsafe {
		t.Run("ZipSlip/"+name+"/BadCerts", func(t *testing.T) {
			t.Parallel()
			data := makeZip(t, entry{name: "ok.p12", body: p12}, entry{name: name, body: []byte("x")})
			got, err := Parse(data, DefaultUnzipLimit)
			require.ErrorIs(t, err, ErrInvalid)
			require.Nil(t, got)
		})
	}

	notZip := []struct {
		name string
		data []byte
	}{
		{"Nil", nil},
		{"Empty", []byte{}},
		{"Text", []byte("this is not a zip file at all")},
		{"BareP12", p12},
		{"Truncated", func() []byte {
			z := makeZip(t, entry{name: "id.p12", body: bytes.Repeat(p12, 100)})
			return z[:len(z)/2]
		}()},
	}
	for _, tc := range notZip {
		t.Run("NotZip/"+tc.name+"/BadCerts", func(t *testing.T) {
			t.Parallel()
			got, err := Parse(tc.data, DefaultUnzipLimit)
			require.ErrorIs(t, err, ErrInvalid)
			require.Nil(t, got)
		})
	}
}

func TestParseCertsZipBomb(t *testing.T) {
	t.Parallel()
	// 60 MiB of zeros, streamed into the compressor: the bundle is tiny, its
	// declared uncompressed size is not.
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	zw.RegisterCompressor(zip.Deflate, func(w io.Writer) (io.WriteCloser, error) {
		return flate.NewWriter(w, flate.BestSpeed)
	})
	w, err := zw.Create("bomb.p12")
	require.NoError(t, err)
	_, err = io.Copy(w, io.LimitReader(zeros{}, 60<<20))
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	require.Less(t, buf.Len(), 1<<20, "the bundle itself is small")

	got, err := Parse(buf.Bytes(), 50<<20)
	require.ErrorIs(t, err, ErrInvalid)
	require.Nil(t, got)

	got, err = Parse(buf.Bytes(), DefaultUnzipLimit)
	require.ErrorIs(t, err, ErrInvalid)
	require.Nil(t, got)
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func TestParseCertsDeclaredTotal(t *testing.T) {
	t.Parallel()
	p12 := bytes.Repeat([]byte("p"), 600)
	profile := bytes.Repeat([]byte("m"), 400)
	data := makeZip(t,
		entry{name: "dir/"},
		entry{name: "id.p12", body: p12},
		entry{name: "x.mobileprovision", body: profile},
	)
	cases := []struct {
		name     string
		maxTotal int64
		ok       bool
	}{
		{"AtCap/OK", 1000, true},
		{"Generous/OK", 1 << 20, true},
		{"OverTotalByOne/BadCerts", 999, false},
		{"EachEntryFitsTotalDoesNot/BadCerts", 700, false},
		{"ZeroCap/BadCerts", 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := Parse(data, tc.maxTotal)
			if !tc.ok {
				require.ErrorIs(t, err, ErrInvalid)
				require.Nil(t, got)
				return
			}
			require.NoError(t, err)
			require.Equal(t, p12, decodeStd(t, got.P12))
		})
	}

	t.Run("UnusedEntriesCount/BadCerts", func(t *testing.T) {
		t.Parallel()
		big := makeZip(t,
			entry{name: "id.p12", body: []byte("p")},
			entry{name: "padding.bin", body: bytes.Repeat([]byte{0}, 5000)},
		)
		_, err := Parse(big, 4096)
		require.ErrorIs(t, err, ErrInvalid)
	})
}

// lyingZip writes one deflated entry whose header declares declared bytes
// while the compressed body inflates to all of content (with a correct CRC).
func lyingZip(t *testing.T, name string, content []byte, declared uint64) []byte {
	t.Helper()
	var body bytes.Buffer
	fw, err := flate.NewWriter(&body, flate.DefaultCompression)
	require.NoError(t, err)
	_, err = fw.Write(content)
	require.NoError(t, err)
	require.NoError(t, fw.Close())

	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.CreateRaw(&zip.FileHeader{
		Name:               name,
		Method:             zip.Deflate,
		CRC32:              crc32.ChecksumIEEE(content),
		CompressedSize64:   uint64(body.Len()),
		UncompressedSize64: declared,
	})
	require.NoError(t, err)
	_, err = w.Write(body.Bytes())
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	return buf.Bytes()
}

func TestParseCertsInflatesPastDeclaredSize(t *testing.T) {
	t.Parallel()
	content := bytes.Repeat([]byte("identity bytes "), 1000) // 15,000 bytes

	t.Run("TruthfulHeader/OK", func(t *testing.T) {
		t.Parallel()
		// The control: the same crafting with an honest size parses.
		got, err := Parse(lyingZip(t, "id.p12", content, uint64(len(content))), DefaultUnzipLimit)
		require.NoError(t, err)
		require.Equal(t, content, decodeStd(t, got.P12))
	})

	lies := []struct {
		name     string
		entry    string
		declared uint64
	}{
		{"P12/BadCerts", "id.p12", 100},
		{"P12ByOne/BadCerts", "id.p12", uint64(len(content) - 1)},
		{"P12DeclaredEmpty/BadCerts", "id.p12", 0},
		{"Profile/BadCerts", "x.mobileprovision", 100},
		{"Password/BadCerts", "password.txt", 10},
	}
	for _, tc := range lies {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			data := lyingZip(t, tc.entry, content, tc.declared)
			if tc.entry != "id.p12" {
				// Give the bundle an identity so that only the lie can fail it.
				data = appendEntry(t, data, entry{name: "ok.p12", body: []byte("p12")})
			}
			got, err := Parse(data, DefaultUnzipLimit)
			require.ErrorIs(t, err, ErrInvalid)
			require.Nil(t, got)
		})
	}
}

// appendEntry rewrites a zip with one more entry at the end, copying the
// existing ones raw (their headers, lies included, are kept).
func appendEntry(t *testing.T, data []byte, e entry) []byte {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	require.NoError(t, err)
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range zr.File {
		require.NoError(t, zw.Copy(f))
	}
	w, err := zw.Create(e.name)
	require.NoError(t, err)
	_, err = w.Write(e.body)
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	return buf.Bytes()
}
