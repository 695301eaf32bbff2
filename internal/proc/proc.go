// Package proc is how baton reads and holds other processes: what /proc
// says about them (their stat line, their process group, their children,
// variables of their environment) and the pidfd through which baton
// holds, signals and waits for one of them without ever mistaking a
// reused PID for it. Two hot paths read /proc in their own way, for
// speed: internal/accepting's look for a waiting accept and the host's
// memory walk (internal/host/health.go).
//
// Everything read from /proc by number may already be stale when it is
// returned: the process may have exited and its PID gone to another. Open
// is the one way to a reading known to be of a given process; signals go
// through its PidFD.
//
// Nothing here keeps state or runs on import.
package proc

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Stat is one process as /proc/PID/stat shows it.
type Stat struct {
	PID   int
	Comm  string // the name ps shows, at most 15 bytes; any byte but NUL, ')' and spaces included
	State byte   // R, S, D, T, t, Z, X, I, …
	PPID  int    // the parent: the process's, not one of its threads' (0 for PID 1)
	PGID  int    // the process group
	SID   int    // the session
	// UTime and STime are the CPU time the process and all its threads
	// have spent, in user and in kernel mode, in clock ticks
	// (sysconf(_SC_CLK_TCK), 100 a second on Linux).
	UTime, STime uint64
	Threads      int // how many threads it has
	// StartTime is when the process started, in clock ticks since boot:
	// with the PID, it names the process for good, since a PID is only
	// reused once its process is gone.
	StartTime uint64
}

// Uptime is the time since boot in clock ticks, as Stat.StartTime counts
// it: a process with a StartTime above it started afterwards.
func Uptime() (uint64, error) {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0, err
	}
	secs, _, _ := strings.Cut(string(b), " ")
	whole, frac, _ := strings.Cut(secs, ".")
	w, err1 := strconv.ParseUint(whole, 10, 64)
	f, err2 := strconv.ParseUint((frac + "00")[:2], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("unreadable /proc/uptime %q", b)
	}
	return w*100 + f, nil
}

// SamePIDNamespace reports whether process pid is in the caller's PID
// namespace. Its numbers, and the environment variables that carry them,
// mean something else in another (a container's); false when it cannot
// be told.
func SamePIDNamespace(pid int) bool {
	theirs, err1 := os.Readlink("/proc/" + strconv.Itoa(pid) + "/ns/pid")
	mine, err2 := os.Readlink("/proc/self/ns/pid")
	return err1 == nil && err2 == nil && theirs == mine
}

// Dead reports whether the process has exited and only waits to be reaped
// (a zombie), or is being reaped.
func (s Stat) Dead() bool { return s.State == 'Z' || s.State == 'X' }

// String is "PID (COMM)", as a log line names a process.
func (s Stat) String() string { return fmt.Sprintf("%d (%s)", s.PID, s.Comm) }

// ErrStat is returned for a stat line that cannot be parsed.
var ErrStat = errors.New("unreadable /proc stat line")

// ReadStat reads /proc/PID/stat. A process that does not exist is an error
// that matches fs.ErrNotExist.
func ReadStat(pid int) (Stat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, err
	}
	return ParseStat(b)
}

// ParseStat parses a /proc/PID/stat line: "PID (COMM) STATE PPID PGRP
// SESSION …". COMM may hold spaces, parentheses and ")", so it is taken to
// be everything between the first '(' and the last ')'.
func ParseStat(b []byte) (Stat, error) {
	open, closing := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 1 || closing < open {
		return Stat{}, ErrStat
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:open])))
	if err != nil {
		return Stat{}, ErrStat
	}
	// After COMM, counting from 0: 0 state, 1 ppid, 2 pgrp, 3 session,
	// 11 utime, 12 stime, 17 num_threads, 19 starttime (proc(5) fields 3
	// to 22).
	var f [20][]byte
	n, rest := 0, b[closing+1:]
	for n < len(f) {
		rest = bytes.TrimLeft(rest, " ")
		if len(rest) == 0 {
			break
		}
		end := bytes.IndexAny(rest, " \n")
		if end < 0 {
			end = len(rest)
		}
		f[n], rest = rest[:end], rest[end:]
		n++
	}
	if n < len(f) || len(f[0]) != 1 {
		return Stat{}, ErrStat
	}
	s := Stat{PID: pid, Comm: string(b[open+1 : closing]), State: f[0][0]}
	ints := []*int{&s.PPID, &s.PGID, &s.SID}
	for i, p := range ints {
		if *p, err = strconv.Atoi(string(f[1+i])); err != nil {
			return Stat{}, ErrStat
		}
	}
	if s.Threads, err = strconv.Atoi(string(f[17])); err != nil {
		return Stat{}, ErrStat
	}
	for _, u := range []struct {
		dst *uint64
		i   int
	}{{&s.UTime, 11}, {&s.STime, 12}, {&s.StartTime, 19}} {
		if *u.dst, err = strconv.ParseUint(string(f[u.i]), 10, 64); err != nil {
			return Stat{}, ErrStat
		}
	}
	return s, nil
}

// PIDs lists every process in /proc, in no particular order.
func PIDs() ([]int, error) {
	d, err := os.Open("/proc")
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	pids := make([]int, 0, len(names))
	for _, n := range names {
		if pid, err := strconv.Atoi(n); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, err
}

// Stats reads the stat line of every process in /proc. Processes that
// exit while it reads are left out.
func Stats() []Stat {
	pids, _ := PIDs()
	out := make([]Stat, 0, len(pids))
	for _, pid := range pids {
		if s, err := ReadStat(pid); err == nil {
			out = append(out, s)
		}
	}
	return out
}

// Group lists the processes of process group pgid, zombies included. It
// reads the stat line of every process on the host: callers use it when a
// group ends, never in a loop.
func Group(pgid int) []Stat {
	var out []Stat
	for _, s := range Stats() {
		if s.PGID == pgid {
			out = append(out, s)
		}
	}
	return out
}

// LiveGroup lists the processes of process group pgid that have not
// exited: zombies are left out, since they have finished and only wait for
// their parent to reap them.
func LiveGroup(pgid int) []Stat {
	var out []Stat
	for _, s := range Group(pgid) {
		if !s.Dead() {
			out = append(out, s)
		}
	}
	return out
}

// Children lists the children of process pid (0: the calling process),
// from each of its threads' /proc/PID/task/TID/children (a child's parent
// is the thread that forked it, and an orphan adopted by a subreaper
// becomes the child of one of its threads). Where the kernel has no such
// files (CONFIG_PROC_CHILDREN off), it reads the parent of every process
// in /proc instead.
func Children(pid int) []int {
	dir := "/proc/self"
	if pid == 0 {
		pid = os.Getpid()
	} else {
		dir = "/proc/" + strconv.Itoa(pid)
	}
	files, _ := filepath.Glob(dir + "/task/*/children")
	var kids []int
	read := false
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // a thread that has just exited
		}
		read = true
		for _, s := range strings.Fields(string(b)) {
			if kid, err := strconv.Atoi(s); err == nil {
				kids = append(kids, kid)
			}
		}
	}
	if read || len(files) > 0 {
		return kids
	}
	if _, err := os.Stat(dir); err != nil {
		return nil // gone: it has no children any more
	}
	for _, s := range Stats() {
		if s.PPID == pid {
			kids = append(kids, s.PID)
		}
	}
	return kids
}

// Getenv reads variable name from process pid's environment as it was
// when the process was exec'd (/proc/PID/environ: later changes the
// process makes to its own environment do not show). found is false when
// the process has no such variable; err is set when its environment could
// not be read (the process is gone, or is another user's).
func Getenv(pid int, name string) (value string, found bool, err error) {
	env, err := Environ(pid, name)
	value, found = env[name]
	return value, found, err
}

// Environ reads the named variables of process pid's environment, as
// Getenv does one, in one read: those it has, by name (the first of a
// name given twice, as getenv(3) finds it).
func Environ(pid int, names ...string) (map[string]string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return nil, err
	}
	env := map[string]string{}
	for _, kv := range bytes.Split(b, []byte{0}) {
		k, v, ok := bytes.Cut(kv, []byte{'='})
		if !ok {
			continue
		}
		for _, n := range names {
			if _, dup := env[n]; string(k) == n && !dup {
				env[n] = string(v)
			}
		}
	}
	return env, nil
}
