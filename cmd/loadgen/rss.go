package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// parseVmRSS extracts the resident set size, in bytes, from the text of
// /proc/<pid>/status ("VmRSS:	  123456 kB").
func parseVmRSS(status []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, fmt.Errorf("unexpected VmRSS line %q", sc.Text())
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil || kb < 0 {
			return 0, fmt.Errorf("unexpected VmRSS value %q", fields[0])
		}
		return kb << 10, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("no VmRSS line (kernel thread or exited process?)")
}

// readRSS reads the resident set size of pid.
func readRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	return parseVmRSS(b)
}

// rssStats is what a sampler saw: the first sample, the largest and the
// number taken. Err is the first failure to read (sampling stops there).
type rssStats struct {
	Baseline, Peak int64
	Samples        int
	Err            error
}

// Growth is the peak above the baseline.
func (s rssStats) Growth() int64 { return s.Peak - s.Baseline }

// rssSampler samples a process's RSS on a ticker in its own goroutine. The
// zero pid gives a sampler that does nothing.
type rssSampler struct {
	stop chan struct{}
	done chan rssStats
}

// startRSS takes the baseline sample at once, then one every interval until
// Stop.
func startRSS(pid int, interval time.Duration, read func(int) (int64, error)) *rssSampler {
	if pid == 0 {
		return nil
	}
	s := &rssSampler{stop: make(chan struct{}), done: make(chan rssStats, 1)}
	var st rssStats
	sample := func() bool {
		v, err := read(pid)
		if err != nil {
			st.Err = err
			return false
		}
		if st.Samples == 0 {
			st.Baseline = v
		}
		st.Peak = max(st.Peak, v)
		st.Samples++
		return true
	}
	if !sample() {
		s.done <- st
		return s
	}
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				sample() // the state at the end counts too
				s.done <- st
				return
			case <-t.C:
				if !sample() {
					<-s.stop
					s.done <- st
					return
				}
			}
		}
	}()
	return s
}

// Stop ends sampling and returns what was seen. A nil sampler gives the
// zero rssStats.
func (s *rssSampler) Stop() rssStats {
	if s == nil {
		return rssStats{}
	}
	select {
	case st := <-s.done: // failed at the first sample
		return st
	default:
	}
	close(s.stop)
	return <-s.done
}

// addRSS adds <prefix>_baseline, _peak and _growth in MiB, or notes why it
// could not.
func (r *Result) addRSS(prefix string, st rssStats) {
	if st.Samples == 0 {
		if st.Err != nil {
			r.fail("RSS sampling failed: %v", st.Err)
		}
		return
	}
	mib := func(b int64) float64 { return float64(b) / (1 << 20) }
	r.add(prefix+"_baseline", mib(st.Baseline), "MiB")
	r.add(prefix+"_peak", mib(st.Peak), "MiB")
	r.add(prefix+"_growth", mib(st.Growth()), "MiB")
	if st.Err != nil {
		r.note("RSS sampling stopped after %d samples: %v", st.Samples, st.Err)
	}
}
