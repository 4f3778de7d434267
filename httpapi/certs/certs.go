// Package certs reads a signing-certificate bundle (a zip) into what
// certs-secure hands to a worker's build VM (docs/API.md §4.4, §6.3).
package certs

import (
	"archive/zip"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// DefaultUnzipLimit caps the declared uncompressed size of a certs bundle.
const DefaultUnzipLimit = 50 << 20

// ErrInvalid means a certs bundle is not a zip or breaks a rule of §6.3.
var ErrInvalid = errors.New("certs: invalid bundle")

// Bundle is what certs-secure hands to a worker's VM, every field in
// standard padded base64 except the passwords.
type Bundle struct {
	P12                  string   `json:"p12"`
	P12Password          string   `json:"p12Password"`
	KeychainPassword     string   `json:"keychainPassword"`
	ProvisioningProfiles []string `json:"provisioningProfiles"`
}

// Parse reads a certs zip held in memory under the rules of docs/API.md
// (§6.3): declared uncompressed sizes total at most maxTotal and no entry
// inflates past its declared size; names containing "..", "\" or starting with
// "/" reject the bundle; directories are ignored; the last entry ending in
// ".p12" is the identity (required); the root "password.txt" is its password
// (UTF-8, trimmed); every ".mobileprovision" is a profile, in zip order. A new
// random keychain password is made on every call. Every violation returns an
// error wrapping ErrInvalid.
//
// Parse holds the bundle and its inflated entries in memory: it is the
// reference reading of the rules, which the tests and the fuzz target hold
// Check and Answer.WriteJSON (what certs-secure serves) to.
func Parse(data []byte, maxTotal int64) (*Bundle, error) {
	zr, err := openZip(bytes.NewReader(data), int64(len(data)), maxTotal)
	if err != nil {
		return nil, err
	}
	var (
		p12      []byte
		password string
		profiles = []string{}
	)
	for _, f := range zr.File {
		if f.FileInfo().IsDir() || strings.HasSuffix(f.Name, "/") {
			continue
		}
		isP12 := strings.HasSuffix(f.Name, ".p12")
		isProfile := strings.HasSuffix(f.Name, ".mobileprovision")
		isPassword := f.Name == "password.txt"
		if !isP12 && !isProfile && !isPassword {
			continue
		}
		content, err := readEntry(f)
		if err != nil {
			return nil, err
		}
		switch {
		case isP12:
			p12 = content
		case isProfile:
			profiles = append(profiles, base64.StdEncoding.EncodeToString(content))
		case isPassword:
			if !utf8.Valid(content) {
				return nil, fmt.Errorf("%w: password.txt is not UTF-8", ErrInvalid)
			}
			password = strings.TrimSpace(string(content))
		}
	}
	if p12 == nil {
		return nil, fmt.Errorf("%w: no .p12 entry", ErrInvalid)
	}
	var kc [24]byte
	if _, err := rand.Read(kc[:]); err != nil {
		return nil, err
	}
	return &Bundle{
		P12:                  base64.StdEncoding.EncodeToString(p12),
		P12Password:          password,
		KeychainPassword:     base64.StdEncoding.EncodeToString(kc[:]),
		ProvisioningProfiles: profiles,
	}, nil
}

// openZip reads the central directory of a certs zip and applies the rules
// on names and declared sizes.
func openZip(r io.ReaderAt, size, maxTotal int64) (*zip.Reader, error) {
	zr, err := zip.NewReader(r, size)
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		return nil, fmt.Errorf("%w: not a zip: %v", ErrInvalid, err)
	}
	var total uint64
	for _, f := range zr.File {
		if strings.Contains(f.Name, "..") || strings.Contains(f.Name, `\`) || strings.HasPrefix(f.Name, "/") {
			return nil, fmt.Errorf("%w: unsafe entry name %q", ErrInvalid, f.Name)
		}
		total += f.UncompressedSize64
		if total > uint64(maxTotal) || f.UncompressedSize64 > uint64(maxTotal) {
			return nil, fmt.Errorf("%w: declared uncompressed size over %d bytes", ErrInvalid, maxTotal)
		}
	}
	return zr, nil
}

// readEntry inflates one entry, refusing to go past its declared size.
func readEntry(f *zip.File) ([]byte, error) {
	rc, err := f.Open()
	if err != nil {
		return nil, fmt.Errorf("%w: open %q: %v", ErrInvalid, f.Name, err)
	}
	defer rc.Close()
	declared := int64(f.UncompressedSize64)
	b, err := io.ReadAll(io.LimitReader(rc, declared+1))
	if err != nil {
		return nil, fmt.Errorf("%w: inflate %q: %v", ErrInvalid, f.Name, err)
	}
	if int64(len(b)) > declared {
		return nil, fmt.Errorf("%w: %q inflates past its declared size", ErrInvalid, f.Name)
	}
	return b, nil
}
