// Package bytesize reads the byte sizes the commands take on their command
// lines: a whole number with an optional binary suffix.
package bytesize

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

var units = map[string]int64{"b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10,
	"m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}

// Parse reads a byte count with a B, K/KB/KiB, M/MB/MiB or G/GB/GiB suffix
// (all powers of 1024, case-insensitive, space allowed before the suffix).
// The unit is required (except for 0): a bare "500" meant as megabytes
// would otherwise be 500 bytes and refuse every upload. It refuses
// fractions, negative numbers and sizes that do not fit in an int64.
func Parse(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, errors.New("expected a number with a unit: B, KiB, MiB or GiB")
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil {
		return 0, errors.New("number out of range")
	}
	suffix := strings.ToLower(strings.TrimSpace(t[i:]))
	if suffix == "" {
		if n == 0 {
			return 0, nil
		}
		return 0, fmt.Errorf("%s needs a unit: %sB for bytes, or %sKiB, %sMiB, %sGiB", t, t, t, t, t)
	}
	m, ok := units[suffix]
	if !ok {
		return 0, fmt.Errorf("unknown size suffix %q", t[i:])
	}
	if n > (1<<62)/m {
		return 0, errors.New("size out of range")
	}
	return n * m, nil
}

// Format writes n the way Parse reads it, in the largest binary unit that
// divides it: 500MiB, 1GiB, 64KiB, 7B.
func Format(n int64) string {
	for _, u := range []struct {
		suffix string
		size   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10) + "B"
}
