//go:build !linux

package store

import "os"

// dataSync is fsync where fdatasync is not at hand (os.File.Sync; on macOS
// a full flush to the disk).
func dataSync(f *os.File) error { return f.Sync() }
