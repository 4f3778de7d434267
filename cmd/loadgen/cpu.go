package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"
)

// clockTicks is the unit of the CPU times in /proc/<pid>/stat: USER_HZ,
// which the Linux ABI fixes at 100 on every architecture (sysconf
// _SC_CLK_TCK reports it; the standard library has no call for it).
const clockTicks = 100

// parseProcCPU extracts utime + stime, in clock ticks, from the text of
// /proc/<pid>/stat. The command name (field 2) is in parentheses and may
// itself hold spaces and parentheses, so the fields are counted from the
// last ')': state is field 3, utime field 14, stime field 15.
func parseProcCPU(stat []byte) (int64, error) {
	end := bytes.LastIndexByte(stat, ')')
	if end < 0 {
		return 0, fmt.Errorf("unexpected /proc stat %.40q", stat)
	}
	fields := bytes.Fields(stat[end+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("unexpected /proc stat: %d fields after the name", len(fields))
	}
	var total int64
	for _, f := range fields[11:13] { // utime, stime
		n, err := strconv.ParseInt(string(f), 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("unexpected CPU time %q in /proc stat", f)
		}
		total += n
	}
	return total, nil
}

// readCPU reads the CPU time (user + system) pid has used so far.
func readCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	ticks, err := parseProcCPU(b)
	if err != nil {
		return 0, err
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// cpuMeter measures the CPU a process uses between start and Stop. The zero
// pid gives a meter that measures nothing.
type cpuMeter struct {
	pid   int
	read  func(int) (time.Duration, error)
	t0    time.Time
	used0 time.Duration
	err   error
}

// cpuUse is what a meter saw: the process's CPU time over the wall time.
type cpuUse struct {
	CPU, Wall time.Duration
	Err       error
}

// Percent is the CPU time as a percentage of one core over the wall time
// (above 100 when the process kept several cores busy).
func (u cpuUse) Percent() float64 {
	if u.Wall <= 0 {
		return 0
	}
	return 100 * float64(u.CPU) / float64(u.Wall)
}

func startCPU(pid int, read func(int) (time.Duration, error)) *cpuMeter {
	if pid == 0 {
		return nil
	}
	m := &cpuMeter{pid: pid, read: read, t0: time.Now()}
	m.used0, m.err = read(pid)
	return m
}

// Stop reads the CPU time again. A nil meter gives the zero cpuUse.
func (m *cpuMeter) Stop() cpuUse {
	if m == nil {
		return cpuUse{}
	}
	if m.err != nil {
		return cpuUse{Err: m.err}
	}
	used, err := m.read(m.pid)
	wall := time.Since(m.t0)
	if err != nil {
		return cpuUse{Err: err}
	}
	return cpuUse{CPU: used - m.used0, Wall: wall}
}

// addCPU adds <name> (percent of one core), or records why it could not.
// A zero cpuUse (no --pid) adds nothing.
func (r *Result) addCPU(name string, u cpuUse) {
	switch {
	case u.Err != nil:
		r.fail("CPU sampling failed: %v", u.Err)
	case u.Wall > 0:
		r.add(name, u.Percent(), "%core")
	}
}
