package certs

import (
	"archive/zip"
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"strings"
)

// Answer is a certs bundle that Check found valid, ready to be written as
// the certs-secure answer without holding the bundle or any of its entries in
// memory: WriteJSON inflates the entries a second time, straight into the
// answer. It reads the io.ReaderAt given to Check, which must stay open until
// the answer is written.
type Answer struct {
	p12      *zip.File
	password *zip.File // the last root password.txt, or nil
	// The password is the bytes [pwStart, pwEnd) of password, which are
	// pwLen bytes once escaped in a JSON string.
	pwStart, pwEnd, pwLen int64
	profiles              []*zip.File

	// KeychainPassword is the keychainPassword field: 24 random bytes in
	// base64, drawn afresh by every Check.
	KeychainPassword string
}

// copyBufSize is the buffer every entry is inflated through, and the buffer
// in front of the writer of WriteJSON.
const copyBufSize = 32 << 10

// Check reads a certs zip of size bytes from r under the rules of Parse
// (docs/API.md §6.3) and returns the same errors for the same bundles, but
// inflates every entry it uses into a check instead of into memory. Its
// memory does not grow with the size of the entries: only with their count
// (the zip's central directory).
func Check(r io.ReaderAt, size, maxTotal int64) (*Answer, error) {
	zr, err := openZip(r, size, maxTotal)
	if err != nil {
		return nil, err
	}
	a := &Answer{}
	buf := make([]byte, copyBufSize)
	for _, f := range zr.File {
		if f.FileInfo().IsDir() || strings.HasSuffix(f.Name, "/") {
			continue
		}
		switch {
		case strings.HasSuffix(f.Name, ".p12"):
			if _, err := inflate(f, io.Discard, buf); err != nil {
				return nil, err
			}
			a.p12 = f
		case strings.HasSuffix(f.Name, ".mobileprovision"):
			if _, err := inflate(f, io.Discard, buf); err != nil {
				return nil, err
			}
			a.profiles = append(a.profiles, f)
		case f.Name == "password.txt":
			sc := textScan{start: -1}
			if _, err := inflate(f, &sc, buf); err != nil {
				return nil, err
			}
			if !sc.valid() {
				return nil, fmt.Errorf("%w: password.txt is not UTF-8", ErrInvalid)
			}
			a.password, a.pwStart, a.pwEnd = f, max(sc.start, 0), sc.end
		}
	}
	if a.p12 == nil {
		return nil, fmt.Errorf("%w: no .p12 entry", ErrInvalid)
	}
	if a.password != nil && a.pwEnd > a.pwStart {
		if a.pwLen, err = a.writePassword(io.Discard, buf); err != nil {
			return nil, err
		}
	}
	var kc [24]byte
	if _, err := rand.Read(kc[:]); err != nil {
		return nil, err
	}
	a.KeychainPassword = base64.StdEncoding.EncodeToString(kc[:])
	return a, nil
}

// inflate copies one entry to w, refusing to go past its declared size (as
// readEntry does), and returns its size.
func inflate(f *zip.File, w io.Writer, buf []byte) (int64, error) {
	rc, err := f.Open()
	if err != nil {
		return 0, fmt.Errorf("%w: open %q: %v", ErrInvalid, f.Name, err)
	}
	defer rc.Close()
	declared := int64(f.UncompressedSize64)
	cw := &countWriter{w: w} // also hides io.Discard's ReaderFrom, so that buf is used
	n, err := io.CopyBuffer(cw, io.LimitReader(rc, declared+1), buf)
	if cw.err != nil {
		return n, cw.err // writing, not reading, failed
	}
	if err != nil {
		return n, fmt.Errorf("%w: inflate %q: %v", ErrInvalid, f.Name, err)
	}
	if n > declared {
		return n, fmt.Errorf("%w: %q inflates past its declared size", ErrInvalid, f.Name)
	}
	return n, nil
}

// Len is the number of bytes WriteJSON writes with indent.
func (a *Answer) Len(indent string) int64 {
	n, _ := a.write(io.Discard, indent, nil, true)
	return n
}

// WriteJSON writes the answer exactly as Echo's c.JSON writes the Bundle that
// Parse returns (encoding/json with HTML escaping, then a newline; indented
// with indent when it is not empty, as for ?pretty), with the same keychain
// password, and returns the number of bytes written (Len). The .p12 and
// the profiles are inflated and base64-encoded on the way; an error reading
// them (which Check ruled out unless the file changed or the disk failed)
// comes after part of the answer was written.
func (a *Answer) WriteJSON(w io.Writer, indent string) (int64, error) {
	bw := bufio.NewWriterSize(w, copyBufSize)
	n, err := a.write(bw, indent, make([]byte, copyBufSize), false)
	if err != nil {
		return n - int64(bw.Buffered()), err
	}
	if err := bw.Flush(); err != nil {
		return n - int64(bw.Buffered()), err
	}
	return n, nil
}

// write writes, or with dry only counts, the answer. Both modes run the same
// code for the fixed parts of the JSON; dry adds the lengths of the payloads
// instead of reading them: base64 of the entries' declared sizes (which
// Check saw them inflate to exactly) and the escaped password measured by
// Check.
func (a *Answer) write(w io.Writer, indent string, buf []byte, dry bool) (int64, error) {
	cw := &countWriter{w: w}
	colon := ":"
	if indent != "" {
		colon = ": "
	}
	newline := func(depth int) {
		if indent != "" {
			cw.WriteString("\n")
			for range depth {
				cw.WriteString(indent)
			}
		}
	}
	field := func(name string) {
		newline(1)
		cw.WriteString(`"` + name + `"` + colon)
	}
	base64Entry := func(f *zip.File) {
		cw.WriteString(`"`)
		if dry {
			cw.n += int64(base64.StdEncoding.EncodedLen(int(f.UncompressedSize64)))
		} else if cw.err == nil {
			cw.err = copyBase64(cw, f, buf)
		}
		cw.WriteString(`"`)
	}

	cw.WriteString("{")
	field("p12")
	base64Entry(a.p12)
	cw.WriteString(",")
	field("p12Password")
	cw.WriteString(`"`)
	if dry {
		cw.n += a.pwLen
	} else if cw.err == nil && a.pwLen > 0 {
		_, cw.err = a.writePassword(cw, buf)
	}
	cw.WriteString(`",`)
	field("keychainPassword")
	cw.WriteString(`"`)
	js := jsonString{w: cw}
	io.WriteString(&js, a.KeychainPassword)
	js.Close()
	cw.WriteString(`",`)
	field("provisioningProfiles")
	cw.WriteString("[")
	for i, f := range a.profiles {
		if i > 0 {
			cw.WriteString(",")
		}
		newline(2)
		base64Entry(f)
	}
	if len(a.profiles) > 0 {
		newline(1)
	}
	cw.WriteString("]")
	newline(0)
	cw.WriteString("}\n")
	return cw.n, cw.err
}

// copyBase64 writes an entry, which must inflate to exactly its declared
// size, in standard padded base64.
func copyBase64(w io.Writer, f *zip.File, buf []byte) error {
	enc := base64.NewEncoder(base64.StdEncoding, w)
	n, err := inflate(f, enc, buf)
	if err != nil {
		return err
	}
	if n != int64(f.UncompressedSize64) {
		return fmt.Errorf("%q inflated to %d bytes, not %d", f.Name, n, f.UncompressedSize64)
	}
	return enc.Close()
}

// writePassword writes the trimmed password escaped as in a JSON string
// (without the quotes) and returns the length of that.
func (a *Answer) writePassword(w io.Writer, buf []byte) (int64, error) {
	rc, err := a.password.Open()
	if err != nil {
		return 0, fmt.Errorf("%w: open %q: %v", ErrInvalid, a.password.Name, err)
	}
	defer rc.Close()
	declared := int64(a.password.UncompressedSize64)
	cw := &countWriter{w: w}
	js := &jsonString{w: cw}
	// The bytes before, in and after the password, read to the end, so that
	// the reader checks the size and the CRC-32 again.
	var n int64
	for _, part := range []struct {
		w io.Writer
		n int64
	}{{io.Discard, a.pwStart}, {js, a.pwEnd - a.pwStart}, {io.Discard, declared + 1 - a.pwEnd}} {
		m, err := io.CopyBuffer(&countWriter{w: part.w}, io.LimitReader(rc, part.n), buf)
		n += m
		if cw.err != nil {
			return cw.n, cw.err
		}
		if err != nil {
			return cw.n, fmt.Errorf("%w: inflate %q: %v", ErrInvalid, a.password.Name, err)
		}
	}
	if n != declared {
		return cw.n, fmt.Errorf("%w: %q inflated to %d bytes, not %d", ErrInvalid, a.password.Name, n, declared)
	}
	js.Close()
	return cw.n, cw.err
}
