package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/baton-sh/baton/internal/proc"
)

// footprint is what a process costs the machine at one moment.
type footprint struct {
	RssAnonKB int `json:"rss_anon_kb"` // private memory: heap, stacks
	VmRSSKB   int `json:"vm_rss_kb"`   // everything resident, the binary's shared pages too
	// PssKB is the process's proportional share of what is resident:
	// pages it shares with others (the binary's, mapped by the master and
	// its keeper alike) split between them, so shares add up.
	PssKB int `json:"pss_kb"`
	FDs   int `json:"fds"`
}

// readFootprint reads pid's memory from /proc/PID/status and
// /proc/PID/smaps_rollup and counts its open fds in /proc/PID/fd.
func readFootprint(pid int) (footprint, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return footprint{}, err
	}
	kb := statusKB(b)
	rollup, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return footprint{}, err
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return footprint{}, err
	}
	return footprint{RssAnonKB: kb["RssAnon"], VmRSSKB: kb["VmRSS"], PssKB: statusKB(rollup)["Pss"], FDs: len(fds)}, nil
}

// statusKB reads the fields of a /proc/PID/status or smaps_rollup text
// that are counted in kB ("VmRSS:\t  12700 kB"), by name.
func statusKB(status []byte) map[string]int {
	out := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		num, unit, ok := strings.Cut(strings.TrimSpace(v), " ")
		if !ok || unit != "kB" {
			continue
		}
		if n, err := strconv.Atoi(num); err == nil {
			out[name] = n
		}
	}
	return out
}

// rssKB is VmRSS of pid in kB, 0 if unknown.
func rssKB(pid int) int {
	f, err := readFootprint(pid)
	if err != nil {
		return 0
	}
	return f.VmRSSKB
}

// cpuTicks is the CPU time pid has used, user and system, in clock ticks
// (1/100 s on Linux).
func cpuTicks(pid int) (uint64, error) {
	s, err := proc.ReadStat(pid)
	if err != nil {
		return 0, err
	}
	return s.UTime + s.STime, nil
}

// cpuNS is the CPU time pid's threads have used, in nanoseconds, from
// /proc/PID/task/*/schedstat: finer than cpuTicks, but without the
// threads that have exited.
func cpuNS(pid int) (uint64, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(tasks) == 0 {
		return 0, fmt.Errorf("pid %d: no tasks in /proc", pid)
	}
	var sum uint64
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // a thread that has just exited
		}
		ns, err := parseSchedstat(b)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", t, err)
		}
		sum += ns
	}
	return sum, nil
}

// parseSchedstat reads the time on the CPU, in nanoseconds, from a
// schedstat line: "ON_CPU_NS WAITING_NS TIMESLICES".
func parseSchedstat(b []byte) (uint64, error) {
	f := strings.Fields(string(b))
	if len(f) != 3 {
		return 0, fmt.Errorf("not a schedstat line: %q", b)
	}
	return strconv.ParseUint(f[0], 10, 64)
}
