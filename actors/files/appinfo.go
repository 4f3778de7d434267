package files

import (
	"archive/zip"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"path"
	"strings"
	"unicode/utf8"
)

// AppInfo is what people recognise a project by: expo.name and expo.version
// of its app.json.
type AppInfo struct {
	Name, Version string
}

// The bounds of reading app.json from a submitted zip: the archive's entry
// count (checked from its end record before Go's zip reader loads the
// directory), the app.json entry's size, and the length of a kept value.
const (
	maxZipEntries  = 50_000 // Go's reader holds ~200 bytes per entry: 10 MB at most
	maxAppJSONSize = 256 << 10
	maxAppField    = 100
)

var errNoAppInfo = errors.New("no app.json with expo.name")

// ReadAppInfo reads expo.name and expo.version from the shallowest app.json
// of the zip r (size bytes; node_modules is skipped). Every read is bounded:
// an archive of more than maxZipEntries entries, an app.json larger than
// maxAppJSONSize (as declared or as inflated — a zip bomb stops at the cap)
// or not JSON gives an error, never a partial answer. Values are trimmed to
// maxAppField characters of valid UTF-8 without control characters.
func ReadAppInfo(r io.ReaderAt, size int64) (AppInfo, error) {
	if n, err := zipEntries(r, size); err != nil || n > maxZipEntries {
		return AppInfo{}, errors.Join(errNoAppInfo, err)
	}
	zr, err := zip.NewReader(r, size)
	if err != nil {
		return AppInfo{}, err
	}
	var (
		best      *zip.File
		bestDepth int
	)
	for _, f := range zr.File {
		name := path.Clean("/" + f.Name)
		if path.Base(name) != "app.json" || strings.Contains(name, "/node_modules/") {
			continue
		}
		if depth := strings.Count(name, "/"); best == nil || depth < bestDepth {
			best, bestDepth = f, depth
		}
	}
	if best == nil || best.UncompressedSize64 > maxAppJSONSize {
		return AppInfo{}, errNoAppInfo
	}
	rc, err := best.Open()
	if err != nil {
		return AppInfo{}, err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, maxAppJSONSize+1))
	if err != nil || len(data) > maxAppJSONSize {
		return AppInfo{}, errors.Join(errNoAppInfo, err)
	}
	var doc struct {
		Expo struct {
			Name    any `json:"name"`
			Version any `json:"version"`
		} `json:"expo"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return AppInfo{}, err
	}
	info := AppInfo{Name: appField(doc.Expo.Name), Version: appField(doc.Expo.Version)}
	if info.Name == "" {
		return AppInfo{}, errNoAppInfo
	}
	return info, nil
}

// appField is a JSON string as shown: control characters dropped, at most
// maxAppField runes; anything but a string is "".
func appField(v any) string {
	s, ok := v.(string)
	if !ok || !utf8.ValidString(s) {
		return ""
	}
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, strings.TrimSpace(s))
	if utf8.RuneCountInString(s) > maxAppField {
		s = string([]rune(s)[:maxAppField])
	}
	return s
}

// zipEntries is the entry count of a zip's end-of-central-directory record,
// searched for in the archive's last 64 KiB (a ZIP64 archive gives its
// 32-bit field, 0xffff when the count is larger: refused).
func zipEntries(r io.ReaderAt, size int64) (int, error) {
	const eocdLen = 22
	tail := min(size, 64<<10+eocdLen)
	buf := make([]byte, tail)
	if _, err := r.ReadAt(buf, size-tail); err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	for i := len(buf) - eocdLen; i >= 0; i-- {
		if binary.LittleEndian.Uint32(buf[i:]) == 0x06054b50 {
			n := int(binary.LittleEndian.Uint16(buf[i+10:]))
			if n == 0xffff {
				return 0, errors.New("zip64 archive: too many entries to read")
			}
			return n, nil
		}
	}
	return 0, zip.ErrFormat
}

// ReadAppInfo reads the staged file's app info (ReadAppInfo), or an error
// when the file cannot be read back.
func (s *Staged) ReadAppInfo() (AppInfo, error) {
	ra, ok := s.tmp.(io.ReaderAt)
	if s.tmp == nil || !ok {
		return AppInfo{}, errors.New("staged file cannot be read back")
	}
	return ReadAppInfo(ra, s.Size)
}
