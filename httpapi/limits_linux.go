package httpapi

import "syscall"

// descriptorLimit is the process's open-file limit. Go raises the soft limit
// to the hard limit at start (since Go 1.19), so this is the hard limit.
func descriptorLimit() int {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil || r.Cur > 1<<24 {
		return 1 << 24
	}
	return int(r.Cur)
}
