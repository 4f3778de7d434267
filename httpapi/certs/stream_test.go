package certs

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// encodeLikeEcho is what Echo's c.JSON writes for v: a json.Encoder (HTML
// escaping on) with the indent of ?pretty, or none.
func encodeLikeEcho(t testing.TB, v any, indent string) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	if indent != "" {
		enc.SetIndent("", indent)
	}
	require.NoError(t, enc.Encode(v))
	return buf.Bytes()
}

// requireSameAnswer checks that Check accepts data exactly when Parse does,
// and that WriteJSON then writes, compact and indented, exactly what c.JSON
// writes of Parse's Bundle, Len bytes of it.
func requireSameAnswer(t testing.TB, data []byte, maxTotal int64) *Bundle {
	t.Helper()
	want, perr := Parse(data, maxTotal)
	a, err := Check(bytes.NewReader(data), int64(len(data)), maxTotal)
	if perr != nil {
		require.ErrorIs(t, perr, ErrInvalid)
		require.ErrorIs(t, err, ErrInvalid, "Parse refused with %v", perr)
		require.Nil(t, a)
		return nil
	}
	require.NoError(t, err)
	require.Len(t, a.KeychainPassword, 32)
	a.KeychainPassword = want.KeychainPassword
	for _, indent := range []string{"", "  ", "\t"} {
		exp := encodeLikeEcho(t, want, indent)
		var got bytes.Buffer
		n, err := a.WriteJSON(&got, indent)
		require.NoError(t, err)
		require.Equal(t, int64(got.Len()), n)
		require.Equal(t, n, a.Len(indent))
		if !bytes.Equal(exp, got.Bytes()) {
			require.Equal(t, string(exp), got.String(), "indent %q", indent) // a readable diff
		}
	}
	return want
}

// storedZip writes entries with the Store method (no compression).
func storedZip(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: e.name, Method: zip.Store})
		require.NoError(t, err)
		_, err = w.Write(e.body)
		require.NoError(t, err)
	}
	require.NoError(t, zw.Close())
	return buf.Bytes()
}

func randomBytes(seed uint64, n int) []byte {
	var s [32]byte
	s[0] = byte(seed)
	s[1] = byte(seed >> 8)
	b := make([]byte, n)
	rand.NewChaCha8(s).Read(b)
	return b
}

func TestWriteJSONIsParseAsCJSON(t *testing.T) {
	t.Parallel()
	p12 := []byte("\x30\x82\x0a\x00 identity \xff")
	// Every rune class encoding/json treats apart, and runes split across
	// the 32 KiB copy buffer.
	special := " \t \u00a0\u3000 \"<&>\\ pässwörd 🔐 \u2028\u2029 \x01\x1f\b\f\n\r\t\x7f \ufffd end \u2003\n"
	longPassword := strings.Repeat("é€🔐a<", 4000) // 44,000 bytes: runes across buffer boundaries
	cases := []struct {
		name string
		data []byte
	}{
		{"Minimal", makeZip(t, entry{name: "id.p12", body: p12})},
		{"EmptyP12", makeZip(t, entry{name: "id.p12"})},
		{"WithProfiles", makeZip(t,
			entry{name: "certs/"},
			entry{name: "certs/old.p12", body: []byte("old")},
			entry{name: "profiles/b.mobileprovision", body: []byte("profile B <plist/> \x00\x01")},
			entry{name: "password.txt", body: []byte("  s3cret pass \r\n")},
			entry{name: "README.md", body: []byte("ignored")},
			entry{name: "a.mobileprovision", body: []byte("A")},
			entry{name: "empty.mobileprovision"},
			entry{name: "deep/er/identity.p12", body: p12},
		)},
		{"SpecialPassword", makeZip(t, entry{name: "password.txt", body: []byte(special)}, entry{name: "id.p12", body: p12})},
		{"SpacesOnlyPassword", makeZip(t, entry{name: "password.txt", body: []byte(" \u00a0\t\u3000\n")}, entry{name: "id.p12", body: p12})},
		{"EmptyPassword", makeZip(t, entry{name: "password.txt"}, entry{name: "id.p12", body: p12})},
		{"LastPasswordWins", makeZip(t, entry{name: "password.txt", body: []byte("first")}, entry{name: "id.p12", body: p12},
			entry{name: "password.txt", body: []byte(" second ")}, entry{name: "sub/password.txt", body: []byte("nested")})},
		{"LongPassword", makeZip(t, entry{name: "password.txt", body: []byte("\n " + longPassword + " \u2028")}, entry{name: "id.p12", body: p12})},
		{"Stored", storedZip(t, entry{name: "a.mobileprovision", body: randomBytes(1, 70000)}, entry{name: "password.txt", body: []byte(special)},
			entry{name: "id.p12", body: randomBytes(2, 100<<10+1)})},
	}
	// Every remainder of the .p12 length modulo 3 (base64 padding), around
	// the copy buffer's size.
	for _, n := range []int{1, 2, 3, copyBufSize - 1, copyBufSize, copyBufSize + 1, 3*copyBufSize + 2} {
		cases = append(cases, struct {
			name string
			data []byte
		}{"P12Size" + strings.Repeat("+", n%3), makeZip(t, entry{name: "id.p12", body: randomBytes(uint64(n), n)},
			entry{name: "p.mobileprovision", body: randomBytes(uint64(n+1), n+1)})})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.NotNil(t, requireSameAnswer(t, tc.data, DefaultUnzipLimit), "a valid bundle")
		})
	}

	t.Run("Pinned", func(t *testing.T) {
		t.Parallel()
		data := makeZip(t, entry{name: "password.txt", body: []byte(" \"<&>\\ é\u2028x\n")}, entry{name: "id.p12", body: []byte("P12")},
			entry{name: "x.mobileprovision", body: []byte("PROFILE")})
		a, err := Check(bytes.NewReader(data), int64(len(data)), DefaultUnzipLimit)
		require.NoError(t, err)
		a.KeychainPassword = "t0DXNgEX30EcDWUpi0EFC3Asy6KoGFm2"
		var buf bytes.Buffer
		_, err = a.WriteJSON(&buf, "")
		require.NoError(t, err)
		require.Equal(t, `{"p12":"UDEy","p12Password":"\"\u003c\u0026\u003e\\ é\u2028x","keychainPassword":"t0DXNgEX30EcDWUpi0EFC3Asy6KoGFm2","provisioningProfiles":["UFJPRklMRQ=="]}`+"\n", buf.String())
		buf.Reset()
		_, err = a.WriteJSON(&buf, "  ")
		require.NoError(t, err)
		require.Equal(t, "{\n  \"p12\": \"UDEy\",\n  \"p12Password\": \"\\\"\\u003c\\u0026\\u003e\\\\ é\\u2028x\",\n"+
			"  \"keychainPassword\": \"t0DXNgEX30EcDWUpi0EFC3Asy6KoGFm2\",\n  \"provisioningProfiles\": [\n    \"UFJPRklMRQ==\"\n  ]\n}\n", buf.String())
	})
}

func TestCheckRefusesWhatParseRefuses(t *testing.T) {
	t.Parallel()
	p12 := []byte("identity")
	content := bytes.Repeat([]byte("identity bytes "), 1000)
	corrupt := func(data []byte, body []byte) []byte { // flips a byte of body's copy in data
		i := bytes.Index(data, body)
		require.GreaterOrEqual(t, i, 0)
		out := bytes.Clone(data)
		out[i+len(body)/2] ^= 0xff
		return out
	}
	stored := storedZip(t, entry{name: "old.p12", body: []byte("corrupt old identity")}, entry{name: "id.p12", body: p12})
	storedProfile := storedZip(t, entry{name: "a.mobileprovision", body: []byte("corrupt profile")}, entry{name: "id.p12", body: p12})
	storedPassword := storedZip(t, entry{name: "password.txt", body: []byte("corrupt password")}, entry{name: "id.p12", body: p12})
	cases := []struct {
		name     string
		data     []byte
		maxTotal int64
	}{
		{"NotZip", []byte("a bare .p12, not a zip"), DefaultUnzipLimit},
		{"Empty", nil, DefaultUnzipLimit},
		{"NoP12", makeZip(t, entry{name: "a.mobileprovision", body: []byte("x")}), DefaultUnzipLimit},
		{"DirectoryNamedP12", makeZip(t, entry{name: "folder.p12/"}), DefaultUnzipLimit},
		{"ZipSlip", makeZip(t, entry{name: "ok.p12", body: p12}, entry{name: "../x", body: []byte("x")}), DefaultUnzipLimit},
		{"Backslash", makeZip(t, entry{name: "ok.p12", body: p12}, entry{name: `a\b`, body: []byte("x")}), DefaultUnzipLimit},
		{"Absolute", makeZip(t, entry{name: "/ok.p12", body: p12}), DefaultUnzipLimit},
		{"DeclaredTotal", makeZip(t, entry{name: "id.p12", body: bytes.Repeat([]byte("p"), 600)},
			entry{name: "x.mobileprovision", body: bytes.Repeat([]byte("m"), 400)}), 999},
		{"PasswordNotUTF8", makeZip(t, entry{name: "password.txt", body: []byte{0xff, 0xfe}}, entry{name: "id.p12", body: p12}), DefaultUnzipLimit},
		{"PasswordCutRune", makeZip(t, entry{name: "password.txt", body: []byte("pass\xe2\x82")}, entry{name: "id.p12", body: p12}), DefaultUnzipLimit},
		{"PasswordSurrogate", makeZip(t, entry{name: "password.txt", body: []byte("\xed\xa0\x80")}, entry{name: "id.p12", body: p12}), DefaultUnzipLimit},
		{"EarlierPasswordNotUTF8", makeZip(t, entry{name: "password.txt", body: []byte("\xc3")}, entry{name: "id.p12", body: p12},
			entry{name: "password.txt", body: []byte("valid")}), DefaultUnzipLimit},
		{"LyingP12", lyingZip(t, "id.p12", content, 100), DefaultUnzipLimit},
		{"LyingProfile", appendEntry(t, lyingZip(t, "x.mobileprovision", content, 100), entry{name: "ok.p12", body: p12}), DefaultUnzipLimit},
		{"LyingPassword", appendEntry(t, lyingZip(t, "password.txt", content, 10), entry{name: "ok.p12", body: p12}), DefaultUnzipLimit},
		{"ShortP12", lyingZip(t, "id.p12", content, uint64(len(content)+1)), DefaultUnzipLimit},
		{"CorruptEarlierP12", corrupt(stored, []byte("corrupt old identity")), DefaultUnzipLimit},
		{"CorruptProfile", corrupt(storedProfile, []byte("corrupt profile")), DefaultUnzipLimit},
		{"CorruptPassword", corrupt(storedPassword, []byte("corrupt password")), DefaultUnzipLimit},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, perr := Parse(tc.data, tc.maxTotal)
			require.ErrorIs(t, perr, ErrInvalid, "the case is invalid")
			require.Nil(t, requireSameAnswer(t, tc.data, tc.maxTotal))
		})
	}
}

// TestWriteJSONReadError: a read failing while answering (the zip changed
// under Check, the disk failed) ends WriteJSON with an error, short of Len.
func TestWriteJSONReadError(t *testing.T) {
	t.Parallel()
	body := randomBytes(7, 200<<10)
	data := storedZip(t, entry{name: "id.p12", body: body})
	a, err := Check(bytes.NewReader(data), int64(len(data)), DefaultUnzipLimit)
	require.NoError(t, err)
	// The same zip with the .p12 changed after Check: its CRC-32 no longer
	// matches.
	i := bytes.Index(data, body)
	data[i+len(body)-1] ^= 0xff
	n, err := a.WriteJSON(io.Discard, "")
	require.Error(t, err)
	require.Less(t, n, a.Len(""))

	// A failing writer stops the answer too.
	data[i+len(body)-1] ^= 0xff
	boom := errors.New("client gone")
	n, err = a.WriteJSON(&failAfter{n: 100 << 10, err: boom}, "")
	require.ErrorIs(t, err, boom)
	require.Less(t, n, a.Len(""))
}

type failAfter struct {
	n   int
	err error
}

func (f *failAfter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		n := f.n
		f.n = 0
		return n, f.err
	}
	f.n -= len(p)
	return len(p), nil
}

// feedChunks writes s to w in pieces of the given sizes, cycling.
func feedChunks(w io.Writer, s []byte, sizes []int) {
	for i := 0; len(s) > 0; i++ {
		n := min(sizes[i%len(sizes)], len(s))
		w.Write(s[:n])
		s = s[n:]
	}
}

// TestJSONStringEscapesAsEncodingJSON compares jsonString with json.Marshal
// over every rune and every lone byte, fed in pieces that split runes.
func TestJSONStringEscapesAsEncodingJSON(t *testing.T) {
	t.Parallel()
	var all []byte
	for r := rune(0); r <= utf8.MaxRune; r++ {
		if utf8.ValidRune(r) {
			all = utf8.AppendRune(all, r)
		}
	}
	for b := 0x80; b <= 0xff; b++ {
		all = append(all, byte(b), 'x', 0xe2, 0x82, 'y') // lone bytes and a cut rune
	}
	all = append(all, 0xf0, 0x9f, 0x94) // a cut rune at the very end
	want, err := json.Marshal(string(all))
	require.NoError(t, err)
	want = want[1 : len(want)-1]
	for _, sizes := range [][]int{{4096}, {len(all)}} {
		var got bytes.Buffer
		js := &jsonString{w: &got}
		feedChunks(js, all, sizes)
		require.NoError(t, js.Close())
		require.True(t, bytes.Equal(want, got.Bytes()), "pieces of %v", sizes)
	}
	// Small pieces, which split runes, over a sample: ASCII, the two- to
	// four-byte runes around U+2028 and the lone bytes at the end.
	sample := append(append(utf8.AppendRune(nil, 0), all[:0x800]...), all[len(all)-0x800:]...)
	sample = append(sample, []byte("\u2027\u2028\u2029\u202a🔐\U0010ffff")...)
	want, err = json.Marshal(string(sample))
	require.NoError(t, err)
	for _, sizes := range [][]int{{1}, {2}, {3}, {5, 1, 7}} {
		var got bytes.Buffer
		js := &jsonString{w: &got}
		feedChunks(js, sample, sizes)
		require.NoError(t, js.Close())
		require.Equal(t, string(want[1:len(want)-1]), got.String(), "pieces of %v", sizes)
	}
}

// checkText compares textScan (fed in pieces) with utf8.Valid and
// strings.TrimSpace, and the escaped trimmed text with json.Marshal.
func checkText(t testing.TB, s []byte, sizes []int) {
	sc := textScan{start: -1}
	feedChunks(&sc, s, sizes)
	if sc.valid() != utf8.Valid(s) {
		t.Fatalf("%q: valid %v", s, sc.valid())
	}
	if !sc.valid() {
		return
	}
	got := ""
	if sc.end > sc.start && sc.start >= 0 {
		got = string(s[sc.start:sc.end])
	}
	if want := strings.TrimSpace(string(s)); got != want {
		t.Fatalf("%q: [%d, %d) is %q, want %q", s, sc.start, sc.end, got, want)
	}
}

func TestTextScanIsValidAndTrimSpace(t *testing.T) {
	t.Parallel()
	texts := []string{"", " ", "a", " a ", "\u00a0a\u3000", "\u0085x\u0085", " \t\n\v\f\r", "é", "a\xff", "\xe2\x82", "\xe2\x82\xac",
		"\xed\xa0\x80", "\xf4\x90\x80\x80", "\xc0\xaf", " 🔐 \u2028 ", "x\u200by", "\u180e"}
	for _, s := range texts {
		for _, sizes := range [][]int{{1}, {2}, {3}, {1 << 10}} {
			checkText(t, []byte(s), sizes)
		}
	}
}

// FuzzPasswordText holds textScan to utf8.Valid and strings.TrimSpace, and
// jsonString to json.Marshal, for any text fed in any pieces.
func FuzzPasswordText(f *testing.F) {
	f.Add([]byte(" s3cret \"<&>\\ pässwörd\n"), uint8(1))
	f.Add([]byte("\xe2\x82\xac\u2028\xff"), uint8(2))
	f.Fuzz(func(t *testing.T, s []byte, piece uint8) {
		sizes := []int{int(piece%7) + 1, int(piece/7%5) + 1}
		checkText(t, s, sizes)
		want, _ := json.Marshal(string(s))
		var got bytes.Buffer
		js := &jsonString{w: &got}
		feedChunks(js, s, sizes)
		js.Close()
		if !bytes.Equal(want[1:len(want)-1], got.Bytes()) {
			t.Fatalf("%q escaped to %q, want %q", s, got.Bytes(), want)
		}
	})
}

// TestCheckMemoryIsFlat: checking and writing a bundle whose .p12 is 4 MiB
// allocates a small, fixed amount, not the .p12.
func TestCheckMemoryIsFlat(t *testing.T) {
	body := randomBytes(9, 4<<20)
	data := makeZip(t, entry{name: "password.txt", body: []byte("pw")}, entry{name: "id.p12", body: body},
		entry{name: "a.mobileprovision", body: body[:1<<20]})
	run := func() {
		a, err := Check(bytes.NewReader(data), int64(len(data)), DefaultUnzipLimit)
		require.NoError(t, err)
		_, err = a.WriteJSON(io.Discard, "")
		require.NoError(t, err)
	}
	run() // warm the pools of archive/zip
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	const runs = 3
	for range runs {
		run()
	}
	runtime.ReadMemStats(&after)
	require.Less(t, (after.TotalAlloc-before.TotalAlloc)/runs, uint64(1<<20), "bytes allocated by Check and WriteJSON")
}
