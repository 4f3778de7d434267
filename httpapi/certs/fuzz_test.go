package certs_test

// Run with:
//
//	go test -run='^$' -fuzz='^FuzzParseCerts$' -fuzztime=20s ./httpapi/certs

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"encoding/base64"
	"encoding/json"
	"errors"
	"hash/crc32"
	"io"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/expo-free-agent/controller/httpapi/certs"
)

// fuzzCertsLimit is the declared-uncompressed cap used under fuzzing: small,
// so that one execution never inflates more than 1 MiB.
const fuzzCertsLimit = 1 << 20

type zipEntry struct {
	name string
	data []byte
	// raw, when set, writes data as already-deflated bytes and declares
	// size as the uncompressed size (a lying header).
	raw  bool
	size uint64
}

func buildZip(tb testing.TB, entries ...zipEntry) []byte {
	tb.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		var w io.Writer
		var err error
		if e.raw {
			w, err = zw.CreateRaw(&zip.FileHeader{Name: e.name, Method: zip.Deflate,
				CompressedSize64: uint64(len(e.data)), UncompressedSize64: e.size, CRC32: crc32.ChecksumIEEE(nil)})
		} else {
			w, err = zw.Create(e.name)
		}
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := w.Write(e.data); err != nil {
			tb.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

func deflate(tb testing.TB, data []byte) []byte {
	tb.Helper()
	var buf bytes.Buffer
	fw, err := flate.NewWriter(&buf, flate.BestCompression)
	if err != nil {
		tb.Fatal(err)
	}
	fw.Write(data)
	fw.Close()
	return buf.Bytes()
}

// certSeed is a bundle every run replays, and whether Parse accepts it.
type certSeed struct {
	name string
	data []byte
	ok   bool
}

// certSeeds are valid bundles, zip slip names, zip bombs (a lying header, a
// declared-size bomb, an honest bomb) and things that are not zips.
func certSeeds(tb testing.TB) []certSeed {
	p := func(s string) []byte { return []byte(s) }
	zeros := make([]byte, 2<<20)
	return []certSeed{
		{"Valid", buildZip(tb, zipEntry{name: "dist/cert.p12", data: p("P12-BYTES")}, zipEntry{name: "password.txt", data: p(" s3cret \n")},
			zipEntry{name: "profiles/app.mobileprovision", data: p("PROFILE-1")}), true},
		{"LastP12Wins", buildZip(tb, zipEntry{name: "a.p12", data: p("first")}, zipEntry{name: "dir/", data: nil}, zipEntry{name: "b.p12", data: p("last")},
			zipEntry{name: "sub/password.txt", data: p("not the root one")}, zipEntry{name: "x.P12", data: p("case matters")}), true},
		{"EmptyP12", buildZip(tb, zipEntry{name: "only.p12", data: nil}), true},
		{"PasswordNotUTF8", buildZip(tb, zipEntry{name: "password.txt", data: p("\xff\xfe")}, zipEntry{name: "c.p12", data: p("x")}), false},
		{"NoP12", buildZip(tb, zipEntry{name: "profile.mobileprovision", data: p("no p12")}), false},
		{"SlipParent", buildZip(tb, zipEntry{name: "../evil.p12", data: p("x")}), false},
		{"SlipDeep", buildZip(tb, zipEntry{name: "../../../../../../tmp/evil.p12", data: p("x")}), false},
		{"SlipAbsolute", buildZip(tb, zipEntry{name: "/etc/evil.p12", data: p("x")}), false},
		{"SlipBackslash", buildZip(tb, zipEntry{name: `..\..\evil.p12`, data: p("x")}), false},
		{"SlipInner", buildZip(tb, zipEntry{name: "ok/../../evil.p12", data: p("x")}), false},
		{"BackslashName", buildZip(tb, zipEntry{name: "cert.p12", data: p("x")}, zipEntry{name: `dir\password.txt`, data: p("x")}), false},
		{"BombHeader1TiB", buildZip(tb, zipEntry{name: "bomb.p12", data: deflate(tb, p("x")), raw: true, size: 1 << 40}), false},
		{"BombHonest2MiB", buildZip(tb, zipEntry{name: "bomb.p12", data: zeros}), false},
		{"BombLyingHeader", buildZip(tb, zipEntry{name: "bomb.p12", data: deflate(tb, zeros), raw: true, size: 16}), false},
		{"TotalOverCap", buildZip(tb, zipEntry{name: "a.p12", data: make([]byte, fuzzCertsLimit/2)},
			zipEntry{name: "b.mobileprovision", data: make([]byte, fuzzCertsLimit/2+1)}), false},
		{"Empty", []byte{}, false},
		{"BareP12", p("a bare .p12, not a zip"), false},
		{"LocalHeaderOnly", p("PK\x03\x04"), false},
		{"EmptyZip", p("PK\x05\x06" + strings.Repeat("\x00", 18)), false},
		{"Random", []byte{0x8f, 0x11, 0x02, 0xfe, 0x00, 0x7a, 0x33, 0xc1, 0x5d, 0x9e, 0x01, 0x42, 0xaa, 0x07, 0xee, 0x64}, false},
	}
}

// TestParseCertsSeeds pins the outcome of every seed, so that the corpus keeps
// covering both sides of each rule.
func TestParseCertsSeeds(t *testing.T) {
	for _, s := range certSeeds(t) {
		t.Run(s.name, func(t *testing.T) {
			b, err := certs.Parse(s.data, fuzzCertsLimit)
			if s.ok != (err == nil) {
				t.Fatalf("Parse = %+v, %v; want ok=%v", b, err, s.ok)
			}
			checkStreamed(t, s.data, b)
			if err == nil {
				checkBundle(t, s.data, b)
			} else if !errors.Is(err, certs.ErrInvalid) {
				t.Fatalf("%v does not wrap ErrInvalid", err)
			}
		})
	}
}

// FuzzParseCerts feeds arbitrary bytes to certs.Parse. Invariants: no
// panic; an error always wraps ErrInvalid and comes with a nil bundle; a
// bundle always comes with a nil error, standard base64 fields, a 32-character
// keychain password, a non-nil profile list, and only from a zip whose names
// are all safe, whose declared sizes fit the cap, and whose p12 is the last
// ".p12" entry. And what certs-secure serves agrees: certs.Check refuses
// exactly what Parse refuses, and WriteJSON writes, compact and indented,
// exactly what Echo's c.JSON writes of Parse's bundle.
func FuzzParseCerts(f *testing.F) {
	for _, s := range certSeeds(f) {
		f.Add(s.data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := certs.Parse(data, fuzzCertsLimit)
		checkStreamed(t, data, b)
		if err != nil {
			if b != nil {
				t.Fatalf("error %v with a bundle", err)
			}
			if !errors.Is(err, certs.ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if b == nil {
			t.Fatal("nil error and nil bundle")
		}
		checkBundle(t, data, b)
	})
}

// checkStreamed holds certs.Check and Answer.WriteJSON to Parse's outcome b
// (nil for a refusal): the same refusals, and byte for byte the answer c.JSON
// (a json.Encoder) writes of b, compact or indented, Len bytes long.
func checkStreamed(t *testing.T, data []byte, b *certs.Bundle) {
	t.Helper()
	a, err := certs.Check(bytes.NewReader(data), int64(len(data)), fuzzCertsLimit)
	if b == nil {
		if err == nil || a != nil || !errors.Is(err, certs.ErrInvalid) {
			t.Fatalf("Parse refused the bundle, Check returned %v, %v", a, err)
		}
		return
	}
	if err != nil {
		t.Fatalf("Parse accepted the bundle, Check refused it: %v", err)
	}
	a.KeychainPassword = b.KeychainPassword
	for _, indent := range []string{"", "  "} {
		var want, got bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetIndent("", indent)
		if err := enc.Encode(b); err != nil {
			t.Fatal(err)
		}
		n, err := a.WriteJSON(&got, indent)
		if err != nil {
			t.Fatalf("WriteJSON: %v", err)
		}
		if !bytes.Equal(want.Bytes(), got.Bytes()) {
			t.Fatalf("indent %q: WriteJSON wrote %q, c.JSON writes %q", indent, got.Bytes(), want.Bytes())
		}
		if n != int64(got.Len()) || a.Len(indent) != n {
			t.Fatalf("indent %q: %d bytes written, WriteJSON says %d, Len %d", indent, got.Len(), n, a.Len(indent))
		}
	}
}

func checkBundle(t *testing.T, data []byte, b *certs.Bundle) {
	t.Helper()
	p12, err := base64.StdEncoding.DecodeString(b.P12)
	if err != nil {
		t.Fatalf("p12 is not standard base64: %v", err)
	}
	if len(b.KeychainPassword) != 32 {
		t.Fatalf("keychainPassword %q has %d characters", b.KeychainPassword, len(b.KeychainPassword))
	}
	if kc, err := base64.StdEncoding.DecodeString(b.KeychainPassword); err != nil || len(kc) != 24 {
		t.Fatalf("keychainPassword %q: %v", b.KeychainPassword, err)
	}
	if b.ProvisioningProfiles == nil {
		t.Fatal("provisioningProfiles is nil (would be JSON null)")
	}
	for _, p := range b.ProvisioningProfiles {
		if _, err := base64.StdEncoding.DecodeString(p); err != nil {
			t.Fatalf("profile is not standard base64: %v", err)
		}
	}
	if !utf8.ValidString(b.P12Password) || strings.TrimSpace(b.P12Password) != b.P12Password {
		t.Fatalf("p12Password %q is not trimmed UTF-8", b.P12Password)
	}

	// The reference reading of §6.3.
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		t.Fatalf("accepted a bundle that is not a zip: %v", err)
	}
	var total uint64
	var lastP12 *zip.File
	profiles := 0
	for _, f := range zr.File {
		if strings.Contains(f.Name, "..") || strings.Contains(f.Name, `\`) || strings.HasPrefix(f.Name, "/") {
			t.Fatalf("accepted the unsafe entry name %q", f.Name)
		}
		total += f.UncompressedSize64
		if f.FileInfo().IsDir() || strings.HasSuffix(f.Name, "/") {
			continue
		}
		if strings.HasSuffix(f.Name, ".p12") {
			lastP12 = f
		}
		if strings.HasSuffix(f.Name, ".mobileprovision") {
			profiles++
		}
	}
	if total > fuzzCertsLimit {
		t.Fatalf("accepted %d declared bytes over the cap %d", total, fuzzCertsLimit)
	}
	if lastP12 == nil {
		t.Fatal("accepted a bundle without a .p12 entry")
	}
	if profiles != len(b.ProvisioningProfiles) {
		t.Fatalf("%d profiles in the zip, %d in the bundle", profiles, len(b.ProvisioningProfiles))
	}
	rc, err := lastP12.Open()
	if err != nil {
		t.Fatalf("the p12 entry does not open: %v", err)
	}
	defer rc.Close()
	want, err := io.ReadAll(io.LimitReader(rc, int64(lastP12.UncompressedSize64)+1))
	if err != nil || !bytes.Equal(want, p12) {
		t.Fatalf("p12 %q is not the last .p12 entry %q (%v)", p12, want, err)
	}
}
