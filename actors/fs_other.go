//go:build !linux

package actors

// createUnnamed is Linux-only; elsewhere temporaries are named.
func createUnnamed(dir, pattern string) (TempFile, error) { return nil, errUnnamedUnsupported }
