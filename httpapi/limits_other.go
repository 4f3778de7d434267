//go:build !linux

package httpapi

// descriptorLimit is a generous default where the limit is not read.
func descriptorLimit() int { return 1 << 16 }
