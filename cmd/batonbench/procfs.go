package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/baton-sh/baton/internal/proc"
)

// footprint is what a process costs the machine at one moment.
type footprint struct {
	RssAnonKB int `json:"rss_anon_kb"` // private memory: heap, stacks
	VmRSSKB   int `json:"vm_rss_kb"`   // everything resident, the binary's shared pages too
	FDs       int `json:"fds"`
}

// readFootprint reads pid's memory from /proc/PID/status and counts its
// open fds in /proc/PID/fd.
func readFootprint(pid int) (footprint, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return footprint{}, err
	}
	kb := statusKB(b)
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return footprint{}, err
	}
	return footprint{RssAnonKB: kb["RssAnon"], VmRSSKB: kb["VmRSS"], FDs: len(fds)}, nil
}

// statusKB reads the fields of a /proc/PID/status text that are counted in
// kB ("VmRSS:\t  12700 kB"), by name.
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
