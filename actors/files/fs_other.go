//go:build !linux

package files

// createUnnamed is Linux-only; elsewhere temporaries are named.
func createUnnamed(dir, pattern string) (TempFile, error) { return nil, errUnnamedUnsupported }
