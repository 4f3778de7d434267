//go:build !linux

package store

// writableFile is a no-op where the file attributes cannot be read cheaply.
func writableFile(string) error { return nil }

// freeSpace is a no-op here: a full disk shows in the write probe.
func freeSpace(string) error { return nil }
